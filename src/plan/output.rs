//! Engine output to the `Allocation` written to status and printed by `plan`.

use crate::api::{Allocation, ConsumerAssignment, ProducerBrokerShare, ProducerRoute, QueueRange};
use crate::assign::producer::{format_share, mismatches, send_rotation};
use crate::assign::ranges::format_ranges;
use crate::assign::{Assignment, ConsumerQueues, MessageModel, QueueBlock, TopicInput};

use super::Plan;
use super::warning::PlanWarning;

fn queue_range(assignment: &Assignment, block: &QueueBlock) -> QueueRange {
    let topic = &assignment.topics[block.topic as usize];
    QueueRange {
        topic: topic.topic.clone(),
        broker: topic.brokers[block.broker as usize].name.clone(),
        queue_ids: format_ranges(&block.ranges),
    }
}

/// Renders an engine assignment. `topics` are the engine inputs (for the producer side).
pub fn allocation_from(assignment: &Assignment, topics: &[TopicInput]) -> Allocation {
    plan_from(assignment, topics).allocation
}

/// Renders an engine assignment, with its warnings typed (their texts are in
/// `allocation.warnings`, in the same order).
pub fn plan_from(assignment: &Assignment, topics: &[TopicInput]) -> Plan {
    let ConsumerQueues { owned, unassigned } = assignment.by_consumer();
    let consumers = assignment.consumers.len() as u64;
    let queues: u64 = assignment
        .topics
        .iter()
        .map(|t| u64::from(t.queue_count()))
        .sum();
    let assignments: Vec<ConsumerAssignment> = assignment
        .consumers
        .iter()
        .zip(&owned)
        .map(|(id, blocks)| ConsumerAssignment {
            consumer: id.clone(),
            pod: None,
            queues: blocks.iter().map(|b| queue_range(assignment, b)).collect(),
        })
        .collect();
    let idle_consumers: Vec<String> = assignments
        .iter()
        .filter(|a| a.queues.is_empty())
        .map(|a| a.consumer.clone())
        .collect();

    let mut warnings = Vec::new();
    if assignment.model == MessageModel::Clustering {
        warnings.extend(assignment.topics.iter().filter_map(|t| {
            let queues = u64::from(t.queue_count());
            (consumers > queues).then(|| PlanWarning::MoreConsumersThanQueues {
                consumers,
                queues,
                topic: t.topic.clone(),
            })
        }));
        if !idle_consumers.is_empty() && warnings.is_empty() {
            warnings.push(PlanWarning::ConsumersWithoutQueues {
                idle: idle_consumers.clone(),
                consumers,
            });
        }
    }
    let unassigned_count = ConsumerQueues::count(&unassigned);
    if unassigned_count > 0 {
        warnings.push(PlanWarning::UnassignedQueues {
            count: unassigned_count,
        });
    }
    let mut sorted_topics: Vec<&TopicInput> = topics.iter().collect();
    sorted_topics.sort_by(|a, b| crate::assign::java_order::java_cmp(&a.name, &b.name));
    for t in &sorted_topics {
        warnings.extend(mismatches(t).into_iter().map(PlanWarning::from));
    }
    warnings.extend(assignment.notes.iter().cloned().map(PlanWarning::from));

    let producers = producer_routes(&sorted_topics);

    let allocation = Allocation {
        consumers: consumers as u32,
        queues: queues as u32,
        idle: idle_consumers.len() as u32,
        assignments,
        idle_consumers,
        unassigned_queues: unassigned
            .iter()
            .map(|b| queue_range(assignment, b))
            .collect(),
        moved_queues: assignment.moved_queues,
        warnings: warnings.iter().map(ToString::to_string).collect(),
        producers,
    };
    Plan {
        allocation,
        warnings,
    }
}

/// The allocation of a Clustering group with no consumer yet: every readable queue unassigned
/// (the engine refuses an empty group, as RocketMQ does; for the status it is simply empty).
pub fn empty_allocation(topics: &[TopicInput], moved_queues: u64) -> Allocation {
    let mut sorted_topics: Vec<&TopicInput> = topics.iter().collect();
    sorted_topics.sort_by(|a, b| crate::assign::java_order::java_cmp(&a.name, &b.name));
    let mut unassigned = Vec::new();
    for t in &sorted_topics {
        let mut brokers: Vec<_> = t.brokers.iter().collect();
        brokers.sort_by(|a, b| crate::assign::java_order::java_cmp(&a.name, &b.name));
        for b in brokers {
            let n = b.readable_queues();
            if n > 0 {
                unassigned.push(QueueRange {
                    topic: t.name.clone(),
                    broker: b.name.clone(),
                    queue_ids: format_ranges(&[(0, n - 1)]),
                });
            }
        }
    }
    let queues: u32 = topics.iter().map(|t| t.readable_queues() as u32).sum();
    let mut warnings = vec!["no ready consumer pods".to_string()];
    if queues > 0 {
        warnings.push(
            PlanWarning::UnassignedQueues {
                count: queues.into(),
            }
            .to_string(),
        );
    }
    Allocation {
        queues,
        unassigned_queues: unassigned,
        moved_queues,
        warnings,
        producers: producer_routes(&sorted_topics),
        ..Allocation::default()
    }
}

/// Queues owned by some consumer in an allocation (what an emptied group releases).
pub fn owned_queue_count(allocation: &Allocation) -> u64 {
    allocation
        .assignments
        .iter()
        .flat_map(|a| &a.queues)
        .filter_map(|q| crate::assign::ranges::parse_ranges(&q.queue_ids).ok())
        .map(|r| crate::assign::ranges::count_ids(&r))
        .sum()
}

/// Every queue of `ranges` as (topic, broker, queue id); unreadable ranges are skipped.
pub fn queue_set(ranges: &[QueueRange]) -> std::collections::BTreeSet<(String, String, u32)> {
    let mut out = std::collections::BTreeSet::new();
    for q in ranges {
        for (start, end) in crate::assign::ranges::parse_ranges(&q.queue_ids).unwrap_or_default() {
            for id in start..=end {
                out.insert((q.topic.clone(), q.broker.clone(), id));
            }
        }
    }
    out
}

fn producer_routes(sorted_topics: &[&TopicInput]) -> Vec<ProducerRoute> {
    sorted_topics
        .iter()
        .map(|t| {
            let rotation = send_rotation(t);
            ProducerRoute {
                topic: t.name.clone(),
                write_queues: rotation.iter().map(|s| s.write_queues).sum(),
                brokers: rotation
                    .into_iter()
                    .map(|s| ProducerBrokerShare {
                        broker: s.broker,
                        queue_ids: format_ranges(&[(0, s.write_queues - 1)]),
                        share: format_share(s.share),
                    })
                    .collect(),
            }
        })
        .collect()
}
