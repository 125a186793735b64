//! The operator's RocketMQ protocol client (`rebalancer::rocketmq`) against real servers, one
//! suite for both implementations (see `tests/support/rocketmq.rs`): each test body takes a
//! [`RocketMq`] and runs twice, as `rust_*` against rocketmq-rust 1.0.0's NameServer and Brokers
//! (`ROCKETMQ_BIN`) and as `java_*` against Apache RocketMQ 4.9.7's — what most users run —
//! (`ROCKETMQ_JAVA_HOME`). Without the servers of a flavour its tests print one SKIP line each,
//! unless `REBALANCER_REQUIRE_ROCKETMQ=1` / `REBALANCER_REQUIRE_ROCKETMQ_JAVA=1`.
//!
//! The read-mostly tests share one cluster per flavour (one NameServer, two brokers), each with
//! its own topics and groups; the NameServer outage runs its own (two NameServers, one broker).
//! Waits poll with a deadline, never sleep blindly.
//!
//! Where the implementations differ, the body branches on [`RocketMq::is_java`] and asserts each
//! one's behaviour. Wire differences met here (the client handles all of them):
//! - the Java cluster info's `brokerAddrs` has unquoted integer keys (`{0:"127.0.0.1:20911"}`,
//!   fastjson); the topic route's are quoted;
//! - a topic the NameServer does not know: TOPIC_NOT_EXIST (17) with the remark "Topic route was
//!   not found" (rust), or "No topic route info in name server for the topic: T", a newline and
//!   a FAQ link (Java; the client quotes every remark on one line);
//! - an unknown request code: both brokers answer REQUEST_CODE_NOT_SUPPORTED (3), remarks differ;
//!   rocketmq-rust's NameServer answers NO_PERMISSION (16), Java's never answers (the caller
//!   times out, the connection stays usable);
//! - the headers need `serializeTypeCurrentRPC` for rocketmq-rust (it closes the connection
//!   without it); the client sends it and Java ignores it.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rebalancer::assign::Permission;
use rebalancer::rocketmq::{
    Command, Connections, ConsumeStats, Error, NameServers, RemotingClient, Timeouts, TopicConfig,
    TopicRoute, response,
};
use support::rocketmq::{
    CLUSTER, RocketMq, both, commit, connect, heartbeat, max_offset, send, timeouts,
};
use support::tcp_proxy::TcpProxy;
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

/// Polls the NameServer at `namesrv` (a new connection each time) until the route of `topic`
/// satisfies `check`.
async fn route_until_at<F>(namesrv: &str, topic: &str, what: &str, check: F) -> TopicRoute
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

fn flavour(mq: &RocketMq) -> &'static str {
    if mq.is_java() { "Java" } else { "rust" }
}

both!(
    cluster_info_lists_both_brokers_of_the_cluster,
    rust_cluster_info_lists_both_brokers_of_the_cluster,
    java_cluster_info_lists_both_brokers_of_the_cluster
);
async fn cluster_info_lists_both_brokers_of_the_cluster(mq: &RocketMq) {
    eprintln!(
        "{} RocketMQ (1 NameServer, 2 brokers) registered {:?} after the first spawn",
        flavour(mq),
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
        // Java's `brokerAddrs` comes as `{0:"127.0.0.1:port"}` (fastjson, unquoted key).
        let data = &info.broker_addr_table[&broker.name];
        assert_eq!(data.cluster, CLUSTER);
        assert_eq!(data.broker_name, broker.name);
        assert_eq!(data.master_addr(), Some(broker.addr.as_str()), "{data:?}");
    }
}

both!(
    a_created_topic_is_routed_and_follows_updates,
    rust_a_created_topic_is_routed_and_follows_updates,
    java_a_created_topic_is_routed_and_follows_updates
);
async fn a_created_topic_is_routed_and_follows_updates(mq: &RocketMq) {
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
    let route = route_until_at(&ns, &topic, "both brokers in the route", |r| {
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

    // An update (fewer write queues, as the operator does before draining) reaches the route,
    // read through the operator's NameServer list.
    let list = NameServers::new(mq.namesrv_addrs(), timeouts());
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

    // Queue counts and permission change in place.
    connect(&a.addr)
        .await
        .create_or_update_topic(&TopicConfig::new(&topic, 8, 6, Permission::WriteOnly))
        .await
        .unwrap();
    let route = route_until_at(&ns, &topic, "broker-a's new queues", |r| {
        expect_queues(r, "broker-a", 8, 6, 2)?;
        expect_queues(r, "broker-b", 2, 2, 4)
    })
    .await;
    assert_eq!(
        route.queue("broker-a").unwrap().permission(),
        Permission::WriteOnly
    );

    // The same through a NameServer list.
    let via_list = list.topic_route(&topic).await.unwrap();
    assert_eq!(via_list.queue("broker-a"), route.queue("broker-a"));
}

both!(
    a_missing_topic_is_topic_not_found,
    rust_a_missing_topic_is_topic_not_found,
    java_a_missing_topic_is_topic_not_found
);
async fn a_missing_topic_is_topic_not_found(mq: &RocketMq) {
    let topic = unique("missing");
    let e = connect(&mq.namesrv_addr())
        .await
        .topic_route(&topic)
        .await
        .unwrap_err();
    match &e {
        Error::TopicNotFound {
            topic: t, remark, ..
        } => {
            assert_eq!(t, &topic);
            if mq.is_java() {
                // Apache RocketMQ's remark, with MQClientException.faqUrl on a second line: the
                // client quotes it on one line (whitespace runs as one space).
                assert_eq!(
                    remark,
                    &format!(
                        "No topic route info in name server for the topic: {topic} \
                         See http://rocketmq.apache.org/docs/faq/ for further details."
                    )
                );
                assert!(!remark.contains('\n'), "{remark:?}");
            } else {
                // rocketmq-rust 1.0.0's remark.
                assert_eq!(remark, "Topic route was not found");
            }
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

both!(
    an_unknown_request_code_is_refused_by_the_broker,
    rust_an_unknown_request_code_is_refused_by_the_broker,
    java_an_unknown_request_code_is_refused_by_the_broker
);
/// Both brokers answer a request code they do not know with REQUEST_CODE_NOT_SUPPORTED (3),
/// with different remarks. The NameServers differ: rocketmq-rust 1.0.0's answers NO_PERMISSION
/// (16); the 4.9.7 one does not answer at all (its `DefaultRequestProcessor` returns no response
/// for an unknown code), so the caller times out, and its connection stays usable.
async fn an_unknown_request_code_is_refused_by_the_broker(mq: &RocketMq) {
    let e = connect(mq.broker_addr())
        .await
        .invoke_ok(Command::new(9999))
        .await
        .unwrap_err();
    let remark = if mq.is_java() {
        // " request type 9999 not supported", quoted on one line without the leading space.
        "request type 9999 not supported"
    } else {
        "Protocol request is unsupported"
    };
    assert!(
        matches!(&e, Error::Remote { code: response::REQUEST_CODE_NOT_SUPPORTED, remark: r, .. }
            if r == remark),
        "{e}"
    );

    if mq.is_java() {
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
    } else {
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
}

both!(
    consumer_ids_are_the_heartbeating_consumers,
    rust_consumer_ids_are_the_heartbeating_consumers,
    java_consumer_ids_are_the_heartbeating_consumers
);
async fn consumer_ids_are_the_heartbeating_consumers(mq: &RocketMq) {
    for (broker, topic) in [
        // A consumer of the default topic every broker has (no topic created).
        (mq.broker_addr(), "TBW102".to_string()),
        // A consumer of a topic of its own, on the other broker.
        (mq.brokers[1].addr.as_str(), unique("ids")),
    ] {
        let group = unique("group");
        let admin = connect(broker).await;
        if topic != "TBW102" {
            admin
                .create_or_update_topic(&TopicConfig::new(&topic, 2, 2, Permission::ReadWrite))
                .await
                .unwrap();
        }
        // Nobody consumes: the broker answers SYSTEM_ERROR "no consumer for this group", read
        // as an empty list.
        assert_eq!(
            admin.consumer_ids(&group).await.unwrap(),
            Vec::<String>::new()
        );

        let consumer = connect(broker).await;
        heartbeat(&consumer, "127.0.0.1@consumer-1", &group, &topic).await;
        let other = connect(broker).await;
        heartbeat(&other, "127.0.0.1@consumer-2", &group, &topic).await;
        let mut ids = admin.consumer_ids(&group).await.unwrap();
        ids.sort();
        assert_eq!(ids, ["127.0.0.1@consumer-1", "127.0.0.1@consumer-2"]);

        // A consumer whose connection closes leaves the group (the Java broker also sends
        // NOTIFY_CONSUMER_IDS_CHANGED to the one left; the client ignores server requests).
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
}

both!(
    consume_stats_reports_broker_and_consumer_offsets,
    rust_consume_stats_reports_broker_and_consumer_offsets,
    java_consume_stats_reports_broker_and_consumer_offsets
);
async fn consume_stats_reports_broker_and_consumer_offsets(mq: &RocketMq) {
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
    // A heartbeat creates the subscription group, without which offsets cannot be committed
    // (SUBSCRIPTION_GROUP_NOT_EXIST, 26).
    heartbeat(&client, "127.0.0.1@stats", &group, &topic).await;
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
    // A topic the broker does not have: no queues (not an error).
    let none = client
        .consume_stats(&group, Some(&unique("nope")))
        .await
        .unwrap();
    assert!(none.queues.is_empty(), "{none:?}");
}

both!(
    a_stopped_name_server_fails_fast_and_the_list_fails_over,
    rust_a_stopped_name_server_fails_fast_and_the_list_fails_over,
    java_a_stopped_name_server_fails_fast_and_the_list_fails_over,
    own(1, 2)
);
/// Its own servers (it stops a NameServer): one broker, two NameServers. Stopped, the first
/// NameServer refuses at once and the list fails over; restarted, it learns the broker again
/// within the broker's 10 s registration period and the route comes back.
async fn a_stopped_name_server_fails_fast_and_the_list_fails_over(mq: &RocketMq) {
    let addrs = mq.namesrv_addrs();
    let topic = unique("failover");
    connect(mq.broker_addr())
        .await
        .create_or_update_topic(&TopicConfig::new(&topic, 3, 3, Permission::ReadWrite))
        .await
        .unwrap();
    for ns in &addrs {
        route_until_at(ns, &topic, "the topic on every NameServer", |r| {
            expect_queues(r, "broker-a", 3, 3, 6)
        })
        .await;
    }
    let list = NameServers::new(addrs.clone(), timeouts());
    route_until(&list, &topic, "the topic routed", |r| {
        expect_queues(r, "broker-a", 3, 3, 6)
    })
    .await;

    let stopping = Instant::now();
    mq.stop_namesrv();
    eprintln!(
        "{} NameServer stopped in {:?}",
        flavour(mq),
        stopping.elapsed()
    );
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
    let restarted = Instant::now();
    mq.start_namesrv().unwrap();
    mq.wait_registered(support::deadline()).await.unwrap();
    eprintln!(
        "restarted {} NameServer knows the broker again after {:?}",
        flavour(mq),
        restarted.elapsed()
    );
    route_until_at(
        &addrs[0],
        &topic,
        "the route on the restarted NameServer",
        |r| expect_queues(r, "broker-a", 3, 3, 6),
    )
    .await;
    route_until(
        &dead,
        &topic,
        "the route through a list of the restarted one",
        |r| expect_queues(r, "broker-a", 3, 3, 6),
    )
    .await;
}

both!(
    kept_connections_are_reused_and_replaced_when_dropped,
    rust_kept_connections_are_reused_and_replaced_when_dropped,
    java_kept_connections_are_reused_and_replaced_when_dropped
);
/// Requests share one kept connection per address; a connection the server side drops is
/// replaced on the next request, which succeeds.
async fn kept_connections_are_reused_and_replaced_when_dropped(mq: &RocketMq) {
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
