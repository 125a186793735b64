//! A NameServer and broker in one fake process, holding one topic on `broker-a`, for the
//! decisions no real server can be made to show on cue: it answers the route (105) and the
//! cluster info (106) from its state, takes `UPDATE_AND_CREATE_TOPIC` (17), answers
//! `GET_MAX_OFFSET` (30) and `GET_CONSUME_STATS` (208; every group has consumed everything, the
//! read queues only, as Apache RocketMQ reports them). Armed with [`FakeBroker::land_on_read_shrink`],
//! it stores a message in the first removed queue while it applies a write that shrinks the read
//! queues: a message that landed after the operator's drain check, as a producer with a stale
//! route can make happen against a real broker (issue #16), at a moment a test cannot hit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rebalancer::rocketmq::frame::FLAG_RESPONSE;
use rebalancer::rocketmq::{Command, code};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One write the fake took: (read, write, perm), when.
pub type Write = (u32, u32, u32, Instant);

struct State {
    topic: String,
    read: u32,
    write: u32,
    perm: u32,
    max: BTreeMap<u32, i64>,
    writes: Vec<Write>,
    land: usize,
}

/// The fake, listening on a free loopback port until dropped.
pub struct FakeBroker {
    /// `127.0.0.1:port`: both the NameServer and `broker-a`'s master.
    pub addr: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBroker {
    /// `topic` on `broker-a` with `queues` read and write queues, each holding 3 consumed messages.
    pub async fn start(topic: &str, queues: u32) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            topic: topic.to_string(),
            read: queues,
            write: queues,
            perm: 6,
            max: (0..queues).map(|q| (q, 3)).collect(),
            writes: Vec::new(),
            land: 0,
        }));
        let shared = state.clone();
        let me = addr.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                let me = me.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        while let Ok(Some((request, used))) = Command::decode(&buf) {
                            buf.drain(..used);
                            let mut reply = answer(&shared, &me, &request);
                            reply.opaque = request.opaque;
                            reply.flag = FLAG_RESPONSE;
                            if stream.write_all(&reply.encode()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        FakeBroker { addr, state, task }
    }

    /// The next `n` writes that shrink the read queues each store one message in the first
    /// removed queue as they are applied.
    pub fn land_on_read_shrink(&self, n: usize) {
        self.state.lock().unwrap().land = n;
    }

    /// Every write taken so far.
    pub fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap().writes.clone()
    }

    /// Each queue's max offset.
    pub fn max_offsets(&self) -> BTreeMap<u32, i64> {
        self.state.lock().unwrap().max.clone()
    }
}

fn field<'a>(request: &'a Command, key: &str) -> &'a str {
    request.ext_fields.get(key).map_or("", String::as_str)
}

fn answer(state: &Mutex<State>, me: &str, request: &Command) -> Command {
    let mut s = state.lock().unwrap();
    match request.code {
        code::GET_ROUTEINFO_BY_TOPIC => {
            let body = serde_json::json!({
                "queueDatas": [{"brokerName": "broker-a", "readQueueNums": s.read,
                    "writeQueueNums": s.write, "perm": s.perm, "topicSysFlag": 0}],
                "brokerDatas": [{"cluster": "c", "brokerName": "broker-a",
                    "brokerAddrs": {"0": me}}]
            });
            Command::new(0).with_body(serde_json::to_vec(&body).unwrap())
        }
        code::GET_BROKER_CLUSTER_INFO => {
            let body = serde_json::json!({
                "brokerAddrTable": {"broker-a": {"cluster": "c", "brokerName": "broker-a",
                    "brokerAddrs": {"0": me}}},
                "clusterAddrTable": {"c": ["broker-a"]}
            });
            Command::new(0).with_body(serde_json::to_vec(&body).unwrap())
        }
        code::UPDATE_AND_CREATE_TOPIC => {
            let read: u32 = field(request, "readQueueNums").parse().unwrap_or(0);
            let write: u32 = field(request, "writeQueueNums").parse().unwrap_or(0);
            let perm: u32 = field(request, "perm").parse().unwrap_or(0);
            if read < s.read && s.land > 0 {
                s.land -= 1;
                *s.max.entry(read).or_default() += 1;
            }
            for q in 0..read.max(write) {
                s.max.entry(q).or_default();
            }
            (s.read, s.write, s.perm) = (read, write, perm);
            s.writes.push((read, write, perm, Instant::now()));
            Command::new(0)
        }
        code::GET_MAX_OFFSET => {
            let q: u32 = field(request, "queueId").parse().unwrap_or(u32::MAX);
            let mut reply = Command::new(0);
            reply.ext_fields.insert(
                "offset".into(),
                s.max.get(&q).copied().unwrap_or(0).to_string(),
            );
            reply
        }
        code::GET_CONSUME_STATS => {
            // fastjson: MessageQueue objects as keys. Everything consumed.
            let entries: Vec<String> = (0..s.read)
                .map(|q| {
                    let max = s.max.get(&q).copied().unwrap_or(0);
                    format!(
                        "{{\"brokerName\":\"broker-a\",\"queueId\":{q},\"topic\":{}}}:\
                         {{\"brokerOffset\":{max},\"consumerOffset\":{max},\"lastTimestamp\":0}}",
                        serde_json::to_string(&s.topic).unwrap()
                    )
                })
                .collect();
            let body = format!(
                "{{\"consumeTps\":0.0,\"offsetTable\":{{{}}}}}",
                entries.join(",")
            );
            Command::new(0).with_body(body.into_bytes())
        }
        _ => {
            let mut reply = Command::new(1);
            reply.remark = Some("not supported by the fake".into());
            reply
        }
    }
}
