//! The ConsumerGroup reconciler, in three steps: [`fetch`] reads the group's world from the watch
//! caches, [`decide`] computes (purely) what should be written, [`apply`] writes exactly that.

pub mod apply;
pub mod clients;
pub mod decide;
pub mod fetch;
pub mod probe;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::Error;
use super::scope::Scope;
use crate::api::ConsumerGroup;
use apply::Applied;
use decide::{Budgets, Outcome};

/// Condition type: the group's assignment is current.
pub const READY: &str = "Ready";
/// Condition type: some consumers own no queue.
pub const IDLE: &str = "IdleConsumers";
/// Condition type: `assignments` left out of the status because of its size.
pub const TRUNCATED: &str = "StatusTruncated";
/// Condition type: some pods' queues are too many for their annotation.
pub const ANNOTATIONS_TRUNCATED: &str = "AnnotationsTruncated";
/// Condition type (`consumerIds: Client`): connected clients and Ready pods do not match.
pub const CLIENTS_MISMATCH: &str = "ClientsMismatch";
/// Condition type (`consumerIds: Client`): clients hold other queues than computed for them.
pub const CLIENTS_DIVERGE: &str = "ClientsDiverge";
/// Condition type: selected pods already belong to another group.
pub const PODS_CONTESTED: &str = "PodsContested";

/// How often a group is re-planned without any event (drift safety net).
const RESYNC: Duration = Duration::from_secs(300);
/// Retry of a decision made from a stale view (the newer group's event normally comes first).
const STALE_RETRY: Duration = Duration::from_secs(2);

/// Reconciles one ConsumerGroup.
pub async fn reconcile(group: Arc<ConsumerGroup>, scope: Arc<Scope>) -> Result<Action, Error> {
    let ctx = scope.ctx.clone();
    let key = format!(
        "ConsumerGroup/{}/{}",
        group.namespace().unwrap_or_default(),
        group.name_any()
    );
    let result = ctx
        .metrics
        .measure("ConsumerGroup", reconcile_inner(group, &scope))
        .await;
    if result.is_ok() {
        ctx.failures.clear(&key);
    }
    result
}

async fn reconcile_inner(group: Arc<ConsumerGroup>, scope: &Scope) -> Result<Action, Error> {
    let ctx = &scope.ctx;
    if !ctx.leadership.is_leader() {
        // Followers keep their caches warm but never write; leadership re-triggers every group.
        return Ok(Action::await_change());
    }
    if !scope.synced().await {
        // A cache's writer is gone: the operator is shutting down.
        return Ok(Action::await_change());
    }
    if let Some(reason) = super::watch::unreadable(group.as_ref()) {
        // Its status and its pods' queues stay as they are: the last good assignment.
        ctx.report_unreadable(group.as_ref(), reason).await;
        return Ok(Action::await_change());
    }
    let snapshot = fetch::fetch(group.clone(), scope).await?;
    let budgets = Budgets {
        status: ctx.status_budget,
        annotation: ctx.annotation_budget,
        client_grace: ctx.client_grace,
    };
    let now = Timestamp::now();
    let decision = decide::decide(&snapshot, now, budgets);
    match apply::apply(ctx, &group, &decision, now).await? {
        Applied::Stale => return Ok(Action::requeue(STALE_RETRY)),
        Applied::NotLeader => return Ok(Action::await_change()),
        Applied::Done => {}
    }
    // Clients join and leave without a Kubernetes event: a Client group is read again every
    // sync period.
    let resync = if group.spec.client_mode() {
        ctx.sync_period
    } else {
        RESYNC
    };
    let labels =
        super::metrics::Metrics::group(&group.namespace().unwrap_or_default(), &group.name_any());
    match &decision.outcome {
        Outcome::Planned => {
            ctx.metrics
                .idle_consumers
                .get_or_create(&labels)
                .set(i64::from(decision.status.allocation.idle));
            if let Some(moved) = decision.moved {
                ctx.metrics
                    .queues_moved
                    .get_or_create(&labels)
                    .inc_by(moved);
            }
            if let Some(n) = decision.diverging {
                ctx.metrics
                    .clients_diverging
                    .get_or_create(&labels)
                    .set(n as i64);
            }
            if let Some(n) = decision.unverified {
                ctx.metrics
                    .clients_unverified
                    .get_or_create(&labels)
                    .set(n as i64);
            }
            if let Some(map) = &decision.clients {
                for (kind, count) in [
                    ("without_pod", map.without_pod.len()),
                    ("pod_without_client", map.pods_without_client.len()),
                ] {
                    let labels = super::metrics::Metrics::mismatch(&labels, kind);
                    ctx.metrics
                        .clients_mismatched
                        .get_or_create(&labels)
                        .set(count as i64);
                }
            }
            Ok(Action::requeue(resync))
        }
        Outcome::Failed(reason) => {
            tracing::warn!(group = %group.name_any(), reason, "keeping the last good assignment");
            // A spec that breaks a rule waits for the next change; anything else may resolve
            // itself (a topic created, a workload scaled) and is re-checked at the resync.
            if *reason == "InvalidSpec" {
                Ok(Action::await_change())
            } else {
                Ok(Action::requeue(resync))
            }
        }
    }
}
