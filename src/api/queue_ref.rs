use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Queues of one broker of one topic: `queueIds` is a compact, sorted range list such as `0-3,8`.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct QueueRange {
    /// RocketMQ topic name.
    pub topic: String,
    /// Broker name.
    pub broker: String,
    /// Queue ids, as a compact range list (`0-3,8`).
    #[schemars(regex(pattern = r"^$|^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$"))]
    pub queue_ids: String,
}

/// The queues one consumer owns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerAssignment {
    /// Consumer id: the pod name, or with `consumerIds: Client` the RocketMQ client id
    /// (`clientIP@instanceName`).
    pub consumer: String,
    /// With `consumerIds: Client`: the pod whose IP is the client id's IP part (absent when no
    /// pod of the group has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Owned queues; empty when the consumer is idle.
    #[serde(default)]
    pub queues: Vec<QueueRange>,
}
