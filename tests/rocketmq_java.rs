//! The operator's RocketMQ protocol client (`rebalancer::rocketmq`) against Apache RocketMQ
//! 4.9.7's Java NameServer and Brokers — what most users run — from `ROCKETMQ_JAVA_HOME` (see
//! `tests/support/rocketmq.rs`; `tests/rocketmq_remoting.rs` does the same against
//! rocketmq-rust). Without `ROCKETMQ_JAVA_HOME` every test prints one SKIP line, unless
//! `REBALANCER_REQUIRE_ROCKETMQ_JAVA=1`.
//!
//! The tests share one cluster (one NameServer, two brokers), each with its own topics and
//! groups; the NameServer restart runs its own. Waits poll with a deadline, never sleep blindly.
//!
//! Wire differences from rocketmq-rust 1.0.0 met here (the client handles all of them):
//! - the cluster info's `brokerAddrs` has unquoted integer keys (`{0:"127.0.0.1:20911"}`,
//!   fastjson); the topic route's are quoted;
//! - a topic the NameServer does not know: TOPIC_NOT_EXIST (17) with the remark "No topic route
//!   info in name server for the topic: T", a newline and a FAQ link (rocketmq-rust: "Topic
//!   route was not found");
//! - an unknown request code: the broker answers REQUEST_CODE_NOT_SUPPORTED (3), " request type
//!   9999 not supported"; the NameServer never answers (the caller times out, the connection
//!   stays usable), where rocketmq-rust's answers NO_PERMISSION (16);
//! - the headers need no `serializeTypeCurrentRPC` (rocketmq-rust closes the connection without
//!   it); the client sends it anyway and Java ignores it.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rebalancer::assign::Permission;
use rebalancer::rocketmq::{
    Command, ConsumeStats, Error, NameServers, RemotingClient, Timeouts, TopicConfig, TopicRoute,
    response,
};
use support::rocketmq::{
    CLUSTER, RocketMq, commit, connect, heartbeat, max_offset, send, shared_java, timeouts,
};
use support::{eventually, random_suffix};

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", random_suffix(8))
}

/// Polls the NameServers (through the operator's [`NameServers`] list) until the route of
/// `topic` satisfies `check`.
async fn route_until<F>(list: &NameServers, topic: &str, what: &str, check: F) -> TopicRoute
where
    F: Fn(&TopicRoute) -> Result<(), String>,
{
    eventually(what, || async {
        let route = list.topic_route(topic).await.map_err(|e| e.to_string())?;
        check(&route).map_err(|e| format!("{e}; route {route:?}"))?;
        Ok(route)
    })
    .await
}

fn expect_queues(
    route: &TopicRoute,
    broker: &str,
    read: u32,
    write: u32,
    perm: u32,
) -> Result<(), String> {
    match route.queue(broker) {
        Some(q) if (q.read_queue_nums, q.write_queue_nums, q.perm) == (read, write, perm) => Ok(()),
        other => Err(format!(
            "{broker}: want {read}/{write} perm {perm}, have {other:?}"
        )),
    }
}

fn offsets(stats: &ConsumeStats) -> Vec<(String, String, u32, i64, i64)> {
    stats
        .queues
        .iter()
        .map(|q| {
            (
                q.topic.clone(),
                q.broker_name.clone(),
                q.queue_id,
                q.broker_offset,
                q.consumer_offset,
            )
        })
        .collect()
}

#[tokio::test]
async fn cluster_info_lists_both_java_brokers() {
    let Some(mq) = shared_java("cluster_info_lists_both_java_brokers").await else {
        return;
    };
    assert!(mq.is_java());
    eprintln!(
        "Java RocketMQ (1 NameServer, 2 brokers) registered {:?} after the first spawn",
        mq.started_in()
    );
    // Through one connection, and through the operator's NameServer list.
    let direct = connect(&mq.namesrv_addr())
        .await
        .cluster_info()
        .await
        .unwrap();
    let list = NameServers::new(mq.namesrv_addrs(), timeouts());
    let info = list.cluster_info().await.unwrap();
    assert_eq!(direct, info);
    assert_eq!(
        info.cluster_addr_table.get(CLUSTER),
        Some(&BTreeSet::from([
            "broker-a".to_string(),
            "broker-b".to_string()
        ])),
        "{info:?}"
    );
    for broker in &mq.brokers {
        // `brokerAddrs` comes as `{0:"127.0.0.1:port"}` (fastjson, unquoted key).
        let data = &info.broker_addr_table[&broker.name];
        assert_eq!(data.cluster, CLUSTER);
        assert_eq!(data.broker_name, broker.name);
        assert_eq!(data.master_addr(), Some(broker.addr.as_str()), "{data:?}");
    }
}

#[tokio::test]
async fn a_created_topic_is_routed_by_the_java_name_server() {
    let Some(mq) = shared_java("a_created_topic_is_routed_by_the_java_name_server").await else {
        return;
    };
    let topic = unique("routed");
    let (a, b) = (&mq.brokers[0], &mq.brokers[1]);
    connect(&a.addr)
        .await
        .create_or_update_topic(&TopicConfig::new(&topic, 4, 4, Permission::ReadWrite))
        .await
        .unwrap();
    connect(&b.addr)
        .await
        .create_or_update_topic(&TopicConfig::new(&topic, 2, 2, Permission::ReadOnly))
        .await
        .unwrap();
    let list = NameServers::new(mq.namesrv_addrs(), timeouts());
    let route = route_until(&list, &topic, "both brokers in the route", |r| {
        expect_queues(r, "broker-a", 4, 4, 6)?;
        expect_queues(r, "broker-b", 2, 2, 4)
    })
    .await;
    assert_eq!(route.queue_datas.len(), 2, "{route:?}");
    for broker in [a, b] {
        let data = route.broker(&broker.name).expect("broker data");
        assert_eq!(
            (data.cluster.as_str(), data.master_addr()),
            (CLUSTER, Some(broker.addr.as_str()))
        );
    }
    assert_eq!(
        route.queue("broker-b").unwrap().permission(),
        Permission::ReadOnly
    );

    // An update (fewer write queues, as the operator does before draining) reaches the route.
    connect(&a.addr)
        .await
        .create_or_update_topic(&TopicConfig::new(&topic, 4, 2, Permission::ReadWrite))
        .await
        .unwrap();
    route_until(&list, &topic, "broker-a's write queues down to 2", |r| {
        expect_queues(r, "broker-a", 4, 2, 6)?;
        expect_queues(r, "broker-b", 2, 2, 4)
    })
    .await;
}

#[tokio::test]
async fn a_missing_topic_is_topic_not_found() {
    let Some(mq) = shared_java("a_missing_topic_is_topic_not_found").await else {
        return;
    };
    let topic = unique("missing");
    let e = connect(&mq.namesrv_addr())
        .await
        .topic_route(&topic)
        .await
        .unwrap_err();
    match &e {
        // Apache RocketMQ's remark (MQClientException.faqUrl appended on a second line).
        Error::TopicNotFound {
            topic: t, remark, ..
        } => {
            assert_eq!(t, &topic);
            assert!(
                remark.starts_with(&format!(
                    "No topic route info in name server for the topic: {topic}"
                )),
                "{remark:?}"
            );
            assert!(remark.contains('\n'), "{remark:?}");
        }
        other => panic!("want TopicNotFound, got {other:?}"),
    }
    assert!(e.to_string().contains(&topic), "{e}");
    // An answer is not a reason to fail over: the list returns it as is.
    let list = NameServers::new(mq.namesrv_addrs(), timeouts());
    assert!(matches!(
        list.topic_route(&topic).await,
        Err(Error::TopicNotFound { .. })
    ));
}

/// The broker answers a request code it does not know with REQUEST_CODE_NOT_SUPPORTED (3), as
/// rocketmq-rust's does (remarks differ). The 4.9.7 NameServer does not answer at all: its
/// `DefaultRequestProcessor` returns no response for an unknown code, so the caller times out
/// (rocketmq-rust's answers NO_PERMISSION, 16). Its connection stays usable.
#[tokio::test]
async fn an_unknown_request_code_is_refused_by_the_broker_and_ignored_by_the_name_server() {
    let test = "an_unknown_request_code_is_refused_by_the_broker_and_ignored_by_the_name_server";
    let Some(mq) = shared_java(test).await else {
        return;
    };
    let e = connect(mq.broker_addr())
        .await
        .invoke_ok(Command::new(9999))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Remote { code: response::REQUEST_CODE_NOT_SUPPORTED, remark, .. }
            if remark == " request type 9999 not supported"),
        "{e}"
    );

    let short = Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(1),
    };
    let client = RemotingClient::connect(&mq.namesrv_addr(), short)
        .await
        .unwrap();
    let e = client.invoke(Command::new(9999)).await.unwrap_err();
    assert!(matches!(&e, Error::Timeout { .. }), "{e}");
    assert!(!client.is_closed());
    client.cluster_info().await.unwrap();
}

#[tokio::test]
async fn consumer_ids_are_the_heartbeating_consumers() {
    let Some(mq) = shared_java("consumer_ids_are_the_heartbeating_consumers").await else {
        return;
    };
    let broker = &mq.brokers[1].addr;
    let topic = unique("ids");
    let group = unique("group");
    let admin = connect(broker).await;
    admin
        .create_or_update_topic(&TopicConfig::new(&topic, 2, 2, Permission::ReadWrite))
        .await
        .unwrap();
    // Nobody consumes: SYSTEM_ERROR "no consumer for this group", read as an empty list.
    assert_eq!(
        admin.consumer_ids(&group).await.unwrap(),
        Vec::<String>::new()
    );

    let consumer = connect(broker).await;
    heartbeat(&consumer, "127.0.0.1@java-consumer-1", &group, &topic).await;
    let other = connect(broker).await;
    heartbeat(&other, "127.0.0.1@java-consumer-2", &group, &topic).await;
    let mut ids = admin.consumer_ids(&group).await.unwrap();
    ids.sort();
    assert_eq!(
        ids,
        ["127.0.0.1@java-consumer-1", "127.0.0.1@java-consumer-2"]
    );

    // A consumer whose connection closes leaves the group (the Java broker also sends
    // NOTIFY_CONSUMER_IDS_CHANGED to the one left; the client ignores server requests).
    drop(other);
    eventually("java-consumer-2 to leave the group", || async {
        match admin.consumer_ids(&group).await {
            Ok(ids) if ids == ["127.0.0.1@java-consumer-1"] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    drop(consumer);
}

#[tokio::test]
async fn a_sent_message_shows_in_consume_stats() {
    let Some(mq) = shared_java("a_sent_message_shows_in_consume_stats").await else {
        return;
    };
    let broker = mq.broker_addr();
    let topic = unique("stats");
    let group = unique("group");
    let client = connect(broker).await;
    client
        .create_or_update_topic(&TopicConfig::new(&topic, 2, 2, Permission::ReadWrite))
        .await
        .unwrap();
    // `send` waits until the consume queue (filled asynchronously from the commit log) has it.
    for queue_id in [0, 0, 0, 1] {
        send(&client, &topic, queue_id, "hello").await;
    }
    assert_eq!(max_offset(&client, &topic, 0).await, 3);
    assert_eq!(max_offset(&client, &topic, 1).await, 1);
    heartbeat(&client, "127.0.0.1@java-stats", &group, &topic).await;
    commit(&client, &group, &topic, 0, 2).await;

    let a = "broker-a".to_string();
    let stats = eventually("the broker offsets 3 and 1, the committed 2", || async {
        let stats = client
            .consume_stats(&group, Some(&topic))
            .await
            .map_err(|e| e.to_string())?;
        let want = vec![
            (topic.clone(), a.clone(), 0, 3, 2),
            (topic.clone(), a.clone(), 1, 1, 0),
        ];
        if offsets(&stats) == want {
            Ok(stats)
        } else {
            Err(format!("{stats:?}"))
        }
    })
    .await;
    assert_eq!(stats.total_lag(), 2);
    assert_eq!(stats.queue(&topic, "broker-a", 0).unwrap().lag(), 1);

    // Without a topic: every topic the group has offsets for (this one).
    let all = client.consume_stats(&group, None).await.unwrap();
    assert_eq!(offsets(&all), offsets(&stats));

    // A group with no offsets on an existing topic: every queue, consumer offset 0.
    let fresh = client
        .consume_stats(&unique("fresh"), Some(&topic))
        .await
        .unwrap();
    assert_eq!(
        offsets(&fresh),
        vec![
            (topic.clone(), a.clone(), 0, 3, 0),
            (topic.clone(), a.clone(), 1, 1, 0)
        ]
    );
}

/// `stop_namesrv`/`start_namesrv` on the Java flavour: the broker registers again within its
/// 10 s period and the route comes back.
#[tokio::test]
async fn a_restarted_java_name_server_learns_the_broker_again() {
    let test = "a_restarted_java_name_server_learns_the_broker_again";
    let Some(mq) = RocketMq::start_java_with(test, 1, 1).await else {
        return;
    };
    let topic = unique("restart");
    connect(mq.broker_addr())
        .await
        .create_or_update_topic(&TopicConfig::new(&topic, 3, 3, Permission::ReadWrite))
        .await
        .unwrap();
    let list = NameServers::new(mq.namesrv_addrs(), timeouts());
    route_until(&list, &topic, "the topic routed", |r| {
        expect_queues(r, "broker-a", 3, 3, 6)
    })
    .await;

    let stopping = Instant::now();
    mq.stop_namesrv();
    eprintln!("Java NameServer stopped in {:?}", stopping.elapsed());
    let e = RemotingClient::connect(&mq.namesrv_addr(), timeouts())
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Connect { .. }), "{e}");

    let restarted = Instant::now();
    mq.start_namesrv().unwrap();
    mq.wait_registered(support::deadline()).await.unwrap();
    eprintln!(
        "restarted Java NameServer knows the broker again after {:?}",
        restarted.elapsed()
    );
    route_until(
        &list,
        &topic,
        "the route on the restarted NameServer",
        |r| expect_queues(r, "broker-a", 3, 3, 6),
    )
    .await;
}
