//! Engine output to the `Allocation` written to status and printed by `plan`.

use crate::api::{Allocation, ConsumerAssignment, ProducerBrokerShare, ProducerRoute, QueueRange};
use crate::assign::producer::{format_share, mismatches, send_rotation};
use crate::assign::ranges::format_ranges;
use crate::assign::{Assignment, ConsumerQueues, MessageModel, QueueBlock, TopicInput};

fn queue_range(assignment: &Assignment, block: &QueueBlock) -> QueueRange {
    let topic = &assignment.topics[block.topic as usize];
    QueueRange {
        topic: topic.topic.clone(),
        broker: topic.brokers[block.broker as usize].name.clone(),
        queue_ids: format_ranges(&block.ranges),
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `8 replicas, 6 queues on topic orders: 2 consumers idle` when `count` (of `noun`s: consumers
/// or replicas) exceeds the topic's readable queues.
pub fn idle_on_topic(count: u64, noun: &str, queues: u64, topic: &str) -> Option<String> {
    (count > queues).then(|| {
        format!(
            "{}, {} on topic {topic}: {} idle",
            plural(count, noun),
            plural(queues, "queue"),
            plural(count - queues, "consumer"),
        )
    })
}

/// `6 consumers, 4 queues: 2 consumers will be idle`, or `None` when nobody is idle.
pub fn idle_summary(allocation: &Allocation) -> Option<String> {
    (allocation.idle > 0).then(|| {
        format!(
            "{}, {}: {} will be idle",
            plural(allocation.consumers.into(), "consumer"),
            plural(allocation.queues.into(), "queue"),
            plural(allocation.idle.into(), "consumer"),
        )
    })
}

/// Renders an engine assignment. `topics` are the engine inputs (for the producer side).
pub fn allocation_from(assignment: &Assignment, topics: &[TopicInput]) -> Allocation {
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
            idle_on_topic(consumers, "consumer", u64::from(t.queue_count()), &t.topic)
        }));
        if !idle_consumers.is_empty() && warnings.is_empty() {
            warnings.push(format!(
                "{} of {} own no queue: {}",
                plural(idle_consumers.len() as u64, "consumer"),
                consumers,
                idle_consumers.join(", ")
            ));
        }
    }
    let unassigned_count = ConsumerQueues::count(&unassigned);
    if unassigned_count > 0 {
        warnings.push(format!(
            "{} assigned to no consumer",
            plural(unassigned_count, "queue")
        ));
    }
    let mut sorted_topics: Vec<&TopicInput> = topics.iter().collect();
    sorted_topics.sort_by(|a, b| crate::assign::java_order::java_cmp(&a.name, &b.name));
    for t in &sorted_topics {
        warnings.extend(mismatches(t).iter().map(ToString::to_string));
    }
    warnings.extend(assignment.notes.iter().cloned());

    let producers = sorted_topics
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
        .collect();

    Allocation {
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
        warnings,
        producers,
    }
}
