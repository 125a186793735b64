//! The Topic reconciler: writes the status the plan layer decides (totals, producer shares, the
//! `Ready` and `QueueMismatch` conditions) and emits Events on transitions.
//!
//! A Topic with `spec.nameServers` (sync `Observe`) is synced first: its route is read from the
//! NameServers on every reconcile and again every sync period (`--sync-period`), and the plan
//! layer ([`topic_sync`]) turns the answer into `status.observed` and the `Synced` and `Drifted`
//! conditions. Nothing is written when nothing changed: an unchanged route costs one request to
//! a NameServer and no write (its freshness is the metric
//! `rebalancer_topic_last_sync_timestamp_seconds`). With `sync: Manage`, [`super::topic_manage`]
//! then makes the brokers hold the spec (and decides `Synced`). A Topic without `nameServers` is
//! static: exactly the status of its spec, and no requeue.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::conditions::{self, Desired};
use super::context::{Context, FIELD_MANAGER};
use super::error::Error;
use super::metrics::{Metrics, SyncFailureLabels, TopicLabels};
use super::refused::{self, Refused, WRITE_REJECTED};
use crate::api::validation::validate_topic_shape;
use crate::api::{Topic, TopicStatus};
use crate::plan::topic_manage::{DRAINING, IN_SYNC, READ_QUEUES_RESTORED, UPDATING};
use crate::plan::topic_name;
use crate::plan::topic_status::{self, NOT_SYNCED, READY, TopicCondition};
use crate::plan::topic_sync::{self, DRIFTED, SYNC_CONDITIONS, SYNCED, SyncResult};

use super::topic_manage;

/// Condition type: a broker's read and write queue counts differ.
pub const QUEUE_MISMATCH: &str = topic_status::QUEUE_MISMATCH;

fn to_desired(conditions: Vec<TopicCondition>) -> Vec<Desired> {
    conditions
        .into_iter()
        .map(|c| Desired::new(c.type_, c.status, c.reason, c.message))
        .collect()
}

/// The status a static topic should have (conditions not yet merged), as the plan layer decides
/// it.
pub fn desired_status(topic: &Topic) -> (TopicStatus, Vec<Desired>) {
    let (status, conditions) = topic_status::topic_status(topic);
    (status, to_desired(conditions))
}

/// Reconciles one Topic.
pub async fn reconcile(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .measure("Topic", reconcile_inner(&topic, &ctx))
        .await
}

/// Reads the route of `topic` from its NameServers, counting the outcome in the metrics.
async fn sync(topic: &Topic, ctx: &Context, labels: &TopicLabels) -> SyncResult {
    let addrs = topic.spec.name_servers.as_deref().unwrap_or_default();
    let name = topic_name(topic);
    let answer = ctx.name_servers(addrs).topic_route(&name).await;
    let result = SyncResult::from_route(&name, answer);
    match &result {
        SyncResult::Observed(brokers) => {
            tracing::debug!(topic = %name, brokers = brokers.len(), "route read");
            ctx.metrics
                .topic_last_sync
                .get_or_create(labels)
                .set(Timestamp::now().as_second());
        }
        SyncResult::Failed(f) => {
            tracing::debug!(topic = %name, reason = f.reason, message = %f.message, "no route");
            ctx.metrics
                .topic_sync_failures
                .get_or_create(&SyncFailureLabels {
                    namespace: labels.namespace.clone(),
                    topic: labels.topic.clone(),
                    reason: f.reason.to_string(),
                })
                .inc();
        }
    }
    result
}

async fn write_status(
    topic: &Topic,
    ctx: &Context,
    status: &TopicStatus,
) -> Result<(), kube::Error> {
    let api: Api<Topic> =
        Api::namespaced(ctx.client.clone(), &topic.namespace().unwrap_or_default());
    let body = json!({"apiVersion": crate::api::API_VERSION, "kind": "Topic", "status": status});
    api.patch_status(
        &topic.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    ctx.metrics.count_write("topics/status");
    Ok(())
}

fn status_error(topic: &Topic, e: kube::Error) -> Error {
    Error::kube(
        format!(
            "apply status of topic {}/{}",
            topic.namespace().unwrap_or_default(),
            topic.name_any()
        ),
        e,
    )
}

/// How soon a Topic that found no slow slot tries again.
const SLOW_SLOT_RETRY: Duration = Duration::from_secs(1);

/// Whether the last sync found no NameServer answering (`Synced=False`, `NameServerUnreachable`).
fn unreachable_last_time(status: &TopicStatus) -> bool {
    conditions::find(&status.conditions, SYNCED)
        .is_some_and(|c| c.status == "False" && c.reason == topic_sync::NAME_SERVER_UNREACHABLE)
}

/// (status, reason) of a condition, for transitions that ignore the message.
fn state(conditions: &[Condition], type_: &str) -> Option<(String, String)> {
    conditions::find(conditions, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

async fn reconcile_inner(topic: &Topic, ctx: &Context) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    if let Some(reason) = super::watch::unreadable(topic) {
        ctx.report_unreadable(topic, reason).await;
        return Ok(Action::await_change());
    }
    let namespace = topic.namespace().ok_or(Error::NoNamespace)?;
    let labels = Metrics::topic(&namespace, &topic.name_any());
    let current = topic.status.clone().unwrap_or_default();
    // The shape only: a Manage spec with unsafe queue counts is still observed (and refused with
    // `Synced=False`, reason `UnsafeQueueCounts`).
    let valid = validate_topic_shape(&topic.spec).is_empty();
    let observing = valid && topic.spec.name_servers.is_some();
    let managing = observing && topic.spec.manages();
    let mut wrote = false;
    let mut timed_out = Vec::new();
    let mut restored = Vec::new();
    let mut wake = None;
    let (mut status, desired) = if observing {
        // A Topic whose NameServers did not answer last time will likely wait out every
        // timeout again: it waits for a slow slot, without holding a worker, so that however
        // many such Topics there are, most workers stay free for the healthy ones.
        let _slot = if unreachable_last_time(&current) {
            match ctx.slow_syncs.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => return Ok(Action::requeue(SLOW_SLOT_RETRY)),
            }
        } else {
            None
        };
        let result = sync(topic, ctx, &labels).await;
        let now = Timestamp::now();
        let (mut status, mut conditions) = topic_sync::synced_status(topic, &result, now);
        if managing {
            // The spec is the desired state, not an expectation: no Drifted.
            let managed = topic_manage::manage(topic, ctx, &result, now).await;
            conditions.retain(|c| c.type_ != DRIFTED && c.type_ != SYNCED);
            conditions.push(managed.synced);
            status.draining_since = managed.draining_since;
            wrote = managed.wrote;
            timed_out = managed.timed_out;
            restored = managed.restored;
            wake = managed.wake;
        }
        (status, to_desired(conditions))
    } else {
        desired_status(topic)
    };
    // `Synced` and `Drifted` exist only while they are decided: a Topic that stops syncing (no
    // nameServers) or comparing (no spec.brokers) loses them; an invalid spec keeps them as is.
    let kept: Vec<Condition> = current
        .conditions
        .iter()
        .filter(|c| {
            !valid
                || !SYNC_CONDITIONS.contains(&c.type_.as_str())
                || desired.iter().any(|d| d.type_ == c.type_)
        })
        .cloned()
        .collect();
    status.conditions =
        conditions::merge(&kept, &desired, topic.meta().generation, Timestamp::now());
    if status != current {
        match write_status(topic, ctx, &status).await {
            Ok(()) => {}
            Err(e) => match Refused::from_error("status", &e) {
                Some(r) => {
                    // The last status written stays the report, with a Ready that says why;
                    // the Events describing the refused one are not sent.
                    tracing::warn!(topic = %topic.name_any(), code = r.code, error = %r.message, "status refused");
                    ctx.metrics.count_refused("topics/status");
                    let refusals = [r];
                    let mut last = current;
                    last.conditions = refused::mark(
                        &last.conditions,
                        &last.conditions,
                        READY,
                        &refusals,
                        "the status shown is the last one written",
                        topic.meta().generation,
                        Timestamp::now(),
                    );
                    let written = topic.status.clone().unwrap_or_default();
                    // Written, and announced, on the transition to this refusal only.
                    if conditions::changed(&written.conditions, &last.conditions, READY) {
                        write_status(topic, ctx, &last)
                            .await
                            .map_err(|e| status_error(topic, e))?;
                        ctx.event(
                            &topic.object_ref(&()),
                            true,
                            WRITE_REJECTED,
                            "Sync",
                            refused::summary(&refusals),
                        )
                        .await;
                    }
                    return Ok(Action::requeue(ctx.sync_period));
                }
                None => return Err(status_error(topic, e)),
            },
        }
    }
    if valid {
        match conditions::find(&status.conditions, DRIFTED) {
            Some(c) => {
                ctx.metrics
                    .topic_drifted
                    .get_or_create(&labels)
                    .set(i64::from(c.status == "True"));
            }
            None => {
                ctx.metrics.topic_drifted.remove(&labels);
            }
        }
        if !observing {
            ctx.metrics.topic_last_sync.remove(&labels);
        }
    }
    let reference = topic.object_ref(&());
    for type_ in [QUEUE_MISMATCH, READY] {
        if conditions::changed(&current.conditions, &status.conditions, type_)
            && let Some(c) = conditions::find(&status.conditions, type_)
        {
            let warning = (type_ == QUEUE_MISMATCH) == (c.status == "True");
            // A topic waiting for its first route says so through `Synced`.
            if warning && c.reason != NOT_SYNCED {
                let reason = if type_ == QUEUE_MISMATCH {
                    QUEUE_MISMATCH
                } else {
                    c.reason.as_str()
                };
                ctx.event(&reference, true, reason, "Validate", c.message.clone())
                    .await;
            }
        }
    }
    for note in timed_out {
        tracing::warn!(topic = %topic.name_any(), %note, "drain timeout");
        ctx.event(&reference, true, "DrainTimeout", "Manage", note)
            .await;
    }
    for note in restored {
        ctx.event(&reference, true, READ_QUEUES_RESTORED, "Manage", note)
            .await;
    }
    let before = state(&current.conditions, SYNCED);
    if before != state(&status.conditions, SYNCED)
        && let Some(c) = conditions::find(&status.conditions, SYNCED)
    {
        // Manage's own progress is Normal; every other reason to be not synced is a Warning.
        if c.status == "False" && [UPDATING, DRAINING].contains(&c.reason.as_str()) {
            ctx.event(&reference, false, &c.reason, "Manage", c.message.clone())
                .await;
        } else if c.status == "True" && c.reason == IN_SYNC {
            ctx.event(&reference, false, IN_SYNC, "Manage", c.message.clone())
                .await;
        } else if c.status == "False" {
            tracing::warn!(topic = %topic.name_any(), reason = %c.reason, message = %c.message, "topic not synced");
            ctx.event(&reference, true, &c.reason, "Sync", c.message.clone())
                .await;
        } else if before.is_some() {
            tracing::info!(topic = %topic.name_any(), "topic synced again");
            ctx.event(&reference, false, "Synced", "Sync", c.message.clone())
                .await;
        }
    }
    if conditions::changed(&current.conditions, &status.conditions, DRIFTED)
        && let Some(c) = conditions::find(&status.conditions, DRIFTED)
        && c.status == "True"
    {
        ctx.event(&reference, true, "Drifted", "Sync", c.message.clone())
            .await;
    }
    Ok(if wrote {
        // Brokers register a change with the NameServers within about a second.
        Action::requeue(ctx.sync_period.min(Duration::from_secs(1)))
    } else if observing {
        // A quiet window that ends before the next sync: look again then.
        Action::requeue(wake.map_or(ctx.sync_period, |w| {
            ctx.sync_period.min(w + Duration::from_millis(100))
        }))
    } else {
        Action::await_change()
    })
}
