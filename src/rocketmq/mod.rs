//! A small client of RocketMQ's remoting protocol (the TCP protocol of NameServers and Brokers),
//! for the admin calls the operator needs: topic routes, cluster membership, topic creation,
//! consumer ids and consume offsets.
//!
//! It speaks the protocol directly (JSON headers over tokio; see [`frame`]) rather than depending
//! on a RocketMQ client crate; it is tested against real rocketmq-rust NameServer and Broker
//! processes (`tests/rocketmq_remoting.rs`).
//!
//! Every request code and header field below was checked against Apache RocketMQ's sources
//! (`remoting/src/main/java/org/apache/rocketmq/remoting/protocol/...`).

pub mod client;
pub mod frame;
pub mod pool;
pub mod throttle;

pub use client::{
    BrokerData, ClientConnection, ClusterInfo, ConsumeStats, Error, NameServers, QueueData,
    QueueOffsets, RemotingClient, Result, Timeouts, TopicConfig, TopicRoute,
};
pub use frame::{Command, FrameError};
pub use pool::Connections;
pub use throttle::Throttle;

use crate::assign::Permission;

/// Request codes (Apache RocketMQ
/// `remoting/src/main/java/org/apache/rocketmq/remoting/protocol/RequestCode.java`).
pub mod code {
    /// `UPDATE_CONSUMER_OFFSET = 15` (RequestCode.java); header
    /// `UpdateConsumerOffsetRequestHeader`: consumerGroup, topic, queueId, commitOffset.
    pub const UPDATE_CONSUMER_OFFSET: i32 = 15;
    /// `SEND_MESSAGE = 10` (RequestCode.java); header `SendMessageRequestHeader`.
    pub const SEND_MESSAGE: i32 = 10;
    /// `GET_MAX_OFFSET = 30` (RequestCode.java); header `GetMaxOffsetRequestHeader`: topic,
    /// queueId; response header `GetMaxOffsetResponseHeader`: offset.
    pub const GET_MAX_OFFSET: i32 = 30;
    /// `UPDATE_AND_CREATE_TOPIC = 17` (RequestCode.java); header `CreateTopicRequestHeader`:
    /// topic, defaultTopic, readQueueNums, writeQueueNums, perm, topicFilterType, topicSysFlag,
    /// order.
    pub const UPDATE_AND_CREATE_TOPIC: i32 = 17;
    /// `HEART_BEAT = 34` (RequestCode.java); body `HeartbeatData`.
    pub const HEART_BEAT: i32 = 34;
    /// `GET_CONSUMER_LIST_BY_GROUP = 38` (RequestCode.java); header
    /// `GetConsumerListByGroupRequestHeader`: consumerGroup; body
    /// `GetConsumerListByGroupResponseBody`: consumerIdList.
    pub const GET_CONSUMER_LIST_BY_GROUP: i32 = 38;
    /// `GET_ROUTEINFO_BY_TOPIC = 105` (RequestCode.java); header
    /// `namesrv/GetRouteInfoRequestHeader`: topic; body `route/TopicRouteData`.
    pub const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
    /// `GET_BROKER_CLUSTER_INFO = 106` (RequestCode.java); no header; body `body/ClusterInfo`.
    pub const GET_BROKER_CLUSTER_INFO: i32 = 106;
    /// `GET_CONSUMER_CONNECTION_LIST = 203` (RequestCode.java); header
    /// `GetConsumerConnectionListRequestHeader`: consumerGroup; body `ConsumerConnection`
    /// (`connectionSet`: clientId, clientAddr, language, version).
    pub const GET_CONSUMER_CONNECTION_LIST: i32 = 203;
    /// `GET_CONSUME_STATS = 208` (RequestCode.java); header `GetConsumeStatsRequestHeader`:
    /// consumerGroup, topic (optional); body `admin/ConsumeStats`.
    pub const GET_CONSUME_STATS: i32 = 208;
    /// `GET_CONSUMER_RUNNING_INFO = 307` (RequestCode.java); header
    /// `GetConsumerRunningInfoRequestHeader`: consumerGroup, clientId, jstackEnable. The broker
    /// forwards it to that client, which answers with its `ConsumerRunningInfo` (`mqTable`: the
    /// queues it holds).
    pub const GET_CONSUMER_RUNNING_INFO: i32 = 307;

    /// `NAME(code)` for messages.
    pub fn name(code: i32) -> String {
        let name = match code {
            SEND_MESSAGE => "SEND_MESSAGE",
            UPDATE_CONSUMER_OFFSET => "UPDATE_CONSUMER_OFFSET",
            UPDATE_AND_CREATE_TOPIC => "UPDATE_AND_CREATE_TOPIC",
            GET_MAX_OFFSET => "GET_MAX_OFFSET",
            HEART_BEAT => "HEART_BEAT",
            GET_CONSUMER_LIST_BY_GROUP => "GET_CONSUMER_LIST_BY_GROUP",
            GET_ROUTEINFO_BY_TOPIC => "GET_ROUTEINFO_BY_TOPIC",
            GET_BROKER_CLUSTER_INFO => "GET_BROKER_CLUSTER_INFO",
            GET_CONSUMER_CONNECTION_LIST => "GET_CONSUMER_CONNECTION_LIST",
            GET_CONSUME_STATS => "GET_CONSUME_STATS",
            GET_CONSUMER_RUNNING_INFO => "GET_CONSUMER_RUNNING_INFO",
            _ => "request",
        };
        format!("{name}({code})")
    }
}

/// Response codes (Apache RocketMQ `ResponseCode.java` and `RemotingSysResponseCode.java`).
pub mod response {
    /// `SUCCESS = 0` (RemotingSysResponseCode.java).
    pub const SUCCESS: i32 = 0;
    /// `SYSTEM_ERROR = 1` (RemotingSysResponseCode.java).
    pub const SYSTEM_ERROR: i32 = 1;
    /// `REQUEST_CODE_NOT_SUPPORTED = 3` (RemotingSysResponseCode.java).
    pub const REQUEST_CODE_NOT_SUPPORTED: i32 = 3;
    /// `TOPIC_NOT_EXIST = 17` (ResponseCode.java).
    pub const TOPIC_NOT_EXIST: i32 = 17;
    /// `SUBSCRIPTION_GROUP_NOT_EXIST = 26` (ResponseCode.java).
    pub const SUBSCRIPTION_GROUP_NOT_EXIST: i32 = 26;
    /// `CONSUMER_NOT_ONLINE = 206` (ResponseCode.java).
    pub const CONSUMER_NOT_ONLINE: i32 = 206;
    /// `INVALID_PARAMETER = 29` (ResponseCode.java).
    pub const INVALID_PARAMETER: i32 = 29;
}

/// `PermName.PERM_READ` (`common/src/main/java/org/apache/rocketmq/common/constant/PermName.java`).
pub const PERM_READ: u32 = 1 << 2;
/// `PermName.PERM_WRITE`.
pub const PERM_WRITE: u32 = 1 << 1;
/// `PermName.PERM_INHERIT`.
pub const PERM_INHERIT: u32 = 1;

/// The `perm` bits of a permission (6, 4, 2 or 0).
pub fn perm_of(permission: Permission) -> u32 {
    match permission {
        Permission::ReadWrite => PERM_READ | PERM_WRITE,
        Permission::ReadOnly => PERM_READ,
        Permission::WriteOnly => PERM_WRITE,
        Permission::Deny => 0,
    }
}

/// The permission of `perm` bits (`PermName.isReadable`/`isWriteable`; other bits ignored).
pub fn permission_of(perm: u32) -> Permission {
    match (perm & PERM_READ != 0, perm & PERM_WRITE != 0) {
        (true, true) => Permission::ReadWrite,
        (true, false) => Permission::ReadOnly,
        (false, true) => Permission::WriteOnly,
        (false, false) => Permission::Deny,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_round_trip_and_ignore_other_bits() {
        for p in [
            Permission::ReadWrite,
            Permission::ReadOnly,
            Permission::WriteOnly,
            Permission::Deny,
        ] {
            assert_eq!(permission_of(perm_of(p)), p);
            assert_eq!(permission_of(perm_of(p) | PERM_INHERIT | 8), p);
        }
        assert_eq!(perm_of(Permission::ReadWrite), 6);
        assert_eq!(permission_of(7), Permission::ReadWrite, "TBW102's perm");
    }

    #[test]
    fn code_names() {
        assert_eq!(code::name(105), "GET_ROUTEINFO_BY_TOPIC(105)");
        assert_eq!(code::name(9999), "request(9999)");
    }
}
