//! `rebalancer plan` fed with what Apache RocketMQ 4.9.7's own `mqadmin` prints, as the README
//! shows (`mqadmin topicRoute ... > route.json`, client ids from `mqadmin consumerConnection`),
//! against the Java NameServer and brokers of `tests/support/rocketmq.rs` and real Java push
//! consumers (`tests/support/consumer.rs`): the plan must be exactly what the consumers hold.
//!
//! Without `ROCKETMQ_JAVA_HOME` or `ROCKETMQ_JAVA_CONSUMER` the test prints one SKIP line, unless
//! `REBALANCER_REQUIRE_ROCKETMQ_JAVA=1` (then it fails). Every process it starts is stopped when
//! dropped; waits poll with a deadline.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rebalancer::assign::Permission;
use rebalancer::rocketmq::{NameServers, TopicConfig};
use support::consumer::{Consumer, ConsumerConfig, Flavour, Queue};
use support::envtest::{spawn, stop};
use support::queues::{all_queues, expand_ids};
use support::rocketmq::{connect, java_home, shared_java, timeouts};
use support::{deadline, eventually, random_suffix};

const QUEUES: u32 = 4;

/// A child process killed (SIGTERM, then SIGKILL) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        stop(&mut self.0, Duration::from_secs(5));
    }
}

/// Runs `bin/rocketmq-java mqadmin ARGS` (its own `RMQ_WORK` under `work`) and returns its
/// stdout; panics (with its stderr) when it fails or outlives [`deadline`].
async fn mqadmin(home: &Path, work: &Path, args: &[&str]) -> String {
    let name = args.join("_").replace(['/', ':', ' '], "_");
    let out_path = work.join(format!("{name}.out"));
    let err_path = work.join(format!("{name}.err"));
    let mut command = Command::new(home.join("bin").join("rocketmq-java"));
    command
        .arg("mqadmin")
        .args(args)
        .env("RMQ_WORK", work.join(format!("rmq-{name}")))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("mqadmin stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("mqadmin stderr file"));
    let mut child = Running(spawn(command).expect("cannot start mqadmin"));
    let until = Instant::now() + deadline();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("mqadmin wait") {
            break status;
        }
        assert!(
            Instant::now() < until,
            "mqadmin {args:?} did not exit within {:?}",
            deadline()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.success(),
        "mqadmin {args:?} exited with {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}

/// The `#ClientId` column of `mqadmin consumerConnection`'s table (4.9.7: a header
/// `#ClientId #ClientAddr #Language #Version`, one row per connection, a blank line, then the
/// subscription).
fn client_ids(output: &str) -> Result<Vec<String>, String> {
    let mut lines = output.lines();
    let header = lines
        .by_ref()
        .find(|l| l.contains("#ClientId"))
        .ok_or_else(|| format!("no #ClientId header in {output:?}"))?;
    let column = header
        .split_whitespace()
        .position(|c| c == "#ClientId")
        .expect("the header has the column");
    let ids = lines
        .take_while(|l| !l.trim().is_empty())
        .map(|line| {
            line.split_whitespace()
                .nth(column)
                .map(str::to_string)
                .ok_or_else(|| format!("row {line:?} has no #ClientId column"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(format!("no connection rows in {output:?}"));
    }
    Ok(ids)
}

/// What each consumer holds of `topic` once the group settled: every consumer holds a non-empty
/// set, together they hold each of `all` exactly once, and nothing changed for `still`.
async fn settled(
    consumers: &[Consumer],
    topic: &str,
    all: &BTreeSet<Queue>,
    still: Duration,
) -> BTreeMap<String, BTreeSet<Queue>> {
    let mut since: Option<(Instant, BTreeMap<String, BTreeSet<Queue>>)> = None;
    eventually("the Java consumers to settle on one split", || {
        let now: BTreeMap<String, BTreeSet<Queue>> = consumers
            .iter()
            .map(|c| (c.client_id().to_string(), c.queues_of(topic)))
            .collect();
        let result = (|| {
            let held: usize = now.values().map(BTreeSet::len).sum();
            let union: BTreeSet<Queue> = now.values().flatten().cloned().collect();
            if now.values().any(BTreeSet::is_empty) || held != all.len() || &union != all {
                since = None;
                return Err(format!("not a split of the {} queues: {now:?}", all.len()));
            }
            match &since {
                Some((at, before)) if *before == now => {
                    if at.elapsed() >= still {
                        Ok(now.clone())
                    } else {
                        Err(format!("stable for {:?} only: {now:?}", at.elapsed()))
                    }
                }
                _ => {
                    since = Some((Instant::now(), now.clone()));
                    Err(format!("changed: {now:?}"))
                }
            }
        })();
        std::future::ready(result)
    })
    .await
}

/// (consumer → queues) of `rebalancer plan -o json`.
fn planned(v: &serde_json::Value) -> BTreeMap<String, BTreeSet<Queue>> {
    let mut out = BTreeMap::new();
    for a in v["assignments"].as_array().expect("assignments") {
        let set: &mut BTreeSet<Queue> = out
            .entry(a["consumer"].as_str().expect("consumer").to_string())
            .or_default();
        for q in a["queues"].as_array().expect("queues") {
            let topic = q["topic"].as_str().expect("topic");
            let broker = q["broker"].as_str().expect("broker");
            for id in expand_ids(q["queueIds"].as_str().expect("queueIds")).unwrap() {
                set.insert((topic.to_string(), broker.to_string(), id));
            }
        }
    }
    out
}

#[tokio::test]
async fn plan_from_mqadmin_output_is_what_java_consumers_hold() {
    let test = "plan_from_mqadmin_output_is_what_java_consumers_hold";
    // The consumer's classes first: a SKIP costs no server start.
    if !Flavour::Java.available(test) {
        return;
    }
    let Some(mq) = shared_java(test).await else {
        return;
    };
    let home = java_home(test).expect("checked by Flavour::Java.available");
    let work = tempfile::Builder::new()
        .prefix("mqadmin-plan-")
        .tempdir()
        .expect("temp dir");
    let ns = mq.namesrv_addr();
    let topic = format!("MqadminPlan_{}", random_suffix(6));
    let group = format!("mqadmin_plan_{}", random_suffix(6));

    // 2 brokers x 4 read-write queues.
    for broker in &mq.brokers {
        connect(&broker.addr)
            .await
            .create_or_update_topic(&TopicConfig::new(
                &topic,
                QUEUES,
                QUEUES,
                Permission::ReadWrite,
            ))
            .await
            .unwrap();
    }
    let list = NameServers::new(mq.namesrv_addrs(), timeouts());
    eventually("both brokers in the topic's route", || async {
        let route = list.topic_route(&topic).await.map_err(|e| e.to_string())?;
        if route.queue_datas.len() == mq.brokers.len() {
            Ok(())
        } else {
            Err(format!("{route:?}"))
        }
    })
    .await;
    let brokers: Vec<(&str, u32)> = mq
        .brokers
        .iter()
        .map(|b| (b.name.as_str(), QUEUES))
        .collect();
    let all = all_queues(&topic, &brokers);

    // Three consumers whose ids sort differently as strings than as numbers (`.10` < `.9`),
    // one with a `#` in its instance name as RocketMQ's own default names have.
    let mut consumers = Vec::new();
    for (ip, instance) in [
        ("127.30.0.9", "1"),
        ("127.30.0.10", "1"),
        ("127.30.0.11", "4242#99"),
    ] {
        let config = ConsumerConfig {
            namesrv: ns.clone(),
            group: group.clone(),
            topics: vec![topic.clone()],
            client_ip: ip.to_string(),
            instance_name: instance.to_string(),
        };
        let consumer = Consumer::start_as(test, Flavour::Java, &config, &[])
            .await
            .expect("checked above");
        assert_eq!(consumer.client_id(), config.client_id());
        consumers.push(consumer);
    }
    // Stable for two rebalance periods (1 s each).
    let held = settled(&consumers, &topic, &all, Duration::from_secs(2)).await;

    // The route, as the README says: `mqadmin topicRoute -n NS -t TOPIC > route.json`. 4.9.7
    // prints fastjson's pretty form: tab-indented, `"brokerAddrs":{0:"127.0.0.1:port"}` with an
    // unquoted key (the NameServer's reply on the wire quotes it), brokers in no sorted order.
    let route = mqadmin(&home, work.path(), &["topicRoute", "-n", &ns, "-t", &topic]).await;
    let route_file = work.path().join("route.json");
    std::fs::write(&route_file, &route).unwrap();
    // The ids, from `mqadmin consumerConnection -g GROUP`'s #ClientId column.
    let connections = mqadmin(
        &home,
        work.path(),
        &["consumerConnection", "-n", &ns, "-g", &group],
    )
    .await;
    let ids = client_ids(&connections).unwrap();
    assert_eq!(
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        held.keys().cloned().collect::<BTreeSet<_>>(),
        "mqadmin consumerConnection's #ClientId column is not the consumers' ids\n{connections}"
    );

    let group_file = work.path().join("group.yaml");
    std::fs::write(
        &group_file,
        format!(
            "apiVersion: rebalancer.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {{name: cg}}\n\
             spec:\n  topics: [{topic}]\n  strategy: Averagely\n"
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_rebalancer"))
        .arg("plan")
        .arg("-f")
        .arg(&group_file)
        .arg("--route")
        .arg(format!("{topic}={}", route_file.display()))
        .arg("--consumers")
        .arg(ids.join(","))
        .args(["-o", "json"])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run rebalancer plan");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "rebalancer plan failed ({})\n{}\n--- route (mqadmin topicRoute)\n{route}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        planned(&v),
        held,
        "plan over mqadmin's output is not what the Java consumers hold\n{v:#}\n--- route\n{route}"
    );
    // And they still hold it (nothing moved while mqadmin and plan ran).
    for c in &consumers {
        assert_eq!(
            c.queues_of(&topic),
            held[c.client_id()],
            "{} moved",
            c.client_id()
        );
    }
    eprintln!(
        "mqadmin + plan over {} queues, {} Java consumers: {:?}",
        all.len(),
        consumers.len(),
        held.iter()
            .map(|(id, q)| (
                id,
                q.iter()
                    .map(|(_, b, i)| format!("{b}:{i}"))
                    .collect::<Vec<_>>()
            ))
            .collect::<Vec<_>>()
    );
}
