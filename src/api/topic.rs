use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Highest queue count RocketMQ accepts per broker (a `Topic`'s readQueues/writeQueues), and
/// most brokers a `Topic` may list: the engine's own limits.
pub use crate::assign::limits::{MAX_BROKERS, MAX_QUEUES_PER_BROKER};
/// Most NameServers a `Topic` may list.
pub const MAX_NAME_SERVERS: usize = 16;
/// The schema's pattern of a NameServer address: `host:port`, the host a DNS name, an IPv4
/// address or a bracketed IPv6 address. `api::validation::is_host_port` checks the same.
pub const NAME_SERVER_PATTERN: &str =
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):[0-9]{1,5}$";

/// A RocketMQ topic: which brokers hold its queues, how many, and with which permission.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
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
    printcolumn = r#"{"name":"Synced","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Drifted","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Drifted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("has(self.brokers) || has(self.nameServers)").message("brokers is required unless nameServers is set"),
    validation = Rule::new("!has(self.sync) || has(self.nameServers)").message("sync is only allowed with nameServers"),
    validation = Rule::new("!has(self.sync) || self.sync != 'Manage' || has(self.brokers) || has(self.brokerCluster)").message("sync Manage requires brokers or brokerCluster"),
    validation = Rule::new("!has(self.brokerCluster) || (has(self.sync) && self.sync == 'Manage')").message("brokerCluster is only allowed with sync Manage"),
    validation = Rule::new("!has(self.brokerCluster) || !has(self.brokers)").message("brokers and brokerCluster are mutually exclusive"),
    validation = Rule::new("!has(self.drainTimeoutSeconds) || (has(self.sync) && self.sync == 'Manage')").message("drainTimeoutSeconds is only allowed with sync Manage"),
    validation = Rule::new("!has(self.drainQuietSeconds) || (has(self.sync) && self.sync == 'Manage')").message("drainQuietSeconds is only allowed with sync Manage"),
    validation = Rule::new("!has(self.sync) || self.sync != 'Manage' || !has(self.brokers) || self.brokers.all(b, b.readQueues >= b.writeQueues && (!has(b.permission) || b.permission != 'WriteOnly'))").message("with sync Manage every broker needs readQueues >= writeQueues and a readable permission if writable (UnsafeQueueCounts)")
)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// The RocketMQ topic name when it differs from `metadata.name` (RocketMQ names may hold
    /// capitals, `_` and `%`, which Kubernetes names cannot). It is part of the consistent-hash key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[%|a-zA-Z0-9_-]+$"))]
    pub topic_name: Option<String>,
    /// The brokers that hold the topic's queues. Names are unique. Required unless `nameServers`
    /// is set; with `nameServers`, the layout the topic is expected to have: a difference from the
    /// observed layout is reported (`Drifted`), and the observed layout is the one used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub brokers: Option<Vec<BrokerSpec>>,
    /// The cluster's NameServers (RocketMQ's `namesrvAddr` as a list), `host:port` each. When
    /// set, the operator reads the topic's route from them (see `sync`) into `status.observed`,
    /// and consumer groups are planned from that observed layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 16),
        inner(
            length(min = 1, max = 261),
            regex(pattern = NAME_SERVER_PATTERN)
        )
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub name_servers: Option<Vec<String>>,
    /// How the topic follows its cluster (the schema shows the type's description).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncMode>,
    /// `sync: Manage` only, instead of `brokers`: every broker of this RocketMQ cluster (from the
    /// NameServers' cluster info) gets the same queue counts and permission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_cluster: Option<BrokerClusterSpec>,
    /// `sync: Manage` only: how long a shrink of the read queues waits for the removed queues to
    /// be drained (every consumer group of the Topic caught up with their max offsets) before it
    /// proceeds anyway. Absent: it waits until they are drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub drain_timeout_seconds: Option<u32>,
    /// `sync: Manage` only: the quiet window of a shrink, in seconds: after the write queues
    /// shrank (from when the route first shows it), the read queues wait at least this long, so
    /// that every producer has refreshed its route and stopped writing to the removed queues.
    /// Absent: 35 (Apache RocketMQ producers refresh routes every 30 s, `pollNameServerInterval`).
    /// Lower it only if every producer of the topic refreshes its route at least that often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub drain_quiet_seconds: Option<u32>,
}

/// The queue counts and permission of a topic on every broker of one cluster (`sync: Manage`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("self.readQueues >= self.writeQueues && (!has(self.permission) || self.permission != 'WriteOnly')").message("brokerCluster needs readQueues >= writeQueues and a readable permission if writable (UnsafeQueueCounts)")
)]
#[serde(rename_all = "camelCase")]
pub struct BrokerClusterSpec {
    /// The RocketMQ cluster name (`brokerClusterName`), e.g. `DefaultCluster`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Queues consumers read on each broker.
    #[schemars(range(min = 0, max = 4096))]
    pub read_queues: u32,
    /// Queues producers write on each broker.
    #[schemars(range(min = 0, max = 4096))]
    pub write_queues: u32,
    /// RocketMQ permission of the topic on each broker.
    #[serde(default)]
    pub permission: Permission,
}

/// How a `Topic` follows its cluster (only with `nameServers`; default `Observe`): `Observe` reads
/// the topic's route on every reconcile and every sync period and never writes to RocketMQ;
/// `Manage` makes the brokers hold `brokers` (or `brokerCluster`): it creates or updates the topic
/// on each broker's master, never leaves readQueues < writeQueues, and shrinks write queues first
/// and read queues only after the quiet window (`drainQuietSeconds`) once the removed queues are
/// drained (or `drainTimeoutSeconds` ran out).
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum SyncMode {
    /// Read the route from the NameServers; never write to RocketMQ.
    #[default]
    Observe,
    /// Create and update the topic on the brokers until the route matches the spec.
    Manage,
}

impl TopicSpec {
    /// The brokers of the spec (none when only `nameServers` is set).
    pub fn brokers(&self) -> &[BrokerSpec] {
        self.brokers.as_deref().unwrap_or_default()
    }

    /// Whether the operator manages the topic on the brokers (`nameServers` and `sync: Manage`).
    pub fn manages(&self) -> bool {
        self.name_servers.is_some() && self.sync == Some(SyncMode::Manage)
    }
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
    /// The layout read from the NameServers (`spec.nameServers` only). It keeps the last good
    /// layout while the NameServers cannot be read (`Synced=False`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<ObservedTopic>,
    /// `sync: Manage`: when the current wait for removed read queues to drain began: when the
    /// route first showed the write queues shrunk (or the read queues restored). Kept while the
    /// wait lasts, across operator restarts; the quiet window (`drainQuietSeconds`) and
    /// `drainTimeoutSeconds` count from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_since: Option<Time>,
    /// `Ready`, `QueueMismatch`, and with `spec.nameServers` `Synced` and `Drifted`.
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

/// A topic's layout as its NameServers route it.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObservedTopic {
    /// The brokers of the route, in name order.
    #[serde(default)]
    pub brokers: Vec<ObservedBroker>,
    /// When this layout was read. Recorded when the layout changes or a sync succeeds after a
    /// failure; a sync that finds the same layout writes nothing (the metric
    /// `rebalancer_topic_last_sync_timestamp_seconds` tells the time of the last sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
}

/// One broker of a topic's route (RocketMQ `QueueData` and `BrokerData`).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObservedBroker {
    /// Broker name (`brokerName`).
    pub name: String,
    /// `readQueueNums`.
    pub read_queues: u32,
    /// `writeQueueNums`.
    pub write_queues: u32,
    /// The permission of the topic on this broker (from `perm`).
    pub permission: Permission,
    /// The master's address (broker id 0), when the route has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_addr: Option<String>,
}
