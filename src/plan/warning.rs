//! What a plan found worth saying that is not an error. Typed, so that callers pick warnings by
//! kind; their text (`Display`) is what `status.warnings` and `plan` print.

use std::fmt;

use crate::api::Allocation;
use crate::assign::AssignNote;
pub use crate::assign::producer::QueueMismatch;

/// One warning of a plan, in the order [`Plan::warnings`](super::Plan) lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanWarning {
    /// Clustering: more consumers than a topic's readable queues, so some are bound to be idle.
    MoreConsumersThanQueues {
        /// Consumers in the group.
        consumers: u64,
        /// Readable queues of the topic.
        queues: u64,
        /// Topic name.
        topic: String,
    },
    /// Clustering: every topic has enough queues, yet the strategy left consumers without one
    /// (a hash ring with few virtual nodes, a `ByConfig` map, a zone with no broker).
    ConsumersWithoutQueues {
        /// The idle consumers, in Java order.
        idle: Vec<String>,
        /// Consumers in the group.
        consumers: u64,
    },
    /// Queues no consumer reads (`ByConfig` leaving them out, `ByMachineRoom` zones, ...).
    UnassignedQueues {
        /// How many.
        count: u64,
    },
    /// A broker's read and write queue counts differ.
    ReadWriteMismatch(QueueMismatch),
    /// `ByConfig` names a consumer that is not running: its queues are unassigned.
    AbsentConsumer {
        /// The consumer id in the map.
        consumer: String,
    },
}

impl PlanWarning {
    /// The warning's kind, CamelCase (the variant name), e.g. for a log field.
    pub fn kind(&self) -> &'static str {
        match self {
            PlanWarning::MoreConsumersThanQueues { .. } => "MoreConsumersThanQueues",
            PlanWarning::ConsumersWithoutQueues { .. } => "ConsumersWithoutQueues",
            PlanWarning::UnassignedQueues { .. } => "UnassignedQueues",
            PlanWarning::ReadWriteMismatch(_) => "ReadWriteMismatch",
            PlanWarning::AbsentConsumer { .. } => "AbsentConsumer",
        }
    }
}

impl From<AssignNote> for PlanWarning {
    fn from(note: AssignNote) -> Self {
        match note {
            AssignNote::AbsentConsumer { consumer } => PlanWarning::AbsentConsumer { consumer },
        }
    }
}

impl From<QueueMismatch> for PlanWarning {
    fn from(m: QueueMismatch) -> Self {
        PlanWarning::ReadWriteMismatch(m)
    }
}

impl fmt::Display for PlanWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanWarning::MoreConsumersThanQueues {
                consumers,
                queues,
                topic,
            } => f.write_str(&idle_text(*consumers, "consumer", *queues, topic)),
            PlanWarning::ConsumersWithoutQueues { idle, consumers } => write!(
                f,
                "{} of {consumers} own no queue: {}",
                plural(idle.len() as u64, "consumer"),
                idle.join(", ")
            ),
            PlanWarning::UnassignedQueues { count } => {
                write!(f, "{} assigned to no consumer", plural(*count, "queue"))
            }
            PlanWarning::ReadWriteMismatch(m) => m.fmt(f),
            PlanWarning::AbsentConsumer { consumer } => AssignNote::AbsentConsumer {
                consumer: consumer.clone(),
            }
            .fmt(f),
        }
    }
}

pub(super) fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn idle_text(count: u64, noun: &str, queues: u64, topic: &str) -> String {
    format!(
        "{}, {} on topic {topic}: {} idle",
        plural(count, noun),
        plural(queues, "queue"),
        plural(count.saturating_sub(queues), "consumer"),
    )
}

/// `8 replicas, 6 queues on topic orders: 2 consumers idle` when `count` (of `noun`s: consumers
/// or replicas) exceeds the topic's readable queues.
pub fn idle_on_topic(count: u64, noun: &str, queues: u64, topic: &str) -> Option<String> {
    (count > queues).then(|| idle_text(count, noun, queues, topic))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_the_status_texts() {
        let cases = [
            (
                PlanWarning::MoreConsumersThanQueues {
                    consumers: 10,
                    queues: 8,
                    topic: "orders".into(),
                },
                "10 consumers, 8 queues on topic orders: 2 consumers idle",
            ),
            (
                PlanWarning::MoreConsumersThanQueues {
                    consumers: 2,
                    queues: 1,
                    topic: "t".into(),
                },
                "2 consumers, 1 queue on topic t: 1 consumer idle",
            ),
            (
                PlanWarning::ConsumersWithoutQueues {
                    idle: vec!["a".into(), "b".into()],
                    consumers: 5,
                },
                "2 consumers of 5 own no queue: a, b",
            ),
            (
                PlanWarning::ConsumersWithoutQueues {
                    idle: vec!["a".into()],
                    consumers: 5,
                },
                "1 consumer of 5 own no queue: a",
            ),
            (
                PlanWarning::UnassignedQueues { count: 1 },
                "1 queue assigned to no consumer",
            ),
            (
                PlanWarning::ReadWriteMismatch(QueueMismatch::EmptyQueues {
                    topic: "t".into(),
                    broker: "b".into(),
                    read: 8,
                    write: 4,
                }),
                "topic t broker b: readQueues 8 > writeQueues 4: consumers of queues 4-7 receive nothing",
            ),
            (
                PlanWarning::AbsentConsumer {
                    consumer: "gone".into(),
                },
                "byConfig names consumer gone, which is not running: its queues are unassigned",
            ),
        ];
        for (warning, text) in cases {
            assert_eq!(warning.to_string(), text, "{}", warning.kind());
        }
        assert_eq!(
            idle_on_topic(8, "replica", 6, "orders").as_deref(),
            Some("8 replicas, 6 queues on topic orders: 2 consumers idle")
        );
        assert_eq!(idle_on_topic(6, "replica", 6, "orders"), None);
    }
}
