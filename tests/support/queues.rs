//! Queue sets of statuses and annotations, for the suites that check them: the envtest suites
//! and the kind e2e suite (which includes this file by path).

use std::collections::BTreeSet;

use rebalancer::api::{ConsumerGroup, QueueRange};

/// One queue: `(topic, broker, queue id)`.
pub type QueueId = (String, String, u32);

/// Every queue `0..n` of each `(broker, n)` of a topic.
pub fn all_queues(topic: &str, brokers: &[(&str, u32)]) -> BTreeSet<QueueId> {
    brokers
        .iter()
        .flat_map(|(broker, n)| (0..*n).map(move |id| (topic.to_string(), broker.to_string(), id)))
        .collect()
}

/// Expands a range list such as `0-3,8`.
pub fn expand_ids(list: &str) -> Result<Vec<u32>, String> {
    let mut ids = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let parse = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|e| format!("bad queue id {s:?} in {list:?}: {e}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse(a)?, parse(b)?);
                if a > b {
                    return Err(format!("descending range {part:?} in {list:?}"));
                }
                ids.extend(a..=b);
            }
            None => ids.push(parse(part)?),
        }
    }
    Ok(ids)
}

/// The queues of a list of ranges; a queue listed twice is an error.
pub fn expand(ranges: &[QueueRange]) -> Result<BTreeSet<QueueId>, String> {
    let mut out = BTreeSet::new();
    for r in ranges {
        for id in expand_ids(&r.queue_ids)? {
            if !out.insert((r.topic.clone(), r.broker.clone(), id)) {
                return Err(format!("queue {}/{}/{id} listed twice", r.topic, r.broker));
            }
        }
    }
    Ok(out)
}

/// A group's status as one line of JSON, for failure messages.
pub fn status_json(group: &ConsumerGroup) -> String {
    serde_json::to_string(&group.status).unwrap_or_else(|e| format!("<{e}>"))
}
