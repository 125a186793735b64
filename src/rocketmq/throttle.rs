//! The operator's ceiling on requests per second to brokers, over every reconcile.
//!
//! A broker serves its admin requests (and forwards questions to clients) from a small thread
//! pool shared with every other admin tool: Apache RocketMQ 4.9.7 has 16 admin threads. Per-group
//! limits cannot bound what 1,000 groups ask together, so one limit covers them all. A request
//! over the limit waits for its turn when that comes soon, and is refused otherwise; a refusal
//! is an error like an unreachable broker (the last good state stays, the object says why).
//!
//! Hand-written rather than `governor`: it follows tokio's clock, so tests run it with a paused
//! clock, and it reserves a slot before waiting, so concurrent callers never exceed the rate.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

/// Requests spaced `1 / rate` apart: never more than `rate` in any one second.
#[derive(Debug)]
pub struct Throttle {
    rate: u32,
    max_wait: Duration,
    bucket: Mutex<Bucket>,
    sent: Counter,
    refused: Counter,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens available at `at`; negative when callers are waiting for reserved slots.
    tokens: f64,
    at: Instant,
}

impl Throttle {
    /// `rate` requests per second (at least 1); a request waits at most `max_wait` for its slot.
    /// `sent` and `refused` count the outcomes (the operator's metrics).
    pub fn new(rate: u32, max_wait: Duration, sent: Counter, refused: Counter) -> Self {
        let rate = rate.max(1);
        Throttle {
            rate,
            max_wait,
            bucket: Mutex::new(Bucket {
                tokens: 1.0,
                at: Instant::now(),
            }),
            sent,
            refused,
        }
    }

    /// The limit, requests per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Waits for a slot; `false` (counted as refused) when none comes within `max_wait`.
    pub async fn acquire(&self) -> bool {
        let wait = {
            let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let rate = f64::from(self.rate);
            let refilled = bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate;
            bucket.tokens = refilled.min(1.0);
            bucket.at = now;
            let wait = if bucket.tokens >= 1.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64((1.0 - bucket.tokens) / rate)
            };
            if wait > self.max_wait {
                self.refused.inc();
                return false;
            }
            bucket.tokens -= 1.0;
            wait
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.sent.inc();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_exceeds_the_rate_and_refuses_what_cannot_wait() {
        let (sent, refused) = (Counter::default(), Counter::default());
        let throttle = std::sync::Arc::new(Throttle::new(
            10,
            Duration::from_secs(2),
            sent.clone(),
            refused.clone(),
        ));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let t = throttle.clone();
            tasks.push(tokio::spawn(
                async move { t.acquire().await.then(Instant::now) },
            ));
        }
        let mut times = Vec::new();
        for task in tasks {
            if let Some(at) = task.await.unwrap() {
                times.push(at.duration_since(start));
            }
        }
        // One at once, then one per 100 ms up to the 2 s a caller may wait; the rest refused.
        assert_eq!(times.len(), 21, "{times:?}");
        assert_eq!(sent.get(), 21);
        assert_eq!(refused.get(), 19);
        // In any one-second window, at most 10 went out.
        times.sort();
        for (i, t) in times.iter().enumerate() {
            let within = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(within <= 10, "{within} sent within a second from {t:?}");
        }
        // Later, the bucket has refilled.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(throttle.acquire().await);
    }
}
