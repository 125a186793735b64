//! `rebalancer plan` end to end, through the real binary.

use std::io::Write;

use assert_cmd::Command;
use serde_json::Value;

const TOPIC: &str = "apiVersion: rebalancer.dev/v1alpha1
kind: Topic
metadata: {name: orders}
spec:
  brokers:
  - {name: broker-a, readQueues: 4, writeQueues: 4}
  - {name: broker-b, readQueues: 4, writeQueues: 8}
";

fn group(strategy: &str) -> String {
    format!(
        "apiVersion: rebalancer.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {{name: cg}}\nspec:\n  topics: [orders]\n  strategy: {strategy}\n"
    )
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn plan(args: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("rebalancer")
        .unwrap()
        .arg("plan")
        .args(args)
        .assert()
}

fn json(args: &[&str]) -> Value {
    let out = plan(args).success().get_output().stdout.clone();
    serde_json::from_slice(&out).unwrap()
}

fn quickstart() -> String {
    format!(
        "{}/deploy/examples/quickstart.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn quickstart_table_lists_every_consumer() {
    let out = plan(&["-f", &quickstart(), "--replicas", "5"])
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    for i in 0..5 {
        assert!(text.contains(&format!("orders-consumer-{i} ")), "{text}");
    }
    assert!(!text.contains("WARNING"), "{text}");
}

#[test]
fn idle_consumers_get_a_warning_line() {
    let f = file(&format!("{TOPIC}---\n{}", group("Averagely")));
    let out = plan(&["-f", f.path().to_str().unwrap(), "--replicas", "10"])
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("WARNING: 10 consumers, 8 queues: 2 consumers will be idle"),
        "{text}"
    );
    assert!(text.contains("writeQueues 8 > readQueues 4"), "{text}");
}

#[test]
fn json_is_the_status_shape_in_java_order() {
    let f = file(&format!("{TOPIC}---\n{}", group("Averagely")));
    let v = json(&[
        "-f",
        f.path().to_str().unwrap(),
        "--consumers",
        "c-2,c-10,c-1",
        "-o",
        "json",
    ]);
    let ids: Vec<&str> = v["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["consumer"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c-1", "c-10", "c-2"]);
    assert_eq!(v["assignments"][0]["queues"][0]["queueIds"], "0-2");
    assert_eq!(v["assignments"][0]["queues"][0]["broker"], "broker-a");
    for key in [
        "idleConsumers",
        "unassignedQueues",
        "movedQueues",
        "warnings",
        "producers",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["producers"][0]["brokers"][1]["share"], "66.67%");
}

#[test]
fn stdin_and_yaml_output() {
    let out = Command::cargo_bin("rebalancer")
        .unwrap()
        .args(["plan", "-f", "-", "--replicas", "2", "-o", "yaml"])
        .write_stdin(format!("{TOPIC}---\n{}", group("AveragelyByCircle")))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_yaml::Value = serde_yaml::from_slice(&out).unwrap();
    assert_eq!(
        v["assignments"][0]["queues"][0]["queueIds"].as_str(),
        Some("0,2")
    );
}

#[test]
fn sticky_with_previous_moves_only_the_new_share() {
    let f = file(&format!("{TOPIC}---\n{}", group("Sticky")));
    let path = f.path().to_str().unwrap();
    let before = json(&["-f", path, "--replicas", "2", "-o", "json"]);
    let prev = file(&serde_json::to_string(&before).unwrap());
    let after = json(&[
        "-f",
        path,
        "--replicas",
        "3",
        "-o",
        "json",
        "--previous",
        prev.path().to_str().unwrap(),
    ]);
    // 8 queues, 2 -> 3 consumers: the newcomer takes 2 (⌊8/3⌋), nothing else moves.
    assert_eq!(after["movedQueues"], 2);
    let newcomer = &after["assignments"][2];
    assert_eq!(newcomer["consumer"], "cg-2");
}

fn error_of(text: &str, args: &[&str]) -> String {
    let f = file(text);
    let mut all = vec!["-f", f.path().to_str().unwrap()];
    all.extend_from_slice(args);
    let out = plan(&all).failure().code(1).get_output().stderr.clone();
    let err = String::from_utf8(out).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    err
}

#[test]
fn bad_input_is_one_clear_line() {
    let negative = TOPIC.replace(
        "readQueues: 4, writeQueues: 4",
        "readQueues: -4, writeQueues: 4",
    );
    let e = error_of(
        &format!("{negative}---\n{}", group("Averagely")),
        &["--replicas", "2"],
    );
    assert!(e.contains("spec.brokers[0].readQueues"), "{e}");

    let e = error_of(&group("Averagely"), &["--replicas", "2"]);
    assert!(e.contains("spec.topics: topic orders not found"), "{e}");

    let too_many = TOPIC.replace(
        "readQueues: 4, writeQueues: 4",
        "readQueues: 5000, writeQueues: 4",
    );
    let e = error_of(
        &format!("{too_many}---\n{}", group("Averagely")),
        &["--replicas", "2"],
    );
    assert!(
        e.contains("Topic orders: spec.brokers[0].readQueues: 5000 is more than the maximum 4096"),
        "{e}"
    );

    let e = error_of(
        &format!("{TOPIC}---\n{}", group("Averagely")),
        &["--consumers", "a,b,a"],
    );
    assert!(e.contains("\"a\" appears more than once"), "{e}");

    let e = error_of("kind: Topic\n  bad: [", &["--replicas", "1"]);
    assert!(e.contains("malformed YAML"), "{e}");

    let e = error_of(
        &format!("{TOPIC}---\n{}", group("Bogus")),
        &["--replicas", "1"],
    );
    assert!(e.contains("spec.strategy"), "{e}");

    let e = error_of(
        &format!("{TOPIC}---\n{}", group("ByMachineRoom")),
        &["--replicas", "1"],
    );
    assert!(e.contains("spec.machineRoom: required"), "{e}");

    let e = error_of(
        &format!("{TOPIC}---\n{}", group("MachineRoomNearby")),
        &["--consumers", "a=az1,b"],
    );
    assert!(e.contains("machine room of broker broker-a"), "{e}");
}

#[test]
fn a_misspelt_kind_of_ours_is_an_error_naming_kind_and_file() {
    // Before: the Topic was skipped and the group failed with "topic orders not found".
    let typo = TOPIC.replace("kind: Topic", "kind: Topick");
    let f = file(&format!("{typo}---\n{}", group("Averagely")));
    let path = f.path().to_str().unwrap();
    let e = error_of_file(&f, &["--replicas", "2"]);
    assert_eq!(
        e,
        format!(
            "error: {path}: document 1 (Topick orders): kind: \"Topick\" is not a kind of rebalancer.dev/v1alpha1 (expected Topic or ConsumerGroup; did you mean Topic?)\n"
        )
    );

    // Kinds of other API groups are still skipped.
    let other = TOPIC.replace(
        "apiVersion: rebalancer.dev/v1alpha1\nkind: Topic",
        "apiVersion: example.com/v1\nkind: Topick",
    );
    let f = file(&format!("{TOPIC}---\n{other}---\n{}", group("Averagely")));
    let v = json(&[
        "-f",
        f.path().to_str().unwrap(),
        "--replicas",
        "2",
        "-o",
        "json",
    ]);
    assert_eq!(v["queues"], 8);
}

#[test]
fn nearby_uses_consumer_zones_from_the_command_line() {
    let topic = TOPIC
        .replace("{name: broker-a,", "{name: broker-a, zone: az1,")
        .replace("{name: broker-b,", "{name: broker-b, zone: az2,");
    let f = file(&format!("{topic}---\n{}", group("MachineRoomNearby")));
    let v = json(&[
        "-f",
        f.path().to_str().unwrap(),
        "--consumers",
        "x=az1,y=az2",
        "-o",
        "json",
    ]);
    assert_eq!(v["assignments"][0]["queues"][0]["broker"], "broker-a");
    assert_eq!(v["assignments"][0]["queues"].as_array().unwrap().len(), 1);
    assert_eq!(v["assignments"][1]["queues"][0]["broker"], "broker-b");
}

#[test]
fn by_config_map_from_yaml() {
    let group = "apiVersion: rebalancer.dev/v1alpha1
kind: ConsumerGroup
metadata: {name: cg}
spec:
  topics: [orders]
  strategy: ByConfig
  byConfig:
    c-0: [{topic: orders, broker: broker-a, queueIds: \"0-3\"}]
    c-1: [{topic: orders, broker: broker-b, queueIds: \"0,2\"}]
    c-9: [{topic: orders, broker: broker-b, queueIds: \"3\"}]
";
    let f = file(&format!("{TOPIC}---\n{group}"));
    let v = json(&[
        "-f",
        f.path().to_str().unwrap(),
        "--consumers",
        "c-0,c-1",
        "-o",
        "json",
    ]);
    assert_eq!(v["assignments"][0]["queues"][0]["queueIds"], "0-3");
    assert_eq!(v["assignments"][1]["queues"][0]["queueIds"], "0,2");
    // broker-b 1 is in nobody's list; 3 belongs to c-9, which is not running.
    assert_eq!(v["unassignedQueues"][0]["queueIds"], "1,3");
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains("c-9"), "{warnings}");

    let bad = group.replace("queueIds: \"3\"", "queueIds: \"9\"");
    let f = file(&format!("{TOPIC}---\n{bad}"));
    let e = error_of_file(&f, &["--consumers", "c-0,c-1"]);
    assert!(e.contains("broker-b queue 9"), "{e}");
}

fn error_of_file(f: &tempfile::NamedTempFile, args: &[&str]) -> String {
    let mut all = vec!["-f", f.path().to_str().unwrap()];
    all.extend_from_slice(args);
    let out = plan(&all).failure().code(1).get_output().stderr.clone();
    String::from_utf8(out).unwrap()
}

/// A Topic with `nameServers`, as `kubectl get topic -o yaml` prints it once the operator has
/// read its route: `spec.brokers` (8 + 8 queues) is what was expected, `status.observed` (4 + 2)
/// what the NameServers route.
const OBSERVED_TOPIC: &str = "apiVersion: rebalancer.dev/v1alpha1
kind: Topic
metadata: {name: orders}
spec:
  nameServers: [namesrv:9876]
  brokers:
  - {name: broker-a, readQueues: 8, writeQueues: 8}
  - {name: broker-b, readQueues: 8, writeQueues: 8}
status:
  observed:
    brokers:
    - {name: broker-a, readQueues: 4, writeQueues: 4, permission: ReadWrite, masterAddr: '10.0.0.1:10911'}
    - {name: broker-b, readQueues: 2, writeQueues: 2, permission: ReadOnly}
    lastSyncTime: '2026-01-01T00:00:00Z'
";

#[test]
fn a_synced_topic_is_planned_from_its_observed_layout() {
    let f = file(&format!("{OBSERVED_TOPIC}---\n{}", group("Averagely")));
    let v = json(&[
        "-f",
        f.path().to_str().unwrap(),
        "--replicas",
        "2",
        "-o",
        "json",
    ]);
    assert_eq!(v["queues"], 6, "{v:#}");
    let owned: Vec<(String, String)> = v["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["queues"].as_array().unwrap().clone())
        .map(|q| {
            (
                q["broker"].as_str().unwrap().to_string(),
                q["queueIds"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        owned,
        [
            ("broker-a".to_string(), "0-2".to_string()),
            ("broker-a".to_string(), "3".to_string()),
            ("broker-b".to_string(), "0-1".to_string())
        ]
    );
    // broker-b is read-only: producers write broker-a only.
    assert_eq!(v["producers"][0]["writeQueues"], 4, "{v:#}");

    // Without a status (never synced), the spec's brokers are the layout.
    let unsynced = OBSERVED_TOPIC.split("status:").next().unwrap();
    let f = file(&format!("{unsynced}---\n{}", group("Averagely")));
    let v = json(&[
        "-f",
        f.path().to_str().unwrap(),
        "--replicas",
        "2",
        "-o",
        "json",
    ]);
    assert_eq!(v["queues"], 16, "{v:#}");
}

#[test]
fn a_topic_with_only_name_servers_needs_its_observed_layout() {
    let topic = "apiVersion: rebalancer.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec:\n  nameServers: ['namesrv:9876']\n";
    let f = file(&format!("{topic}---\n{}", group("Averagely")));
    let out = plan(&["-f", f.path().to_str().unwrap(), "--replicas", "2"])
        .failure()
        .get_output()
        .stderr
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("topic orders has no layout yet: it is read from its NameServers"),
        "{text}"
    );
    // `sync: Manage` is not a mode (yet).
    let manage = format!("{topic}  sync: Manage\n");
    let f = file(&manage);
    let out = plan(&["-f", f.path().to_str().unwrap(), "--replicas", "2"])
        .failure()
        .get_output()
        .stderr
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("spec.sync: unknown variant `Manage`"),
        "{text}"
    );
}
