//! Why the engine refused to allocate. Where RocketMQ's client throws, so does the engine; the
//! caller keeps the assignment in force, as RocketMQ does.

/// Allocation failure. Variant names double as Kubernetes Event reasons.
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
