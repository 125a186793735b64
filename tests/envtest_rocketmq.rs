//! Topic sync (`spec.nameServers`, Observe) end to end, against both real servers: the envtest
//! API server with the real `rebalancer` binary (see `tests/support/fixtures.rs`) and real
//! RocketMQ NameServers and Brokers (see `tests/support/rocketmq.rs`). Topics are created and
//! changed on the brokers with the admin client, never through Kubernetes; the operator runs
//! with `--sync-period=2`.
//!
//! Each test body takes a [`RocketMq`] and runs twice: `rust_*` against rocketmq-rust 1.0.0
//! (`ROCKETMQ_BIN`), `java_*` against Apache RocketMQ 4.9.7 (`ROCKETMQ_JAVA_HOME`). Each needs
//! `KUBEBUILDER_ASSETS` (and `HELM`) and its flavour's servers, and prints one SKIP line without
//! them, unless `REBALANCER_REQUIRE_ENVTEST=1` / `REBALANCER_REQUIRE_ROCKETMQ=1` /
//! `REBALANCER_REQUIRE_ROCKETMQ_JAVA=1`. The tests that only read share one RocketMQ per flavour
//! (one NameServer, `broker-a` and `broker-b`); the outage test runs its own.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use rebalancer::api::{ConsumerGroup, ObservedBroker, Permission, Topic};
use rebalancer::assign::ranges::parse_ranges;
use rebalancer::rocketmq::{RemotingClient, Timeouts, TopicConfig, TopicRoute};
use serde_json::{Value, json};
use support::fixtures::{Env, condition_is};
use support::operator::Operator;
use support::rocketmq::{RocketMq, both};
use support::tcp_proxy::TcpProxy;
use support::{eventually, eventually_within, random_suffix};

/// The operator's `--sync-period`, in seconds.
const SYNC_PERIOD: u64 = 2;

/// What "within one sync period" may take on top of the period: a reconcile, a status write, the
/// group's watch event and its 500 ms debounce, a group reconcile and its writes, and this
/// test's 100 ms polling.
const SLACK: Duration = Duration::from_secs(3);

/// One queue: (broker, id).
type Queue = (String, u32);

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(5),
    }
}

/// Creates or updates `topic` on the broker at `addr` (`UPDATE_AND_CREATE_TOPIC`).
async fn set_topic(addr: &str, topic: &str, read: u32, write: u32, permission: Permission) {
    RemotingClient::connect(addr, timeouts())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .create_or_update_topic(&TopicConfig::new(topic, read, write, permission))
        .await
        .unwrap_or_else(|e| panic!("updating {topic} on {addr}: {e}"));
}

/// Polls the NameServer until the route of `topic` satisfies `check`; returns it.
async fn route_until<F>(namesrv: &str, topic: &str, what: &str, check: F) -> TopicRoute
where
    F: Fn(&TopicRoute) -> bool,
{
    eventually(&format!("the NameServer's route: {what}"), || async {
        let route = RemotingClient::connect(namesrv, timeouts())
            .await
            .map_err(|e| e.to_string())?
            .topic_route(topic)
            .await
            .map_err(|e| e.to_string())?;
        if check(&route) {
            Ok(route)
        } else {
            Err(format!("{route:?}"))
        }
    })
    .await
}

/// Whether the route gives `broker` these queues and permission.
fn routes(route: &TopicRoute, broker: &str, read: u32, write: u32, permission: Permission) -> bool {
    route.queue(broker).is_some_and(|q| {
        (q.read_queue_nums, q.write_queue_nums, q.permission()) == (read, write, permission)
    })
}

/// The route as the status should hold it.
fn expected(route: &TopicRoute) -> Vec<ObservedBroker> {
    let mut brokers: Vec<ObservedBroker> = route
        .queue_datas
        .iter()
        .map(|q| ObservedBroker {
            name: q.broker_name.clone(),
            read_queues: q.read_queue_nums,
            write_queues: q.write_queue_nums,
            permission: q.permission(),
            master_addr: route
                .broker(&q.broker_name)
                .and_then(|b| b.master_addr())
                .map(str::to_string),
        })
        .collect();
    brokers.sort_by(|a, b| a.name.cmp(&b.name));
    brokers
}

fn observed(topic: &Topic) -> Option<Vec<ObservedBroker>> {
    Some(topic.status.as_ref()?.observed.as_ref()?.brokers.clone())
}

fn topic_condition<'a>(
    topic: &'a Topic,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    topic
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// `Ok` when the Topic's condition `type_` has `status` and `reason`.
fn topic_condition_is(
    topic: &Topic,
    type_: &str,
    status: &str,
    reason: &str,
) -> Result<(), String> {
    match topic_condition(topic, type_) {
        Some(c) if c.status == status && c.reason == reason => Ok(()),
        other => Err(format!("{type_}: {other:?}")),
    }
}

/// Waits until the Topic satisfies `check`; returns it.
async fn wait_topic<F>(env: &Env, name: &str, what: &str, check: F) -> Topic
where
    F: Fn(&Topic) -> Result<(), String>,
{
    let api = env.api::<Topic>();
    eventually(&format!("topic {name}: {what}"), || async {
        let topic = api.get(name).await.map_err(|e| e.to_string())?;
        check(&topic).map_err(|e| {
            format!(
                "{e}; status {}",
                serde_json::to_string(&topic.status).unwrap_or_default()
            )
        })?;
        Ok(topic)
    })
    .await
}

/// A Topic resource `name` for RocketMQ topic `rocketmq_name` read from `name_servers`, with
/// more spec fields in `extra`.
async fn observed_topic(
    env: &Env,
    name: &str,
    rocketmq_name: &str,
    name_servers: &[String],
    extra: Value,
) -> Topic {
    let mut spec = json!({"topicName": rocketmq_name, "nameServers": name_servers});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    env.apply(json!({
        "apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": name}, "spec": spec
    }))
    .await
}

/// A group over `topic` whose consumers are the `n` Ready pods `{app}-0..`.
async fn group_with_pods(env: &Env, app: &str, topic: &str, n: usize) {
    env.pods(app, n).await;
    env.group(
        app,
        json!({"topics": [topic], "consumers": {"selector": {"matchLabels": {"app": app}}}}),
    )
    .await;
}

/// Every queue the group's status assigns, checking that none is assigned twice.
fn covered(group: &ConsumerGroup) -> Result<BTreeSet<Queue>, String> {
    let status = group.status.as_ref().ok_or("no status")?;
    let mut out = BTreeSet::new();
    for a in &status.allocation.assignments {
        for q in &a.queues {
            for (start, end) in parse_ranges(&q.queue_ids).map_err(|e| e.to_string())? {
                for id in start..=end {
                    if !out.insert((q.broker.clone(), id)) {
                        return Err(format!("{}/{id} assigned twice", q.broker));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The queues consumers read in an observed layout.
fn readable(brokers: &[ObservedBroker]) -> BTreeSet<Queue> {
    brokers
        .iter()
        .filter(|b| matches!(b.permission, Permission::ReadWrite | Permission::ReadOnly))
        .flat_map(|b| (0..b.read_queues).map(move |id| (b.name.clone(), id)))
        .collect()
}

/// `Ok` when the group is Ready with `consumers` consumers that own exactly `queues`.
fn owns_exactly(
    group: &ConsumerGroup,
    consumers: u32,
    queues: &BTreeSet<Queue>,
) -> Result<(), String> {
    condition_is(group, "Ready", "True")?;
    let status = group.status.as_ref().ok_or("no status")?;
    if status.allocation.consumers != consumers {
        return Err(format!("{} consumers", status.allocation.consumers));
    }
    let have = covered(group)?;
    if &have == queues {
        Ok(())
    } else {
        Err(format!("owns {have:?}, want {queues:?}"))
    }
}

/// Starts the operator with `--sync-period` and waits until it leads.
async fn operator(env: &Env) -> Operator {
    let op = env.operator_with("op", vec![format!("--sync-period={SYNC_PERIOD}")]);
    env.wait_holder("op").await;
    op
}

/// Events about `kind`/`name` of `type_` and `reason`: their notes.
async fn notes(env: &Env, kind: &str, name: &str, type_: &str, reason: &str) -> Vec<String> {
    env.events_of(kind, name)
        .await
        .into_iter()
        .filter(|(t, r, _)| t == type_ && r == reason)
        .map(|(_, _, note)| note)
        .collect()
}

/// Waits for an Event about `kind`/`name`; returns its note.
async fn wait_event(env: &Env, kind: &str, name: &str, type_: &str, reason: &str) -> String {
    eventually(
        &format!("a {type_} {reason} Event about {kind} {name}"),
        || async {
            let events = env.events_of(kind, name).await;
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

fn metadata_versions(topic: &Topic) -> (Option<i64>, Option<String>) {
    (topic.metadata.generation, topic.resource_version())
}

/// Sets a broker's topic, then measures how long the NameServer, the Topic's status and the
/// group's assignment take to follow: (NameServer, Topic after the NameServer, group after the
/// NameServer).
async fn change_and_follow(
    env: &Env,
    mq: &RocketMq,
    broker: usize,
    topic: &str,
    (read, write, permission): (u32, u32, Permission),
    consumers: u32,
) -> (Duration, Duration, Duration) {
    let b = &mq.brokers[broker];
    let started = Instant::now();
    set_topic(&b.addr, topic, read, write, permission).await;
    let route = route_until(&mq.namesrv_addr(), topic, "the change", |r| {
        routes(r, &b.name, read, write, permission)
    })
    .await;
    let routed = Instant::now();
    let want = expected(&route);
    let within = Duration::from_secs(SYNC_PERIOD) + SLACK;
    let api = env.api::<Topic>();
    eventually_within("the Topic's observed layout to follow", within, || async {
        let t = api.get("orders").await.map_err(|e| e.to_string())?;
        match observed(&t) {
            Some(o) if o == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let topic_followed = Instant::now();
    let groups = env.api::<ConsumerGroup>();
    let queues = readable(&want);
    eventually_within("the group's assignment to follow", within, || async {
        let g = groups.get("consumer").await.map_err(|e| e.to_string())?;
        owns_exactly(&g, consumers, &queues)
    })
    .await;
    let group_followed = Instant::now();
    (
        routed - started,
        topic_followed - routed,
        group_followed - routed,
    )
}

both!(
    an_observed_topic_drives_its_groups_and_follows_the_brokers,
    rust_an_observed_topic_drives_its_groups_and_follows_the_brokers,
    java_an_observed_topic_drives_its_groups_and_follows_the_brokers
);
async fn an_observed_topic_drives_its_groups_and_follows_the_brokers(mq: &RocketMq) {
    let Some(env) = Env::new("rocketmq-observe").await else {
        return;
    };
    let topic = format!("Orders_{}", random_suffix(6));
    let (a, b) = (&mq.brokers[0], &mq.brokers[1]);
    set_topic(&a.addr, &topic, 4, 4, Permission::ReadWrite).await;
    set_topic(&b.addr, &topic, 4, 4, Permission::ReadWrite).await;
    let route = route_until(&mq.namesrv_addr(), &topic, "both brokers", |r| {
        routes(r, "broker-a", 4, 4, Permission::ReadWrite)
            && routes(r, "broker-b", 4, 4, Permission::ReadWrite)
    })
    .await;
    let op = operator(&env).await;
    // No brokers in the spec: the NameServer is the only source.
    let created = observed_topic(&env, "orders", &topic, &[mq.namesrv_addr()], json!({})).await;
    group_with_pods(&env, "consumer", "orders", 3).await;

    let want = expected(&route);
    assert_eq!(want[0].master_addr.as_deref(), Some(a.addr.as_str()));
    let synced = wait_topic(&env, "orders", "Synced with the route", |t| {
        topic_condition_is(t, "Synced", "True", "RouteRead")?;
        match observed(t) {
            Some(o) if o == want => Ok(()),
            other => Err(format!("observed {other:?}")),
        }
    })
    .await;
    let status = synced.status.clone().unwrap();
    assert_eq!(
        (status.broker_count, status.read_queues, status.write_queues),
        (2, 8, 8)
    );
    assert!(status.observed.as_ref().unwrap().last_sync_time.is_some());
    assert_eq!(
        topic_condition(&synced, "Synced").unwrap().message,
        format!("route of topic {topic} read from the NameServers: 2 brokers")
    );
    assert!(
        topic_condition(&synced, "Drifted").is_none(),
        "no spec.brokers, no drift"
    );
    topic_condition_is(&synced, "Ready", "True", "Valid").unwrap();
    let queues = readable(&want);
    assert_eq!(queues.len(), 8);
    env.wait_group("consumer", "owns exactly the observed queues", |g| {
        owns_exactly(g, 3, &queues)
    })
    .await;

    // An unchanged route is read every period and written never: the status keeps its
    // resourceVersion (and its lastSyncTime) while the freshness metric moves on.
    let labels = format!(r#"namespace="{}",topic="orders""#, env.ns);
    let first = eventually("the last-sync metric", || async {
        op.metric("rebalancer_topic_last_sync_timestamp_seconds", &labels)
            .await
            .ok_or_else(|| "no metric".to_string())
    })
    .await;
    let writes = op
        .metric("rebalancer_writes_total", r#"resource="topics/status""#)
        .await;
    let before = env.api::<Topic>().get("orders").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3 * SYNC_PERIOD)).await;
    let after = env.api::<Topic>().get("orders").await.unwrap();
    assert_eq!(metadata_versions(&after), metadata_versions(&before));
    assert_eq!(after.status, before.status);
    let later = op
        .metric("rebalancer_topic_last_sync_timestamp_seconds", &labels)
        .await
        .unwrap();
    assert!(later >= first + 2.0, "last sync {first} then {later}");
    assert_eq!(
        op.metric("rebalancer_writes_total", r#"resource="topics/status""#)
            .await,
        writes
    );

    // The brokers change, Kubernetes does not: more queues on broker-a, then broker-b turned
    // write-only (its queues leave the consumers).
    let (ns_a, topic_a, group_a) =
        change_and_follow(&env, mq, 0, &topic, (6, 6, Permission::ReadWrite), 3).await;
    let (ns_b, topic_b, group_b) =
        change_and_follow(&env, mq, 1, &topic, (4, 4, Permission::WriteOnly), 3).await;
    println!(
        "followed the brokers (after the NameServer): queue count: NameServer {ns_a:?}, Topic +{topic_a:?}, group +{group_a:?}; \
         permission: NameServer {ns_b:?}, Topic +{topic_b:?}, group +{group_b:?} (sync period {SYNC_PERIOD} s)"
    );
    let t = env.api::<Topic>().get("orders").await.unwrap();
    let status = t.status.clone().unwrap();
    // broker-b is write-only: 6 readable queues, 10 writable ones.
    assert_eq!((status.read_queues, status.write_queues), (6, 10));
    assert_eq!(
        status
            .brokers
            .iter()
            .map(|b| b.producer_share.as_str())
            .collect::<Vec<_>>(),
        ["60%", "40%"]
    );
    // Nothing on the Kubernetes side moved: the spec is the one applied, generation 1.
    assert_eq!(t.metadata.generation, created.metadata.generation);
    assert_eq!(t.spec, created.spec);
    let group = env.get_group("consumer").await;
    assert_eq!(group.metadata.generation, Some(1));
    assert_eq!(group.status.as_ref().unwrap().allocation.queues, 6);
    op.assert_clean();
}

both!(
    a_topic_the_name_server_does_not_know_is_not_synced_until_created,
    rust_a_topic_the_name_server_does_not_know_is_not_synced_until_created,
    java_a_topic_the_name_server_does_not_know_is_not_synced_until_created
);
async fn a_topic_the_name_server_does_not_know_is_not_synced_until_created(mq: &RocketMq) {
    let Some(env) = Env::new("rocketmq-missing").await else {
        return;
    };
    let topic = format!("Missing_{}", random_suffix(6));
    let op = operator(&env).await;
    observed_topic(&env, "orders", &topic, &[mq.namesrv_addr()], json!({})).await;
    group_with_pods(&env, "consumer", "orders", 2).await;

    let t = wait_topic(&env, "orders", "Synced=False, TopicNotFound", |t| {
        topic_condition_is(t, "Synced", "False", "TopicNotFound")?;
        topic_condition_is(t, "Ready", "False", "NotSynced")
    })
    .await;
    let message = &topic_condition(&t, "Synced").unwrap().message;
    assert!(
        message.contains(&topic) && message.contains(&mq.namesrv_addr()),
        "{message}"
    );
    // One line on both: the Java NameServer's remark carries a newline and a FAQ link.
    assert!(!message.contains('\n'), "{message:?}");
    assert!(t.status.as_ref().unwrap().observed.is_none());
    let note = wait_event(&env, "Topic", "orders", "Warning", "TopicNotFound").await;
    assert_eq!(&note, message);
    // The group cannot be planned from a topic with no layout, and says why.
    let group = env
        .wait_group("consumer", "Ready=False, TopicNotSynced", |g| {
            match g
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            {
                Some(c) if c.status == "False" && c.reason == "TopicNotSynced" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    assert!(covered(&group).unwrap().is_empty());
    let labels = format!(
        r#"namespace="{}",topic="orders",reason="TopicNotFound""#,
        env.ns
    );
    assert!(
        op.metric("rebalancer_topic_sync_failures_total", &labels)
            .await
            .is_some_and(|n| n >= 1.0)
    );

    // Created on a broker: the next sync finds it, with no change in Kubernetes.
    set_topic(mq.broker_addr(), &topic, 2, 2, Permission::ReadWrite).await;
    let t = wait_topic(&env, "orders", "Synced=True", |t| {
        topic_condition_is(t, "Synced", "True", "RouteRead")?;
        topic_condition_is(t, "Ready", "True", "Valid")
    })
    .await;
    assert_eq!(observed(&t).unwrap().len(), 1);
    let queues: BTreeSet<Queue> = [("broker-a".to_string(), 0), ("broker-a".to_string(), 1)].into();
    env.wait_group("consumer", "owns the new topic's queues", |g| {
        owns_exactly(g, 2, &queues)
    })
    .await;
    wait_event(&env, "Topic", "orders", "Normal", "Synced").await;
    assert_eq!(
        notes(&env, "Topic", "orders", "Warning", "TopicNotFound")
            .await
            .len(),
        1,
        "one Warning per transition"
    );
    op.assert_clean();
}

both!(
    a_name_server_outage_keeps_the_last_good_layout_and_assignment,
    rust_a_name_server_outage_keeps_the_last_good_layout_and_assignment,
    java_a_name_server_outage_keeps_the_last_good_layout_and_assignment,
    own(1, 1)
);
/// On its own RocketMQ (`own(1, 1)`): it stops the NameServer.
async fn a_name_server_outage_keeps_the_last_good_layout_and_assignment(mq: &RocketMq) {
    let Some(env) = Env::new("rocketmq-outage").await else {
        return;
    };
    let topic = format!("Outage_{}", random_suffix(6));
    set_topic(mq.broker_addr(), &topic, 4, 4, Permission::ReadWrite).await;
    let ns = mq.namesrv_addr();
    let route = route_until(&ns, &topic, "broker-a", |r| {
        routes(r, "broker-a", 4, 4, Permission::ReadWrite)
    })
    .await;
    let op = operator(&env).await;
    observed_topic(&env, "orders", &topic, std::slice::from_ref(&ns), json!({})).await;
    group_with_pods(&env, "consumer", "orders", 2).await;
    let want = expected(&route);
    let queues = readable(&want);
    let good = wait_topic(&env, "orders", "Synced", |t| {
        topic_condition_is(t, "Synced", "True", "RouteRead")
    })
    .await;
    let converged = env
        .wait_group("consumer", "owns the observed queues", |g| {
            owns_exactly(g, 2, &queues)
        })
        .await;
    let pods_before: Vec<Option<String>> = env
        .list_pods("app=consumer")
        .await
        .iter()
        .map(support::fixtures::queues_of)
        .collect();

    mq.stop_namesrv();
    let stopped = Instant::now();
    let down = wait_topic(&env, "orders", "Synced=False, NameServerUnreachable", |t| {
        topic_condition_is(t, "Synced", "False", "NameServerUnreachable")
    })
    .await;
    println!(
        "NameServer stopped: Synced=False after {:?}",
        stopped.elapsed()
    );
    let message = &topic_condition(&down, "Synced").unwrap().message;
    assert!(
        message.starts_with(&format!(
            "no NameServer answered: cannot connect to RocketMQ at {ns}: "
        )),
        "{message}"
    );
    // The last good layout stays, and with it everything planned from it.
    let kept = down.status.as_ref().unwrap();
    assert_eq!(kept.observed, good.status.as_ref().unwrap().observed);
    topic_condition_is(&down, "Ready", "True", "Valid").unwrap();
    assert_eq!(
        wait_event(&env, "Topic", "orders", "Warning", "NameServerUnreachable").await,
        *message
    );
    // A few sync periods of outage: the group is neither rewritten nor re-planned.
    tokio::time::sleep(Duration::from_secs(2 * SYNC_PERIOD)).await;
    let group = env.get_group("consumer").await;
    assert_eq!(group.resource_version(), converged.resource_version());
    owns_exactly(&group, 2, &queues).unwrap();
    let pods_during: Vec<Option<String>> = env
        .list_pods("app=consumer")
        .await
        .iter()
        .map(support::fixtures::queues_of)
        .collect();
    assert_eq!(pods_during, pods_before);
    let labels = format!(
        r#"namespace="{}",topic="orders",reason="NameServerUnreachable""#,
        env.ns
    );
    let failures = op
        .metric("rebalancer_topic_sync_failures_total", &labels)
        .await
        .unwrap_or_default();
    assert!(failures >= 2.0, "{failures} failed syncs counted");
    assert_eq!(
        notes(&env, "Topic", "orders", "Warning", "NameServerUnreachable")
            .await
            .len(),
        1,
        "one Warning per transition, not per failed sync"
    );

    // Back: the broker registers again (within its 10 s period) and the sync recovers.
    mq.start_namesrv().unwrap();
    let restarted = Instant::now();
    let up = wait_topic(&env, "orders", "Synced again", |t| {
        topic_condition_is(t, "Synced", "True", "RouteRead")
    })
    .await;
    println!(
        "NameServer restarted: Synced=True after {:?}",
        restarted.elapsed()
    );
    let back = up.status.as_ref().unwrap().observed.clone().unwrap();
    assert_eq!(back.brokers, want);
    // Recovery is recorded: the same layout, read again.
    assert!(back.last_sync_time > good.status.unwrap().observed.unwrap().last_sync_time);
    wait_event(&env, "Topic", "orders", "Normal", "Synced").await;
    let group = env.get_group("consumer").await;
    owns_exactly(&group, 2, &queues).unwrap();
    assert_eq!(
        group.status.as_ref().unwrap().allocation.assignments,
        converged.status.as_ref().unwrap().allocation.assignments
    );
    op.assert_clean();
}

both!(
    spec_brokers_that_disagree_with_the_route_are_drift,
    rust_spec_brokers_that_disagree_with_the_route_are_drift,
    java_spec_brokers_that_disagree_with_the_route_are_drift
);
async fn spec_brokers_that_disagree_with_the_route_are_drift(mq: &RocketMq) {
    let Some(env) = Env::new("rocketmq-drift").await else {
        return;
    };
    let topic = format!("Drift_{}", random_suffix(6));
    let a = &mq.brokers[0];
    set_topic(&a.addr, &topic, 4, 4, Permission::ReadWrite).await;
    route_until(&mq.namesrv_addr(), &topic, "broker-a", |r| {
        routes(r, "broker-a", 4, 4, Permission::ReadWrite)
    })
    .await;
    let op = operator(&env).await;
    let brokers = |read: u32| json!({"brokers": [{"name": "broker-a", "readQueues": read, "writeQueues": 4}]});
    observed_topic(&env, "orders", &topic, &[mq.namesrv_addr()], brokers(8)).await;
    group_with_pods(&env, "consumer", "orders", 2).await;

    let drifted = wait_topic(&env, "orders", "Drifted=True", |t| {
        topic_condition_is(t, "Drifted", "True", "SpecDiffers")
    })
    .await;
    let message = "broker-a: spec readQueues 8, observed 4";
    assert_eq!(
        topic_condition(&drifted, "Drifted").unwrap().message,
        message
    );
    // The observed layout is the one used.
    assert_eq!(drifted.status.as_ref().unwrap().read_queues, 4);
    let queues: BTreeSet<Queue> = (0..4).map(|id| ("broker-a".to_string(), id)).collect();
    env.wait_group("consumer", "owns the observed queues", |g| {
        owns_exactly(g, 2, &queues)
    })
    .await;
    assert_eq!(
        wait_event(&env, "Topic", "orders", "Warning", "Drifted").await,
        message
    );
    let labels = format!(r#"namespace="{}",topic="orders""#, env.ns);
    eventually("rebalancer_topic_drifted 1", || async {
        match op.metric("rebalancer_topic_drifted", &labels).await {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // The spec corrected: no drift.
    observed_topic(&env, "orders", &topic, &[mq.namesrv_addr()], brokers(4)).await;
    let matched = wait_topic(&env, "orders", "Drifted=False", |t| {
        topic_condition_is(t, "Drifted", "False", "Matches")
    })
    .await;
    assert_eq!(
        topic_condition(&matched, "Drifted").unwrap().message,
        "spec.brokers matches the observed layout"
    );
    eventually("rebalancer_topic_drifted 0", || async {
        match op.metric("rebalancer_topic_drifted", &labels).await {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // The broker changes instead: drift again, named by broker and field.
    set_topic(&a.addr, &topic, 6, 6, Permission::ReadOnly).await;
    let message = "broker-a: spec readQueues 4, observed 6; broker-a: spec writeQueues 4, observed 6; \
                   broker-a: spec permission ReadWrite, observed ReadOnly";
    wait_topic(&env, "orders", "Drifted=True from the broker's side", |t| {
        topic_condition_is(t, "Drifted", "True", "SpecDiffers")?;
        let m = &topic_condition(t, "Drifted").unwrap().message;
        if m == message { Ok(()) } else { Err(m.clone()) }
    })
    .await;
    eventually("a second Drifted Event", || async {
        let n = notes(&env, "Topic", "orders", "Warning", "Drifted").await;
        if n.iter().any(|note| note == message) {
            Ok(())
        } else {
            Err(format!("{n:?}"))
        }
    })
    .await;
    op.assert_clean();
}

both!(
    syncs_keep_one_connection_and_ride_out_its_loss,
    rust_syncs_keep_one_connection_and_ride_out_its_loss,
    java_syncs_keep_one_connection_and_ride_out_its_loss
);
/// The operator reads a route over one kept connection per NameServer, sync after sync (not a
/// connection per read); when the NameServer side drops it, the next sync opens another and
/// the Topic stays Synced, with no failure counted.
async fn syncs_keep_one_connection_and_ride_out_its_loss(mq: &RocketMq) {
    let Some(env) = Env::new("rocketmq-kept").await else {
        return;
    };
    let topic = format!("Kept_{}", random_suffix(6));
    set_topic(&mq.brokers[0].addr, &topic, 4, 4, Permission::ReadWrite).await;
    route_until(&mq.namesrv_addr(), &topic, "the topic", |r| {
        routes(r, "broker-a", 4, 4, Permission::ReadWrite)
    })
    .await;
    let proxy = TcpProxy::start(&mq.namesrv_addr()).await;
    let op = operator(&env).await;
    observed_topic(
        &env,
        "kept",
        &topic,
        std::slice::from_ref(&proxy.addr),
        json!({}),
    )
    .await;
    wait_topic(&env, "kept", "Synced", |t| {
        topic_condition_is(t, "Synced", "True", "RouteRead")
    })
    .await;
    let labels = format!(r#"namespace="{}",topic="kept""#, env.ns);
    let last_sync = || async {
        op.metric("rebalancer_topic_last_sync_timestamp_seconds", &labels)
            .await
            .ok_or_else(|| "no last-sync metric yet".to_string())
    };
    let syncs_after = |from: f64, periods: u64| {
        let last_sync = &last_sync;
        async move {
            eventually_within(
                "more syncs",
                Duration::from_secs(periods * SYNC_PERIOD) + SLACK * 2,
                || async {
                    let now = last_sync().await?;
                    if now >= from + (periods * SYNC_PERIOD) as f64 {
                        Ok(now)
                    } else {
                        Err(format!(
                            "last sync {now}, want {periods} periods after {from}"
                        ))
                    }
                },
            )
            .await
        }
    };
    let first = eventually("the last-sync metric", last_sync).await;
    syncs_after(first, 3).await;
    assert_eq!(proxy.accepted(), 1, "every route read over one connection");

    proxy.cut();
    let cut_at = last_sync().await.unwrap();
    syncs_after(cut_at, 2).await;
    assert_eq!(proxy.accepted(), 2, "one new connection after the cut");
    let (_, metrics) = op.http_get("/metrics").await.unwrap();
    let failures = format!("rebalancer_topic_sync_failures_total{{{labels}");
    assert!(
        !metrics.lines().any(|l| l.starts_with(&failures)),
        "a lost idle connection is no sync failure:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("sync_failures"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let topic = env.api::<Topic>().get("kept").await.unwrap();
    topic_condition_is(&topic, "Synced", "True", "RouteRead").unwrap();
    op.assert_clean();
}
