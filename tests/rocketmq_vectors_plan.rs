//! Conformance through the product's front door: every RocketMQ vector that fits is turned into
//! Topic and ConsumerGroup YAML and run through the real `rebalancer plan -o json` binary, the way
//! an outside conformance suite drives it. Together with `rocketmq_vectors.rs` (the engine alone)
//! this pins the whole path: YAML loading, `--consumers ID=ZONE`, topic names such as
//! `%RETRY%group`, the status rendering and its range lists.

use std::collections::{BTreeMap, BTreeSet};

use assert_cmd::Command;
use rebalancer::assign::ranges::parse_ranges;
use serde_json::{Value, json};

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rocketmq-vectors.jsonl"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Strategy block of the ConsumerGroup spec, or `None` when the vector is outside the model.
fn group_spec(v: &Value) -> Option<Value> {
    let params = &v["params"];
    let inner = |name: &str| match name {
        "AVG" => Some("Averagely"),
        "AVG_BY_CIRCLE" => Some("AveragelyByCircle"),
        "CONSISTENT_HASH" => Some("ConsistentHash"),
        _ => None,
    };
    let mut spec = json!({"topics": [v["topic"]]});
    if v["messageModel"] == "BROADCASTING" {
        spec["messageModel"] = json!("Broadcasting");
    }
    let name = v["strategyName"].as_str()?;
    match name {
        "AVG" | "AVG_BY_CIRCLE" => spec["strategy"] = json!(inner(name)?),
        "CONSISTENT_HASH" => {
            spec["strategy"] = json!("ConsistentHash");
            spec["consistentHash"] = json!({"virtualNodes": params["virtualNodeCnt"]});
        }
        "MACHINE_ROOM" => {
            spec["strategy"] = json!("ByMachineRoom");
            spec["machineRoom"] = json!({"consumeZones": params.get("consumeridcs")?});
        }
        _ if name.starts_with("MACHINE_ROOM_NEARBY-") => {
            let inner_name = inner(params["innerStrategy"].as_str()?)?;
            spec["strategy"] = json!("MachineRoomNearby");
            spec["nearby"] = json!({"innerStrategy": inner_name});
            if inner_name == "ConsistentHash" {
                spec["consistentHash"] = json!({"virtualNodes": params["innerVirtualNodeCnt"]});
            }
        }
        _ => return None, // CONFIG: one list for every consumer, not our per-consumer map.
    }
    Some(spec)
}

fn yaml(v: &Value, spec: Value) -> String {
    let mut brokers: BTreeMap<String, u32> = BTreeMap::new();
    for q in v["queues"].as_array().unwrap() {
        let count = brokers
            .entry(q["broker"].as_str().unwrap().to_string())
            .or_default();
        *count = (*count).max(q["queueId"].as_u64().unwrap() as u32 + 1);
    }
    let rooms = v["params"].get("brokerRooms");
    let brokers: Vec<Value> = brokers
        .into_iter()
        .map(|(name, n)| {
            let mut b = json!({"name": name, "readQueues": n, "writeQueues": n});
            if let Some(room) = rooms.and_then(|r| r.get(&name)) {
                b["zone"] = room.clone();
            }
            b
        })
        .collect();
    let topic = json!({"apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": v["topic"]}, "spec": {"brokers": brokers}});
    let group = json!({"apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
        "metadata": {"name": v["consumerGroup"]}, "spec": spec});
    format!(
        "{}---\n{}",
        serde_yaml::to_string(&topic).unwrap(),
        serde_yaml::to_string(&group).unwrap()
    )
}

fn expand(queues: &Value) -> BTreeSet<(String, u32)> {
    let mut out = BTreeSet::new();
    for q in queues.as_array().unwrap() {
        for (a, b) in parse_ranges(q["queueIds"].as_str().unwrap()).unwrap() {
            for id in a..=b {
                out.insert((q["broker"].as_str().unwrap().to_string(), id));
            }
        }
    }
    out
}

#[test]
fn plan_answers_like_rocketmq() {
    let (mut passed, mut skipped, mut failures) = (0, 0, Vec::new());
    for v in vectors() {
        let consumers = v["consumers"].as_array().cloned().unwrap_or_default();
        let distinct: BTreeSet<&str> = consumers.iter().filter_map(Value::as_str).collect();
        let fits = !v["queues"].is_null()
            && !consumers.is_empty()
            && distinct.len() == consumers.len()
            && v["params"].get("consumeridcsByConsumer").is_none();
        let Some(spec) = group_spec(&v).filter(|_| fits) else {
            skipped += 1;
            continue;
        };
        let rooms = v["params"].get("consumerRooms");
        let arg: Vec<String> = consumers
            .iter()
            .map(|c| {
                let id = c.as_str().unwrap();
                match rooms.and_then(|r| r.get(id)).and_then(Value::as_str) {
                    Some(room) => format!("{id}={room}"),
                    None => id.to_string(),
                }
            })
            .collect();
        let output = Command::cargo_bin("rebalancer")
            .unwrap()
            .args([
                "plan",
                "-f",
                "-",
                "-o",
                "json",
                "--consumers",
                &arg.join(","),
            ])
            .write_stdin(yaml(&v, spec))
            .output()
            .unwrap();
        let id = v["id"].as_str().unwrap();
        if v.get("errors").is_some_and(|e| !e.is_null()) {
            if output.status.success() {
                failures.push(format!("{id}: RocketMQ threw, plan succeeded"));
            } else {
                passed += 1;
            }
            continue;
        }
        if !output.status.success() {
            failures.push(format!(
                "{id}: plan failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
            continue;
        }
        let got: Value = serde_json::from_slice(&output.stdout).unwrap();
        let got: BTreeMap<String, BTreeSet<(String, u32)>> = got["assignments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["consumer"].as_str().unwrap().to_string(),
                    expand(&a["queues"]),
                )
            })
            .collect();
        let expected: BTreeMap<String, BTreeSet<(String, u32)>> = consumers
            .iter()
            .map(|c| {
                let c = c.as_str().unwrap();
                let queues = v["assignment"]
                    .get(c)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let set = queues
                    .iter()
                    .map(|q| {
                        (
                            q["broker"].as_str().unwrap().to_string(),
                            q["queueId"].as_u64().unwrap() as u32,
                        )
                    })
                    .collect();
                (c.to_string(), set)
            })
            .collect();
        if got == expected {
            passed += 1;
        } else {
            failures.push(format!(
                "{id} ({}): expected {expected:?}, got {got:?}",
                v["strategyName"]
            ));
        }
    }
    println!(
        "plan conformance: {passed} passed, {skipped} skipped, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Same skip set as the engine-level test: Java nulls, CONFIG, per-client config, duplicates, empty.
    assert_eq!(skipped, 27);
    assert_eq!(passed, 571);
}
