//! API objects to engine inputs.

use kube::ResourceExt;

use crate::api::validation::Violation;
use crate::api::{
    Allocation, ConsumerGroupSpec, DEFAULT_VIRTUAL_NODES, InnerStrategyName, ObservedTopic,
    QueueRange, StrategyName, Topic,
};
use crate::assign::ranges::parse_ranges;
use crate::assign::{
    BrokerInput, InnerStrategy, PreviousOwner, QueueSelection, Strategy, TopicInput,
};

/// The RocketMQ name of a topic: `spec.topicName`, or else `metadata.name`.
pub fn topic_name(topic: &Topic) -> String {
    topic
        .spec
        .topic_name
        .clone()
        .unwrap_or_else(|| topic.name_any())
}

/// The layout a Topic with `spec.nameServers` was last observed with (`status.observed`); `None`
/// for a static Topic, whose status is never read.
pub fn observed_layout(topic: &Topic) -> Option<&ObservedTopic> {
    topic.spec.name_servers.as_ref()?;
    topic.status.as_ref()?.observed.as_ref()
}

/// Whether a Topic has no layout to plan from: it has `nameServers`, has not been observed yet,
/// and has no `spec.brokers` to fall back on.
pub fn awaits_sync(topic: &Topic) -> bool {
    topic.spec.name_servers.is_some()
        && observed_layout(topic).is_none()
        && topic.spec.brokers.is_none()
}

/// A `Topic` as the engine sees it. With `spec.nameServers`, the brokers are the observed ones
/// (`status.observed`; a broker's zone, which a route does not carry, comes from the spec broker
/// of the same name), until then `spec.brokers`; without, `spec.brokers`.
pub fn topic_input(topic: &Topic) -> TopicInput {
    let spec = topic.spec.brokers();
    let brokers = match observed_layout(topic) {
        Some(observed) => observed
            .brokers
            .iter()
            .map(|b| BrokerInput {
                name: b.name.clone(),
                read_queues: b.read_queues,
                write_queues: b.write_queues,
                permission: b.permission,
                zone: spec
                    .iter()
                    .find(|s| s.name == b.name)
                    .and_then(|s| s.zone.clone()),
            })
            .collect(),
        None => spec
            .iter()
            .map(|b| BrokerInput {
                name: b.name.clone(),
                read_queues: b.read_queues,
                write_queues: b.write_queues,
                permission: b.permission,
                zone: b.zone.clone(),
            })
            .collect(),
    };
    TopicInput {
        name: topic_name(topic),
        brokers,
    }
}

fn selection(q: &QueueRange) -> Result<QueueSelection, String> {
    Ok(QueueSelection {
        topic: q.topic.clone(),
        broker: q.broker.clone(),
        ranges: parse_ranges(&q.queue_ids).map_err(|e| e.to_string())?,
    })
}

/// The engine strategy a group spec asks for.
pub fn consumer_strategy(spec: &ConsumerGroupSpec) -> Result<Strategy, Vec<Violation>> {
    let virtual_nodes = spec
        .consistent_hash
        .as_ref()
        .map_or(DEFAULT_VIRTUAL_NODES, |c| c.virtual_nodes);
    Ok(match spec.strategy {
        StrategyName::Averagely => Strategy::Averagely,
        StrategyName::AveragelyByCircle => Strategy::AveragelyByCircle,
        StrategyName::ConsistentHash => Strategy::ConsistentHash { virtual_nodes },
        StrategyName::ByMachineRoom => Strategy::ByMachineRoom {
            consume_zones: spec
                .machine_room
                .as_ref()
                .map(|m| m.consume_zones.clone())
                .unwrap_or_default(),
        },
        StrategyName::MachineRoomNearby => Strategy::MachineRoomNearby {
            inner: match spec
                .nearby
                .as_ref()
                .map(|n| n.inner_strategy)
                .unwrap_or_default()
            {
                InnerStrategyName::Averagely => InnerStrategy::Averagely,
                InnerStrategyName::AveragelyByCircle => InnerStrategy::AveragelyByCircle,
                InnerStrategyName::ConsistentHash => {
                    InnerStrategy::ConsistentHash { virtual_nodes }
                }
            },
        },
        StrategyName::ByConfig => {
            let mut errors = Vec::new();
            let mut assignments = std::collections::BTreeMap::new();
            for (consumer, queues) in spec.by_config.iter().flatten() {
                let mut selections = Vec::new();
                for (i, q) in queues.iter().enumerate() {
                    match selection(q) {
                        Ok(s) => selections.push(s),
                        Err(message) => errors.push(Violation {
                            field: format!("spec.byConfig[{consumer}][{i}].queueIds"),
                            message,
                        }),
                    }
                }
                assignments.insert(consumer.clone(), selections);
            }
            if !errors.is_empty() {
                return Err(errors);
            }
            Strategy::ByConfig { assignments }
        }
        StrategyName::Sticky => Strategy::Sticky,
    })
}

/// The owners recorded in an allocation. Entries whose ids do not parse are skipped: a damaged
/// history only costs stickiness, never the rebalance.
pub fn previous_owners(previous: &Allocation) -> Vec<PreviousOwner> {
    previous
        .assignments
        .iter()
        .map(|a| PreviousOwner {
            consumer: a.consumer.clone(),
            queues: a.queues.iter().filter_map(|q| selection(q).ok()).collect(),
        })
        .collect()
}
