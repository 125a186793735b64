//! The CRDs' validation as the real API server (kube-apiserver 1.26, envtest) runs it: every CEL
//! rule of `crds/*.yaml` must reject the objects it is written against (HTTP 422 with the rule's
//! message) and accept every valid form of every strategy, and the structural schema must reject
//! what the README promises (enums, ranges, sizes, list uniqueness). For each case the verdict of
//! the client-side checks (`kube::core::cel::Validator`, the controller's `api::validation` and
//! serde) is compared with the server's, so that `tests/crd_schema.rs`, which only runs the
//! client side, is known to predict the server. No operator runs here.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::cel::Validator;
use kube::{Client, CustomResourceExt};
use rebalancer::api::validation::{validate_group, validate_topic};
use rebalancer::api::{ConsumerGroup, ConsumerGroupSpec, Topic, TopicSpec};
use serde_json::{Value, json};

use support::envtest::shared;

/// The server's answer to one create.
#[derive(Debug)]
enum Verdict {
    Accepted(Value),
    /// HTTP code, reason and message.
    Rejected(u16, String, String),
}

fn resource(kind: &str) -> ApiResource {
    match kind {
        "Topic" => ApiResource::erase::<Topic>(&()),
        "ConsumerGroup" => ApiResource::erase::<ConsumerGroup>(&()),
        other => panic!("unknown kind {other}"),
    }
}

/// Creates `kind/name` with `spec` through an untyped client (so that values serde would refuse,
/// like an unknown enum value, reach the server).
async fn create(client: &Client, ns: &str, kind: &str, name: &str, spec: &Value) -> Verdict {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rebalancer.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource(kind));
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => Verdict::Accepted(serde_json::to_value(created).unwrap()),
        Err(kube::Error::Api(s)) => Verdict::Rejected(s.code, s.reason.clone(), s.message.clone()),
        Err(e) => panic!("creating {kind} {name}: transport error {e}"),
    }
}

async fn exists(client: &Client, ns: &str, kind: &str, name: &str) -> bool {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource(kind));
    api.get_opt(name).await.expect("reading back").is_some()
}

fn schema_of(kind: &str) -> Value {
    let crd = match kind {
        "Topic" => Topic::crd(),
        _ => ConsumerGroup::crd(),
    };
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

/// What the client side says of `spec`: `Err(why)` when any of serde, the controller's
/// re-check or the client-side CEL evaluator rejects it.
fn client_verdict(kind: &str, spec: &Value) -> Result<(), String> {
    let object = json!({"apiVersion": "rebalancer.dev/v1alpha1", "kind": kind,
        "metadata": {"name": "x"}, "spec": spec});
    let cel = Validator::new().validate(&schema_of(kind), &object, None);
    let rust = match kind {
        "Topic" => serde_json::from_value::<TopicSpec>(spec.clone())
            .map_err(|e| e.to_string())
            .map(|s| validate_topic(&s)),
        _ => serde_json::from_value::<ConsumerGroupSpec>(spec.clone())
            .map_err(|e| e.to_string())
            .map(|s| validate_group(&s, true)),
    };
    match (cel, rust) {
        (Ok(()), Ok(v)) if v.is_empty() => Ok(()),
        (cel, rust) => Err(format!("cel: {cel:?}; rust: {rust:?}")),
    }
}

/// Every `x-kubernetes-validations` message of `crds/<file>`.
fn rule_messages(file: &str) -> BTreeSet<String> {
    fn walk(node: &Value, out: &mut BTreeSet<String>) {
        match node {
            Value::Object(map) => {
                if let Some(rules) = map
                    .get("x-kubernetes-validations")
                    .and_then(Value::as_array)
                {
                    for rule in rules {
                        out.insert(rule["message"].as_str().unwrap().to_string());
                    }
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crds")
        .join(file);
    let crd: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = BTreeSet::new();
    walk(&crd, &mut out);
    out
}

const DEPLOYMENT: &str = "orders-consumer";

/// A valid group spec (Averagely over `orders`, workload consumers) with `extra` merged in;
/// a `null` in `extra` removes the key.
fn group(extra: Value) -> Value {
    let mut spec = json!({
        "topics": ["orders"],
        "consumers": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT}}
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            spec.as_object_mut().unwrap().remove(k);
        } else {
            spec[k] = v.clone();
        }
    }
    spec
}

fn by_config() -> Value {
    json!({
        "orders-consumer-0": [{"topic": "orders", "broker": "broker-a", "queueIds": "0-3"}],
        "orders-consumer-1": [{"topic": "orders", "broker": "broker-b", "queueIds": "0,2-3"}]
    })
}

const CH_ONLY: &str = "consistentHash is only allowed with strategy ConsistentHash or MachineRoomNearby with innerStrategy ConsistentHash";
const MACHINE_ROOM: &str =
    "machineRoom is required with strategy ByMachineRoom and only allowed with it";
const NEARBY_ONLY: &str = "nearby is only allowed with strategy MachineRoomNearby";
const BY_CONFIG: &str = "byConfig is required with strategy ByConfig and only allowed with it";
const CONSUMERS_REQUIRED: &str = "consumers is required: set workloadRef or selector";
const EXACTLY_ONE: &str = "exactly one of workloadRef or selector must be set";
const STICKY_CLIENT: &str = "strategy Sticky is computed by rebalancer, not by RocketMQ clients: it cannot describe what clients do with consumerIds Client";
const NAME_63: &str = "metadata.name: at most 63 characters: the group's name is the value of its pods' rebalancer.dev/group label";
const BROKERS_REQUIRED: &str = "brokers is required unless nameServers is set";
const SYNC_ONLY: &str = "sync is only allowed with nameServers";

/// Topic objects each Topic CEL rule must reject: (case, spec, messages the server must name).
fn topic_cel_rejections() -> Vec<(&'static str, Value, Vec<&'static str>)> {
    vec![
        (
            "topic-brokers-missing",
            json!({"topicName": "orders"}),
            vec![BROKERS_REQUIRED],
        ),
        (
            "topic-brokers-null",
            json!({"brokers": null}),
            vec![BROKERS_REQUIRED],
        ),
        (
            "topic-sync-without-name-servers",
            json!({"sync": "Observe", "brokers": [{"name": "a", "readQueues": 1, "writeQueues": 1}]}),
            vec![SYNC_ONLY],
        ),
        (
            "topic-sync-alone",
            json!({"sync": "Observe"}),
            vec![BROKERS_REQUIRED, SYNC_ONLY],
        ),
        (
            "topic-manage-without-brokers",
            json!({"nameServers": ["ns:9876"], "sync": "Manage"}),
            vec!["sync Manage requires brokers or brokerCluster"],
        ),
        (
            "topic-manage-read-below-write",
            json!({"nameServers": ["ns:9876"], "sync": "Manage",
                   "brokers": [{"name": "a", "readQueues": 2, "writeQueues": 4}]}),
            vec![
                "with sync Manage every broker needs readQueues >= writeQueues and a readable permission if writable (UnsafeQueueCounts)",
            ],
        ),
        (
            "topic-manage-write-only",
            json!({"nameServers": ["ns:9876"], "sync": "Manage",
                   "brokers": [{"name": "a", "readQueues": 4, "writeQueues": 4, "permission": "WriteOnly"}]}),
            vec![
                "with sync Manage every broker needs readQueues >= writeQueues and a readable permission if writable (UnsafeQueueCounts)",
            ],
        ),
        (
            "topic-cluster-read-below-write",
            json!({"nameServers": ["ns:9876"], "sync": "Manage",
                   "brokerCluster": {"name": "c", "readQueues": 2, "writeQueues": 4}}),
            vec![
                "brokerCluster needs readQueues >= writeQueues and a readable permission if writable (UnsafeQueueCounts)",
            ],
        ),
        (
            "topic-cluster-with-observe",
            json!({"nameServers": ["ns:9876"], "drainTimeoutSeconds": 5, "drainQuietSeconds": 5,
                   "brokerCluster": {"name": "c", "readQueues": 4, "writeQueues": 4}}),
            vec![
                "brokerCluster is only allowed with sync Manage",
                "drainTimeoutSeconds is only allowed with sync Manage",
                "drainQuietSeconds is only allowed with sync Manage",
            ],
        ),
        (
            "topic-cluster-and-brokers",
            json!({"nameServers": ["ns:9876"], "sync": "Manage",
                   "brokers": [{"name": "a", "readQueues": 4, "writeQueues": 4}],
                   "brokerCluster": {"name": "c", "readQueues": 4, "writeQueues": 4}}),
            vec!["brokers and brokerCluster are mutually exclusive"],
        ),
    ]
}

/// Objects each CEL rule must reject: (case, spec, messages the server must name).
fn cel_rejections() -> Vec<(&'static str, Value, Vec<&'static str>)> {
    let workload = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT});
    let selector = json!({"matchLabels": {"app": DEPLOYMENT}});
    vec![
        (
            "ch-with-averagely",
            group(json!({"strategy": "Averagely", "consistentHash": {"virtualNodes": 5}})),
            vec![CH_ONLY],
        ),
        (
            "ch-with-default-strategy",
            group(json!({"consistentHash": {}})),
            vec![CH_ONLY],
        ),
        (
            "ch-with-sticky",
            group(json!({"strategy": "Sticky", "consistentHash": {"virtualNodes": 5}})),
            vec![CH_ONLY],
        ),
        (
            "ch-with-nearby-inner-averagely",
            group(
                json!({"strategy": "MachineRoomNearby", "nearby": {"innerStrategy": "Averagely"},
                "consistentHash": {"virtualNodes": 5}}),
            ),
            vec![CH_ONLY],
        ),
        (
            "ch-with-nearby-defaulted-inner",
            group(json!({"strategy": "MachineRoomNearby", "nearby": {},
                "consistentHash": {"virtualNodes": 5}})),
            vec![CH_ONLY],
        ),
        (
            "ch-with-nearby-without-block",
            group(json!({"strategy": "MachineRoomNearby", "consistentHash": {"virtualNodes": 5}})),
            vec![CH_ONLY],
        ),
        (
            "machineroom-missing",
            group(json!({"strategy": "ByMachineRoom"})),
            vec![MACHINE_ROOM],
        ),
        (
            "machineroom-with-averagely",
            group(json!({"strategy": "Averagely", "machineRoom": {"consumeZones": ["az1"]}})),
            vec![MACHINE_ROOM],
        ),
        (
            "machineroom-with-nearby",
            group(
                json!({"strategy": "MachineRoomNearby", "machineRoom": {"consumeZones": ["az1"]}}),
            ),
            vec![MACHINE_ROOM],
        ),
        (
            "nearby-with-averagely",
            group(json!({"strategy": "Averagely", "nearby": {"innerStrategy": "Averagely"}})),
            vec![NEARBY_ONLY],
        ),
        (
            "nearby-with-consistenthash",
            group(
                json!({"strategy": "ConsistentHash", "nearby": {"innerStrategy": "ConsistentHash"}}),
            ),
            vec![NEARBY_ONLY],
        ),
        (
            "byconfig-missing",
            group(json!({"strategy": "ByConfig"})),
            vec![BY_CONFIG],
        ),
        (
            "byconfig-with-sticky",
            group(json!({"strategy": "Sticky", "byConfig": by_config()})),
            vec![BY_CONFIG],
        ),
        (
            "byconfig-with-default-strategy",
            group(json!({"byConfig": by_config()})),
            vec![BY_CONFIG],
        ),
        (
            "consumers-missing",
            group(json!({"consumers": null})),
            vec![CONSUMERS_REQUIRED],
        ),
        (
            "consumers-both",
            group(json!({"consumers": {"workloadRef": workload, "selector": selector}})),
            vec![EXACTLY_ONE],
        ),
        (
            "consumers-neither",
            group(json!({"consumers": {}})),
            vec![EXACTLY_ONE],
        ),
        (
            "sticky-with-client-ids",
            group(json!({"strategy": "Sticky", "consumerIds": "Client"})),
            vec![STICKY_CLIENT],
        ),
        (
            "every-rule-at-once",
            group(json!({"strategy": "ByMachineRoom", "consistentHash": {},
                "nearby": {}, "byConfig": by_config(), "consumers": null})),
            vec![
                CH_ONLY,
                MACHINE_ROOM,
                NEARBY_ONLY,
                BY_CONFIG,
                CONSUMERS_REQUIRED,
            ],
        ),
    ]
}

#[tokio::test]
async fn every_cel_rule_rejects_its_violations() {
    let Some(server) = shared("cel-rejections").await else {
        return;
    };
    let client = server.admin().await.expect("admin client");
    let ns = server.namespace(&client, "cel-rejections").await;

    // The table covers every rule of the CRDs: a new rule fails here until it has a case.
    let mut rules = rule_messages("consumergroups.rebalancer.dev.yaml");
    rules.extend(rule_messages("topics.rebalancer.dev.yaml"));
    // The one rule on metadata, not the spec: proven in envtest_hostile.rs.
    assert!(rules.remove(NAME_63), "{rules:?}");
    let cases: Vec<(&str, &str, Value, Vec<&str>)> = cel_rejections()
        .into_iter()
        .map(|(case, spec, m)| ("ConsumerGroup", case, spec, m))
        .chain(
            topic_cel_rejections()
                .into_iter()
                .map(|(case, spec, m)| ("Topic", case, spec, m)),
        )
        .collect();
    let covered: BTreeSet<String> = cases
        .iter()
        .flat_map(|(_, _, _, m)| m.iter().map(|m| m.to_string()))
        .collect();
    assert_eq!(rules, covered, "CEL rules of crds/ vs the rejection table");
    assert_eq!(rules.len(), 16);

    let mut failures = Vec::new();
    for (kind, case, spec, messages) in &cases {
        let kind = *kind;
        match create(&client, &ns, kind, case, spec).await {
            Verdict::Rejected(422, reason, message) => {
                assert_eq!(reason, "Invalid", "{case}: {message}");
                for m in messages {
                    if !message.contains(m) {
                        failures.push(format!("{case}: message lacks {m:?}: {message}"));
                    }
                }
                // Only the rules broken are named.
                for other in rules.iter().filter(|r| !messages.contains(&r.as_str())) {
                    if message.contains(other.as_str()) {
                        failures.push(format!("{case}: also names {other:?}: {message}"));
                    }
                }
                let path = if messages == &[EXACTLY_ONE] {
                    "spec.consumers: Invalid value"
                } else if *case == "topic-cluster-read-below-write" {
                    "spec.brokerCluster: Invalid value"
                } else {
                    "spec: Invalid value"
                };
                if !message.contains(path) {
                    failures.push(format!("{case}: no {path:?} in {message}"));
                }
            }
            other => failures.push(format!("{case}: expected 422, got {other:?} for {spec}")),
        }
        if exists(&client, &ns, kind, case).await {
            failures.push(format!("{case}: the server stored a rejected object"));
        }
        // The client side (what tests/crd_schema.rs runs) must predict the rejection.
        if client_verdict(kind, spec).is_ok() {
            failures.push(format!(
                "{case}: the client-side checks accept what the server rejects: {spec}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Valid specs, one or more per strategy with its parameter block, and the defaults the server
/// must fill in: (case, spec, JSON pointer into the stored spec, expected value).
fn valid_groups() -> Vec<(&'static str, Value, &'static str, Value)> {
    vec![
        (
            "averagely",
            group(json!({"strategy": "Averagely"})),
            "/messageModel",
            json!("Clustering"),
        ),
        (
            "default-strategy",
            group(json!({})),
            "/strategy",
            json!("Averagely"),
        ),
        (
            "averagely-by-circle-selector",
            group(json!({"strategy": "AveragelyByCircle",
                "consumers": {"selector": {"matchLabels": {"app": DEPLOYMENT}}}})),
            "/consumers/selector/matchLabels/app",
            json!(DEPLOYMENT),
        ),
        (
            "selector-expressions",
            group(json!({"consumers": {"selector": {"matchExpressions": [
                {"key": "app", "operator": "In", "values": [DEPLOYMENT]}]}}})),
            "/consumers/selector/matchExpressions/0/operator",
            json!("In"),
        ),
        (
            "consistent-hash-no-block",
            group(json!({"strategy": "ConsistentHash"})),
            "/strategy",
            json!("ConsistentHash"),
        ),
        (
            "consistent-hash-defaulted-nodes",
            group(json!({"strategy": "ConsistentHash", "consistentHash": {}})),
            "/consistentHash/virtualNodes",
            json!(10),
        ),
        (
            "consistent-hash-zero-nodes",
            group(json!({"strategy": "ConsistentHash", "consistentHash": {"virtualNodes": 0}})),
            "/consistentHash/virtualNodes",
            json!(0),
        ),
        (
            "consistent-hash-max-nodes",
            group(json!({"strategy": "ConsistentHash", "consistentHash": {"virtualNodes": 1024}})),
            "/consistentHash/virtualNodes",
            json!(1024),
        ),
        (
            "by-machine-room",
            group(
                json!({"strategy": "ByMachineRoom", "machineRoom": {"consumeZones": ["az1", "az2"]}}),
            ),
            "/machineRoom/consumeZones/1",
            json!("az2"),
        ),
        (
            "by-machine-room-empty-block",
            group(json!({"strategy": "ByMachineRoom", "machineRoom": {}})),
            "/machineRoom/consumeZones",
            json!([]),
        ),
        (
            "nearby-no-block",
            group(json!({"strategy": "MachineRoomNearby"})),
            "/strategy",
            json!("MachineRoomNearby"),
        ),
        (
            "nearby-defaulted-inner",
            group(json!({"strategy": "MachineRoomNearby", "nearby": {}})),
            "/nearby/innerStrategy",
            json!("Averagely"),
        ),
        (
            "nearby-by-circle",
            group(
                json!({"strategy": "MachineRoomNearby", "nearby": {"innerStrategy": "AveragelyByCircle"}}),
            ),
            "/nearby/innerStrategy",
            json!("AveragelyByCircle"),
        ),
        (
            "nearby-hash-with-nodes",
            group(
                json!({"strategy": "MachineRoomNearby", "nearby": {"innerStrategy": "ConsistentHash"},
                "consistentHash": {"virtualNodes": 5}}),
            ),
            "/consistentHash/virtualNodes",
            json!(5),
        ),
        (
            "nearby-hash-without-nodes",
            group(
                json!({"strategy": "MachineRoomNearby", "nearby": {"innerStrategy": "ConsistentHash"}}),
            ),
            "/nearby/innerStrategy",
            json!("ConsistentHash"),
        ),
        (
            "by-config",
            group(json!({"strategy": "ByConfig", "byConfig": by_config()})),
            "/byConfig/orders-consumer-1/0/queueIds",
            json!("0,2-3"),
        ),
        (
            "by-config-empty-map",
            group(json!({"strategy": "ByConfig", "byConfig": {}})),
            "/byConfig",
            json!({}),
        ),
        (
            "sticky",
            group(json!({"strategy": "Sticky"})),
            "/strategy",
            json!("Sticky"),
        ),
        (
            "broadcasting-hash",
            group(
                json!({"messageModel": "Broadcasting", "strategy": "ConsistentHash",
                "consistentHash": {"virtualNodes": 3}}),
            ),
            "/messageModel",
            json!("Broadcasting"),
        ),
        (
            "broadcasting-by-config",
            group(
                json!({"messageModel": "Broadcasting", "strategy": "ByConfig", "byConfig": by_config()}),
            ),
            "/strategy",
            json!("ByConfig"),
        ),
        (
            "client-ids-with-group-name",
            group(
                json!({"consumerIds": "Client", "groupName": "please_rename_unique_group_name_4",
                "strategy": "AveragelyByCircle"}),
            ),
            "/groupName",
            json!("please_rename_unique_group_name_4"),
        ),
        (
            "consumer-ids-default",
            group(json!({})),
            "/consumerIds",
            json!("Pod"),
        ),
        (
            "max-topics",
            group(json!({"topics": (0..32).map(|i| format!("t{i}")).collect::<Vec<_>>()})),
            "/topics/31",
            json!("t31"),
        ),
    ]
}

#[tokio::test]
async fn every_strategy_has_valid_forms_the_server_accepts() {
    let Some(server) = shared("cel-accepts").await else {
        return;
    };
    let client = server.admin().await.expect("admin client");
    let ns = server.namespace(&client, "cel-accepts").await;
    let cases = valid_groups();
    // Every strategy and both message models appear.
    for strategy in [
        "Averagely",
        "AveragelyByCircle",
        "ConsistentHash",
        "ByMachineRoom",
        "MachineRoomNearby",
        "ByConfig",
        "Sticky",
    ] {
        assert!(
            cases.iter().any(|(_, s, _, _)| s["strategy"] == strategy),
            "no valid case for {strategy}"
        );
    }
    let mut failures = Vec::new();
    for (case, spec, pointer, expected) in &cases {
        match create(&client, &ns, "ConsumerGroup", case, spec).await {
            Verdict::Accepted(stored) => {
                let held = stored["spec"].pointer(pointer);
                if held != Some(expected) {
                    failures.push(format!(
                        "{case}: spec{pointer} is {held:?}, expected {expected}"
                    ));
                }
                // What the server stored (defaults filled in) is what the controller accepts.
                let parsed: ConsumerGroup = serde_json::from_value(stored.clone())
                    .unwrap_or_else(|e| panic!("{case}: stored object does not parse: {e}"));
                let violations = validate_group(&parsed.spec, true);
                if !violations.is_empty() {
                    failures.push(format!("{case}: controller rejects it: {violations:?}"));
                }
                if let Err(e) = client_verdict("ConsumerGroup", spec) {
                    failures.push(format!("{case}: client side rejects it: {e}"));
                }
            }
            Verdict::Rejected(code, _, message) => {
                failures.push(format!("{case}: rejected ({code}): {message}"))
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let api: Api<ConsumerGroup> = Api::namespaced(client.clone(), &ns);
    let stored = api.list(&Default::default()).await.unwrap().items;
    assert_eq!(stored.len(), cases.len());
}

/// CEL rules also guard updates: a patch that breaks one is refused and leaves the object as
/// it was; a patch that keeps every rule goes through.
#[tokio::test]
async fn cel_rules_guard_updates() {
    let Some(server) = shared("cel-updates").await else {
        return;
    };
    let client = server.admin().await.expect("admin client");
    let ns = server.namespace(&client, "cel-updates").await;
    let Verdict::Accepted(created) =
        create(&client, &ns, "ConsumerGroup", "g", &group(json!({}))).await
    else {
        panic!("the base group is valid");
    };
    let version = created["metadata"]["resourceVersion"].clone();
    let api: Api<ConsumerGroup> = Api::namespaced(client.clone(), &ns);
    let patch = |body: Value| {
        let api = api.clone();
        async move {
            api.patch("g", &PatchParams::default(), &Patch::Merge(body))
                .await
        }
    };
    for (body, message) in [
        (json!({"spec": {"strategy": "ByMachineRoom"}}), MACHINE_ROOM),
        (json!({"spec": {"strategy": "ByConfig"}}), BY_CONFIG),
        (
            json!({"spec": {"consistentHash": {"virtualNodes": 3}}}),
            CH_ONLY,
        ),
        (json!({"spec": {"consumers": null}}), CONSUMERS_REQUIRED),
        (
            json!({"spec": {"consumers": {"selector": {"matchLabels": {"a": "b"}}}}}),
            EXACTLY_ONE,
        ),
    ] {
        match patch(body.clone()).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{body}: {}", s.message);
                assert!(s.message.contains(message), "{body}: {}", s.message);
            }
            other => panic!("{body}: expected 422, got {other:?}"),
        }
    }
    let held = api.get("g").await.unwrap();
    assert_eq!(
        serde_json::to_value(&held.metadata.resource_version).unwrap(),
        version,
        "a refused update changed the object"
    );
    assert_eq!(held.metadata.generation, Some(1));

    // Strategy and its block together: accepted, generation moves on.
    let moved = patch(
        json!({"spec": {"strategy": "ByMachineRoom", "machineRoom": {"consumeZones": ["az1"]}}}),
    )
    .await
    .expect("a valid update");
    assert_eq!(moved.metadata.generation, Some(2));
    assert_eq!(
        moved.spec.machine_room.unwrap().consume_zones,
        vec!["az1".to_string()]
    );
    // Leaving ByMachineRoom needs the block removed in the same update.
    match patch(json!({"spec": {"strategy": "Sticky"}})).await {
        Err(kube::Error::Api(s)) => assert!(s.message.contains(MACHINE_ROOM), "{}", s.message),
        other => panic!("expected 422, got {other:?}"),
    }
    let back = patch(json!({"spec": {"strategy": "Sticky", "machineRoom": null}}))
        .await
        .expect("a valid update");
    assert!(back.spec.machine_room.is_none());
    assert_eq!(back.metadata.generation, Some(3));
}

/// Structural-schema rejections (no CEL): (kind, case, spec, fragments the message must hold).
/// `client_checks` is false where only the server enforces the rule: the client side must then
/// accept it (so that a new client-side check shows up here), and the cases are printed.
struct SchemaCase {
    kind: &'static str,
    case: &'static str,
    spec: Value,
    fragments: Vec<&'static str>,
    client_checks: bool,
}

fn schema_case(
    kind: &'static str,
    case: &'static str,
    spec: Value,
    fragments: &[&'static str],
    client_checks: bool,
) -> SchemaCase {
    SchemaCase {
        kind,
        case,
        spec,
        fragments: fragments.to_vec(),
        client_checks,
    }
}

fn topic(brokers: Value) -> Value {
    json!({"brokers": brokers})
}

fn schema_rejections() -> Vec<SchemaCase> {
    let broker =
        |name: &str, read: Value| json!({"name": name, "readQueues": read, "writeQueues": 4});
    let g = "ConsumerGroup";
    let t = "Topic";
    vec![
        // Enums.
        schema_case(
            g,
            "enum-strategy",
            group(json!({"strategy": "RoundRobin"})),
            &["spec.strategy", "Unsupported value: \"RoundRobin\""],
            true,
        ),
        schema_case(
            g,
            "enum-model",
            group(json!({"messageModel": "Cluster"})),
            &["spec.messageModel", "Unsupported value: \"Cluster\""],
            true,
        ),
        schema_case(
            g,
            "enum-inner",
            group(json!({"strategy": "MachineRoomNearby", "nearby": {"innerStrategy": "Sticky"}})),
            &["spec.nearby.innerStrategy", "Unsupported value: \"Sticky\""],
            true,
        ),
        schema_case(
            t,
            "enum-permission",
            topic(json!([{"name": "a", "readQueues": 1, "writeQueues": 1, "permission": "Write"}])),
            &["spec.brokers[0].permission", "Unsupported value: \"Write\""],
            true,
        ),
        // Ranges.
        schema_case(
            g,
            "range-nodes-high",
            group(json!({"strategy": "ConsistentHash", "consistentHash": {"virtualNodes": 1025}})),
            &[
                "spec.consistentHash.virtualNodes",
                "less than or equal to 1024",
            ],
            true,
        ),
        schema_case(
            g,
            "range-nodes-negative",
            group(json!({"strategy": "ConsistentHash", "consistentHash": {"virtualNodes": -1}})),
            &[
                "spec.consistentHash.virtualNodes",
                "greater than or equal to 0",
            ],
            true,
        ),
        schema_case(
            t,
            "range-read-high",
            topic(json!([broker("a", json!(4097))])),
            &["spec.brokers[0].readQueues", "less than or equal to 4096"],
            true,
        ),
        schema_case(
            t,
            "range-read-negative",
            topic(json!([broker("a", json!(-1))])),
            &["spec.brokers[0].readQueues", "greater than or equal to 0"],
            true,
        ),
        schema_case(
            t,
            "range-write-high",
            topic(json!([{"name": "a", "readQueues": 1, "writeQueues": 5000}])),
            &["spec.brokers[0].writeQueues", "less than or equal to 4096"],
            true,
        ),
        // Sizes.
        schema_case(
            g,
            "min-topics",
            group(json!({"topics": []})),
            &["spec.topics", "at least 1 items"],
            true,
        ),
        schema_case(
            g,
            "max-topics",
            group(json!({"topics": (0..33).map(|i| format!("t{i}")).collect::<Vec<_>>()})),
            &["spec.topics", "must have at most 32 items"],
            true,
        ),
        schema_case(
            g,
            "empty-topic-name",
            group(json!({"topics": [""]})),
            &["spec.topics[0]", "at least 1 chars long"],
            true,
        ),
        schema_case(
            g,
            "max-zones",
            group(json!({"strategy": "ByMachineRoom",
                "machineRoom": {"consumeZones": (0..257).map(|i| format!("z{i}")).collect::<Vec<_>>()}})),
            &[
                "spec.machineRoom.consumeZones",
                "must have at most 256 items",
            ],
            false,
        ),
        schema_case(
            t,
            "min-brokers",
            topic(json!([])),
            &["spec.brokers", "at least 1 items"],
            true,
        ),
        schema_case(
            t,
            "empty-broker-name",
            topic(json!([broker("", json!(1))])),
            &["spec.brokers[0].name", "at least 1 chars long"],
            true,
        ),
        schema_case(
            t,
            "empty-topic-name-override",
            json!({"topicName": "", "brokers": [broker("a", json!(1))]}),
            &["spec.topicName", "at least 1 chars long"],
            true,
        ),
        schema_case(
            g,
            "empty-workload-name",
            group(
                json!({"consumers": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": ""}}}),
            ),
            &["spec.consumers.workloadRef.name", "at least 1 chars long"],
            false,
        ),
        // Required fields.
        schema_case(
            g,
            "required-topics",
            group(json!({"topics": null})),
            &["spec.topics: Required value"],
            true,
        ),
        schema_case(
            g,
            "required-workload-kind",
            group(json!({"consumers": {"workloadRef": {"apiVersion": "apps/v1", "name": "x"}}})),
            &["spec.consumers.workloadRef.kind: Required value"],
            true,
        ),
        schema_case(
            t,
            "required-read-queues",
            topic(json!([{"name": "a", "writeQueues": 1}])),
            &["spec.brokers[0].readQueues: Required value"],
            true,
        ),
        // List uniqueness.
        schema_case(
            g,
            "duplicate-topics",
            group(json!({"topics": ["orders", "payments", "orders"]})),
            &["spec.topics[2]", "Duplicate value: \"orders\""],
            true,
        ),
        schema_case(
            t,
            "duplicate-brokers",
            topic(json!([
                broker("a", json!(1)),
                broker("b", json!(1)),
                broker("a", json!(2))
            ])),
            &["spec.brokers[2]", "Duplicate value", "\"name\":\"a\""],
            true,
        ),
        // NameServers and sync.
        schema_case(
            t,
            "min-name-servers",
            json!({"nameServers": []}),
            &["spec.nameServers", "at least 1 items"],
            true,
        ),
        schema_case(
            t,
            "max-name-servers",
            json!({"nameServers": (0..17).map(|i| format!("ns-{i}:9876")).collect::<Vec<_>>()}),
            &["spec.nameServers", "must have at most 16 items"],
            true,
        ),
        schema_case(
            t,
            "duplicate-name-servers",
            json!({"nameServers": ["ns-0:9876", "ns-1:9876", "ns-0:9876"]}),
            &["spec.nameServers[2]", "Duplicate value: \"ns-0:9876\""],
            true,
        ),
        schema_case(
            t,
            "pattern-name-server-no-port",
            json!({"nameServers": ["namesrv"]}),
            &["spec.nameServers[0]", "should match"],
            true,
        ),
        schema_case(
            t,
            "pattern-name-server-list-in-one",
            json!({"nameServers": ["ns-0:9876;ns-1:9876"]}),
            &["spec.nameServers[0]", "should match"],
            true,
        ),
        schema_case(
            t,
            "pattern-name-server-url",
            json!({"nameServers": ["http://ns:9876"]}),
            &["spec.nameServers[0]", "should match"],
            true,
        ),
        schema_case(
            t,
            "enum-sync-unknown",
            json!({"nameServers": ["ns:9876"], "sync": "Mirror"}),
            &["spec.sync", "Unsupported value: \"Mirror\""],
            true,
        ),
        // Patterns.
        schema_case(
            g,
            "pattern-queue-ids",
            group(json!({"strategy": "ByConfig",
                "byConfig": {"c-0": [{"topic": "orders", "broker": "a", "queueIds": "0-3,x"}]}})),
            &["queueIds", "should match"],
            true,
        ),
        schema_case(
            t,
            "pattern-topic-name",
            json!({"topicName": "orders v2", "brokers": [broker("a", json!(1))]}),
            &["spec.topicName", "should match"],
            false,
        ),
    ]
}

#[tokio::test]
async fn structural_schema_rejects_what_the_readme_promises() {
    let Some(server) = shared("cel-schema").await else {
        return;
    };
    let client = server.admin().await.expect("admin client");
    let ns = server.namespace(&client, "cel-schema").await;
    let mut failures = Vec::new();
    let mut server_only = Vec::new();
    for c in schema_rejections() {
        match create(&client, &ns, c.kind, c.case, &c.spec).await {
            Verdict::Rejected(422, reason, message) => {
                assert_eq!(reason, "Invalid", "{}: {message}", c.case);
                for f in &c.fragments {
                    if !message.contains(f) {
                        failures.push(format!("{}: message lacks {f:?}: {message}", c.case));
                    }
                }
            }
            other => failures.push(format!("{}: expected 422, got {other:?}", c.case)),
        }
        if exists(&client, &ns, c.kind, c.case).await {
            failures.push(format!("{}: the server stored a rejected object", c.case));
        }
        let client_rejects = client_verdict(c.kind, &c.spec).is_err();
        if c.client_checks && !client_rejects {
            failures.push(format!(
                "{}: the client side accepts what the server rejects: {}",
                c.case, c.spec
            ));
        }
        if !c.client_checks {
            assert!(
                !client_rejects,
                "{}: the client side now checks this: set client_checks",
                c.case
            );
            server_only.push(c.case);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!(
        "rules only the API server enforces (the controller does not re-check them): {server_only:?}"
    );

    // The edges of every range are accepted.
    let edges = topic(json!([
        {"name": "a", "readQueues": 0, "writeQueues": 4096, "permission": "ReadWrite"},
        {"name": "b", "readQueues": 4096, "writeQueues": 0, "permission": "ReadOnly"},
        {"name": "room1@c", "readQueues": 1, "writeQueues": 1, "permission": "WriteOnly"},
        {"name": "d", "readQueues": 1, "writeQueues": 1, "permission": "Deny", "zone": "az1"}
    ]));
    let mut edges_named = edges.clone();
    edges_named["topicName"] = json!("%RETRY%Orders_V2|x-1");
    for (name, spec) in [("edges", edges), ("edges-named", edges_named)] {
        match create(&client, &ns, "Topic", name, &spec).await {
            Verdict::Accepted(stored) => {
                let parsed: Topic = serde_json::from_value(stored).unwrap();
                assert!(validate_topic(&parsed.spec).is_empty(), "{name}");
                assert_eq!(parsed.spec.brokers().len(), 4);
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(client_verdict("Topic", &spec).is_ok(), "{name}");
    }
    // A defaulted permission is stored.
    let Verdict::Accepted(stored) = create(
        &client,
        &ns,
        "Topic",
        "defaults",
        &topic(json!([{"name": "a", "readQueues": 1, "writeQueues": 1}])),
    )
    .await
    else {
        panic!("defaults topic rejected");
    };
    assert_eq!(stored["spec"]["brokers"][0]["permission"], "ReadWrite");

    // NameServers instead of brokers, with every address form; sync is not defaulted (the
    // operator reads an absent sync as Observe).
    for (name, spec) in [
        (
            "observed",
            json!({"nameServers": ["namesrv-0.rocketmq.svc.cluster.local:9876", "10.0.0.2:9876", "[fd00::2]:9876"]}),
        ),
        (
            "observed-with-brokers",
            json!({"nameServers": ["ns:9876"], "sync": "Observe", "brokers": [{"name": "a", "readQueues": 1, "writeQueues": 1}]}),
        ),
    ] {
        match create(&client, &ns, "Topic", name, &spec).await {
            Verdict::Accepted(stored) => {
                assert_eq!(stored["spec"]["sync"], spec["sync"], "{name}");
                let parsed: Topic = serde_json::from_value(stored).unwrap();
                assert!(validate_topic(&parsed.spec).is_empty(), "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(client_verdict("Topic", &spec).is_ok(), "{name}");
    }
}

/// `null` for a nullable block: serde (and so the controller and `plan`) reads it as absent, and
/// the API server's CEL `has()` must agree, or an object the controller finds valid is refused
/// (and the reverse). The client-side CEL evaluator of `tests/crd_schema.rs` (kube-cel) is *not*
/// asserted here: it treats a present `null` as set, unlike kube-apiserver; the test prints its
/// verdicts.
#[tokio::test]
async fn null_blocks_mean_absent_to_server_and_controller() {
    let Some(server) = shared("cel-nulls").await else {
        return;
    };
    let client = server.admin().await.expect("admin client");
    let ns = server.namespace(&client, "cel-nulls").await;
    let workload = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT});
    // (case, spec, key set to null, accepted?)
    let cases = [
        (
            "null-machineroom-averagely",
            group(json!({"strategy": "Averagely"})),
            "machineRoom",
            true,
        ),
        (
            "null-machineroom-bymachineroom",
            group(json!({"strategy": "ByMachineRoom"})),
            "machineRoom",
            false,
        ),
        (
            "null-consistenthash-averagely",
            group(json!({"strategy": "Averagely"})),
            "consistentHash",
            true,
        ),
        (
            "null-consistenthash-hash",
            group(json!({"strategy": "ConsistentHash"})),
            "consistentHash",
            true,
        ),
        (
            "null-nearby-averagely",
            group(json!({"strategy": "Averagely"})),
            "nearby",
            true,
        ),
        (
            "null-byconfig-sticky",
            group(json!({"strategy": "Sticky"})),
            "byConfig",
            true,
        ),
        (
            "null-byconfig-byconfig",
            group(json!({"strategy": "ByConfig"})),
            "byConfig",
            false,
        ),
        ("null-consumers", group(json!({})), "consumers", false),
    ];
    let mut failures = Vec::new();
    let mut kube_cel = Vec::new();
    for (case, mut spec, key, accepted) in cases {
        spec[key] = Value::Null;
        let verdict = create(&client, &ns, "ConsumerGroup", case, &spec).await;
        let rust_ok = serde_json::from_value::<ConsumerGroupSpec>(spec.clone())
            .is_ok_and(|s| validate_group(&s, true).is_empty());
        match (&verdict, accepted) {
            (Verdict::Accepted(stored), true) => {
                // The explicit null is kept (the field is nullable) and still parses as absent.
                assert_eq!(stored["spec"][key], Value::Null, "{case}");
                let parsed: ConsumerGroup = serde_json::from_value(stored.clone()).unwrap();
                assert!(validate_group(&parsed.spec, true).is_empty(), "{case}");
            }
            (Verdict::Rejected(422, _, message), false) => {
                let rule = match key {
                    "machineRoom" => MACHINE_ROOM,
                    "byConfig" => BY_CONFIG,
                    _ => CONSUMERS_REQUIRED,
                };
                assert!(message.contains(rule), "{case}: {message}");
            }
            _ => failures.push(format!(
                "{case}: expected accepted={accepted}, got {verdict:?}"
            )),
        }
        if rust_ok != accepted {
            failures.push(format!(
                "{case}: the controller says valid={rust_ok}, the server {accepted}"
            ));
        }
        let object = json!({"apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
            "metadata": {"name": case}, "spec": spec});
        let cel_ok = Validator::new()
            .validate(&schema_of("ConsumerGroup"), &object, None)
            .is_ok();
        if cel_ok != accepted {
            kube_cel.push(case);
        }
    }
    // A null selector next to a workloadRef is no selector.
    let mut spec = group(json!({}));
    spec["consumers"] = json!({"workloadRef": workload, "selector": null});
    assert!(matches!(
        create(&client, &ns, "ConsumerGroup", "null-selector", &spec).await,
        Verdict::Accepted(_)
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("client-side kube-cel disagrees with kube-apiserver on: {kube_cel:?}");
}
