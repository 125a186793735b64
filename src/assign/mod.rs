//! The allocation engine: which consumer owns which queue. Pure: inputs in, assignment out; no
//! Kubernetes, no async, no I/O. `rebalancer plan` and the operator both call [`allocate`].
//!
//! RocketMQ semantics (see `docs/rocketmq-allocation.md`): per topic, the readable queues sorted by
//! (topic, broker, queue id) and the consumer ids sorted in Java `String.compareTo` order are handed
//! to the strategy; a group's assignment is the union over its topics.

mod by_config;
pub mod consistent_hash;
mod error;
pub mod java_order;
pub mod limits;
mod machine_room;
mod model;
mod nearby;
mod paging;
pub mod producer;
pub mod ranges;
mod render;
mod sticky;
pub mod zone;

use std::collections::HashMap;

pub use error::AssignError;
pub use model::*;
pub use render::{ConsumerQueues, QueueBlock};

use consistent_hash::{Ring, md5_hash, queue_key};
use java_order::java_cmp;

/// Marks a queue whose previous owner is no longer a consumer.
const DEPARTED: u32 = u32::MAX - 1;

/// Computes the assignment of one consumer group.
pub fn allocate(input: &GroupInput<'_>) -> Result<Assignment, AssignError> {
    limits::check(input)?;
    let (ids, zones) = sorted_consumers(input.consumers)?;
    let mut topics = prepare_topics(input.topics)?;

    if input.model == MessageModel::Broadcasting {
        // RocketMQ never calls the strategy here: everyone reads every readable queue.
        for t in &mut topics {
            t.owners = Vec::new();
        }
        return Ok(Assignment {
            consumers: ids,
            topics,
            model: MessageModel::Broadcasting,
            moved_queues: 0,
            notes: Vec::new(),
        });
    }

    if ids.is_empty() {
        return Err(AssignError::NoConsumers);
    }
    let by_config = matches!(input.strategy, Strategy::ByConfig { .. });
    if !by_config {
        // RocketMQ's check(): a topic with no readable queue throws, and the client keeps its queues.
        if let Some(t) = topics.iter().find(|t| t.owners.is_empty()) {
            return Err(AssignError::NoQueues {
                topic: t.topic.clone(),
            });
        }
    }

    let index: HashMap<&str, u32> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i as u32))
        .collect();
    let previous = input
        .previous
        .map(|p| previous_owners(p, &index, &topics))
        .unwrap_or_default();
    let everyone: Vec<u32> = (0..ids.len() as u32).collect();
    let mut notes = Vec::new();

    match input.strategy {
        Strategy::Averagely => {
            for t in &mut topics {
                paging::averagely(&all_queues(t.owners.len()), &everyone, &mut t.owners);
            }
        }
        Strategy::AveragelyByCircle => {
            for t in &mut topics {
                paging::by_circle(&all_queues(t.owners.len()), &everyone, &mut t.owners);
            }
        }
        Strategy::ConsistentHash { virtual_nodes } => {
            let ring = Ring::build(&ids, &everyone, *virtual_nodes);
            for t in &mut topics {
                let queues = all_queues(t.owners.len());
                hash_queues(&ring, t, &queues);
            }
        }
        Strategy::ByMachineRoom { consume_zones } => {
            for t in &mut topics {
                let mut eligible = Vec::new();
                for b in &t.brokers {
                    // RocketMQ only looks at the `room@broker` name here, unless a zone is set.
                    if b.zone.as_ref().is_some_and(|z| consume_zones.contains(z)) {
                        eligible.extend(b.offset..b.offset + b.count);
                    }
                }
                machine_room::allocate(&eligible, &everyone, &mut t.owners);
            }
        }
        Strategy::MachineRoomNearby { inner } => {
            nearby_allocate(&mut topics, &ids, &zones, &everyone, *inner)?;
        }
        Strategy::ByConfig { assignments } => {
            notes = by_config::allocate(assignments, &index, &mut topics)?;
        }
        Strategy::Sticky => {
            for (t, topic) in topics.iter_mut().enumerate() {
                let present: Vec<u32> = match previous.get(t) {
                    Some(p) => p
                        .iter()
                        .map(|&o| if o == DEPARTED { UNASSIGNED } else { o })
                        .collect(),
                    None => vec![UNASSIGNED; topic.owners.len()],
                };
                sticky::allocate(&present, ids.len(), &mut topic.owners);
            }
        }
    }

    let moved_queues = topics
        .iter()
        .zip(&previous)
        .map(|(t, prev)| {
            t.owners
                .iter()
                .zip(prev)
                .filter(|&(&now, &before)| before != UNASSIGNED && now != before)
                .count() as u64
        })
        .sum();

    Ok(Assignment {
        consumers: ids,
        topics,
        model: MessageModel::Clustering,
        moved_queues,
        notes,
    })
}

fn all_queues(n: usize) -> Vec<u32> {
    (0..n as u32).collect()
}

/// Looks up each queue in `queues` on the ring and records its owner.
fn hash_queues(ring: &Ring, topic: &mut TopicAssignment, queues: &[u32]) {
    let mut key = Vec::with_capacity(96);
    for &q in queues {
        let b = &topic.brokers[topic.brokers.partition_point(|b| b.offset + b.count <= q)];
        queue_key(&mut key, &topic.topic, &b.name, q - b.offset);
        if let Some(owner) = ring.owner(md5_hash(&key)) {
            topic.owners[q as usize] = owner;
        }
    }
}

fn nearby_allocate(
    topics: &mut [TopicAssignment],
    ids: &[String],
    zones: &[Option<String>],
    everyone: &[u32],
    inner: InnerStrategy,
) -> Result<(), AssignError> {
    // RocketMQ resolves every queue's room first, then every consumer's; either failing throws.
    for t in topics.iter() {
        if let Some(b) = t
            .brokers
            .iter()
            .find(|b| b.zone.as_deref().unwrap_or("").is_empty())
        {
            return Err(AssignError::MissingBrokerZone {
                topic: t.topic.clone(),
                broker: b.name.clone(),
            });
        }
        if let Some(i) = zones
            .iter()
            .position(|z| z.as_deref().unwrap_or("").is_empty())
        {
            return Err(AssignError::MissingConsumerZone {
                consumer: ids[i].clone(),
            });
        }
    }
    let consumer_rooms = nearby::by_room(
        zones
            .iter()
            .enumerate()
            .map(|(i, z)| (z.as_deref().unwrap_or(""), i as u32)),
    );
    // One ring per consumer list (each room's, and everyone's), shared by all topics.
    let rings: Option<(Vec<Ring>, Ring)> = match inner {
        InnerStrategy::ConsistentHash { virtual_nodes } => Some((
            consumer_rooms
                .iter()
                .map(|(_, members)| Ring::build(ids, members, virtual_nodes))
                .collect(),
            Ring::build(ids, everyone, virtual_nodes),
        )),
        _ => None,
    };
    for t in topics.iter_mut() {
        let brokers = t.brokers.clone();
        let queue_rooms = nearby::by_room(brokers.iter().flat_map(|b| {
            let room = b.zone.as_deref().unwrap_or("");
            (b.offset..b.offset + b.count).map(move |q| (room, q))
        }));
        for (queues, local) in nearby::plan(&queue_rooms, &consumer_rooms) {
            let consumers = local.map_or(everyone, |r| consumer_rooms[r].1.as_slice());
            match (&rings, inner) {
                (Some((room_rings, all_ring)), _) => {
                    let ring = local.map_or(all_ring, |r| &room_rings[r]);
                    hash_queues(ring, t, queues);
                }
                (None, InnerStrategy::AveragelyByCircle) => {
                    paging::by_circle(queues, consumers, &mut t.owners)
                }
                (None, _) => paging::averagely(queues, consumers, &mut t.owners),
            }
        }
    }
    Ok(())
}

fn sorted_consumers(
    consumers: &[ConsumerInput],
) -> Result<(Vec<String>, Vec<Option<String>>), AssignError> {
    let mut sorted: Vec<&ConsumerInput> = consumers.iter().collect();
    sorted.sort_by(|a, b| java_cmp(&a.id, &b.id));
    for pair in sorted.windows(2) {
        if pair[0].id == pair[1].id {
            return Err(AssignError::DuplicateConsumer(pair[0].id.clone()));
        }
    }
    if sorted.first().is_some_and(|c| c.id.is_empty()) {
        return Err(AssignError::EmptyConsumerId);
    }
    Ok(sorted
        .into_iter()
        .map(|c| (c.id.clone(), c.zone.clone()))
        .unzip())
}

fn prepare_topics(topics: &[TopicInput]) -> Result<Vec<TopicAssignment>, AssignError> {
    let mut sorted: Vec<&TopicInput> = topics.iter().collect();
    sorted.sort_by(|a, b| java_cmp(&a.name, &b.name));
    if let Some(pair) = sorted.windows(2).find(|p| p[0].name == p[1].name) {
        return Err(AssignError::DuplicateTopic(pair[0].name.clone()));
    }
    sorted
        .into_iter()
        .map(|t| {
            let mut brokers: Vec<&BrokerInput> = t.brokers.iter().collect();
            brokers.sort_by(|a, b| java_cmp(&a.name, &b.name));
            if let Some(pair) = brokers.windows(2).find(|p| p[0].name == p[1].name) {
                return Err(AssignError::DuplicateBroker {
                    topic: t.name.clone(),
                    broker: pair[0].name.clone(),
                });
            }
            let mut offset = 0u32;
            let mut slices = Vec::new();
            for b in brokers {
                let count = b.readable_queues();
                if count == 0 {
                    continue;
                }
                slices.push(BrokerSlice {
                    name: b.name.clone(),
                    zone: zone::broker_zone(&b.name, b.zone.as_deref()),
                    offset,
                    count,
                });
                offset += count;
            }
            Ok(TopicAssignment {
                topic: t.name.clone(),
                brokers: slices,
                owners: vec![UNASSIGNED; offset as usize],
            })
        })
        .collect()
}

/// Previous owner of each queue of each topic: a present consumer's index, [`DEPARTED`], or
/// [`UNASSIGNED`]. When two entries claim one queue, the consumer first in Java order keeps it.
fn previous_owners(
    previous: &[PreviousOwner],
    index: &HashMap<&str, u32>,
    topics: &[TopicAssignment],
) -> Vec<Vec<u32>> {
    let mut owners: Vec<Vec<u32>> = topics
        .iter()
        .map(|t| vec![UNASSIGNED; t.owners.len()])
        .collect();
    let mut entries: Vec<&PreviousOwner> = previous.iter().collect();
    entries.sort_by(|a, b| java_cmp(&a.consumer, &b.consumer));
    for entry in entries {
        let owner = index
            .get(entry.consumer.as_str())
            .copied()
            .unwrap_or(DEPARTED);
        for sel in &entry.queues {
            let Some(t) = topics.iter().position(|t| t.topic == sel.topic) else {
                continue;
            };
            let Some(b) = topics[t].brokers.iter().find(|b| b.name == sel.broker) else {
                continue;
            };
            for &(start, end) in &sel.ranges {
                // Ids beyond the broker's readable queues no longer exist.
                for id in start..=end.min(b.count - 1) {
                    let slot = &mut owners[t][(b.offset + id) as usize];
                    if *slot == UNASSIGNED {
                        *slot = owner;
                    }
                }
            }
        }
    }
    owners
}
