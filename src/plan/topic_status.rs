//! A Topic's status, decided from its layout (`spec.brokers`, or with `spec.nameServers` the
//! observed layout, see [`super::topic_sync`]): totals, each broker's producer share, and the
//! `Ready` and `QueueMismatch` conditions. Pure: the Topic reconciler only merges and writes it.

use kube::Resource;

use crate::api::validation::validate_topic_shape;
use crate::api::{BrokerStatus, Topic, TopicStatus};
use crate::assign::java_order::java_cmp;
use crate::assign::producer::{format_share, mismatches};

use super::{awaits_sync, observed_layout, topic_input};

/// Condition type: the topic's spec is valid and it has readable queues.
pub const READY: &str = "Ready";
/// Condition type: a broker's read and write queue counts differ.
pub const QUEUE_MISMATCH: &str = "QueueMismatch";
/// `Ready` reason of a Topic with `nameServers` that has no layout yet.
pub const NOT_SYNCED: &str = "NotSynced";

/// A condition a Topic should have (its transition time is the reconciler's business).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicCondition {
    /// Condition type: [`READY`] or [`QUEUE_MISMATCH`].
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl TopicCondition {
    /// A condition.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// The status a topic should have (`conditions` left empty) and its conditions. An invalid spec
/// keeps the previous totals and only says why (`Ready=False`, `InvalidSpec`). A Topic with
/// `nameServers` is described by its observed layout (`status.observed`, which is kept as it is);
/// without one and without `spec.brokers` it has no queues yet (`Ready=False`, `NotSynced`).
pub fn topic_status(topic: &Topic) -> (TopicStatus, Vec<TopicCondition>) {
    let violations = validate_topic_shape(&topic.spec);
    if !violations.is_empty() {
        let message = violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let status = TopicStatus {
            observed_generation: topic.meta().generation,
            ..topic.status.clone().unwrap_or_default()
        };
        return (
            status,
            vec![TopicCondition::new(READY, false, "InvalidSpec", message)],
        );
    }
    let observed = observed_layout(topic).cloned();
    if awaits_sync(topic) {
        let status = TopicStatus {
            observed_generation: topic.meta().generation,
            ..TopicStatus::default()
        };
        return (
            status,
            vec![TopicCondition::new(
                READY,
                false,
                NOT_SYNCED,
                "no layout yet: the topic has not been read from its NameServers (see the Synced condition)",
            )],
        );
    }
    let input = topic_input(topic);
    let mut brokers: Vec<_> = input.brokers.iter().collect();
    brokers.sort_by(|a, b| java_cmp(&a.name, &b.name));
    let total_write: u32 = brokers.iter().map(|b| b.writable_queues()).sum();
    let status = TopicStatus {
        observed_generation: topic.meta().generation,
        broker_count: brokers.len() as u32,
        read_queues: brokers.iter().map(|b| b.readable_queues()).sum(),
        write_queues: total_write,
        draining_since: None,
        brokers: brokers
            .iter()
            .map(|b| BrokerStatus {
                name: b.name.clone(),
                read_queues: b.readable_queues(),
                write_queues: b.writable_queues(),
                producer_share: if total_write == 0 {
                    "0%".into()
                } else {
                    format_share(f64::from(b.writable_queues()) / f64::from(total_write))
                },
            })
            .collect(),
        observed,
        conditions: Vec::new(),
    };
    let problems = mismatches(&input);
    let mut conditions = vec![if status.read_queues == 0 {
        TopicCondition::new(
            READY,
            false,
            "NoReadableQueues",
            "no broker has readable queues: consumer groups of this topic cannot be planned",
        )
    } else {
        TopicCondition::new(
            READY,
            true,
            "Valid",
            format!(
                "{} readable, {} writable queues",
                status.read_queues, status.write_queues
            ),
        )
    }];
    conditions.push(if problems.is_empty() {
        TopicCondition::new(
            QUEUE_MISMATCH,
            false,
            "Matched",
            "every broker reads the queues it writes",
        )
    } else {
        TopicCondition::new(
            QUEUE_MISMATCH,
            true,
            "ReadWriteMismatch",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    });
    (status, conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BrokerSpec, Permission, TopicSpec};

    fn broker(name: &str, read: u32, write: u32, permission: Permission) -> BrokerSpec {
        BrokerSpec {
            name: name.into(),
            read_queues: read,
            write_queues: write,
            permission,
            zone: None,
        }
    }

    fn topic(brokers: Vec<BrokerSpec>) -> Topic {
        let mut t = Topic::new(
            "orders",
            TopicSpec {
                topic_name: None,
                brokers: Some(brokers),
                name_servers: None,
                sync: None,
                broker_cluster: None,
                drain_timeout_seconds: None,
                drain_quiet_seconds: None,
            },
        );
        t.metadata.generation = Some(3);
        t
    }

    #[test]
    fn totals_shares_and_mismatch() {
        let (status, conditions) = topic_status(&topic(vec![
            broker("broker-b", 4, 8, Permission::ReadWrite),
            broker("broker-a", 4, 4, Permission::ReadWrite),
            broker("broker-c", 8, 8, Permission::ReadOnly),
        ]));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(
            (status.broker_count, status.read_queues, status.write_queues),
            (3, 16, 12)
        );
        let shares: Vec<(&str, &str)> = status
            .brokers
            .iter()
            .map(|b| (b.name.as_str(), b.producer_share.as_str()))
            .collect();
        assert_eq!(
            shares,
            [
                ("broker-a", "33.33%"),
                ("broker-b", "66.67%"),
                ("broker-c", "0%")
            ]
        );
        assert_eq!(
            conditions,
            [
                TopicCondition::new(READY, true, "Valid", "16 readable, 12 writable queues"),
                TopicCondition::new(
                    QUEUE_MISMATCH,
                    true,
                    "ReadWriteMismatch",
                    "topic orders broker broker-b: writeQueues 8 > readQueues 4: messages sent to queues 4-7 are never consumed"
                ),
            ]
        );
    }

    #[test]
    fn no_readable_queues_and_invalid_spec() {
        let (status, conditions) =
            topic_status(&topic(vec![broker("a", 4, 4, Permission::WriteOnly)]));
        assert_eq!(status.brokers[0].producer_share, "100%");
        assert_eq!(conditions[0].reason, "NoReadableQueues");
        assert!(!conditions[0].status);
        assert_eq!(conditions[1].reason, "Matched");

        let (status, conditions) = topic_status(&topic(vec![]));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.broker_count, 0);
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            (conditions[0].type_, conditions[0].reason),
            (READY, "InvalidSpec")
        );
    }
}
