//! A RocketMQ consumer that heartbeats and never answers the broker's questions, like several
//! non-Java clients: it registers in its group on one broker (`HEART_BEAT`, 34, every 10 s on one
//! connection, as a client does), declares the language it is given, and counts the
//! `GET_CONSUMER_RUNNING_INFO` (307) requests the broker forwards to it without answering any.
//! It notices when the broker closes its connection. Built from the operator's own frames
//! (`rebalancer::rocketmq::Command`), so it is a peer nobody's client library smooths over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

use rebalancer::rocketmq::frame::FLAG_RESPONSE;
use rebalancer::rocketmq::{Command, code};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// How often it heartbeats (RocketMQ clients: every 30 s; shorter keeps tests independent of
/// the brokers' 120 s channel expiry).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// `MQVersion.CURRENT_VERSION` of Apache RocketMQ 4.9.7's client.
const CLIENT_VERSION: i32 = 407;

#[derive(Default)]
struct State {
    questions: AtomicUsize,
    heartbeats_answered: AtomicUsize,
    closed: AtomicBool,
}

/// One silent client connected to one broker.
pub struct SilentClient {
    /// `ip@instance`.
    pub id: String,
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SilentClient {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The `HeartbeatData` body of a push consumer of `group` subscribed to every tag of `topic`.
fn heartbeat_body(client_id: &str, group: &str, topic: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "clientID": client_id,
        "producerDataSet": [],
        "consumerDataSet": [{
            "groupName": group,
            "consumeType": "CONSUME_PASSIVELY",
            "messageModel": "CLUSTERING",
            "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET",
            "subscriptionDataSet": [{
                "classFilterMode": false, "topic": topic, "subString": "*",
                "tagsSet": [], "codeSet": [], "subVersion": 1, "expressionType": "TAG"
            }],
            "unitMode": false
        }]
    }))
    .unwrap()
}

impl SilentClient {
    /// Connects to `broker`, registers `client_id` in `group` on `topic` declaring `language`
    /// (a `LanguageCode` name), and waits until the broker acknowledged the first heartbeat.
    pub async fn start(
        broker: &str,
        client_id: &str,
        group: &str,
        topic: &str,
        language: &str,
    ) -> SilentClient {
        SilentClient::start_with(broker, client_id, group, topic, language, false).await
    }

    /// As [`SilentClient::start`], but when `answer` is set it answers every question at once,
    /// holding no queue (`ConsumerRunningInfo` with an empty `mqTable`), as a client that has
    /// not allocated yet: a cheap answering client for load measurements.
    pub async fn start_with(
        broker: &str,
        client_id: &str,
        group: &str,
        topic: &str,
        language: &str,
        answer: bool,
    ) -> SilentClient {
        let stream = TcpStream::connect(broker)
            .await
            .unwrap_or_else(|e| panic!("silent client to {broker}: {e}"));
        let (mut reader, writer) = stream.into_split();
        let writer = Arc::new(Mutex::new(writer));
        let state = Arc::new(State::default());
        let opaque = Arc::new(AtomicI32::new(1));
        let body = heartbeat_body(client_id, group, topic);
        let language = language.to_string();
        let beats = {
            let (writer, state, opaque) = (writer.clone(), state.clone(), opaque.clone());
            tokio::spawn(async move {
                loop {
                    let mut request = Command::new(code::HEART_BEAT).with_body(body.clone());
                    request.language = language.clone();
                    // Apache RocketMQ 4.9.7's client version (`MQVersion.CURRENT_VERSION`):
                    // brokers refuse to forward questions to clients older than 3.1.8.
                    request.version = CLIENT_VERSION;
                    request.opaque = opaque.fetch_add(1, Ordering::Relaxed);
                    if send(&writer, &request).await.is_err() {
                        state.closed.store(true, Ordering::Relaxed);
                        return;
                    }
                    tokio::time::sleep(HEARTBEAT_EVERY).await;
                }
            })
        };
        let read = {
            let (state, writer) = (state.clone(), writer.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    match reader.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    loop {
                        match Command::decode(&buf) {
                            Ok(Some((command, used))) => {
                                buf.drain(..used);
                                if command.is_response() {
                                    if command.code == 0 {
                                        state.heartbeats_answered.fetch_add(1, Ordering::Relaxed);
                                    }
                                } else if command.code == code::GET_CONSUMER_RUNNING_INFO {
                                    state.questions.fetch_add(1, Ordering::Relaxed);
                                    // Unless told to answer, never: that is the point.
                                    if answer {
                                        let mut reply = Command::new(0)
                                            .with_body(br#"{"mqTable":{}}"#.to_vec());
                                        reply.opaque = command.opaque;
                                        reply.flag = FLAG_RESPONSE;
                                        reply.version = CLIENT_VERSION;
                                        let _ = send(&writer, &reply).await;
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(_) => {
                                state.closed.store(true, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                }
                state.closed.store(true, Ordering::Relaxed);
            })
        };
        let client = SilentClient {
            id: client_id.to_string(),
            state,
            tasks: vec![beats, read],
        };
        super::eventually(&format!("{client_id} registered on {broker}"), || async {
            if client.state.heartbeats_answered.load(Ordering::Relaxed) > 0 {
                Ok(())
            } else if client.disconnected() {
                Err(format!("{broker} closed the connection"))
            } else {
                Err("no heartbeat answered yet".to_string())
            }
        })
        .await;
        client
    }

    /// `GET_CONSUMER_RUNNING_INFO` requests the broker forwarded to it.
    pub fn questions(&self) -> usize {
        self.state.questions.load(Ordering::Relaxed)
    }

    /// Whether its connection was closed.
    pub fn disconnected(&self) -> bool {
        self.state.closed.load(Ordering::Relaxed)
    }
}

async fn send(writer: &Mutex<OwnedWriteHalf>, command: &Command) -> std::io::Result<()> {
    let mut writer = writer.lock().await;
    writer.write_all(&command.encode()).await
}
