//! Turns per-queue owners into per-consumer queue lists with compact id ranges.

use super::model::{Assignment, MessageModel, PreviousOwner, QueueSelection, UNASSIGNED};
use super::ranges::push_id;

/// Consecutive-or-not queue ids of one broker of one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueBlock {
    /// Index into [`Assignment::topics`].
    pub topic: u32,
    /// Index into that topic's brokers.
    pub broker: u32,
    /// Inclusive id ranges, ascending.
    pub ranges: Vec<(u32, u32)>,
}

/// What each consumer owns (index-aligned with [`Assignment::consumers`]) and what nobody owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerQueues {
    /// Per consumer, its blocks in (topic, broker) order.
    pub owned: Vec<Vec<QueueBlock>>,
    /// Queues without an owner.
    pub unassigned: Vec<QueueBlock>,
}

impl ConsumerQueues {
    /// Number of queues a list of blocks covers.
    pub fn count(blocks: &[QueueBlock]) -> u64 {
        blocks
            .iter()
            .map(|b| super::ranges::count_ids(&b.ranges))
            .sum()
    }
}

fn push(blocks: &mut Vec<QueueBlock>, topic: u32, broker: u32, id: u32) {
    match blocks.last_mut() {
        Some(b) if b.topic == topic && b.broker == broker => push_id(&mut b.ranges, id),
        _ => blocks.push(QueueBlock {
            topic,
            broker,
            ranges: vec![(id, id)],
        }),
    }
}

impl Assignment {
    /// Groups the queues by owner. One pass over all queues, so it is linear in their number.
    pub fn by_consumer(&self) -> ConsumerQueues {
        let mut out = ConsumerQueues {
            owned: vec![Vec::new(); self.consumers.len()],
            unassigned: Vec::new(),
        };
        for (t, topic) in self.topics.iter().enumerate() {
            for (b, broker) in topic.brokers.iter().enumerate() {
                if self.model == MessageModel::Broadcasting {
                    let block = QueueBlock {
                        topic: t as u32,
                        broker: b as u32,
                        ranges: vec![(0, broker.count - 1)],
                    };
                    for owned in &mut out.owned {
                        owned.push(block.clone());
                    }
                    continue;
                }
                let owners = &topic.owners[broker.offset as usize..][..broker.count as usize];
                for (id, &owner) in owners.iter().enumerate() {
                    let target = if owner == UNASSIGNED {
                        &mut out.unassigned
                    } else {
                        &mut out.owned[owner as usize]
                    };
                    push(target, t as u32, b as u32, id as u32);
                }
            }
        }
        out
    }

    /// This assignment as the history of the next one (what `Sticky` keeps).
    pub fn previous_owners(&self) -> Vec<PreviousOwner> {
        self.consumers
            .iter()
            .zip(self.by_consumer().owned)
            .map(|(id, blocks)| PreviousOwner {
                consumer: id.clone(),
                queues: blocks
                    .into_iter()
                    .map(|b| {
                        let t = &self.topics[b.topic as usize];
                        QueueSelection {
                            topic: t.topic.clone(),
                            broker: t.brokers[b.broker as usize].name.clone(),
                            ranges: b.ranges,
                        }
                    })
                    .collect(),
            })
            .collect()
    }
}
