//! A NameServer nobody should trust: it answers every `GET_ROUTEINFO_BY_TOPIC` (105) with the
//! route body it is given, whatever that says, and every other request with `SYSTEM_ERROR`. For
//! the hostile-input suite: absurd numbers, duplicate brokers, huge routes. [`Behaviour`] makes it
//! worse: silent, answering 16 MiB of junk, or flooding frames nobody asked for.

use std::sync::{Arc, Mutex};

use rebalancer::rocketmq::frame::FLAG_RESPONSE;
use rebalancer::rocketmq::{Command, code};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How a fake answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// The route it is given, to every 105.
    Route,
    /// Reads requests, never answers, keeps the connection open.
    Silent,
    /// Answers every request with a response of the largest frame RocketMQ allows (16 MiB),
    /// whose body is junk.
    Huge,
    /// Sends server requests (code 40) nobody asked for, as fast as they are read, and never
    /// answers.
    Flood,
}

/// Largest frame a reader accepts (`MAX_FRAME_LEN`), prefix excluded.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// The fake, listening on a free loopback port until dropped.
pub struct FakeNameServer {
    /// `127.0.0.1:port`.
    pub addr: String,
    route: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeNameServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeNameServer {
    /// Serves `route` (a TopicRouteData body, as bytes) for every topic.
    pub async fn start(route: Vec<u8>) -> FakeNameServer {
        FakeNameServer::start_as(Behaviour::Route, route).await
    }

    /// A fake that behaves as `behaviour` (`route` is served only by [`Behaviour::Route`]).
    pub async fn start_as(behaviour: Behaviour, route: Vec<u8>) -> FakeNameServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let route = Arc::new(Mutex::new(route));
        let served = route.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let served = served.clone();
                if behaviour == Behaviour::Flood {
                    tokio::spawn(async move {
                        let mut notify = Command::request(40, [("consumerGroup", "flood")]);
                        notify.flag = rebalancer::rocketmq::frame::FLAG_ONEWAY;
                        let one = notify.encode();
                        let burst: Vec<u8> =
                            one.iter().copied().cycle().take(one.len() * 1024).collect();
                        while stream.write_all(&burst).await.is_ok() {}
                    });
                    continue;
                }
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
                            match behaviour {
                                Behaviour::Silent => continue,
                                Behaviour::Huge => {
                                    if stream.write_all(&huge(request.opaque)).await.is_err() {
                                        return;
                                    }
                                    continue;
                                }
                                Behaviour::Route | Behaviour::Flood => {}
                            }
                            let mut reply = if request.code == code::GET_ROUTEINFO_BY_TOPIC {
                                Command::new(0).with_body(served.lock().unwrap().clone())
                            } else {
                                Command::new(1)
                            };
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
        FakeNameServer { addr, route, task }
    }

    /// Serves `route` from now on.
    pub fn serve(&self, route: Vec<u8>) {
        *self.route.lock().unwrap() = route;
    }
}

/// A response of exactly [`MAX_FRAME`] bytes, with a junk body.
fn huge(opaque: i32) -> Vec<u8> {
    let mut reply = Command::new(0);
    reply.opaque = opaque;
    reply.flag = FLAG_RESPONSE;
    let empty = reply.encode().len() - 4;
    reply.body = vec![b'x'; MAX_FRAME - empty];
    reply.encode()
}

/// A route body of `brokers` (name, read, write, perm), each with a master at `master`.
pub fn route(brokers: &[(&str, u64, u64, u64)], master: &str) -> Vec<u8> {
    let queue_datas: Vec<_> = brokers
        .iter()
        .map(|(name, read, write, perm)| {
            serde_json::json!({"brokerName": name, "readQueueNums": read,
                               "writeQueueNums": write, "perm": perm, "topicSysFlag": 0})
        })
        .collect();
    let broker_datas: Vec<_> = brokers
        .iter()
        .map(|(name, ..)| {
            serde_json::json!({"cluster": "c", "brokerName": name,
                               "brokerAddrs": {"0": master}})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"queueDatas": queue_datas, "brokerDatas": broker_datas}))
        .unwrap()
}
