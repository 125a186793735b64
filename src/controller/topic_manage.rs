//! `sync: Manage`: after the route has been read ([`super::topic`]), make the brokers hold the
//! spec. The decisions are [`crate::plan::topic_manage`]'s (its module docs state the shrink's
//! rules: quiet window, drain check, no growth across the read shrink, safety net); this does the
//! I/O: the cluster info (brokers' master addresses, and the brokers of `spec.brokerCluster`), the
//! removed queues' max offsets (`GET_MAX_OFFSET`) and the consume offsets of the Topic's groups
//! (`GET_CONSUME_STATS`) on a broker whose read queues wait to shrink, the writes
//! (`UPDATE_AND_CREATE_TOPIC` to each broker's master), the max offsets again [`SETTLE`] after a
//! read shrink, and the restore write when one grew.
//!
//! The groups whose offsets a shrink waits for are the ConsumerGroups of the Topic's namespace
//! that list the Topic in `spec.topics`; their RocketMQ group name is `spec.groupName`, or their
//! `metadata.name`.
//! They are listed from the API server only when a shrink waits (no cache of groups is kept for
//! this), so a Topic that is in sync costs no list.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::context::Context;
use crate::api::validation::unsafe_queue_counts;
use crate::api::{ConsumerGroup, Topic, TopicSpec};
use crate::plan::topic_manage::{
    BROKER_ERROR, CLUSTER_NOT_FOUND, DEFAULT_DRAIN_QUIET_SECONDS, DRAINING, DrainDecision, IN_SYNC,
    SETTLE, Step, Target, UNSAFE_QUEUE_COUNTS, UPDATING, carried_restores, drain_blockers,
    drain_decision, is_write_shrink, landed_after_check, next_draining_since, quiet_message,
    restore_target, step, targets,
};
use crate::plan::topic_name;
use crate::plan::topic_status::TopicCondition;
use crate::plan::topic_sync::{
    NAME_SERVER_ERROR, NAME_SERVER_UNREACHABLE, SYNCED, SyncResult, TOPIC_NOT_FOUND,
};
use crate::rocketmq::{self, ClusterInfo, Connections, TopicConfig};

/// What one Manage pass did.
#[derive(Debug)]
pub struct Managed {
    /// The `Synced` condition.
    pub synced: TopicCondition,
    /// `status.drainingSince`.
    pub draining_since: Option<Time>,
    /// Something was written: look again soon.
    pub wrote: bool,
    /// Shrinks that went ahead because `drainTimeoutSeconds` ran out (for Warning Events).
    pub timed_out: Vec<String>,
    /// Read shrinks undone because a removed queue grew after the check (for Warning Events).
    pub restored: Vec<String>,
    /// When a quiet window ends (look again then).
    pub wake: Option<std::time::Duration>,
}

/// A read shrink found drained.
struct Shrink {
    /// The final write.
    then: Target,
    /// The write that undoes it (the write-shrunk state the route showed).
    restore: Target,
    /// `broker-a: read queues 4-7`.
    queues: String,
    from: u32,
    to: u32,
    /// The removed queues' max offsets read at the check.
    before: BTreeMap<u32, i64>,
}

fn synced_false(reason: &'static str, message: String) -> TopicCondition {
    TopicCondition::new(SYNCED, false, reason, message)
}

/// `Synced=False`, reason `UnsafeQueueCounts`, when the spec would leave a broker with
/// `readQueues < writeQueues` (checked before anything is read from or written to a broker).
pub fn refusal(spec: &TopicSpec) -> Option<TopicCondition> {
    let unsafe_counts = unsafe_queue_counts(spec);
    if unsafe_counts.is_empty() {
        return None;
    }
    Some(synced_false(
        UNSAFE_QUEUE_COUNTS,
        format!(
            "refused, nothing written to RocketMQ: a broker with fewer readable than writable \
             queues would take messages no consumer reads: {}",
            unsafe_counts
                .iter()
                .map(|v| v.message.clone())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    ))
}

/// One Manage pass over a valid-shaped Topic whose route read gave `result`.
pub async fn manage(topic: &Topic, ctx: &Context, result: &SyncResult, now: Timestamp) -> Managed {
    let current_since = topic.status.as_ref().and_then(|s| s.draining_since.clone());
    let mut out = Managed {
        synced: synced_false(UPDATING, String::new()),
        draining_since: current_since.clone(),
        wrote: false,
        timed_out: Vec::new(),
        restored: Vec::new(),
        wake: None,
    };
    if let Some(refused) = refusal(&topic.spec) {
        out.synced = refused;
        out.draining_since = None;
        return out;
    }
    let observed = match result {
        SyncResult::Observed(brokers) => brokers.clone(),
        SyncResult::Failed(f) if f.reason == TOPIC_NOT_FOUND => Vec::new(),
        SyncResult::Failed(f) => {
            out.synced = synced_false(f.reason, f.message.clone());
            return out;
        }
    };
    let name = topic_name(topic);
    let addrs = topic.spec.name_servers.as_deref().unwrap_or_default();
    let name_servers = ctx.name_servers(addrs);
    let cluster = match name_servers.cluster_info().await {
        Ok(c) => c,
        Err(e) => {
            let reason = match &e {
                rocketmq::Error::NameServers(_) => NAME_SERVER_UNREACHABLE,
                _ => NAME_SERVER_ERROR,
            };
            out.synced = synced_false(reason, format!("cluster info: {e}"));
            return out;
        }
    };
    let wanted = match targets(&topic.spec, Some(&cluster)) {
        Ok(t) => t,
        Err(e) => {
            out.synced = synced_false(CLUSTER_NOT_FOUND, e);
            return out;
        }
    };
    let connections = name_servers.connections();
    let quiet = topic
        .spec
        .drain_quiet_seconds
        .unwrap_or(DEFAULT_DRAIN_QUIET_SECONDS);
    let since = current_since.as_ref().map_or(now, |t| t.0);
    let mut writes: Vec<Target> = Vec::new();
    // Read shrinks found drained, with the removed queues' max offsets recorded at the check.
    let mut shrinks: Vec<Shrink> = Vec::new();
    let mut waiting: Vec<String> = Vec::new();
    let mut groups: Option<Result<Vec<String>, String>> = None;
    for target in &wanted {
        let seen = observed.iter().find(|b| b.name == target.broker);
        match step(target, seen) {
            Step::InSync => {}
            Step::Write(t) => writes.push(t),
            Step::Drain { from, to, then } => {
                let queues = if to - from == 1 {
                    format!("{}: read queue {from}", then.broker)
                } else {
                    format!("{}: read queues {from}-{}", then.broker, to - 1)
                };
                let decision = drain_decision(since, now, quiet, topic.spec.drain_timeout_seconds);
                let timed_out = match decision {
                    DrainDecision::Quiet { until } => {
                        let left = until.duration_since(now).unsigned_abs();
                        out.wake = Some(out.wake.map_or(left, |w| w.min(left)));
                        waiting.push(quiet_message(&queues, until, quiet));
                        continue;
                    }
                    DrainDecision::Check { timed_out } => timed_out,
                };
                // The max offsets first, then the groups' offsets: a group caught up with the
                // broker's max offset at its check is caught up with these.
                let before = max_offsets(&cluster, &then.broker, &name, from, to, connections)
                    .await
                    .into_iter()
                    .map(|(id, r)| r.map(|o| (id, o)))
                    .collect::<Result<BTreeMap<u32, i64>, String>>();
                if groups.is_none() {
                    groups = Some(list_groups(topic, ctx).await);
                }
                let mut blockers = match groups.as_ref().unwrap() {
                    Err(e) => vec![e.clone()],
                    Ok(names) => {
                        let stats =
                            consume_stats(&cluster, &then.broker, names, &name, connections).await;
                        drain_blockers(&name, &then.broker, from, to, &stats)
                    }
                };
                let before = match before {
                    Ok(b) => b,
                    Err(e) => {
                        blockers.push(format!("max offsets: {e}"));
                        BTreeMap::new()
                    }
                };
                if blockers.is_empty() {
                    shrinks.push(Shrink {
                        then,
                        restore: restore_target(seen.expect("a broker in Drain is in the route")),
                        queues,
                        from,
                        to,
                        before,
                    });
                } else if timed_out {
                    out.timed_out.push(format!(
                        "{queues} removed after drainTimeoutSeconds {} although not drained ({})",
                        topic.spec.drain_timeout_seconds.unwrap_or_default(),
                        blockers.join("; ")
                    ));
                    writes.push(then);
                } else {
                    waiting.push(format!(
                        "{queues} wait to be drained (write queues already shrunk): {}",
                        blockers.join("; ")
                    ));
                }
            }
        }
    }
    let mut errors = Vec::new();
    let mut written = Vec::new();
    let mut shrink_written = false;
    for t in &writes {
        match write(&cluster, &name, t, connections).await {
            Ok(()) => {
                ctx.metrics.count_write("rocketmq/topic");
                tracing::info!(topic = %name, target = %t, "topic written to broker");
                written.push(t.to_string());
                // A write shrink: its quiet window counts from the next pass that sees it.
                if let Some(target) = wanted.iter().find(|w| w.broker == t.broker)
                    && is_write_shrink(t, target)
                {
                    shrink_written = true;
                }
            }
            Err(e) => errors.push(format!("{}: {e}", t.broker)),
        }
    }
    let mut shrunk = Vec::new();
    for s in &shrinks {
        match write(&cluster, &name, &s.then, connections).await {
            Ok(()) => {
                ctx.metrics.count_write("rocketmq/topic");
                tracing::info!(topic = %name, target = %s.then, "read queues shrunk on broker");
                written.push(s.then.to_string());
                shrunk.push(s);
            }
            Err(e) => errors.push(format!("{}: {e}", s.then.broker)),
        }
    }
    if !shrunk.is_empty() {
        // A send the broker accepted just before the shrink reaches its consume queue within
        // milliseconds.
        tokio::time::sleep(SETTLE).await;
    }
    let mut restored = Vec::new();
    for s in shrunk {
        let after: BTreeMap<u32, Result<i64, String>> =
            max_offsets(&cluster, &s.then.broker, &name, s.from, s.to, connections)
                .await
                .into_iter()
                .collect();
        let landed = landed_after_check(&s.before, &after);
        if landed.is_empty() {
            tracing::info!(topic = %name, broker = %s.then.broker, "removed queues unchanged across the read shrink");
            continue;
        }
        let what = landed.join(", ");
        match write(&cluster, &name, &s.restore, connections).await {
            Ok(()) => {
                ctx.metrics.count_write("rocketmq/topic");
                let note = format!(
                    "{} restored: a message landed in a removed queue after the drain check \
                     ({what}), draining again",
                    s.queues
                );
                tracing::warn!(topic = %name, target = %s.restore, %note, "read queues restored");
                written.push(s.restore.to_string());
                restored.push(note);
            }
            Err(e) => errors.push(format!(
                "{}: restoring read queues after a message landed in a removed queue ({what}): {e}",
                s.restore.broker
            )),
        }
    }
    out.draining_since = next_draining_since(
        current_since.as_ref().map(|t| t.0),
        now,
        !waiting.is_empty(),
        shrink_written,
        !restored.is_empty(),
    )
    .map(Time);
    out.restored = restored.clone();
    out.wrote = !written.is_empty();
    out.synced = if !errors.is_empty() {
        synced_false(BROKER_ERROR, errors.join("; "))
    } else if !restored.is_empty() || !waiting.is_empty() {
        // A restore stays in the message while the drain it started lasts.
        let carried = if restored.is_empty() {
            topic
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == SYNCED))
                .filter(|c| c.reason == DRAINING)
                .map(|c| carried_restores(&c.message))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut message = carried
            .into_iter()
            .chain(restored)
            .chain(waiting)
            .collect::<Vec<_>>()
            .join("; ");
        if !written.is_empty() {
            message.push_str(&format!("; wrote {}", written.join("; ")));
        }
        synced_false(DRAINING, message)
    } else if !written.is_empty() {
        synced_false(
            UPDATING,
            format!(
                "wrote {}; waiting for the route to show it",
                written.join("; ")
            ),
        )
    } else {
        TopicCondition::new(
            SYNCED,
            true,
            IN_SYNC,
            format!(
                "route of topic {name} matches the spec on {} brokers",
                wanted.len()
            ),
        )
    };
    out
}

/// The RocketMQ group names of the ConsumerGroups of the Topic's namespace that read it.
async fn list_groups(topic: &Topic, ctx: &Context) -> Result<Vec<String>, String> {
    let namespace = topic.namespace().unwrap_or_default();
    let api: Api<ConsumerGroup> = Api::namespaced(ctx.client.clone(), &namespace);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("cannot list ConsumerGroups: {e}"))?;
    let me = topic.name_any();
    let mut names: Vec<String> = list
        .items
        .iter()
        .filter(|g| g.spec.topics.contains(&me))
        .map(super::group::fetch::rocketmq_group)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn master<'a>(cluster: &'a ClusterInfo, broker: &str) -> Result<&'a str, String> {
    cluster
        .broker_addr_table
        .get(broker)
        .ok_or_else(|| "not registered with the NameServers".to_string())?
        .master_addr()
        .ok_or_else(|| "no master (brokerId 0) registered".to_string())
}

/// Each group's offsets on `broker`'s master.
async fn consume_stats(
    cluster: &ClusterInfo,
    broker: &str,
    groups: &[String],
    topic: &str,
    connections: &Connections,
) -> Vec<(String, Result<rocketmq::ConsumeStats, String>)> {
    let addr = master(cluster, broker).map_err(|e| format!("{broker}: {e}"));
    let mut out = Vec::with_capacity(groups.len());
    for group in groups {
        let stats = match &addr {
            Ok(addr) => connections
                .call_broker(addr, |c| {
                    let (group, topic) = (group.clone(), topic.to_string());
                    async move { c.consume_stats(&group, Some(&topic)).await }
                })
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        out.push((group.clone(), stats));
    }
    out
}

/// The max offsets of queues `from..to` of `topic` on `broker`'s master, each or its error.
async fn max_offsets(
    cluster: &ClusterInfo,
    broker: &str,
    topic: &str,
    from: u32,
    to: u32,
    connections: &Connections,
) -> Vec<(u32, Result<i64, String>)> {
    let addr = master(cluster, broker).map_err(|e| format!("{broker}: {e}"));
    let mut out = Vec::new();
    for id in from..to {
        let offset = match &addr {
            Ok(addr) => connections
                .call_broker(addr, |c| {
                    let topic = topic.to_string();
                    async move { c.max_offset(&topic, id).await }
                })
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        out.push((id, offset));
    }
    out
}

async fn write(
    cluster: &ClusterInfo,
    topic: &str,
    target: &Target,
    connections: &Connections,
) -> Result<(), String> {
    let addr = master(cluster, &target.broker)?;
    let config = TopicConfig::new(topic, target.read, target.write, target.permission);
    connections
        .call_broker(addr, |c| {
            let config = config.clone();
            async move { c.create_or_update_topic(&config).await }
        })
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BrokerSpec, Permission, SyncMode};

    #[test]
    fn read_below_write_is_refused_before_any_io() {
        let broker = |name: &str, read, write| BrokerSpec {
            name: name.into(),
            read_queues: read,
            write_queues: write,
            permission: Permission::ReadWrite,
            zone: None,
        };
        let mut spec = TopicSpec {
            topic_name: None,
            brokers: Some(vec![broker("broker-a", 8, 8), broker("broker-b", 2, 4)]),
            name_servers: Some(vec!["ns:9876".into()]),
            sync: Some(SyncMode::Manage),
            broker_cluster: None,
            drain_timeout_seconds: None,
            drain_quiet_seconds: None,
        };
        let c = refusal(&spec).unwrap();
        assert_eq!((c.status, c.reason), (false, UNSAFE_QUEUE_COUNTS));
        assert_eq!(
            c.message,
            "refused, nothing written to RocketMQ: a broker with fewer readable than writable \
             queues would take messages no consumer reads: broker-b: readQueues 2 < writeQueues 4"
        );
        // Observe only compares: no refusal.
        spec.sync = Some(SyncMode::Observe);
        assert!(refusal(&spec).is_none());
        spec.sync = Some(SyncMode::Manage);
        spec.brokers = Some(vec![broker("broker-b", 4, 2)]);
        assert!(refusal(&spec).is_none());
    }
}
