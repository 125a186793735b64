//! A `sync: Manage` shrink that loses nothing under a real Java producer (issue #16), against
//! Apache RocketMQ 4.9.7's own NameServer and Brokers (`shared_java`), with the real `rebalancer`
//! binary (`--sync-period=2`) on the envtest API server.
//!
//! The Java broker accepts a send to any queue id below max(readQueues, writeQueues), and the
//! Java producer refreshes its route only every 30 s (`pollNameServerInterval`, left at its
//! default here): after the write queues shrink it keeps writing to the removed queues for up to
//! that long. The Topic uses the default quiet window (`drainQuietSeconds` absent: 35 s), so the
//! read queues may only follow once every producer has the new route; the operator then checks
//! the removed queues' max offsets across the read shrink and restores the read queues if one
//! grew.
//!
//! A producer (`hack/java-consumer/JavaProducer.java`, 200 messages/s) and two push consumers
//! (`JavaConsumer.java`) of one group run throughout; the Topic goes 8 -> 4 queues per broker,
//! back to 8, and 8 -> 4 again. After each shrink: every message in a removed queue was received
//! (nothing stranded), and at the end every message sent was received.
//!
//! Needs `KUBEBUILDER_ASSETS`, `HELM`, `ROCKETMQ_JAVA_HOME` and `ROCKETMQ_JAVA_CONSUMER` (skips
//! with one line without them, unless the matching `REBALANCER_REQUIRE_*` is 1).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rebalancer::api::{Permission, Topic};
use serde_json::{Value, json};
use support::consumer::{Consumer, ConsumerConfig, Flavour};
use support::fixtures::Env;
use support::producer::{Producer, ProducerConfig};
use support::rocketmq::{connect, max_offset, shared_java};
use support::{eventually, eventually_within, random_suffix};

/// The operator's `--sync-period`, in seconds.
const SYNC_PERIOD: u64 = 2;
/// Messages per second from the producer.
const RATE: u32 = 200;
const FULL: u32 = 8;
const SHRUNK: u32 = 4;
const BROKERS: [&str; 2] = ["broker-a", "broker-b"];
/// The operator's default quiet window (`DEFAULT_DRAIN_QUIET_SECONDS`).
const QUIET: Duration = Duration::from_secs(35);

fn topic_object(topic: &str, ns: &str, queues: u32) -> Value {
    json!({"apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": "orders"},
        "spec": {"topicName": topic, "nameServers": [ns], "sync": "Manage",
            "brokers": BROKERS.iter().map(|b| json!({"name": b, "readQueues": queues, "writeQueues": queues})).collect::<Vec<_>>()}})
}

/// Polls the NameServer until every broker has (read, write); returns when, since `from`.
async fn route_shows(ns: &str, topic: &str, read: u32, write: u32, within: Duration) -> Instant {
    eventually_within(
        &format!("the route of {topic} to show {read}/{write} on every broker"),
        within,
        || async {
            let r = connect(ns)
                .await
                .topic_route(topic)
                .await
                .map_err(|e| e.to_string())?;
            for b in BROKERS {
                let q = r.queue(b).ok_or_else(|| format!("no {b} in {r:?}"))?;
                if (q.read_queue_nums, q.write_queue_nums, q.permission())
                    != (read, write, Permission::ReadWrite)
                {
                    return Err(format!("{r:?}"));
                }
            }
            Ok(())
        },
    )
    .await;
    Instant::now()
}

fn synced(t: &Topic) -> Option<(String, String, String)> {
    let c = t
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Synced")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_synced(env: &Env, status: &str, reason: &str) -> String {
    let api = env.api::<Topic>();
    eventually(&format!("Synced={status} {reason}"), || async {
        let t = api.get("orders").await.map_err(|e| e.to_string())?;
        match synced(&t) {
            Some((s, r, m)) if s == status && r == reason => Ok(m),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// (broker, queue id) -> offsets received.
fn received_offsets(consumers: &[Consumer], topic: &str) -> BTreeMap<(String, u32), BTreeSet<i64>> {
    let mut out: BTreeMap<(String, u32), BTreeSet<i64>> = BTreeMap::new();
    for m in consumers.iter().flat_map(|c| c.messages()) {
        if m.topic == topic {
            out.entry((m.broker_name, m.queue_id))
                .or_default()
                .insert(m.queue_offset);
        }
    }
    out
}

#[tokio::test]
async fn shrinks_under_a_java_producer_with_the_default_route_refresh_strand_nothing() {
    let test = "shrinks_under_a_java_producer_with_the_default_route_refresh_strand_nothing";
    let Some(mq) = shared_java(test).await else {
        return;
    };
    if !Flavour::Java.available(test) {
        return;
    }
    let Some(env) = Env::new("rocketmq-shrink-java").await else {
        return;
    };
    let ns = mq.namesrv_addr();
    let addr: BTreeMap<&str, String> = mq
        .brokers
        .iter()
        .map(|b| (b.name.as_str(), b.addr.clone()))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .map(|(k, v)| (BROKERS.into_iter().find(|b| *b == k).unwrap(), v))
        .collect();
    let topic = format!("Shrink_{}", random_suffix(6));
    let group = format!("shrink_readers_{}", random_suffix(6));
    let op = env.operator_with("op", vec![format!("--sync-period={SYNC_PERIOD}")]);
    env.wait_holder("op").await;

    env.apply::<Topic>(topic_object(&topic, &ns, FULL)).await;
    route_shows(&ns, &topic, FULL, FULL, support::deadline()).await;
    wait_synced(&env, "True", "InSync").await;
    env.group(
        "readers",
        json!({"topics": ["orders"], "consumerIds": "Client", "groupName": group,
               "consumers": {"selector": {"matchLabels": {"app": "readers"}}}}),
    )
    .await;
    let mut consumers = Vec::new();
    for (i, name) in ["r1", "r2"].iter().enumerate() {
        let config = ConsumerConfig {
            namesrv: ns.clone(),
            group: group.clone(),
            topics: vec![topic.clone()],
            client_ip: format!("127.16.0.{}", i + 1),
            instance_name: name.to_string(),
        };
        consumers.push(
            Consumer::start_as(test, Flavour::Java, &config, &[])
                .await
                .unwrap(),
        );
    }
    for c in &consumers {
        c.wait_queues(|q| !q.is_empty(), support::deadline())
            .await
            .unwrap_or_else(|e| panic!("{} holds no queue: {e}", c.client_id()));
    }
    // The client's default route refresh (30 s): what producers run with.
    let mut producer = Producer::start(
        test,
        &ProducerConfig {
            namesrv: ns.clone(),
            group: format!("shrink_producer_{}", random_suffix(6)),
            topic: topic.clone(),
            instance_name: "p1".into(),
            rate: RATE,
            poll_name_server_interval_ms: None,
        },
    )
    .await
    .unwrap();
    eventually("the producer to send to every queue", || async {
        let queues: BTreeSet<(String, u32)> = producer
            .sent()
            .into_iter()
            .map(|s| (s.broker_name, s.queue_id))
            .collect();
        if queues.len() == BROKERS.len() * FULL as usize {
            Ok(())
        } else {
            Err(format!("{queues:?}"))
        }
    })
    .await;

    let mut summary = Vec::new();
    for round in 1..=2 {
        if round == 2 {
            env.apply::<Topic>(topic_object(&topic, &ns, FULL)).await;
            route_shows(&ns, &topic, FULL, FULL, support::deadline()).await;
            wait_synced(&env, "True", "InSync").await;
            // The producer learns of the new queues at its next route refresh.
            eventually_within(
                "the producer to send to the regrown queues",
                Duration::from_secs(45),
                || async {
                    let n = producer
                        .sent()
                        .iter()
                        .rev()
                        .take(RATE as usize)
                        .filter(|s| s.queue_id >= SHRUNK)
                        .count();
                    if n > 0 {
                        Ok(())
                    } else {
                        Err("none yet".to_string())
                    }
                },
            )
            .await;
        }
        let asked = Instant::now();
        env.apply::<Topic>(topic_object(&topic, &ns, SHRUNK)).await;
        let write_shrunk = route_shows(&ns, &topic, FULL, SHRUNK, support::deadline()).await;
        let sent_at_write = producer.sent_count();
        let message = wait_synced(&env, "False", "Draining").await;
        assert!(message.contains("quiet window"), "{message}");
        let t = env.api::<Topic>().get("orders").await.unwrap();
        assert!(t.status.unwrap().draining_since.is_some());
        let read_shrunk = route_shows(&ns, &topic, SHRUNK, SHRUNK, Duration::from_secs(150)).await;
        let sent_at_read = producer.sent_count();
        // The removed queues' max offsets right after the read shrink.
        let mut removed: BTreeMap<(String, u32), i64> = BTreeMap::new();
        for b in BROKERS {
            let client = connect(&addr[b]).await;
            for q in SHRUNK..FULL {
                removed.insert((b.to_string(), q), max_offset(&client, &topic, q).await);
            }
        }
        wait_synced(&env, "True", "InSync").await;
        let quiet = read_shrunk - write_shrunk;
        // Both seen by polling the NameServer every 100 ms: the write shrink up to ~0.2 s late.
        assert!(
            quiet >= QUIET - Duration::from_millis(300),
            "read queues followed {quiet:?} after the write shrink showed: before the quiet window"
        );
        // Writes the producer still made to the removed queues after the write shrink.
        let late: Vec<_> = producer.sent()[sent_at_write..sent_at_read]
            .iter()
            .filter(|s| s.queue_id >= SHRUNK)
            .map(|s| s.at)
            .collect();
        // The producer's route refresh: its last write to a removed queue.
        let last_late = late.iter().max().map(|t| *t - write_shrunk);
        let late = late.len();
        // Nothing stranded: every message of a removed queue was received.
        let stranded = eventually_within(
            "every message of the removed queues to be received",
            Duration::from_secs(15),
            || async {
                let got = received_offsets(&consumers, &topic);
                let mut missing = Vec::new();
                for ((b, q), max) in &removed {
                    let have = got.get(&(b.clone(), *q)).cloned().unwrap_or_default();
                    for o in 0..*max {
                        if !have.contains(&o) {
                            missing.push(format!("{b}/{q}@{o}"));
                        }
                    }
                }
                if missing.is_empty() {
                    Ok(0)
                } else {
                    Err(format!("{} stranded: {missing:?}", missing.len()))
                }
            },
        )
        .await;
        let restores = env
            .events_of("Topic", "orders")
            .await
            .iter()
            .filter(|(_, r, _)| r == "ReadQueuesRestored")
            .count();
        let line = format!(
            "shrink {round}: write shrink in the route {:?} after the spec, read shrink {quiet:?} \
             later; {late} messages written to removed queues after the write shrink, the last \
             {last_late:?} after it; removed \
             queues' max offsets {removed:?}; stranded {stranded}; ReadQueuesRestored events so \
             far {restores}",
            write_shrunk - asked
        );
        println!("MEASURED {line}");
        summary.push(line);
    }

    producer.stop().await;
    let sent = producer.sent();
    let failed = producer.failed();
    let bodies: BTreeSet<String> = sent.iter().map(|s| s.body.clone()).collect();
    let received = eventually("every message sent to be received", || async {
        let got: BTreeSet<String> = consumers
            .iter()
            .flat_map(|c| c.messages())
            .filter(|m| m.topic == topic)
            .map(|m| m.body)
            .collect();
        let missing: Vec<&String> = bodies.difference(&got).collect();
        if missing.is_empty() {
            Ok(got)
        } else {
            Err(format!(
                "{} of {} missing: {:?}",
                missing.len(),
                bodies.len(),
                missing.iter().take(20).collect::<Vec<_>>()
            ))
        }
    })
    .await;
    println!(
        "MEASURED sent {} (failed sends {}: {:?}), received {} distinct, all sent received",
        sent.len(),
        failed.len(),
        failed.iter().take(3).collect::<Vec<_>>(),
        received.len()
    );
    assert!(producer.garbage().is_empty(), "{:?}", producer.garbage());
    for c in &consumers {
        assert!(c.garbage().is_empty(), "{:?}", c.garbage());
    }
    assert!(
        sent.len() > 2 * 35 * RATE as usize / 2,
        "too few messages sent"
    );
    for mut c in consumers {
        c.stop().await;
    }
    op.assert_clean();
}

/// The safety net, on cue: a fake NameServer-and-broker (`tests/support/fake_broker.rs`) stores a
/// message in the first removed queue while it applies the read shrink, i.e. after the operator's
/// drain check (what a producer with a stale route can do against a real broker, at a moment no
/// test can hit). The operator must see the removed queue's max offset grow across the read
/// shrink, write the read queues back up (the write queues stay shrunk), emit a Warning
/// `ReadQueuesRestored`, and drain again: a new quiet window, then a read shrink that holds.
/// `drainQuietSeconds: 3`: the fake has no producers (3 s leave time to read the message).
#[tokio::test]
async fn a_message_landing_after_the_check_restores_the_read_queues() {
    let Some(env) = Env::new("rocketmq-shrink-restore").await else {
        return;
    };
    let topic = format!("Restore_{}", random_suffix(6));
    let fake = support::fake_broker::FakeBroker::start(&topic, FULL).await;
    let op = env.operator_with("op", vec![format!("--sync-period={SYNC_PERIOD}")]);
    env.wait_holder("op").await;
    let spec = |queues: u32| {
        json!({"apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders"},
            "spec": {"topicName": topic, "nameServers": [fake.addr], "sync": "Manage",
                "drainQuietSeconds": 3,
                "brokers": [{"name": "broker-a", "readQueues": queues, "writeQueues": queues}]}})
    };
    env.apply::<Topic>(spec(FULL)).await;
    wait_synced(&env, "True", "InSync").await;
    env.pods("readers", 1).await;
    env.group(
        "readers",
        json!({"topics": ["orders"], "consumers": {"selector": {"matchLabels": {"app": "readers"}}}}),
    )
    .await;
    fake.land_on_read_shrink(1);
    env.apply::<Topic>(spec(SHRUNK)).await;
    let note = eventually("a Warning ReadQueuesRestored Event", || async {
        env.events_of("Topic", "orders")
            .await
            .into_iter()
            .find(|(t, r, _)| t == "Warning" && r == "ReadQueuesRestored")
            .map(|(_, _, note)| note)
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    assert!(
        note.starts_with("broker-a: read queues 4-7 restored: a message landed in a removed queue")
            && note.contains("queue 4: max offset 3 -> 4 (1 message(s) after the check)")
            && note.contains("draining again"),
        "{note}"
    );
    // Until the read shrink holds, Synced says why the queues are back.
    let message = wait_synced(&env, "False", "Draining").await;
    assert!(
        message.contains("broker-a: read queues 4-7 restored: a message landed"),
        "{message}"
    );
    wait_synced(&env, "True", "InSync").await;
    let writes = fake.writes();
    let shape: Vec<(u32, u32, u32)> = writes.iter().map(|(r, w, p, _)| (*r, *w, *p)).collect();
    // Write shrink; read shrink (the message lands); read queues restored; after a new quiet
    // window, the read shrink again, which holds. (A write may be repeated while the route
    // catches up; none ever leaves read < write.)
    let mut distinct = shape.clone();
    distinct.dedup();
    assert_eq!(
        distinct,
        [(8, 4, 6), (4, 4, 6), (8, 4, 6), (4, 4, 6)],
        "writes: {shape:?}"
    );
    // The restore: the first (8, 4) after the first read shrink.
    let first_read_shrink = writes.iter().position(|w| w.0 == 4).unwrap();
    let restored_at = writes[first_read_shrink..]
        .iter()
        .find(|w| w.0 == 8)
        .map(|w| w.3)
        .unwrap();
    let last = writes.last().unwrap().3;
    assert!(
        last - restored_at >= Duration::from_secs(3),
        "the second read shrink came {:?} after the restore: within the quiet window (3 s)",
        last - restored_at
    );
    // The message that landed is in a queue that is read again before the second shrink.
    assert_eq!(fake.max_offsets()[&4], 4);
    let t = env.api::<Topic>().get("orders").await.unwrap();
    assert!(t.status.unwrap().draining_since.is_none());
    println!(
        "MEASURED restore: writes {shape:?}; second read shrink {:?} after the restore",
        last - restored_at
    );
    op.assert_clean();
}

/// The quiet window survives an operator restart: `status.drainingSince` is read back, so the
/// new operator neither starts the window again nor skips it. Against the fake broker (no
/// producers), `drainQuietSeconds: 12`; the operator is stopped (SIGTERM) 3 s into the window and
/// a new one takes over.
#[tokio::test]
async fn the_quiet_window_survives_an_operator_restart() {
    let Some(env) = Env::new("rocketmq-shrink-restart").await else {
        return;
    };
    let topic = format!("Restart_{}", random_suffix(6));
    let fake = support::fake_broker::FakeBroker::start(&topic, FULL).await;
    let mut op = env.operator_with("op", vec![format!("--sync-period={SYNC_PERIOD}")]);
    env.wait_holder("op").await;
    let quiet = 12;
    let spec = |queues: u32| {
        json!({"apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders"},
            "spec": {"topicName": topic, "nameServers": [fake.addr], "sync": "Manage",
                "drainQuietSeconds": quiet,
                "brokers": [{"name": "broker-a", "readQueues": queues, "writeQueues": queues}]}})
    };
    env.apply::<Topic>(spec(FULL)).await;
    wait_synced(&env, "True", "InSync").await;
    env.pods("readers", 1).await;
    env.group(
        "readers",
        json!({"topics": ["orders"], "consumers": {"selector": {"matchLabels": {"app": "readers"}}}}),
    )
    .await;
    env.apply::<Topic>(spec(SHRUNK)).await;
    let since = eventually("status.drainingSince", || async {
        let t = env
            .api::<Topic>()
            .get("orders")
            .await
            .map_err(|e| e.to_string())?;
        t.status
            .and_then(|s| s.draining_since)
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    let message = wait_synced(&env, "False", "Draining").await;
    assert!(message.contains("wait for the quiet window"), "{message}");
    let write_shrunk = fake.writes().first().unwrap().3;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(op.terminate().is_some_and(|s| s.success()));
    let restarted = Instant::now();
    let op2 = env.operator_with("op2", vec![format!("--sync-period={SYNC_PERIOD}")]);
    env.wait_holder("op2").await;
    let took_over = restarted.elapsed();
    // The new operator keeps the start it reads back.
    let t = env.api::<Topic>().get("orders").await.unwrap();
    assert_eq!(t.status.unwrap().draining_since, Some(since.clone()));
    wait_synced(&env, "True", "InSync").await;
    let writes = fake.writes();
    let read_shrunk = writes.iter().find(|w| w.0 == SHRUNK).unwrap().3;
    let after_write = read_shrunk - write_shrunk;
    let after_restart = read_shrunk - restarted;
    println!(
        "MEASURED restart: drainingSince {since:?}; read shrink {after_write:?} after the write \
         shrink, {after_restart:?} after the restart (new operator leading after {took_over:?})"
    );
    // Not skipped: the whole window after the write shrink.
    assert!(
        after_write >= Duration::from_secs(quiet),
        "read shrink {after_write:?} after the write shrink"
    );
    // Not reset: the window did not start again at the restart (that would be 12 s after it).
    assert!(
        after_restart < Duration::from_secs(quiet - 2),
        "read shrink {after_restart:?} after the restart"
    );
    let distinct: Vec<(u32, u32)> =
        writes
            .iter()
            .map(|w| (w.0, w.1))
            .fold(Vec::new(), |mut v, w| {
                if v.last() != Some(&w) {
                    v.push(w);
                }
                v
            });
    assert_eq!(distinct, [(8, 4), (4, 4)], "writes: {writes:?}");
    op2.assert_clean();
}
