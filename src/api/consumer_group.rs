use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConsumerAssignment, QueueRange};

/// Most topics one group may subscribe to.
pub const MAX_TOPICS: usize = 32;
/// Default number of virtual nodes per consumer on the consistent-hash ring (RocketMQ's default).
pub const DEFAULT_VIRTUAL_NODES: u32 = 10;

/// A RocketMQ consumer group: the topics it reads, how their queues are split, and which pods consume.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "rebalancer.dev",
    version = "v1alpha1",
    kind = "ConsumerGroup",
    plural = "consumergroups",
    shortname = "cg",
    namespaced,
    status = "ConsumerGroupStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Strategy","type":"string","jsonPath":".spec.strategy"}"#,
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.messageModel"}"#,
    printcolumn = r#"{"name":"Consumers","type":"integer","jsonPath":".status.consumers"}"#,
    printcolumn = r#"{"name":"Queues","type":"integer","jsonPath":".status.queues"}"#,
    printcolumn = r#"{"name":"Idle","type":"integer","jsonPath":".status.idle"}"#,
    printcolumn = r#"{"name":"Max-Useful","type":"integer","jsonPath":".status.maxUsefulReplicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 63").message("metadata.name: at most 63 characters: the group's name is the value of its pods' rebalancer.dev/group label")
)]
#[x_kube(
    validation = Rule::new("!has(self.consistentHash) || self.strategy == 'ConsistentHash' || (self.strategy == 'MachineRoomNearby' && has(self.nearby) && self.nearby.innerStrategy == 'ConsistentHash')").message("consistentHash is only allowed with strategy ConsistentHash or MachineRoomNearby with innerStrategy ConsistentHash"),
    validation = Rule::new("self.strategy == 'ByMachineRoom' ? has(self.machineRoom) : !has(self.machineRoom)").message("machineRoom is required with strategy ByMachineRoom and only allowed with it"),
    validation = Rule::new("!has(self.nearby) || self.strategy == 'MachineRoomNearby'").message("nearby is only allowed with strategy MachineRoomNearby"),
    validation = Rule::new("self.strategy == 'ByConfig' ? has(self.byConfig) : !has(self.byConfig)").message("byConfig is required with strategy ByConfig and only allowed with it"),
    validation = Rule::new("has(self.consumers)").message("consumers is required: set workloadRef or selector"),
    validation = Rule::new("!has(self.consumerIds) || self.consumerIds == 'Pod' || self.strategy != 'Sticky'").message("strategy Sticky is computed by rebalancer, not by RocketMQ clients: it cannot describe what clients do with consumerIds Client")
)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupSpec {
    /// Names of the `Topic` objects (same namespace) the group subscribes to.
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 253)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub topics: Vec<String>,
    /// `Clustering` splits the queues among consumers; `Broadcasting` gives every consumer every queue.
    #[serde(default)]
    pub message_model: MessageModel,
    /// The allocation strategy.
    #[serde(default)]
    pub strategy: StrategyName,
    /// Parameters of `ConsistentHash` (also used by `MachineRoomNearby` with that inner strategy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashSpec>,
    /// Parameters of `ByMachineRoom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_room: Option<MachineRoomSpec>,
    /// Parameters of `MachineRoomNearby`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nearby: Option<NearbySpec>,
    /// `ByConfig`: consumer id -> the queues it owns. Unknown consumers and queues are reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub by_config: Option<BTreeMap<String, Vec<QueueRange>>>,
    /// Which pods consume: exactly one of `workloadRef` or `selector`. Required in a cluster (a CEL
    /// rule says so); optional in Rust because `rebalancer plan` takes consumers from its command
    /// line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<ConsumersSpec>,
    /// Who the consumers are. `Pod`: the pods are the consumers and read their queues from their
    /// annotation. `Client`: the RocketMQ clients connected to the brokers under `groupName`
    /// (unmodified clients allocating for themselves); the operator reports what they compute
    /// and maps each client to the pod with its IP. `Client` needs `spec.nameServers` on every
    /// topic of the group.
    #[serde(default)]
    pub consumer_ids: ConsumerIds,
    /// RocketMQ consumer group name (`consumerGroup` of the clients); default `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[%|a-zA-Z0-9_-]+$"))]
    pub group_name: Option<String>,
}

impl ConsumerGroupSpec {
    /// Whether the consumers are the RocketMQ clients connected to the brokers.
    pub fn client_mode(&self) -> bool {
        self.consumer_ids == ConsumerIds::Client
    }
}

/// Who a group's consumers are.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConsumerIds {
    /// The selected Ready pods, identified by name; each reads its queues from its annotation.
    #[default]
    Pod,
    /// The clients connected to the group's brokers, identified by client id.
    Client,
}

/// RocketMQ message model.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MessageModel {
    /// Each queue is consumed by one consumer of the group.
    #[default]
    Clustering,
    /// Every consumer consumes every readable queue.
    Broadcasting,
}

/// Allocation strategy. The RocketMQ class each maps to is in the README.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StrategyName {
    /// RocketMQ `AllocateMessageQueueAveragely` (AVG): contiguous pages.
    #[default]
    Averagely,
    /// RocketMQ `AllocateMessageQueueAveragelyByCircle` (AVG_BY_CIRCLE): round robin.
    AveragelyByCircle,
    /// RocketMQ `AllocateMessageQueueConsistentHash` (CONSISTENT_HASH): MD5 ring.
    ConsistentHash,
    /// RocketMQ `AllocateMessageQueueByMachineRoom` (MACHINE_ROOM): only brokers in `consumeZones`.
    ByMachineRoom,
    /// RocketMQ `AllocateMachineRoomNearby` (MACHINE_ROOM_NEARBY): consumers prefer brokers in their zone.
    MachineRoomNearby,
    /// An explicit consumer -> queues map (`byConfig`).
    ByConfig,
    /// Balanced like `Averagely`, and moves the fewest queues when consumers come and go.
    Sticky,
}

/// Strategy used inside each zone by `MachineRoomNearby`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum InnerStrategyName {
    /// AVG.
    #[default]
    Averagely,
    /// AVG_BY_CIRCLE.
    AveragelyByCircle,
    /// CONSISTENT_HASH (virtual nodes from `consistentHash.virtualNodes`, default 10).
    ConsistentHash,
}

/// Parameters of the consistent-hash ring.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHashSpec {
    /// Points each consumer owns on the ring. 0 leaves every queue unassigned, as in RocketMQ.
    #[serde(default = "default_virtual_nodes")]
    #[schemars(range(min = 0, max = 1024))]
    pub virtual_nodes: u32,
}

fn default_virtual_nodes() -> u32 {
    DEFAULT_VIRTUAL_NODES
}

impl Default for ConsistentHashSpec {
    fn default() -> Self {
        Self {
            virtual_nodes: DEFAULT_VIRTUAL_NODES,
        }
    }
}

/// Parameters of `ByMachineRoom`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MachineRoomSpec {
    /// Zones whose brokers the group consumes. Queues of other brokers are left unassigned.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(max = 253)))]
    pub consume_zones: Vec<String>,
}

/// Parameters of `MachineRoomNearby`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NearbySpec {
    /// Strategy applied within each zone.
    #[serde(default)]
    pub inner_strategy: InnerStrategyName,
}

/// Where the consumers of a group come from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.workloadRef) != has(self.selector)").message("exactly one of workloadRef or selector must be set"))]
#[serde(rename_all = "camelCase")]
pub struct ConsumersSpec {
    /// A workload with a scale subresource (Deployment, StatefulSet, ...); its pods are the consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<WorkloadRef>,
    /// A label selector over the pods of the group's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Reference to a scalable workload in the group's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// e.g. `apps/v1`.
    #[schemars(length(min = 1, max = 253))]
    pub api_version: String,
    /// e.g. `Deployment`.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// Name of the workload.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The computed allocation of a group: exactly what `rebalancer plan -o json` prints.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// Number of consumers.
    #[serde(default)]
    pub consumers: u32,
    /// Number of readable queues over all subscribed topics.
    #[serde(default)]
    pub queues: u32,
    /// Number of consumers that own no queue.
    #[serde(default)]
    pub idle: u32,
    /// Every consumer, in Java string order, with its queues (`[]` when idle).
    #[serde(default)]
    pub assignments: Vec<ConsumerAssignment>,
    /// Consumers that own no queue.
    #[serde(default)]
    pub idle_consumers: Vec<String>,
    /// Readable queues nobody owns (ConsistentHash with 0 virtual nodes, ByMachineRoom's other zones, ByConfig gaps).
    #[serde(default)]
    pub unassigned_queues: Vec<QueueRange>,
    /// Queues whose owner changed compared with the previous assignment.
    #[serde(default)]
    pub moved_queues: u64,
    /// Human-readable findings: idle consumers, queue mismatches, unassigned queues.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Producer side of each topic: send rotation and each broker's share.
    #[serde(default)]
    pub producers: Vec<ProducerRoute>,
}

/// How producers spread messages over one topic.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProducerRoute {
    /// RocketMQ topic name.
    pub topic: String,
    /// Writable queues in total.
    pub write_queues: u32,
    /// Brokers in send order (sorted by name) with their writable queues and share of messages.
    pub brokers: Vec<ProducerBrokerShare>,
}

/// One broker in a producer's rotation.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProducerBrokerShare {
    /// Broker name.
    pub broker: String,
    /// Queue ids producers send to, as a range list.
    pub queue_ids: String,
    /// Share of messages, e.g. `50%`.
    pub share: String,
}

/// What the operator observed and decided for a group.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupStatus {
    /// `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Replicas the workload asks for (from its scale subresource), when `workloadRef` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// The most consumers that can all own a queue: the smallest readable-queue count over the
    /// group's topics (Clustering only). Replicas beyond it sit idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_useful_replicas: Option<u32>,
    /// The allocation in force.
    #[serde(flatten)]
    pub allocation: Allocation,
    /// Set when `assignments` was left out because it would make the object too large; every
    /// consumer pod still carries its own queues in its `rebalancer.dev/queues` annotation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub assignments_truncated: bool,
    /// `consumerIds: Client`: connected clients whose IP is no pod's of the group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients_without_pod: Vec<String>,
    /// `consumerIds: Client`: Ready pods of the group with no connected client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods_without_client: Vec<String>,
    /// When the assignment last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rebalance_time: Option<Time>,
    /// `Ready`, `IdleConsumers`, and with `consumerIds: Client` `ClientsMismatch`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
