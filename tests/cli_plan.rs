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
    // `sync: Manage` without a desired layout is refused, naming what is missing.
    let manage = format!("{topic}  sync: Manage\n---\n{}", group("Averagely"));
    let f = file(&manage);
    let out = plan(&["-f", f.path().to_str().unwrap(), "--replicas", "2"])
        .failure()
        .get_output()
        .stderr
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("spec.sync: Manage requires spec.brokers or spec.brokerCluster"),
        "{text}"
    );
}

/// `mqadmin topicRoute -t orders` as it prints it: fastjson, pretty, numeric map keys unquoted.
/// broker-a is read-write (perm 6, 4 queues), broker-b read-only (perm 4, 2 queues), broker-c
/// write-only (perm 2, 8 queues: producers only).
const MQADMIN_ROUTE: &str = r#"{
	"brokerDatas":[
		{
			"brokerAddrs":{0:"10.0.0.1:10911",1:"10.0.0.2:10911"},
			"brokerName":"broker-a",
			"cluster":"DefaultCluster"
		},
		{"brokerAddrs":{0:"10.0.0.3:10911"},"brokerName":"broker-b","cluster":"DefaultCluster"},
		{"brokerAddrs":{0:"10.0.0.4:10911"},"brokerName":"broker-c","cluster":"DefaultCluster"}
	],
	"filterServerTable":{},
	"queueDatas":[
		{"brokerName":"broker-c","perm":2,"readQueueNums":8,"topicSysFlag":0,"writeQueueNums":8},
		{"brokerName":"broker-b","perm":4,"readQueueNums":2,"topicSysFlag":0,"writeQueueNums":2},
		{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}
	]
}"#;

/// The same route in YAML.
const YAML_ROUTE: &str = "brokerDatas:
- {brokerName: broker-a, cluster: DefaultCluster, brokerAddrs: {0: '10.0.0.1:10911'}}
queueDatas:
- {brokerName: broker-a, perm: 6, readQueueNums: 4, writeQueueNums: 4, topicSysFlag: 0}
- {brokerName: broker-b, perm: 4, readQueueNums: 2, writeQueueNums: 2, topicSysFlag: 0}
- {brokerName: broker-c, perm: 2, readQueueNums: 8, writeQueueNums: 8, topicSysFlag: 0}
";

/// (consumer, broker, queueIds) of every owned range, in output order.
fn owned(v: &Value) -> Vec<(String, String, String)> {
    v["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| {
            a["queues"].as_array().unwrap().iter().map(move |q| {
                (
                    a["consumer"].as_str().unwrap().to_string(),
                    q["broker"].as_str().unwrap().to_string(),
                    q["queueIds"].as_str().unwrap().to_string(),
                )
            })
        })
        .collect()
}

fn triples(items: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

/// Client ids as a broker reports them (`clientIP@instanceName`, the instance name `pid#nanos`
/// since RocketMQ 4.9), over the route above: the readable queues are broker-a 0-3 and broker-b
/// 0-1 (read-only), broker-c is write-only. AllocateMessageQueueAveragely, worked by hand:
/// mqAll = [a0 a1 a2 a3 b0 b1] (6), cidAll in String.compareTo order =
/// [10.0.0.10@1, 10.0.0.11@4242#99, 10.0.0.9@1, fd00::7@7] (4): mod = 2, so the first two get
/// 2 queues from 0 and 2, the others 1 from index*1+2 = 4 and 5.
const AVERAGELY_BY_HAND: [(&str, &str, &str); 4] = [
    ("10.0.0.10@1", "broker-a", "0-1"),
    ("10.0.0.11@4242#99", "broker-a", "2-3"),
    ("10.0.0.9@1", "broker-b", "0"),
    ("fd00::7@7", "broker-b", "1"),
];

const CLIENT_IDS: &str = "10.0.0.9@1,fd00::7@7,10.0.0.11@4242#99,10.0.0.10@1";

#[test]
fn route_json_from_mqadmin_with_client_ids_is_rocketmq_averagely() {
    let g = file(&group("Averagely"));
    let r = file(MQADMIN_ROUTE);
    let route = format!("orders={}", r.path().to_str().unwrap());
    let v = json(&[
        "-f",
        g.path().to_str().unwrap(),
        "--route",
        &route,
        "--consumers",
        CLIENT_IDS,
        "-o",
        "json",
    ]);
    assert_eq!(owned(&v), triples(&AVERAGELY_BY_HAND), "{v:#}");
    assert_eq!(v["queues"], 6, "{v:#}");
    // Producers write broker-a (rw) and broker-c (write-only), never the read-only broker-b.
    let producers: Vec<&str> = v["producers"][0]["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["broker"].as_str().unwrap())
        .collect();
    assert_eq!(producers, ["broker-a", "broker-c"], "{v:#}");
}

#[test]
fn route_yaml_and_stdin_give_the_same_plan() {
    let g = file(&group("Averagely"));
    let r = file(YAML_ROUTE);
    let route = format!("orders={}", r.path().to_str().unwrap());
    let args = [
        "-f",
        g.path().to_str().unwrap(),
        "--route",
        &route,
        "--consumers",
        CLIENT_IDS,
        "-o",
        "json",
    ];
    let from_yaml = json(&args);
    assert_eq!(owned(&from_yaml), triples(&AVERAGELY_BY_HAND));

    let out = Command::cargo_bin("rebalancer")
        .unwrap()
        .args(["plan", "-f", g.path().to_str().unwrap()])
        .args([
            "--route",
            "orders=-",
            "--consumers",
            CLIENT_IDS,
            "-o",
            "json",
        ])
        .write_stdin(MQADMIN_ROUTE)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let from_stdin: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(from_stdin, from_yaml);

    // The table names the client ids too.
    let out = plan(&[
        "-f",
        g.path().to_str().unwrap(),
        "--route",
        &route,
        "--consumers",
        CLIENT_IDS,
    ])
    .success()
    .get_output()
    .stdout
    .clone();
    let text = String::from_utf8(out).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("10.0.0.11@4242#99 "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.ends_with(" 2       orders/broker-a:2-3"), "{text}");
}

#[test]
fn a_route_replaces_the_topic_of_the_files_and_keeps_its_zones() {
    // The files' Topic has 8 + 8 queues and zones; the route has 4 + 2 (+ write-only broker-c).
    let topic = "apiVersion: rebalancer.dev/v1alpha1
kind: Topic
metadata: {name: orders}
spec:
  brokers:
  - {name: broker-a, readQueues: 8, writeQueues: 8, zone: az1}
  - {name: broker-b, readQueues: 8, writeQueues: 8, zone: az2}
";
    let g = file(&format!("{topic}---\n{}", group("MachineRoomNearby")));
    let r = file(YAML_ROUTE);
    let route = format!("orders={}", r.path().to_str().unwrap());
    let v = json(&[
        "-f",
        g.path().to_str().unwrap(),
        "--route",
        &route,
        "--consumers",
        "10.0.0.1@1=az1,10.0.0.2@1=az2",
        "-o",
        "json",
    ]);
    assert_eq!(
        owned(&v),
        triples(&[
            ("10.0.0.1@1", "broker-a", "0-3"),
            ("10.0.0.2@1", "broker-b", "0-1"),
        ]),
        "{v:#}"
    );
}

#[test]
fn route_errors_are_one_clear_line() {
    let g = file(&group("Averagely"));
    let gp = g.path().to_str().unwrap();
    let err = |route_text: &str, topic: &str| {
        let r = file(route_text);
        let path = r.path().to_str().unwrap().to_string();
        let route = format!("{topic}={path}");
        let out = plan(&["-f", gp, "--route", &route, "--replicas", "2"])
            .failure()
            .code(1)
            .get_output()
            .stderr
            .clone();
        let e = String::from_utf8(out).unwrap();
        assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e}");
        (e, path)
    };
    // A topic the group does not subscribe.
    let (e, _) = err(MQADMIN_ROUTE, "payments");
    assert!(
        e.contains("ConsumerGroup cg does not subscribe topic payments (spec.topics: orders)"),
        "{e}"
    );
    // ... checked before the route is read.
    let (e, _) = err("{not json", "payments");
    assert!(e.contains("does not subscribe topic payments"), "{e}");
    // A malformed route names the file and the field.
    let (e, path) = err(
        &MQADMIN_ROUTE.replace("\"perm\":4", "\"perm\":\"r\""),
        "orders",
    );
    assert!(
        e.contains(&format!(
            "{path}: route of topic orders: queueDatas[1].perm: invalid type: string \"r\""
        )),
        "{e}"
    );
    let (e, path) = err(
        "queueDatas:\n- {brokerName: broker-a, perm: 6, writeQueueNums: 4}\n",
        "orders",
    );
    assert!(
        e.contains(&format!(
            "{path}: route of topic orders: queueDatas[0]: missing field `readQueueNums`"
        )),
        "{e}"
    );
    let (e, path) = err("{\"queueDatas\":[{\"brokerName\":", "orders");
    assert!(
        e.contains(&format!("{path}: route of topic orders: malformed JSON")),
        "{e}"
    );
    let (e, _) = err("{\"queueDatas\":[],\"brokerDatas\":[]}", "orders");
    assert!(e.contains("queueDatas: missing or empty"), "{e}");
    let (e, path) = err(
        "queueDatas:\n- {brokerName: broker-a, perm: 6, readQueueNums: 5000, writeQueueNums: 4}\n",
        "orders",
    );
    assert!(
        e.contains(&format!(
            "{path}: route of topic orders: queueDatas[broker-a].readQueueNums is 5000, more than the 4096 queues a broker may have"
        )),
        "{e}"
    );
    // Not TOPIC=FILE.
    let out = plan(&["-f", gp, "--route", "orders", "--replicas", "2"])
        .failure()
        .get_output()
        .stderr
        .clone();
    let e = String::from_utf8(out).unwrap();
    assert!(e.contains("expected TOPIC=FILE"), "{e}");
    // stdin once.
    let out = plan(&["-f", "-", "--route", "orders=-", "--replicas", "2"])
        .failure()
        .get_output()
        .stderr
        .clone();
    let e = String::from_utf8(out).unwrap();
    assert!(e.contains("stdin (-) can be read once"), "{e}");
}

/// Hostile input: absurd numbers are refused with one line and exit 1, fast and in bounded
/// memory, never an abort (issue "hostile and odd input", finding 7).
#[test]
fn absurd_sizes_are_refused_in_one_line_without_allocating() {
    let started = std::time::Instant::now();
    let f = file(&format!("{OBSERVED_TOPIC}---\n{}", group("Averagely")));
    // More replicas than a group may have.
    let e = error_of_file(&f, &["--replicas", "4294967295"]);
    assert_eq!(
        e.trim(),
        "error: --replicas 4294967295: more than the 100000 consumers a group may have"
    );
    // A status read back with an absurd queue count (anyone allowed to write topics/status).
    let absurd = OBSERVED_TOPIC.replace(
        "readQueues: 4, writeQueues: 4",
        "readQueues: 4294967295, writeQueues: 4",
    );
    let f = file(&format!("{absurd}---\n{}", group("Averagely")));
    let e = error_of_file(&f, &["--replicas", "3"]);
    assert!(
        e.contains("readQueues") && e.contains("4294967295") && e.lines().count() == 1,
        "{e}"
    );
    // A route with 100,000 brokers: refused by count, before any per-broker work.
    let mut route = String::from("{\"queueDatas\":[");
    for i in 0..100_000 {
        if i > 0 {
            route.push(',');
        }
        route.push_str(&format!(
            "{{\"brokerName\":\"b{i}\",\"readQueueNums\":4,\"writeQueueNums\":4,\"perm\":6}}"
        ));
    }
    route.push_str("],\"brokerDatas\":[]}");
    let r = file(&route);
    let g = file(&group("Averagely"));
    let arg = format!("orders={}", r.path().to_str().unwrap());
    let e = error_of_file(&g, &["--route", &arg, "--replicas", "2"]);
    assert!(
        e.contains("queueDatas: lists 100000 brokers, more than the 256"),
        "{e}"
    );
    // An absurd perm and a broker listed twice.
    for (text, expected) in [
        (
            "{\"queueDatas\":[{\"brokerName\":\"a\",\"readQueueNums\":4,\"writeQueueNums\":4,\"perm\":4294967295}]}",
            "perm is 4294967295, not a permission",
        ),
        (
            "{\"queueDatas\":[{\"brokerName\":\"a\",\"readQueueNums\":4,\"writeQueueNums\":4,\"perm\":6}],\"brokerDatas\":[{\"brokerName\":\"a\",\"brokerAddrs\":{\"0\":\"h:1\"}},{\"brokerName\":\"a\",\"brokerAddrs\":{\"0\":\"h:2\"}}]}",
            "brokerDatas[1].brokerName: broker a appears more than once",
        ),
    ] {
        let r = file(text);
        let arg = format!("orders={}", r.path().to_str().unwrap());
        let e = error_of_file(&g, &["--route", &arg, "--replicas", "2"]);
        assert!(e.contains(expected), "{e}");
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

/// Hostile input: a file nested 100,000 deep (200-500 KB) is refused with one line naming the
/// file and the limit, in well under a second, as `-f` and as `--route` (finding 7: it took
/// 20 s, growing with the square of the depth, inside the YAML parser).
#[test]
fn deep_nesting_is_refused_in_one_line_at_once() {
    const DEPTH: usize = 100_000;
    let g = file(&group("Averagely"));
    let gp = g.path().to_str().unwrap().to_string();
    for (what, open, close) in [("[", "[", "]"), ("{\"a\":", "{\"a\":", "}")] {
        let deep = file(&format!("{}1{}", open.repeat(DEPTH), close.repeat(DEPTH)));
        let path = deep.path().to_str().unwrap().to_string();
        let route = format!("orders={path}");
        for args in [
            vec!["-f", path.as_str()],
            vec![
                "-f",
                gp.as_str(),
                "--route",
                route.as_str(),
                "--replicas",
                "2",
            ],
        ] {
            let started = std::time::Instant::now();
            let out = plan(&args).failure().code(1).get_output().stderr.clone();
            let took = started.elapsed();
            let e = String::from_utf8(out).unwrap();
            assert_eq!(e.lines().count(), 1, "{what} {args:?}: not one line: {e}");
            assert!(
                e.starts_with(&format!("error: {path}: "))
                    && e.contains("nested more than 128 levels deep (line 1, column "),
                "{what} {args:?}: {e}"
            );
            assert!(
                took < std::time::Duration::from_secs(2),
                "{what} {args:?}: took {took:?}"
            );
        }
    }
}
