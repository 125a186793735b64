//! The remoting client (`rebalancer::rocketmq`) against real rocketmq-rust NameServer and Broker
//! processes from `ROCKETMQ_BIN` (see `tests/support/rocketmq.rs`). Without it every test prints
//! one SKIP line, unless `REBALANCER_REQUIRE_ROCKETMQ=1`.
//!
//! The read-mostly tests share one cluster (one NameServer, two brokers); the outage test runs
//! its own (two NameServers, one broker). Waits poll with a deadline, never sleep blindly.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rebalancer::assign::Permission;
use rebalancer::rocketmq::{
    Command, Connections, ConsumeStats, Error, NameServers, RemotingClient, TopicConfig,
    TopicRoute, response,
};
use support::rocketmq::{CLUSTER, RocketMq, commit, connect, heartbeat, send, shared, timeouts};
use support::tcp_proxy::TcpProxy;
use support::{eventually, random_suffix};

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", random_suffix(8))
}

/// Polls the NameServer until the route of `topic` satisfies `check`.
async fn route_until<F>(namesrv: &str, topic: &str, what: &str, check: F) -> TopicRoute
where
    F: Fn(&TopicRoute) -> Result<(), String>,
{
    eventually(what, || async {
        let route = RemotingClient::connect(namesrv, timeouts())
            .await
            .map_err(|e| e.to_string())?
            .topic_route(topic)
            .await
            .map_err(|e| e.to_string())?;
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
async fn cluster_info_lists_both_brokers_of_the_cluster() {
    let Some(mq) = shared("cluster_info_lists_both_brokers_of_the_cluster").await else {
        return;
    };
    let info = connect(&mq.namesrv_addr())
        .await
        .cluster_info()
        .await
        .unwrap();
    assert_eq!(
        info.cluster_addr_table.get(CLUSTER),
        Some(&BTreeSet::from([
            "broker-a".to_string(),
            "broker-b".to_string()
        ])),
        "{info:?}"
    );
    for broker in &mq.brokers {
        let data = &info.broker_addr_table[&broker.name];
        assert_eq!(data.cluster, CLUSTER);
        assert_eq!(data.broker_name, broker.name);
        assert_eq!(data.master_addr(), Some(broker.addr.as_str()), "{data:?}");
    }
}

#[tokio::test]
async fn a_created_topic_is_routed_and_follows_updates() {
    let Some(mq) = shared("a_created_topic_is_routed_and_follows_updates").await else {
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
    let ns = mq.namesrv_addr();
    let route = route_until(&ns, &topic, "both brokers in the route", |r| {
        expect_queues(r, "broker-a", 4, 4, 6)?;
        expect_queues(r, "broker-b", 2, 2, 4)
    })
    .await;
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

    // Queue counts and permission change in place.
    connect(&a.addr)
        .await
        .create_or_update_topic(&TopicConfig::new(&topic, 8, 6, Permission::WriteOnly))
        .await
        .unwrap();
    let route = route_until(&ns, &topic, "broker-a's new queues", |r| {
        expect_queues(r, "broker-a", 8, 6, 2)?;
        expect_queues(r, "broker-b", 2, 2, 4)
    })
    .await;
    assert_eq!(
        route.queue("broker-a").unwrap().permission(),
        Permission::WriteOnly
    );

    // The same through a NameServer list.
    let list = NameServers::new([ns], timeouts());
    let via_list = list.topic_route(&topic).await.unwrap();
    assert_eq!(via_list.queue("broker-a"), route.queue("broker-a"));
}

#[tokio::test]
async fn a_missing_topic_is_topic_not_found() {
    let Some(mq) = shared("a_missing_topic_is_topic_not_found").await else {
        return;
    };
    let topic = unique("missing");
    let e = connect(&mq.namesrv_addr())
        .await
        .topic_route(&topic)
        .await
        .unwrap_err();
    match &e {
        // rocketmq-rust 1.0.0's remark; Apache RocketMQ says "No topic route info in name
        // server for the topic: ...".
        Error::TopicNotFound {
            topic: t, remark, ..
        } => {
            assert_eq!(t, &topic);
            assert_eq!(remark, "Topic route was not found");
        }
        other => panic!("want TopicNotFound, got {other:?}"),
    }
    assert!(e.to_string().contains(&topic), "{e}");
    // An answer is not a reason to fail over: the list returns it as is.
    let list = NameServers::new([mq.namesrv_addr()], timeouts());
    assert!(matches!(
        list.topic_route(&topic).await,
        Err(Error::TopicNotFound { .. })
    ));
}

#[tokio::test]
async fn an_unknown_request_code_is_a_remote_error() {
    let Some(mq) = shared("an_unknown_request_code_is_a_remote_error").await else {
        return;
    };
    // The broker: REQUEST_CODE_NOT_SUPPORTED (3), rocketmq-rust's remark (Apache RocketMQ:
    // " request type 9999 not supported").
    let e = connect(mq.broker_addr())
        .await
        .invoke_ok(Command::new(9999))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Remote { code: response::REQUEST_CODE_NOT_SUPPORTED, remark, .. }
            if remark == "Protocol request is unsupported"),
        "{e}"
    );
    // The NameServer of rocketmq-rust 1.0.0 answers NO_PERMISSION (16) instead (Apache
    // RocketMQ's NameServer: REQUEST_CODE_NOT_SUPPORTED).
    let e = connect(&mq.namesrv_addr())
        .await
        .invoke_ok(Command::new(9999))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Remote { code: 16, remark, .. }
            if remark == "Authentication credentials are invalid"),
        "{e}"
    );
}

#[tokio::test]
async fn consumer_ids_are_the_connected_consumers() {
    let Some(mq) = shared("consumer_ids_are_the_connected_consumers").await else {
        return;
    };
    let broker = mq.broker_addr();
    let group = unique("group");
    let admin = connect(broker).await;
    // Nobody consumes: the broker answers SYSTEM_ERROR "no consumer for this group", read as
    // an empty list.
    assert_eq!(
        admin.consumer_ids(&group).await.unwrap(),
        Vec::<String>::new()
    );

    let consumer = connect(broker).await;
    heartbeat(&consumer, "127.0.0.1@consumer-1", &group, "TBW102").await;
    let other = connect(broker).await;
    heartbeat(&other, "127.0.0.1@consumer-2", &group, "TBW102").await;
    let mut ids = admin.consumer_ids(&group).await.unwrap();
    ids.sort();
    assert_eq!(ids, ["127.0.0.1@consumer-1", "127.0.0.1@consumer-2"]);

    // A consumer whose connection closes leaves the group.
    drop(other);
    eventually("consumer-2 to leave the group", || async {
        match admin.consumer_ids(&group).await {
            Ok(ids) if ids == ["127.0.0.1@consumer-1"] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    drop(consumer);
}

#[tokio::test]
async fn consume_stats_reports_broker_and_consumer_offsets() {
    let Some(mq) = shared("consume_stats_reports_broker_and_consumer_offsets").await else {
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
    for queue_id in [0, 0, 0, 1] {
        send(&client, &topic, queue_id, "hello").await;
    }
    // A heartbeat creates the subscription group, without which offsets cannot be committed
    // (SUBSCRIPTION_GROUP_NOT_EXIST, 26).
    heartbeat(&client, "127.0.0.1@stats", &group, &topic).await;
    commit(&client, &group, &topic, 0, 2).await;

    let a = "broker-a".to_string();
    let stats = eventually("the broker offsets to reach 3 and 1", || async {
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
    // A topic the broker does not have: no queues (not an error).
    let none = client
        .consume_stats(&group, Some(&unique("nope")))
        .await
        .unwrap();
    assert!(none.queues.is_empty(), "{none:?}");
}

#[tokio::test]
async fn a_stopped_name_server_fails_fast_and_the_list_fails_over() {
    let test = "a_stopped_name_server_fails_fast_and_the_list_fails_over";
    let Some(mq) = RocketMq::start_with(test, 1, 2).await else {
        return;
    };
    let addrs = mq.namesrv_addrs();
    let topic = unique("failover");
    connect(mq.broker_addr())
        .await
        .create_or_update_topic(&TopicConfig::new(&topic, 3, 3, Permission::ReadWrite))
        .await
        .unwrap();
    for ns in &addrs {
        route_until(ns, &topic, "the topic on every NameServer", |r| {
            expect_queues(r, "broker-a", 3, 3, 6)
        })
        .await;
    }
    let list = NameServers::new(addrs.clone(), timeouts());

    mq.stop_namesrv();
    // A stopped NameServer: Connect, at once (a refused loopback connection).
    let started = Instant::now();
    let e = RemotingClient::connect(&addrs[0], timeouts())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Connect { addr, .. } if addr == &addrs[0]),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // The list moves on to the second NameServer.
    let started = Instant::now();
    let route = list.topic_route(&topic).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    expect_queues(&route, "broker-a", 3, 3, 6).unwrap();
    assert!(
        list.cluster_info()
            .await
            .unwrap()
            .broker_addr_table
            .contains_key("broker-a")
    );

    // Only the stopped one: every address's error, in order.
    let dead = NameServers::new([addrs[0].clone()], timeouts());
    match dead.topic_route(&topic).await {
        Err(Error::NameServers(errors)) => {
            assert!(
                matches!(errors.as_slice(), [Error::Connect { .. }]),
                "{errors:?}"
            )
        }
        other => panic!("want NameServers([Connect]), got {other:?}"),
    }

    // Back up: the broker registers again (within its 10 s period) and the route returns.
    mq.start_namesrv().unwrap();
    route_until(
        &addrs[0],
        &topic,
        "the route on the restarted NameServer",
        |r| expect_queues(r, "broker-a", 3, 3, 6),
    )
    .await;
}

/// Requests share one kept connection per address; a connection the server side drops is
/// replaced on the next request, which succeeds.
#[tokio::test]
async fn kept_connections_are_reused_and_replaced_when_dropped() {
    let test = "kept_connections_are_reused_and_replaced_when_dropped";
    let Some(mq) = shared(test).await else {
        return;
    };
    let proxy = TcpProxy::start(&mq.namesrv_addr()).await;
    let connections = Arc::new(Connections::new(timeouts()));
    let name_servers = NameServers::with_connections([proxy.addr.clone()], connections.clone());
    for _ in 0..5 {
        name_servers.cluster_info().await.expect("cluster info");
    }
    assert_eq!(proxy.accepted(), 1, "five requests, one connection");
    assert_eq!(connections.len(), 1);

    // Whether the client's reader has seen the close yet or the request finds out, the call
    // succeeds on a new connection.
    proxy.cut();
    name_servers
        .cluster_info()
        .await
        .expect("cluster info after the cut");
    name_servers.cluster_info().await.expect("cluster info");
    assert_eq!(proxy.accepted(), 2, "one new connection after the cut");
    assert_eq!(connections.len(), 1);
}
