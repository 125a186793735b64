use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Highest queue count RocketMQ accepts per broker (a `Topic`'s readQueues/writeQueues).
pub const MAX_QUEUES_PER_BROKER: u32 = 4096;
/// Most brokers a `Topic` may list.
pub const MAX_BROKERS: usize = 256;

/// A RocketMQ topic: which brokers hold its queues, how many, and with which permission.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rebalancer.dev",
    version = "v1alpha1",
    kind = "Topic",
    plural = "topics",
    shortname = "mqt",
    namespaced,
    status = "TopicStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Brokers","type":"integer","jsonPath":".status.brokerCount"}"#,
    printcolumn = r#"{"name":"Read","type":"integer","jsonPath":".status.readQueues"}"#,
    printcolumn = r#"{"name":"Write","type":"integer","jsonPath":".status.writeQueues"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// The RocketMQ topic name when it differs from `metadata.name` (RocketMQ names may hold
    /// capitals, `_` and `%`, which Kubernetes names cannot). It is part of the consistent-hash key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[%|a-zA-Z0-9_-]+$"))]
    pub topic_name: Option<String>,
    /// The brokers that hold the topic's queues. Names are unique.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub brokers: Vec<BrokerSpec>,
}

/// One broker's share of a topic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSpec {
    /// Broker name (RocketMQ `brokerName`), e.g. `broker-a` or `room1@broker-a`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Queues consumers read: ids `0..readQueues`.
    #[schemars(range(min = 0, max = 4096))]
    pub read_queues: u32,
    /// Queues producers write: ids `0..writeQueues`.
    #[schemars(range(min = 0, max = 4096))]
    pub write_queues: u32,
    /// RocketMQ permission of the topic on this broker.
    #[serde(default)]
    pub permission: Permission,
    /// Zone (machine room) of the broker. When empty, the part before `@` of a name of the form
    /// `room@broker` is used, as RocketMQ does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub zone: Option<String>,
}

pub use crate::assign::Permission;

/// What the operator observed of a topic.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of brokers.
    #[serde(default)]
    pub broker_count: u32,
    /// Readable queues in total (brokers with ReadWrite or ReadOnly permission).
    #[serde(default)]
    pub read_queues: u32,
    /// Writable queues in total (brokers with ReadWrite or WriteOnly permission).
    #[serde(default)]
    pub write_queues: u32,
    /// Each broker's queues and share of produced messages.
    #[serde(default)]
    pub brokers: Vec<BrokerStatus>,
    /// `Ready` and `QueueMismatch`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A broker as producers and consumers see it.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    /// Broker name.
    pub name: String,
    /// Queues consumers read on this broker (0 when the permission forbids reading).
    pub read_queues: u32,
    /// Queues producers write on this broker (0 when the permission forbids writing).
    pub write_queues: u32,
    /// Share of the topic's messages producers send here, e.g. `37.5%`.
    pub producer_share: String,
}
