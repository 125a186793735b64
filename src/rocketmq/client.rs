//! A RocketMQ remoting connection ([`RemotingClient`]), the admin calls the operator needs, and a
//! NameServer list with failover ([`NameServers`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Semaphore, SemaphorePermit, oneshot};
use tokio::task::JoinHandle;

use super::frame::{Command, parse_lenient};
use super::pool::Connections;
use super::{code, perm_of, response};
use crate::assign::Permission;
use crate::assign::limits::MAX_BROKERS;

/// Deadlines of a [`RemotingClient`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing the TCP connection.
    pub connect: Duration,
    /// Each request, from sending it to the whole response (Apache RocketMQ's admin default is 3 s).
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            request: Duration::from_secs(3),
        }
    }
}

/// What can go wrong talking to RocketMQ. Every variant names the address.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection could not be established (refused, unreachable, bad address, or no
    /// answer within [`Timeouts::connect`]).
    #[error("cannot connect to RocketMQ at {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        reason: String,
    },
    /// No response within [`Timeouts::request`].
    #[error("RocketMQ at {addr}: no answer to {request} within {after:?}")]
    Timeout {
        /// `host:port`.
        addr: String,
        /// The request, e.g. `GET_ROUTEINFO_BY_TOPIC(105)`.
        request: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// The connection closed (or failed) before the response arrived.
    #[error("RocketMQ at {addr}: connection lost: {reason}")]
    Disconnected {
        /// `host:port`.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The peer sent something that is not a RocketMQ JSON frame or body we understand.
    #[error("RocketMQ at {addr}: protocol error: {reason}")]
    Protocol {
        /// `host:port`.
        addr: String,
        /// What did not parse.
        reason: String,
    },
    /// The server answered with an error code (`ResponseCode.java`).
    #[error("RocketMQ at {addr} answered {request} with code {code}: {remark}")]
    Remote {
        /// `host:port`.
        addr: String,
        /// The request, e.g. `UPDATE_AND_CREATE_TOPIC(17)`.
        request: String,
        /// The response code.
        code: i32,
        /// The server's remark.
        remark: String,
    },
    /// The NameServer has no route for the topic (`TOPIC_NOT_EXIST`, 17).
    #[error("topic {topic} has no route on the NameServer at {addr}: {remark}")]
    TopicNotFound {
        /// `host:port`.
        addr: String,
        /// The topic asked for.
        topic: String,
        /// The server's remark.
        remark: String,
    },
    /// Not sent: the operator's own limit on requests per second to brokers was reached
    /// (`--broker-requests-per-second`).
    #[error(
        "request to RocketMQ at {addr} not sent: the operator's limit of {limit} requests per second to brokers is reached"
    )]
    Throttled {
        /// `host:port`.
        addr: String,
        /// The limit.
        limit: u32,
    },
    /// No NameServer of the list answered (one error per address tried, in order).
    #[error("no NameServer answered: {}", join_errors(.0))]
    NameServers(Vec<Error>),
}

fn join_errors(errors: &[Error]) -> String {
    if errors.is_empty() {
        return "the list of NameServers is empty".to_string();
    }
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// Whether another server could do better: transport failures, not answers.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::Timeout { .. }
                | Error::Disconnected { .. }
                | Error::Protocol { .. }
        )
    }
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the reader stopped.
#[derive(Clone, Debug)]
enum Closed {
    Io(String),
    Protocol(String),
}

#[derive(Default)]
struct Pending {
    waiters: HashMap<i32, oneshot::Sender<Command>>,
    closed: Option<Closed>,
}

/// One TCP connection to a NameServer or a Broker. Requests may be sent concurrently: each gets
/// a fresh `opaque` and waits for the response that carries it; requests the server sends us
/// (e.g. `NOTIFY_CONSUMER_IDS_CHANGED`) are ignored.
pub struct RemotingClient {
    addr: String,
    timeouts: Timeouts,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Arc<Mutex<Pending>>,
    next_opaque: AtomicI32,
    reader: JoinHandle<()>,
}

impl Drop for RemotingClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for RemotingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotingClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Removes a waiter when its request ends (answered, timed out or cancelled).
struct WaiterGuard<'a> {
    pending: &'a Mutex<Pending>,
    opaque: i32,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.pending.lock().unwrap().waiters.remove(&self.opaque);
    }
}

impl RemotingClient {
    /// Connects to `addr` (`host:port`) within `timeouts.connect`.
    pub async fn connect(addr: &str, timeouts: Timeouts) -> Result<RemotingClient> {
        let stream = match tokio::time::timeout(timeouts.connect, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(Error::Connect {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(Error::Connect {
                    addr: addr.to_string(),
                    reason: format!("no connection within {:?}", timeouts.connect),
                });
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut read, write) = stream.into_split();
        let pending = Arc::new(Mutex::new(Pending::default()));
        let reader = {
            let pending = pending.clone();
            let addr = addr.to_string();
            tokio::spawn(async move {
                let reason = read_loop(&mut read, &pending, &addr).await;
                let mut pending = pending.lock().unwrap();
                pending.closed.get_or_insert(reason);
                // Dropping the senders wakes every waiter.
                pending.waiters.clear();
            })
        };
        Ok(RemotingClient {
            addr: addr.to_string(),
            timeouts,
            writer: tokio::sync::Mutex::new(write),
            pending,
            next_opaque: AtomicI32::new(1),
            reader,
        })
    }

    /// The address this client is connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection is unusable: closed by the server, failed, or abandoned.
    pub fn is_closed(&self) -> bool {
        self.reader.is_finished() || self.pending.lock().unwrap().closed.is_some()
    }

    /// Sends `request` with a fresh opaque and returns the matching response, whatever its code.
    pub async fn invoke(&self, request: Command) -> Result<Command> {
        self.invoke_within(request, self.timeouts.request).await
    }

    /// As [`RemotingClient::invoke`], waiting up to `within` for the response.
    pub async fn invoke_within(&self, mut request: Command, within: Duration) -> Result<Command> {
        let what = code::name(request.code);
        let opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        request.opaque = opaque;
        request.flag = 0;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().unwrap();
            if let Some(closed) = &pending.closed {
                return Err(self.closed_error(closed));
            }
            pending.waiters.insert(opaque, tx);
        }
        let _guard = WaiterGuard {
            pending: &self.pending,
            opaque,
        };
        tracing::debug!(addr = %self.addr, request = %what, opaque, "rocketmq request");
        let frame = request.encode();
        // Set while the frame may be half written: a timeout then leaves the stream unusable.
        let writing = AtomicBool::new(false);
        let exchange = async {
            {
                let mut writer = self.writer.lock().await;
                writing.store(true, Ordering::Relaxed);
                let written = writer.write_all(&frame).await;
                writing.store(false, Ordering::Relaxed);
                if let Err(e) = written {
                    let reason = format!("sending {what}: {e}");
                    self.poison(Closed::Io(reason.clone()));
                    return Err(Error::Disconnected {
                        addr: self.addr.clone(),
                        reason,
                    });
                }
            }
            match rx.await {
                Ok(response) => Ok(response),
                Err(_) => {
                    let closed = self.pending.lock().unwrap().closed.clone();
                    Err(match closed {
                        Some(closed) => self.closed_error(&closed),
                        None => Error::Disconnected {
                            addr: self.addr.clone(),
                            reason: "reader stopped".to_string(),
                        },
                    })
                }
            }
        };
        match tokio::time::timeout(within, exchange).await {
            Ok(result) => result,
            Err(_) => {
                if writing.load(Ordering::Relaxed) {
                    self.poison(Closed::Io(format!(
                        "{what} timed out half sent; connection abandoned"
                    )));
                }
                Err(Error::Timeout {
                    addr: self.addr.clone(),
                    request: what,
                    after: within,
                })
            }
        }
    }

    /// Marks the connection unusable: later requests fail at once.
    fn poison(&self, closed: Closed) {
        self.pending.lock().unwrap().closed.get_or_insert(closed);
    }

    fn closed_error(&self, closed: &Closed) -> Error {
        match closed {
            Closed::Io(reason) => Error::Disconnected {
                addr: self.addr.clone(),
                reason: reason.clone(),
            },
            Closed::Protocol(reason) => Error::Protocol {
                addr: self.addr.clone(),
                reason: reason.clone(),
            },
        }
    }

    /// Sends `request` and fails unless the response code is `SUCCESS`.
    pub async fn invoke_ok(&self, request: Command) -> Result<Command> {
        let what = code::name(request.code);
        let response = self.invoke(request).await?;
        if response.code == response::SUCCESS {
            Ok(response)
        } else {
            Err(self.remote(what, &response))
        }
    }

    fn remote(&self, request: String, response: &Command) -> Error {
        Error::Remote {
            addr: self.addr.clone(),
            request,
            code: response.code,
            remark: one_line(response.remark()),
        }
    }

    fn body<T: DeserializeOwned>(&self, what: &str, response: &Command) -> Result<T> {
        parse_body(&response.body).map_err(|reason| Error::Protocol {
            addr: self.addr.clone(),
            reason: format!("{what} body: {reason}"),
        })
    }

    /// The route of `topic`, asked of a NameServer (`GET_ROUTEINFO_BY_TOPIC`, header
    /// `GetRouteInfoRequestHeader`: `topic`). A topic the NameServer does not know is
    /// [`Error::TopicNotFound`].
    pub async fn topic_route(&self, topic: &str) -> Result<TopicRoute> {
        let request = Command::request(code::GET_ROUTEINFO_BY_TOPIC, [("topic", topic)]);
        let response = self.invoke(request).await?;
        match response.code {
            response::SUCCESS => self.body("topic route", &response),
            response::TOPIC_NOT_EXIST => Err(Error::TopicNotFound {
                addr: self.addr.clone(),
                topic: topic.to_string(),
                remark: one_line(response.remark()),
            }),
            _ => Err(self.remote(code::name(code::GET_ROUTEINFO_BY_TOPIC), &response)),
        }
    }

    /// Brokers and clusters registered with a NameServer (`GET_BROKER_CLUSTER_INFO`, no header).
    pub async fn cluster_info(&self) -> Result<ClusterInfo> {
        let request = Command::new(code::GET_BROKER_CLUSTER_INFO);
        let response = self.invoke_ok(request).await?;
        self.body("cluster info", &response)
    }

    /// Creates or updates a topic on this broker (`UPDATE_AND_CREATE_TOPIC`, header
    /// `CreateTopicRequestHeader`). The broker registers the change with its NameServers.
    pub async fn create_or_update_topic(&self, config: &TopicConfig) -> Result<()> {
        let request = Command::request(
            code::UPDATE_AND_CREATE_TOPIC,
            [
                ("topic", config.topic.clone()),
                // @CFNotNull in CreateTopicRequestHeader; the template topic of auto-creation.
                ("defaultTopic", DEFAULT_TOPIC.to_string()),
                ("readQueueNums", config.read_queue_nums.to_string()),
                ("writeQueueNums", config.write_queue_nums.to_string()),
                ("perm", config.perm.to_string()),
                // TopicFilterType.java: SINGLE_TAG or MULTI_TAG.
                ("topicFilterType", "SINGLE_TAG".to_string()),
                ("topicSysFlag", "0".to_string()),
                ("order", config.order.to_string()),
            ],
        );
        self.invoke_ok(request).await.map(|_| ())
    }

    /// The ids of the consumers of `group` connected to this broker
    /// (`GET_CONSUMER_LIST_BY_GROUP`, header `GetConsumerListByGroupRequestHeader`:
    /// `consumerGroup`). A group with no connected consumer answers `SYSTEM_ERROR` "no consumer
    /// for this group" (Apache RocketMQ and rocketmq-rust alike): that is an empty list here.
    pub async fn consumer_ids(&self, group: &str) -> Result<Vec<String>> {
        let request =
            Command::request(code::GET_CONSUMER_LIST_BY_GROUP, [("consumerGroup", group)]);
        let response = self.invoke(request).await?;
        match response.code {
            response::SUCCESS => {
                let body: ConsumerIdList = self.body("consumer list", &response)?;
                Ok(body.consumer_id_list)
            }
            response::SYSTEM_ERROR if response.remark().starts_with(NO_CONSUMER_REMARK) => {
                Ok(Vec::new())
            }
            _ => Err(self.remote(code::name(code::GET_CONSUMER_LIST_BY_GROUP), &response)),
        }
    }

    /// The clients of `group` connected to this broker, with the language and version each
    /// declared (`GET_CONSUMER_CONNECTION_LIST`, header `GetConsumerConnectionListRequestHeader`:
    /// `consumerGroup`; body `ConsumerConnection`, as `mqadmin consumerConnection` shows it). A
    /// group nobody consumes answers `CONSUMER_NOT_ONLINE`: that is an empty list here.
    pub async fn consumer_connections(&self, group: &str) -> Result<Vec<ClientConnection>> {
        let request = Command::request(
            code::GET_CONSUMER_CONNECTION_LIST,
            [("consumerGroup", group)],
        );
        let response = self.invoke(request).await?;
        match response.code {
            response::SUCCESS => {
                let body: RawConsumerConnection = self.body("consumer connections", &response)?;
                let mut connections = body.connection_set;
                connections.sort();
                connections.dedup();
                Ok(connections)
            }
            response::CONSUMER_NOT_ONLINE => Ok(Vec::new()),
            response::SYSTEM_ERROR if response.remark().starts_with(NO_CONSUMER_REMARK) => {
                Ok(Vec::new())
            }
            _ => Err(self.remote(code::name(code::GET_CONSUMER_CONNECTION_LIST), &response)),
        }
    }

    /// The max offset (the next offset to be written) of queue `queue_id` of `topic` on this
    /// broker (`GET_MAX_OFFSET`, header `GetMaxOffsetRequestHeader`: `topic`, `queueId`; the
    /// answer's `offset`). Both Apache RocketMQ and rocketmq-rust answer it for any queue id
    /// whose consume queue exists (0 for one that never held a message), also beyond the topic's
    /// current queue counts.
    pub async fn max_offset(&self, topic: &str, queue_id: u32) -> Result<i64> {
        let request = Command::request(
            code::GET_MAX_OFFSET,
            [
                ("topic", topic.to_string()),
                ("queueId", queue_id.to_string()),
            ],
        );
        let response = self.invoke_ok(request).await?;
        response
            .ext_fields
            .get("offset")
            .and_then(|o| o.parse().ok())
            .ok_or_else(|| Error::Protocol {
                addr: self.addr.clone(),
                reason: format!("max offset: no offset in {:?}", response.ext_fields),
            })
    }

    /// Offsets of `group` on this broker (`GET_CONSUME_STATS`, header
    /// `GetConsumeStatsRequestHeader`: `consumerGroup`, optional `topic`): for each queue, the
    /// broker's max offset and the group's committed offset. Without `topic`, the broker reports
    /// every topic the group has offsets for.
    pub async fn consume_stats(&self, group: &str, topic: Option<&str>) -> Result<ConsumeStats> {
        let mut fields = vec![("consumerGroup", group)];
        if let Some(topic) = topic {
            fields.push(("topic", topic));
        }
        let request = Command::request(code::GET_CONSUME_STATS, fields);
        let response = self.invoke_ok(request).await?;
        let raw: RawConsumeStats = self.body("consume stats", &response)?;
        raw.into_stats().map_err(|reason| Error::Protocol {
            addr: self.addr.clone(),
            reason: format!("consume stats body: {reason}"),
        })
    }
}

impl RemotingClient {
    /// The queues client `client_id` of `group` holds now, asked through this broker
    /// (`GET_CONSUMER_RUNNING_INFO`; the broker forwards it to the client, which answers with its
    /// `ConsumerRunningInfo`, as `mqadmin consumerStatus` shows it): `(topic, broker, queue id)`,
    /// sorted. Includes the group's retry topic (`%RETRY%<group>`). Waits up to `within`: a
    /// broker waits for the client longer than an ordinary admin call (Apache RocketMQ: 10 s).
    pub async fn held_queues(
        &self,
        group: &str,
        client_id: &str,
        within: Duration,
    ) -> Result<Vec<(String, String, u32)>> {
        let request = Command::request(
            code::GET_CONSUMER_RUNNING_INFO,
            [
                ("consumerGroup", group),
                ("clientId", client_id),
                ("jstackEnable", "false"),
            ],
        );
        let response = self.invoke_within(request, within).await?;
        if response.code != response::SUCCESS {
            return Err(self.remote(code::name(code::GET_CONSUMER_RUNNING_INFO), &response));
        }
        let raw: RawRunningInfo = self.body("consumer running info", &response)?;
        raw.into_queues().map_err(|reason| Error::Protocol {
            addr: self.addr.clone(),
            reason: format!("consumer running info body: {reason}"),
        })
    }
}

/// The part of a `ConsumerRunningInfo` read here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRunningInfo {
    /// Keys are `MessageQueue` objects (fastjson), values `ProcessQueueInfo`.
    #[serde(default, deserialize_with = "null_default")]
    mq_table: BTreeMap<String, serde_json::Value>,
}

impl RawRunningInfo {
    fn into_queues(self) -> std::result::Result<Vec<(String, String, u32)>, String> {
        let mut queues = Vec::with_capacity(self.mq_table.len());
        for key in self.mq_table.keys() {
            let queue: RawQueue = parse_lenient(key)
                .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
                .map_err(|e| format!("message queue key {key:?}: {e}"))?;
            queues.push((queue.topic, queue.broker_name, queue.queue_id));
        }
        queues.sort();
        Ok(queues)
    }
}

/// Frames at least this large are buffered only within [`FRAME_BUDGET`].
const LARGE_FRAME: usize = 256 * 1024;
/// KiB that all connections together may buffer for large frames as they arrive: a server (or
/// 48 of them) announcing 16 MiB frames makes readers wait for their turn instead of holding
/// 16 MiB each, which keeps the operator under its memory limit. Real answers are far smaller
/// (a 256-broker route is about 60 KiB).
const FRAME_BUDGET_KIB: usize = 48 * 1024;
static FRAME_BUDGET: Semaphore = Semaphore::const_new(FRAME_BUDGET_KIB);
/// A large frame holds its share of the budget at most this long: one that trickles in (on a
/// connection nobody even waits on) must not keep the others waiting.
const LARGE_FRAME_WITHIN: Duration = Duration::from_secs(10);
/// Frames nobody waits for (server requests, answers after their timeout) accepted in a row; an
/// admin connection gets almost none, so more is a flood that would keep a worker busy.
const UNREQUESTED_IN_A_ROW: u32 = 1024;
/// Buffer kept between frames; a larger one left by a large frame is given back.
const IDLE_BUFFER: usize = 64 * 1024;

/// Reads frames until the connection ends, handing each response to its waiter. Linear in what
/// arrives: frames are decoded in place and the consumed bytes dropped once per read; a frame's
/// buffer is reserved once, to its announced size.
async fn read_loop(
    read: &mut tokio::net::tcp::OwnedReadHalf,
    pending: &Mutex<Pending>,
    addr: &str,
) -> Closed {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut budget: Option<(SemaphorePermit<'static>, tokio::time::Instant)> = None;
    let mut unrequested = 0u32;
    loop {
        let mut start = 0;
        loop {
            match Command::decode(&buf[start..]) {
                Ok(Some((command, used))) => {
                    start += used;
                    budget = None;
                    if dispatch(command, pending, addr) {
                        unrequested = 0;
                    } else {
                        unrequested += 1;
                        if unrequested > UNREQUESTED_IN_A_ROW {
                            return Closed::Protocol(format!(
                                "{unrequested} frames in a row that no request asked for"
                            ));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => return Closed::Protocol(e.to_string()),
            }
        }
        buf.drain(..start);
        if buf.capacity() > IDLE_BUFFER && buf.len() < IDLE_BUFFER {
            buf.shrink_to(IDLE_BUFFER);
        }
        match Command::announced_len(&buf) {
            Ok(Some(need)) => {
                if need >= LARGE_FRAME && budget.is_none() {
                    let kib = u32::try_from(need.div_ceil(1024)).unwrap_or(u32::MAX);
                    match FRAME_BUDGET.acquire_many(kib).await {
                        Ok(permit) => {
                            budget =
                                Some((permit, tokio::time::Instant::now() + LARGE_FRAME_WITHIN));
                        }
                        Err(_) => return Closed::Protocol("frame budget closed".to_string()),
                    }
                }
                if buf.capacity() < need {
                    buf.reserve_exact(need - buf.len());
                }
            }
            Ok(None) => {}
            Err(e) => return Closed::Protocol(e.to_string()),
        }
        let read = match &budget {
            Some((_, deadline)) => {
                match tokio::time::timeout_at(*deadline, read.read(&mut chunk)).await {
                    Ok(read) => read,
                    Err(_) => {
                        return Closed::Protocol(format!(
                            "a frame of {} bytes did not arrive within {LARGE_FRAME_WITHIN:?} \
                             ({} bytes came)",
                            Command::announced_len(&buf)
                                .ok()
                                .flatten()
                                .unwrap_or_default(),
                            buf.len()
                        ));
                    }
                }
            }
            None => read.read(&mut chunk).await,
        };
        match read {
            Ok(0) if buf.is_empty() => return Closed::Io("closed by the server".to_string()),
            Ok(0) => {
                return Closed::Protocol(format!(
                    "closed by the server inside a frame ({} bytes pending)",
                    buf.len()
                ));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Closed::Io(e.to_string()),
        }
    }
}

/// Hands a response to its waiter (true); requests from the server are ignored.
fn dispatch(command: Command, pending: &Mutex<Pending>, addr: &str) -> bool {
    if command.is_response() {
        let waiter = pending.lock().unwrap().waiters.remove(&command.opaque);
        match waiter {
            Some(tx) => {
                let _ = tx.send(command);
                return true;
            }
            None => tracing::debug!(
                addr,
                opaque = command.opaque,
                "rocketmq response nobody waits for (timed out?)"
            ),
        }
    } else {
        tracing::debug!(addr, code = command.code, "rocketmq server request ignored");
    }
    false
}

/// A server's remark as one line of at most [`REMARK_MAX`] bytes: the Java NameServer's "topic
/// not exist" remark carries a newline and a FAQ link, which would split the condition message
/// and the log line.
fn one_line(remark: &str) -> String {
    let mut out = remark.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > REMARK_MAX {
        let mut cut = REMARK_MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Longest remark quoted in an error.
const REMARK_MAX: usize = 300;

/// Parses a (fastjson-style) JSON body into `T`.
///
/// Strict JSON is read straight into `T` (a few bytes per byte of body); only a body that is not
/// strict JSON (fastjson's unquoted or object keys) goes through the lenient parser's tree, which
/// costs tens of bytes per byte, and so only up to [`LENIENT_MAX`].
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    if text.trim().is_empty() {
        return Err("empty body".to_string());
    }
    match serde_json::from_str::<T>(text) {
        Ok(parsed) => Ok(parsed),
        Err(e) if !e.is_syntax() && !e.is_eof() => Err(e.to_string()),
        Err(e) if body.len() > LENIENT_MAX => Err(format!(
            "{e} (a body of {} bytes that is not strict JSON; at most {LENIENT_MAX} are read leniently)",
            body.len()
        )),
        Err(_) => {
            let value = parse_lenient(text)?;
            serde_json::from_value(value).map_err(|e| e.to_string())
        }
    }
}

/// Largest body read by the lenient (fastjson) parser; fastjson's quirks appear in cluster info
/// and consume stats, a few KiB to a few hundred KiB even for large clusters.
pub const LENIENT_MAX: usize = 2 * 1024 * 1024;

/// The template topic named in `UPDATE_AND_CREATE_TOPIC` (`TopicValidator.AUTO_CREATE_TOPIC_KEY_TOPIC`).
pub const DEFAULT_TOPIC: &str = "TBW102";

/// Start of the remark of `GET_CONSUMER_LIST_BY_GROUP` for a group nobody consumes
/// (`ConsumerManageProcessor.getConsumerListByGroup`).
pub const NO_CONSUMER_REMARK: &str = "no consumer for this group";

/// A topic's settings on one broker (`UPDATE_AND_CREATE_TOPIC`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    /// The topic.
    pub topic: String,
    /// Queues consumers read.
    pub read_queue_nums: u32,
    /// Queues producers write.
    pub write_queue_nums: u32,
    /// `PermName` bits (6 read+write, 4 read, 2 write).
    pub perm: u32,
    /// Ordered topic.
    pub order: bool,
}

impl TopicConfig {
    /// A topic with the operator's view of a broker's permission.
    pub fn new(topic: &str, read: u32, write: u32, permission: Permission) -> TopicConfig {
        TopicConfig {
            topic: topic.to_string(),
            read_queue_nums: read,
            write_queue_nums: write,
            perm: perm_of(permission),
            order: false,
        }
    }
}

/// `null` reads as the default (fastjson writes `null` for empty maps and lists).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A list of at most [`MAX_BROKERS`] entries, `null` as empty; refused at the first entry beyond,
/// before it is read: a route listing 60,000 brokers costs nothing to refuse.
fn broker_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct AtMost<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for AtMost<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_BROKERS} brokers, or null")
        }
        fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX_BROKERS {
                    // Counted, not kept, to say how many.
                    let mut count = MAX_BROKERS + 1;
                    while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                        count += 1;
                    }
                    return Err(serde::de::Error::custom(format!(
                        "lists {count} brokers, more than the {MAX_BROKERS} a Topic may have"
                    )));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_any(AtMost(std::marker::PhantomData))
}

/// A topic's route (`TopicRouteData.java`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicRoute {
    /// Per broker: queue counts and permission.
    #[serde(default, deserialize_with = "broker_list")]
    pub queue_datas: Vec<QueueData>,
    /// Per broker: cluster and addresses.
    #[serde(default, deserialize_with = "broker_list")]
    pub broker_datas: Vec<BrokerData>,
}

impl TopicRoute {
    /// The queue data of `broker`.
    pub fn queue(&self, broker: &str) -> Option<&QueueData> {
        self.queue_datas.iter().find(|q| q.broker_name == broker)
    }

    /// The broker data of `broker`.
    pub fn broker(&self, broker: &str) -> Option<&BrokerData> {
        self.broker_datas.iter().find(|b| b.broker_name == broker)
    }
}

/// One broker's queues of a topic (`QueueData.java`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueData {
    /// `brokerName`.
    pub broker_name: String,
    /// Readable queue count.
    pub read_queue_nums: u32,
    /// Writable queue count.
    pub write_queue_nums: u32,
    /// `PermName` bits.
    pub perm: u32,
    /// Topic system flag.
    #[serde(default)]
    pub topic_sys_flag: u32,
}

impl QueueData {
    /// The permission, as the operator's API spells it.
    pub fn permission(&self) -> Permission {
        super::permission_of(self.perm)
    }
}

/// A broker (master and slaves) (`BrokerData.java`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerData {
    /// Cluster name.
    #[serde(default, deserialize_with = "null_default")]
    pub cluster: String,
    /// `brokerName`.
    pub broker_name: String,
    /// Broker id (0 = master) to `host:port`. fastjson writes the keys unquoted (`{0:"..."}`).
    #[serde(default, deserialize_with = "null_default")]
    pub broker_addrs: BTreeMap<u64, String>,
}

impl BrokerData {
    /// The master's address (`MixAll.MASTER_ID` = 0).
    pub fn master_addr(&self) -> Option<&str> {
        self.broker_addrs.get(&0).map(String::as_str)
    }
}

/// Brokers and clusters known to a NameServer (`ClusterInfo.java`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    /// Broker name to broker data.
    #[serde(default, deserialize_with = "null_default")]
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    /// Cluster name to broker names.
    #[serde(default, deserialize_with = "null_default")]
    pub cluster_addr_table: BTreeMap<String, BTreeSet<String>>,
}

/// One client connection of a group on a broker (`Connection.java`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnection {
    /// `clientIP@instanceName[@unitName]`.
    pub client_id: String,
    /// `ip:port` of the connection.
    #[serde(default, deserialize_with = "null_default")]
    pub client_addr: String,
    /// `LanguageCode` the client declared, e.g. `JAVA`.
    #[serde(default, deserialize_with = "null_default")]
    pub language: String,
    /// `MQVersion` ordinal the client declared.
    #[serde(default)]
    pub version: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConsumerConnection {
    #[serde(default, deserialize_with = "null_default")]
    connection_set: Vec<ClientConnection>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsumerIdList {
    #[serde(default, deserialize_with = "null_default")]
    consumer_id_list: Vec<String>,
}

/// Offsets of one consumer group (`ConsumeStats.java`), one entry per queue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConsumeStats {
    /// Sorted by topic, broker, queue id.
    pub queues: Vec<QueueOffsets>,
    /// Messages per second the group consumed lately.
    pub consume_tps: f64,
}

impl ConsumeStats {
    /// The entry of one queue.
    pub fn queue(&self, topic: &str, broker: &str, queue_id: u32) -> Option<&QueueOffsets> {
        self.queues
            .iter()
            .find(|q| q.topic == topic && q.broker_name == broker && q.queue_id == queue_id)
    }

    /// Messages not consumed yet, over all queues (`ConsumeStats.computeTotalDiff`).
    pub fn total_lag(&self) -> i64 {
        self.queues.iter().map(QueueOffsets::lag).sum()
    }
}

/// One queue's offsets (`MessageQueue` and `OffsetWrapper.java`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueOffsets {
    /// Topic.
    pub topic: String,
    /// `brokerName`.
    pub broker_name: String,
    /// Queue id.
    pub queue_id: u32,
    /// Next offset the broker will write (the queue's max offset).
    pub broker_offset: i64,
    /// The group's committed offset (0 when it has none).
    pub consumer_offset: i64,
    /// The group's pull offset.
    pub pull_offset: i64,
    /// Store time of the last consumed message, ms since the epoch (0 when unknown).
    pub last_timestamp: i64,
}

impl QueueOffsets {
    /// Messages not consumed yet.
    pub fn lag(&self) -> i64 {
        (self.broker_offset - self.consumer_offset).max(0)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConsumeStats {
    /// Keys are `MessageQueue` objects (fastjson) — [`parse_lenient`] turns them into their JSON
    /// text.
    #[serde(default, deserialize_with = "null_default")]
    offset_table: BTreeMap<String, RawOffsets>,
    #[serde(default, deserialize_with = "null_default")]
    consume_tps: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawQueue {
    topic: String,
    broker_name: String,
    queue_id: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOffsets {
    #[serde(default)]
    broker_offset: i64,
    #[serde(default)]
    consumer_offset: i64,
    #[serde(default)]
    pull_offset: i64,
    #[serde(default)]
    last_timestamp: i64,
}

impl RawConsumeStats {
    fn into_stats(self) -> Result<ConsumeStats, String> {
        let mut queues = Vec::with_capacity(self.offset_table.len());
        for (key, offsets) in self.offset_table {
            let queue: RawQueue = parse_lenient(&key)
                .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
                .map_err(|e| format!("message queue key {key:?}: {e}"))?;
            queues.push(QueueOffsets {
                topic: queue.topic,
                broker_name: queue.broker_name,
                queue_id: queue.queue_id,
                broker_offset: offsets.broker_offset,
                consumer_offset: offsets.consumer_offset,
                pull_offset: offsets.pull_offset,
                last_timestamp: offsets.last_timestamp,
            });
        }
        queues.sort_by(|a, b| {
            (&a.topic, &a.broker_name, a.queue_id).cmp(&(&b.topic, &b.broker_name, b.queue_id))
        });
        Ok(ConsumeStats {
            queues,
            consume_tps: self.consume_tps,
        })
    }
}

/// The NameServers of a cluster (`spec.nameServers`). Each call connects to one of them: the
/// last one that answered first, then all the others at once. Only transport failures
/// (connect, timeout, lost connection, garbage) move on to the next address; an answer, even an
/// error such as [`Error::TopicNotFound`], is returned as is. Every address failing is
/// [`Error::NameServers`], with each address's error.
#[derive(Debug)]
pub struct NameServers {
    addrs: Vec<String>,
    connections: Arc<Connections>,
    preferred: AtomicUsize,
}

impl NameServers {
    /// A list of `host:port` addresses, with connections of its own.
    pub fn new<S: Into<String>>(addrs: impl IntoIterator<Item = S>, timeouts: Timeouts) -> Self {
        NameServers::with_connections(addrs, Arc::new(Connections::new(timeouts)))
    }

    /// A list of `host:port` addresses, using (and keeping) connections of `connections`.
    pub fn with_connections<S: Into<String>>(
        addrs: impl IntoIterator<Item = S>,
        connections: Arc<Connections>,
    ) -> Self {
        NameServers {
            addrs: addrs.into_iter().map(Into::into).collect(),
            connections,
            preferred: AtomicUsize::new(0),
        }
    }

    /// The addresses, in list order.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The indexes of the addresses in the order they are tried: the last one that answered,
    /// then the others in list order.
    fn order(&self) -> impl Iterator<Item = usize> + use<> {
        let n = self.addrs.len();
        let first = self.preferred.load(Ordering::Relaxed) % n.max(1);
        (0..n).map(move |k| (first + k) % n)
    }

    /// What the call to address `i` means for the failover: `Some(result)` ends it (an answer,
    /// even an error one; the address becomes the preferred one), `None` moves on to the next
    /// address (a transport failure, kept in `errors`).
    fn settle<T>(&self, i: usize, result: Result<T>, errors: &mut Vec<Error>) -> Option<Result<T>> {
        match result {
            Err(e) if e.is_transport() => {
                tracing::debug!(addr = %self.addrs[i], error = %e, "RocketMQ NameServer failed, trying the next one");
                errors.push(e);
                None
            }
            other => {
                self.preferred.store(i, Ordering::Relaxed);
                Some(other)
            }
        }
    }

    /// Runs `call` against the first NameServer that answers, over the kept connections: the
    /// preferred one alone (the usual case: one request), and when it fails, all the others at
    /// once, the first answer winning. A list of dead NameServers then costs two request times,
    /// not one per address (16 dead NameServers took 48 s one after the other, holding up the
    /// Topics behind them).
    pub async fn with_any<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Arc<RemotingClient>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        use futures::StreamExt;
        let mut order = self.order();
        let mut errors = Vec::new();
        let Some(first) = order.next() else {
            return Err(Error::NameServers(errors));
        };
        let result = self.connections.call(&self.addrs[first], &call).await;
        if let Some(answer) = self.settle(first, result, &mut errors) {
            return answer;
        }
        let call = &call;
        let mut rest: futures::stream::FuturesUnordered<_> =
            order
                .enumerate()
                .map(|(rank, i)| async move {
                    (rank, i, self.connections.call(&self.addrs[i], call).await)
                })
                .collect();
        let mut failed = Vec::new();
        while let Some((rank, i, result)) = rest.next().await {
            let mut error = Vec::new();
            if let Some(answer) = self.settle(i, result, &mut error) {
                return answer;
            }
            failed.extend(error.into_iter().map(|e| (rank, e)));
        }
        // In the order they were tried, as before.
        failed.sort_by_key(|(rank, _)| *rank);
        errors.extend(failed.into_iter().map(|(_, e)| e));
        Err(Error::NameServers(errors))
    }

    /// [`RemotingClient::topic_route`] on the first NameServer that answers.
    pub async fn topic_route(&self, topic: &str) -> Result<TopicRoute> {
        self.with_any(|client| {
            let topic = topic.to_string();
            async move { client.topic_route(&topic).await }
        })
        .await
    }

    /// [`RemotingClient::cluster_info`] on the first NameServer that answers.
    pub async fn cluster_info(&self) -> Result<ClusterInfo> {
        self.with_any(|client| async move { client.cluster_info().await })
            .await
    }

    /// The timeouts every connection of this list uses.
    pub fn timeouts(&self) -> Timeouts {
        self.connections.timeouts()
    }

    /// The connections this list uses (shared with the brokers' requests in the operator).
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_rocketmq_rust_route() {
        let body = br#"{"orderTopicConf":null,"queueDatas":[{"brokerName":"broker-a","readQueueNums":4,"writeQueueNums":4,"perm":6,"topicSysFlag":0}],"brokerDatas":[{"cluster":"DefaultCluster","brokerName":"broker-a","brokerAddrs":{"0":"127.0.0.1:31911"},"zoneName":null,"enableActingMaster":false}],"filterServerTable":{},"topicQueueMappingInfo":null}"#;
        let route: TopicRoute = parse_body(body).unwrap();
        assert_eq!(
            route.queue("broker-a"),
            Some(&QueueData {
                broker_name: "broker-a".into(),
                read_queue_nums: 4,
                write_queue_nums: 4,
                perm: 6,
                topic_sys_flag: 0,
            })
        );
        let broker = route.broker("broker-a").unwrap();
        assert_eq!(broker.cluster, "DefaultCluster");
        assert_eq!(broker.master_addr(), Some("127.0.0.1:31911"));
    }

    #[test]
    fn parses_fastjson_integer_keys_and_nulls() {
        let body = br#"{"brokerAddrTable":{"b":{"cluster":"c","brokerName":"b","brokerAddrs":{0:"h:1",1:"h:2"}}},"clusterAddrTable":{"c":["b"]}}"#;
        let info: ClusterInfo = parse_body(body).unwrap();
        let b = &info.broker_addr_table["b"];
        assert_eq!(
            b.broker_addrs,
            BTreeMap::from([(0, "h:1".to_string()), (1, "h:2".to_string())])
        );
        assert_eq!(
            info.cluster_addr_table["c"],
            BTreeSet::from(["b".to_string()])
        );
        let route: TopicRoute = parse_body(br#"{"queueDatas":null,"brokerDatas":null}"#).unwrap();
        assert_eq!(route, TopicRoute::default());
        assert!(parse_body::<TopicRoute>(b"").is_err());
    }

    #[test]
    fn parses_consume_stats_with_object_keys() {
        let body = br#"{"offsetTable":{{"topic":"T1","brokerName":"broker-a","queueId":1}:{"brokerOffset":1,"consumerOffset":0,"pullOffset":0,"lastTimestamp":0},{"topic":"T1","brokerName":"broker-a","queueId":0}:{"brokerOffset":3,"consumerOffset":2,"pullOffset":2,"lastTimestamp":1796129170942}},"consumeTps":0.0}"#;
        let raw: RawConsumeStats = parse_body(body).unwrap();
        let stats = raw.into_stats().unwrap();
        assert_eq!(stats.queues.len(), 2);
        assert_eq!(stats.queues[0].queue_id, 0, "sorted");
        let q0 = stats.queue("T1", "broker-a", 0).unwrap();
        assert_eq!((q0.broker_offset, q0.consumer_offset, q0.lag()), (3, 2, 1));
        assert_eq!(stats.total_lag(), 2);
        // The same table with keys as JSON strings (GET_TOPIC_STATS_INFO's form) reads the same.
        let body2 = br#"{"offsetTable":{"{\"topic\":\"T1\",\"brokerName\":\"broker-a\",\"queueId\":1}":{"brokerOffset":1,"consumerOffset":0,"pullOffset":0,"lastTimestamp":0},"{\"topic\":\"T1\",\"brokerName\":\"broker-a\",\"queueId\":0}":{"brokerOffset":3,"consumerOffset":2,"pullOffset":2,"lastTimestamp":1796129170942}},"consumeTps":0.0}"#;
        let raw2: RawConsumeStats = parse_body(body2).unwrap();
        assert_eq!(raw2.into_stats().unwrap(), stats);
        let bad: RawConsumeStats =
            parse_body(br#"{"offsetTable":{"x":{"brokerOffset":1}}}"#).unwrap();
        assert!(bad.into_stats().unwrap_err().contains("message queue key"));
    }

    #[test]
    fn parses_the_queues_of_a_consumer_running_info() {
        // As rocketmq-client-rust 1.0.0 answered through a rocketmq-rust broker (shortened).
        let body = br#"{"properties":{"PROP_CONSUME_TYPE":"CONSUME_PASSIVELY"},"subscriptionSet":[],"mqTable":{{"topic":"%RETRY%g","brokerName":"broker-a","queueId":0}:{"commitOffset":-1,"locked":true,"droped":false},{"topic":"T","brokerName":"broker-a","queueId":3}:{"commitOffset":-1},{"topic":"T","brokerName":"broker-a","queueId":1}:{"commitOffset":-1}},"mqPopTable":{},"statusTable":{}}"#;
        let raw: RawRunningInfo = parse_body(body).unwrap();
        assert_eq!(
            raw.into_queues().unwrap(),
            [
                ("%RETRY%g".to_string(), "broker-a".to_string(), 0),
                ("T".to_string(), "broker-a".to_string(), 1),
                ("T".to_string(), "broker-a".to_string(), 3),
            ]
        );
        let empty: RawRunningInfo = parse_body(br#"{"mqTable":null}"#).unwrap();
        assert!(empty.into_queues().unwrap().is_empty());
        let bad: RawRunningInfo = parse_body(br#"{"mqTable":{"x":{}}}"#).unwrap();
        assert!(bad.into_queues().unwrap_err().contains("message queue key"));
    }

    #[test]
    fn errors_read_well() {
        let e = Error::NameServers(vec![
            Error::Connect {
                addr: "a:1".into(),
                reason: "Connection refused (os error 111)".into(),
            },
            Error::Timeout {
                addr: "b:2".into(),
                request: code::name(105),
                after: Duration::from_secs(3),
            },
        ]);
        assert_eq!(
            e.to_string(),
            "no NameServer answered: cannot connect to RocketMQ at a:1: Connection refused (os error 111); \
             RocketMQ at b:2: no answer to GET_ROUTEINFO_BY_TOPIC(105) within 3s"
        );
        assert_eq!(
            Error::NameServers(vec![]).to_string(),
            "no NameServer answered: the list of NameServers is empty"
        );
    }

    /// A one-connection fake server: reads one request and runs `answer` on it.
    async fn fake_server<F>(answer: F) -> String
    where
        F: FnOnce(Command) -> Vec<Vec<u8>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let request = loop {
                let mut chunk = [0u8; 4096];
                let n = socket.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                if let Some((command, _)) = Command::decode(&buf).unwrap() {
                    break command;
                }
            };
            for frame in answer(request) {
                if frame.is_empty() {
                    return; // close
                }
                socket.write_all(&frame).await.unwrap();
            }
            // Keep the connection open until the client goes away.
            let _ = socket.read(&mut [0u8; 1]).await;
        });
        addr
    }

    fn reply(code: i32, opaque: i32, body: &[u8]) -> Vec<u8> {
        let mut response = Command::new(code).with_body(body.to_vec());
        response.opaque = opaque;
        response.flag = crate::rocketmq::frame::FLAG_RESPONSE;
        response.encode()
    }

    /// No frame at all: the server keeps the connection open and never answers.
    fn silence() -> Vec<Vec<u8>> {
        Vec::new()
    }

    fn fast() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_millis(300),
        }
    }

    #[tokio::test]
    async fn matches_the_response_by_opaque_and_skips_server_requests() {
        let addr = fake_server(|req| {
            assert_eq!(req.code, code::GET_CONSUMER_LIST_BY_GROUP);
            assert_eq!(req.ext_fields["consumerGroup"], "g");
            // A server-initiated one-way request, a stray response, then the answer.
            let mut notify = Command::request(40, [("consumerGroup", "g")]);
            notify.flag = crate::rocketmq::frame::FLAG_ONEWAY;
            vec![
                notify.encode(),
                reply(0, req.opaque + 1000, br#"{"consumerIdList":["wrong"]}"#),
                reply(0, req.opaque, br#"{"consumerIdList":["c1","c2"]}"#),
            ]
        })
        .await;
        let client = RemotingClient::connect(&addr, fast()).await.unwrap();
        assert_eq!(client.consumer_ids("g").await.unwrap(), ["c1", "c2"]);
    }

    #[tokio::test]
    async fn a_late_answer_is_dropped_and_the_connection_stays_usable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut answered = 0;
            loop {
                while let Some((req, used)) = Command::decode(&buf).unwrap() {
                    buf.drain(..used);
                    if answered == 0 {
                        // Answer the first request after the client gave up on it.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    let body = format!(r#"{{"consumerIdList":["answer-{answered}"]}}"#);
                    socket
                        .write_all(&reply(0, req.opaque, body.as_bytes()))
                        .await
                        .unwrap();
                    answered += 1;
                }
                let mut chunk = [0u8; 4096];
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        let client = RemotingClient::connect(&addr, fast()).await.unwrap();
        let e = client.consumer_ids("g").await.unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert_eq!(client.consumer_ids("g").await.unwrap(), ["answer-1"]);
    }

    #[tokio::test]
    async fn a_flood_of_unrequested_frames_is_read_in_linear_time() {
        // 1,000 small server requests in one 40 KB burst, then the answer: read at once
        // (decoding in place; draining after each frame made this quadratic in the burst).
        let addr = fake_server(|req| {
            let mut notify = Command::request(40, [("consumerGroup", "g")]);
            notify.flag = crate::rocketmq::frame::FLAG_ONEWAY;
            let one = notify.encode();
            let mut flood = Vec::with_capacity(one.len() * 1000);
            for _ in 0..1000 {
                flood.extend_from_slice(&one);
            }
            vec![flood, reply(0, req.opaque, br#"{"consumerIdList":["c1"]}"#)]
        })
        .await;
        let timeouts = Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(20),
        };
        let client = RemotingClient::connect(&addr, timeouts).await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(client.consumer_ids("g").await.unwrap(), ["c1"]);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test]
    async fn a_flood_of_frames_nobody_asked_for_closes_the_connection() {
        let addr = fake_server(|_| {
            let mut notify = Command::request(40, [("consumerGroup", "g")]);
            notify.flag = crate::rocketmq::frame::FLAG_ONEWAY;
            vec![notify.encode().repeat(5000)]
        })
        .await;
        let client = RemotingClient::connect(&addr, fast()).await.unwrap();
        let e = client.consumer_ids("g").await.unwrap_err();
        assert!(
            matches!(&e, Error::Protocol { reason, .. } if reason.contains("1025 frames in a row that no request asked for")),
            "{e}"
        );
        assert!(client.is_closed());
    }

    #[tokio::test]
    async fn a_garbage_header_is_refused_before_its_frame_is_buffered() {
        // A 16 MiB frame whose header length exceeds it: refused from its first 8 bytes, while
        // the server has not even sent the rest.
        let addr = fake_server(|_| {
            let mut head = ((16 * 1024 * 1024) as u32).to_be_bytes().to_vec();
            head.extend_from_slice(&0x00ff_ffffu32.to_be_bytes());
            vec![head]
        })
        .await;
        let client = RemotingClient::connect(&addr, fast()).await.unwrap();
        let e = client.cluster_info().await.unwrap_err();
        assert!(
            matches!(&e, Error::Protocol { reason, .. } if reason.contains("header of 16777215 bytes in a frame of 16777216")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn no_answer_is_a_timeout() {
        let addr = fake_server(|_| vec![]).await;
        let client = RemotingClient::connect(&addr, fast()).await.unwrap();
        let e = client.cluster_info().await.unwrap_err();
        assert!(
            matches!(&e, Error::Timeout { request, .. } if request == "GET_BROKER_CLUSTER_INFO(106)"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_closed_connection_is_disconnected_and_garbage_is_a_protocol_error() {
        let addr = fake_server(|_| vec![Vec::new()]).await;
        let client = RemotingClient::connect(&addr, fast()).await.unwrap();
        let e = client.cluster_info().await.unwrap_err();
        assert!(matches!(e, Error::Disconnected { .. }), "{e}");
        // Later calls fail at once, the same way.
        let e = client.cluster_info().await.unwrap_err();
        assert!(matches!(e, Error::Disconnected { .. }), "{e}");

        let addr = fake_server(|req| {
            let mut frame = reply(0, req.opaque, b"{}");
            frame[4] = 1; // binary (ROCKETMQ) serialization
            vec![frame]
        })
        .await;
        let client = RemotingClient::connect(&addr, fast()).await.unwrap();
        let e = client.cluster_info().await.unwrap_err();
        assert!(
            matches!(&e, Error::Protocol { reason, .. } if reason.contains("serialization type 1")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn answers_map_to_typed_errors() {
        let addr = fake_server(|req| {
            let mut r = Command::new(17);
            r.opaque = req.opaque;
            r.flag = crate::rocketmq::frame::FLAG_RESPONSE;
            r.remark = Some("No topic route info of this topic: x\nSee http://rocketmq.apache.org/docs/faq/ for further details.".into());
            vec![r.encode()]
        })
        .await;
        let client = RemotingClient::connect(&addr, fast()).await.unwrap();
        let e = client.topic_route("t").await.unwrap_err();
        assert!(
            matches!(&e, Error::TopicNotFound { topic, .. } if topic == "t"),
            "{e}"
        );
        // The Java NameServer's two-line remark, as one line.
        assert!(
            e.to_string().ends_with(
                "No topic route info of this topic: x See http://rocketmq.apache.org/docs/faq/ for further details."
            ),
            "{e}"
        );
        assert!(!e.is_transport());

        let addr = fake_server(|req| {
            let mut r = Command::new(29);
            r.opaque = req.opaque;
            r.flag = crate::rocketmq::frame::FLAG_RESPONSE;
            r.remark = Some("Request header is invalid".into());
            vec![r.encode()]
        })
        .await;
        let client = RemotingClient::connect(&addr, fast()).await.unwrap();
        let e = client
            .create_or_update_topic(&TopicConfig::new("t", 1, 1, Permission::ReadWrite))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Remote { code: 29, remark, .. } if remark == "Request header is invalid"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_empty_list_fails_without_panicking() {
        let ns = NameServers::new(Vec::<String>::new(), Timeouts::default());
        assert!(matches!(
            ns.cluster_info().await,
            Err(Error::NameServers(errors)) if errors.is_empty()
        ));
    }

    #[tokio::test]
    async fn dead_name_servers_cost_two_request_times_not_one_each() {
        // Eight NameServers that accept and never answer, then one that does.
        let mut addrs = Vec::new();
        for _ in 0..8 {
            addrs.push(fake_server(|_| silence()).await);
        }
        addrs.push(
            fake_server(|req| {
                let body = br#"{"queueDatas":[{"brokerName":"a","readQueueNums":4,"writeQueueNums":4,"perm":6}],"brokerDatas":[]}"#;
                vec![reply(0, req.opaque, body)]
            })
            .await,
        );
        let ns = NameServers::new(addrs.clone(), fast());
        let started = std::time::Instant::now();
        let route = ns.topic_route("T").await.unwrap();
        assert_eq!(route.queue_datas[0].read_queue_nums, 4);
        // One request time for the preferred one, one for all the rest at once (300 ms each),
        // not nine.
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }
}
