//! Topic sync `Manage` end to end, against both real servers: the envtest API server with the
//! real `rebalancer` binary (`--sync-period=2`) and real RocketMQ NameServers and Brokers (see
//! `tests/support/rocketmq.rs`). The Topic resource is the desired state; what the brokers hold
//! is read back from the NameServer with the admin client. Messages are produced with
//! `SEND_MESSAGE`; most tests "consume" them by committing offsets with `UPDATE_CONSUMER_OFFSET`
//! (`tests/support/rocketmq.rs`), and one runs real RocketMQ push consumers
//! (`tests/support/consumer.rs`: each flavour's own client).
//!
//! The shrink tests set `drainQuietSeconds: 0` (no quiet window): their producers are the tests'
//! own `SEND_MESSAGE` frames, which name each queue id and send only to the queues the test
//! chose (never to a removed one after the write shrink), so no producer holds a stale route. The
//! quiet window itself, under a Java producer with the default route refresh, is proven in
//! `tests/envtest_rocketmq_shrink.rs`.
//!
//! Each test body takes a [`RocketMq`] and runs twice: `rust_*` against rocketmq-rust 1.0.0
//! (`ROCKETMQ_BIN`), `java_*` against Apache RocketMQ 4.9.7 (`ROCKETMQ_JAVA_HOME`). Each needs
//! `KUBEBUILDER_ASSETS` (and `HELM`) and its flavour's servers, and prints one SKIP line without
//! them, unless `REBALANCER_REQUIRE_ENVTEST=1` / `REBALANCER_REQUIRE_ROCKETMQ=1` /
//! `REBALANCER_REQUIRE_ROCKETMQ_JAVA=1`. They share one RocketMQ per flavour (one NameServer,
//! `broker-a` and `broker-b`), each with its own topics and groups.

mod support;

use std::time::{Duration, Instant};

use kube::api::{DeleteParams, Patch, PatchParams};
use rebalancer::api::{Permission, Topic};
use rebalancer::rocketmq::TopicRoute;
use serde_json::{Value, json};
use support::fixtures::Env;
use support::operator::Operator;
use support::rocketmq::{RocketMq, both, commit, connect, heartbeat, send};
use support::{eventually, random_suffix};

/// The operator's `--sync-period`, in seconds.
const SYNC_PERIOD: u64 = 2;

async fn route(namesrv: &str, topic: &str) -> Result<TopicRoute, String> {
    connect(namesrv)
        .await
        .topic_route(topic)
        .await
        .map_err(|e| e.to_string())
}

/// The (read, write, permission) the route gives `broker`.
fn counts(route: &TopicRoute, broker: &str) -> Option<(u32, u32, Permission)> {
    route
        .queue(broker)
        .map(|q| (q.read_queue_nums, q.write_queue_nums, q.permission()))
}

/// Polls the NameServer until the route gives each broker its counts; returns when, since `from`.
async fn route_shows(
    namesrv: &str,
    topic: &str,
    want: &[(&str, u32, u32)],
    from: Instant,
) -> Duration {
    eventually(
        &format!("the route of {topic} to show {want:?}"),
        || async {
            let r = route(namesrv, topic).await?;
            for (broker, read, write) in want {
                if counts(&r, broker) != Some((*read, *write, Permission::ReadWrite)) {
                    return Err(format!("{r:?}"));
                }
            }
            Ok(())
        },
    )
    .await;
    from.elapsed()
}

fn synced(topic: &Topic) -> Option<(String, String, String)> {
    let c = topic
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Synced")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the Topic's `Synced` has `status` and `reason`; returns its message.
async fn wait_synced(env: &Env, name: &str, status: &str, reason: &str) -> String {
    let api = env.api::<Topic>();
    eventually(
        &format!("topic {name}: Synced={status} {reason}"),
        || async {
            let t = api.get(name).await.map_err(|e| e.to_string())?;
            match synced(&t) {
                Some((s, r, m)) if s == status && r == reason => Ok(m),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

fn managed(name: &str, rocketmq_name: &str, namesrv: &str, extra: Value) -> Value {
    let mut spec = json!({"topicName": rocketmq_name, "nameServers": [namesrv], "sync": "Manage"});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": name}, "spec": spec})
}

fn brokers(list: &[(&str, u32, u32)]) -> Value {
    json!({"brokers": list.iter().map(|(n, r, w)| json!({"name": n, "readQueues": r, "writeQueues": w})).collect::<Vec<_>>()})
}

async fn operator(env: &Env) -> Operator {
    let op = env.operator_with("op", vec![format!("--sync-period={SYNC_PERIOD}")]);
    env.wait_holder("op").await;
    op
}

async fn wait_event(env: &Env, name: &str, type_: &str, reason: &str) -> String {
    eventually(
        &format!("a {type_} {reason} Event about {name}"),
        || async {
            let events = env.events_of("Topic", name).await;
            events
                .iter()
                .rev()
                .find(|(t, r, _)| t == type_ && r == reason)
                .map(|(_, _, note)| note.clone())
                .ok_or_else(|| format!("events: {events:?}"))
        },
    )
    .await
}

both!(
    manage_creates_grows_refuses_unsafe_counts_and_never_deletes,
    rust_manage_creates_grows_refuses_unsafe_counts_and_never_deletes,
    java_manage_creates_grows_refuses_unsafe_counts_and_never_deletes
);
async fn manage_creates_grows_refuses_unsafe_counts_and_never_deletes(mq: &RocketMq) {
    let Some(env) = Env::new("rocketmq-manage").await else {
        return;
    };
    let ns = mq.namesrv_addr();
    let topic = format!("Managed_{}", random_suffix(6));
    let op = operator(&env).await;

    // Created on both brokers from spec.brokers.
    let started = Instant::now();
    env.apply::<Topic>(managed(
        "orders",
        &topic,
        &ns,
        brokers(&[("broker-a", 4, 4), ("broker-b", 2, 2)]),
    ))
    .await;
    let created = route_shows(
        &ns,
        &topic,
        &[("broker-a", 4, 4), ("broker-b", 2, 2)],
        started,
    )
    .await;
    let message = wait_synced(&env, "orders", "True", "InSync").await;
    let in_sync = started.elapsed();
    assert_eq!(
        message,
        format!("route of topic {topic} matches the spec on 2 brokers")
    );
    println!("MEASURED create: route after {created:?}, Synced=True after {in_sync:?}");
    let t = env.api::<Topic>().get("orders").await.unwrap();
    let observed = &t
        .status
        .as_ref()
        .unwrap()
        .observed
        .as_ref()
        .unwrap()
        .brokers;
    let seen: Vec<(&str, u32, u32)> = observed
        .iter()
        .map(|b| (b.name.as_str(), b.read_queues, b.write_queues))
        .collect();
    assert_eq!(seen, [("broker-a", 4, 4), ("broker-b", 2, 2)]);
    assert!(
        t.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .all(|c| c.type_ != "Drifted"),
        "no Drifted under Manage"
    );

    // Growth: one write.
    let started = Instant::now();
    env.apply::<Topic>(managed(
        "orders",
        &topic,
        &ns,
        brokers(&[("broker-a", 8, 8), ("broker-b", 2, 2)]),
    ))
    .await;
    let grown = route_shows(
        &ns,
        &topic,
        &[("broker-a", 8, 8), ("broker-b", 2, 2)],
        started,
    )
    .await;
    wait_synced(&env, "orders", "True", "InSync").await;
    println!("MEASURED growth: route after {grown:?}");

    // readQueues < writeQueues: the API server refuses it (CEL), nothing reaches the brokers.
    let refused = env
        .api::<Topic>()
        .patch(
            "orders",
            &PatchParams::apply("test-unsafe").force(),
            &Patch::Apply(&managed(
                "orders",
                &topic,
                &ns,
                brokers(&[("broker-a", 4, 8), ("broker-b", 2, 2)]),
            )),
        )
        .await
        .expect_err("the API server must refuse readQueues < writeQueues under Manage");
    assert!(
        refused.to_string().contains("UnsafeQueueCounts"),
        "{refused}"
    );
    tokio::time::sleep(Duration::from_secs(SYNC_PERIOD * 2)).await;
    let r = route(&ns, &topic).await.unwrap();
    assert_eq!(
        counts(&r, "broker-a"),
        Some((8, 8, Permission::ReadWrite)),
        "nothing changed on the broker"
    );

    // Deleting the Topic resource never deletes the RocketMQ topic.
    env.api::<Topic>()
        .delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the Topic to be gone", || async {
        match env.api::<Topic>().get_opt("orders").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(SYNC_PERIOD * 2)).await;
    let r = route(&ns, &topic).await.unwrap();
    assert_eq!(counts(&r, "broker-a"), Some((8, 8, Permission::ReadWrite)));
    assert_eq!(counts(&r, "broker-b"), Some((2, 2, Permission::ReadWrite)));
    op.assert_clean();
}

both!(
    manage_applies_a_cluster_default_to_every_broker,
    rust_manage_applies_a_cluster_default_to_every_broker,
    java_manage_applies_a_cluster_default_to_every_broker
);
async fn manage_applies_a_cluster_default_to_every_broker(mq: &RocketMq) {
    let Some(env) = Env::new("rocketmq-manage-cluster").await else {
        return;
    };
    let ns = mq.namesrv_addr();
    let topic = format!("Cluster_{}", random_suffix(6));
    let op = operator(&env).await;
    env.apply::<Topic>(managed(
        "orders",
        &topic,
        &ns,
        json!({"brokerCluster": {"name": support::rocketmq::CLUSTER, "readQueues": 3, "writeQueues": 3}}),
    ))
    .await;
    route_shows(
        &ns,
        &topic,
        &[("broker-a", 3, 3), ("broker-b", 3, 3)],
        Instant::now(),
    )
    .await;
    wait_synced(&env, "orders", "True", "InSync").await;

    // An unknown cluster writes nothing.
    env.apply::<Topic>(managed(
        "other",
        &format!("Nowhere_{}", random_suffix(6)),
        &ns,
        json!({"brokerCluster": {"name": "NoSuchCluster", "readQueues": 3, "writeQueues": 3}}),
    ))
    .await;
    let message = wait_synced(&env, "other", "False", "ClusterNotFound").await;
    assert_eq!(
        message,
        "the NameServers know no broker of cluster NoSuchCluster"
    );
    wait_event(&env, "other", "Warning", "ClusterNotFound").await;
    op.assert_clean();
}

/// Sets up a managed topic on broker-a with 4/4 queues, a ConsumerGroup reading it, and one
/// un-consumed message in each of queues 2 and 3; then asks for 2/2.
async fn shrink_setup(env: &Env, ns: &str, broker: &str, topic: &str, group: &str, extra: Value) {
    let mut spec = brokers(&[("broker-a", 4, 4)]);
    spec["drainQuietSeconds"] = json!(0);
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    env.apply::<Topic>(managed("orders", topic, ns, spec.clone()))
        .await;
    route_shows(ns, topic, &[("broker-a", 4, 4)], Instant::now()).await;
    wait_synced(env, "orders", "True", "InSync").await;
    env.pods(group, 1).await;
    env.group(
        group,
        json!({"topics": ["orders"], "consumers": {"selector": {"matchLabels": {"app": group}}}}),
    )
    .await;
    let client = connect(broker).await;
    heartbeat(&client, &format!("127.0.0.1@{group}"), group, topic).await;
    for queue_id in [2, 3] {
        send(&client, topic, queue_id, "hello").await;
    }
    spec["brokers"] = json!([{"name": "broker-a", "readQueues": 2, "writeQueues": 2}]);
    env.apply::<Topic>(managed("orders", topic, ns, spec)).await;
}

both!(
    a_shrink_goes_write_first_and_reads_follow_once_drained,
    rust_a_shrink_goes_write_first_and_reads_follow_once_drained,
    java_a_shrink_goes_write_first_and_reads_follow_once_drained
);
async fn a_shrink_goes_write_first_and_reads_follow_once_drained(mq: &RocketMq) {
    let Some(env) = Env::new("rocketmq-manage-drain").await else {
        return;
    };
    let ns = mq.namesrv_addr();
    let broker = mq.broker_addr().to_string();
    let topic = format!("Shrink_{}", random_suffix(6));
    let group = format!("drainer-{}", random_suffix(6));
    let op = operator(&env).await;
    shrink_setup(&env, &ns, &broker, &topic, &group, json!({})).await;

    // Write first: writeQueues 2 while readQueues stay 4.
    route_shows(&ns, &topic, &[("broker-a", 4, 2)], Instant::now()).await;
    let message = wait_synced(&env, "orders", "False", "Draining").await;
    assert!(
        message.contains("broker-a: read queues 2-3 wait to be drained")
            && message.contains(&format!("{group}: queues 2-3 behind")),
        "{message}"
    );
    wait_event(&env, "orders", "Normal", "Draining").await;
    let t = env.api::<Topic>().get("orders").await.unwrap();
    assert!(t.status.as_ref().unwrap().draining_since.is_some());
    // While un-consumed messages sit in the removed queues, the read queues stay.
    tokio::time::sleep(Duration::from_secs(SYNC_PERIOD * 3)).await;
    let r = route(&ns, &topic).await.unwrap();
    assert_eq!(counts(&r, "broker-a"), Some((4, 2, Permission::ReadWrite)));

    // Consumed (offsets committed up to the max offsets): the read queues follow.
    let client = connect(&broker).await;
    commit(&client, &group, &topic, 2, 1).await;
    let partly = wait_synced(&env, "orders", "False", "Draining").await;
    eventually("only queue 3 to be named", || async {
        let m = wait_synced(&env, "orders", "False", "Draining").await;
        if m.contains(&format!("{group}: queues 3 behind")) {
            Ok(())
        } else {
            Err(m)
        }
    })
    .await;
    let committed = Instant::now();
    commit(&client, &group, &topic, 3, 1).await;
    let followed = route_shows(&ns, &topic, &[("broker-a", 2, 2)], committed).await;
    wait_synced(&env, "orders", "True", "InSync").await;
    println!("MEASURED drained -> read queues shrunk in the route after {followed:?} ({partly})");
    let t = env.api::<Topic>().get("orders").await.unwrap();
    assert!(t.status.as_ref().unwrap().draining_since.is_none());
    op.assert_clean();
}

both!(
    a_shrink_proceeds_after_the_drain_timeout,
    rust_a_shrink_proceeds_after_the_drain_timeout,
    java_a_shrink_proceeds_after_the_drain_timeout
);
async fn a_shrink_proceeds_after_the_drain_timeout(mq: &RocketMq) {
    let Some(env) = Env::new("rocketmq-manage-timeout").await else {
        return;
    };
    let ns = mq.namesrv_addr();
    let broker = mq.broker_addr().to_string();
    let topic = format!("Timeout_{}", random_suffix(6));
    let group = format!("slow-{}", random_suffix(6));
    let op = operator(&env).await;
    let timeout = 6;
    shrink_setup(
        &env,
        &ns,
        &broker,
        &topic,
        &group,
        json!({"drainTimeoutSeconds": timeout}),
    )
    .await;
    route_shows(&ns, &topic, &[("broker-a", 4, 2)], Instant::now()).await;
    wait_synced(&env, "orders", "False", "Draining").await;
    let waiting = Instant::now();
    let r = route(&ns, &topic).await.unwrap();
    assert_eq!(counts(&r, "broker-a"), Some((4, 2, Permission::ReadWrite)));
    let after = route_shows(&ns, &topic, &[("broker-a", 2, 2)], waiting).await;
    wait_synced(&env, "orders", "True", "InSync").await;
    let note = wait_event(&env, "orders", "Warning", "DrainTimeout").await;
    assert!(
        note.contains("read queues 2-3 removed after drainTimeoutSeconds 6")
            && note.contains(&group),
        "{note}"
    );
    println!(
        "MEASURED drainTimeoutSeconds={timeout}: read queues shrunk {after:?} after Draining was seen"
    );
    op.assert_clean();
}

both!(
    losing_readability_goes_read_only_first_and_waits_for_the_drain,
    rust_losing_readability_goes_read_only_first_and_waits_for_the_drain,
    java_losing_readability_goes_read_only_first_and_waits_for_the_drain
);
async fn losing_readability_goes_read_only_first_and_waits_for_the_drain(mq: &RocketMq) {
    let Some(env) = Env::new("rocketmq-manage-deny").await else {
        return;
    };
    let ns = mq.namesrv_addr();
    let broker = mq.broker_addr().to_string();
    let topic = format!("Deny_{}", random_suffix(6));
    let group = format!("reader-{}", random_suffix(6));
    let op = operator(&env).await;
    let spec = |permission: &str| json!({"drainQuietSeconds": 0, "brokers": [{"name": "broker-a", "readQueues": 2, "writeQueues": 2, "permission": permission}]});
    env.apply::<Topic>(managed("orders", &topic, &ns, spec("ReadWrite")))
        .await;
    wait_synced(&env, "orders", "True", "InSync").await;
    env.pods(&group, 1).await;
    env.group(
        &group,
        json!({"topics": ["orders"], "consumers": {"selector": {"matchLabels": {"app": group}}}}),
    )
    .await;
    let client = connect(&broker).await;
    heartbeat(&client, &format!("127.0.0.1@{group}"), &group, &topic).await;
    send(&client, &topic, 1, "hello").await;

    env.apply::<Topic>(managed("orders", &topic, &ns, spec("Deny")))
        .await;
    let perm = |want: Permission| {
        let ns = ns.clone();
        let topic = topic.clone();
        async move {
            eventually(&format!("broker-a to be {want:?}"), || async {
                let r = route(&ns, &topic).await?;
                match counts(&r, "broker-a") {
                    Some((2, 2, p)) if p == want => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await
        }
    };
    // Writes stop first; reads stay while queue 1 holds an un-consumed message.
    perm(Permission::ReadOnly).await;
    let message = wait_synced(&env, "orders", "False", "Draining").await;
    assert!(
        message.contains("broker-a: read queues 0-1 wait to be drained")
            && message.contains(&format!("{group}: queues 1 behind")),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(SYNC_PERIOD * 2)).await;
    perm(Permission::ReadOnly).await;
    commit(&client, &group, &topic, 1, 1).await;
    perm(Permission::Deny).await;
    wait_synced(&env, "orders", "True", "InSync").await;
    op.assert_clean();
}

both!(
    a_shrink_under_real_consumers_loses_no_message,
    rust_a_shrink_under_real_consumers_loses_no_message,
    java_a_shrink_under_real_consumers_loses_no_message
);
/// The shrink with real clients on both sides: two unmodified RocketMQ push consumers
/// (`tests/support/consumer.rs`) read the topic as a `consumerIds: Client` group whose RocketMQ
/// name is `spec.groupName`, messages go to every queue the route lets producers write, and the
/// Topic shrinks from 4 to 2 queues while they run. Every message sent is received (nothing is
/// stranded in a queue that stopped being read), and the read queues shrink only once the
/// consumers' own offsets caught up.
async fn a_shrink_under_real_consumers_loses_no_message(mq: &RocketMq) {
    // Each flavour's own client: rocketmq-client-rust on rocketmq-rust's servers, Apache
    // RocketMQ 4.9.7's Java client on its Java servers.
    let flavour = support::consumer::Flavour::of(mq);
    let test = flavour.test_name("a_shrink_under_real_consumers_loses_no_message");
    if !flavour.available(&test) {
        return;
    }
    let Some(env) = Env::new("rocketmq-manage-real").await else {
        return;
    };
    let ns = mq.namesrv_addr();
    let broker = mq.broker_addr().to_string();
    let topic = format!("Shrink_{}", random_suffix(6));
    let group = format!("shrink_readers_{}", random_suffix(6));
    let op = operator(&env).await;
    let mut spec = brokers(&[("broker-a", 4, 4)]);
    spec["drainQuietSeconds"] = json!(0);
    env.apply::<Topic>(managed("orders", &topic, &ns, spec.clone()))
        .await;
    route_shows(&ns, &topic, &[("broker-a", 4, 4)], Instant::now()).await;
    env.group(
        "readers",
        json!({"topics": ["orders"], "consumerIds": "Client", "groupName": group,
               "consumers": {"selector": {"matchLabels": {"app": "readers"}}}}),
    )
    .await;
    let mut consumers = Vec::new();
    for (i, name) in ["r1", "r2"].iter().enumerate() {
        let config = support::consumer::ConsumerConfig {
            namesrv: ns.clone(),
            group: group.clone(),
            topics: vec![topic.clone()],
            client_ip: format!("127.3.0.{}", i + 1),
            instance_name: name.to_string(),
        };
        consumers.push(
            support::consumer::Consumer::start_as(&test, flavour, &config, &[])
                .await
                .unwrap(),
        );
    }
    for c in &consumers {
        c.wait_queues(|q| !q.is_empty(), support::deadline())
            .await
            .unwrap_or_else(|e| panic!("{} holds no queue: {e}", c.client_id()));
    }

    // A producer writes to every writable queue of the route, before and during the shrink.
    let producer = connect(&broker).await;
    let mut sent = std::collections::BTreeSet::new();
    let mut send_round = |writable: u32, round: u32| {
        let bodies: Vec<(u32, String)> = (0..writable)
            .map(|q| (q, format!("{topic}-{round}-{q}")))
            .collect();
        sent.extend(bodies.iter().map(|(_, b)| b.clone()));
        bodies
    };
    for round in 0..5 {
        for (q, body) in send_round(4, round) {
            send(&producer, &topic, q, &body).await;
        }
    }
    spec["brokers"] = json!([{"name": "broker-a", "readQueues": 2, "writeQueues": 2}]);
    env.apply::<Topic>(managed("orders", &topic, &ns, spec))
        .await;
    route_shows(&ns, &topic, &[("broker-a", 4, 2)], Instant::now()).await;
    for round in 5..10 {
        for (q, body) in send_round(2, round) {
            send(&producer, &topic, q, &body).await;
        }
    }
    let shrunk = route_shows(&ns, &topic, &[("broker-a", 2, 2)], Instant::now()).await;
    wait_synced(&env, "orders", "True", "InSync").await;
    println!("MEASURED reads followed {shrunk:?} after the write shrink, with real consumers");

    let received = eventually("every message sent to be received", || async {
        let got: std::collections::BTreeSet<String> = consumers
            .iter()
            .flat_map(|c| c.messages())
            .filter(|m| m.topic == topic)
            .map(|m| m.body)
            .collect();
        let missing: Vec<&String> = sent.difference(&got).collect();
        if missing.is_empty() {
            Ok(got)
        } else {
            Err(format!(
                "{} of {} missing: {missing:?}",
                missing.len(),
                sent.len()
            ))
        }
    })
    .await;
    assert_eq!(received, sent);
    assert_eq!(sent.len(), 5 * 4 + 5 * 2);
    op.assert_clean();
}
