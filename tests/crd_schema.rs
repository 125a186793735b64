//! The CRD schemas must be structural, and their CEL rules must compile, stay within the cost
//! budget, and agree with the controller's own re-check (`api::validation`) on every combination
//! of strategy and parameter blocks.

use kube::CustomResourceExt;
use kube::core::cel::{ScopeContext, Validator, WarningKind, analyze_rule, compile_schema};
use rebalancer::api::validation::{unsafe_queue_counts, validate_group, validate_topic};
use rebalancer::api::{ConsumerGroup, ConsumerGroupSpec, NAME_SERVER_PATTERN, Topic, TopicSpec};
use serde_json::{Value, json};

fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
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

/// Walks a schema and calls `f(path, node)` on every sub-schema.
fn walk(path: &str, node: &Value, f: &mut impl FnMut(&str, &Value)) {
    f(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(&format!("{path}.{k}"), v, f);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(v) = node.get(key).filter(|v| v.is_object()) {
            walk(&format!("{path}[{key}]"), v, f);
        }
    }
}

#[test]
fn schemas_are_structural() {
    for crd in [Topic::crd(), ConsumerGroup::crd()] {
        let schema = schema_of(&crd);
        walk("", &schema, &mut |path, node| {
            for forbidden in [
                "$ref",
                "anyOf",
                "oneOf",
                "allOf",
                "not",
                "definitions",
                "$defs",
            ] {
                assert!(
                    node.get(forbidden).is_none(),
                    "{path}: {forbidden} is not structural"
                );
            }
            let preserves = node.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
                || node.get("x-kubernetes-int-or-string") == Some(&json!(true));
            assert!(preserves || node.get("type").is_some(), "{path}: no type");
        });
        assert!(
            crd.spec.versions[0]
                .subresources
                .as_ref()
                .unwrap()
                .status
                .is_some()
        );
    }
}

#[test]
fn cel_rules_compile_in_scope_and_within_budget() {
    for crd in [Topic::crd(), ConsumerGroup::crd()] {
        let schema = schema_of(&crd);
        let compiled = compile_schema(&schema);
        assert!(
            !compiled.has_errors(),
            "{:?}",
            compiled.compilation_errors()
        );
        let mut rules = 0;
        walk("", &schema, &mut |path, node| {
            for rule in node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                rules += 1;
                let text = rule["rule"].as_str().unwrap();
                // Fields the 1.26 API server does not know would be rejected by strict validation.
                for key in rule.as_object().unwrap().keys() {
                    assert!(
                        ["rule", "message"].contains(&key.as_str()),
                        "{path}: {key} needs a newer API server"
                    );
                }
                let sub = compile_schema(node);
                for w in analyze_rule(text, &sub, ScopeContext::CrdValidation) {
                    // The analyzer does not know the variable a macro binds (`all(b, ...)`);
                    // the API server does (tests/envtest_cel.rs runs these rules there).
                    if matches!(w.kind, WarningKind::WrongScope)
                        && w.message.split('\'').nth(1).is_some_and(|v| {
                            text.contains(&format!("all({v}, "))
                                || text.contains(&format!("exists({v}, "))
                        })
                    {
                        continue;
                    }
                    assert!(
                        !matches!(w.kind, WarningKind::WrongScope | WarningKind::CostExceeded),
                        "{path}: {text}: {}",
                        w.message
                    );
                }
            }
        });
        match crd.spec.names.kind.as_str() {
            // Six on the spec, one on its consumers, one on metadata.name (the root).
            "ConsumerGroup" => assert_eq!(rules, 8),
            // Topic: eight on the spec (drainQuietSeconds' "only with sync Manage" is the
            // eighth), one on brokerCluster.
            _ => assert_eq!(rules, 9),
        }
    }
}

fn spec(extra: Value) -> Value {
    let mut spec = json!({
        "topics": ["orders"],
        "consumers": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "c"}}
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    spec
}

fn object(spec: Value) -> Value {
    json!({"apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup", "metadata": {"name": "g"}, "spec": spec})
}

#[test]
fn cel_and_the_controller_agree_on_every_combination() {
    let schema = schema_of(&ConsumerGroup::crd());
    let validator = Validator::new();
    let strategies = [
        "Averagely",
        "AveragelyByCircle",
        "ConsistentHash",
        "ByMachineRoom",
        "MachineRoomNearby",
        "ByConfig",
        "Sticky",
    ];
    let blocks = [
        ("consistentHash", json!({"virtualNodes": 5})),
        ("machineRoom", json!({"consumeZones": ["az1"]})),
        ("nearby", json!({"innerStrategy": "ConsistentHash"})),
        (
            "byConfig",
            json!({"c-0": [{"topic": "orders", "broker": "a", "queueIds": "0-3"}]}),
        ),
    ];
    let mut accepted = 0;
    for (strategy, ids) in strategies
        .iter()
        .flat_map(|s| ["Pod", "Client"].map(|ids| (s, ids)))
    {
        for mask in 0..(1 << blocks.len()) {
            let mut extra = json!({"strategy": strategy, "consumerIds": ids});
            for (i, (key, value)) in blocks.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    extra[*key] = value.clone();
                }
            }
            let value = spec(extra);
            let cel_ok = validator
                .validate(&schema, &object(value.clone()), None)
                .is_ok();
            let parsed: ConsumerGroupSpec = serde_json::from_value(value.clone()).unwrap();
            let rust_ok = validate_group(&parsed, true).is_empty();
            assert_eq!(
                cel_ok, rust_ok,
                "CEL and validate_group disagree on {value}"
            );
            accepted += usize::from(cel_ok);
        }
    }
    // Each strategy has at least one valid form (Sticky none with Client ids); most
    // combinations are invalid.
    assert!((13..80).contains(&accepted), "{accepted}");
}

#[test]
fn consumers_need_exactly_one_source() {
    let schema = schema_of(&ConsumerGroup::crd());
    let validator = Validator::new();
    let both = spec(
        json!({"consumers": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "c"}, "selector": {"matchLabels": {"a": "b"}}}}),
    );
    let neither = spec(json!({"consumers": {}}));
    let mut missing = spec(json!({}));
    missing.as_object_mut().unwrap().remove("consumers");
    let err = validator
        .validate(&schema, &object(missing.clone()), None)
        .unwrap_err();
    assert!(err.to_string().contains("consumers is required"), "{err}");
    let parsed: ConsumerGroupSpec = serde_json::from_value(missing).unwrap();
    assert!(!validate_group(&parsed, true).is_empty());
    for bad in [both, neither] {
        let err = validator
            .validate(&schema, &object(bad.clone()), None)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("exactly one of workloadRef or selector"),
            "{err}"
        );
        let parsed: ConsumerGroupSpec = serde_json::from_value(bad).unwrap();
        assert!(!validate_group(&parsed, true).is_empty());
    }
}

#[test]
fn topic_brokers_are_a_map_keyed_by_name() {
    let schema = schema_of(&Topic::crd());
    let brokers = &schema["properties"]["spec"]["properties"]["brokers"];
    assert_eq!(brokers["x-kubernetes-list-type"], "map");
    assert_eq!(brokers["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(brokers["maxItems"], json!(256));
    let read = &brokers["items"]["properties"]["readQueues"];
    assert_eq!(read["maximum"].as_f64(), Some(4096.0));
}

#[test]
fn topic_cel_and_the_controller_agree_on_brokers_name_servers_and_sync() {
    let schema = schema_of(&Topic::crd());
    let validator = Validator::new();
    let blocks = [
        (
            "brokers",
            json!([{"name": "broker-a", "readQueues": 4, "writeQueues": 4}]),
        ),
        ("nameServers", json!(["namesrv-0.mq:9876", "10.0.0.2:9876"])),
        ("sync", json!("Observe")),
    ];
    let mut accepted = Vec::new();
    for mask in 0..(1 << blocks.len()) {
        let mut spec = json!({"topicName": "Orders_V2"});
        for (i, (key, value)) in blocks.iter().enumerate() {
            if mask & (1 << i) != 0 {
                spec[*key] = value.clone();
            }
        }
        let object = json!({"apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "t"}, "spec": spec});
        let cel_ok = validator.validate(&schema, &object, None).is_ok();
        let parsed: TopicSpec = serde_json::from_value(spec.clone()).unwrap();
        let rust_ok = validate_topic(&parsed).is_empty();
        assert_eq!(cel_ok, rust_ok, "CEL and validate_topic disagree on {spec}");
        if cel_ok {
            accepted.push(mask);
        }
    }
    // brokers; nameServers; both; nameServers + sync; all three.
    assert_eq!(accepted, [0b001, 0b010, 0b011, 0b110, 0b111]);
    let err = validator
        .validate(
            &schema,
            &json!({"apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
                "metadata": {"name": "t"}, "spec": {"sync": "Observe"}}),
            None,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("brokers is required unless nameServers is set")
            && err.contains("sync is only allowed with nameServers"),
        "{err}"
    );
}

#[test]
fn topic_cel_and_the_controller_agree_on_manage() {
    let schema = schema_of(&Topic::crd());
    let validator = Validator::new();
    // Every combination of: sync (absent, Observe, Manage); brokers (absent, safe, read < write,
    // WriteOnly); brokerCluster (absent, safe, read < write, WriteOnly); drainTimeoutSeconds; nameServers always set.
    let syncs = [None, Some("Observe"), Some("Manage")];
    let brokers = [
        None,
        Some(json!([{"name": "broker-a", "readQueues": 8, "writeQueues": 4}])),
        Some(
            json!([{"name": "broker-a", "readQueues": 8, "writeQueues": 8},
                    {"name": "broker-b", "readQueues": 2, "writeQueues": 4}]),
        ),
        Some(
            json!([{"name": "broker-a", "readQueues": 4, "writeQueues": 4, "permission": "WriteOnly"}]),
        ),
    ];
    let clusters = [
        None,
        Some(json!({"name": "DefaultCluster", "readQueues": 4, "writeQueues": 4})),
        Some(json!({"name": "DefaultCluster", "readQueues": 2, "writeQueues": 4})),
        Some(
            json!({"name": "DefaultCluster", "readQueues": 4, "writeQueues": 4, "permission": "WriteOnly"}),
        ),
    ];
    let mut accepted = 0;
    let mut unsafe_refused = 0;
    for sync in syncs {
        for b in &brokers {
            for c in &clusters {
                for timeout in [None, Some(30)] {
                    let mut spec = json!({"nameServers": ["ns-0:9876"]});
                    if let Some(v) = sync {
                        spec["sync"] = json!(v);
                    }
                    if let Some(v) = b {
                        spec["brokers"] = v.clone();
                    }
                    if let Some(v) = c {
                        spec["brokerCluster"] = v.clone();
                    }
                    if let Some(v) = timeout {
                        spec["drainTimeoutSeconds"] = json!(v);
                    }
                    let object = json!({"apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
                        "metadata": {"name": "t"}, "spec": spec});
                    let cel = validator.validate(&schema, &object, None);
                    let parsed: TopicSpec = serde_json::from_value(spec.clone()).unwrap();
                    let rust_ok = validate_topic(&parsed).is_empty();
                    assert_eq!(
                        cel.is_ok(),
                        rust_ok,
                        "CEL and validate_topic disagree on {spec}: {cel:?}"
                    );
                    accepted += usize::from(rust_ok);
                    if !unsafe_queue_counts(&parsed).is_empty() {
                        unsafe_refused += 1;
                        assert!(
                            cel.unwrap_err().to_string().contains("UnsafeQueueCounts"),
                            "{spec}"
                        );
                    }
                }
            }
        }
    }
    // Observe or absent: brokers (any counts: only compared) without brokerCluster, with no
    // timeout: 2 syncs x 4 brokers. Manage: safe brokers xor safe cluster, any timeout: 2 x 2.
    assert_eq!(accepted, 8 + 4);
    assert!(unsafe_refused > 0);
}

#[test]
fn topic_name_servers_are_a_bounded_set_of_host_ports() {
    let schema = schema_of(&Topic::crd());
    let spec = &schema["properties"]["spec"]["properties"];
    let name_servers = &spec["nameServers"];
    assert_eq!(name_servers["x-kubernetes-list-type"], "set");
    assert_eq!(
        (&name_servers["minItems"], &name_servers["maxItems"]),
        (&json!(1), &json!(16))
    );
    assert_eq!(name_servers["items"]["pattern"], NAME_SERVER_PATTERN);
    assert_eq!(name_servers["items"]["minLength"], json!(1));
    assert_eq!(spec["sync"]["enum"], json!(["Observe", "Manage"]));
    // Without nameServers a Topic is what it was: brokers keep their bounds.
    assert_eq!(spec["brokers"]["minItems"], json!(1));
}
