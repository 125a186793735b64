//! API objects to engine inputs.

use kube::ResourceExt;

use crate::api::validation::Violation;
use crate::api::{
    Allocation, ConsumerGroupSpec, DEFAULT_VIRTUAL_NODES, InnerStrategyName, QueueRange,
    StrategyName, Topic,
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

/// A `Topic` as the engine sees it.
pub fn topic_input(topic: &Topic) -> TopicInput {
    TopicInput {
        name: topic_name(topic),
        brokers: topic
            .spec
            .brokers
            .iter()
            .map(|b| BrokerInput {
                name: b.name.clone(),
                read_queues: b.read_queues,
                write_queues: b.write_queues,
                permission: b.permission,
                zone: b.zone.clone(),
            })
            .collect(),
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
