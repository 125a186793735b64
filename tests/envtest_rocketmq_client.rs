//! `consumerIds: Client` end to end, with nothing simulated: the envtest API server and the real
//! `rebalancer` binary (`tests/support/fixtures.rs`), real rocketmq-rust NameServer and Brokers
//! (`tests/support/rocketmq.rs`), and real RocketMQ clients: unmodified `DefaultMQPushConsumer`s
//! of the crates.io crate `rocketmq-client-rust` (`tests/support/consumer.rs`), each allocating
//! for itself with its default strategy (`AllocateMessageQueueAveragely`).
//!
//! The proof is a comparison with the clients themselves: the queues the status gives each
//! client id are exactly the queues that client reports holding (its own process-queue table).
//! Each test has its own topic, group and namespace; the RocketMQ is shared by the binary.
//! The main proof also runs with Apache RocketMQ 4.9.7's Java client (`hack/java-consumer`) on
//! the Java servers (`java_*`).
//!
//! Needs `KUBEBUILDER_ASSETS` (and `HELM`), `ROCKETMQ_BIN` and `ROCKETMQ_CONSUMER` (the `java_*`
//! test: `ROCKETMQ_JAVA_HOME` and `ROCKETMQ_JAVA_CONSUMER`); prints one SKIP line without them
//! unless the REQUIRE variables are set (`.ci/run` sets them).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use rebalancer::api::{ConsumerGroup, Permission};
use rebalancer::assign::ranges::parse_ranges;
use rebalancer::rocketmq::{RemotingClient, Timeouts, TopicConfig};
use serde_json::json;
use support::consumer::{Consumer, ConsumerConfig, Flavour, Queue};
use support::fixtures::{Env, condition, condition_is};
use support::rocketmq::{RocketMq, shared, shared_java};
use support::{eventually, random_suffix};

/// The operator's `--sync-period` (also how often a Client group's clients are read), seconds.
const SYNC_PERIOD: u64 = 1;
/// The operator's `--client-grace`, seconds: how long clients may hold other queues than
/// computed before `ClientsDiverge=True`.
const CLIENT_GRACE: u64 = 3;

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(5),
    }
}

/// Creates `topic` with `queues` read and write queues on each broker in `brokers`.
async fn create_topic(mq: &RocketMq, brokers: &[usize], topic: &str, queues: u32) {
    for &b in brokers {
        let addr = &mq.brokers[b].addr;
        RemotingClient::connect(addr, timeouts())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .create_or_update_topic(&TopicConfig::new(
                topic,
                queues,
                queues,
                Permission::ReadWrite,
            ))
            .await
            .unwrap_or_else(|e| panic!("creating {topic} on {addr}: {e}"));
    }
}

/// A test's world: its namespace, the operator, an Observe Topic `orders` for a fresh RocketMQ
/// topic, and a Client group `consumer` over it whose RocketMQ group name is fresh too.
struct World {
    env: Env,
    mq: &'static RocketMq,
    flavour: Flavour,
    topic: String,
    group: String,
    _op: support::operator::Operator,
}

impl World {
    async fn new(test: &str, brokers: &[usize], queues: u32) -> Option<World> {
        World::new_as(test, Flavour::Rust, brokers, queues).await
    }

    /// [`World::new`] with clients of `flavour`, each on its own servers: rocketmq-rust's for
    /// rocketmq-client-rust, Apache RocketMQ 4.9.7's for its Java client.
    async fn new_as(test: &str, flavour: Flavour, brokers: &[usize], queues: u32) -> Option<World> {
        let mq = match flavour {
            Flavour::Rust => shared(test).await?,
            Flavour::Java => shared_java(test).await?,
        };
        if !flavour.available(test) {
            return None;
        }
        let env = Env::new(test).await?;
        let topic = format!("Orders_{}", random_suffix(6));
        let group = format!("orders_group_{}", random_suffix(6));
        create_topic(mq, brokers, &topic, queues).await;
        env.apply::<rebalancer::api::Topic>(json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders"},
            "spec": {"topicName": topic, "nameServers": [mq.namesrv_addr()]}
        }))
        .await;
        env.group(
            "consumer",
            json!({"topics": ["orders"], "consumerIds": "Client", "groupName": group,
                   "consumers": {"selector": {"matchLabels": {"app": "consumer"}}}}),
        )
        .await;
        let op = env.operator_with(
            "op",
            vec![
                format!("--sync-period={SYNC_PERIOD}"),
                format!("--client-grace={CLIENT_GRACE}"),
            ],
        );
        env.wait_holder("op").await;
        Some(World {
            env,
            mq,
            flavour,
            topic,
            group,
            _op: op,
        })
    }

    /// A Ready pod `name` with IP `ip` (the test is the kubelet).
    async fn pod(&self, name: &str, ip: &str) {
        self.env.pod(name, json!({"app": "consumer"}), true).await;
        self.env
            .api::<Pod>()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}})),
            )
            .await
            .unwrap_or_else(|e| panic!("pod {name} ip {ip}: {e}"));
    }

    /// A real client of the group with client id `ip@name`.
    async fn client(&self, test: &str, ip: &str, name: &str) -> Consumer {
        let config = ConsumerConfig {
            namesrv: self.mq.namesrv_addr(),
            group: self.group.clone(),
            topics: vec![self.topic.clone()],
            client_ip: ip.into(),
            instance_name: name.into(),
        };
        Consumer::start_as(test, self.flavour, &config, &[])
            .await
            .expect("the consumer is there")
    }

    async fn get_group(&self) -> ConsumerGroup {
        self.env.get_group("consumer").await
    }
}

/// Client id -> the queues the status gives it.
fn status_queues(group: &ConsumerGroup) -> Result<BTreeMap<String, BTreeSet<Queue>>, String> {
    let status = group.status.as_ref().ok_or("no status")?;
    let mut out = BTreeMap::new();
    for a in &status.allocation.assignments {
        let mut queues = BTreeSet::new();
        for q in &a.queues {
            for (start, end) in parse_ranges(&q.queue_ids).map_err(|e| e.to_string())? {
                for id in start..=end {
                    queues.insert((q.topic.clone(), q.broker.clone(), id));
                }
            }
        }
        out.insert(a.consumer.clone(), queues);
    }
    Ok(out)
}

/// `Ok` when the group is Ready and its status gives each running client exactly the queues the
/// client itself holds, every readable queue to someone, and names no other client.
fn status_is_what_clients_hold(
    group: &ConsumerGroup,
    topic: &str,
    clients: &[&Consumer],
    all_queues: usize,
) -> Result<(), String> {
    condition_is(group, "Ready", "True")?;
    let status = status_queues(group)?;
    // Clients also rebalance their group's retry topic (`%RETRY%<group>`), which is RocketMQ's
    // own: only the group's topic is compared.
    let held: BTreeMap<String, BTreeSet<Queue>> = clients
        .iter()
        .map(|c| (c.client_id().to_string(), c.queues_of(topic)))
        .collect();
    if status != held {
        return Err(format!("status {status:?}\nclients hold {held:?}"));
    }
    let owned: usize = held.values().map(BTreeSet::len).sum();
    if owned != all_queues {
        return Err(format!("{owned} queues held, {all_queues} readable"));
    }
    Ok(())
}

/// Waits until the status and the clients agree (see [`status_is_what_clients_hold`]) and the
/// extra `check` holds; returns the group.
async fn wait_agreement<F>(
    world: &World,
    clients: &[&Consumer],
    all_queues: usize,
    what: &str,
    check: F,
) -> ConsumerGroup
where
    F: Fn(&ConsumerGroup) -> Result<(), String>,
{
    eventually(what, || async {
        let group = world.get_group().await;
        status_is_what_clients_hold(&group, &world.topic, clients, all_queues)
            .and_then(|()| check(&group))
            .map_err(|e| {
                let logs: Vec<String> = clients.iter().map(|c| c.log_tail()).collect();
                format!(
                    "{e}\nstatus: {}\nclient logs: {logs:?}",
                    serde_json::to_string(&group.status).unwrap_or_default()
                )
            })?;
        Ok(group)
    })
    .await
}

fn pods_of(group: &ConsumerGroup) -> BTreeMap<String, Option<String>> {
    group
        .status
        .iter()
        .flat_map(|s| &s.allocation.assignments)
        .map(|a| (a.consumer.clone(), a.pod.clone()))
        .collect()
}

/// Three real clients of `flavour` (ids under `net`, `A.B.C`) over six queues on two brokers:
/// the status gives each exactly what it holds, and so does each pod's annotation; after one
/// stops, the two others take its queues and the status follows them.
async fn the_status_is_what_real_clients_hold(test: &str, flavour: Flavour, net: &str) {
    let Some(world) = World::new_as(test, flavour, &[0, 1], 3).await else {
        return;
    };
    for i in 1..=3 {
        world
            .pod(&format!("consumer-{i}"), &format!("{net}.{i}"))
            .await;
    }
    let c1 = world.client(test, &format!("{net}.1"), "one").await;
    let c2 = world.client(test, &format!("{net}.2"), "two").await;
    let mut c3 = world.client(test, &format!("{net}.3"), "three").await;

    // Six queues (three on each broker) over three clients.
    let group = wait_agreement(&world, &[&c1, &c2, &c3], 6, "three clients", |g| {
        condition_is(g, "ClientsMismatch", "False")?;
        condition_is(g, "IdleConsumers", "False")?;
        // The operator asked each client too, and they agree.
        condition_is(g, "ClientsDiverge", "False")
    })
    .await;
    assert_eq!(
        pods_of(&group),
        BTreeMap::from([
            (format!("{net}.1@one"), Some("consumer-1".to_string())),
            (format!("{net}.2@two"), Some("consumer-2".to_string())),
            (format!("{net}.3@three"), Some("consumer-3".to_string())),
        ])
    );
    let t = &world.topic;
    assert!([&c1, &c2, &c3].iter().all(|c| c.queues_of(t).len() == 2));
    // Each pod is told the queues its client holds.
    for (pod, client) in [
        ("consumer-1", &c1),
        ("consumer-2", &c2),
        ("consumer-3", &c3),
    ] {
        let p = world.env.api::<Pod>().get(pod).await.unwrap();
        let annotated = support::fixtures::queues_of(&p).expect("queues annotation");
        let ranges: Vec<rebalancer::api::QueueRange> = serde_json::from_str(&annotated).unwrap();
        let mut queues = BTreeSet::new();
        for r in ranges {
            for (start, end) in parse_ranges(&r.queue_ids).unwrap() {
                for id in start..=end {
                    queues.insert((r.topic.clone(), r.broker.clone(), id));
                }
            }
        }
        assert_eq!(queues, client.queues_of(t), "{pod}'s annotation");
    }

    // One client stops (its pod stays Ready): the two others take its queues, and the pod that
    // runs no client any more is reported. Clients joining one by one may have raised the same
    // Warning before (a slow starter, such as a JVM, is seen missing for a sync period or two):
    // only the Warnings after the stop are this transition's.
    let before = consumer_3_missing(&world).await;
    c3.stop().await;
    let group = wait_agreement(
        &world,
        &[&c1, &c2],
        6,
        "two clients after one stopped",
        |g| condition_is(g, "ClientsMismatch", "True"),
    )
    .await;
    let status = group.status.as_ref().unwrap();
    assert_eq!(status.pods_without_client, ["consumer-3"]);
    assert!(status.clients_without_pod.is_empty());
    assert_eq!(status.allocation.consumers, 2);
    let message = &condition(&group, "ClientsMismatch").unwrap().message;
    assert!(message.contains("consumer-3"), "{message}");
    // This transition is reported once, not at every sync period.
    let after = consumer_3_missing(&world).await;
    assert_eq!(
        after.len(),
        before.len() + 1,
        "before the stop: {before:?}\nafter: {after:?}"
    );
    assert!(c1.queues_of(t).len() == 3 && c2.queues_of(t).len() == 3);
}

/// The group's ClientsMismatch Warnings saying that only pod consumer-3 runs no client.
async fn consumer_3_missing(world: &World) -> Vec<String> {
    world
        .env
        .events_of("ConsumerGroup", "consumer")
        .await
        .into_iter()
        .filter(|(t, r, note)| {
            t == "Warning"
                && r == "ClientsMismatch"
                && note.contains("1 Ready pods run no connected client")
                && note.ends_with("consumer-3")
        })
        .map(|(_, _, note)| note)
        .collect()
}

#[tokio::test]
async fn the_status_is_what_real_clients_hold_also_after_one_stops() {
    the_status_is_what_real_clients_hold("client-ids-follow-real-clients", Flavour::Rust, "10.1.0")
        .await;
}

/// The same proof with Apache RocketMQ 4.9.7's own Java client on its own servers: what most
/// users run.
#[tokio::test]
async fn java_the_status_is_what_java_clients_hold_also_after_one_stops() {
    the_status_is_what_real_clients_hold("client-ids-follow-java-clients", Flavour::Java, "10.5.0")
        .await;
}

#[tokio::test]
async fn more_clients_than_queues_names_the_idle_client() {
    let test = "client-ids-idle";
    let Some(world) = World::new(test, &[0], 2).await else {
        return;
    };
    // Two pods, three clients: one pod runs two (two instance names), and one client runs
    // outside the group's pods.
    world.pod("consumer-1", "10.2.0.1").await;
    world.pod("consumer-2", "10.2.0.2").await;
    let a = world.client(test, "10.2.0.1", "a").await;
    let b = world.client(test, "10.2.0.1", "b").await;
    let outside = world.client(test, "10.9.9.9", "elsewhere").await;

    let group = wait_agreement(
        &world,
        &[&a, &b, &outside],
        2,
        "three clients, two queues",
        |g| {
            condition_is(g, "IdleConsumers", "True")?;
            condition_is(g, "ClientsMismatch", "True")
        },
    )
    .await;
    let status = group.status.as_ref().unwrap();
    // Averagely over the sorted ids 10.2.0.1@a, 10.2.0.1@b, 10.9.9.9@elsewhere: the last is idle,
    // and it is that client which holds nothing.
    assert_eq!(status.allocation.idle_consumers, ["10.9.9.9@elsewhere"]);
    assert!(outside.queues_of(&world.topic).is_empty());
    assert_eq!(status.allocation.idle, 1);
    assert_eq!(status.allocation.consumers, 3);
    let idle = &condition(&group, "IdleConsumers").unwrap().message;
    assert!(idle.contains("3 consumers"), "{idle}");
    assert_eq!(status.clients_without_pod, ["10.9.9.9@elsewhere"]);
    assert_eq!(status.pods_without_client, ["consumer-2"]);
    assert_eq!(
        pods_of(&group).get("10.2.0.1@b"),
        Some(&Some("consumer-1".to_string()))
    );
    let ns = &world.env.ns;
    for (name, labels) in [
        (
            "rebalancer_idle_consumers",
            format!("namespace=\"{ns}\",group=\"consumer\""),
        ),
        (
            "rebalancer_clients_mismatched",
            format!("namespace=\"{ns}\",group=\"consumer\",kind=\"without_pod\""),
        ),
        (
            "rebalancer_clients_mismatched",
            format!("namespace=\"{ns}\",group=\"consumer\",kind=\"pod_without_client\""),
        ),
    ] {
        assert_eq!(
            world._op.metric(name, &labels).await,
            Some(1.0),
            "{name}{{{labels}}}"
        );
    }
}

#[tokio::test]
async fn a_topic_without_name_servers_is_refused_clearly() {
    let test = "client-ids-need-name-servers";
    let Some(_mq) = shared(test).await else {
        return;
    };
    let Some(env) = Env::new(test).await else {
        return;
    };
    env.topic("orders", &[("broker-a", 4)]).await;
    env.group(
        "consumer",
        json!({"topics": ["orders"], "consumerIds": "Client",
               "consumers": {"selector": {"matchLabels": {"app": "consumer"}}}}),
    )
    .await;
    let _op = env.operator_with("op", vec![format!("--sync-period={SYNC_PERIOD}")]);
    let group = env
        .wait_group(
            "consumer",
            "Ready=False ClientsNeedNameServers",
            |g| match condition(g, "Ready") {
                Some(c) if c.status == "False" && c.reason == "ClientsNeedNameServers" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
    let message = &condition(&group, "Ready").unwrap().message;
    assert!(
        message.contains("Topic orders has no spec.nameServers"),
        "{message}"
    );
    let warning = eventually("the Warning Event", || async {
        env.events_of("ConsumerGroup", "consumer")
            .await
            .into_iter()
            .find(|(t, r, _)| t == "Warning" && r == "ClientsNeedNameServers")
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    assert!(warning.2.contains("nameServers"), "{warning:?}");
}

#[tokio::test]
async fn clients_running_another_strategy_than_the_spec_diverge() {
    let test = "client-ids-diverge";
    let Some(world) = World::new(test, &[0], 4).await else {
        return;
    };
    // The spec says round robin; the clients run their default, Averagely.
    world
        .env
        .group(
            "consumer",
            json!({"topics": ["orders"], "consumerIds": "Client", "groupName": world.group,
                   "strategy": "AveragelyByCircle",
                   "consumers": {"selector": {"matchLabels": {"app": "consumer"}}}}),
        )
        .await;
    world.pod("consumer-1", "10.4.0.1").await;
    world.pod("consumer-2", "10.4.0.2").await;
    let a = world.client(test, "10.4.0.1", "a").await;
    let b = world.client(test, "10.4.0.2", "b").await;
    let group = world
        .env
        .wait_group("consumer", "ClientsDiverge=True", |g| {
            condition_is(g, "ClientsDiverge", "True")
        })
        .await;
    let message = &condition(&group, "ClientsDiverge").unwrap().message;
    assert!(message.contains("10.4.0.1@a, 10.4.0.2@b"), "{message}");
    // What the status computes is indeed not what the clients hold.
    let t = &world.topic;
    let computed = status_queues(&group).unwrap();
    assert_ne!(computed.get("10.4.0.1@a"), Some(&a.queues_of(t)));
    assert_eq!(a.queues_of(t).len() + b.queues_of(t).len(), 4);
    let warning = eventually("a ClientsDiverge Warning", || async {
        world
            .env
            .events_of("ConsumerGroup", "consumer")
            .await
            .into_iter()
            .find(|(t, r, _)| t == "Warning" && r == "ClientsDiverge")
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    assert!(warning.2.contains("10.4.0.2@b"), "{warning:?}");
    let labels = format!("namespace=\"{}\",group=\"consumer\"", world.env.ns);
    assert_eq!(
        world
            ._op
            .metric("rebalancer_clients_diverging", &labels)
            .await,
        Some(2.0)
    );

    // The spec fixed to what the clients run: they agree again.
    world
        .env
        .group(
            "consumer",
            json!({"topics": ["orders"], "consumerIds": "Client", "groupName": world.group,
                   "strategy": "Averagely",
                   "consumers": {"selector": {"matchLabels": {"app": "consumer"}}}}),
        )
        .await;
    wait_agreement(&world, &[&a, &b], 4, "the fixed spec", |g| {
        condition_is(g, "ClientsDiverge", "False")
    })
    .await;
}
