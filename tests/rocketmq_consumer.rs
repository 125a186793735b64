//! The consumer harness (`tests/support/consumer.rs`): real `rocketmq-client-rust` push consumers
//! (`ROCKETMQ_CONSUMER`, built from `hack/rocketmq-consumer`) against real rocketmq-rust
//! NameServer and Broker processes (`ROCKETMQ_BIN`). Without either every test prints one SKIP
//! line, unless `REBALANCER_REQUIRE_ROCKETMQ=1`.
//!
//! The tests share one cluster (one NameServer, brokers `broker-a` and `broker-b`); each creates
//! its own topic, on `broker-a` only, and its own group. Waits poll with a deadline.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rebalancer::assign::Permission;
use rebalancer::rocketmq::TopicConfig;
use support::consumer::{Consumer, ConsumerConfig, Queue};
use support::rocketmq::{RocketMq, connect, send, shared};
use support::{deadline, eventually, random_suffix};

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", random_suffix(8))
}

/// Creates `topic` with `queues` read/write queues on `broker-a` and waits until the NameServer
/// routes it (a consumer reads the route once at start, then every 30 s).
async fn create_topic(mq: &RocketMq, topic: &str, queues: u32) -> BTreeSet<Queue> {
    connect(mq.broker_addr())
        .await
        .create_or_update_topic(&TopicConfig::new(
            topic,
            queues,
            queues,
            Permission::ReadWrite,
        ))
        .await
        .unwrap();
    let ns = mq.namesrv_addr();
    eventually("the topic's route", || async {
        let route = connect(&ns)
            .await
            .topic_route(topic)
            .await
            .map_err(|e| e.to_string())?;
        match route.queue("broker-a") {
            Some(q) if q.read_queue_nums == queues => Ok(()),
            _ => Err(format!("{route:?}")),
        }
    })
    .await;
    (0..queues)
        .map(|i| (topic.to_string(), "broker-a".to_string(), i))
        .collect()
}

fn config(mq: &RocketMq, group: &str, topic: &str, n: u32) -> ConsumerConfig {
    ConsumerConfig {
        namesrv: mq.namesrv_addr(),
        group: group.to_string(),
        topics: vec![topic.to_string()],
        // Labels only, in the loopback range; distinct per consumer.
        client_ip: format!("127.1.0.{n}"),
        instance_name: format!("{group}-c{n}"),
    }
}

/// Starts consumers `1..=n` of `group` on `topic`.
async fn start_consumers(
    test: &str,
    mq: &RocketMq,
    group: &str,
    topic: &str,
    n: u32,
) -> Option<Vec<Consumer>> {
    let mut consumers = Vec::new();
    for i in 1..=n {
        let config = config(mq, group, topic, i);
        let consumer = Consumer::start(test, &config).await?;
        assert_eq!(consumer.client_id(), config.client_id());
        consumers.push(consumer);
    }
    Some(consumers)
}

/// The broker's consumer ids of `group`, sorted.
async fn broker_ids(mq: &RocketMq, group: &str) -> Result<Vec<String>, String> {
    let mut ids = connect(mq.broker_addr())
        .await
        .consumer_ids(group)
        .await
        .map_err(|e| e.to_string())?;
    ids.sort();
    Ok(ids)
}

/// Waits until the consumers hold `all` of `topic` between them, each exactly the number in
/// `sizes` (in order), disjoint; returns each one's queues. Fails with everyone's view.
async fn wait_split(
    consumers: &[&Consumer],
    topic: &str,
    all: &BTreeSet<Queue>,
    sizes: &[usize],
) -> Vec<BTreeSet<Queue>> {
    let until = Instant::now() + deadline();
    loop {
        let held: Vec<BTreeSet<Queue>> = consumers.iter().map(|c| c.queues_of(topic)).collect();
        let union: BTreeSet<Queue> = held.iter().flatten().cloned().collect();
        let total: usize = held.iter().map(BTreeSet::len).sum();
        let counts: Vec<usize> = held.iter().map(BTreeSet::len).collect();
        if &union == all && total == all.len() && counts == sizes {
            return held;
        }
        if Instant::now() > until {
            let views: Vec<String> = consumers
                .iter()
                .zip(&held)
                .map(|(c, q)| format!("{}: {q:?}\n{}", c.client_id(), c.log_tail()))
                .collect();
            panic!(
                "queues of {topic} not split {sizes:?} within {:?}:\n{}",
                deadline(),
                views.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_consumers_split_four_queues_and_the_broker_lists_both() {
    let test = "two_consumers_split_four_queues_and_the_broker_lists_both";
    if support::consumer::binary(test).is_none() {
        return;
    }
    let Some(mq) = shared(test).await else { return };
    let topic = unique("split");
    let group = unique("group");
    let all = create_topic(mq, &topic, 4).await;

    // Alone, the first consumer holds every queue.
    let Some(first) = Consumer::start(test, &config(mq, &group, &topic, 1)).await else {
        return;
    };
    first
        .wait_queues(
            |q| q.iter().filter(|(t, _, _)| t == &topic).count() == 4,
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(first.queues_of(&topic), all);

    // A second one joins: two each, disjoint, together all four.
    let joined = Instant::now();
    let Some(second) = Consumer::start(test, &config(mq, &group, &topic, 2)).await else {
        return;
    };
    let started = joined.elapsed();
    let held = wait_split(&[&first, &second], &topic, &all, &[2, 2]).await;
    println!(
        "{test}: join: started in {started:?}, queues split {:?} after the join began",
        joined.elapsed()
    );
    assert!(held[0].is_disjoint(&held[1]), "{held:?}");
    // AllocateMessageQueueAveragely: client ids sorted, consecutive blocks of queues.
    assert_eq!(
        held[0],
        all.iter().take(2).cloned().collect(),
        "127.1.0.1@… sorts first and takes queues 0 and 1"
    );

    let want = vec![
        first.client_id().to_string(),
        second.client_id().to_string(),
    ];
    assert_eq!(
        want,
        [
            config(mq, &group, &topic, 1).client_id(),
            config(mq, &group, &topic, 2).client_id()
        ]
    );
    let ids = eventually("the broker to list both consumers", || async {
        let ids = broker_ids(mq, &group).await?;
        if ids == want {
            Ok(ids)
        } else {
            Err(format!("{ids:?}"))
        }
    })
    .await;
    assert_eq!(ids, want);

    for c in [&first, &second] {
        assert_eq!(c.garbage(), Vec::<String>::new(), "{}", c.client_id());
    }
}

#[tokio::test]
async fn when_one_of_three_stops_the_other_two_take_its_queues() {
    let test = "when_one_of_three_stops_the_other_two_take_its_queues";
    if support::consumer::binary(test).is_none() {
        return;
    }
    let Some(mq) = shared(test).await else { return };
    let topic = unique("leave");
    let group = unique("group");
    let all = create_topic(mq, &topic, 4).await;
    let Some(mut consumers) = start_consumers(test, mq, &group, &topic, 3).await else {
        return;
    };
    {
        let refs: Vec<&Consumer> = consumers.iter().collect();
        // Averagely over 4 queues and 3 clients: 2, 1, 1.
        wait_split(&refs, &topic, &all, &[2, 1, 1]).await;
    }
    let ids: Vec<String> = consumers
        .iter()
        .map(|c| c.client_id().to_string())
        .collect();
    eventually("the broker to list all three", || async {
        let listed = broker_ids(mq, &group).await?;
        if listed == ids {
            Ok(())
        } else {
            Err(format!("{listed:?}"))
        }
    })
    .await;

    // The middle one leaves (graceful: SIGTERM, the client unregisters).
    let left = Instant::now();
    let mut gone = consumers.remove(1);
    gone.stop().await;
    let stopped = left.elapsed();
    assert!(gone.stopped());
    let refs: Vec<&Consumer> = consumers.iter().collect();
    let held = wait_split(&refs, &topic, &all, &[2, 2]).await;
    println!(
        "{test}: leave: stopped in {stopped:?}, queues taken over {:?} after the stop began",
        left.elapsed()
    );
    assert!(held[0].is_disjoint(&held[1]), "{held:?}");

    let want = vec![ids[0].clone(), ids[2].clone()];
    eventually("the broker's list to shrink", || async {
        let listed = broker_ids(mq, &group).await?;
        if listed == want {
            Ok(())
        } else {
            Err(format!("{listed:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn forty_messages_are_each_consumed_exactly_once() {
    let test = "forty_messages_are_each_consumed_exactly_once";
    if support::consumer::binary(test).is_none() {
        return;
    }
    let Some(mq) = shared(test).await else { return };
    let topic = unique("messages");
    let group = unique("group");
    let all = create_topic(mq, &topic, 4).await;
    let Some(mut consumers) = start_consumers(test, mq, &group, &topic, 2).await else {
        return;
    };
    // A settled assignment first, so that no queue changes hands while messages flow.
    let held = {
        let refs: Vec<&Consumer> = consumers.iter().collect();
        wait_split(&refs, &topic, &all, &[2, 2]).await
    };

    const N: u32 = 40;
    let producer = connect(mq.broker_addr()).await;
    for i in 0..N {
        send(&producer, &topic, i % 4, &format!("{topic}-{i}")).await;
    }
    let received = eventually("all 40 messages consumed", || async {
        let got: Vec<_> = consumers.iter().flat_map(|c| c.messages()).collect();
        if got.len() >= N as usize {
            Ok(got)
        } else {
            Err(format!("{} of {N}", got.len()))
        }
    })
    .await;

    let mut bodies: BTreeMap<String, usize> = BTreeMap::new();
    for m in &received {
        assert_eq!(
            (m.topic.as_str(), m.broker_name.as_str()),
            (topic.as_str(), "broker-a")
        );
        assert_eq!(
            m.body,
            format!("{topic}-{}", m.queue_offset as u32 * 4 + m.queue_id),
            "{m:?}"
        );
        *bodies.entry(m.body.clone()).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = (0..N).map(|i| (format!("{topic}-{i}"), 1)).collect();
    assert_eq!(bodies, want, "each body exactly once across the consumers");
    // Each consumer got the messages of the queues it holds, and only those.
    for (c, queues) in consumers.iter().zip(&held) {
        let from: BTreeSet<Queue> = c
            .messages()
            .iter()
            .map(|m| (m.topic.clone(), m.broker_name.clone(), m.queue_id))
            .collect();
        assert_eq!(&from, queues, "{}", c.client_id());
        assert_eq!(c.messages().len(), 20, "{}", c.client_id());
    }

    // End of stdin stops a consumer too (the harness's backstop when the test process dies).
    consumers[1].close_stdin().await;
    assert!(consumers[1].stopped());
}

#[tokio::test]
async fn broadcast_consumers_each_hold_and_read_every_queue() {
    let test = "broadcast_consumers_each_hold_and_read_every_queue";
    if support::consumer::binary(test).is_none() {
        return;
    }
    let Some(mq) = shared(test).await else { return };
    let topic = unique("broadcast");
    let group = unique("group");
    let all = create_topic(mq, &topic, 4).await;
    let mut consumers = Vec::new();
    for n in 1..=2 {
        let config = config(mq, &group, &topic, n);
        let Some(c) = Consumer::start_with(test, &config, &["--broadcast"]).await else {
            return;
        };
        consumers.push(c);
    }
    for c in &consumers {
        // No %RETRY% topic in broadcasting mode: exactly the topic's queues.
        let held = c.wait_queues(|q| q == &all, deadline()).await.unwrap();
        assert_eq!(held, all);
    }
    let producer = connect(mq.broker_addr()).await;
    for i in 0..8 {
        send(&producer, &topic, i % 4, &format!("{topic}-{i}")).await;
    }
    let want: BTreeSet<String> = (0..8).map(|i| format!("{topic}-{i}")).collect();
    for c in &consumers {
        eventually("every message at every consumer", || async {
            let got: BTreeSet<String> = c.messages().into_iter().map(|m| m.body).collect();
            if got == want {
                Ok(())
            } else {
                Err(format!("{} has {got:?}", c.client_id()))
            }
        })
        .await;
    }
}

/// The operator's `RemotingClient::held_queues` (`GET_CONSUMER_RUNNING_INFO`, forwarded by the
/// broker to the client) answers exactly what each client reports holding, retry topic included;
/// an unknown client id is an error, not an empty answer.
#[tokio::test]
async fn asked_through_the_broker_each_client_tells_the_queues_it_holds() {
    let test = "asked_through_the_broker_each_client_tells_the_queues_it_holds";
    if support::consumer::binary(test).is_none() {
        return;
    }
    let Some(mq) = shared(test).await else { return };
    let topic = unique("asked");
    let group = unique("group");
    let all = create_topic(mq, &topic, 4).await;
    let Some(a) = Consumer::start(test, &config(mq, &group, &topic, 1)).await else {
        return;
    };
    let Some(b) = Consumer::start(test, &config(mq, &group, &topic, 2)).await else {
        return;
    };
    wait_split(&[&a, &b], &topic, &all, &[2, 2]).await;
    let broker = connect(mq.broker_addr()).await;
    // The broker lists both with the language they declared: what the operator's probe decides
    // on (rocketmq-client-rust is one of the default --client-probe-languages).
    let listed = broker.consumer_connections(&group).await.unwrap();
    let ids: Vec<(&str, &str)> = listed
        .iter()
        .map(|c| (c.client_id.as_str(), c.language.as_str()))
        .collect();
    let mut expected = vec![(a.client_id(), "RUST"), (b.client_id(), "RUST")];
    expected.sort();
    assert_eq!(ids, expected, "{listed:?}");
    assert!(
        broker
            .consumer_connections(&unique("nobody"))
            .await
            .unwrap()
            .is_empty()
    );
    for c in [&a, &b] {
        let answered: BTreeSet<Queue> = eventually("the client's answer to match", || async {
            let answer: BTreeSet<Queue> = broker
                .held_queues(&group, c.client_id(), Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .collect();
            if answer == c.queues() {
                Ok(answer)
            } else {
                Err(format!("answered {answer:?}, reports {:?}", c.queues()))
            }
        })
        .await;
        assert_eq!(
            answered.iter().filter(|(t, _, _)| t == &topic).count(),
            2,
            "{answered:?}"
        );
    }
    let unknown = broker
        .held_queues(&group, "127.0.0.9@nobody", Duration::from_secs(5))
        .await;
    assert!(unknown.is_err(), "{unknown:?}");
}
