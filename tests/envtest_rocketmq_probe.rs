//! First, do no harm: watching a `consumerIds: Client` group never disturbs its clients or
//! their brokers, and its conditions say only what was seen. Against the envtest API server,
//! the real `rebalancer` binary and real RocketMQ servers, with clients that heartbeat and never
//! answer `GET_CONSUMER_RUNNING_INFO` (`tests/support/silent_client.rs`), as several non-Java
//! clients do.
//!
//! Each case runs on rocketmq-rust (`ROCKETMQ_BIN`) and, where it says so, on Apache RocketMQ
//! 4.9.7's Java servers (`ROCKETMQ_JAVA_HOME`): the two differ exactly where it matters here
//! (rocketmq-rust's broker disconnects a client that does not answer; the Java broker holds one
//! of its 16 admin threads for 10 s per unanswered question).

mod support;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use rebalancer::api::{ConsumerGroup, Permission};
use rebalancer::rocketmq::{RemotingClient, Timeouts, TopicConfig};
use serde_json::json;
use support::consumer::{Consumer, ConsumerConfig, Flavour, Queue};
use support::fixtures::{Env, condition, condition_is};
use support::rocketmq::RocketMq;
use support::silent_client::SilentClient;
use support::{eventually, random_suffix};

/// The operator's `--sync-period`, seconds: a Client group is read (and its clients possibly
/// asked) this often.
const SYNC_PERIOD: u64 = 1;

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(15),
    }
}

async fn connect(addr: &str) -> RemotingClient {
    RemotingClient::connect(addr, timeouts())
        .await
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
}

/// A test's world: its namespace, the operator, an Observe Topic `orders` for a fresh RocketMQ
/// topic on both brokers, and a Client group `consumer` whose RocketMQ group name is fresh too.
struct World<'a> {
    env: Env,
    mq: &'a RocketMq,
    topic: String,
    group: String,
    op: support::operator::Operator,
}

impl<'a> World<'a> {
    async fn new(test: &str, mq: &'a RocketMq, queues: u32, args: &[&str]) -> Option<World<'a>> {
        let env = Env::new(test).await?;
        let topic = format!("Probe_{}", random_suffix(6));
        let group = format!("probe_group_{}", random_suffix(6));
        for broker in &mq.brokers {
            connect(&broker.addr)
                .await
                .create_or_update_topic(&TopicConfig::new(
                    &topic,
                    queues,
                    queues,
                    Permission::ReadWrite,
                ))
                .await
                .unwrap_or_else(|e| panic!("creating {topic} on {}: {e}", broker.addr));
        }
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
        let mut all = vec![format!("--sync-period={SYNC_PERIOD}")];
        all.extend(args.iter().map(|a| a.to_string()));
        let op = env.operator_with("op", all);
        env.wait_holder("op").await;
        Some(World {
            env,
            mq,
            topic,
            group,
            op,
        })
    }

    /// A Ready pod `name` with IP `ip`.
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

    /// A silent client `id` registered on the brokers at `brokers` (indexes), declaring
    /// `language`: one connection per broker, as a client heartbeats to each.
    async fn silent(&self, id: &str, language: &str, brokers: &[usize]) -> Vec<SilentClient> {
        let mut out = Vec::new();
        for &b in brokers {
            out.push(
                SilentClient::start(
                    &self.mq.brokers[b].addr,
                    id,
                    &self.group,
                    &self.topic,
                    language,
                )
                .await,
            );
        }
        out
    }

    async fn get_group(&self) -> ConsumerGroup {
        self.env.get_group("consumer").await
    }

    /// A real consumer of `flavour` in the group, client id `ip@name`.
    async fn consumer(&self, test: &str, flavour: Flavour, ip: &str, name: &str) -> Consumer {
        let config = ConsumerConfig {
            namesrv: self.mq.namesrv_addr(),
            group: self.group.clone(),
            topics: vec![self.topic.clone()],
            client_ip: ip.into(),
            instance_name: name.into(),
        };
        Consumer::start_as(test, flavour, &config, &[])
            .await
            .expect("the consumer is there")
    }

    /// ConsumerGroup reconciles so far.
    async fn reconciles(&self) -> f64 {
        self.op
            .metric("rebalancer_reconciles_total", "kind=\"ConsumerGroup\"")
            .await
            .unwrap_or(0.0)
    }

    /// Runs `sample` every 200 ms until the operator has reconciled the group `periods` more
    /// times (each a read of its clients, and a chance to ask them): a window in which the
    /// operator provably looked, not a bare sleep.
    async fn over_sync_periods<F, Fut>(&self, periods: u32, mut sample: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let start = Instant::now();
        let from = self.reconciles().await;
        let deadline = start + support::deadline();
        loop {
            sample().await;
            if self.reconciles().await >= from + f64::from(periods) {
                return start.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {periods} reconciles in {:?}\n{}",
                support::deadline(),
                self.op.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Clients of the group each broker lists, by broker address.
    async fn listed(&self) -> Vec<(String, BTreeSet<String>)> {
        let mut out = Vec::new();
        for broker in &self.mq.brokers {
            let ids = connect(&broker.addr)
                .await
                .consumer_connections(&self.group)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", broker.addr))
                .into_iter()
                .map(|c| c.client_id)
                .collect();
            out.push((broker.addr.clone(), ids));
        }
        out
    }
}

fn consumers_are(group: &ConsumerGroup, n: u32) -> Result<(), String> {
    let consumers = group.status.as_ref().map(|s| s.allocation.consumers);
    if consumers == Some(n) {
        Ok(())
    } else {
        Err(format!("{consumers:?} consumers, expected {n}"))
    }
}

fn reason_is(group: &ConsumerGroup, type_: &str, status: &str, reason: &str) -> Result<(), String> {
    condition_is(group, type_, status)?;
    let c = condition(group, type_).unwrap();
    if c.reason == reason {
        Ok(())
    } else {
        Err(format!("{type_} reason {}, expected {reason}", c.reason))
    }
}

/// Clients that declare a language not known to answer (default `--client-probe-languages`)
/// are never asked: over ten sync periods no question reaches them, the broker never drops
/// them, every broker lists all of them at every sample, and `ClientsDiverge` is `Unknown`
/// naming them, never an all-clear.
async fn silent_clients_are_never_asked(test: &str, mq: &RocketMq) {
    let Some(world) = World::new(test, mq, 3, &[]).await else {
        return;
    };
    let mut clients = Vec::new();
    let mut ids = BTreeSet::new();
    for i in 1..=3 {
        let (ip, id) = (format!("10.20.0.{i}"), format!("10.20.0.{i}@silent"));
        world.pod(&format!("consumer-{i}"), &ip).await;
        clients.extend(world.silent(&id, "OTHER", &[0, 1]).await);
        ids.insert(id);
    }
    let group = world
        .env
        .wait_group("consumer", "3 silent clients, not asked", |g| {
            condition_is(g, "Ready", "True")?;
            consumers_are(g, 3)?;
            reason_is(g, "ClientsDiverge", "Unknown", "ClientsNotAsked")
        })
        .await;
    let message = &condition(&group, "ClientsDiverge").unwrap().message;
    assert!(
        message.starts_with("0 of 3 clients answered")
            && message
                .contains("3 not asked (language \"OTHER\" is not in --client-probe-languages)")
            && ids.iter().all(|id| message.contains(id.as_str())),
        "{message}"
    );
    let labels = format!("namespace=\"{}\",group=\"consumer\"", world.env.ns);
    assert_eq!(
        world
            .op
            .metric("rebalancer_clients_unverified", &labels)
            .await,
        Some(3.0)
    );

    let gaps = RefCell::new(Vec::new());
    world
        .over_sync_periods(10, || async {
            for (broker, listed) in world.listed().await {
                if listed != ids {
                    gaps.borrow_mut()
                        .push(format!("{broker} listed {listed:?}"));
                }
            }
        })
        .await;
    let gaps = gaps.into_inner();
    assert!(gaps.is_empty(), "brokers dropped clients: {gaps:?}");
    for c in &clients {
        assert_eq!(c.questions(), 0, "{} was asked", c.id);
        assert!(!c.disconnected(), "{} was disconnected", c.id);
    }
    consumers_are(&world.get_group().await, 3).unwrap();
    world.op.assert_clean();
}

/// Twenty clients that never answer, declaring `language`, beside an operator started with
/// `args`: each is asked at most a few times over ten sync periods (a back-off, at most two
/// questions in flight per broker), or never when its language is not asked; the broker's own
/// admin calls stay under `admin_bound` throughout; the group says who did not answer. Returns
/// the questions each received.
async fn silent_clients_cost_the_broker_little(
    test: &str,
    mq: &RocketMq,
    args: &[&str],
    language: &str,
    admin_bound: Duration,
) -> Vec<usize> {
    let Some(world) = World::new(test, mq, 4, args).await else {
        return Vec::new();
    };
    let mut clients = Vec::new();
    for i in 1..=20 {
        let id = format!("10.21.0.{i}@silent");
        clients.extend(world.silent(&id, language, &[0, 1]).await);
    }
    world
        .env
        .wait_group("consumer", "silent clients named", |g| {
            consumers_are(g, 20)?;
            condition_is(g, "ClientsDiverge", "Unknown")?;
            let c = condition(g, "ClientsDiverge").unwrap();
            if c.reason == "ClientsNotAnswering" || c.reason == "ClientsNotAsked" {
                Ok(())
            } else {
                Err(format!("reason {}", c.reason))
            }
        })
        .await;
    // What mqadmin and dashboards do meanwhile: offsets and a topic update, on every broker.
    let other_topic = format!("Probe_other_{}", random_suffix(6));
    let admins: Vec<RemotingClient> = {
        let mut v = Vec::new();
        for b in &world.mq.brokers {
            v.push(connect(&b.addr).await);
        }
        v
    };
    let slowest = Cell::new(Duration::ZERO);
    let window = world
        .over_sync_periods(10, || async {
            for admin in &admins {
                let t = Instant::now();
                admin
                    .consume_stats(&world.group, Some(&world.topic))
                    .await
                    .map(|_| ())
                    .or_else(|e| {
                        // A group without offsets yet answers an error code, quickly: the
                        // broker served it, which is what is measured.
                        if matches!(e, rebalancer::rocketmq::Error::Remote { .. }) {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .unwrap_or_else(|e| panic!("consume stats: {e}"));
                admin
                    .create_or_update_topic(&TopicConfig::new(
                        &other_topic,
                        1,
                        1,
                        Permission::ReadWrite,
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("topic update: {e}"));
                slowest.set(slowest.get().max(t.elapsed()));
            }
        })
        .await;
    let slowest = slowest.get();
    let questions: Vec<usize> = clients.iter().map(SilentClient::questions).collect();
    let total: usize = questions.iter().sum();
    let dropped = clients.iter().filter(|c| c.disconnected()).count();
    println!(
        "{test}: {total} questions to 20 silent {language} clients over {window:?} (10 reconciles), \
         {dropped} of {} connections closed by the broker, slowest admin pair {slowest:?}",
        clients.len()
    );
    // Without the back-off every client would be asked at every sync period (10+ each).
    assert!(
        questions.iter().all(|q| *q <= 3),
        "a silent client was asked more than 3 times in 10 sync periods: {questions:?}"
    );
    assert!(
        slowest < admin_bound,
        "the broker's admin calls took up to {slowest:?}, more than {admin_bound:?}"
    );
    world.op.assert_clean();
    questions
}

/// Clients listed by one broker only (the other dropped them, or has not seen them yet) are
/// still the group's consumers: the assignment stays, and Ready says how the brokers disagree.
async fn clients_listed_by_one_broker_keep_the_assignment(test: &str, mq: &RocketMq) {
    let Some(world) = World::new(test, mq, 2, &[]).await else {
        return;
    };
    let mut clients = Vec::new();
    for i in 1..=3 {
        world
            .pod(&format!("consumer-{i}"), &format!("10.22.0.{i}"))
            .await;
        clients.extend(
            world
                .silent(&format!("10.22.0.{i}@a-only"), "OTHER", &[0])
                .await,
        );
    }
    let group = world
        .env
        .wait_group("consumer", "3 consumers from broker-a alone", |g| {
            condition_is(g, "Ready", "True")?;
            consumers_are(g, 3)
        })
        .await;
    let ready = &condition(&group, "Ready").unwrap().message;
    assert!(
        ready.contains("3 clients listed by some brokers only (counted)"),
        "{ready}"
    );
    let lost = RefCell::new(Vec::new());
    world
        .over_sync_periods(5, || async {
            let g = world.get_group().await;
            if let Err(e) = consumers_are(&g, 3).and_then(|()| condition_is(&g, "Ready", "True")) {
                lost.borrow_mut().push(e);
            }
        })
        .await;
    let lost = lost.into_inner();
    assert!(lost.is_empty(), "{lost:?}");
    world.op.assert_clean();
}

/// A group nobody is connected to says so: Ready=False NoClientsConnected and a Warning, not
/// "Rebalanced".
async fn no_client_connected_says_so(test: &str, mq: &RocketMq) {
    let Some(world) = World::new(test, mq, 2, &[]).await else {
        return;
    };
    let group = world
        .env
        .wait_group("consumer", "NoClientsConnected", |g| {
            reason_is(g, "Ready", "False", "NoClientsConnected")
        })
        .await;
    let message = &condition(&group, "Ready").unwrap().message;
    let brokers = world.mq.brokers.len();
    assert!(
        message.contains(&format!("none of the {brokers} brokers that answered")),
        "{message}"
    );
    eventually("a NoClientsConnected Warning", || async {
        let events = world.env.events_of("ConsumerGroup", "consumer").await;
        if events.iter().any(|(r, _, _)| r == "Normal") {
            return Err(format!("a Normal Event for an empty group: {events:?}"));
        }
        events
            .iter()
            .find(|(t, r, _)| t == "Warning" && r == "NoClientsConnected")
            .map(|_| ())
            .ok_or_else(|| format!("{events:?}"))
    })
    .await;
    world.op.assert_clean();
}

/// A real consumer of `flavour` (it answers) beside a silent one: reported truthfully, the one
/// that answered counted, the other named and never asked. Client ids under `net` (`A.B.C`).
async fn mixed_groups_are_reported_truthfully(
    test: &str,
    mq: &RocketMq,
    flavour: Flavour,
    net: &str,
) {
    if !flavour.available(test) {
        return;
    }
    let Some(world) = World::new(test, mq, 2, &[]).await else {
        return;
    };
    let (real_ip, silent_ip) = (format!("{net}.1"), format!("{net}.2"));
    let silent_id = format!("{silent_ip}@silent");
    world.pod("consumer-1", &real_ip).await;
    world.pod("consumer-2", &silent_ip).await;
    let _real = world.consumer(test, flavour, &real_ip, "real").await;
    let silent = world.silent(&silent_id, "OTHER", &[0, 1]).await;
    let group = world
        .env
        .wait_group("consumer", "one answered, one not asked", |g| {
            consumers_are(g, 2)?;
            reason_is(g, "ClientsDiverge", "Unknown", "ClientsNotAsked")?;
            let m = &condition(g, "ClientsDiverge").unwrap().message;
            if m.starts_with("1 of 2 clients answered") {
                Ok(())
            } else {
                Err(m.clone())
            }
        })
        .await;
    let message = &condition(&group, "ClientsDiverge").unwrap().message;
    assert!(message.contains(&silent_id), "{message}");
    assert!(silent.iter().all(|c| c.questions() == 0));
    world.op.assert_clean();
}

/// Client id -> the queues the status gives it.
fn status_queues(group: &ConsumerGroup) -> Result<BTreeMap<String, BTreeSet<Queue>>, String> {
    let status = group.status.as_ref().ok_or("no status")?;
    let mut out = BTreeMap::new();
    for a in &status.allocation.assignments {
        out.insert(a.consumer.clone(), support::queues::expand(&a.queues)?);
    }
    Ok(out)
}

/// Two real consumers of `flavour` and three silent clients (declaring `silent_languages`, one
/// each) in one group, the operator started with `args`: once the clients hold what the status
/// computes for them, over ten sync periods (each a read of the group, and a chance to ask its
/// clients) the real consumers never re-allocate, every broker lists all five clients at every
/// sample, no silent client's connection is closed, and the status names the silent ones.
/// Returns the questions each silent connection received. Client ids under `net` (`A.B.C`).
async fn answering_clients_keep_their_queues_beside_silent_ones(
    test: &str,
    mq: &RocketMq,
    flavour: Flavour,
    net: &str,
    args: &[&str],
    silent_languages: [&str; 3],
) -> Vec<usize> {
    if !flavour.available(test) {
        return Vec::new();
    }
    let Some(world) = World::new(test, mq, 4, args).await else {
        return Vec::new();
    };
    let mut silent = Vec::new();
    let mut silent_ids = BTreeSet::new();
    for (i, language) in (1..=3).zip(silent_languages) {
        let (ip, id) = (format!("{net}.{i}"), format!("{net}.{i}@silent"));
        world.pod(&format!("consumer-{i}"), &ip).await;
        silent.extend(world.silent(&id, language, &[0, 1]).await);
        silent_ids.insert(id);
    }
    let mut real = Vec::new();
    for i in 4..=5 {
        let ip = format!("{net}.{i}");
        world.pod(&format!("consumer-{i}"), &ip).await;
        real.push(world.consumer(test, flavour, &ip, "real").await);
    }
    let all_ids: BTreeSet<String> = silent_ids
        .iter()
        .cloned()
        .chain(real.iter().map(|c| c.client_id().to_string()))
        .collect();
    let topic = &world.topic;
    // Settled: the status counts all five, and each real consumer holds exactly what the
    // status computes for it (so it allocated over all five too).
    let agrees = |g: &ConsumerGroup| -> Result<(), String> {
        consumers_are(g, 5)?;
        let computed = status_queues(g)?;
        for c in &real {
            let held = c.queues_of(topic);
            if computed.get(c.client_id()) != Some(&held) || held.is_empty() {
                return Err(format!(
                    "{} holds {held:?}, the status computes {:?}",
                    c.client_id(),
                    computed.get(c.client_id())
                ));
            }
        }
        Ok(())
    };
    let group = world
        .env
        .wait_group(
            "consumer",
            "real consumers hold what the status says",
            |g| {
                agrees(g)?;
                // The operator saw it too: both answered with what it computes.
                condition_is(g, "ClientsDiverge", "Unknown")?;
                let m = &condition(g, "ClientsDiverge").unwrap().message;
                if m.starts_with("2 of 5 clients answered and hold the queues computed for them") {
                    Ok(())
                } else {
                    Err(m.clone())
                }
            },
        )
        .await;
    let message = &condition(&group, "ClientsDiverge").unwrap().message;
    assert!(
        silent_ids.iter().all(|id| message.contains(id.as_str())),
        "{message}"
    );
    let settled: Vec<usize> = real.iter().map(|c| c.reallocations(topic)).collect();

    let gaps = RefCell::new(Vec::new());
    let disagreements = RefCell::new(Vec::new());
    let window = world
        .over_sync_periods(10, || async {
            for (broker, listed) in world.listed().await {
                if listed != all_ids {
                    gaps.borrow_mut()
                        .push(format!("{broker} listed {listed:?}"));
                }
            }
            if let Err(e) = agrees(&world.get_group().await) {
                disagreements.borrow_mut().push(e);
            }
        })
        .await;
    let after: Vec<usize> = real.iter().map(|c| c.reallocations(topic)).collect();
    let questions: Vec<usize> = silent.iter().map(SilentClient::questions).collect();
    println!(
        "{test}: re-allocations of the real consumers {settled:?} when settled, {after:?} after \
         {window:?} (10 reconciles); questions to the silent connections {questions:?}"
    );
    let gaps = gaps.into_inner();
    assert!(
        gaps.is_empty(),
        "the group's consumer list changed: {gaps:?}"
    );
    assert_eq!(
        settled,
        after,
        "real consumers re-allocated beside silent clients\n{}",
        real.iter()
            .map(|c| c.log_tail())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let disagreements = disagreements.into_inner();
    assert!(disagreements.is_empty(), "{disagreements:?}");
    for c in &silent {
        assert!(!c.disconnected(), "{} was disconnected", c.id);
    }
    let message = &condition(&world.get_group().await, "ClientsDiverge")
        .unwrap()
        .message
        .clone();
    assert!(
        silent_ids.iter().all(|id| message.contains(id.as_str())),
        "{message}"
    );
    world.op.assert_clean();
    questions
}

async fn rust(test: &str) -> Option<&'static RocketMq> {
    support::rocketmq::shared(test).await
}

#[tokio::test]
async fn rust_silent_clients_are_never_asked() {
    let test = "probe-rust-not-asked";
    if let Some(mq) = rust(test).await {
        silent_clients_are_never_asked(test, mq).await;
    }
}

/// rocketmq-rust, defaults: twenty silent clients of a language not known to answer are never
/// asked, and the broker's admin calls stay fast.
#[tokio::test]
async fn rust_twenty_silent_clients_cost_the_broker_nothing() {
    let test = "probe-rust-twenty";
    if let Some(mq) = rust(test).await {
        let questions = silent_clients_cost_the_broker_little(
            test,
            mq,
            &[],
            "OTHER",
            Duration::from_millis(1000),
        )
        .await;
        assert!(questions.iter().all(|q| *q == 0), "{questions:?}");
    }
}

/// rocketmq-rust, every language asked (`--client-probe-languages=*`): measured here, its broker
/// serves no admin call while it waits (3 s) for a client that does not answer, and then closes
/// that client's connection. Asking a silent client is harmful there whatever the rate, which
/// is why only languages known to answer are asked by default; the back-off still bounds it.
/// On servers of its own: the stalls would disturb the other tests' groups.
#[tokio::test]
async fn rust_silent_clients_asked_anyway_are_asked_rarely() {
    let test = "probe-rust-asked-anyway";
    if let Some(mq) = RocketMq::start_with(test, 2, 1).await {
        let questions = silent_clients_cost_the_broker_little(
            test,
            &mq,
            &["--client-probe-languages=*"],
            "JAVA",
            Duration::from_secs(10),
        )
        .await;
        assert!(
            questions.iter().any(|q| *q > 0),
            "nobody was asked: {questions:?}"
        );
    }
}

#[tokio::test]
async fn rust_clients_listed_by_one_broker_keep_the_assignment() {
    let test = "probe-rust-one-broker";
    if let Some(mq) = rust(test).await {
        clients_listed_by_one_broker_keep_the_assignment(test, mq).await;
    }
}

#[tokio::test]
async fn rust_no_client_connected_says_so() {
    let test = "probe-rust-nobody";
    if let Some(mq) = rust(test).await {
        no_client_connected_says_so(test, mq).await;
    }
}

#[tokio::test]
async fn rust_mixed_groups_are_reported_truthfully() {
    let test = "probe-rust-mixed";
    if let Some(mq) = rust(test).await {
        mixed_groups_are_reported_truthfully(test, mq, Flavour::Rust, "10.23.0").await;
    }
}

/// rocketmq-rust, defaults: three silent clients of languages not known to answer are never
/// asked (asking one would make this broker close its connection, and the group re-allocate),
/// so two rocketmq-client-rust consumers keep their queues.
#[tokio::test]
async fn rust_answering_clients_keep_their_queues_beside_silent_ones() {
    let test = "probe-rust-keep-queues";
    if let Some(mq) = rust(test).await {
        let questions = answering_clients_keep_their_queues_beside_silent_ones(
            test,
            mq,
            Flavour::Rust,
            "10.25.0",
            &[],
            ["OTHER", "GO", "CPP"],
        )
        .await;
        assert!(questions.iter().all(|q| *q == 0), "{questions:?}");
    }
}

async fn java(test: &str) -> Option<&'static RocketMq> {
    support::rocketmq::shared_java(test).await
}

#[tokio::test]
async fn java_silent_clients_are_never_asked() {
    let test = "probe-java-not-asked";
    if let Some(mq) = java(test).await {
        silent_clients_are_never_asked(test, mq).await;
    }
}

/// Apache RocketMQ 4.9.7, every language asked (`--client-probe-languages=*`), twenty Java
/// clients that never answer: its broker keeps them connected and holds an admin thread for
/// 10 s per question; the operator never has more than two questions in flight per broker, so
/// the broker's other admin calls stay fast (they took up to 9.5 s without these bounds).
#[tokio::test]
async fn java_twenty_silent_clients_asked_anyway_cost_the_broker_little() {
    let test = "probe-java-asked-anyway";
    if let Some(mq) = java(test).await {
        let questions = silent_clients_cost_the_broker_little(
            test,
            mq,
            &["--client-probe-languages=*"],
            "JAVA",
            Duration::from_millis(1000),
        )
        .await;
        assert!(
            questions.iter().any(|q| *q > 0),
            "nobody was asked: {questions:?}"
        );
    }
}

#[tokio::test]
async fn java_clients_listed_by_one_broker_keep_the_assignment() {
    let test = "probe-java-one-broker";
    if let Some(mq) = java(test).await {
        clients_listed_by_one_broker_keep_the_assignment(test, mq).await;
    }
}

#[tokio::test]
async fn java_mixed_groups_are_reported_truthfully() {
    let test = "probe-java-mixed";
    if let Some(mq) = java(test).await {
        mixed_groups_are_reported_truthfully(test, mq, Flavour::Java, "10.24.0").await;
    }
}

/// Apache RocketMQ 4.9.7, the worst case: two of the three silent clients declare JAVA, so the
/// operator asks them (and they never answer; this broker keeps them connected); two Java
/// consumers keep their queues all the same.
#[tokio::test]
async fn java_answering_clients_keep_their_queues_beside_silent_ones() {
    let test = "probe-java-keep-queues";
    if let Some(mq) = java(test).await {
        let questions = answering_clients_keep_their_queues_beside_silent_ones(
            test,
            mq,
            Flavour::Java,
            "10.26.0",
            &[],
            ["JAVA", "JAVA", "GO"],
        )
        .await;
        assert!(
            questions.iter().any(|q| *q > 0),
            "nobody was asked: {questions:?}"
        );
    }
}

#[tokio::test]
async fn java_no_client_connected_says_so() {
    let test = "probe-java-nobody";
    if let Some(mq) = java(test).await {
        no_client_connected_says_so(test, mq).await;
    }
}
