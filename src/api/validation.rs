//! Re-checks in code every rule the CRD schema states, because CEL rules are dropped by API
//! servers older than 1.25 and bypassed by stale CRDs. `rebalancer plan` uses the same checks, so
//! a file that `plan` accepts is one the operator accepts.

use std::collections::HashSet;

use super::{
    ConsumerGroupSpec, InnerStrategyName, MAX_BROKERS, MAX_QUEUES_PER_BROKER, MAX_TOPICS,
    StrategyName, TopicSpec,
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

/// Every rule a `Topic` spec breaks, in field order.
pub fn validate_topic(spec: &TopicSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Some(name) = &spec.topic_name
        && (name.is_empty() || name.len() > 255)
    {
        out.push(violation("spec.topicName", "must be 1 to 255 characters"));
    }
    if spec.brokers.is_empty() {
        out.push(violation("spec.brokers", "at least one broker is required"));
    }
    if spec.brokers.len() > MAX_BROKERS {
        out.push(violation(
            "spec.brokers",
            format!(
                "{} brokers, at most {MAX_BROKERS} allowed",
                spec.brokers.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for (i, b) in spec.brokers.iter().enumerate() {
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
    out
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
