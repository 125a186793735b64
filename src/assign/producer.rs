//! The producer side of a topic: RocketMQ producers send round robin over every writable queue
//! (brokers sorted by name, ids `0..writeQueues`), so each broker receives a share proportional to
//! its writable queues. Mismatched read/write counts are the classic misconfiguration.

use super::java_order::java_cmp;
use super::model::{BrokerInput, TopicInput};

/// One broker in the send rotation.
#[derive(Clone, Debug, PartialEq)]
pub struct ProducerShare {
    /// Broker name.
    pub broker: String,
    /// Writable queues on it.
    pub write_queues: u32,
    /// Fraction of the topic's messages, 0.0..=1.0.
    pub share: f64,
}

/// A read/write mismatch on one broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueMismatch {
    /// Producers write queues `read..write` that no consumer reads.
    UnreadQueues {
        /// Topic name.
        topic: String,
        /// Broker name.
        broker: String,
        /// Readable queues.
        read: u32,
        /// Writable queues.
        write: u32,
    },
    /// Consumers own queues `write..read` that receive nothing.
    EmptyQueues {
        /// Topic name.
        topic: String,
        /// Broker name.
        broker: String,
        /// Readable queues.
        read: u32,
        /// Writable queues.
        write: u32,
    },
}

impl std::fmt::Display for QueueMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueMismatch::UnreadQueues {
                topic,
                broker,
                read,
                write,
            } => write!(
                f,
                "topic {topic} broker {broker}: writeQueues {write} > readQueues {read}: messages sent to queues {read}-{} are never consumed",
                write - 1
            ),
            QueueMismatch::EmptyQueues {
                topic,
                broker,
                read,
                write,
            } => write!(
                f,
                "topic {topic} broker {broker}: readQueues {read} > writeQueues {write}: consumers of queues {write}-{} receive nothing",
                read - 1
            ),
        }
    }
}

/// The send rotation of a topic: writable brokers in Java order with their shares.
pub fn send_rotation(topic: &TopicInput) -> Vec<ProducerShare> {
    let mut brokers: Vec<&BrokerInput> = topic
        .brokers
        .iter()
        .filter(|b| b.writable_queues() > 0)
        .collect();
    brokers.sort_by(|a, b| java_cmp(&a.name, &b.name));
    let total: u64 = brokers.iter().map(|b| u64::from(b.write_queues)).sum();
    brokers
        .into_iter()
        .map(|b| ProducerShare {
            broker: b.name.clone(),
            write_queues: b.write_queues,
            share: b.write_queues as f64 / total as f64,
        })
        .collect()
}

/// Brokers whose read and write queue counts differ while both reading and writing are allowed.
/// (A ReadOnly or WriteOnly broker is usually being drained or filled on purpose.)
pub fn mismatches(topic: &TopicInput) -> Vec<QueueMismatch> {
    let mut brokers: Vec<&BrokerInput> = topic.brokers.iter().collect();
    brokers.sort_by(|a, b| java_cmp(&a.name, &b.name));
    brokers
        .into_iter()
        .filter(|b| b.permission.readable() && b.permission.writable())
        .filter_map(|b| {
            let (topic, broker) = (topic.name.clone(), b.name.clone());
            let (read, write) = (b.read_queues, b.write_queues);
            match read.cmp(&write) {
                std::cmp::Ordering::Less => Some(QueueMismatch::UnreadQueues {
                    topic,
                    broker,
                    read,
                    write,
                }),
                std::cmp::Ordering::Greater => Some(QueueMismatch::EmptyQueues {
                    topic,
                    broker,
                    read,
                    write,
                }),
                std::cmp::Ordering::Equal => None,
            }
        })
        .collect()
}

/// Formats a share as a percentage with up to two decimals: `50%`, `33.33%`.
pub fn format_share(share: f64) -> String {
    let s = format!("{:.2}", share * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::Permission;

    fn broker(name: &str, read: u32, write: u32, permission: Permission) -> BrokerInput {
        BrokerInput {
            name: name.into(),
            read_queues: read,
            write_queues: write,
            permission,
            zone: None,
        }
    }

    #[test]
    fn rotation_is_sorted_and_weighted() {
        let topic = TopicInput {
            name: "orders".into(),
            brokers: vec![
                broker("broker-b", 4, 4, Permission::ReadWrite),
                broker("broker-a", 8, 8, Permission::ReadWrite),
                broker("broker-c", 8, 8, Permission::ReadOnly),
                broker("broker-d", 0, 4, Permission::WriteOnly),
            ],
        };
        let r = send_rotation(&topic);
        let names: Vec<&str> = r.iter().map(|s| s.broker.as_str()).collect();
        assert_eq!(names, ["broker-a", "broker-b", "broker-d"]);
        assert_eq!(format_share(r[0].share), "50%");
        assert_eq!(format_share(r[1].share), "25%");
        assert_eq!(format_share(1.0 / 3.0), "33.33%");
    }

    #[test]
    fn flags_both_mismatches() {
        let topic = TopicInput {
            name: "orders".into(),
            brokers: vec![
                broker("a", 4, 8, Permission::ReadWrite),
                broker("b", 8, 4, Permission::ReadWrite),
                broker("c", 8, 4, Permission::ReadOnly),
                broker("d", 4, 4, Permission::ReadWrite),
            ],
        };
        let m = mismatches(&topic);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].to_string(),
            "topic orders broker a: writeQueues 8 > readQueues 4: messages sent to queues 4-7 are never consumed"
        );
        assert!(matches!(m[1], QueueMismatch::EmptyQueues { .. }));
    }
}
