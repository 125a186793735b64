//! Inputs and outputs of the allocation engine. Plain data: no Kubernetes types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// RocketMQ topic permission on a broker.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Readable and writable (RocketMQ `PERM_READ | PERM_WRITE`, 6).
    #[default]
    ReadWrite,
    /// Consumers read, producers do not write (4).
    ReadOnly,
    /// Producers write, consumers do not read (2).
    WriteOnly,
    /// Neither (0).
    Deny,
}

impl Permission {
    /// Consumers read the broker's queues.
    pub fn readable(self) -> bool {
        matches!(self, Permission::ReadWrite | Permission::ReadOnly)
    }
    /// Producers send to the broker's queues.
    pub fn writable(self) -> bool {
        matches!(self, Permission::ReadWrite | Permission::WriteOnly)
    }
}

/// One broker of a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInput {
    /// RocketMQ `brokerName`.
    pub name: String,
    /// Queue ids `0..read_queues` are readable when the permission allows it.
    pub read_queues: u32,
    /// Queue ids `0..write_queues` are writable when the permission allows it.
    pub write_queues: u32,
    /// Permission of the topic on this broker.
    pub permission: Permission,
    /// Machine room; `None` or empty falls back to RocketMQ's `room@broker` naming rule.
    pub zone: Option<String>,
}

impl BrokerInput {
    /// Queues consumers read here: `read_queues`, or 0 when the permission forbids reading.
    pub fn readable_queues(&self) -> u32 {
        if self.permission.readable() {
            self.read_queues
        } else {
            0
        }
    }

    /// Queues producers write here: `write_queues`, or 0 when the permission forbids writing.
    pub fn writable_queues(&self) -> u32 {
        if self.permission.writable() {
            self.write_queues
        } else {
            0
        }
    }
}

/// A topic and its brokers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInput {
    /// RocketMQ topic name (part of the consistent-hash key).
    pub name: String,
    /// Brokers, in any order.
    pub brokers: Vec<BrokerInput>,
}

impl TopicInput {
    /// Readable queues over all brokers.
    pub fn readable_queues(&self) -> u64 {
        self.brokers
            .iter()
            .map(|b| u64::from(b.readable_queues()))
            .sum()
    }
}

/// A consumer of the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerInput {
    /// Client id (the pod name in a cluster).
    pub id: String,
    /// Machine room, needed by `MachineRoomNearby` only.
    pub zone: Option<String>,
}

impl ConsumerInput {
    /// A consumer without a zone.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            zone: None,
        }
    }
}

/// The strategy used inside each machine room by [`Strategy::MachineRoomNearby`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InnerStrategy {
    /// AVG.
    Averagely,
    /// AVG_BY_CIRCLE.
    AveragelyByCircle,
    /// CONSISTENT_HASH with this many virtual nodes per consumer.
    ConsistentHash {
        /// Virtual nodes per consumer.
        virtual_nodes: u32,
    },
}

/// Queues named by a `ByConfig` entry or a previous assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSelection {
    /// Topic name.
    pub topic: String,
    /// Broker name.
    pub broker: String,
    /// Inclusive id ranges.
    pub ranges: Vec<(u32, u32)>,
}

/// How queues are split among consumers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// RocketMQ AVG: contiguous pages.
    Averagely,
    /// RocketMQ AVG_BY_CIRCLE: round robin.
    AveragelyByCircle,
    /// RocketMQ CONSISTENT_HASH: MD5 ring.
    ConsistentHash {
        /// Virtual nodes per consumer (0 leaves every queue unassigned).
        virtual_nodes: u32,
    },
    /// RocketMQ MACHINE_ROOM: only brokers whose zone is listed are consumed.
    ByMachineRoom {
        /// Zones to consume.
        consume_zones: Vec<String>,
    },
    /// RocketMQ MACHINE_ROOM_NEARBY: queues go to consumers of their own zone first.
    MachineRoomNearby {
        /// Strategy within each zone.
        inner: InnerStrategy,
    },
    /// Explicit consumer -> queues map.
    ByConfig {
        /// Consumer id -> queues.
        assignments: BTreeMap<String, Vec<QueueSelection>>,
    },
    /// Balanced within ±1 per topic, moving the fewest queues from the previous assignment.
    Sticky,
}

/// RocketMQ message model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MessageModel {
    /// Each queue to one consumer.
    #[default]
    Clustering,
    /// Every consumer reads every readable queue.
    Broadcasting,
}

/// A previous owner of some queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousOwner {
    /// Consumer id.
    pub consumer: String,
    /// What it owned.
    pub queues: Vec<QueueSelection>,
}

/// Everything the engine needs for one consumer group.
#[derive(Clone, Debug)]
pub struct GroupInput<'a> {
    /// Subscribed topics.
    pub topics: &'a [TopicInput],
    /// Live consumers, in any order.
    pub consumers: &'a [ConsumerInput],
    /// Strategy.
    pub strategy: &'a Strategy,
    /// Message model.
    pub model: MessageModel,
    /// The assignment in force, for `Sticky` and for counting moved queues.
    pub previous: Option<&'a [PreviousOwner]>,
}

/// Marks a queue nobody owns.
pub const UNASSIGNED: u32 = u32::MAX;

/// Readable queues of one broker, as placed in a topic's sorted queue list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerSlice {
    /// Broker name.
    pub name: String,
    /// Resolved machine room, if any.
    pub zone: Option<String>,
    /// Index of queue id 0 in the topic's queue list.
    pub offset: u32,
    /// Number of readable queues.
    pub count: u32,
}

/// The readable queues of a topic in RocketMQ's order (broker in Java order, then queue id),
/// and who owns each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicAssignment {
    /// Topic name.
    pub topic: String,
    /// Readable brokers in Java order.
    pub brokers: Vec<BrokerSlice>,
    /// Owner (index into [`Assignment::consumers`]) of each queue, or [`UNASSIGNED`].
    /// Empty in Broadcasting mode, where every consumer owns every queue.
    pub owners: Vec<u32>,
}

impl TopicAssignment {
    /// Number of readable queues.
    pub fn queue_count(&self) -> u32 {
        self.brokers.iter().map(|b| b.count).sum()
    }
}

/// The engine's answer for one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Consumer ids in Java order.
    pub consumers: Vec<String>,
    /// One entry per topic, topics in Java order.
    pub topics: Vec<TopicAssignment>,
    /// Message model used.
    pub model: MessageModel,
    /// Queues whose owner differs from the previous assignment (0 without one).
    pub moved_queues: u64,
    /// Findings that are not errors (e.g. `ByConfig` naming consumers that are not running).
    pub notes: Vec<AssignNote>,
}

/// A finding of the engine that is not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssignNote {
    /// `ByConfig` names a consumer that is not running: its queues stay unassigned.
    AbsentConsumer {
        /// The consumer id in the map.
        consumer: String,
    },
}

impl std::fmt::Display for AssignNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AssignNote::AbsentConsumer { consumer } => write!(
                f,
                "byConfig names consumer {consumer}, which is not running: its queues are unassigned"
            ),
        }
    }
}
