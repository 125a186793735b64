//! A Topic with `spec.nameServers` (sync `Observe`): from what its NameServers answered to its
//! status — the observed layout, the `Synced` and `Drifted` conditions, and the totals of
//! [`topic_status`], which then describe the observed layout. Pure: the Topic reconciler asks the
//! NameServers, passes the answer and the time in, and merges and writes the result.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::topic_status::{TopicCondition, topic_status};
use super::{awaits_sync, topic_name};
use crate::api::{BrokerSpec, ObservedBroker, ObservedTopic, Topic, TopicStatus};
use crate::assign::java_order::java_cmp;
use crate::rocketmq::{self, TopicRoute};

/// Condition type: the topic's route was read from its NameServers.
pub const SYNCED: &str = "Synced";
/// Condition type: `spec.brokers` differs from the observed layout.
pub const DRIFTED: &str = "Drifted";
/// The condition types this module decides (a static Topic has neither).
pub const SYNC_CONDITIONS: [&str; 2] = [SYNCED, DRIFTED];

/// `Synced=False`: no NameServer of the list answered.
pub const NAME_SERVER_UNREACHABLE: &str = "NameServerUnreachable";
/// `Synced=False`: the NameServers do not route the topic.
pub const TOPIC_NOT_FOUND: &str = "TopicNotFound";
/// `Synced=False`: a NameServer answered the route request with an error (e.g. an ACL refusal).
pub const NAME_SERVER_ERROR: &str = "NameServerError";

/// `Synced=False`: a NameServer answered a route this operator refuses (beyond the limits a Topic
/// has, a broker listed twice, an unreadable body); the last good layout stays.
pub const INVALID_ROUTE: &str = "InvalidRoute";

/// Why a sync found no route; `reason` is the `Synced=False` reason and the metric label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncFailure {
    /// [`NAME_SERVER_UNREACHABLE`], [`TOPIC_NOT_FOUND`] or [`NAME_SERVER_ERROR`].
    pub reason: &'static str,
    /// What happened, naming the NameServers.
    pub message: String,
}

/// What one sync found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncResult {
    /// The route's brokers, in name order.
    Observed(Vec<ObservedBroker>),
    /// No route.
    Failed(SyncFailure),
}

impl SyncResult {
    /// The result of asking the NameServers for the route of `topic` (its RocketMQ name).
    pub fn from_route(topic: &str, answer: Result<TopicRoute, rocketmq::Error>) -> SyncResult {
        match answer {
            Ok(route) if route.queue_datas.is_empty() => SyncResult::Failed(SyncFailure {
                reason: TOPIC_NOT_FOUND,
                message: format!("the NameServers route topic {topic} to no broker"),
            }),
            Ok(route) => match check_route(&route) {
                Ok(()) => SyncResult::Observed(observed_brokers(&route)),
                Err(why) => SyncResult::Failed(SyncFailure {
                    reason: INVALID_ROUTE,
                    message: format!("route of topic {topic} refused: {why}"),
                }),
            },
            Err(e) => SyncResult::Failed(SyncFailure {
                reason: match &e {
                    rocketmq::Error::NameServers(errors)
                        if !errors.is_empty()
                            && errors
                                .iter()
                                .all(|e| matches!(e, rocketmq::Error::Protocol { .. })) =>
                    {
                        INVALID_ROUTE
                    }
                    rocketmq::Error::NameServers(_) => NAME_SERVER_UNREACHABLE,
                    rocketmq::Error::TopicNotFound { .. } => TOPIC_NOT_FOUND,
                    _ => NAME_SERVER_ERROR,
                },
                message: e.to_string(),
            }),
        }
    }
}

/// Refuses a route beyond what a Topic may hold (the engine's limits), with a broker listed twice,
/// or with permission bits RocketMQ does not define, naming the field. Counts are checked before
/// any per-broker work, so a huge route costs one pass.
pub fn check_route(route: &TopicRoute) -> Result<(), String> {
    use crate::assign::limits::{MAX_BROKERS, MAX_QUEUES_PER_BROKER};
    for (field, count) in [
        ("queueDatas", route.queue_datas.len()),
        ("brokerDatas", route.broker_datas.len()),
    ] {
        if count > MAX_BROKERS {
            return Err(format!(
                "{field} lists {count} brokers, more than the {MAX_BROKERS} a Topic may have"
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, q) in route.queue_datas.iter().enumerate() {
        let broker = &q.broker_name;
        if !seen.insert(broker.as_str()) {
            return Err(format!(
                "queueDatas[{i}].brokerName: broker {broker} appears more than once"
            ));
        }
        for (field, value) in [
            ("readQueueNums", q.read_queue_nums),
            ("writeQueueNums", q.write_queue_nums),
        ] {
            if value > MAX_QUEUES_PER_BROKER {
                return Err(format!(
                    "queueDatas[{broker}].{field} is {value}, more than the {MAX_QUEUES_PER_BROKER} queues a broker may have"
                ));
            }
        }
        // PermName: PRIORITY 8, READ 4, WRITE 2, INHERIT 1.
        if q.perm > 15 {
            return Err(format!(
                "queueDatas[{broker}].perm is {}, not a permission (0-15)",
                q.perm
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, b) in route.broker_datas.iter().enumerate() {
        if !seen.insert(b.broker_name.as_str()) {
            return Err(format!(
                "brokerDatas[{i}].brokerName: broker {} appears more than once",
                b.broker_name
            ));
        }
    }
    Ok(())
}

/// The brokers of a route, in name order (Java order, as everywhere in the status): queue
/// counts and permission from its `queueDatas`, the master's address from its `brokerDatas`.
pub fn observed_brokers(route: &TopicRoute) -> Vec<ObservedBroker> {
    let mut brokers: Vec<ObservedBroker> = route
        .queue_datas
        .iter()
        .map(|q| ObservedBroker {
            name: q.broker_name.clone(),
            read_queues: q.read_queue_nums,
            write_queues: q.write_queue_nums,
            permission: q.permission(),
            master_addr: route
                .broker(&q.broker_name)
                .and_then(|b| b.master_addr())
                .map(str::to_string),
        })
        .collect();
    brokers.sort_by(|a, b| java_cmp(&a.name, &b.name));
    brokers
}

/// One difference between `spec.brokers` and the observed layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    /// A field of a broker in both.
    Field {
        /// Broker name.
        broker: String,
        /// `readQueues`, `writeQueues` or `permission`.
        field: &'static str,
        /// The spec's value.
        spec: String,
        /// The observed value.
        observed: String,
    },
    /// A broker of the spec that the route does not have.
    NotRouted(String),
    /// A broker of the route that the spec does not list.
    NotInSpec(String),
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::Field {
                broker,
                field,
                spec,
                observed,
            } => write!(f, "{broker}: spec {field} {spec}, observed {observed}"),
            Drift::NotRouted(broker) => write!(f, "{broker}: in spec.brokers, not in the route"),
            Drift::NotInSpec(broker) => write!(f, "{broker}: in the route, not in spec.brokers"),
        }
    }
}

/// The differences between `spec.brokers` and the observed brokers, by broker name (Java
/// order), fields in the order readQueues, writeQueues, permission. Zones are not compared: a
/// route has none.
pub fn drift(spec: &[BrokerSpec], observed: &[ObservedBroker]) -> Vec<Drift> {
    let mut names: Vec<&str> = spec
        .iter()
        .map(|b| b.name.as_str())
        .chain(observed.iter().map(|b| b.name.as_str()))
        .collect();
    names.sort_by(|a, b| java_cmp(a, b));
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let s = spec.iter().find(|b| b.name == name);
        let o = observed.iter().find(|b| b.name == name);
        match (s, o) {
            (Some(s), Some(o)) => {
                for (field, spec, observed) in [
                    (
                        "readQueues",
                        s.read_queues.to_string(),
                        o.read_queues.to_string(),
                    ),
                    (
                        "writeQueues",
                        s.write_queues.to_string(),
                        o.write_queues.to_string(),
                    ),
                    (
                        "permission",
                        format!("{:?}", s.permission),
                        format!("{:?}", o.permission),
                    ),
                ] {
                    if spec != observed {
                        out.push(Drift::Field {
                            broker: name.to_string(),
                            field,
                            spec,
                            observed,
                        });
                    }
                }
            }
            (Some(_), None) => out.push(Drift::NotRouted(name.to_string())),
            (None, Some(_)) => out.push(Drift::NotInSpec(name.to_string())),
            (None, None) => {}
        }
    }
    out
}

fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// The layout to record: a new layout, or the same after a failure, is recorded with `now`; the
/// same layout while synced keeps its record (and its `lastSyncTime`), so an unchanged sync
/// writes nothing; a failure keeps the last good layout.
fn next_observed(
    current: Option<&ObservedTopic>,
    was_synced: bool,
    result: &SyncResult,
    now: Timestamp,
) -> Option<ObservedTopic> {
    match result {
        SyncResult::Observed(brokers) => match current {
            Some(c) if was_synced && &c.brokers == brokers => Some(c.clone()),
            _ => Some(ObservedTopic {
                brokers: brokers.clone(),
                last_sync_time: Some(Time(now)),
            }),
        },
        SyncResult::Failed(_) => current.cloned(),
    }
}

/// The status (conditions left empty) and conditions of a valid Topic with `nameServers` after a
/// sync: the observed layout (see `ObservedTopic::last_sync_time` for when it is rewritten),
/// the totals and `Ready`/`QueueMismatch` of [`topic_status`] for that layout, `Synced`, and
/// `Drifted` when `spec.brokers` is given and a layout has been observed.
pub fn synced_status(
    topic: &Topic,
    result: &SyncResult,
    now: Timestamp,
) -> (TopicStatus, Vec<TopicCondition>) {
    let current = topic.status.clone().unwrap_or_default();
    let was_synced = is_true(&current.conditions, SYNCED);
    let mut observed_topic = topic.clone();
    observed_topic.status = Some(TopicStatus {
        observed: next_observed(current.observed.as_ref(), was_synced, result, now),
        ..current
    });
    let (status, mut conditions) = topic_status(&observed_topic);
    let name = topic_name(topic);
    let synced = match result {
        SyncResult::Observed(brokers) => TopicCondition::new(
            SYNCED,
            true,
            "RouteRead",
            format!(
                "route of topic {name} read from the NameServers: {} brokers",
                brokers.len()
            ),
        ),
        SyncResult::Failed(f) => {
            if awaits_sync(&observed_topic)
                && let Some(ready) = conditions.iter_mut().find(|c| c.type_ == "Ready")
            {
                ready.message = format!("no layout yet: {}", f.message);
            }
            TopicCondition::new(SYNCED, false, f.reason, f.message.clone())
        }
    };
    conditions.push(synced);
    if let (Some(spec), Some(observed)) = (&topic.spec.brokers, &status.observed) {
        let differences = drift(spec, &observed.brokers);
        conditions.push(if differences.is_empty() {
            TopicCondition::new(
                DRIFTED,
                false,
                "Matches",
                "spec.brokers matches the observed layout",
            )
        } else {
            TopicCondition::new(
                DRIFTED,
                true,
                "SpecDiffers",
                differences
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        });
    }
    (status, conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Permission, TopicSpec};
    use crate::plan::topic_input;
    use crate::rocketmq::{BrokerData, QueueData};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn queue(name: &str, read: u32, write: u32, perm: u32) -> QueueData {
        QueueData {
            broker_name: name.into(),
            read_queue_nums: read,
            write_queue_nums: write,
            perm,
            topic_sys_flag: 0,
        }
    }

    fn broker_data(name: &str, addrs: &[(u64, &str)]) -> BrokerData {
        BrokerData {
            cluster: "DefaultCluster".into(),
            broker_name: name.into(),
            broker_addrs: addrs.iter().map(|(id, a)| (*id, a.to_string())).collect(),
        }
    }

    fn observed(name: &str, read: u32, write: u32, permission: Permission) -> ObservedBroker {
        ObservedBroker {
            name: name.into(),
            read_queues: read,
            write_queues: write,
            permission,
            master_addr: None,
        }
    }

    fn spec_broker(name: &str, read: u32, write: u32, permission: Permission) -> BrokerSpec {
        BrokerSpec {
            name: name.into(),
            read_queues: read,
            write_queues: write,
            permission,
            zone: None,
        }
    }

    fn topic(brokers: Option<Vec<BrokerSpec>>, status: Option<TopicStatus>) -> Topic {
        let mut t = Topic::new(
            "orders",
            TopicSpec {
                topic_name: Some("Orders_V2".into()),
                brokers,
                name_servers: Some(vec!["10.0.0.1:9876".into()]),
                sync: None,
                broker_cluster: None,
                drain_timeout_seconds: None,
                drain_quiet_seconds: None,
            },
        );
        t.metadata.generation = Some(2);
        t.status = status;
        t
    }

    fn condition(type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: "m".into(),
            observed_generation: None,
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn find<'a>(conditions: &'a [TopicCondition], type_: &str) -> Option<&'a TopicCondition> {
        conditions.iter().find(|c| c.type_ == type_)
    }

    #[test]
    fn a_route_gives_its_brokers_in_name_order_with_their_masters() {
        let route = TopicRoute {
            queue_datas: vec![
                queue("broker-b", 2, 2, 4),
                queue("broker-a", 8, 6, 6),
                queue("broker-c", 1, 1, 2 | 1),
            ],
            broker_datas: vec![
                broker_data("broker-a", &[(1, "10.0.0.3:10911"), (0, "10.0.0.2:10911")]),
                broker_data("broker-b", &[(1, "10.0.0.5:10911")]),
            ],
        };
        let brokers = observed_brokers(&route);
        assert_eq!(
            brokers,
            [
                ObservedBroker {
                    master_addr: Some("10.0.0.2:10911".into()),
                    ..observed("broker-a", 8, 6, Permission::ReadWrite)
                },
                // Only a slave is registered: no master.
                observed("broker-b", 2, 2, Permission::ReadOnly),
                // PERM_INHERIT is ignored; no broker data at all.
                observed("broker-c", 1, 1, Permission::WriteOnly),
            ]
        );
    }

    #[test]
    fn routes_beyond_the_limits_are_refused_naming_the_field() {
        let refused = |route: TopicRoute| match SyncResult::from_route("T", Ok(route)) {
            SyncResult::Failed(f) if f.reason == INVALID_ROUTE => f.message,
            other => panic!("accepted: {other:?}"),
        };
        let one = |q: QueueData| TopicRoute {
            queue_datas: vec![q],
            broker_datas: vec![],
        };
        assert_eq!(
            refused(one(queue("broker-a", u32::MAX, 4, 6))),
            "route of topic T refused: queueDatas[broker-a].readQueueNums is 4294967295, more than the 4096 queues a broker may have"
        );
        assert!(
            refused(one(queue("broker-a", 4, 1_000_000, 6))).contains("writeQueueNums is 1000000")
        );
        assert!(
            refused(one(queue("broker-a", 4, 4, u32::MAX)))
                .contains("perm is 4294967295, not a permission")
        );
        let twice = TopicRoute {
            queue_datas: vec![queue("broker-a", 4, 4, 6), queue("broker-a", 8, 8, 6)],
            broker_datas: vec![],
        };
        assert!(
            refused(twice)
                .ends_with("queueDatas[1].brokerName: broker broker-a appears more than once")
        );
        let dup_addrs = TopicRoute {
            queue_datas: vec![queue("broker-a", 4, 4, 6)],
            broker_datas: vec![
                broker_data("broker-a", &[(0, "10.0.0.2:10911")]),
                broker_data("broker-a", &[(0, "10.0.0.3:10911")]),
            ],
        };
        assert!(
            refused(dup_addrs)
                .ends_with("brokerDatas[1].brokerName: broker broker-a appears more than once")
        );
        // 60,000 brokers: refused by count in one pass, before any per-broker matching.
        let huge = TopicRoute {
            queue_datas: (0..60_000)
                .map(|i| queue(&format!("b{i}"), 4, 4, 6))
                .collect(),
            broker_datas: (0..60_000)
                .map(|i| broker_data(&format!("b{i}"), &[(0, "10.0.0.2:10911")]))
                .collect(),
        };
        let started = std::time::Instant::now();
        assert!(refused(huge).contains("queueDatas lists 60000 brokers, more than the 256"));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // A route the NameServers sent but nobody could parse is invalid, not unreachable.
        let garbage = rocketmq::Error::NameServers(vec![rocketmq::Error::Protocol {
            addr: "10.0.0.1:9876".into(),
            reason: "route body: readQueueNums: invalid value: integer `-1`".into(),
        }]);
        let SyncResult::Failed(f) = SyncResult::from_route("T", Err(garbage)) else {
            panic!()
        };
        assert_eq!(f.reason, INVALID_ROUTE);
    }

    #[test]
    fn answers_and_errors_become_results() {
        let route = TopicRoute {
            queue_datas: vec![queue("a", 4, 4, 6)],
            broker_datas: vec![],
        };
        assert_eq!(
            SyncResult::from_route("T", Ok(route)),
            SyncResult::Observed(vec![observed("a", 4, 4, Permission::ReadWrite)])
        );
        let empty = SyncResult::from_route("T", Ok(TopicRoute::default()));
        assert!(
            matches!(&empty, SyncResult::Failed(f) if f.reason == TOPIC_NOT_FOUND
                && f.message == "the NameServers route topic T to no broker"),
            "{empty:?}"
        );
        let unreachable = rocketmq::Error::NameServers(vec![
            rocketmq::Error::Connect {
                addr: "10.0.0.1:9876".into(),
                reason: "Connection refused (os error 111)".into(),
            },
            rocketmq::Error::Connect {
                addr: "10.0.0.2:9876".into(),
                reason: "no connection within 3s".into(),
            },
        ]);
        let SyncResult::Failed(f) = SyncResult::from_route("T", Err(unreachable)) else {
            panic!()
        };
        assert_eq!(f.reason, NAME_SERVER_UNREACHABLE);
        assert_eq!(
            f.message,
            "no NameServer answered: cannot connect to RocketMQ at 10.0.0.1:9876: Connection refused (os error 111); \
             cannot connect to RocketMQ at 10.0.0.2:9876: no connection within 3s"
        );
        let missing = rocketmq::Error::TopicNotFound {
            addr: "10.0.0.1:9876".into(),
            topic: "T".into(),
            remark: "Topic route was not found".into(),
        };
        let SyncResult::Failed(f) = SyncResult::from_route("T", Err(missing)) else {
            panic!()
        };
        assert_eq!(f.reason, TOPIC_NOT_FOUND);
        assert!(f.message.contains("10.0.0.1:9876"), "{}", f.message);
        let refused = rocketmq::Error::Remote {
            addr: "10.0.0.1:9876".into(),
            request: "GET_ROUTEINFO_BY_TOPIC(105)".into(),
            code: 16,
            remark: "no permission".into(),
        };
        let SyncResult::Failed(f) = SyncResult::from_route("T", Err(refused)) else {
            panic!()
        };
        assert_eq!(f.reason, NAME_SERVER_ERROR);
    }

    #[test]
    fn drift_names_the_broker_and_the_field() {
        let spec = [
            spec_broker("broker-a", 8, 8, Permission::ReadWrite),
            spec_broker("broker-b", 4, 4, Permission::ReadWrite),
            spec_broker("broker-c", 4, 4, Permission::ReadWrite),
        ];
        let seen = [
            observed("broker-a", 4, 8, Permission::ReadOnly),
            observed("broker-b", 4, 4, Permission::ReadWrite),
            observed("broker-d", 2, 2, Permission::ReadWrite),
        ];
        let texts: Vec<String> = drift(&spec, &seen).iter().map(|d| d.to_string()).collect();
        assert_eq!(
            texts,
            [
                "broker-a: spec readQueues 8, observed 4",
                "broker-a: spec permission ReadWrite, observed ReadOnly",
                "broker-c: in spec.brokers, not in the route",
                "broker-d: in the route, not in spec.brokers",
            ]
        );
        assert!(drift(&spec[1..2], &seen[1..2]).is_empty());
    }

    #[test]
    fn a_first_sync_records_the_layout_and_its_time() {
        let result = SyncResult::Observed(vec![
            observed("broker-a", 4, 4, Permission::ReadWrite),
            observed("broker-b", 2, 2, Permission::ReadOnly),
        ]);
        let (status, conditions) = synced_status(&topic(None, None), &result, at(100));
        let observed_topic = status.observed.clone().unwrap();
        assert_eq!(observed_topic.last_sync_time, Some(Time(at(100))));
        assert_eq!(observed_topic.brokers.len(), 2);
        assert_eq!(
            (status.broker_count, status.read_queues, status.write_queues),
            (2, 6, 4)
        );
        assert_eq!(status.observed_generation, Some(2));
        let synced = find(&conditions, SYNCED).unwrap();
        assert!(synced.status);
        assert_eq!(
            synced.message,
            "route of topic Orders_V2 read from the NameServers: 2 brokers"
        );
        assert!(find(&conditions, "Ready").unwrap().status);
        assert!(find(&conditions, "QueueMismatch").is_some());
        // No spec.brokers: nothing to drift from.
        assert!(find(&conditions, DRIFTED).is_none());
    }

    #[test]
    fn an_unchanged_sync_keeps_the_record_and_a_change_or_recovery_rewrites_it() {
        let layout = vec![observed("broker-a", 4, 4, Permission::ReadWrite)];
        let recorded = ObservedTopic {
            brokers: layout.clone(),
            last_sync_time: Some(Time(at(100))),
        };
        let status = |synced: &str| TopicStatus {
            observed: Some(recorded.clone()),
            conditions: vec![condition(SYNCED, synced)],
            ..TopicStatus::default()
        };
        let same = SyncResult::Observed(layout.clone());
        let (s, _) = synced_status(&topic(None, Some(status("True"))), &same, at(200));
        assert_eq!(s.observed, Some(recorded.clone()));
        // Recovery from a failure: the same layout, read again now.
        let (s, _) = synced_status(&topic(None, Some(status("False"))), &same, at(200));
        assert_eq!(s.observed.unwrap().last_sync_time, Some(Time(at(200))));
        let changed = SyncResult::Observed(vec![observed("broker-a", 8, 8, Permission::ReadWrite)]);
        let (s, _) = synced_status(&topic(None, Some(status("True"))), &changed, at(300));
        let o = s.observed.unwrap();
        assert_eq!(
            (o.brokers[0].read_queues, o.last_sync_time),
            (8, Some(Time(at(300))))
        );
        assert_eq!(s.read_queues, 8);
    }

    #[test]
    fn a_failure_keeps_the_last_good_layout() {
        let recorded = ObservedTopic {
            brokers: vec![observed("broker-a", 4, 4, Permission::ReadWrite)],
            last_sync_time: Some(Time(at(100))),
        };
        let current = TopicStatus {
            observed: Some(recorded.clone()),
            conditions: vec![condition(SYNCED, "True")],
            ..TopicStatus::default()
        };
        let failed = SyncResult::Failed(SyncFailure {
            reason: NAME_SERVER_UNREACHABLE,
            message: "no NameServer answered: x".into(),
        });
        let (status, conditions) = synced_status(&topic(None, Some(current)), &failed, at(200));
        assert_eq!(status.observed, Some(recorded));
        assert_eq!(status.read_queues, 4);
        let synced = find(&conditions, SYNCED).unwrap();
        assert_eq!(
            (synced.status, synced.reason, synced.message.as_str()),
            (false, NAME_SERVER_UNREACHABLE, "no NameServer answered: x")
        );
        // The groups still have a layout.
        assert!(find(&conditions, "Ready").unwrap().status);
    }

    #[test]
    fn never_synced_and_no_brokers_is_not_ready() {
        let failed = SyncResult::Failed(SyncFailure {
            reason: TOPIC_NOT_FOUND,
            message: "topic Orders_V2 has no route".into(),
        });
        let (status, conditions) = synced_status(&topic(None, None), &failed, at(1));
        assert_eq!(status.observed, None);
        assert_eq!(status.broker_count, 0);
        let ready = find(&conditions, "Ready").unwrap();
        assert_eq!(
            (ready.status, ready.reason, ready.message.as_str()),
            (
                false,
                "NotSynced",
                "no layout yet: topic Orders_V2 has no route"
            )
        );
        assert_eq!(find(&conditions, SYNCED).unwrap().reason, TOPIC_NOT_FOUND);
        // With spec.brokers, those are the layout until one is observed.
        let t = topic(
            Some(vec![spec_broker("a", 2, 2, Permission::ReadWrite)]),
            None,
        );
        let (status, conditions) = synced_status(&t, &failed, at(1));
        assert_eq!(status.read_queues, 2);
        assert!(find(&conditions, "Ready").unwrap().status);
        assert!(find(&conditions, DRIFTED).is_none());
    }

    #[test]
    fn spec_brokers_are_compared_with_the_observed_layout() {
        let spec = vec![spec_broker("broker-a", 8, 8, Permission::ReadWrite)];
        let result = SyncResult::Observed(vec![observed("broker-a", 4, 8, Permission::ReadWrite)]);
        let (status, conditions) = synced_status(&topic(Some(spec), None), &result, at(1));
        // The observed layout is the one used.
        assert_eq!(status.read_queues, 4);
        let drifted = find(&conditions, DRIFTED).unwrap();
        assert_eq!(
            (drifted.status, drifted.reason, drifted.message.as_str()),
            (
                true,
                "SpecDiffers",
                "broker-a: spec readQueues 8, observed 4"
            )
        );
        let spec = vec![spec_broker("broker-a", 4, 8, Permission::ReadWrite)];
        let (_, conditions) = synced_status(&topic(Some(spec), None), &result, at(1));
        let drifted = find(&conditions, DRIFTED).unwrap();
        assert_eq!((drifted.status, drifted.reason), (false, "Matches"));
    }

    #[test]
    fn topic_input_prefers_the_observed_layout_with_spec_zones() {
        let spec = vec![BrokerSpec {
            zone: Some("az1".into()),
            ..spec_broker("broker-a", 8, 8, Permission::ReadWrite)
        }];
        let status = TopicStatus {
            observed: Some(ObservedTopic {
                brokers: vec![
                    observed("broker-a", 4, 4, Permission::ReadOnly),
                    observed("room2@broker-b", 2, 2, Permission::ReadWrite),
                ],
                last_sync_time: None,
            }),
            ..TopicStatus::default()
        };
        let input = topic_input(&topic(Some(spec.clone()), Some(status.clone())));
        assert_eq!(input.name, "Orders_V2");
        let brokers: Vec<(&str, u32, Permission, Option<&str>)> = input
            .brokers
            .iter()
            .map(|b| {
                (
                    b.name.as_str(),
                    b.read_queues,
                    b.permission,
                    b.zone.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            brokers,
            [
                ("broker-a", 4, Permission::ReadOnly, Some("az1")),
                ("room2@broker-b", 2, Permission::ReadWrite, None),
            ]
        );
        // Not observed yet: the spec.
        let input = topic_input(&topic(Some(spec.clone()), None));
        assert_eq!(input.brokers[0].read_queues, 8);
        // A static Topic never reads its status, even one that holds a layout.
        let mut static_topic = topic(Some(spec), Some(status));
        static_topic.spec.name_servers = None;
        assert_eq!(topic_input(&static_topic).brokers[0].read_queues, 8);
        assert!(!awaits_sync(&static_topic));
        assert!(awaits_sync(&topic(None, None)));
    }
}
