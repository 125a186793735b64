//! Scale harness (issue "do no harm", point 4): what N `consumerIds: Client` groups of 3 clients
//! cost the brokers. Real rocketmq-rust NameServer and brokers, the envtest API server, the real
//! `rebalancer` binary with its defaults but `--sync-period`; clients that heartbeat to both
//! brokers and answer `GET_CONSUMER_RUNNING_INFO` at once (`SilentClient::start_with`, declaring
//! JAVA, so the operator asks them).
//!
//! Once every group is Ready with its 3 clients, it counts over a window: the requests the
//! operator sent to brokers (`rebalancer_broker_requests_total`), the questions each broker
//! forwarded (counted by the clients), and the group reconciles. It prints the rates per broker
//! and per group per sync period.
//!
//! `scale_clients_counts_small` (CI size, 20 groups) asserts counts only. `scale_clients_full`
//! (1,000 groups, the default 30 s sync period, a 90 s window) is run by hand:
//!
//! ```text
//! cargo test --release --test scale_clients -- --ignored --nocapture scale_clients_full
//! ```
//! `REBALANCER_SCALE_GROUPS` overrides the full run's group count.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use rebalancer::api::{ConsumerGroup, Permission};
use rebalancer::rocketmq::{RemotingClient, TopicConfig};
use serde_json::json;
use support::fixtures::{Env, condition_is};
use support::silent_client::SilentClient;

/// Clients per group.
const CLIENTS: usize = 3;
/// Queues per broker of the one topic every group subscribes.
const QUEUES: u32 = 4;

struct Report {
    groups: usize,
    brokers: usize,
    sync_period: Duration,
    window: Duration,
    sent: f64,
    refused: f64,
    reconciles: f64,
    questions_per_broker: Vec<usize>,
    questions_per_client: (usize, usize),
}

impl Report {
    fn print(&self) {
        let secs = self.window.as_secs_f64();
        let periods = secs / self.sync_period.as_secs_f64();
        let questions: usize = self.questions_per_broker.iter().sum();
        let lists = self.sent - questions as f64;
        println!(
            "scale_clients: {} groups x {CLIENTS} clients, {} brokers, sync period {:?}, window {:.1} s ({periods:.1} periods)",
            self.groups, self.brokers, self.sync_period, secs
        );
        println!(
            "  operator -> brokers: {:.0} requests ({:.1}/s), {:.0} refused by its limit; {:.0} group reconciles",
            self.sent,
            self.sent / secs,
            self.refused,
            self.reconciles
        );
        println!(
            "  GET_CONSUMER_CONNECTION_LIST: {:.0} ({:.1}/s per broker); GET_CONSUMER_RUNNING_INFO per broker: {:?} ({:.1}/s per broker)",
            lists,
            lists / secs / self.brokers as f64,
            self.questions_per_broker,
            questions as f64 / secs / self.brokers as f64
        );
        println!(
            "  per group per sync period: {:.2} requests; questions per client in the window: {}-{}",
            self.sent / self.groups as f64 / periods,
            self.questions_per_client.0,
            self.questions_per_client.1
        );
    }
}

async fn run(test: &str, groups: usize, sync_period: Duration, window: Duration) -> Option<Report> {
    let mq = support::rocketmq::shared(test).await?;
    let env = Env::new(test).await?;
    let topic = format!("Scale_{}", support::random_suffix(6));
    for broker in &mq.brokers {
        RemotingClient::connect(&broker.addr, support::rocketmq::timeouts())
            .await
            .unwrap()
            .create_or_update_topic(&TopicConfig::new(
                &topic,
                QUEUES,
                QUEUES,
                Permission::ReadWrite,
            ))
            .await
            .unwrap();
    }
    env.apply::<rebalancer::api::Topic>(json!({
        "apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": "orders"},
        "spec": {"topicName": topic, "nameServers": [mq.namesrv_addr()]}
    }))
    .await;
    let suffix = support::random_suffix(6);
    let rocketmq_group = |g: usize| format!("scale_{suffix}_{g}");
    // Clients first (3 per group, each on both brokers), then the groups, then the operator.
    let starts =
        (0..groups).flat_map(|g| (0..CLIENTS).flat_map(move |c| (0..2).map(move |b| (g, c, b))));
    let clients: Vec<(usize, SilentClient)> = futures::stream::iter(starts)
        .map(|(g, c, b)| {
            let (addr, group, topic) =
                (mq.brokers[b].addr.clone(), rocketmq_group(g), topic.clone());
            async move {
                let id = format!("10.30.{}.{}@c{c}", g / 250, g % 250);
                let client =
                    SilentClient::start_with(&addr, &id, &group, &topic, "JAVA", true).await;
                (b, client)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    futures::stream::iter(0..groups)
        .map(|g| {
            let env = &env;
            let name = rocketmq_group(g);
            async move {
                env.group(
                    &format!("g{g}"),
                    json!({"topics": ["orders"], "consumerIds": "Client", "groupName": name,
                           "consumers": {"selector": {"matchLabels": {"app": format!("g{g}")}}}}),
                )
                .await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let op = env.operator_with(
        "op",
        vec![format!("--sync-period={}", sync_period.as_secs())],
    );
    env.wait_holder("op").await;
    let api = env.api::<ConsumerGroup>();
    support::eventually("every group Ready with its clients", || async {
        let list = api
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let ready = list
            .items
            .iter()
            .filter(|g| {
                condition_is(g, "Ready", "True").is_ok()
                    && g.status
                        .as_ref()
                        .is_some_and(|s| s.allocation.consumers as usize == CLIENTS)
            })
            .count();
        if ready == groups {
            Ok(())
        } else {
            Err(format!("{ready} of {groups} groups ready"))
        }
    })
    .await;
    let metric = |name: &'static str, labels: &'static str| {
        let op = &op;
        async move { op.metric(name, labels).await.unwrap_or(0.0) }
    };
    let questions = |clients: &[(usize, SilentClient)]| -> Vec<usize> {
        clients.iter().map(|(_, c)| c.questions()).collect()
    };
    let sent0 = metric("rebalancer_broker_requests_total", "result=\"sent\"").await;
    let refused0 = metric("rebalancer_broker_requests_total", "result=\"refused\"").await;
    let rec0 = metric("rebalancer_reconciles_total", "kind=\"ConsumerGroup\"").await;
    let q0 = questions(&clients);
    let start = Instant::now();
    // The window: the operator's own counters are read at its end; nothing is synchronised on.
    tokio::time::sleep(window).await;
    let window = start.elapsed();
    let sent = metric("rebalancer_broker_requests_total", "result=\"sent\"").await - sent0;
    let refused = metric("rebalancer_broker_requests_total", "result=\"refused\"").await - refused0;
    let reconciles = metric("rebalancer_reconciles_total", "kind=\"ConsumerGroup\"").await - rec0;
    let q1 = questions(&clients);
    let mut per_broker = vec![0usize; mq.brokers.len()];
    let mut per_client = std::collections::BTreeMap::<String, usize>::new();
    for (((b, c), before), after) in clients.iter().zip(&q0).zip(&q1) {
        per_broker[*b] += after - before;
        *per_client.entry(c.id.clone()).or_default() += after - before;
    }
    let lo = per_client.values().copied().min().unwrap_or(0);
    let hi = per_client.values().copied().max().unwrap_or(0);
    op.assert_clean();
    Some(Report {
        groups,
        brokers: mq.brokers.len(),
        sync_period,
        window,
        sent,
        refused,
        reconciles,
        questions_per_broker: per_broker,
        questions_per_client: (lo, hi),
    })
}

/// CI size: 20 groups, a 2 s sync period, a 10 s window. Counts only: every client asked, none
/// more than once per half sync period, and the requests per group per sync period within the
/// documented `brokers + clients` (plus the reconciles that Kubernetes events add).
#[tokio::test]
async fn scale_clients_counts_small() {
    let (groups, period) = (20usize, Duration::from_secs(2));
    let Some(r) = run(
        "scale-clients-small",
        groups,
        period,
        Duration::from_secs(10),
    )
    .await
    else {
        return;
    };
    r.print();
    assert_eq!(r.refused, 0.0);
    let periods = r.window.as_secs_f64() / period.as_secs_f64();
    // At most one question per client per half sync period (its answer is reused meanwhile),
    // and at least one per sync period (each sync asks again).
    let (lo, hi) = r.questions_per_client;
    assert!(
        lo >= 1 && (hi as f64) <= 2.0 * periods + 1.0,
        "{lo}-{hi} questions per client in {periods:.1} periods"
    );
    // Per reconcile: one list per broker and one question per client whose answer is stale.
    let per_reconcile = r.sent / r.reconciles;
    assert!(
        per_reconcile <= (r.brokers + CLIENTS) as f64,
        "{per_reconcile:.2} requests per reconcile"
    );
}

#[tokio::test]
#[ignore = "run by hand: 1,000 groups x 3 clients, about 3 minutes (see the module docs)"]
async fn scale_clients_full() {
    let groups = std::env::var("REBALANCER_SCALE_GROUPS")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(1000);
    if let Some(r) = run(
        "scale-clients-full",
        groups,
        Duration::from_secs(30),
        Duration::from_secs(90),
    )
    .await
    {
        r.print();
    }
}
