//! The Topic reconciler: writes the status the plan layer decides (totals, producer shares, the
//! `Ready` and `QueueMismatch` conditions) and emits Events on transitions.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::conditions::{self, Desired};
use super::context::{Context, FIELD_MANAGER};
use super::error::Error;
use crate::api::{Topic, TopicStatus};
use crate::plan::topic_status;

/// Condition type: a broker's read and write queue counts differ.
pub const QUEUE_MISMATCH: &str = topic_status::QUEUE_MISMATCH;

/// The status a topic should have (conditions not yet merged), as the plan layer decides it.
pub fn desired_status(topic: &Topic) -> (TopicStatus, Vec<Desired>) {
    let (status, conditions) = topic_status::topic_status(topic);
    let desired = conditions
        .into_iter()
        .map(|c| Desired::new(c.type_, c.status, c.reason, c.message))
        .collect();
    (status, desired)
}

/// Reconciles one Topic.
pub async fn reconcile(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .measure("Topic", reconcile_inner(&topic, &ctx))
        .await
}

async fn reconcile_inner(topic: &Topic, ctx: &Context) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let namespace = topic.namespace().ok_or(Error::NoNamespace)?;
    let current = topic.status.clone().unwrap_or_default();
    let (mut status, desired) = desired_status(topic);
    status.conditions = conditions::merge(
        &current.conditions,
        &desired,
        topic.meta().generation,
        Timestamp::now(),
    );
    if status != current {
        let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &namespace);
        let body =
            json!({"apiVersion": crate::api::API_VERSION, "kind": "Topic", "status": status});
        api.patch_status(
            &topic.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| {
            Error::kube(
                format!("apply status of topic {namespace}/{}", topic.name_any()),
                e,
            )
        })?;
    }
    let reference = topic.object_ref(&());
    for type_ in [QUEUE_MISMATCH, "Ready"] {
        if conditions::changed(&current.conditions, &status.conditions, type_)
            && let Some(c) = conditions::find(&status.conditions, type_)
        {
            let warning = (type_ == QUEUE_MISMATCH) == (c.status == "True");
            if warning {
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
    Ok(Action::await_change())
}
