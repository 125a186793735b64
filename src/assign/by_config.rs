//! `ByConfig`: an explicit consumer -> queues map, validated against the real queues.

use std::collections::{BTreeMap, HashMap};

use super::error::AssignError;
use super::java_order::java_cmp;
use super::model::{QueueSelection, TopicAssignment, UNASSIGNED};

/// Applies the map to `topics` (owners start unassigned). Consumers that are not running are
/// reported in the returned notes and their queues stay unassigned; queues that do not exist or
/// appear twice are errors.
pub fn allocate(
    config: &BTreeMap<String, Vec<QueueSelection>>,
    consumer_index: &HashMap<&str, u32>,
    topics: &mut [TopicAssignment],
) -> Result<Vec<String>, AssignError> {
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
        .map(|c| {
            format!("byConfig names consumer {c}, which is not running: its queues are unassigned")
        })
        .collect())
}
