//! The largest inputs the engine takes, checked before any allocation: beyond them an input is
//! refused with [`AssignError::TooLarge`] naming what is too large, never allocated (a route or a
//! status saying `readQueueNums: 4294967295` once made the process abort on a 16 GiB
//! allocation). The same numbers bound the Topic schema, routes read from NameServers, and
//! `rebalancer plan`.

use super::{AssignError, GroupInput, TopicInput};

/// Highest queue count RocketMQ accepts per broker (a Topic's `readQueues`/`writeQueues`).
pub const MAX_QUEUES_PER_BROKER: u32 = 4096;
/// Most brokers of one topic.
pub const MAX_BROKERS: usize = 256;
/// Most topics of one group.
pub const MAX_TOPICS: usize = 64;
/// Most consumers of one group.
pub const MAX_CONSUMERS: usize = 100_000;

fn too_large(what: String, value: u64, limit: u64) -> Result<(), AssignError> {
    Err(AssignError::TooLarge { what, value, limit })
}

/// Refuses an input beyond the limits, naming the first field that is.
pub fn check(input: &GroupInput<'_>) -> Result<(), AssignError> {
    if input.consumers.len() > MAX_CONSUMERS {
        return too_large(
            "consumers".into(),
            input.consumers.len() as u64,
            MAX_CONSUMERS as u64,
        );
    }
    check_topics(input.topics)
}

/// Refuses topics beyond the limits, naming the first field that is.
pub fn check_topics(topics: &[TopicInput]) -> Result<(), AssignError> {
    if topics.len() > MAX_TOPICS {
        return too_large("topics".into(), topics.len() as u64, MAX_TOPICS as u64);
    }
    for t in topics {
        if t.brokers.len() > MAX_BROKERS {
            return too_large(
                format!("topic {}: brokers", t.name),
                t.brokers.len() as u64,
                MAX_BROKERS as u64,
            );
        }
        for b in &t.brokers {
            for (field, value) in [
                ("readQueues", b.read_queues),
                ("writeQueues", b.write_queues),
            ] {
                if value > MAX_QUEUES_PER_BROKER {
                    return too_large(
                        format!("topic {}: broker {}: {field}", t.name, b.name),
                        u64::from(value),
                        u64::from(MAX_QUEUES_PER_BROKER),
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::{BrokerInput, ConsumerInput, MessageModel, Permission, Strategy, allocate};

    fn topic(read: u32, brokers: usize) -> TopicInput {
        TopicInput {
            name: "orders".into(),
            brokers: (0..brokers)
                .map(|i| BrokerInput {
                    name: format!("broker-{i}"),
                    read_queues: read,
                    write_queues: read.min(4),
                    permission: Permission::ReadWrite,
                    zone: None,
                })
                .collect(),
        }
    }

    #[test]
    fn absurd_sizes_are_refused_before_any_allocation() {
        let consumers = [ConsumerInput::new("c-0")];
        let run = |topics: &[TopicInput], consumers: &[ConsumerInput]| {
            allocate(&GroupInput {
                topics,
                consumers,
                strategy: &Strategy::Averagely,
                model: MessageModel::Clustering,
                previous: None,
            })
        };
        let e = run(&[topic(u32::MAX, 1)], &consumers).unwrap_err();
        assert_eq!(e.reason(), "TooLarge");
        assert_eq!(
            e.to_string(),
            "topic orders: broker broker-0: readQueues is 4294967295, more than the 4096 the engine takes"
        );
        let e = run(&[topic(4, 257)], &consumers).unwrap_err();
        assert!(
            e.to_string().starts_with("topic orders: brokers is 257"),
            "{e}"
        );
        let many: Vec<ConsumerInput> = (0..=MAX_CONSUMERS)
            .map(|i| ConsumerInput::new(format!("c-{i}")))
            .collect();
        let e = run(&[topic(4, 1)], &many).unwrap_err();
        assert!(e.to_string().starts_with("consumers is 100001"), "{e}");
        // At the limits, it allocates.
        let a = run(&[topic(MAX_QUEUES_PER_BROKER, 2)], &consumers).unwrap();
        assert_eq!(a.topics[0].owners.len(), 8192);
    }
}
