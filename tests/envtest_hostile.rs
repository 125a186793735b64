//! Hostile and odd input against the real operator and the envtest API server: a NameServer
//! that answers absurd routes (`tests/support/fake_namesrv.rs`), and a Topic status written by
//! hand beyond the limits. The operator must refuse each with a clear reason, keep the last good
//! state, and never exit.

mod support;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use rebalancer::api::Topic;
use serde_json::json;
use support::eventually;
use support::fake_namesrv::{Behaviour, FakeNameServer, route};
use support::fixtures::{Env, condition, condition_is};

fn topic_condition<'a>(topic: &'a Topic, type_: &str) -> Option<&'a Condition> {
    topic
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

async fn wait_topic<F>(env: &Env, what: &str, check: F) -> Topic
where
    F: Fn(&Topic) -> Result<(), String>,
{
    wait_topic_named(env, "orders", what, check).await
}

async fn wait_topic_named<F>(env: &Env, name: &str, what: &str, check: F) -> Topic
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

fn synced_is(topic: &Topic, status: &str, reason: &str) -> Result<(), String> {
    match topic_condition(topic, "Synced") {
        Some(c) if c.status == status && c.reason == reason => Ok(()),
        other => Err(format!("Synced: {other:?}")),
    }
}

/// A NameServer answering `readQueueNums: 4294967295` (once an abort on a 16 GiB allocation, and
/// a crash loop since the value was kept as the last good layout) is refused as `InvalidRoute`
/// naming the field; a healthy route afterwards is used; a status written by hand with the same
/// number, read by a freshly started operator, makes the group `Ready=False` (`TooLarge`) with
/// its last good assignment kept, and the operator keeps running.
#[tokio::test]
async fn an_absurd_route_or_status_is_refused_and_the_operator_survives() {
    let test = "hostile-absurd-route";
    let Some(env) = Env::new(test).await else {
        return;
    };
    let fake =
        FakeNameServer::start(route(&[("broker-a", 4_294_967_295, 4, 6)], "127.0.0.1:1")).await;
    env.apply::<Topic>(json!({
        "apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": "orders"},
        "spec": {"nameServers": [fake.addr]}
    }))
    .await;
    for i in 0..2 {
        env.pod(&format!("consumer-{i}"), json!({"app": "consumer"}), true)
            .await;
    }
    env.group(
        "consumer",
        json!({"topics": ["orders"], "consumers": {"selector": {"matchLabels": {"app": "consumer"}}}}),
    )
    .await;
    let args = || vec!["--sync-period=1".to_string()];
    let mut op = env.operator_with("op", args());
    env.wait_holder("op").await;

    let t = wait_topic(&env, "InvalidRoute", |t| {
        synced_is(t, "False", "InvalidRoute")
    })
    .await;
    let message = &topic_condition(&t, "Synced").unwrap().message;
    assert!(
        message.contains("queueDatas[broker-a].readQueueNums is 4294967295, more than the 4096"),
        "{message}"
    );
    assert!(t.status.as_ref().unwrap().observed.is_none(), "{t:?}");
    env.wait_group("consumer", "waits for a layout", |g| {
        condition_is(g, "Ready", "False")
    })
    .await;

    // A healthy route: used.
    fake.serve(route(&[("broker-a", 4, 4, 6)], "127.0.0.1:1"));
    wait_topic(&env, "RouteRead", |t| synced_is(t, "True", "RouteRead")).await;
    env.wait_group("consumer", "2 consumers on 4 queues", |g| {
        condition_is(g, "Ready", "True")?;
        let a = &g.status.as_ref().unwrap().allocation;
        if (a.consumers, a.queues) == (2, 4) {
            Ok(())
        } else {
            Err(format!("{} consumers, {} queues", a.consumers, a.queues))
        }
    })
    .await;
    let good = env.get_group("consumer").await.status.unwrap().allocation;

    // Garbage from the NameServer: refused as InvalidRoute too, the layout kept.
    fake.serve(b"{\"queueDatas\":[{\"brokerName\":\"broker-a\",\"readQueueNums\":-1}]}".to_vec());
    wait_topic(&env, "garbage is InvalidRoute", |t| {
        synced_is(t, "False", "InvalidRoute")
    })
    .await;

    // The operator stops; someone writes an absurd observed layout; a new operator starts.
    drop(op);
    env.api::<Topic>()
        .patch_status(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observed": {"brokers": [
                {"name": "broker-a", "readQueues": 4_294_967_295u64, "writeQueues": 4,
                 "permission": "ReadWrite"}]}}})),
        )
        .await
        .unwrap();
    op = env.operator_with("op", args());
    env.wait_holder("op").await;
    let g = env
        .wait_group("consumer", "TooLarge", |g| {
            condition_is(g, "Ready", "False")?;
            let c = condition(g, "Ready").unwrap();
            if c.reason == "TooLarge" {
                Ok(())
            } else {
                Err(format!("reason {}", c.reason))
            }
        })
        .await;
    let ready = condition(&g, "Ready").unwrap();
    assert!(
        ready
            .message
            .contains("readQueues is 4294967295, more than the 4096"),
        "{}",
        ready.message
    );
    assert_eq!(
        g.status.unwrap().allocation,
        good,
        "the last good assignment stays"
    );
    // Still running after reconciling it, several sync periods later.
    let from = op
        .metric("rebalancer_reconciles_total", "kind=\"Topic\"")
        .await
        .unwrap_or(0.0);
    eventually("three more Topic syncs", || async {
        let now = op
            .metric("rebalancer_reconciles_total", "kind=\"Topic\"")
            .await
            .unwrap_or(0.0);
        if now >= from + 3.0 {
            Ok(())
        } else {
            Err(format!("{now}"))
        }
    })
    .await;
    assert!(op.exited().is_none(), "the operator exited:\n{}", op.logs());
    op.assert_clean();
}

/// A name the API server would accept but the operator cannot carry end to end (a group's name is
/// its pods' label value, at most 63 characters) is refused at admission with a clear message;
/// 63 characters work.
#[tokio::test]
async fn a_group_name_longer_than_a_label_value_is_refused_at_admission() {
    let test = "hostile-long-name";
    let Some(env) = Env::new(test).await else {
        return;
    };
    let spec = json!({"topics": ["orders"],
                      "consumers": {"selector": {"matchLabels": {"app": "consumer"}}}});
    let api = env.api::<rebalancer::api::ConsumerGroup>();
    let object = |name: &str| -> rebalancer::api::ConsumerGroup {
        serde_json::from_value(json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap()
    };
    let long = "g".repeat(64);
    let err = api
        .create(&Default::default(), &object(&long))
        .await
        .expect_err("a 64-character group name was accepted");
    let text = err.to_string();
    assert!(
        text.contains("at most 63 characters") && text.contains("rebalancer.dev/group"),
        "{text}"
    );
    api.create(&Default::default(), &object(&"g".repeat(63)))
        .await
        .expect("63 characters are a valid label value");
}

/// Two groups selecting the same pods: the first to label a pod keeps it, the other names the
/// pods in PodsContested; after that, reconciling both again writes no pod (it once flipped the
/// pods between the groups forever: 81 pod writes in 20 s).
#[tokio::test]
async fn two_groups_selecting_the_same_pods_do_not_fight() {
    let test = "hostile-contested";
    let Some(env) = Env::new(test).await else {
        return;
    };
    env.topic("orders", &[("broker-a", 4)]).await;
    env.pods("shared", 2).await;
    let selector = json!({"topics": ["orders"],
                          "consumers": {"selector": {"matchLabels": {"app": "shared"}}}});
    env.group("first", selector.clone()).await;
    let op = env.leader("op").await;
    env.wait_group("first", "owns both pods", |g| {
        condition_is(g, "Ready", "True")?;
        let consumers = g.status.as_ref().unwrap().allocation.consumers;
        (consumers == 2)
            .then_some(())
            .ok_or(format!("{consumers} consumers"))
    })
    .await;
    env.group("second", selector).await;
    let second = env
        .wait_group("second", "PodsContested", |g| {
            condition_is(g, "PodsContested", "True")
        })
        .await;
    let message = &condition(&second, "PodsContested").unwrap().message;
    assert!(
        message.contains("2 selected pods belong to another ConsumerGroup"),
        "{message}"
    );
    assert!(message.contains("(first)"), "{message}");
    condition_is(&second, "Ready", "False").unwrap();

    // Both reconciled again (their annotations touched): no pod is written any more.
    let writes = || async {
        op.metric("rebalancer_writes_total", "resource=\"pods\"")
            .await
            .unwrap_or(0.0)
    };
    let reconciles = || async {
        op.metric("rebalancer_reconciles_total", "kind=\"ConsumerGroup\"")
            .await
            .unwrap_or(0.0)
    };
    let before = writes().await;
    let from = reconciles().await;
    for (i, name) in ["first", "second"].into_iter().enumerate() {
        env.api::<rebalancer::api::ConsumerGroup>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"touch": i.to_string()}}})),
            )
            .await
            .unwrap();
    }
    eventually("both groups reconciled again", || async {
        let now = reconciles().await;
        (now >= from + 2.0).then_some(()).ok_or(format!("{now}"))
    })
    .await;
    assert_eq!(writes().await, before, "pods were written again");
    let first = env.get_group("first").await;
    assert_eq!(first.status.unwrap().allocation.consumers, 2);
    op.assert_clean();
}

/// A pod the API server refuses to annotate (its annotations already fill the 256 KiB limit, so
/// the queues annotation makes the patch a real 422): the other pod still gets its queues, and
/// the group says which write was refused (`Ready=False`, `WriteRejected`, a Warning Event)
/// instead of `Ready=True`. Once the pod has room, the next reconcile lands and `Ready` is True.
#[tokio::test]
async fn a_refused_pod_write_shows_on_the_group() {
    let test = "hostile-refused-pod";
    let Some(env) = Env::new(test).await else {
        return;
    };
    env.topic("orders", &[("broker-a", 4)]).await;
    env.pods("full", 2).await;
    // 262,144 bytes is the limit of all annotations together (keys included).
    let filler = "x".repeat(262_144 - 64);
    let pods = env.api::<k8s_openapi::api::core::v1::Pod>();
    pods.patch(
        "full-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"filler": filler}}})),
    )
    .await
    .unwrap();
    env.group(
        "full",
        json!({"topics": ["orders"], "consumers": {"selector": {"matchLabels": {"app": "full"}}}}),
    )
    .await;
    let op = env.leader("op").await;
    let group = env
        .wait_group("full", "WriteRejected", |g| match condition(g, "Ready") {
            Some(c) if c.status == "False" && c.reason == "WriteRejected" => Ok(()),
            other => Err(format!("Ready: {other:?}")),
        })
        .await;
    let message = &condition(&group, "Ready").unwrap().message;
    assert!(
        message.starts_with("the API server refused 1 write: pod ")
            && message.contains("/full-0 (422: "),
        "{message}"
    );
    let other = pods.get("full-1").await.unwrap();
    let annotations = other.metadata.annotations.unwrap_or_default();
    assert!(
        annotations.contains_key("rebalancer.dev/queues"),
        "{annotations:?}"
    );
    eventually("a WriteRejected Warning Event", || async {
        let events = env.events_of("ConsumerGroup", "full").await;
        events
            .iter()
            .any(|(type_, reason, note)| {
                type_ == "Warning" && reason == "WriteRejected" && note.contains("/full-0 (422: ")
            })
            .then_some(())
            .ok_or(format!("{events:?}"))
    })
    .await;

    // Room again: the annotation lands and the group is Ready.
    pods.patch(
        "full-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"filler": null}}})),
    )
    .await
    .unwrap();
    env.wait_group("full", "Ready after the room was made", |g| {
        condition_is(g, "Ready", "True")
    })
    .await;
    let annotated = pods.get("full-0").await.unwrap();
    assert!(
        annotated
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("rebalancer.dev/queues")
    );
    op.assert_clean();
}

/// A process's (peak RSS, RSS) in bytes and its CPU time, from /proc.
fn process_usage(pid: u32) -> (u64, u64, std::time::Duration) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) end with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (
        kib("VmHWM:") * 1024,
        kib("VmRSS:") * 1024,
        std::time::Duration::from_millis(ticks * 10),
    )
}

/// The isolation and memory bounds of #15 on one operator: beside a healthy Topic, 3 Topics whose
/// 16 NameServers each answer 16 MiB of junk (48 endpoints), 40 Topics whose 16 NameServers never
/// answer, a Topic whose NameServers flood frames nobody asked for, and one whose route lists
/// 60,000 brokers (once 8 s of CPU and a 413 on the status write). The healthy Topic's route
/// changes show within a bound (they took 46-48 s when dead NameServers were tried one after the
/// other), the operator's peak memory stays well under the chart's 256 MiB limit (it was 270 MB
/// with 48 junk endpoints), and it keeps running.
#[tokio::test]
async fn hostile_name_servers_neither_stall_a_healthy_topic_nor_exhaust_memory() {
    let test = "hostile-isolation";
    let Some(env) = Env::new(test).await else {
        return;
    };
    let topic = |name: String, addrs: Vec<String>| {
        json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": name},
            "spec": {"nameServers": addrs}
        })
    };
    let mut fakes = Vec::new();
    let mut hostile = Vec::new();
    for t in 0..3 {
        let mut addrs = Vec::new();
        for _ in 0..16 {
            let fake = FakeNameServer::start_as(Behaviour::Huge, Vec::new()).await;
            addrs.push(fake.addr.clone());
            fakes.push(fake);
        }
        env.apply::<Topic>(topic(format!("huge-{t}"), addrs)).await;
        hostile.push(format!("huge-{t}"));
    }
    let mut silent = Vec::new();
    for _ in 0..16 {
        let fake = FakeNameServer::start_as(Behaviour::Silent, Vec::new()).await;
        silent.push(fake.addr.clone());
        fakes.push(fake);
    }
    for t in 0..40 {
        env.apply::<Topic>(topic(format!("dead-{t}"), silent.clone()))
            .await;
        hostile.push(format!("dead-{t}"));
    }
    let mut flood = Vec::new();
    for _ in 0..2 {
        let fake = FakeNameServer::start_as(Behaviour::Flood, Vec::new()).await;
        flood.push(fake.addr.clone());
        fakes.push(fake);
    }
    env.apply::<Topic>(topic("flood".into(), flood)).await;
    hostile.push("flood".into());
    // A legal but absurd route: 60,000 brokers (about 10 MB, under the 16 MiB frame limit).
    let names: Vec<String> = (0..60_000).map(|i| format!("broker-{i}")).collect();
    let brokers: Vec<(&str, u64, u64, u64)> = names.iter().map(|n| (n.as_str(), 4, 4, 6)).collect();
    let wide = FakeNameServer::start(route(&brokers, "127.0.0.1:1")).await;
    env.apply::<Topic>(topic("wide".into(), vec![wide.addr.clone()]))
        .await;
    hostile.push("wide".into());
    let healthy = FakeNameServer::start(route(&[("broker-a", 4, 4, 6)], "127.0.0.1:1")).await;
    env.apply::<Topic>(topic("orders".into(), vec![healthy.addr.clone()]))
        .await;

    let sync_period = 2;
    let mut op = env.operator_with("op", vec![format!("--sync-period={sync_period}")]);
    env.wait_holder("op").await;
    let read_queues = |n: u32| {
        move |t: &Topic| match t.status.as_ref().map(|s| s.read_queues) {
            Some(r) if r == n => Ok(()),
            other => Err(format!("readQueues {other:?}")),
        }
    };
    wait_topic(&env, "4 queues", read_queues(4)).await;
    for name in &hostile {
        wait_topic_named(&env, name, "not synced", |t| {
            match topic_condition(t, "Synced") {
                Some(c) if c.status == "False" => Ok(()),
                other => Err(format!("Synced: {other:?}")),
            }
        })
        .await;
    }
    let wide = wait_topic_named(&env, "wide", "InvalidRoute", |t| {
        synced_is(t, "False", "InvalidRoute")
    })
    .await;
    let message = &topic_condition(&wide, "Synced").unwrap().message;
    assert!(message.contains("256"), "{message}");
    let (_, _, cpu_before) = process_usage(op.pid());
    let window = std::time::Instant::now();
    let mut worst = std::time::Duration::ZERO;
    for queues in [5, 6, 7, 8] {
        let changed = std::time::Instant::now();
        healthy.serve(route(&[("broker-a", queues, queues, 6)], "127.0.0.1:1"));
        wait_topic(
            &env,
            &format!("{queues} queues"),
            read_queues(queues as u32),
        )
        .await;
        worst = worst.max(changed.elapsed());
    }
    let (peak, rss, cpu_after) = process_usage(op.pid());
    let cpu = (cpu_after - cpu_before).as_secs_f64() / window.elapsed().as_secs_f64();
    println!(
        "{test}: healthy route change shown within {worst:?} at worst (sync period {sync_period} s); \
         operator peak RSS {} MiB, RSS {} MiB, CPU {:.0}% of a core over {:?}",
        peak >> 20,
        rss >> 20,
        cpu * 100.0,
        window.elapsed()
    );
    let bound = std::time::Duration::from_secs(2 * sync_period + 4);
    assert!(
        worst < bound,
        "a healthy route change took {worst:?} (bound {bound:?})"
    );
    assert!(peak < 200 << 20, "peak RSS {} MiB", peak >> 20);
    assert!(cpu < 0.9, "CPU {:.0}% of a core", cpu * 100.0);
    assert!(op.exited().is_none(), "the operator exited:\n{}", op.logs());
    op.assert_clean();
}
