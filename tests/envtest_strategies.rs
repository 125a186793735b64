//! Every strategy once on the real operator (envtest: real kube-apiserver, the real `rebalancer`
//! binary under the chart's RBAC), with the group's status compared to what
//! `rebalancer plan -o json` prints for the same Topic and ConsumerGroup files and the same
//! consumers: the README promises that `plan -o json` "prints exactly the allocation part of
//! this status".
//!
//! Compared: every field of the status except the five that are not part of the allocation and
//! that `plan` cannot know: `observedGeneration`, `desiredReplicas`, `lastRebalanceTime`,
//! `conditions` and `assignmentsTruncated`. Everything else (`consumers`, `queues`, `idle`,
//! `assignments`, `idleConsumers`, `unassignedQueues`, `movedQueues`, `warnings`, `producers`)
//! must be equal, key for key. Each consumer pod's `rebalancer.dev/queues` annotation must hold
//! its own queues from that same output.
//!
//! The pods exist and are Ready before the group is created, so the operator's first allocation
//! sees every consumer (no history): that is `plan` without `--previous`. The Sticky test then
//! adds a consumer and compares with `plan --previous <the status before>`.

mod support;

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use rebalancer::api::ConsumerGroup;
use serde_json::{Value, json};

use support::fixtures::{Env, QUEUES_ANNOTATION, condition_is, group_of};

/// Node label the operator reads a consumer's zone from.
const NODE_ZONE: &str = "topology.kubernetes.io/zone";
/// Pod label that overrides the node's zone.
const POD_ZONE: &str = "rebalancer.dev/zone";
/// The group's name; its pods carry `app: <GROUP>`.
const GROUP: &str = "orders-consumer";

/// Keys of the status that are not the allocation.
const NOT_ALLOCATION: [&str; 6] = [
    "observedGeneration",
    "desiredReplicas",
    "maxUsefulReplicas",
    "lastRebalanceTime",
    "conditions",
    "assignmentsTruncated",
];

/// Topic `orders` (RocketMQ name `Orders_V2`, part of the consistent-hash key): uneven brokers,
/// one read-only, one write-only (no readable queue), one writing more than it reads; zones set
/// explicitly.
fn orders() -> Value {
    json!({
        "apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": "orders"},
        "spec": {
            "topicName": "Orders_V2",
            "brokers": [
                {"name": "broker-a", "readQueues": 4, "writeQueues": 4, "zone": "az1"},
                {"name": "broker-b", "readQueues": 3, "writeQueues": 6, "zone": "az2"},
                {"name": "broker-c", "readQueues": 2, "writeQueues": 2, "permission": "ReadOnly", "zone": "az3"},
                {"name": "broker-d", "readQueues": 2, "writeQueues": 2, "permission": "WriteOnly", "zone": "az1"}
            ]
        }
    })
}

/// Topic `payments`: one broker whose zone comes from its `room@broker` name.
fn payments() -> Value {
    json!({
        "apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": "payments"},
        "spec": {
            "brokers": [
                {"name": "az1@broker-x", "readQueues": 3, "writeQueues": 3},
                {"name": "broker-y", "readQueues": 2, "writeQueues": 2, "zone": "az2"}
            ]
        }
    })
}

/// A consumer pod: name, the zone of the node it runs on, and a `rebalancer.dev/zone` label.
#[derive(Clone, Copy)]
struct Consumer {
    name: &'static str,
    node_zone: Option<&'static str>,
    zone_label: Option<&'static str>,
}

impl Consumer {
    const fn plain(name: &'static str) -> Consumer {
        Consumer {
            name,
            node_zone: None,
            zone_label: None,
        }
    }

    /// The zone the operator must resolve: the label, else the node's.
    fn zone(&self) -> Option<&'static str> {
        self.zone_label.or(self.node_zone)
    }

    /// `--consumers` entry: `ID` or `ID=ZONE`.
    fn arg(&self) -> String {
        match self.zone() {
            Some(z) => format!("{}={z}", self.name),
            None => self.name.to_string(),
        }
    }
}

/// Three consumers without zones, named so that Java order differs from numeric order.
const PLAIN: [Consumer; 3] = [
    Consumer::plain("orders-consumer-2"),
    Consumer::plain("orders-consumer-10"),
    Consumer::plain("orders-consumer-1"),
];

/// Node name of `zone` in this test (nodes are cluster-scoped: prefixed by the namespace).
fn node_name(env: &Env, zone: &str) -> String {
    format!("{}-{zone}", env.ns)
}

/// Creates the consumer pods (on their zone's node when they have one; nodes are created as
/// needed) and marks them Ready.
async fn consumer_pods(env: &Env, consumers: &[Consumer]) {
    let nodes: Api<Node> = Api::all(env.client.clone());
    for zone in consumers.iter().filter_map(|c| c.node_zone) {
        let name = node_name(env, zone);
        if nodes.get_opt(&name).await.unwrap().is_some() {
            continue;
        }
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {NODE_ZONE: zone}}
        }))
        .unwrap();
        nodes
            .create(&PostParams::default(), &node)
            .await
            .unwrap_or_else(|e| panic!("creating node {name}: {e}"));
    }
    for c in consumers {
        let mut labels = json!({"app": GROUP});
        if let Some(z) = c.zone_label {
            labels[POD_ZONE] = json!(z);
        }
        let mut spec = json!({"containers": [{"name": "c", "image": "consumer:1"}]});
        if let Some(z) = c.node_zone {
            // No scheduler here: the pod is bound at creation.
            spec["nodeName"] = json!(node_name(env, z));
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": c.name, "labels": labels}, "spec": spec
        }))
        .unwrap();
        env.api::<Pod>()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("creating pod {}: {e}", c.name));
        env.set_ready(c.name, true).await;
    }
}

fn group_object(spec: &Value) -> Value {
    json!({
        "apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
        "metadata": {"name": GROUP}, "spec": spec
    })
}

/// Writes `objects` as one multi-document YAML file.
fn write_yaml(path: &Path, objects: &[Value]) -> String {
    let text: String = objects
        .iter()
        .map(|o| format!("---\n{}", serde_yaml::to_string(o).unwrap()))
        .collect();
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// `rebalancer plan -f topics.yaml -f group.yaml --consumers ... -o json [--previous FILE]`.
fn plan(
    dir: &Path,
    topics: &[Value],
    spec: &Value,
    consumers: &[Consumer],
    previous: Option<&Path>,
) -> Value {
    let topics_file = write_yaml(&dir.join("topics.yaml"), topics);
    let group_file = write_yaml(&dir.join("group.yaml"), &[group_object(spec)]);
    let ids: Vec<String> = consumers.iter().map(Consumer::arg).collect();
    let mut command = Command::new(support::operator::binary());
    command
        .args(["plan", "-f", &topics_file, "-f", &group_file])
        .args(["--consumers", &ids.join(",")])
        .args(["-o", "json"]);
    if let Some(p) = previous {
        command.arg("--previous").arg(p);
    }
    let output = command.output().expect("running rebalancer plan");
    assert!(
        output.status.success(),
        "plan failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("plan -o json prints JSON")
}

/// The group's status as the server holds it (raw JSON, not through the Rust types).
async fn raw_status(env: &Env) -> Value {
    let api: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &ApiResource::erase::<ConsumerGroup>(&()),
    );
    let object = api.get(GROUP).await.expect("reading the group");
    object.data["status"].clone()
}

/// The status without the keys that are not the allocation.
fn allocation_of(status: &Value) -> Value {
    let mut allocation = status.clone();
    for key in NOT_ALLOCATION {
        allocation.as_object_mut().unwrap().remove(key);
    }
    allocation
}

/// Waits until the group is Ready with `n` consumers for its current generation.
async fn wait_ready(env: &Env, n: u32) -> ConsumerGroup {
    env.wait_group(GROUP, &format!("Ready with {n} consumers"), |g| {
        condition_is(g, "Ready", "True")?;
        let s = g.status.as_ref().ok_or("no status")?;
        if s.observed_generation != g.metadata.generation {
            return Err(format!("observedGeneration {:?}", s.observed_generation));
        }
        if s.allocation.consumers != n {
            return Err(format!("{} consumers", s.allocation.consumers));
        }
        Ok(())
    })
    .await
}

/// Status allocation == plan output, key for key, and each pod's annotation holds its queues.
async fn assert_status_is_plan(env: &Env, status: &Value, planned: &Value) {
    let allocation = allocation_of(status);
    assert_eq!(
        allocation,
        *planned,
        "status allocation (left) differs from `plan -o json` (right):\nstatus: {}\nplan: {}",
        serde_json::to_string_pretty(&allocation).unwrap(),
        serde_json::to_string_pretty(planned).unwrap()
    );
    for assignment in planned["assignments"].as_array().unwrap() {
        let name = assignment["consumer"].as_str().unwrap();
        let pod = env.api::<Pod>().get(name).await.unwrap();
        assert_eq!(group_of(&pod).as_deref(), Some(GROUP), "{name}");
        let annotation = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(QUEUES_ANNOTATION))
            .unwrap_or_else(|| panic!("{name} has no queues annotation"));
        let queues: Value = serde_json::from_str(annotation).unwrap();
        assert_eq!(queues, assignment["queues"], "annotation of {name}");
    }
}

/// One strategy: topics, pods, then the group; compare with `plan`. Returns the Env and the
/// status (for follow-ups).
async fn scenario(
    test: &str,
    topics: &[Value],
    spec: Value,
    consumers: &[Consumer],
) -> Option<(Env, support::operator::Operator, Value, Value)> {
    let env = Env::new(test).await?;
    let op = env.leader("op-a").await;
    for t in topics {
        env.apply::<rebalancer::api::Topic>(t.clone()).await;
    }
    consumer_pods(&env, consumers).await;
    let mut selector = spec.clone();
    selector["consumers"] = json!({"selector": {"matchLabels": {"app": GROUP}}});
    env.group(GROUP, selector.clone()).await;
    wait_ready(&env, consumers.len() as u32).await;
    let status = raw_status(&env).await;
    let planned = plan(&env.dir, topics, &selector, consumers, None);
    assert_status_is_plan(&env, &status, &planned).await;
    // A first allocation moves nothing.
    assert_eq!(planned["movedQueues"], 0);
    assert_eq!(planned["consumers"], consumers.len());
    op.assert_clean();
    Some((env, op, status, planned))
}

#[tokio::test]
async fn averagely() {
    let Some((_, _, _, planned)) = scenario(
        "strategy-averagely",
        &[orders(), payments()],
        json!({"topics": ["orders", "payments"], "strategy": "Averagely"}),
        &PLAIN,
    )
    .await
    else {
        return;
    };
    // 9 + 5 readable queues; Java order of the consumers.
    assert_eq!(planned["queues"], 14);
    let ids: Vec<&str> = planned["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["consumer"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "orders-consumer-1",
            "orders-consumer-10",
            "orders-consumer-2"
        ]
    );
}

#[tokio::test]
async fn averagely_by_circle() {
    let Some((_, _, _, planned)) = scenario(
        "strategy-by-circle",
        &[orders(), payments()],
        json!({"topics": ["orders", "payments"], "strategy": "AveragelyByCircle"}),
        &PLAIN,
    )
    .await
    else {
        return;
    };
    assert_eq!(planned["idle"], 0);
}

#[tokio::test]
async fn consistent_hash() {
    let Some((_, _, _, planned)) = scenario(
        "strategy-consistent-hash",
        &[orders(), payments()],
        json!({"topics": ["orders", "payments"], "strategy": "ConsistentHash",
            "consistentHash": {"virtualNodes": 3}}),
        &PLAIN,
    )
    .await
    else {
        return;
    };
    assert_eq!(planned["unassignedQueues"], json!([]));
}

#[tokio::test]
async fn by_machine_room() {
    let Some((_, _, _, planned)) = scenario(
        "strategy-machine-room",
        &[orders(), payments()],
        json!({"topics": ["orders", "payments"], "strategy": "ByMachineRoom",
            "machineRoom": {"consumeZones": ["az1", "az3"]}}),
        &PLAIN,
    )
    .await
    else {
        return;
    };
    // az2's brokers are nobody's.
    let unassigned: Vec<&str> = planned["unassignedQueues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["broker"].as_str().unwrap())
        .collect();
    assert_eq!(unassigned, ["broker-b", "broker-y"], "{planned}");
}

/// Zones: `orders-consumer-1` on an az1 node, `-10` on an az2 node, `-2` on an az1 node but
/// labelled `rebalancer.dev/zone: az2`. az3 (broker-c) has no consumer: everyone shares it.
const ZONED: [Consumer; 3] = [
    Consumer {
        name: "orders-consumer-1",
        node_zone: Some("az1"),
        zone_label: None,
    },
    Consumer {
        name: "orders-consumer-10",
        node_zone: Some("az2"),
        zone_label: None,
    },
    Consumer {
        name: "orders-consumer-2",
        node_zone: Some("az1"),
        zone_label: Some("az2"),
    },
];

/// The brokers each consumer reads, from a plan output.
fn brokers_of(planned: &Value, consumer: &str) -> Vec<String> {
    planned["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["consumer"] == consumer)
        .unwrap()["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["broker"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn machine_room_nearby() {
    let Some((_, _, _, planned)) = scenario(
        "strategy-nearby",
        &[orders(), payments()],
        json!({"topics": ["orders", "payments"], "strategy": "MachineRoomNearby"}),
        &ZONED,
    )
    .await
    else {
        return;
    };
    // The label beats the node: consumer-2 is in az2, so az1's queues all go to consumer-1.
    for broker in brokers_of(&planned, "orders-consumer-2") {
        assert!(
            ["broker-b", "broker-y", "broker-c"].contains(&broker.as_str()),
            "consumer-2 (az2) got {broker}: {planned}"
        );
    }
    let one = brokers_of(&planned, "orders-consumer-1");
    for broker in ["broker-a", "az1@broker-x"] {
        assert!(one.iter().any(|b| b == broker), "{planned}");
    }
}

#[tokio::test]
async fn machine_room_nearby_consistent_hash() {
    let Some(_) = scenario(
        "strategy-nearby-hash",
        &[orders(), payments()],
        json!({"topics": ["orders", "payments"], "strategy": "MachineRoomNearby",
            "nearby": {"innerStrategy": "ConsistentHash"}, "consistentHash": {"virtualNodes": 5}}),
        &ZONED,
    )
    .await
    else {
        return;
    };
}

#[tokio::test]
async fn by_config() {
    let Some((_, _, _, planned)) = scenario(
        "strategy-by-config",
        &[orders(), payments()],
        json!({"topics": ["orders", "payments"], "strategy": "ByConfig", "byConfig": {
            "orders-consumer-1": [
                {"topic": "Orders_V2", "broker": "broker-a", "queueIds": "0-1"},
                {"topic": "payments", "broker": "az1@broker-x", "queueIds": "0-2"}
            ],
            "orders-consumer-2": [{"topic": "Orders_V2", "broker": "broker-b", "queueIds": "0,2"}],
            "orders-consumer-gone": [{"topic": "Orders_V2", "broker": "broker-c", "queueIds": "0"}]
        }}),
        &PLAIN,
    )
    .await
    else {
        return;
    };
    assert_eq!(planned["idleConsumers"], json!(["orders-consumer-10"]));
    let warnings = planned["warnings"].to_string();
    assert!(warnings.contains("orders-consumer-gone"), "{warnings}");
}

#[tokio::test]
async fn sticky_then_one_more_consumer() {
    let spec = json!({"topics": ["orders", "payments"], "strategy": "Sticky"});
    let topics = [orders(), payments()];
    let Some((env, op, status, planned)) =
        scenario("strategy-sticky", &topics, spec.clone(), &PLAIN).await
    else {
        return;
    };
    // Without history Sticky is Averagely.
    let averagely = plan(
        &env.dir,
        &topics,
        &json!({"topics": ["orders", "payments"]}),
        &PLAIN,
        None,
    );
    assert_eq!(planned["assignments"], averagely["assignments"]);

    // A fourth consumer: the operator's previous assignment is the status it wrote.
    let previous = env.dir.join("previous.json");
    std::fs::write(&previous, allocation_of(&status).to_string()).unwrap();
    let more = [
        PLAIN[0],
        PLAIN[1],
        PLAIN[2],
        Consumer::plain("orders-consumer-3"),
    ];
    consumer_pods(&env, &more[3..]).await;
    wait_ready(&env, 4).await;
    let after = raw_status(&env).await;
    let mut with_selector = spec.clone();
    with_selector["consumers"] = json!({"selector": {"matchLabels": {"app": GROUP}}});
    let replanned = plan(&env.dir, &topics, &with_selector, &more, Some(&previous));
    assert_status_is_plan(&env, &after, &replanned).await;
    // Only the newcomer's share moved: ⌊9/4⌋ + ⌊5/4⌋ = 3 queues.
    assert_eq!(replanned["movedQueues"], 3, "{replanned}");
    assert_ne!(after["lastRebalanceTime"], Value::Null);
    op.assert_clean();
}

#[tokio::test]
async fn broadcasting() {
    let Some((_, _, _, planned)) = scenario(
        "strategy-broadcasting",
        &[orders(), payments()],
        json!({"topics": ["orders", "payments"], "messageModel": "Broadcasting",
            "strategy": "ConsistentHash", "consistentHash": {"virtualNodes": 0}}),
        &PLAIN,
    )
    .await
    else {
        return;
    };
    // Every consumer reads every readable queue, whatever the strategy.
    let first = &planned["assignments"][0]["queues"];
    for a in planned["assignments"].as_array().unwrap() {
        assert_eq!(&a["queues"], first);
    }
    assert_eq!(first.as_array().unwrap().len(), 5, "{first}");
}
