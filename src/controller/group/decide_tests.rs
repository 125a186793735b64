//! `decide` on hand-built snapshots: no client, no runtime, no clock.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::core::{Selector, SelectorExt};
use serde_json::{Value, json};

use super::*;
use crate::controller::group::fetch::{Workload, WorkloadProblem};
use crate::controller::group::probe::{Held, NotAsked};

const NS: &str = "shop";
const GROUP: &str = "cg";
const BUDGETS: Budgets = Budgets {
    status: 768 * 1024,
    annotation: 128 * 1024,
    client_grace: std::time::Duration::from_secs(60),
};

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_750_000_000 + second).unwrap()
}

/// A group over topic `orders`, its pods selected by `app=consumer`; `spec` overrides fields.
fn group(spec: Value) -> ConsumerGroup {
    let mut object = json!({
        "apiVersion": "rebalancer.dev/v1alpha1",
        "kind": "ConsumerGroup",
        "metadata": {"name": GROUP, "namespace": NS, "generation": 1, "resourceVersion": "10"},
        "spec": {
            "topics": ["orders"],
            "strategy": "Averagely",
            "consumers": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "consumer"}}
        }
    });
    for (k, v) in spec.as_object().unwrap() {
        object["spec"][k] = v.clone();
    }
    serde_json::from_value(object).unwrap()
}

/// A topic; `brokers` as `(name, readQueues, permission)`.
fn topic(name: &str, brokers: &[(&str, u32, &str)]) -> Arc<Topic> {
    let brokers: Vec<Value> = brokers
        .iter()
        .map(|(b, q, p)| json!({"name": b, "readQueues": q, "writeQueues": q, "permission": p}))
        .collect();
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "rebalancer.dev/v1alpha1",
            "kind": "Topic",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"brokers": brokers}
        }))
        .unwrap(),
    )
}

/// Topic `orders` with `queues` queues on broker-a.
fn orders(queues: u32) -> Arc<Topic> {
    topic("orders", &[("broker-a", queues, "ReadWrite")])
}

/// A pod with labels `app: app` (and the group's, with `annotation`, when given).
fn pod_of(name: &str, app: &str, ready: bool, annotation: Option<&str>) -> Pod {
    let mut labels = json!({"app": app});
    let mut annotations = json!({});
    if let Some(a) = annotation {
        labels[GROUP_LABEL] = json!(GROUP);
        annotations[consumers::QUEUES_ANNOTATION] = json!(a);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "labels": labels, "annotations": annotations},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
    .unwrap()
}

fn pod(name: &str) -> Pod {
    pod_of(name, "consumer", true, None)
}

fn workload(desired_replicas: Option<i32>) -> Workload {
    let labels = LabelSelector {
        match_labels: Some([("app".to_string(), "consumer".to_string())].into()),
        match_expressions: None,
    };
    Workload {
        selector: Selector::try_from(labels.clone()).unwrap(),
        labels,
        desired_replicas,
    }
}

/// What fetch would read: the pods the workload selects, and those labelled for the group.
fn snapshot(group: ConsumerGroup, topics: Vec<Arc<Topic>>, pods: Vec<Pod>) -> Snapshot {
    snapshot_with(group, Ok(topics), Ok(workload(Some(2))), pods)
}

fn snapshot_with(
    group: ConsumerGroup,
    topics: Result<Vec<Arc<Topic>>, TopicProblem>,
    workload: Result<Workload, WorkloadProblem>,
    mut pods: Vec<Pod>,
) -> Snapshot {
    pods.sort_by_key(|p| p.name_any());
    let pods: Vec<Arc<Pod>> = pods.into_iter().map(Arc::new).collect();
    let selected = pods
        .iter()
        .filter(|p| {
            workload
                .as_ref()
                .is_ok_and(|w| w.selector.matches(p.labels()))
        })
        .cloned()
        .collect();
    let labelled = pods
        .iter()
        .filter(|p| p.labels().get(GROUP_LABEL).map(String::as_str) == Some(GROUP))
        .cloned()
        .collect();
    Snapshot {
        group: Arc::new(group),
        topics,
        workload,
        pods: selected,
        labelled,
        node_zones: BTreeMap::new(),
        clients: None,
        held: BTreeMap::new(),
        listing: None,
    }
}

/// RFC 7386 merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// The world once `decision` is applied: the group carries its status, the pods their patches.
fn applied(snapshot: &Snapshot, decision: &Decision) -> Snapshot {
    let mut group = (*snapshot.group).clone();
    group.status = Some(decision.status.clone());
    let mut pods: BTreeMap<String, Pod> = snapshot
        .pods
        .iter()
        .chain(&snapshot.labelled)
        .map(|p| (p.name_any(), (**p).clone()))
        .collect();
    for (name, patch) in &decision.pod_patches {
        let pod = pods
            .get_mut(name)
            .expect("a patch of a pod of the snapshot");
        let mut object = serde_json::to_value(&*pod).unwrap();
        merge(&mut object, patch);
        *pod = serde_json::from_value(object).unwrap();
    }
    Snapshot {
        clients: snapshot.clients.clone(),
        held: snapshot.held.clone(),
        listing: snapshot.listing.clone(),
        ..snapshot_with(
            group,
            snapshot.topics.clone(),
            snapshot.workload.clone(),
            pods.into_values().collect(),
        )
    }
}

fn condition<'a>(status: &'a ConsumerGroupStatus, type_: &str) -> &'a Condition {
    conditions::find(&status.conditions, type_)
        .unwrap_or_else(|| panic!("no condition {type_} in {status:#?}"))
}

/// Everything of a decision, for comparing two.
fn parts(d: &Decision) -> impl PartialEq + std::fmt::Debug {
    (
        d.status.clone(),
        d.write_status,
        d.pod_patches.clone(),
        d.events.clone(),
        d.moved,
        d.outcome.clone(),
    )
}

fn assigned(status: &ConsumerGroupStatus) -> Vec<(String, String)> {
    status
        .allocation
        .assignments
        .iter()
        .map(|a| (a.consumer.clone(), consumers::annotation_value(a)))
        .collect()
}

fn queues(ids: &str) -> String {
    format!(r#"[{{"topic":"orders","broker":"broker-a","queueIds":"{ids}"}}]"#)
}

/// Two consumers over 8 queues, converged at `at(0)`.
fn converged() -> Snapshot {
    let first = snapshot(group(json!({})), vec![orders(8)], vec![pod("a"), pod("b")]);
    let decision = decide(&first, at(0), BUDGETS);
    assert_eq!(decision.outcome, Outcome::Planned);
    assert_eq!(decision.pod_patches.len(), 2);
    applied(&first, &decision)
}

#[test]
fn a_first_decision_annotates_every_consumer_and_reports_the_rebalance() {
    let s = snapshot(group(json!({})), vec![orders(8)], vec![pod("a"), pod("b")]);
    let d = decide(&s, at(0), BUDGETS);
    assert_eq!(
        d.pod_patches,
        [
            (
                "a".to_string(),
                consumers::member_patch(GROUP, &queues("0-3"))
            ),
            (
                "b".to_string(),
                consumers::member_patch(GROUP, &queues("4-7"))
            ),
        ]
    );
    assert!(d.write_status);
    assert_eq!(d.moved, Some(0));
    assert_eq!(d.status.observed_generation, Some(1));
    assert_eq!(d.status.desired_replicas, Some(2));
    assert_eq!(d.status.max_useful_replicas, Some(8));
    assert_eq!(d.status.last_rebalance_time, Some(Time(at(0))));
    assert_eq!(
        d.events,
        [EventSpec {
            regarding: Regarding::Group,
            warning: false,
            reason: "Rebalanced".into(),
            note: "2 consumers, 8 queues, 0 moved".into(),
        }]
    );
}

#[test]
fn observed_generation_follows_the_generation_when_nothing_else_changes() {
    let before = converged();
    let mut group = (*before.group).clone();
    group.metadata.generation = Some(2);
    let s = Snapshot {
        group: Arc::new(group),
        ..before.clone()
    };
    let d = decide(&s, at(60), BUDGETS);
    let previous = before.group.status.as_ref().unwrap();
    assert_eq!(d.outcome, Outcome::Planned);
    assert!(d.write_status, "a new generation must be reported");
    assert_eq!(d.status.observed_generation, Some(2));
    assert!(
        d.status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(2))
    );
    // Nothing else moves.
    assert_eq!(d.status.allocation, previous.allocation);
    assert_eq!(d.status.last_rebalance_time, previous.last_rebalance_time);
    for (now, was) in d.status.conditions.iter().zip(&previous.conditions) {
        assert_eq!(now.last_transition_time, was.last_transition_time);
    }
    assert!(d.pod_patches.is_empty());
    assert!(d.events.is_empty());
    assert_eq!(d.moved, None);
}

#[test]
fn consistent_hash_leaving_a_consumer_without_queues_is_idle() {
    let g = group(json!({"strategy": "ConsistentHash", "consistentHash": {"virtualNodes": 1}}));
    // 16 queues for 4 consumers: enough for all, but one point each on the ring leaves one out.
    let pods = ["a", "b", "c", "d"].map(pod).to_vec();
    let d = decide(&snapshot(g, vec![orders(16)], pods), at(0), BUDGETS);
    let idle = &d.status.allocation.idle_consumers;
    assert!(!idle.is_empty(), "the ring gives everyone a queue: {d:#?}");
    let c = condition(&d.status, IDLE);
    assert_eq!(c.status, "True");
    assert_eq!(c.reason, "ConsumersWithoutQueues");
    assert_eq!(
        c.message,
        format!(
            "{} of 4 consumers own no queue under strategy ConsistentHash: {}",
            idle.len(),
            idle.join(", ")
        )
    );
    // Warned about on the group and on the workload.
    let warnings: Vec<(Regarding, &str, &str)> = d
        .events
        .iter()
        .filter(|e| e.warning)
        .map(|e| (e.regarding, e.reason.as_str(), e.note.as_str()))
        .collect();
    assert_eq!(
        warnings,
        [
            (Regarding::Group, IDLE, c.message.as_str()),
            (Regarding::Workload, IDLE, c.message.as_str())
        ]
    );
}

#[test]
fn by_config_leaving_a_pod_out_is_idle() {
    let g = group(json!({
        "strategy": "ByConfig",
        "byConfig": {"a": [{"topic": "orders", "broker": "broker-a", "queueIds": "0-7"}]},
        "consumers": {"selector": {"matchLabels": {"app": "consumer"}}}
    }));
    let s = snapshot_with(
        g,
        Ok(vec![orders(8)]),
        Ok(workload(None)),
        vec![pod("a"), pod("b")],
    );
    let d = decide(&s, at(0), BUDGETS);
    assert_eq!(d.outcome, Outcome::Planned);
    assert_eq!(d.status.allocation.idle_consumers, ["b"]);
    let c = condition(&d.status, IDLE);
    assert_eq!(c.status, "True");
    assert_eq!(c.reason, "ConsumersWithoutQueues");
    assert_eq!(
        c.message,
        "1 of 2 consumers own no queue under strategy ByConfig: b"
    );
    // A selector has no workload to warn: the group only.
    let warnings: Vec<Regarding> = d
        .events
        .iter()
        .filter(|e| e.warning)
        .map(|e| e.regarding)
        .collect();
    assert_eq!(warnings, [Regarding::Group]);
    // b is a member owning nothing: labelled, with an empty list.
    assert_eq!(
        d.pod_patches[1],
        ("b".to_string(), consumers::member_patch(GROUP, "[]"))
    );
}

#[test]
fn broadcasting_has_no_idle_consumers_and_no_useful_limit() {
    let g = group(json!({"messageModel": "Broadcasting"}));
    let pods: Vec<Pod> = (0..10).map(|i| pod(&format!("c{i}"))).collect();
    let s = snapshot_with(g, Ok(vec![orders(4)]), Ok(workload(Some(10))), pods);
    let d = decide(&s, at(0), BUDGETS);
    let c = condition(&d.status, IDLE);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "Broadcasting")
    );
    assert_eq!(d.status.max_useful_replicas, None);
    assert!(d.events.iter().all(|e| !e.warning), "{:#?}", d.events);
}

#[test]
fn a_workload_scaled_to_zero_wants_zero_replicas() {
    let s = snapshot_with(
        group(json!({})),
        Ok(vec![orders(8)]),
        Ok(workload(Some(0))),
        Vec::new(),
    );
    let d = decide(&s, at(0), BUDGETS);
    assert_eq!(d.outcome, Outcome::Planned);
    assert_eq!(d.status.desired_replicas, Some(0));
    assert_eq!(d.status.allocation.consumers, 0);
    assert_eq!(d.status.allocation.queues, 8);
    assert_eq!(condition(&d.status, IDLE).status, "False");
    // Said in Ready, without a Warning (scaled to zero on purpose) and without a Normal
    // Rebalanced Event for nobody.
    let ready = condition(&d.status, READY);
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
    assert!(d.events.is_empty(), "{:?}", d.events);
    assert!(d.pod_patches.is_empty());
}

#[test]
fn an_empty_group_says_so_and_an_unsynced_topic_is_not_zero_queues() {
    // No pod Ready yet, workload wants 2: a Warning, not a Normal Rebalanced.
    let s = snapshot_with(
        group(json!({})),
        Ok(vec![orders(8)]),
        Ok(workload(Some(2))),
        Vec::new(),
    );
    let d = decide(&s, at(0), BUDGETS);
    assert_eq!(condition(&d.status, READY).reason, "NoConsumers");
    assert_eq!(
        d.events
            .iter()
            .map(|e| (e.warning, e.reason.as_str()))
            .collect::<Vec<_>>(),
        [(true, "NoConsumers")]
    );
    // A Topic with nameServers that never synced and no spec.brokers.
    let unsynced: Topic = serde_json::from_value(json!({
        "apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": "orders", "namespace": NS},
        "spec": {"nameServers": ["ns:9876"]}
    }))
    .unwrap();
    let s = snapshot_with(
        group(json!({})),
        Ok(vec![Arc::new(unsynced)]),
        Ok(workload(Some(2))),
        Vec::new(),
    );
    let d = decide(&s, at(0), BUDGETS);
    assert_eq!(d.outcome, Outcome::Failed("TopicNotSynced"));
    assert_eq!(condition(&d.status, READY).reason, "TopicNotSynced");
}

#[test]
fn idle_agrees_everywhere_when_the_workload_wants_more_replicas_than_are_ready() {
    // 10 replicas wanted, 3 Ready, 8 queues: IdleConsumers=True, and status.idle (the IDLE
    // column and the metric) says the 2 the replicas will leave without a queue.
    let pods: Vec<Pod> = (0..3).map(|i| pod(&format!("c-{i}"))).collect();
    let s = snapshot_with(
        group(json!({})),
        Ok(vec![orders(8)]),
        Ok(workload(Some(10))),
        pods,
    );
    let d = decide(&s, at(0), BUDGETS);
    assert_eq!(condition(&d.status, IDLE).status, "True");
    assert_eq!(d.status.allocation.idle, 2);
}

#[test]
fn max_useful_replicas_is_the_fewest_readable_queues_of_a_topic() {
    let topics = vec![
        // 8 readable: the write-only broker's queues are nobody's to read.
        topic(
            "orders",
            &[
                ("broker-a", 4, "ReadWrite"),
                ("broker-b", 4, "ReadOnly"),
                ("broker-c", 16, "WriteOnly"),
            ],
        ),
        topic("payments", &[("broker-a", 3, "ReadWrite")]),
    ];
    let g = group(json!({"topics": ["orders", "payments"]}));
    let d = decide(&snapshot(g, topics.clone(), vec![pod("a")]), at(0), BUDGETS);
    assert_eq!(d.outcome, Outcome::Planned);
    assert_eq!(d.status.max_useful_replicas, Some(3));
    assert_eq!(d.status.allocation.queues, 11);

    let g = group(json!({"topics": ["orders", "payments"], "messageModel": "Broadcasting"}));
    let d = decide(&snapshot(g, topics, vec![pod("a")]), at(0), BUDGETS);
    assert_eq!(d.status.max_useful_replicas, None);
}

#[test]
fn a_failure_keeps_the_assignment_and_warns_once() {
    let before = converged();
    let previous = before.group.status.clone().unwrap();
    // The topic is gone, and a new pod came: neither is acted on.
    let mut pods: Vec<Pod> = before.pods.iter().map(|p| (**p).clone()).collect();
    pods.push(pod("c"));
    let s = snapshot_with(
        (*before.group).clone(),
        Err(TopicProblem::NotFound("orders".into())),
        before.workload.clone(),
        pods,
    );
    let d = decide(&s, at(60), BUDGETS);
    assert_eq!(d.outcome, Outcome::Failed("TopicNotFound"));
    assert!(d.pod_patches.is_empty(), "{:#?}", d.pod_patches);
    assert!(d.write_status);
    assert_eq!(d.moved, None);
    assert_eq!(d.status.allocation, previous.allocation);
    assert_eq!(d.status.last_rebalance_time, previous.last_rebalance_time);
    assert_eq!(d.status.desired_replicas, previous.desired_replicas);
    let ready = condition(&d.status, READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "TopicNotFound")
    );
    assert_eq!(ready.last_transition_time, Time(at(60)));
    assert_eq!(
        condition(&d.status, IDLE),
        condition(&previous, IDLE),
        "the other conditions stay"
    );
    assert_eq!(
        d.events,
        [EventSpec {
            regarding: Regarding::Group,
            warning: true,
            reason: "TopicNotFound".into(),
            note: "spec.topics: topic orders not found".into(),
        }]
    );

    // The same failure again, later: nothing to write, nothing to report.
    let again = applied(&s, &d);
    let d2 = decide(&again, at(120), BUDGETS);
    assert_eq!(d2.outcome, Outcome::Failed("TopicNotFound"));
    assert!(!d2.write_status, "{:#?}", d2.status);
    assert_eq!(d2.status, d.status);
    assert!(d2.events.is_empty());
    assert!(d2.pod_patches.is_empty());
}

#[test]
fn a_failing_group_switched_to_a_selector_drops_the_workloads_desired_replicas() {
    let before = converged();
    assert_eq!(
        before.group.status.as_ref().unwrap().desired_replicas,
        Some(2)
    );
    let mut switched = (*before.group).clone();
    switched.spec =
        group(json!({"consumers": {"selector": {"matchLabels": {"app": "consumer"}}}})).spec;
    let selector = Workload {
        desired_replicas: None,
        ..workload(None)
    };
    let pods: Vec<Pod> = before.pods.iter().map(|p| (**p).clone()).collect();
    // Every failure path that runs before or after the workload is known.
    let failing = [
        snapshot_with(
            switched.clone(),
            Err(TopicProblem::NotFound("orders".into())),
            Ok(selector.clone()),
            pods.clone(),
        ),
        snapshot_with(
            switched.clone(),
            Ok(vec![orders(8)]),
            Err(WorkloadProblem::WorkloadNotFound("x".into())),
            pods.clone(),
        ),
    ];
    for s in failing {
        let d = decide(&s, at(60), BUDGETS);
        assert!(matches!(d.outcome, Outcome::Failed(_)), "{:?}", d.outcome);
        assert_eq!(d.status.desired_replicas, None, "{:?}", d.outcome);
        assert!(d.write_status);
    }
    // An invalid spec without a workload, too (the selector is valid: no topics is not).
    let mut invalid = switched.clone();
    invalid.spec.topics.clear();
    let s = snapshot_with(
        invalid,
        Ok(vec![orders(8)]),
        Ok(selector.clone()),
        pods.clone(),
    );
    let d = decide(&s, at(60), BUDGETS);
    assert_eq!(d.outcome, Outcome::Failed("InvalidSpec"));
    assert_eq!(d.status.desired_replicas, None);
    // Still with a workload, an unknown count keeps the last one read.
    let s = snapshot_with(
        (*before.group).clone(),
        Err(TopicProblem::NotFound("orders".into())),
        Err(WorkloadProblem::WorkloadNotFound("x".into())),
        pods,
    );
    assert_eq!(decide(&s, at(60), BUDGETS).status.desired_replicas, Some(2));
}

#[test]
fn a_missing_workload_is_workload_not_found() {
    let before = converged();
    let s = snapshot_with(
        (*before.group).clone(),
        before.topics.clone(),
        Err(WorkloadProblem::WorkloadNotFound(
            "Deployment consumer".into(),
        )),
        before.labelled.iter().map(|p| (**p).clone()).collect(),
    );
    let d = decide(&s, at(60), BUDGETS);
    assert_eq!(d.outcome, Outcome::Failed("WorkloadNotFound"));
    let ready = condition(&d.status, READY);
    assert_eq!(
        (
            ready.status.as_str(),
            ready.reason.as_str(),
            ready.message.as_str()
        ),
        ("False", "WorkloadNotFound", "Deployment consumer not found")
    );
    // Its members are not taken for leavers: the assignment stays, annotations too.
    assert!(d.pod_patches.is_empty(), "{:#?}", d.pod_patches);
    assert_eq!(
        d.status.allocation,
        before.group.status.as_ref().unwrap().allocation
    );
    assert_eq!(d.events.len(), 1);
    assert!(d.events[0].warning);
    assert_eq!(d.events[0].reason, "WorkloadNotFound");
}

#[test]
fn a_terminating_pod_gets_no_patch() {
    let before = converged();
    let terminating = |mut p: Pod| {
        p.metadata.deletion_timestamp = Some(Time(at(30)));
        p
    };
    let mut pods: Vec<Pod> = before.pods.iter().map(|p| (**p).clone()).collect();
    // b is going away while still Ready and labelled.
    pods[1] = terminating(pods[1].clone());
    // A terminating pod labelled for the group, out of the selector.
    pods.push(terminating(pod_of("z", "retired", true, Some("[]"))));
    let s = snapshot_with(
        (*before.group).clone(),
        before.topics.clone(),
        before.workload.clone(),
        pods,
    );
    let d = decide(&s, at(60), BUDGETS);
    let patched: Vec<&str> = d.pod_patches.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(patched, ["a"], "{:#?}", d.pod_patches);
    assert_eq!(
        assigned(&d.status),
        [("a".to_string(), queues("0-7"))],
        "a terminating pod is no consumer"
    );
}

#[test]
fn a_pod_joins_only_as_the_cache_saw_it() {
    // Two consumers of the group, and a free pod `c` the cache saw at resourceVersion 7: its
    // patch carries that version (409 if another group labelled it since); the members' do not.
    let before = converged();
    let mut pods: Vec<Pod> = before.pods.iter().map(|p| (**p).clone()).collect();
    let mut free = pod("c");
    free.metadata.resource_version = Some("7".into());
    pods.push(free);
    for p in &mut pods[..2] {
        p.metadata.resource_version = Some("5".into());
    }
    let s = snapshot_with(
        (*before.group).clone(),
        before.topics.clone(),
        before.workload.clone(),
        pods,
    );
    let d = decide(&s, at(60), BUDGETS);
    let patches: BTreeMap<String, Value> = d.pod_patches.into_iter().collect();
    assert_eq!(patches["c"]["metadata"]["resourceVersion"], json!("7"));
    assert_eq!(
        patches["c"]["metadata"]["labels"][GROUP_LABEL],
        json!(GROUP)
    );
    for member in ["a", "b"] {
        assert!(
            patches[member]["metadata"].get("resourceVersion").is_none(),
            "{member}: {}",
            patches[member]
        );
    }
}

#[test]
fn a_labelled_pod_no_longer_selected_leaves() {
    let before = converged();
    let mut pods: Vec<Pod> = before.pods.iter().map(|p| (**p).clone()).collect();
    pods[1].labels_mut().insert("app".into(), "retired".into());
    let s = snapshot_with(
        (*before.group).clone(),
        before.topics.clone(),
        before.workload.clone(),
        pods,
    );
    assert_eq!(s.pods.len(), 1);
    assert_eq!(s.labelled.len(), 2);
    let d = decide(&s, at(60), BUDGETS);
    assert_eq!(
        d.pod_patches,
        [
            (
                "a".to_string(),
                consumers::member_patch(GROUP, &queues("0-7"))
            ),
            ("b".to_string(), consumers::leaver_patch()),
        ]
    );
    assert_eq!(d.moved, Some(4));
}

#[test]
fn the_same_inputs_give_the_same_decision_and_then_nothing_to_do() {
    let s = snapshot(
        group(json!({"strategy": "Sticky"})),
        vec![orders(8)],
        vec![pod("a"), pod("b"), pod("c")],
    );
    let first = decide(&s, at(0), BUDGETS);
    let second = decide(&s, at(0), BUDGETS);
    assert_eq!(parts(&first), parts(&second));
    assert!(first.write_status);

    let converged = applied(&s, &first);
    let d = decide(&converged, at(60), BUDGETS);
    assert!(!d.write_status, "{:#?}", d.status);
    assert_eq!(d.status, first.status);
    assert!(d.pod_patches.is_empty(), "{:#?}", d.pod_patches);
    assert!(d.events.is_empty(), "{:#?}", d.events);
    assert_eq!(d.moved, None);
    assert_eq!(d.outcome, Outcome::Planned);
}

#[test]
fn now_appears_only_in_transition_times_and_the_last_rebalance() {
    let blank = |status: &ConsumerGroupStatus| -> Value {
        let mut v = serde_json::to_value(status).unwrap();
        v.as_object_mut().unwrap().remove("lastRebalanceTime");
        for c in v["conditions"].as_array_mut().unwrap() {
            c.as_object_mut().unwrap().remove("lastTransitionTime");
        }
        v
    };
    let stamp = |t: Timestamp| serde_json::to_value(Time(t)).unwrap();
    // A fresh group (every condition new), then a failure (one condition changes).
    let fresh = snapshot(group(json!({})), vec![orders(8)], vec![pod("a"), pod("b")]);
    let failing = Snapshot {
        topics: Err(TopicProblem::NotFound("orders".into())),
        ..converged()
    };
    for s in [fresh, failing] {
        let (t1, t2) = (at(1_000), at(2_000));
        let (d1, d2) = (decide(&s, t1, BUDGETS), decide(&s, t2, BUDGETS));
        assert_eq!(blank(&d1.status), blank(&d2.status));
        assert_eq!(d1.pod_patches, d2.pod_patches);
        assert_eq!(d1.events, d2.events);
        assert_eq!((d1.write_status, d1.moved), (d2.write_status, d2.moved));
        for (d, t) in [(&d1, t1), (&d2, t2)] {
            let text = serde_json::to_string(&blank(&d.status)).unwrap();
            let when = stamp(t);
            assert!(!text.contains(when.as_str().unwrap()), "{text}");
            let events = format!("{:?}{:?}", d.events, d.pod_patches);
            assert!(!events.contains(when.as_str().unwrap()), "{events}");
            // Where it does appear, it is this reconcile's time or an earlier one.
            let status = serde_json::to_value(&d.status).unwrap();
            let times = status["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| &c["lastTransitionTime"])
                .chain([&status["lastRebalanceTime"]]);
            assert!(times.clone().any(|v| *v == when), "{status:#}");
            assert!(
                times.into_iter().all(|v| *v == when || *v == stamp(at(0))),
                "{status:#}"
            );
        }
    }
}

#[test]
fn truncated_status_with_an_oversized_annotation_converges() {
    // Neither the status nor b's annotation can hold b's queues (0-5 fits in 57 bytes, 6-10
    // does not): the annotations are the assignment in force, and b's are not there.
    let budgets = Budgets {
        status: 300,
        annotation: 57,
        ..BUDGETS
    };
    let s = snapshot(group(json!({})), vec![orders(11)], vec![pod("a"), pod("b")]);
    let first = decide(&s, at(0), budgets);
    assert!(first.status.assignments_truncated);
    assert_eq!(
        first.pod_patches,
        [
            (
                "a".to_string(),
                consumers::member_patch(GROUP, &queues("0-5"))
            ),
            ("b".to_string(), consumers::oversized_patch(GROUP)),
        ]
    );
    assert_eq!(
        condition(&first.status, ANNOTATIONS_TRUNCATED).status,
        "True"
    );

    let converged = applied(&s, &first);
    let d = decide(&converged, at(60), budgets);
    assert!(d.pod_patches.is_empty(), "{:#?}", d.pod_patches);
    assert!(
        d.events.is_empty(),
        "re-reported as a rebalance: {:#?}",
        d.events
    );
    assert_eq!(d.moved, None);
    assert!(!d.write_status, "{:#?}", d.status);

    // A change elsewhere is still a rebalance.
    let mut pods: Vec<Pod> = converged.pods.iter().map(|p| (**p).clone()).collect();
    pods.push(pod("c"));
    let s = snapshot_with(
        (*converged.group).clone(),
        converged.topics.clone(),
        converged.workload.clone(),
        pods,
    );
    let d = decide(&s, at(120), budgets);
    assert!(d.write_status);
    assert_eq!(d.status.last_rebalance_time, Some(Time(at(120))));
    assert!(d.events.iter().any(|e| e.reason == "Rebalanced"));
}

// consumerIds: Client

/// A Ready consumer pod with IP `ip`.
fn pod_at(name: &str, ip: &str) -> Pod {
    let mut pod = pod(name);
    pod.status.as_mut().unwrap().pod_ip = Some(ip.into());
    pod
}

/// A Client group over `orders(queues)` with pods `a` (10.0.0.1) and `b` (10.0.0.2), and the
/// broker reporting `clients`.
fn client_snapshot(queues: u32, clients: &[&str]) -> Snapshot {
    Snapshot {
        clients: Some(Ok(clients.iter().map(|c| c.to_string()).collect())),
        ..snapshot(
            group(json!({"consumerIds": "Client"})),
            vec![orders(queues)],
            vec![pod_at("a", "10.0.0.1"), pod_at("b", "10.0.0.2")],
        )
    }
}

#[test]
fn clients_are_the_consumers_and_each_is_reported_with_its_pod() {
    let s = client_snapshot(8, &["10.0.0.2@1#77", "10.0.0.1@1#99"]);
    let d = decide(&s, at(0), BUDGETS);
    assert_eq!(d.outcome, Outcome::Planned);
    // Allocated among the client ids in Java order, exactly what each client computes.
    let a = &d.status.allocation.assignments;
    assert_eq!(
        assigned(&d.status),
        [
            ("10.0.0.1@1#99".to_string(), queues("0-3")),
            ("10.0.0.2@1#77".to_string(), queues("4-7")),
        ]
    );
    assert_eq!(a[0].pod.as_deref(), Some("a"));
    assert_eq!(a[1].pod.as_deref(), Some("b"));
    // Each pod is told the queues of the client it runs.
    assert_eq!(
        d.pod_patches,
        [
            (
                "a".to_string(),
                consumers::member_patch(GROUP, &queues("0-3"))
            ),
            (
                "b".to_string(),
                consumers::member_patch(GROUP, &queues("4-7"))
            ),
        ]
    );
    let c = condition(&d.status, CLIENTS_MISMATCH);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ClientsMatchPods")
    );
    assert!(d.status.clients_without_pod.is_empty() && d.status.pods_without_client.is_empty());
    // Applied, the same world decides nothing new.
    let again = decide(&applied(&s, &d), at(30), BUDGETS);
    assert!(!again.write_status, "{:#?}", again.status);
    assert!(again.pod_patches.is_empty() && again.events.is_empty());
}

#[test]
fn clients_without_a_pod_and_pods_without_a_client_raise_clients_mismatch_once() {
    let s = client_snapshot(8, &["10.0.0.1@x", "192.168.0.5@elsewhere"]);
    let d = decide(&s, at(0), BUDGETS);
    assert_eq!(d.status.clients_without_pod, ["192.168.0.5@elsewhere"]);
    assert_eq!(d.status.pods_without_client, ["b"]);
    let c = condition(&d.status, CLIENTS_MISMATCH);
    assert_eq!(c.status, "True");
    assert!(
        c.message.contains("192.168.0.5@elsewhere") && c.message.contains("b"),
        "{}",
        c.message
    );
    let warning = d
        .events
        .iter()
        .find(|e| e.reason == CLIENTS_MISMATCH)
        .expect("a ClientsMismatch Event");
    assert!(warning.warning);
    // The client outside the group's pods still owns queues: that is what the clients compute.
    let outside = d
        .status
        .allocation
        .assignments
        .iter()
        .find(|a| a.consumer == "192.168.0.5@elsewhere")
        .unwrap();
    assert_eq!(outside.pod, None);
    assert!(!outside.queues.is_empty());
    // Pod b runs no client: it is not told any queues.
    assert!(d.pod_patches.iter().all(|(name, _)| name == "a"));
    let again = decide(&applied(&s, &d), at(30), BUDGETS);
    assert!(!again.write_status && again.events.is_empty());
}

#[test]
fn idle_consumers_counts_the_clients_not_the_replicas() {
    // Two replicas, two queues, three clients (one pod runs two): one client is idle.
    let s = client_snapshot(2, &["10.0.0.1@a", "10.0.0.1@b", "10.0.0.2@c"]);
    let d = decide(&s, at(0), BUDGETS);
    assert_eq!(d.status.allocation.idle_consumers, ["10.0.0.2@c"]);
    let c = condition(&d.status, IDLE);
    assert_eq!(c.status, "True");
    assert!(c.message.contains("3 consumers"), "{}", c.message);
    assert_eq!(d.clients.as_ref().map(|m| m.matches()), Some(true));
}

#[test]
fn unreadable_clients_keep_the_last_assignment() {
    let first = client_snapshot(8, &["10.0.0.1@x"]);
    let d = decide(&first, at(0), BUDGETS);
    let converged = applied(&first, &d);
    let broken = Snapshot {
        clients: Some(Err(super::super::fetch::ClientsProblem::BrokerUnreachable(
            "connection refused".into(),
        ))),
        ..converged.clone()
    };
    let d2 = decide(&broken, at(30), BUDGETS);
    assert_eq!(d2.outcome, Outcome::Failed("BrokerUnreachable"));
    assert!(d2.pod_patches.is_empty());
    assert_eq!(
        d2.status.allocation,
        converged.group.status.as_ref().unwrap().allocation
    );
    let ready = condition(&d2.status, READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "BrokerUnreachable")
    );
    assert!(
        d2.events
            .iter()
            .any(|e| e.warning && e.reason == "BrokerUnreachable")
    );
}

#[test]
fn back_to_pod_consumers_clears_clients_mismatch() {
    let first = client_snapshot(8, &["192.168.0.5@elsewhere"]);
    let d = decide(&first, at(0), BUDGETS);
    assert_eq!(condition(&d.status, CLIENTS_MISMATCH).status, "True");
    let converged = applied(&first, &d);
    let mut group = (*converged.group).clone();
    group.spec.consumer_ids = crate::api::ConsumerIds::Pod;
    let pods = Snapshot {
        group: Arc::new(group),
        clients: None,
        ..converged
    };
    let d2 = decide(&pods, at(30), BUDGETS);
    let c = condition(&d2.status, CLIENTS_MISMATCH);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "PodConsumers")
    );
    assert!(d2.status.clients_without_pod.is_empty());
    assert_eq!(d2.status.allocation.assignments.len(), 2);
    assert!(
        d2.status
            .allocation
            .assignments
            .iter()
            .all(|a| a.pod.is_none())
    );
}

/// `client_snapshot` where each client answers that it holds `held` (queue ids of `orders` on
/// broker-a), plus a queue of its retry topic.
fn holding(mut s: Snapshot, held: &[(&str, &[u32])]) -> Snapshot {
    s.held = held
        .iter()
        .map(|(client, ids)| {
            let mut queues: std::collections::BTreeSet<_> = ids
                .iter()
                .map(|id| ("orders".to_string(), "broker-a".to_string(), *id))
                .collect();
            queues.insert(("%RETRY%cg".to_string(), "broker-a".to_string(), 0));
            (client.to_string(), Held::Answered(queues))
        })
        .collect();
    s
}

#[test]
fn clients_holding_their_computed_queues_do_not_diverge() {
    let s = holding(
        client_snapshot(4, &["10.0.0.1@a", "10.0.0.2@b"]),
        &[("10.0.0.1@a", &[0, 1]), ("10.0.0.2@b", &[2, 3])],
    );
    let d = decide(&s, at(0), BUDGETS);
    let c = condition(&d.status, CLIENTS_DIVERGE);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ClientsHoldTheirQueues")
    );
    assert!(
        c.message.starts_with("all 2 clients answered"),
        "{}",
        c.message
    );
}

#[test]
fn clients_that_keep_other_queues_diverge_after_the_grace_only() {
    // Averagely computes a: 0-1, b: 2-3; the clients run round robin (a: 0,2, b: 1,3).
    let s = holding(
        client_snapshot(4, &["10.0.0.1@a", "10.0.0.2@b"]),
        &[("10.0.0.1@a", &[0, 2]), ("10.0.0.2@b", &[1, 3])],
    );
    let first = decide(&s, at(0), BUDGETS);
    let c = condition(&first.status, CLIENTS_DIVERGE);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("Unknown", "Rebalancing")
    );
    assert!(first.events.iter().all(|e| e.reason != CLIENTS_DIVERGE));
    // Still within the grace: nothing new to write.
    let s = applied(&s, &first);
    let within = decide(&s, at(59), BUDGETS);
    assert!(!within.write_status, "{:#?}", within.status.conditions);
    // The grace is over: True, once, with a Warning.
    let over = decide(&s, at(60), BUDGETS);
    let c = condition(&over.status, CLIENTS_DIVERGE);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "ClientsDiverge")
    );
    assert!(
        c.message.contains("10.0.0.1@a, 10.0.0.2@b"),
        "{}",
        c.message
    );
    let warning = over
        .events
        .iter()
        .find(|e| e.reason == CLIENTS_DIVERGE)
        .expect("a ClientsDiverge Warning");
    assert!(warning.warning);
    let s = applied(&s, &over);
    let later = decide(&s, at(90), BUDGETS);
    assert!(!later.write_status && later.events.is_empty());
    // The clients catch up (or the spec is fixed): False again.
    let s = holding(s, &[("10.0.0.1@a", &[0, 1]), ("10.0.0.2@b", &[2, 3])]);
    let fixed = decide(&s, at(120), BUDGETS);
    assert_eq!(condition(&fixed.status, CLIENTS_DIVERGE).status, "False");
}

#[test]
fn a_client_that_does_not_answer_makes_it_unknown_never_false() {
    let mut s = holding(
        client_snapshot(4, &["10.0.0.1@a", "10.0.0.2@b"]),
        &[("10.0.0.1@a", &[0, 1])],
    );
    s.held
        .insert("10.0.0.2@b".into(), Held::NoAnswer("timed out".into()));
    let d = decide(&s, at(0), BUDGETS);
    let c = condition(&d.status, CLIENTS_DIVERGE);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("Unknown", "ClientsNotAnswering")
    );
    assert!(
        c.message
            .contains("1 of 2 clients answered and hold the queues computed for them; 1 did not answer GET_CONSUMER_RUNNING_INFO: 10.0.0.2@b"),
        "{}",
        c.message
    );
    assert_eq!((d.diverging, d.unverified), (Some(0), Some(1)));
}

#[test]
fn clients_nobody_asked_are_named_with_why_and_zero_answers_is_no_all_clear() {
    let mut s = client_snapshot(4, &["10.0.0.1@a", "10.0.0.2@b"]);
    s.held.insert(
        "10.0.0.1@a".into(),
        Held::NotAsked(NotAsked::Language("GO".into())),
    );
    s.held.insert(
        "10.0.0.2@b".into(),
        Held::NotAsked(NotAsked::BackingOff {
            retry_in: 40,
            last_error: "timeout".into(),
        }),
    );
    let d = decide(&s, at(0), BUDGETS);
    let c = condition(&d.status, CLIENTS_DIVERGE);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("Unknown", "ClientsNotAsked")
    );
    assert!(
        c.message.starts_with("0 of 2 clients answered"),
        "{}",
        c.message
    );
    assert!(
        c.message.contains(
            "1 not asked (language \"GO\" is not in --client-probe-languages): 10.0.0.1@a"
        ) && c
            .message
            .contains("1 not asked (did not answer before, asked again in 40s): 10.0.0.2@b"),
        "{}",
        c.message
    );
    assert_eq!(d.unverified, Some(2));
    // Switched off: its own reason.
    for client in ["10.0.0.1@a", "10.0.0.2@b"] {
        s.held
            .insert(client.into(), Held::NotAsked(NotAsked::ProbeOff));
    }
    let off = decide(&s, at(0), BUDGETS);
    let c = condition(&off.status, CLIENTS_DIVERGE);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("Unknown", "ProbeDisabled")
    );
}

#[test]
fn silence_does_not_count_towards_the_grace_and_mixed_groups_name_both() {
    let mut s = client_snapshot(4, &["10.0.0.1@a", "10.0.0.2@b"]);
    for client in ["10.0.0.1@a", "10.0.0.2@b"] {
        s.held
            .insert(client.into(), Held::NoAnswer("timed out".into()));
    }
    let silent = decide(&s, at(0), BUDGETS);
    assert_eq!(
        condition(&silent.status, CLIENTS_DIVERGE).reason,
        "ClientsNotAnswering"
    );
    // 100 s later, a answers with other queues, b still silent: a difference seen for the first
    // time is Rebalancing, whatever the condition said before.
    let mut s = applied(&s, &silent);
    s = holding(s, &[("10.0.0.1@a", &[0, 2])]);
    s.held
        .insert("10.0.0.2@b".into(), Held::NoAnswer("timed out".into()));
    let mixed = decide(&s, at(100), BUDGETS);
    let c = condition(&mixed.status, CLIENTS_DIVERGE);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("Unknown", "Rebalancing")
    );
    assert!(
        c.message
            .contains(": 10.0.0.1@a; 1 did not answer GET_CONSUMER_RUNNING_INFO: 10.0.0.2@b"),
        "{}",
        c.message
    );
    assert_eq!((mixed.diverging, mixed.unverified), (Some(1), Some(1)));
}

#[test]
fn no_client_connected_is_said_with_a_warning_not_rebalanced() {
    let s = Snapshot {
        listing: Some(Listing {
            brokers: 2,
            ..Listing::default()
        }),
        ..client_snapshot(8, &[])
    };
    let d = decide(&s, at(0), BUDGETS);
    assert_eq!(d.outcome, Outcome::Planned);
    let ready = condition(&d.status, READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "NoClientsConnected")
    );
    assert!(
        ready.message.contains("none of the 2 brokers"),
        "{}",
        ready.message
    );
    assert!(
        d.events.iter().all(|e| e.reason != "Rebalanced"),
        "{:?}",
        d.events
    );
    assert!(
        d.events
            .iter()
            .any(|e| e.warning && e.reason == "NoClientsConnected")
    );
    assert_eq!(
        condition(&d.status, CLIENTS_DIVERGE).reason,
        "NoClientsConnected"
    );
    // Once said, not said again.
    let again = decide(&applied(&s, &d), at(30), BUDGETS);
    assert!(
        !again.write_status && again.events.is_empty(),
        "{:?}",
        again.events
    );
}

#[test]
fn brokers_that_disagree_or_do_not_answer_are_visible_in_ready() {
    let s = Snapshot {
        listing: Some(Listing {
            brokers: 3,
            unreachable: vec!["127.0.0.1:3: connection refused".into()],
            partial: vec!["10.0.0.2@b".into()],
        }),
        ..client_snapshot(8, &["10.0.0.1@a", "10.0.0.2@b"])
    };
    let d = decide(&s, at(0), BUDGETS);
    let ready = condition(&d.status, READY);
    assert_eq!(ready.status, "True");
    assert_eq!(d.status.allocation.consumers, 2);
    assert!(
        ready.message.contains(
            "clients read from 2 of 3 brokers (unreachable: 127.0.0.1:3: connection refused)"
        ) && ready
            .message
            .contains("1 clients listed by some brokers only (counted): 10.0.0.2@b"),
        "{}",
        ready.message
    );
}

#[test]
fn a_name_too_long_for_a_label_value_is_an_invalid_spec_not_silent_422s() {
    let mut s = client_snapshot(4, &["10.0.0.1@a"]);
    let mut group = (*s.group).clone();
    group.metadata.name = Some("g".repeat(64));
    s.group = Arc::new(group);
    let d = decide(&s, at(0), BUDGETS);
    assert_eq!(d.outcome, Outcome::Failed("InvalidSpec"));
    assert!(d.pod_patches.is_empty());
    let ready = condition(&d.status, READY);
    assert!(
        ready
            .message
            .contains("metadata.name: 64 characters: at most 63"),
        "{}",
        ready.message
    );
}

#[test]
fn pods_another_group_labelled_are_left_to_it_and_named_once() {
    // Three selected pods; c-2 already belongs to group "other" (same namespace).
    let mut theirs = pod("c-2");
    theirs
        .metadata
        .labels
        .get_or_insert_default()
        .insert(GROUP_LABEL.into(), "other".into());
    let s = snapshot_with(
        group(json!({})),
        Ok(vec![orders(8)]),
        Ok(workload(Some(3))),
        vec![pod("c-0"), pod("c-1"), theirs],
    );
    let d = decide(&s, at(0), BUDGETS);
    assert_eq!(d.outcome, Outcome::Planned);
    assert_eq!(d.status.allocation.consumers, 2);
    assert!(
        d.pod_patches.iter().all(|(name, _)| name != "c-2"),
        "{:?}",
        d.pod_patches
    );
    let c = condition(&d.status, PODS_CONTESTED);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "PodsOfAnotherGroup")
    );
    assert!(c.message.ends_with(": c-2 (other)"), "{}", c.message);
    assert!(
        d.events
            .iter()
            .any(|e| e.warning && e.reason == PODS_CONTESTED)
    );
    // Applied: nothing more to write, no second Warning: a bounded number of writes.
    let again = decide(&applied(&s, &d), at(30), BUDGETS);
    assert!(!again.write_status && again.pod_patches.is_empty() && again.events.is_empty());
}
