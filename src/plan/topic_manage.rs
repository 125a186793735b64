//! A Topic with `sync: Manage`: what to write to each broker so that its route comes to match
//! the spec, without ever losing a message. Pure: the Topic reconciler reads the cluster info, the
//! route and the consume offsets, asks [`step`] and [`drain_blockers`], and does the writes.
//!
//! The rules:
//! - A broker is never left with `readQueues < writeQueues` (messages written to the queues
//!   beyond the read ones would never be consumed): such a spec is refused before anything is
//!   written (`api::validation::unsafe_queue_counts`).
//! - Growing (and any change that removes no read queue) is one write.
//! - Shrinking the read queues goes write-first: first the write queues (and the permission) take
//!   their new values while the read queues stay; only once the route shows that, and the removed
//!   read queues are drained (every group of the Topic caught up with their max offsets) or
//!   `drainTimeoutSeconds` ran out, do the read queues follow.

use std::fmt;

use crate::api::{BrokerSpec, ObservedBroker, Permission, TopicSpec};
use crate::assign::java_order::java_cmp;
use crate::rocketmq::{ClusterInfo, ConsumeStats};

/// `Synced=True`: the route matches the spec on every managed broker.
pub const IN_SYNC: &str = "InSync";
/// `Synced=False`: the spec would leave a broker with `readQueues < writeQueues`; nothing written.
pub const UNSAFE_QUEUE_COUNTS: &str = "UnsafeQueueCounts";
/// `Synced=False`: the topic was written to brokers; the route does not show it yet.
pub const UPDATING: &str = "Updating";
/// `Synced=False`: write queues shrunk; read queues wait for the removed queues to drain.
pub const DRAINING: &str = "Draining";
/// `Synced=False`: a broker refused the write or could not be reached, or is not registered.
pub const BROKER_ERROR: &str = "BrokerError";
/// `Synced=False`: `spec.brokerCluster` names a cluster the NameServers do not know.
pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";

/// The queue counts and permission one broker should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Broker name.
    pub broker: String,
    /// `readQueueNums`.
    pub read: u32,
    /// `writeQueueNums`.
    pub write: u32,
    /// Permission.
    pub permission: Permission,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: readQueues {}, writeQueues {}, {:?}",
            self.broker, self.read, self.write, self.permission
        )
    }
}

impl From<&BrokerSpec> for Target {
    fn from(b: &BrokerSpec) -> Target {
        Target {
            broker: b.name.clone(),
            read: b.read_queues,
            write: b.write_queues,
            permission: b.permission,
        }
    }
}

/// The brokers the spec manages, in name order: `spec.brokers`, or every broker of
/// `spec.brokerCluster` in `cluster` (which must then be given). `Err` names a cluster the
/// NameServers do not know (or know with no broker).
pub fn targets(spec: &TopicSpec, cluster: Option<&ClusterInfo>) -> Result<Vec<Target>, String> {
    let mut out: Vec<Target> = match (&spec.brokers, &spec.broker_cluster) {
        (Some(brokers), _) => brokers.iter().map(Target::from).collect(),
        (None, Some(c)) => {
            let names = cluster
                .and_then(|info| info.cluster_addr_table.get(&c.name))
                .filter(|names| !names.is_empty())
                .ok_or_else(|| format!("the NameServers know no broker of cluster {}", c.name))?;
            names
                .iter()
                .map(|name| Target {
                    broker: name.clone(),
                    read: c.read_queues,
                    write: c.write_queues,
                    permission: c.permission,
                })
                .collect()
        }
        (None, None) => Vec::new(),
    };
    out.sort_by(|a, b| java_cmp(&a.broker, &b.broker));
    Ok(out)
}

/// What one broker needs next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The route matches the target.
    InSync,
    /// Write this (create or update the topic on the broker's master).
    Write(Target),
    /// The write queues are shrunk; the read queues `from..to` (ids) are to be removed once
    /// drained, then `then` is written.
    Drain {
        /// First removed read queue id.
        from: u32,
        /// One past the last removed read queue id (the current readQueues).
        to: u32,
        /// The final write.
        then: Target,
    },
}

/// The next step of one broker from what the route shows (`None`: the broker does not hold the
/// topic yet). A valid target (read >= write) never leaves read < write on the broker: the
/// write-first step keeps the current read queues, which are more than the target's.
///
/// Queues stop being read when the read count shrinks and also when the permission stops being
/// readable (to `Deny`): both count as removing read queues, so both go write-first (the
/// intermediate write keeps the current read queues and a readable permission) and wait for the
/// drain.
pub fn step(target: &Target, observed: Option<&ObservedBroker>) -> Step {
    let Some(o) = observed else {
        return Step::Write(target.clone());
    };
    if (o.read_queues, o.write_queues, o.permission)
        == (target.read, target.write, target.permission)
    {
        return Step::InSync;
    }
    let read_now = if o.permission.readable() {
        o.read_queues
    } else {
        0
    };
    let read_then = if target.permission.readable() {
        target.read
    } else {
        0
    };
    if read_then < read_now {
        // Still readable until drained: writes stop (or shrink) first.
        let permission = match target.permission {
            Permission::ReadWrite | Permission::WriteOnly => Permission::ReadWrite,
            Permission::ReadOnly | Permission::Deny => Permission::ReadOnly,
        };
        if (o.write_queues, o.permission) != (target.write, permission) {
            return Step::Write(Target {
                read: o.read_queues,
                permission,
                ..target.clone()
            });
        }
        return Step::Drain {
            from: read_then,
            to: read_now,
            then: target.clone(),
        };
    }
    Step::Write(target.clone())
}

/// What keeps queues `from..to` of `topic` on `broker` from being drained, one entry per group:
/// `group: queues 4-5 behind` (consumer offset below the queue's max offset), or the group's
/// error. A queue the broker does not report for a group counts as behind (nothing known is not
/// drained). Empty: drained.
pub fn drain_blockers(
    topic: &str,
    broker: &str,
    from: u32,
    to: u32,
    stats: &[(String, Result<ConsumeStats, String>)],
) -> Vec<String> {
    let mut out = Vec::new();
    for (group, result) in stats {
        match result {
            Err(e) => out.push(format!("{group}: {e}")),
            Ok(stats) => {
                let behind: Vec<u32> = (from..to)
                    .filter(|&id| {
                        stats
                            .queue(topic, broker, id)
                            .is_none_or(|q| q.consumer_offset < q.broker_offset)
                    })
                    .collect();
                if !behind.is_empty() {
                    out.push(format!("{group}: queues {} behind", compact(&behind)));
                }
            }
        }
    }
    out
}

/// `4-5,7` for sorted ids.
pub fn compact(ids: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut end = start;
        while i + 1 < ids.len() && ids[i + 1] == end + 1 {
            i += 1;
            end = ids[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BrokerClusterSpec;
    use crate::rocketmq::QueueOffsets;

    fn target(read: u32, write: u32, permission: Permission) -> Target {
        Target {
            broker: "broker-a".into(),
            read,
            write,
            permission,
        }
    }

    fn seen(read: u32, write: u32, permission: Permission) -> ObservedBroker {
        ObservedBroker {
            name: "broker-a".into(),
            read_queues: read,
            write_queues: write,
            permission,
            master_addr: None,
        }
    }

    use Permission::*;

    #[test]
    fn create_grow_and_match() {
        let t = target(8, 8, ReadWrite);
        assert_eq!(step(&t, None), Step::Write(t.clone()));
        assert_eq!(
            step(&t, Some(&seen(4, 4, ReadWrite))),
            Step::Write(t.clone())
        );
        assert_eq!(step(&t, Some(&seen(8, 8, ReadWrite))), Step::InSync);
        // A permission change alone, or read grown while write shrinks: one write.
        assert_eq!(
            step(&t, Some(&seen(8, 8, ReadOnly))),
            Step::Write(t.clone())
        );
        let t = target(8, 4, ReadWrite);
        assert_eq!(
            step(&t, Some(&seen(8, 8, ReadWrite))),
            Step::Write(t.clone())
        );
    }

    #[test]
    fn losing_readability_drains_first() {
        let t = target(4, 4, Deny);
        let first = step(&t, Some(&seen(4, 4, ReadWrite)));
        assert_eq!(first, Step::Write(target(4, 4, ReadOnly)));
        assert_eq!(
            step(&t, Some(&seen(4, 4, ReadOnly))),
            Step::Drain {
                from: 0,
                to: 4,
                then: t.clone()
            }
        );
        // ReadWrite to ReadOnly removes no read queue: one write.
        let t = target(4, 4, ReadOnly);
        assert_eq!(
            step(&t, Some(&seen(4, 4, ReadWrite))),
            Step::Write(t.clone())
        );
        // Readable again from Deny: one write.
        let t = target(4, 4, ReadWrite);
        assert_eq!(step(&t, Some(&seen(4, 4, Deny))), Step::Write(t.clone()));
    }

    #[test]
    fn a_shrink_goes_write_first_then_drains() {
        let t = target(4, 4, ReadWrite);
        // Write shrinks first, read stays at 8 (never below write).
        let first = step(&t, Some(&seen(8, 8, ReadWrite)));
        assert_eq!(first, Step::Write(target(8, 4, ReadWrite)));
        // Once the route shows it: wait for queues 4..8.
        assert_eq!(
            step(&t, Some(&seen(8, 4, ReadWrite))),
            Step::Drain {
                from: 4,
                to: 8,
                then: t.clone()
            }
        );
        // Every intermediate write keeps read >= write.
        for (r, w) in [(8, 8), (8, 6), (6, 2), (5, 5)] {
            if let Step::Write(x) = step(&target(4, 2, ReadWrite), Some(&seen(r, w, ReadWrite))) {
                assert!(x.read >= x.write, "{x}");
            }
        }
    }

    fn offsets(id: u32, broker_offset: i64, consumer_offset: i64) -> QueueOffsets {
        QueueOffsets {
            topic: "T".into(),
            broker_name: "broker-a".into(),
            queue_id: id,
            broker_offset,
            consumer_offset,
            ..QueueOffsets::default()
        }
    }

    #[test]
    fn drain_blockers_name_groups_and_queues() {
        let stats = ConsumeStats {
            queues: vec![
                offsets(0, 5, 0),
                offsets(2, 3, 3),
                offsets(3, 2, 1),
                offsets(4, 0, 0),
            ],
            consume_tps: 0.0,
        };
        let all = vec![
            ("g1".to_string(), Ok(stats.clone())),
            ("g2".to_string(), Err("timeout".to_string())),
        ];
        assert_eq!(
            drain_blockers("T", "broker-a", 2, 6, &all),
            ["g1: queues 3,5 behind", "g2: timeout"]
        );
        assert!(drain_blockers("T", "broker-a", 2, 3, &all[..1]).is_empty());
        assert!(drain_blockers("T", "broker-a", 2, 6, &[]).is_empty());
        assert_eq!(compact(&[1, 2, 3, 5, 7, 8]), "1-3,5,7-8");
    }

    #[test]
    fn targets_of_a_cluster_or_the_brokers() {
        let mut info = ClusterInfo::default();
        info.cluster_addr_table.insert(
            "C".into(),
            ["broker-b".to_string(), "broker-a".to_string()].into(),
        );
        let spec = TopicSpec {
            topic_name: None,
            brokers: None,
            name_servers: Some(vec!["ns:9876".into()]),
            sync: Some(crate::api::SyncMode::Manage),
            broker_cluster: Some(BrokerClusterSpec {
                name: "C".into(),
                read_queues: 4,
                write_queues: 2,
                permission: ReadWrite,
            }),
            drain_timeout_seconds: None,
        };
        let t = targets(&spec, Some(&info)).unwrap();
        assert_eq!(
            t.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "broker-a: readQueues 4, writeQueues 2, ReadWrite",
                "broker-b: readQueues 4, writeQueues 2, ReadWrite"
            ]
        );
        let mut other = spec.clone();
        other.broker_cluster.as_mut().unwrap().name = "D".into();
        assert_eq!(
            targets(&other, Some(&info)).unwrap_err(),
            "the NameServers know no broker of cluster D"
        );
    }
}
