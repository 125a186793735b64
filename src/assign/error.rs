//! Why the engine refused to allocate. Where RocketMQ's client throws, so does the engine; the
//! caller keeps the assignment in force, as RocketMQ does.

/// Allocation failure. Variant names double as Kubernetes Event reasons (see [`AssignError::reason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    /// No consumer to assign to (RocketMQ: "cidAll is null or cidAll empty").
    #[error("the group has no consumers")]
    NoConsumers,
    /// A topic without a readable queue (RocketMQ: "mqAll is null or mqAll empty").
    #[error("topic {topic} has no readable queues")]
    NoQueues {
        /// Topic name.
        topic: String,
    },
    /// The same consumer id twice.
    #[error("consumer id {0:?} appears more than once")]
    DuplicateConsumer(String),
    /// An empty consumer id (RocketMQ: "currentCID is empty").
    #[error("a consumer id is empty")]
    EmptyConsumerId,
    /// The same topic twice.
    #[error("topic {0} is listed more than once")]
    DuplicateTopic(String),
    /// The same broker twice in one topic.
    #[error("broker {broker} appears more than once in topic {topic}")]
    DuplicateBroker {
        /// Topic name.
        topic: String,
        /// Broker name.
        broker: String,
    },
    /// `MachineRoomNearby` could not place a broker in a machine room.
    #[error(
        "machine room of broker {broker} (topic {topic}) is unknown: set its zone, or name it room@broker"
    )]
    MissingBrokerZone {
        /// Topic name.
        topic: String,
        /// Broker name.
        broker: String,
    },
    /// `MachineRoomNearby` could not place a consumer in a machine room.
    #[error("machine room of consumer {consumer} is unknown")]
    MissingConsumerZone {
        /// Consumer id.
        consumer: String,
    },
    /// `ByConfig` names a queue that is not a readable queue of a subscribed topic.
    #[error("byConfig: consumer {consumer} lists {topic}/{broker} queue {queue_id}, {why}")]
    UnknownQueue {
        /// Consumer the entry belongs to.
        consumer: String,
        /// Topic name.
        topic: String,
        /// Broker name.
        broker: String,
        /// Queue id.
        queue_id: u32,
        /// What is wrong with it.
        why: String,
    },
    /// An input beyond [`super::limits`]; nothing was allocated.
    #[error("{what} is {value}, more than the {limit} the engine takes")]
    TooLarge {
        /// What is too large, e.g. `topic orders: broker broker-a: readQueues`.
        what: String,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// `ByConfig` gives one queue to two consumers.
    #[error("byConfig: {topic}/{broker} queue {queue_id} is given to both {first} and {second}")]
    QueueListedTwice {
        /// Topic name.
        topic: String,
        /// Broker name.
        broker: String,
        /// Queue id.
        queue_id: u32,
        /// First consumer (Java order).
        first: String,
        /// Second consumer.
        second: String,
    },
}

impl AssignError {
    /// The Kubernetes Event / condition reason: the variant's name (`NoQueues` reads
    /// `NoReadableQueues`, the reason a Topic without readable queues reports on itself).
    pub fn reason(&self) -> &'static str {
        match self {
            AssignError::NoConsumers => "NoConsumers",
            AssignError::NoQueues { .. } => "NoReadableQueues",
            AssignError::DuplicateConsumer(_) => "DuplicateConsumer",
            AssignError::EmptyConsumerId => "EmptyConsumerId",
            AssignError::DuplicateTopic(_) => "DuplicateTopic",
            AssignError::DuplicateBroker { .. } => "DuplicateBroker",
            AssignError::MissingBrokerZone { .. } => "MissingBrokerZone",
            AssignError::MissingConsumerZone { .. } => "MissingConsumerZone",
            AssignError::UnknownQueue { .. } => "UnknownQueue",
            AssignError::QueueListedTwice { .. } => "QueueListedTwice",
            AssignError::TooLarge { .. } => "TooLarge",
        }
    }

    /// A low-cardinality label for metrics: every engine refusal is `Allocation`.
    pub fn category(&self) -> &'static str {
        "Allocation"
    }
}

#[cfg(test)]
mod tests {
    use super::AssignError;

    fn all() -> Vec<AssignError> {
        let s = String::new;
        vec![
            AssignError::NoConsumers,
            AssignError::NoQueues { topic: s() },
            AssignError::DuplicateConsumer(s()),
            AssignError::EmptyConsumerId,
            AssignError::DuplicateTopic(s()),
            AssignError::DuplicateBroker {
                topic: s(),
                broker: s(),
            },
            AssignError::MissingBrokerZone {
                topic: s(),
                broker: s(),
            },
            AssignError::MissingConsumerZone { consumer: s() },
            AssignError::UnknownQueue {
                consumer: s(),
                topic: s(),
                broker: s(),
                queue_id: 0,
                why: s(),
            },
            AssignError::QueueListedTwice {
                topic: s(),
                broker: s(),
                queue_id: 0,
                first: s(),
                second: s(),
            },
            AssignError::TooLarge {
                what: s(),
                value: 0,
                limit: 0,
            },
        ]
    }

    #[test]
    fn reasons_are_variant_names() {
        for e in all() {
            let variant = format!("{e:?}");
            let variant = variant
                .split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap();
            let expected = if variant == "NoQueues" {
                "NoReadableQueues"
            } else {
                variant
            };
            assert_eq!(e.reason(), expected);
            assert_eq!(e.category(), "Allocation");
        }
    }
}
