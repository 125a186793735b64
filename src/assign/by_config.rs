//! `ByConfig`: an explicit consumer -> queues map, validated against the real queues.

use std::collections::{BTreeMap, HashMap};

use super::error::AssignError;
use super::java_order::java_cmp;
use super::model::{AssignNote, QueueSelection, TopicAssignment, UNASSIGNED};

/// Applies the map to `topics` (owners start unassigned). Consumers that are not running are
/// reported in the returned notes and their queues stay unassigned; queues that do not exist or
/// appear twice are errors.
pub fn allocate(
    config: &BTreeMap<String, Vec<QueueSelection>>,
    consumer_index: &HashMap<&str, u32>,
    topics: &mut [TopicAssignment],
) -> Result<Vec<AssignNote>, AssignError> {
    let mut entries: Vec<(&String, &Vec<QueueSelection>)> = config.iter().collect();
    entries.sort_by(|a, b| java_cmp(a.0, b.0));
    let mut first_claim: Vec<Vec<Option<&str>>> =
        topics.iter().map(|t| vec![None; t.owners.len()]).collect();
    let mut absent = Vec::new();
    for (consumer, selections) in entries {
        let owner = consumer_index.get(consumer.as_str()).copied();
        if owner.is_none() {
            absent.push(consumer.clone());
        }
        for sel in selections {
            let unknown = |queue_id: u32, why: String| AssignError::UnknownQueue {
                consumer: consumer.clone(),
                topic: sel.topic.clone(),
                broker: sel.broker.clone(),
                queue_id,
                why,
            };
            let first_id = sel.ranges.first().map_or(0, |r| r.0);
            let Some(t) = topics.iter().position(|t| t.topic == sel.topic) else {
                return Err(unknown(
                    first_id,
                    "a topic the group does not subscribe to".into(),
                ));
            };
            let topic = &mut topics[t];
            let Some(broker) = topic.brokers.iter().find(|b| b.name == sel.broker) else {
                return Err(unknown(
                    first_id,
                    "a broker with no readable queue in this topic".into(),
                ));
            };
            let (offset, count) = (broker.offset, broker.count);
            for &(start, end) in &sel.ranges {
                if end >= count {
                    return Err(unknown(
                        end.max(start),
                        format!("but the broker has {count} readable queues"),
                    ));
                }
                for id in start..=end {
                    let q = (offset + id) as usize;
                    if let Some(first) = first_claim[t][q] {
                        return Err(AssignError::QueueListedTwice {
                            topic: sel.topic.clone(),
                            broker: sel.broker.clone(),
                            queue_id: id,
                            first: first.to_string(),
                            second: consumer.clone(),
                        });
                    }
                    first_claim[t][q] = Some(consumer.as_str());
                    topic.owners[q] = owner.unwrap_or(UNASSIGNED);
                }
            }
        }
    }
    Ok(absent
        .into_iter()
        .map(|consumer| AssignNote::AbsentConsumer { consumer })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::assign::{
        AssignError, AssignNote, BrokerInput, ConsumerInput, GroupInput, MessageModel, Permission,
        QueueSelection, Strategy, TopicInput, UNASSIGNED, allocate,
    };

    fn topic() -> TopicInput {
        let broker = |name: &str, n| BrokerInput {
            name: name.into(),
            read_queues: n,
            write_queues: n,
            permission: Permission::ReadWrite,
            zone: None,
        };
        TopicInput {
            name: "orders".into(),
            brokers: vec![broker("broker-a", 4), broker("broker-b", 4)],
        }
    }

    fn sel(broker: &str, ranges: &[(u32, u32)]) -> QueueSelection {
        QueueSelection {
            topic: "orders".into(),
            broker: broker.into(),
            ranges: ranges.to_vec(),
        }
    }

    fn run(
        config: &[(&str, Vec<QueueSelection>)],
        consumers: &[&str],
    ) -> Result<crate::assign::Assignment, AssignError> {
        let assignments: BTreeMap<String, Vec<QueueSelection>> = config
            .iter()
            .map(|(c, q)| (c.to_string(), q.clone()))
            .collect();
        let consumers: Vec<ConsumerInput> =
            consumers.iter().map(|c| ConsumerInput::new(*c)).collect();
        allocate(&GroupInput {
            topics: &[topic()],
            consumers: &consumers,
            strategy: &Strategy::ByConfig { assignments },
            model: MessageModel::Clustering,
            previous: None,
        })
    }

    #[test]
    fn gives_each_consumer_exactly_its_queues() {
        let a = run(
            &[
                ("c-0", vec![sel("broker-a", &[(0, 3)])]),
                ("c-1", vec![sel("broker-b", &[(0, 1)])]),
            ],
            &["c-0", "c-1", "c-2"],
        )
        .unwrap();
        let o = &a.topics[0].owners;
        assert_eq!(&o[..4], &[0, 0, 0, 0]);
        assert_eq!(&o[4..6], &[1, 1]);
        // Unlisted queues stay unassigned; c-2 is idle.
        assert_eq!(&o[6..], &[UNASSIGNED, UNASSIGNED]);
        assert!(a.notes.is_empty());
    }

    #[test]
    fn an_absent_consumer_is_reported_and_its_queues_left_unassigned() {
        let a = run(
            &[
                ("c-0", vec![sel("broker-a", &[(0, 1)])]),
                ("gone", vec![sel("broker-a", &[(2, 3)])]),
            ],
            &["c-0"],
        )
        .unwrap();
        assert_eq!(&a.topics[0].owners[..4], &[0, 0, UNASSIGNED, UNASSIGNED]);
        assert_eq!(
            a.notes,
            [AssignNote::AbsentConsumer {
                consumer: "gone".into()
            }]
        );
        assert_eq!(
            a.notes[0].to_string(),
            "byConfig names consumer gone, which is not running: its queues are unassigned"
        );
    }

    #[test]
    fn unknown_and_doubly_given_queues_are_errors() {
        let e = run(&[("c-0", vec![sel("broker-a", &[(3, 4)])])], &["c-0"]).unwrap_err();
        assert!(
            matches!(e, AssignError::UnknownQueue { queue_id: 4, .. }),
            "{e}"
        );
        let e = run(&[("c-0", vec![sel("broker-z", &[(0, 0)])])], &["c-0"]).unwrap_err();
        assert!(matches!(e, AssignError::UnknownQueue { .. }), "{e}");
        let e = run(
            &[
                ("c-0", vec![sel("broker-a", &[(0, 1)])]),
                ("c-1", vec![sel("broker-a", &[(1, 1)])]),
            ],
            &["c-0", "c-1"],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "byConfig: orders/broker-a queue 1 is given to both c-0 and c-1"
        );
    }
}
