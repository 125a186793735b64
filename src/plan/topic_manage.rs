//! A Topic with `sync: Manage`: what to write to each broker so that its route comes to match
//! the spec, and how a shrink keeps every message readable. Pure: the Topic reconciler reads the
//! cluster info, the route, the consume offsets and the removed queues' max offsets, asks
//! [`step`], [`drain_decision`], [`drain_blockers`] and [`landed_after_check`], and does the
//! writes.
//!
//! The rules:
//! - A broker is never left with `readQueues < writeQueues` (messages written to the queues
//!   beyond the read ones would never be consumed): such a spec is refused before anything is
//!   written (`api::validation::unsafe_queue_counts`).
//! - Growing (and any change that removes no read queue) is one write.
//! - Shrinking the read queues goes write-first: first the write queues (and the permission) take
//!   their new values while the read queues stay.
//! - **Quiet window.** A producer does not learn of the write shrink until it refreshes its
//!   route (Apache RocketMQ's Java producer: every 30 s, `pollNameServerInterval`), and a broker
//!   accepts a send to any queue id below max(readQueues, writeQueues): so for a while after the
//!   write shrink, producers still write to the "removed" queues. The read queues may not shrink
//!   before `drainQuietSeconds` (default [`DEFAULT_DRAIN_QUIET_SECONDS`], 35 s >= 30 s) have
//!   passed since the route first showed the write shrink. That time is `status.drainingSince`,
//!   persisted, so an operator restart neither resets nor skips the window; it starts again
//!   whenever another write shrink of the Topic is written or read queues are restored.
//! - **Drained, with the offsets recorded.** After the quiet window, the removed queues' max
//!   offsets are read (`GET_MAX_OFFSET`), then every group of the Topic must have caught up with
//!   them (`GET_CONSUME_STATS`: consumer offset >= the broker's max offset, [`drain_blockers`]);
//!   only then is the read shrink written.
//! - **No growth across the read shrink.** Right after the read shrink is written (and
//!   [`SETTLE`] later, for a send the broker had accepted just before), the removed queues' max
//!   offsets are read again. Equal to those recorded before the check: nothing landed after the
//!   check, and every group had consumed everything up to them, so no removed queue holds an
//!   unconsumed message. Any grew (or cannot be read): [`landed_after_check`] names them.
//! - **Safety net.** Then the read queues are restored (written back up; the write queues stay
//!   shrunk), a Warning Event [`READ_QUEUES_RESTORED`] is emitted, `Synced` says so, and the drain
//!   starts over (a new quiet window).
//! - `drainTimeoutSeconds` (counted from `status.drainingSince`) lets a shrink go ahead although
//!   the queues are not drained, after the quiet window; such a shrink accepts the loss, so the
//!   safety net does not undo it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::{BrokerSpec, ObservedBroker, Permission, TopicSpec};
use crate::assign::java_order::java_cmp;
use crate::rocketmq::{ClusterInfo, ConsumeStats};

/// `Synced=True`: the route matches the spec on every managed broker.
pub const IN_SYNC: &str = "InSync";
/// `Synced=False`: the spec would leave a broker with `readQueues < writeQueues`; nothing written.
pub const UNSAFE_QUEUE_COUNTS: &str = "UnsafeQueueCounts";
/// `Synced=False`: the topic was written to brokers; the route does not show it yet.
pub const UPDATING: &str = "Updating";
/// `Synced=False`: write queues shrunk; read queues wait for the quiet window and for the removed
/// queues to drain (also after read queues were restored: the message says so).
pub const DRAINING: &str = "Draining";
/// Warning Event: a removed queue's max offset grew across the read shrink (a message landed
/// after the drain check), so its read queues were written back up.
pub const READ_QUEUES_RESTORED: &str = "ReadQueuesRestored";

/// The quiet window when `spec.drainQuietSeconds` is absent: 35 s, more than the 30 s route
/// refresh (`pollNameServerInterval`) of Apache RocketMQ's Java producers, with 5 s for the
/// broker's registration and the NameServer's answer.
pub const DEFAULT_DRAIN_QUIET_SECONDS: u32 = 35;

/// How long after the read shrink is written the removed queues' max offsets are read again:
/// a send the broker accepted just before the shrink reaches its consume queue within
/// milliseconds.
pub const SETTLE: Duration = Duration::from_millis(500);
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

/// What a broker waiting in [`Step::Drain`] does in this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainDecision {
    /// The quiet window is not over: producers may still write to the removed queues until
    /// they refresh their route. Nothing is read from the brokers.
    Quiet {
        /// When the window ends.
        until: Timestamp,
    },
    /// Read the removed queues' max offsets and the groups' offsets: drained, the read shrink
    /// goes ahead (checked for growth after); not drained, [`DrainDecision::TimedOut`] says
    /// whether it goes ahead anyway.
    Check {
        /// `drainTimeoutSeconds` ran out: a shrink that is not drained goes ahead anyway.
        timed_out: bool,
    },
}

/// The quiet window of `quiet_seconds` and `drainTimeoutSeconds` (`timeout_seconds`), both
/// counted from `since` (`status.drainingSince`), at `now`. A window of `quiet_seconds > 0` ends
/// `quiet_seconds + 1` after `since`: the status keeps `since` in whole seconds.
pub fn drain_decision(
    since: Timestamp,
    now: Timestamp,
    quiet_seconds: u32,
    timeout_seconds: Option<u32>,
) -> DrainDecision {
    let waited = now.duration_since(since);
    // `status.drainingSince` keeps whole seconds (`metav1.Time`), so the instant it stands for may
    // be up to a second later: the window counts from the end of that second.
    let quiet = match quiet_seconds {
        0 => SignedDuration::ZERO,
        q => SignedDuration::from_secs(i64::from(q) + 1),
    };
    if waited < quiet {
        return DrainDecision::Quiet {
            until: since.checked_add(quiet).unwrap_or(now),
        };
    }
    DrainDecision::Check {
        timed_out: timeout_seconds
            .is_some_and(|t| waited >= SignedDuration::from_secs(i64::from(t))),
    }
}

/// `status.drainingSince` after a pass: `now` when read queues were restored in this pass (the
/// drain starts over); `None` when a write shrink was written in this pass (the window starts
/// when a later pass sees the route show it, so it never counts time in which the NameServers
/// still gave producers the old route) or when no broker waits; else the current one, or `now`
/// for a wait that begins.
pub fn next_draining_since(
    current: Option<Timestamp>,
    now: Timestamp,
    waiting: bool,
    shrink_written: bool,
    restored: bool,
) -> Option<Timestamp> {
    if restored {
        return Some(now);
    }
    if shrink_written || !waiting {
        return None;
    }
    Some(current.unwrap_or(now))
}

/// Whether a write of `write` toward `target` is the first half of a write-first shrink (the
/// read queues stay above the target's): its quiet window starts again.
pub fn is_write_shrink(write: &Target, target: &Target) -> bool {
    write != target
}

/// The removed queues whose max offset grew between the check that allowed the read shrink
/// (`before`) and after it (`after`), or whose max offset is unknown after it: a message may
/// have landed there after the check. Empty: nothing did, and (the check having found every group
/// caught up with `before`) no removed queue holds an unconsumed message.
pub fn landed_after_check(
    before: &BTreeMap<u32, i64>,
    after: &BTreeMap<u32, Result<i64, String>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (id, was) in before {
        match after.get(id) {
            Some(Ok(now)) if now <= was => {}
            Some(Ok(now)) => out.push(format!(
                "queue {id}: max offset {was} -> {now} ({} message(s) after the check)",
                now - was
            )),
            Some(Err(e)) => out.push(format!(
                "queue {id}: max offset unknown after the shrink: {e}"
            )),
            None => out.push(format!("queue {id}: max offset unknown after the shrink")),
        }
    }
    out
}

/// The write that restores the read queues the route showed before the read shrink (`seen`,
/// the write-shrunk state: its read queues, write queues and permission).
pub fn restore_target(seen: &ObservedBroker) -> Target {
    Target {
        broker: seen.name.clone(),
        read: seen.read_queues,
        write: seen.write_queues,
        permission: seen.permission,
    }
}

/// The restore notes (`broker-a: read queues 4-7 restored: ...`) of a `Draining` message, to be
/// kept in the message while the drain they started lasts.
pub fn carried_restores(message: &str) -> Vec<String> {
    message
        .split("; ")
        .filter(|part| part.contains(RESTORED_MARK))
        .map(str::to_string)
        .collect()
}

/// The `Draining` message of queues (`broker-a: read queues 4-7`) in the quiet window that ends
/// at `until` (shown to the second, rounded up).
pub fn quiet_message(queues: &str, until: Timestamp, quiet_seconds: u32) -> String {
    let until = until
        .round(
            k8s_openapi::jiff::TimestampRound::new()
                .smallest(k8s_openapi::jiff::Unit::Second)
                .mode(k8s_openapi::jiff::RoundMode::Ceil),
        )
        .unwrap_or(until);
    format!(
        "{queues} wait for the quiet window until {until} (drainQuietSeconds {quiet_seconds}): \
         producers that have not refreshed their route since the write queues shrank may still \
         write there"
    )
}

/// What marks a restore note in a `Draining` message.
pub const RESTORED_MARK: &str = " restored: a message landed in a removed queue";

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

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn the_quiet_window_comes_before_any_check_and_before_the_timeout() {
        let since = at(0);
        // 35 s, plus the second `drainingSince` may have lost to rounding.
        assert_eq!(
            drain_decision(since, at(35), 35, None),
            DrainDecision::Quiet { until: at(36) }
        );
        assert_eq!(
            drain_decision(since, at(36), 35, None),
            DrainDecision::Check { timed_out: false }
        );
        // A timeout shorter than the window does not shorten it.
        assert_eq!(
            drain_decision(since, at(20), 35, Some(10)),
            DrainDecision::Quiet { until: at(36) }
        );
        assert_eq!(
            drain_decision(since, at(36), 35, Some(10)),
            DrainDecision::Check { timed_out: true }
        );
        assert_eq!(
            drain_decision(since, at(36), 35, Some(600)),
            DrainDecision::Check { timed_out: false }
        );
        // No window: checked at once (producers the test drives itself).
        assert_eq!(
            drain_decision(since, since, 0, None),
            DrainDecision::Check { timed_out: false }
        );
    }

    #[test]
    fn draining_since_survives_passes_and_restarts_on_a_new_shrink_or_restore() {
        // A wait begins: now.
        assert_eq!(
            next_draining_since(None, at(5), true, false, false),
            Some(at(5))
        );
        // Kept while it lasts (also by an operator restarted in between: it is read back from
        // the status).
        assert_eq!(
            next_draining_since(Some(at(5)), at(50), true, false, false),
            Some(at(5))
        );
        // A write shrink written: cleared, the next pass that sees it in the route starts it.
        assert_eq!(
            next_draining_since(Some(at(5)), at(50), true, true, false),
            None
        );
        // Read queues restored: starts again now.
        assert_eq!(
            next_draining_since(Some(at(5)), at(50), true, false, true),
            Some(at(50))
        );
        // Nothing waits: gone.
        assert_eq!(
            next_draining_since(Some(at(5)), at(50), false, false, false),
            None
        );
        let t = target(4, 4, ReadWrite);
        assert!(is_write_shrink(&target(8, 4, ReadWrite), &t));
        assert!(!is_write_shrink(&t, &t));
    }

    #[test]
    fn growth_across_the_read_shrink_is_named() {
        let before: BTreeMap<u32, i64> = [(4, 10), (5, 0), (6, 7), (7, 3)].into();
        let same: BTreeMap<u32, Result<i64, String>> =
            before.iter().map(|(k, v)| (*k, Ok(*v))).collect();
        assert!(landed_after_check(&before, &same).is_empty());
        let mut after = same.clone();
        after.insert(5, Ok(1));
        after.insert(6, Err("timeout".into()));
        after.remove(&7);
        assert_eq!(
            landed_after_check(&before, &after),
            [
                "queue 5: max offset 0 -> 1 (1 message(s) after the check)",
                "queue 6: max offset unknown after the shrink: timeout",
                "queue 7: max offset unknown after the shrink",
            ]
        );
        let seen = seen(8, 4, ReadWrite);
        assert_eq!(restore_target(&seen), target(8, 4, ReadWrite));
    }

    #[test]
    fn the_quiet_message_names_the_end_to_the_second() {
        let until = at(36)
            .checked_add(SignedDuration::from_millis(250))
            .unwrap();
        assert_eq!(
            quiet_message("broker-a: read queues 4-7", until, 35),
            "broker-a: read queues 4-7 wait for the quiet window until 2027-01-15T08:00:37Z \
             (drainQuietSeconds 35): producers that have not refreshed their route since the \
             write queues shrank may still write there"
        );
    }

    #[test]
    fn restore_notes_stay_in_the_draining_message() {
        let message = "broker-a: read queues 4-7 restored: a message landed in a removed queue \
                       after the drain check (queue 4: max offset 3 -> 4 (1 message(s) after the \
                       check)), draining again; broker-b: read queues 4-7 wait for the quiet \
                       window until 2026-12-08T02:30:05Z";
        assert_eq!(
            carried_restores(message),
            [message.split("; ").next().unwrap().to_string()]
        );
        assert!(carried_restores("broker-a: read queues 4-7 wait to be drained").is_empty());
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
            drain_quiet_seconds: None,
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
