//! Connections kept open per address and shared by every reconcile, as RocketMQ's own clients
//! keep theirs.
//!
//! Without it every route read, client list and offset question opened its own TCP connection:
//! at 1,000 synced Topics and a 30 s sync period, 33 connections a second to the NameServers
//! alone, each a handshake and a server-side channel for one request. A [`RemotingClient`]
//! already multiplexes concurrent requests by `opaque`, so one connection per address serves
//! all of them.
//!
//! A kept connection is replaced when it is found closed (the server restarted, or closed it as
//! idle: Apache RocketMQ servers do after 120 s) and when a request on it fails at the
//! transport level. A request that fails because a *reused* connection was lost is retried
//! once on a new one: a server closing an idle channel is routine, not an outage to report. A
//! timeout is not retried (the server is slow or gone; waiting twice helps nobody). Addresses
//! unused for [`IDLE`] are closed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::{Error, RemotingClient, Result, Timeouts};
use super::throttle::Throttle;

/// Connections unused for this long are closed (Topics whose `nameServers` changed, brokers
/// that left the route).
pub const IDLE: Duration = Duration::from_secs(600);

/// Open connections by `host:port`.
#[derive(Debug)]
pub struct Connections {
    timeouts: Timeouts,
    open: Mutex<HashMap<String, Kept>>,
    /// The limit of requests per second to brokers ([`Connections::call_broker`]).
    throttle: Option<Arc<Throttle>>,
}

#[derive(Debug)]
struct Kept {
    client: Arc<RemotingClient>,
    used: Instant,
}

impl Connections {
    /// An empty set; every connection uses `timeouts`.
    pub fn new(timeouts: Timeouts) -> Self {
        Connections {
            timeouts,
            open: Mutex::new(HashMap::new()),
            throttle: None,
        }
    }

    /// Limits [`Connections::call_broker`] by `throttle`.
    pub fn with_throttle(mut self, throttle: Arc<Throttle>) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// As [`Connections::call`], for a request to a broker: it first takes a slot of the
    /// operator's limit on requests per second to brokers, and fails with
    /// [`Error::Throttled`] when none comes in time.
    pub async fn call_broker<T, F, Fut>(&self, addr: &str, call: F) -> Result<T>
    where
        F: Fn(Arc<RemotingClient>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        if let Some(throttle) = &self.throttle
            && !throttle.acquire().await
        {
            return Err(Error::Throttled {
                addr: addr.to_string(),
                limit: throttle.rate(),
            });
        }
        self.call(addr, call).await
    }

    /// The timeouts of every connection.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// How many connections are kept open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept, still open connection to `addr`, if any.
    fn kept(&self, addr: &str) -> Option<Arc<RemotingClient>> {
        let now = Instant::now();
        let mut open = self.lock();
        open.retain(|a, kept| a == addr || now.duration_since(kept.used) < IDLE);
        match open.get_mut(addr) {
            Some(kept) if !kept.client.is_closed() => {
                kept.used = now;
                Some(kept.client.clone())
            }
            Some(_) => {
                open.remove(addr);
                None
            }
            None => None,
        }
    }

    /// A new connection to `addr`, kept for the next callers (unless another caller kept one
    /// meanwhile: then that one is used and this one closed).
    async fn connect(&self, addr: &str) -> Result<Arc<RemotingClient>> {
        let client = Arc::new(RemotingClient::connect(addr, self.timeouts).await?);
        let mut open = self.lock();
        let kept = open.entry(addr.to_string()).or_insert_with(|| Kept {
            client: client.clone(),
            used: Instant::now(),
        });
        if kept.client.is_closed() {
            kept.client = client;
        }
        kept.used = Instant::now();
        Ok(kept.client.clone())
    }

    /// Forgets `client` if it is still the one kept for its address.
    fn discard(&self, client: &Arc<RemotingClient>) {
        let mut open = self.lock();
        if open
            .get(client.addr())
            .is_some_and(|kept| Arc::ptr_eq(&kept.client, client))
        {
            open.remove(client.addr());
        }
    }

    /// Runs `call` on a connection to `addr`: the kept one, or a new one. A connection that
    /// fails at the transport level is dropped; when a reused one was lost, `call` runs once
    /// more on a new connection.
    pub async fn call<T, F, Fut>(&self, addr: &str, call: F) -> Result<T>
    where
        F: Fn(Arc<RemotingClient>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        if let Some(client) = self.kept(addr) {
            let result = call(client.clone()).await;
            match &result {
                Err(e) if e.is_transport() => {
                    self.discard(&client);
                    if !matches!(e, Error::Disconnected { .. }) {
                        return result;
                    }
                    tracing::debug!(addr, error = %e, "kept RocketMQ connection lost, reconnecting");
                }
                _ => return result,
            }
        }
        let client = self.connect(addr).await?;
        let result = call(client.clone()).await;
        if result.as_ref().is_err_and(Error::is_transport) {
            self.discard(&client);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::rocketmq::frame::{Command, FLAG_RESPONSE};

    /// What a scripted server does with a request: answer it, close the connection without
    /// answering, or stay silent.
    #[derive(Clone, Copy, Debug)]
    enum Then {
        Answer,
        Close,
        Silence,
    }

    /// A server whose `n`-th connection (from 0) plays `script[n]`, one step per request; it
    /// counts the connections it accepted.
    async fn scripted(script: Vec<Vec<Then>>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            for steps in script {
                let (mut socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for step in steps {
                        let request = loop {
                            if let Some((command, used)) = Command::decode(&buf).unwrap() {
                                buf.drain(..used);
                                break command;
                            }
                            let mut chunk = [0u8; 4096];
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        match step {
                            Then::Answer => {
                                let mut response = Command::new(0).with_body(
                                    br#"{"brokerAddrTable":{},"clusterAddrTable":{}}"#.to_vec(),
                                );
                                response.opaque = request.opaque;
                                response.flag = FLAG_RESPONSE;
                                socket.write_all(&response.encode()).await.unwrap();
                            }
                            Then::Close => return,
                            Then::Silence => {}
                        }
                    }
                    let _ = socket.read(&mut [0u8; 1]).await;
                });
            }
        });
        (addr, accepted)
    }

    fn fast() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_millis(300),
        }
    }

    async fn ask(connections: &Connections, addr: &str) -> Result<()> {
        connections
            .call(addr, |c| async move { c.cluster_info().await.map(|_| ()) })
            .await
    }

    #[tokio::test]
    async fn one_connection_serves_every_request() {
        let (addr, accepted) = scripted(vec![vec![Then::Answer; 3]]).await;
        let connections = Connections::new(fast());
        for _ in 0..3 {
            ask(&connections, &addr).await.unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(connections.len(), 1);
    }

    #[tokio::test]
    async fn a_reused_connection_lost_mid_request_is_retried_once_on_a_new_one() {
        let (addr, accepted) =
            scripted(vec![vec![Then::Answer, Then::Close], vec![Then::Answer]]).await;
        let connections = Connections::new(fast());
        ask(&connections, &addr).await.unwrap();
        // The server closes as it receives the second request: the caller sees an answer.
        ask(&connections, &addr).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_new_connection_lost_is_an_error_and_not_kept() {
        let (addr, accepted) = scripted(vec![vec![Then::Close], vec![Then::Answer]]).await;
        let connections = Connections::new(fast());
        let e = ask(&connections, &addr).await.unwrap_err();
        assert!(matches!(e, Error::Disconnected { .. }), "{e}");
        assert!(connections.is_empty());
        ask(&connections, &addr).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_timeout_is_not_retried_and_drops_the_connection() {
        let (addr, accepted) =
            scripted(vec![vec![Then::Answer, Then::Silence], vec![Then::Answer]]).await;
        let connections = Connections::new(fast());
        ask(&connections, &addr).await.unwrap();
        let e = ask(&connections, &addr).await.unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "no second attempt");
        assert!(connections.is_empty());
        ask(&connections, &addr).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
