//! Re-checks in code every rule the CRD schema states, because CEL rules are dropped by API
//! servers older than 1.25 and bypassed by stale CRDs. `rebalancer plan` uses the same checks, so
//! a file that `plan` accepts is one the operator accepts.

use std::collections::HashSet;

use super::{
    ConsumerGroupSpec, InnerStrategyName, MAX_BROKERS, MAX_NAME_SERVERS, MAX_QUEUES_PER_BROKER,
    MAX_TOPICS, Permission, StrategyName, SyncMode, TopicSpec,
};
use crate::assign::ranges::parse_ranges;

/// One broken rule: the field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// e.g. `spec.brokers[1].name`.
    pub field: String,
    /// e.g. `duplicate broker name broker-a`.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn violation(field: impl Into<String>, message: impl Into<String>) -> Violation {
    Violation {
        field: field.into(),
        message: message.into(),
    }
}

/// Every rule a `Topic` spec breaks, in field order: [`validate_topic_shape`] and
/// [`unsafe_queue_counts`].
pub fn validate_topic(spec: &TopicSpec) -> Vec<Violation> {
    let mut out = validate_topic_shape(spec);
    out.extend(unsafe_queue_counts(spec));
    out
}

/// `sync: Manage` brokers that would be left with `readQueues < writeQueues` (messages written
/// to the queues beyond the read ones would never be consumed): the Topic reconciler refuses
/// them with `Synced=False`, reason `UnsafeQueueCounts`, and writes nothing to RocketMQ.
pub fn unsafe_queue_counts(spec: &TopicSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    if spec.sync != Some(SyncMode::Manage) {
        return out;
    }
    for (i, b) in spec.brokers().iter().enumerate() {
        if let Some(problem) = unsafe_counts(b.read_queues, b.write_queues, b.permission) {
            out.push(violation(
                format!("spec.brokers[{i}]"),
                format!("{}: {problem}", b.name),
            ));
        }
    }
    if let Some(c) = &spec.broker_cluster
        && let Some(problem) = unsafe_counts(c.read_queues, c.write_queues, c.permission)
    {
        out.push(violation("spec.brokerCluster", problem));
    }
    out
}

/// Why these counts and permission would leave writable queues nobody reads, if they would:
/// `readQueues < writeQueues`, or `WriteOnly` (nothing readable).
fn unsafe_counts(read: u32, write: u32, permission: Permission) -> Option<String> {
    if read < write {
        Some(format!("readQueues {read} < writeQueues {write}"))
    } else if permission == Permission::WriteOnly {
        Some("WriteOnly: writable queues nobody reads".to_string())
    } else {
        None
    }
}

/// Every rule a `Topic` spec breaks except [`unsafe_queue_counts`], in field order.
pub fn validate_topic_shape(spec: &TopicSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Some(name) = &spec.topic_name
        && (name.is_empty() || name.len() > 255)
    {
        out.push(violation("spec.topicName", "must be 1 to 255 characters"));
    }
    match (&spec.brokers, &spec.name_servers) {
        (None, None) => out.push(violation(
            "spec.brokers",
            "required unless spec.nameServers is set",
        )),
        (Some(brokers), _) if brokers.is_empty() => {
            out.push(violation("spec.brokers", "at least one broker is required"))
        }
        _ => {}
    }
    let brokers = spec.brokers();
    if brokers.len() > MAX_BROKERS {
        out.push(violation(
            "spec.brokers",
            format!("{} brokers, at most {MAX_BROKERS} allowed", brokers.len()),
        ));
    }
    let mut seen = HashSet::new();
    for (i, b) in brokers.iter().enumerate() {
        if b.name.is_empty() {
            out.push(violation(
                format!("spec.brokers[{i}].name"),
                "must not be empty",
            ));
        } else if !seen.insert(b.name.as_str()) {
            out.push(violation(
                format!("spec.brokers[{i}].name"),
                format!("duplicate broker name {}", b.name),
            ));
        }
        for (field, value) in [
            ("readQueues", b.read_queues),
            ("writeQueues", b.write_queues),
        ] {
            if value > MAX_QUEUES_PER_BROKER {
                out.push(violation(
                    format!("spec.brokers[{i}].{field}"),
                    format!("{value} is more than the maximum {MAX_QUEUES_PER_BROKER}"),
                ));
            }
        }
    }
    if let Some(name_servers) = &spec.name_servers {
        if name_servers.is_empty() {
            out.push(violation(
                "spec.nameServers",
                "at least one NameServer is required",
            ));
        }
        if name_servers.len() > MAX_NAME_SERVERS {
            out.push(violation(
                "spec.nameServers",
                format!(
                    "{} NameServers, at most {MAX_NAME_SERVERS} allowed",
                    name_servers.len()
                ),
            ));
        }
        let mut seen = HashSet::new();
        for (i, addr) in name_servers.iter().enumerate() {
            if !is_host_port(addr) {
                out.push(violation(
                    format!("spec.nameServers[{i}]"),
                    format!("{addr:?} is not host:port"),
                ));
            } else if !seen.insert(addr.as_str()) {
                out.push(violation(
                    format!("spec.nameServers[{i}]"),
                    format!("duplicate NameServer {addr}"),
                ));
            }
        }
    } else if spec.sync.is_some() {
        out.push(violation("spec.sync", "only allowed with spec.nameServers"));
    }
    let manage = spec.sync == Some(SyncMode::Manage);
    if manage && spec.brokers.is_none() && spec.broker_cluster.is_none() {
        out.push(violation(
            "spec.sync",
            "Manage requires spec.brokers or spec.brokerCluster",
        ));
    }
    if let Some(c) = &spec.broker_cluster {
        if !manage {
            out.push(violation(
                "spec.brokerCluster",
                "only allowed with sync Manage",
            ));
        }
        if spec.brokers.is_some() {
            out.push(violation(
                "spec.brokerCluster",
                "brokers and brokerCluster are mutually exclusive",
            ));
        }
        if c.name.is_empty() || c.name.len() > 253 {
            out.push(violation(
                "spec.brokerCluster.name",
                "must be 1 to 253 characters",
            ));
        }
        for (field, value) in [
            ("readQueues", c.read_queues),
            ("writeQueues", c.write_queues),
        ] {
            if value > MAX_QUEUES_PER_BROKER {
                out.push(violation(
                    format!("spec.brokerCluster.{field}"),
                    format!("{value} is more than the maximum {MAX_QUEUES_PER_BROKER}"),
                ));
            }
        }
    }
    if let Some(t) = spec.drain_timeout_seconds {
        if !manage {
            out.push(violation(
                "spec.drainTimeoutSeconds",
                "only allowed with sync Manage",
            ));
        }
        if !(1..=604_800).contains(&t) {
            out.push(violation("spec.drainTimeoutSeconds", "must be 1 to 604800"));
        }
    }
    if let Some(q) = spec.drain_quiet_seconds {
        if !manage {
            out.push(violation(
                "spec.drainQuietSeconds",
                "only allowed with sync Manage",
            ));
        }
        if q > 3600 {
            out.push(violation("spec.drainQuietSeconds", "must be 0 to 3600"));
        }
    }
    out
}

/// A NameServer address as the schema's pattern states it: `host:port` with a DNS name or IPv4
/// address (letters, digits, `.` and `-`, neither first nor last) or a bracketed IPv6 address,
/// and a port of 1 to 5 digits; at most 261 characters.
pub fn is_host_port(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let port_ok = (1..=5).contains(&port.len()) && port.bytes().all(|c| c.is_ascii_digit());
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner.strip_suffix(']').is_some_and(|ip| {
            !ip.is_empty()
                && ip
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
        })
    } else {
        let edge = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        edge(host.bytes().next())
            && edge(host.bytes().last())
            && host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
    };
    addr.len() <= 261 && host_ok && port_ok
}

/// Every rule a `ConsumerGroup` spec breaks. `require_consumers` is true in the operator, which
/// needs `spec.consumers`; `plan` takes consumers from its command line.
pub fn validate_group(spec: &ConsumerGroupSpec, require_consumers: bool) -> Vec<Violation> {
    let mut out = Vec::new();
    if spec.topics.is_empty() {
        out.push(violation("spec.topics", "at least one topic is required"));
    }
    if spec.topics.len() > MAX_TOPICS {
        out.push(violation(
            "spec.topics",
            format!("{} topics, at most {MAX_TOPICS} allowed", spec.topics.len()),
        ));
    }
    let mut seen = HashSet::new();
    for (i, t) in spec.topics.iter().enumerate() {
        if t.is_empty() {
            out.push(violation(format!("spec.topics[{i}]"), "must not be empty"));
        } else if !seen.insert(t.as_str()) {
            out.push(violation(
                format!("spec.topics[{i}]"),
                format!("duplicate topic {t}"),
            ));
        }
    }
    let strategy = spec.strategy;
    let nearby_hash = strategy == StrategyName::MachineRoomNearby
        && spec
            .nearby
            .as_ref()
            .is_some_and(|n| n.inner_strategy == InnerStrategyName::ConsistentHash);
    if let Some(ch) = &spec.consistent_hash {
        if strategy != StrategyName::ConsistentHash && !nearby_hash {
            out.push(violation(
                "spec.consistentHash",
                "only allowed with strategy ConsistentHash or MachineRoomNearby with innerStrategy ConsistentHash",
            ));
        }
        if ch.virtual_nodes > 1024 {
            out.push(violation(
                "spec.consistentHash.virtualNodes",
                format!("{} is more than the maximum 1024", ch.virtual_nodes),
            ));
        }
    }
    match (
        strategy == StrategyName::ByMachineRoom,
        spec.machine_room.is_some(),
    ) {
        (true, false) => out.push(violation(
            "spec.machineRoom",
            "required with strategy ByMachineRoom",
        )),
        (false, true) => out.push(violation(
            "spec.machineRoom",
            "only allowed with strategy ByMachineRoom",
        )),
        _ => {}
    }
    if spec.nearby.is_some() && strategy != StrategyName::MachineRoomNearby {
        out.push(violation(
            "spec.nearby",
            "only allowed with strategy MachineRoomNearby",
        ));
    }
    match (strategy == StrategyName::ByConfig, &spec.by_config) {
        (true, None) => out.push(violation(
            "spec.byConfig",
            "required with strategy ByConfig",
        )),
        (false, Some(_)) => out.push(violation(
            "spec.byConfig",
            "only allowed with strategy ByConfig",
        )),
        (_, Some(map)) => {
            for (consumer, queues) in map {
                for (i, q) in queues.iter().enumerate() {
                    if let Err(e) = parse_ranges(&q.queue_ids) {
                        out.push(violation(
                            format!("spec.byConfig[{consumer}][{i}].queueIds"),
                            e.to_string(),
                        ));
                    }
                }
            }
        }
        (false, None) => {}
    }
    if spec.client_mode() && strategy == StrategyName::Sticky {
        out.push(violation(
            "spec.strategy",
            "Sticky is computed by rebalancer, not by RocketMQ clients: it cannot describe what clients do with consumerIds Client",
        ));
    }
    if let Some(name) = &spec.group_name
        && (name.is_empty()
            || name.len() > 255
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "%|_-".contains(c)))
    {
        out.push(violation(
            "spec.groupName",
            "1 to 255 characters of letters, digits, %, |, _ and -",
        ));
    }
    match &spec.consumers {
        None if require_consumers => out.push(violation(
            "spec.consumers",
            "required: set workloadRef or selector",
        )),
        Some(c) if c.workload_ref.is_some() == c.selector.is_some() => out.push(violation(
            "spec.consumers",
            "exactly one of workloadRef or selector must be set",
        )),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BrokerSpec, Permission, SyncMode};

    fn spec(brokers: Option<usize>, name_servers: Option<&[&str]>, sync: bool) -> TopicSpec {
        TopicSpec {
            topic_name: None,
            brokers: brokers.map(|n| {
                (0..n)
                    .map(|i| BrokerSpec {
                        name: format!("broker-{i}"),
                        read_queues: 4,
                        write_queues: 4,
                        permission: Permission::ReadWrite,
                        zone: None,
                    })
                    .collect()
            }),
            name_servers: name_servers.map(|l| l.iter().map(|s| s.to_string()).collect()),
            sync: sync.then_some(SyncMode::Observe),
            broker_cluster: None,
            drain_timeout_seconds: None,
            drain_quiet_seconds: None,
        }
    }

    fn fields(spec: &TopicSpec) -> Vec<String> {
        validate_topic(spec)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn brokers_are_required_only_without_name_servers() {
        let ns: &[&str] = &["namesrv:9876"];
        assert_eq!(
            fields(&spec(None, None, false)),
            ["spec.brokers: required unless spec.nameServers is set"]
        );
        assert!(fields(&spec(None, Some(ns), false)).is_empty());
        assert!(fields(&spec(None, Some(ns), true)).is_empty());
        assert!(fields(&spec(Some(2), Some(ns), true)).is_empty());
        assert!(fields(&spec(Some(2), None, false)).is_empty());
        assert_eq!(
            fields(&spec(Some(0), Some(ns), false)),
            ["spec.brokers: at least one broker is required"]
        );
        assert_eq!(
            fields(&spec(Some(1), None, true)),
            ["spec.sync: only allowed with spec.nameServers"]
        );
    }

    #[test]
    fn name_servers_are_host_port_unique_and_few() {
        assert_eq!(
            fields(&spec(None, Some(&[]), false)),
            ["spec.nameServers: at least one NameServer is required"]
        );
        assert_eq!(
            fields(&spec(None, Some(&["a:1", "b", "a:1"]), false)),
            [
                "spec.nameServers[1]: \"b\" is not host:port",
                "spec.nameServers[2]: duplicate NameServer a:1"
            ]
        );
        let many: Vec<String> = (0..17).map(|i| format!("ns-{i}:9876")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            fields(&spec(None, Some(&many), false)),
            ["spec.nameServers: 17 NameServers, at most 16 allowed"]
        );
    }

    #[test]
    fn host_port_follows_the_schema_pattern() {
        for good in [
            "namesrv:9876",
            "10.0.0.1:9876",
            "rocketmq-namesrv.mq.svc.cluster.local:9876",
            "[::1]:9876",
            "[fe80::1:2]:1",
            "a:65535",
            "a:99999",
        ] {
            assert!(is_host_port(good), "{good}");
        }
        for bad in [
            "namesrv",
            ":9876",
            "namesrv:",
            "-ns:9876",
            "ns-:9876",
            ".ns:9876",
            "ns:123456",
            "ns:98a6",
            "a b:9876",
            "ns:9876;ns2:9876",
            "::1:9876",
            "[]:9876",
            "[::1]9876",
            "http://ns:9876",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
        assert!(!is_host_port(&format!("{}:1", "a".repeat(260))));
    }
}
