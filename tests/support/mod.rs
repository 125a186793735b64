//! Test support shared by the envtest suites (`tests/envtest_*.rs`): a real API server
//! ([`envtest`]), the chart's RBAC and a token for it ([`chart`]), the real `rebalancer` binary
//! ([`operator`]), and objects and waits ([`fixtures`]).
#![allow(dead_code)]

pub mod chart;
pub mod consumer;
pub mod envtest;
pub mod fake_broker;
pub mod fake_namesrv;
pub mod fixtures;
pub mod operator;
pub mod producer;
pub mod proxy;
pub mod queues;
pub mod rocketmq;
pub mod silent_client;
pub mod tcp_proxy;

use std::future::Future;
use std::time::{Duration, Instant};

/// Deadline of every wait (`REBALANCER_TEST_TIMEOUT_SECS`, default 60 s).
pub fn deadline() -> Duration {
    let secs = std::env::var("REBALANCER_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// A random lowercase alphanumeric string of `len` characters.
pub fn random_suffix(len: usize) -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        let mut v = h.finish();
        while v > 0 && out.len() < len {
            let d = (v % 36) as u8;
            out.push(if d < 10 {
                (b'0' + d) as char
            } else {
                (b'a' + d - 10) as char
            });
            v /= 36;
        }
    }
    out
}

/// Polls `probe` until it returns `Ok`, every 100 ms, up to [`deadline`]; panics with `what` and
/// the last `Err` seen.
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    eventually_within(what, deadline(), probe).await
}

/// [`eventually`] with an explicit deadline.
pub async fn eventually_within<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let until = Instant::now() + within;
    loop {
        let last = match probe().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() > until {
            panic!("timed out after {within:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
