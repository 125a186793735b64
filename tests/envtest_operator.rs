//! The operator's scenarios against a real kube-apiserver (envtest): the real `rebalancer`
//! binary, leader election on, under the chart's own RBAC. See `tests/support/`.
//!
//! The same stories as `tests/controller_mock.rs` (which pins the exact requests of one reconcile
//! against a mock), here end to end: what the API server holds afterwards (status, conditions,
//! Events, pod labels and annotations, resourceVersions). Each test has its own namespace and its
//! own operator.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use rebalancer::api::{ConsumerGroup, QueueRange, Topic};
use rebalancer::controller::consumers::ANNOTATION_BUDGET;
use rebalancer::controller::context::STATUS_BUDGET_BYTES;
use serde_json::{Value, json};
use support::eventually;
use support::fixtures::{Env, condition, condition_is, group_of, queues_of};
use support::operator::{Launch, Operator};
use support::proxy::{CountingProxy, Forwarded};

/// Topic `orders`, 2 brokers × 4 queues.
const ORDERS: [(&str, u32); 2] = [("broker-a", 4), ("broker-b", 4)];

/// How long the no-op test watches a converged group for writes (the observation window is the
/// assertion itself, not a synchronisation).
const QUIET_WINDOW: Duration = Duration::from_secs(5);

fn deployment_group(workload: &str) -> Value {
    group_spec(&["orders"], "Averagely", workload_ref(workload))
}

fn group_spec(topics: &[&str], strategy: &str, consumers: Value) -> Value {
    json!({"topics": topics, "strategy": strategy, "consumers": consumers})
}

fn workload_ref(deployment: &str) -> Value {
    json!({"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment}})
}

fn selector(app: &str) -> Value {
    json!({"selector": {"matchLabels": {"app": app}}})
}

fn qr(topic: &str, broker: &str, ids: &str) -> QueueRange {
    QueueRange {
        topic: topic.into(),
        broker: broker.into(),
        queue_ids: ids.into(),
    }
}

/// One queue: (topic, broker, id).
type Queue = support::queues::QueueId;

fn expand(ranges: &[QueueRange]) -> BTreeSet<Queue> {
    support::queues::expand(ranges).unwrap_or_else(|e| panic!("{ranges:?}: {e}"))
}

use support::queues::{all_queues, status_json};

/// The status's assignments, consumer -> queues.
fn assignments(group: &ConsumerGroup) -> BTreeMap<String, Vec<QueueRange>> {
    group
        .status
        .as_ref()
        .expect("status")
        .allocation
        .assignments
        .iter()
        .map(|a| (a.consumer.clone(), a.queues.clone()))
        .collect()
}

fn expanded(group: &ConsumerGroup) -> BTreeMap<String, BTreeSet<Queue>> {
    assignments(group)
        .into_iter()
        .map(|(c, q)| (c, expand(&q)))
        .collect()
}

/// The pods agree with the group's status: exactly its consumers carry the group's label, each
/// with an annotation that parses to its status entry; no pod has the annotation without the
/// label.
async fn check_members(env: &Env, group: &ConsumerGroup) -> Result<(), String> {
    let name = group.name_any();
    let in_status = assignments(group);
    let pods = env
        .api::<Pod>()
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items;
    let mut labelled = BTreeSet::new();
    for pod in &pods {
        let pod_name = pod.name_any();
        let (label, annotation) = (group_of(pod), queues_of(pod));
        if label.is_none() && annotation.is_some() {
            return Err(format!(
                "pod {pod_name} has the annotation {annotation:?} without the label"
            ));
        }
        if label.as_deref() != Some(name.as_str()) {
            continue;
        }
        labelled.insert(pod_name.clone());
        let queues = in_status.get(&pod_name).ok_or_else(|| {
            format!(
                "pod {pod_name} carries the label of {name} but is not among its consumers {:?}",
                in_status.keys()
            )
        })?;
        let annotation =
            annotation.ok_or_else(|| format!("pod {pod_name} is labelled but not annotated"))?;
        let parsed: Vec<QueueRange> = serde_json::from_str(&annotation)
            .map_err(|e| format!("pod {pod_name}: annotation {annotation:?}: {e}"))?;
        if &parsed != queues {
            return Err(format!(
                "pod {pod_name}: annotation {annotation} but status {queues:?}"
            ));
        }
    }
    let unlabelled: Vec<&String> = in_status
        .keys()
        .filter(|c| !labelled.contains(*c))
        .collect();
    if unlabelled.is_empty() {
        Ok(())
    } else {
        Err(format!("consumers without the label: {unlabelled:?}"))
    }
}

/// Waits until the group is Ready for its current generation with `consumers` consumers and the
/// pods carry exactly its status's assignment.
async fn converged(env: &Env, name: &str, consumers: u32) -> ConsumerGroup {
    let api = env.api::<ConsumerGroup>();
    let what = format!("group {name}: Ready, {consumers} consumers, pods annotated as its status");
    eventually(&what, || async {
        let group = api.get(name).await.map_err(|e| e.to_string())?;
        condition_is(&group, "Ready", "True")?;
        let status = group.status.as_ref().ok_or("no status")?;
        if status.observed_generation != group.metadata.generation
            || status.allocation.consumers != consumers
            || status.allocation.assignments.len() != consumers as usize
        {
            return Err(format!("status {}", status_json(&group)));
        }
        check_members(env, &group).await?;
        Ok(group)
    })
    .await
}

/// Events (`events.k8s.io/v1`) of the namespace about `kind`/`name`.
async fn events_about(env: &Env, kind: &str, name: &str) -> Vec<Event> {
    env.api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("listing events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
        })
        .collect()
}

fn describe(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{:?} {:?} {:?} (series {:?})",
                e.type_,
                e.reason,
                e.note,
                e.series.as_ref().map(|s| s.count)
            )
        })
        .collect()
}

/// Waits for an Event about `kind`/`name` of `type_`/`reason` whose note `note` accepts.
async fn wait_event(
    env: &Env,
    kind: &str,
    name: &str,
    type_: &str,
    reason: &str,
    note: impl Fn(&str) -> bool,
) -> Event {
    let what = format!("a {type_} {reason} Event about {kind} {name}");
    eventually(&what, || async {
        let events = events_about(env, kind, name).await;
        events
            .iter()
            .find(|e| {
                e.type_.as_deref() == Some(type_)
                    && e.reason.as_deref() == Some(reason)
                    && note(e.note.as_deref().unwrap_or_default())
            })
            .cloned()
            .ok_or_else(|| format!("events: {:?}", describe(&events)))
    })
    .await
}

/// Exactly one Event of `type_`/`reason` about `kind`/`name`, published once (kube's recorder
/// turns a repeat into a `series`).
async fn assert_once(env: &Env, kind: &str, name: &str, type_: &str, reason: &str) -> Event {
    let events = events_about(env, kind, name).await;
    let matching: Vec<&Event> = events
        .iter()
        .filter(|e| e.type_.as_deref() == Some(type_) && e.reason.as_deref() == Some(reason))
        .collect();
    assert!(
        matching.len() == 1 && matching[0].series.is_none(),
        "expected one {type_} {reason} Event about {kind} {name}, published once: {:?}",
        describe(&events)
    );
    matching[0].clone()
}

/// resourceVersion of every pod of the namespace.
async fn pod_versions(env: &Env) -> BTreeMap<String, String> {
    env.list_pods("")
        .await
        .iter()
        .map(|p| (p.name_any(), p.resource_version().unwrap_or_default()))
        .collect()
}

/// Merge-patches a pod's labels.
async fn label_pod(env: &Env, name: &str, labels: Value) -> Pod {
    env.api::<Pod>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .unwrap_or_else(|e| panic!("labelling pod {name}: {e}"))
}

async fn get_pod(env: &Env, name: &str) -> Option<Pod> {
    env.api::<Pod>().get_opt(name).await.expect("reading a pod")
}

/// Writes the group spec `spec` (server-side apply) and returns the new generation.
async fn respec(env: &Env, name: &str, spec: Value) -> i64 {
    env.group(name, spec)
        .await
        .metadata
        .generation
        .expect("generation")
}

#[tokio::test]
async fn first_assignment() {
    let Some(env) = Env::new("first-assignment").await else {
        return;
    };
    let op = env.leader("op-a").await;
    env.topic("orders", &ORDERS).await;
    env.deployment("orders-consumer", 2).await;
    env.pods("orders-consumer", 2).await;
    env.group("orders-consumer", deployment_group("orders-consumer"))
        .await;
    let group = converged(&env, "orders-consumer", 2).await;
    let status = group.status.as_ref().unwrap();
    assert_eq!(status.allocation.queues, 8);
    assert_eq!(status.allocation.idle, 0);
    assert_eq!(status.desired_replicas, Some(2));
    assert!(
        status.last_rebalance_time.is_some(),
        "{}",
        status_json(&group)
    );
    // Averagely: contiguous pages of the sorted queues, consumers in Java order.
    assert_eq!(
        assignments(&group),
        BTreeMap::from([
            (
                "orders-consumer-0".to_string(),
                vec![qr("orders", "broker-a", "0-3")]
            ),
            (
                "orders-consumer-1".to_string(),
                vec![qr("orders", "broker-b", "0-3")]
            ),
        ])
    );
    let ready = condition(&group, "Ready").unwrap();
    assert_eq!(
        (ready.reason.as_str(), ready.message.as_str()),
        ("Rebalanced", "2 consumers, 8 queues")
    );
    let idle = condition(&group, "IdleConsumers").unwrap();
    assert_eq!(
        (idle.status.as_str(), idle.reason.as_str()),
        ("False", "Balanced")
    );
    // The annotation is the documented contract, byte for byte.
    let pods = env.list_pods("app=orders-consumer").await;
    let annotations: BTreeMap<String, Option<String>> =
        pods.iter().map(|p| (p.name_any(), queues_of(p))).collect();
    assert_eq!(
        annotations,
        BTreeMap::from([
            (
                "orders-consumer-0".to_string(),
                Some(r#"[{"topic":"orders","broker":"broker-a","queueIds":"0-3"}]"#.to_string())
            ),
            (
                "orders-consumer-1".to_string(),
                Some(r#"[{"topic":"orders","broker":"broker-b","queueIds":"0-3"}]"#.to_string())
            ),
        ])
    );
    for pod in &pods {
        assert_eq!(group_of(pod).as_deref(), Some("orders-consumer"));
    }
    let event = wait_event(
        &env,
        "ConsumerGroup",
        "orders-consumer",
        "Normal",
        "Rebalanced",
        |n| n == "2 consumers, 8 queues, 0 moved",
    )
    .await;
    assert_eq!(event.action.as_deref(), Some("Rebalance"));
    assert_eq!(event.reporting_controller.as_deref(), Some("rebalancer"));
    assert_eq!(event.reporting_instance.as_deref(), Some("op-a"));
    assert_once(
        &env,
        "ConsumerGroup",
        "orders-consumer",
        "Normal",
        "Rebalanced",
    )
    .await;
    op.assert_clean();
}

#[tokio::test]
async fn scale_up_gives_the_new_pod_its_share() {
    let Some(env) = Env::new("scale-up").await else {
        return;
    };
    let op = env.leader("op").await;
    let name = "orders-consumer";
    env.topic("orders", &ORDERS).await;
    env.deployment(name, 2).await;
    env.pods(name, 2).await;
    env.group(name, deployment_group(name)).await;
    let before = converged(&env, name, 2).await;
    let ready_before = condition(&before, "Ready").unwrap().clone();

    env.scale(name, 3).await;
    env.pod("orders-consumer-2", json!({"app": name}), true)
        .await;
    let group = converged(&env, name, 3).await;
    let status = group.status.as_ref().unwrap();
    assert_eq!(status.desired_replicas, Some(3));
    assert_eq!(
        assignments(&group),
        BTreeMap::from([
            (
                "orders-consumer-0".to_string(),
                vec![qr("orders", "broker-a", "0-2")]
            ),
            (
                "orders-consumer-1".to_string(),
                vec![
                    qr("orders", "broker-a", "3"),
                    qr("orders", "broker-b", "0-1")
                ]
            ),
            (
                "orders-consumer-2".to_string(),
                vec![qr("orders", "broker-b", "2-3")]
            ),
        ])
    );
    // a3 to consumer-1, b2-3 to consumer-2.
    assert_eq!(status.allocation.moved_queues, 3);
    let ready = condition(&group, "Ready").unwrap();
    assert_eq!(ready.message, "3 consumers, 8 queues");
    // Ready all along: the transition time stays.
    assert_eq!(
        ready.last_transition_time,
        ready_before.last_transition_time
    );
    condition_is(&group, "IdleConsumers", "False").unwrap();
    // 0 moved by the first assignment, 3 by this one.
    let labels = format!(r#"namespace="{}",group="{name}""#, env.ns);
    eventually("rebalancer_queues_moved_total 3", || async {
        match op.metric("rebalancer_queues_moved_total", &labels).await {
            Some(3.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    op.assert_clean();
}

/// Each rebalance is reported with its own numbers. kube-runtime's `Recorder` deduplicates
/// Events by (type, reason, action, reporter, regarding) without the note, so for 6 minutes
/// every later `Rebalanced` of a group only bumps the `series` of the first one, whose note
/// still reads `2 consumers, 8 queues, 0 moved`.
#[tokio::test]
async fn every_rebalance_is_reported_with_its_own_numbers() {
    let Some(env) = Env::new("rebalanced-note").await else {
        return;
    };
    let op = env.leader("op").await;
    let name = "orders-consumer";
    env.topic("orders", &ORDERS).await;
    env.deployment(name, 2).await;
    env.pods(name, 2).await;
    env.group(name, deployment_group(name)).await;
    converged(&env, name, 2).await;
    wait_event(&env, "ConsumerGroup", name, "Normal", "Rebalanced", |n| {
        n == "2 consumers, 8 queues, 0 moved"
    })
    .await;

    env.scale(name, 3).await;
    env.pod("orders-consumer-2", json!({"app": name}), true)
        .await;
    converged(&env, name, 3).await;
    wait_event(&env, "ConsumerGroup", name, "Normal", "Rebalanced", |n| {
        n == "3 consumers, 8 queues, 3 moved"
    })
    .await;
    op.assert_clean();
}

#[tokio::test]
async fn scale_down_releases_the_pods_that_left() {
    let Some(env) = Env::new("scale-down").await else {
        return;
    };
    let op = env.leader("op").await;
    let name = "orders-consumer";
    env.topic("orders", &ORDERS).await;
    env.deployment(name, 4).await;
    env.pods(name, 4).await;
    env.group(name, deployment_group(name)).await;
    let before = converged(&env, name, 4).await;
    assert!(
        expanded(&before).values().all(|q| q.len() == 2),
        "{}",
        status_json(&before)
    );

    // Three ways to leave: not Ready any more, out of the selector, deleted.
    env.scale(name, 1).await;
    env.set_ready("orders-consumer-1", false).await;
    label_pod(&env, "orders-consumer-2", json!({"app": "retired"})).await;
    env.delete_pod("orders-consumer-3").await;

    let group = converged(&env, name, 1).await;
    let status = group.status.as_ref().unwrap();
    assert_eq!(status.desired_replicas, Some(1));
    assert_eq!(
        assignments(&group),
        BTreeMap::from([(
            "orders-consumer-0".to_string(),
            vec![
                qr("orders", "broker-a", "0-3"),
                qr("orders", "broker-b", "0-3")
            ]
        )])
    );
    for leaver in ["orders-consumer-1", "orders-consumer-2"] {
        let pod = get_pod(&env, leaver).await.expect("the pod still exists");
        assert_eq!(group_of(&pod), None, "{leaver} keeps the label");
        assert_eq!(queues_of(&pod), None, "{leaver} keeps the annotation");
    }
    assert!(get_pod(&env, "orders-consumer-3").await.is_none());
    assert!(
        status.allocation.moved_queues > 0,
        "{}",
        status_json(&group)
    );
    condition_is(&group, "IdleConsumers", "False").unwrap();
    op.assert_clean();
}

#[tokio::test]
async fn more_replicas_than_queues_warns_before_any_pod_is_ready() {
    let Some(env) = Env::new("idle-consumers").await else {
        return;
    };
    let op = env.leader("op").await;
    let name = "orders-consumer";
    env.topic("orders", &ORDERS).await;
    env.deployment(name, 10).await;
    // A pod of the Deployment that is not Ready yet: not a consumer.
    env.pod("orders-consumer-0", json!({"app": name}), false)
        .await;
    env.group(name, deployment_group(name)).await;

    let message = "10 replicas, 8 queues on topic orders: 2 consumers idle; at most 8 can own a queue (status.maxUsefulReplicas): scale to 8 or add queues";
    let group = env
        .wait_group(name, "IdleConsumers=True", |g| {
            condition_is(g, "IdleConsumers", "True")
        })
        .await;
    let idle = condition(&group, "IdleConsumers").unwrap();
    assert_eq!(idle.reason, "MoreConsumersThanQueues");
    assert_eq!(idle.message, message);
    let status = group.status.as_ref().unwrap();
    assert_eq!(status.desired_replicas, Some(10));
    assert_eq!(status.max_useful_replicas, Some(8));
    assert_eq!(status.allocation.consumers, 0);
    assert_eq!(status.allocation.queues, 8);
    assert!(status.allocation.assignments.is_empty());
    // One definition of idle: status.idle (the IDLE column, the metric) says the 2 that
    // IdleConsumers names, before any pod is Ready.
    assert_eq!(status.allocation.idle, 2);
    let labels = format!("namespace=\"{}\",group=\"{name}\"", env.ns);
    // Set once the status write returned: polled, not read at once.
    support::eventually("rebalancer_idle_consumers 2", || async {
        match op.metric("rebalancer_idle_consumers", &labels).await {
            Some(2.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Nobody consumes yet: said in Ready, with a Warning, and no Normal Rebalanced for nobody.
    let ready = condition(&group, "Ready").unwrap();
    assert_eq!(
        (
            ready.status.as_str(),
            ready.reason.as_str(),
            ready.message.as_str()
        ),
        (
            "False",
            "NoConsumers",
            "no Ready consumer pod: 8 queues consumed by nobody"
        )
    );
    wait_event(
        &env,
        "ConsumerGroup",
        name,
        "Warning",
        "NoConsumers",
        |_| true,
    )
    .await;
    let normal: Vec<_> = env
        .events_of("ConsumerGroup", name)
        .await
        .into_iter()
        .filter(|(t, _, _)| t == "Normal")
        .collect();
    assert!(normal.is_empty(), "{normal:?}");

    let on_group = wait_event(
        &env,
        "ConsumerGroup",
        name,
        "Warning",
        "IdleConsumers",
        |n| n == message,
    )
    .await;
    assert_eq!(on_group.action.as_deref(), Some("Rebalance"));
    let on_workload = wait_event(&env, "Deployment", name, "Warning", "IdleConsumers", |n| {
        n == message
    })
    .await;
    let regarding = on_workload.regarding.as_ref().unwrap();
    assert_eq!(regarding.api_version.as_deref(), Some("apps/v1"));
    assert_eq!(regarding.namespace.as_deref(), Some(env.ns.as_str()));
    assert_once(&env, "ConsumerGroup", name, "Warning", "IdleConsumers").await;
    assert_once(&env, "Deployment", name, "Warning", "IdleConsumers").await;
    let pod = get_pod(&env, "orders-consumer-0").await.unwrap();
    assert_eq!((group_of(&pod), queues_of(&pod)), (None, None));
    op.assert_clean();
}

#[tokio::test]
async fn missing_topic_reports_and_keeps_the_last_assignment() {
    let Some(env) = Env::new("missing-topic").await else {
        return;
    };
    let op = env.leader("op").await;

    // A group whose topic never existed: nothing assigned, nothing annotated.
    env.deployment("ghost", 2).await;
    env.pods("ghost", 2).await;
    env.group(
        "ghost",
        group_spec(&["nope"], "Averagely", workload_ref("ghost")),
    )
    .await;
    // A group with a good assignment, whose topic then goes away.
    let name = "orders-consumer";
    env.topic("orders", &ORDERS).await;
    env.deployment(name, 2).await;
    env.pods(name, 2).await;
    env.group(name, deployment_group(name)).await;

    let ghost = env
        .wait_group("ghost", "Ready=False", |g| {
            condition_is(g, "Ready", "False")
        })
        .await;
    let ready = condition(&ghost, "Ready").unwrap();
    assert_eq!(ready.reason, "TopicNotFound");
    assert_eq!(ready.message, "spec.topics: topic nope not found");
    assert!(
        ghost
            .status
            .as_ref()
            .unwrap()
            .allocation
            .assignments
            .is_empty()
    );
    wait_event(
        &env,
        "ConsumerGroup",
        "ghost",
        "Warning",
        "TopicNotFound",
        |n| n == "spec.topics: topic nope not found",
    )
    .await;
    for pod in env.list_pods("app=ghost").await {
        assert_eq!((group_of(&pod), queues_of(&pod)), (None, None), "{pod:?}");
    }

    let before = converged(&env, name, 2).await;
    let pods_before = env
        .list_pods("app=orders-consumer")
        .await
        .iter()
        .map(|p| (p.name_any(), p.resource_version()))
        .collect::<BTreeMap<_, _>>();
    env.api::<Topic>()
        .delete("orders", &Default::default())
        .await
        .expect("deleting the topic");
    let lost = env
        .wait_group(name, "Ready=False", |g| condition_is(g, "Ready", "False"))
        .await;
    let ready = condition(&lost, "Ready").unwrap();
    assert_eq!(ready.reason, "TopicNotFound");
    assert_eq!(ready.message, "spec.topics: topic orders not found");
    let (was, is) = (
        before.status.as_ref().unwrap(),
        lost.status.as_ref().unwrap(),
    );
    assert_eq!(
        is.allocation, was.allocation,
        "the last good assignment stays"
    );
    assert_eq!(is.last_rebalance_time, was.last_rebalance_time);
    assert_eq!(
        condition(&lost, "IdleConsumers"),
        condition(&before, "IdleConsumers")
    );
    wait_event(
        &env,
        "ConsumerGroup",
        name,
        "Warning",
        "TopicNotFound",
        |n| n == "spec.topics: topic orders not found",
    )
    .await;
    let pods_now = env
        .list_pods("app=orders-consumer")
        .await
        .iter()
        .map(|p| (p.name_any(), p.resource_version()))
        .collect::<BTreeMap<_, _>>();
    assert_eq!(pods_now, pods_before, "the pods were rewritten");

    // The topic is back, the same: Ready again, nothing moved, no second Rebalanced.
    env.topic("orders", &ORDERS).await;
    let back = converged(&env, name, 2).await;
    assert_eq!(back.status.as_ref().unwrap().allocation, was.allocation);
    assert_eq!(
        back.status.as_ref().unwrap().last_rebalance_time,
        was.last_rebalance_time
    );
    assert_once(&env, "ConsumerGroup", name, "Normal", "Rebalanced").await;
    assert_eq!(
        env.list_pods("app=orders-consumer")
            .await
            .iter()
            .map(|p| (p.name_any(), p.resource_version()))
            .collect::<BTreeMap<_, _>>(),
        pods_before
    );
    op.assert_clean();
}

#[tokio::test]
async fn invalid_by_config_is_reported_and_keeps_the_last_assignment() {
    let Some(env) = Env::new("invalid-spec").await else {
        return;
    };
    let op = env.leader("op").await;
    let name = "cfg-consumer";
    let by_config = |first_ids: &str| {
        let mut spec = group_spec(&["orders"], "ByConfig", selector(name));
        spec["byConfig"] = json!({
            "cfg-consumer-0": [{"topic": "orders", "broker": "broker-a", "queueIds": first_ids}],
            "cfg-consumer-1": [{"topic": "orders", "broker": "broker-b", "queueIds": "0-3"}],
        });
        spec
    };
    env.topic("orders", &ORDERS).await;
    env.pods(name, 2).await;
    env.group(name, by_config("0-3")).await;
    let good = converged(&env, name, 2).await;
    assert_eq!(
        expanded(&good),
        BTreeMap::from([
            (
                "cfg-consumer-0".to_string(),
                all_queues("orders", &[("broker-a", 4)])
            ),
            (
                "cfg-consumer-1".to_string(),
                all_queues("orders", &[("broker-b", 4)])
            ),
        ])
    );
    let pods_before = pod_versions(&env).await;

    // `3-1` matches the schema's pattern; only the controller sees that it runs backwards.
    let generation = respec(&env, name, by_config("3-1")).await;
    let message = r#"spec.byConfig[cfg-consumer-0][0].queueIds: invalid queue id list "3-1": range "3-1" runs backwards"#;
    let group = env
        .wait_group(name, "Ready=False, InvalidSpec", |g| {
            condition_is(g, "Ready", "False")?;
            (g.status.as_ref().unwrap().observed_generation == Some(generation))
                .then_some(())
                .ok_or_else(|| "older generation".to_string())
        })
        .await;
    let ready = condition(&group, "Ready").unwrap();
    assert_eq!(
        (ready.reason.as_str(), ready.message.as_str()),
        ("InvalidSpec", message)
    );
    assert_eq!(
        group.status.as_ref().unwrap().allocation,
        good.status.as_ref().unwrap().allocation
    );
    wait_event(&env, "ConsumerGroup", name, "Warning", "InvalidSpec", |n| {
        n == message
    })
    .await;

    // Valid ranges, but a queue broker-a does not have: the engine refuses.
    let generation = respec(&env, name, by_config("0-9")).await;
    let message = "byConfig: consumer cfg-consumer-0 lists orders/broker-a queue 9, but the broker has 4 readable queues";
    let group = env
        .wait_group(name, "Ready=False, UnknownQueue", |g| {
            condition_is(g, "Ready", "False")?;
            (g.status.as_ref().unwrap().observed_generation == Some(generation))
                .then_some(())
                .ok_or_else(|| "older generation".to_string())
        })
        .await;
    let ready = condition(&group, "Ready").unwrap();
    assert_eq!(
        (ready.reason.as_str(), ready.message.as_str()),
        ("UnknownQueue", message)
    );
    assert_eq!(
        group.status.as_ref().unwrap().allocation,
        good.status.as_ref().unwrap().allocation
    );
    wait_event(
        &env,
        "ConsumerGroup",
        name,
        "Warning",
        "UnknownQueue",
        |n| n == message,
    )
    .await;
    check_members(&env, &group).await.unwrap();
    assert_eq!(
        pod_versions(&env).await,
        pods_before,
        "the pods were rewritten"
    );
    op.assert_clean();
}

#[tokio::test]
async fn topic_with_unmatched_queues_reports_queue_mismatch() {
    let Some(env) = Env::new("queue-mismatch").await else {
        return;
    };
    let op = env.leader("op").await;
    let topic = |a: (u32, u32), b: (u32, u32)| {
        json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders"},
            "spec": {"brokers": [
                {"name": "broker-a", "readQueues": a.0, "writeQueues": a.1},
                {"name": "broker-b", "readQueues": b.0, "writeQueues": b.1},
            ]}
        })
    };
    env.apply::<Topic>(topic((4, 8), (6, 4))).await;
    let api = env.api::<Topic>();
    let wait_mismatch = |want: &'static str| {
        let api = api.clone();
        async move {
            eventually(&format!("topic orders: QueueMismatch={want}"), || async {
                let t = api.get("orders").await.map_err(|e| e.to_string())?;
                let s = t.status.clone().ok_or("no status")?;
                let generation_seen = s.observed_generation == t.metadata.generation;
                match s.conditions.iter().find(|c| c.type_ == "QueueMismatch") {
                    Some(c) if c.status == want && generation_seen => Ok(t),
                    other => Err(format!("{other:?}")),
                }
            })
            .await
        }
    };
    let t = wait_mismatch("True").await;
    let status = t.status.unwrap();
    assert_eq!(
        (status.broker_count, status.read_queues, status.write_queues),
        (2, 10, 12)
    );
    let message = "topic orders broker broker-a: writeQueues 8 > readQueues 4: messages sent to queues 4-7 are never consumed; \
                   topic orders broker broker-b: readQueues 6 > writeQueues 4: consumers of queues 4-5 receive nothing";
    let mismatch = status
        .conditions
        .iter()
        .find(|c| c.type_ == "QueueMismatch")
        .unwrap();
    assert_eq!(
        (mismatch.reason.as_str(), mismatch.message.as_str()),
        ("ReadWriteMismatch", message)
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Valid")
    );
    let event = wait_event(&env, "Topic", "orders", "Warning", "QueueMismatch", |n| {
        n == message
    })
    .await;
    assert_eq!(event.action.as_deref(), Some("Validate"));

    // Fixed: the condition clears, and no further warning.
    env.apply::<Topic>(topic((4, 4), (6, 6))).await;
    let t = wait_mismatch("False").await;
    let status = t.status.unwrap();
    assert_eq!((status.read_queues, status.write_queues), (10, 10));
    let mismatch = status
        .conditions
        .iter()
        .find(|c| c.type_ == "QueueMismatch")
        .unwrap();
    assert_eq!(mismatch.reason, "Matched");
    assert_once(&env, "Topic", "orders", "Warning", "QueueMismatch").await;
    op.assert_clean();
}

/// `(started, finished)` ConsumerGroup reconciles of `op`.
async fn reconciles(op: &Operator) -> (f64, f64) {
    let kind = r#"kind="ConsumerGroup""#;
    (
        op.metric("rebalancer_reconciles_total", kind)
            .await
            .unwrap_or(0.0),
        op.metric("rebalancer_reconcile_duration_seconds_count", kind)
            .await
            .unwrap_or(0.0),
    )
}

/// Waits until no ConsumerGroup reconcile is in flight and at least `after` have finished;
/// returns how many have.
async fn reconciled(op: &Operator, after: f64) -> f64 {
    eventually(
        &format!("more than {after} finished reconciles, none in flight"),
        || async {
            match reconciles(op).await {
                (started, finished) if started == finished && finished > after => Ok(finished),
                other => Err(format!("(started, finished) = {other:?}")),
            }
        },
    )
    .await
}

// Multi-threaded: the proxy must keep serving while the test thread blocks (an operator's
// Drop waits for it to exit, and it releases its Lease through the proxy on the way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converged_group_is_not_rewritten() {
    let Some(env) = Env::new("no-op").await else {
        return;
    };
    let proxy = CountingProxy::start(&env).await;
    let op = Operator::start(Launch {
        kubeconfig: &proxy.kubeconfig,
        lease_namespace: &env.ns,
        namespaces: vec![env.ns.clone()],
        identity: "op".into(),
        lease_duration: 4,
        log_dir: &env.dir,
        extra_args: Vec::new(),
    });
    env.wait_holder("op").await;
    let name = "orders-consumer";
    let ns = env.ns.clone();
    env.topic("orders", &ORDERS).await;
    env.deployment(name, 2).await;
    env.pods(name, 2).await;
    env.group(name, deployment_group(name)).await;
    converged(&env, name, 2).await;
    wait_event(&env, "ConsumerGroup", name, "Normal", "Rebalanced", |_| {
        true
    })
    .await;
    let finished = reconciled(&op, 0.0).await;

    // Getting there took one write of each kind: the topic's status, each pod once, the group's
    // status once, one Event.
    let mut writes = proxy.select(0, |r| r.is_write() && r.status < 300);
    writes.sort();
    let mut expected = vec![
        format!("PATCH /apis/rebalancer.dev/v1alpha1/namespaces/{ns}/topics/orders/status"),
        format!("PATCH /api/v1/namespaces/{ns}/pods/orders-consumer-0"),
        format!("PATCH /api/v1/namespaces/{ns}/pods/orders-consumer-1"),
        format!("PATCH /apis/rebalancer.dev/v1alpha1/namespaces/{ns}/consumergroups/{name}/status"),
        format!("POST /apis/events.k8s.io/v1/namespaces/{ns}/events"),
    ];
    expected.sort();
    assert_eq!(writes, expected, "all requests: {:?}", proxy.requests(0));

    let group_before = env.get_group(name).await;
    let events_before = env
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    let moved_labels = format!(r#"namespace="{ns}",group="{name}""#);
    let moved_before = op
        .metric("rebalancer_queues_moved_total", &moved_labels)
        .await;
    let mark = proxy.len();

    // A change the operator does not care about, on a member pod: the pod watch maps it to the
    // group, so a reconcile runs with unchanged inputs.
    let touched = label_pod(&env, "orders-consumer-0", json!({"touched": "1"})).await;
    let mut pods_before = pod_versions(&env).await;
    pods_before.insert(
        "orders-consumer-0".into(),
        touched.resource_version().unwrap(),
    );
    let finished = reconciled(&op, finished).await;
    tokio::time::sleep(QUIET_WINDOW).await;

    assert_eq!(
        proxy.select(mark, Forwarded::is_write),
        Vec::<String>::new(),
        "the converged group caused writes"
    );
    // The reconcile (counted by `reconciled` above) read everything from the watch caches: the
    // only requests are the Lease's renewals and the watches' own.
    let others = proxy.select(mark, |r| {
        !r.path.contains("/leases/") && !r.query.contains("watch=")
    });
    assert_eq!(others, Vec::<String>::new(), "a reconcile made requests");
    assert_eq!(
        reconciles(&op).await,
        (finished, finished),
        "another reconcile ran without any change"
    );
    let group_after = env.get_group(name).await;
    assert_eq!(
        group_after.resource_version(),
        group_before.resource_version(),
        "the group was rewritten: {}",
        status_json(&group_after)
    );
    assert_eq!(pod_versions(&env).await, pods_before, "a pod was rewritten");
    let events_after = env
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(events_after, events_before, "an Event was published");
    assert_eq!(
        op.metric("rebalancer_queues_moved_total", &moved_labels)
            .await,
        moved_before
    );
    assert_eq!(
        op.http_get("/metrics")
            .await
            .unwrap()
            .1
            .lines()
            .filter(|l| l.starts_with("rebalancer_reconcile_errors_total{"))
            .collect::<Vec<_>>(),
        Vec::<&str>::new()
    );
    op.assert_clean();
}

#[tokio::test]
async fn sticky_moves_only_the_new_share_after_an_operator_restart() {
    let Some(env) = Env::new("sticky-restart").await else {
        return;
    };
    let mut op = env.leader("op-a").await;
    let name = "sticky-consumer";
    env.topic("orders", &ORDERS).await;
    env.deployment(name, 2).await;
    env.pods(name, 2).await;
    env.group(name, group_spec(&["orders"], "Sticky", workload_ref(name)))
        .await;
    let before = expanded(&converged(&env, name, 2).await);

    // Nothing survives but the group's status and the pods' annotations.
    let exit = op
        .terminate()
        .expect("the operator did not stop on SIGTERM");
    assert!(exit.success(), "{exit:?}");
    op.assert_clean();
    env.scale(name, 3).await;
    env.pod("sticky-consumer-2", json!({"app": name}), true)
        .await;
    let op = env.leader("op-b").await;

    let group = converged(&env, name, 3).await;
    let after = expanded(&group);
    let newcomer = &after["sticky-consumer-2"];
    for (consumer, kept) in &before {
        let now = &after[consumer];
        assert!(
            now.is_subset(kept),
            "{consumer} gained queues: before {kept:?}, after {now:?}"
        );
        // 8 queues over 3: the old consumers keep 3 each, the most a balanced split allows.
        assert_eq!(now.len(), 3, "{consumer}: {now:?}");
        let lost: BTreeSet<Queue> = kept.difference(now).cloned().collect();
        assert!(
            lost.is_subset(newcomer),
            "{consumer} lost {lost:?} elsewhere"
        );
    }
    assert_eq!(newcomer.len(), 2, "{after:?}");
    assert_eq!(group.status.as_ref().unwrap().allocation.moved_queues, 2);
    let event = wait_event(&env, "ConsumerGroup", name, "Normal", "Rebalanced", |n| {
        n == "3 consumers, 8 queues, 2 moved"
    })
    .await;
    assert_eq!(event.reporting_instance.as_deref(), Some("op-b"));
    op.assert_clean();
}

/// `n` brokers `broker-00`.. of `queues` queues each.
fn brokers(n: usize, queues: u32) -> Vec<(String, u32)> {
    (0..n).map(|i| (format!("broker-{i:02}"), queues)).collect()
}

async fn wide_topic(env: &Env, name: &str, brokers: &[(String, u32)]) -> BTreeSet<Queue> {
    let list: Vec<(&str, u32)> = brokers.iter().map(|(b, q)| (b.as_str(), *q)).collect();
    env.topic(name, &list).await;
    all_queues(name, &list)
}

#[tokio::test]
async fn oversized_status_leaves_assignments_to_the_annotations() {
    let Some(env) = Env::new("status-truncated").await else {
        return;
    };
    let op = env.leader("op").await;
    // AveragelyByCircle scatters: with 10 consumers every queue id is a range of its own. One
    // topic of 65,536 queues renders in ~320 KB, under the 768 KiB budget whatever the consumer
    // count (until hundreds of pods add per-range overhead); three of them (196,608 queues) take
    // ~1 MB over 10 pods, ~100 KB each, under the 128 KiB annotation budget.
    let mut expected = BTreeSet::new();
    let topics = ["wide-0", "wide-1", "wide-2"];
    for topic in topics {
        expected.extend(wide_topic(&env, topic, &brokers(16, 4096)).await);
    }
    let name = "wide-consumer";
    env.pods(name, 10).await;
    env.group(
        name,
        group_spec(&topics, "AveragelyByCircle", selector(name)),
    )
    .await;
    let group = env
        .wait_group(name, "StatusTruncated=True", |g| {
            condition_is(g, "StatusTruncated", "True")
        })
        .await;
    let status = group.status.as_ref().unwrap();
    assert!(status.assignments_truncated, "{}", status_json(&group));
    assert!(status.allocation.assignments.is_empty());
    assert_eq!(status.allocation.consumers, 10);
    assert_eq!(status.allocation.queues, 196_608);
    assert_eq!(
        condition(&group, "StatusTruncated").unwrap().reason,
        "StatusTooLarge"
    );
    let ready = condition(&group, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.message.as_str()),
        ("True", "10 consumers, 196608 queues")
    );
    assert!(condition(&group, "AnnotationsTruncated").is_none());

    // The pods hold the whole assignment: a partition of every queue, balanced per topic.
    let pods = env.list_pods(&format!("app={name}")).await;
    assert_eq!(pods.len(), 10);
    let mut owned = BTreeSet::new();
    let mut total_bytes = 0;
    let mut per_topic: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for pod in &pods {
        assert_eq!(group_of(pod).as_deref(), Some(name));
        let value = queues_of(pod).unwrap_or_else(|| panic!("{} has no queues", pod.name_any()));
        assert!(value.len() <= ANNOTATION_BUDGET, "{}", value.len());
        total_bytes += value.len();
        let queues: Vec<QueueRange> = serde_json::from_str(&value).unwrap();
        let mine = expand(&queues);
        for topic in topics {
            per_topic
                .entry(topic)
                .or_default()
                .push(mine.iter().filter(|q| q.0 == topic).count());
        }
        let before = owned.len();
        owned.extend(mine.iter().cloned());
        assert_eq!(owned.len(), before + mine.len(), "a queue has two owners");
    }
    assert!(total_bytes > STATUS_BUDGET_BYTES, "{total_bytes}");
    assert_eq!(owned, expected);
    for (topic, sizes) in per_topic {
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(max - min <= 1, "{topic}: {sizes:?}");
    }
    op.assert_clean();
}

#[tokio::test]
async fn oversized_annotation_is_reported_not_written() {
    let Some(env) = Env::new("annotations-truncated").await else {
        return;
    };
    let op = env.leader("op").await;
    let name = "big-consumer";
    wide_topic(&env, "big", &brokers(16, 4)).await;
    env.pods(name, 2).await;
    env.group(
        name,
        group_spec(&["big"], "AveragelyByCircle", selector(name)),
    )
    .await;
    let small = converged(&env, name, 2).await;
    assert!(condition(&small, "AnnotationsTruncated").is_none());

    // 16 × 4096 queues round robin over 2 pods: every other id, ~155 KB of ranges per pod, over
    // the 128 KiB annotation budget. The pods' small annotations are now stale.
    let expected = wide_topic(&env, "big", &brokers(16, 4096)).await;
    let group = env
        .wait_group(name, "AnnotationsTruncated=True", |g| {
            condition_is(g, "AnnotationsTruncated", "True")
        })
        .await;
    let c = condition(&group, "AnnotationsTruncated").unwrap();
    assert_eq!(c.reason, "AnnotationTooLarge");
    assert_eq!(
        c.message,
        format!(
            "2 pods own more queue ranges than fit in the {ANNOTATION_BUDGET}-byte rebalancer.dev/queues annotation, which they do not get: big-consumer-0, big-consumer-1"
        )
    );
    assert!(condition(&group, "StatusTruncated").is_none());
    condition_is(&group, "Ready", "True").unwrap();
    // The status carries everything.
    let status = group.status.as_ref().unwrap();
    assert_eq!(status.allocation.queues, 65_536);
    let owned = expanded(&group);
    assert_eq!(owned.len(), 2);
    assert!(owned.values().all(|q| q.len() == 32_768));
    assert_eq!(
        owned.values().flatten().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    for a in &status.allocation.assignments {
        let rendered = serde_json::to_string(&a.queues).unwrap().len();
        assert!(rendered > ANNOTATION_BUDGET, "{}: {rendered}", a.consumer);
    }
    // Labelled, and no stale annotation left to act on.
    for pod in env.list_pods(&format!("app={name}")).await {
        assert_eq!(group_of(&pod).as_deref(), Some(name));
        assert_eq!(
            queues_of(&pod),
            None,
            "{} keeps a stale annotation",
            pod.name_any()
        );
    }
    op.assert_clean();
}

#[tokio::test]
async fn deleted_group_releases_its_pods() {
    let Some(env) = Env::new("deleted-group").await else {
        return;
    };
    let op = env.leader("op").await;
    let name = "doomed-consumer";
    env.topic("orders", &ORDERS).await;
    env.deployment(name, 2).await;
    env.pods(name, 2).await;
    env.group(name, deployment_group(name)).await;
    converged(&env, name, 2).await;

    env.api::<ConsumerGroup>()
        .delete(name, &Default::default())
        .await
        .expect("deleting the group");
    let selector = format!("app={name}");
    eventually(
        "the pods of the deleted group to lose label and annotation",
        || async {
            let pods = env.list_pods(&selector).await;
            let marked: Vec<String> = pods
                .iter()
                .filter(|p| group_of(p).is_some() || queues_of(p).is_some())
                .map(|p| p.name_any())
                .collect();
            match (pods.len(), marked.is_empty()) {
                (2, true) => Ok(()),
                (n, _) => Err(format!("{n} pods, still marked: {marked:?}")),
            }
        },
    )
    .await;
    op.assert_clean();
}
