//! Apply: the writes a [`Decision`] lists, and nothing else. Pods first (consumers read their
//! annotation; the status is a report), then the status, guarded by the resourceVersion the
//! decision was made from, then the Events, only once the status they describe is written.
//!
//! A write the API server refuses for good ([`Refused`]: a webhook, a size limit, RBAC) is not
//! retried and not silent: the status written says `Ready=False`/`WriteRejected` naming it, with
//! a Warning Event, and no Normal Event claims what did not land. A refused pod does not stop
//! the others; a refused status leaves the last written one in place, with that `Ready`.

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::READY;
use super::decide::{Decision, Regarding};
use crate::api::{ConsumerGroup, ConsumerGroupStatus};
use crate::controller::Error;
use crate::controller::conditions;
use crate::controller::context::{Context, FIELD_MANAGER};
use crate::controller::refused::{self, Refused, WRITE_REJECTED};

/// Whether the decision was fully applied, or found to rest on a stale view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Everything written.
    Done,
    /// The group changed since it was read: nothing more written; the newer group reconciles.
    Stale,
    /// This replica is not the leader (any more): nothing more written.
    NotLeader,
}

/// Applies `decision` for `group`; `now` dates a `WriteRejected` condition.
pub async fn apply(
    ctx: &Context,
    group: &ConsumerGroup,
    decision: &Decision,
    now: Timestamp,
) -> Result<Applied, Error> {
    let namespace = group.namespace().ok_or(Error::NoNamespace)?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let mut refusals = Vec::new();
    for (name, patch) in &decision.pod_patches {
        if !ctx.leadership.is_leader() {
            return Ok(Applied::NotLeader);
        }
        match pods.patch(name, &params, &Patch::Merge(patch)).await {
            Ok(_) => ctx.metrics.count_write("pods"),
            // Gone between the cache and the patch: nothing to annotate.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            // A pod joining the group changed since the cache saw it (another group may have
            // labelled it): decided from a stale view; its event reconciles the group again.
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(Applied::Stale),
            Err(e) => match Refused::from_error(format!("pod {namespace}/{name}"), &e) {
                // One pod must not stop the group; the status names it.
                Some(r) => {
                    tracing::warn!(pod = %name, code = r.code, error = %r.message, "pod annotation refused");
                    ctx.metrics.count_refused("pods");
                    refusals.push(r);
                }
                None => return Err(Error::kube(format!("patch pod {namespace}/{name}"), e)),
            },
        }
    }
    let current = group.status.clone().unwrap_or_default();
    let mut status = decision.status.clone();
    if !refusals.is_empty() {
        status.conditions = refused::mark(
            &status.conditions,
            &current.conditions,
            READY,
            &refusals,
            "the assignment above is computed, but these pods do not carry it",
            group.metadata.generation,
            now,
        );
    }
    // After a refusal the decided status changed: compare again (the same refusal on the next
    // reconcile marks the same status, and writes nothing).
    let write = if refusals.is_empty() {
        decision.write_status
    } else {
        status != current
    };
    // The Warning goes with the transition of Ready to this refusal, not with every reconcile.
    let mut announce =
        !refusals.is_empty() && conditions::changed(&current.conditions, &status.conditions, READY);
    if write {
        if !ctx.leadership.is_leader() {
            return Ok(Applied::NotLeader);
        }
        match write_status(ctx, group, &status).await {
            Ok(Written::Yes) => {}
            Ok(Written::Stale) => return Ok(Applied::Stale),
            Ok(Written::Gone) => return Ok(Applied::Done),
            Err(e) => match Refused::from_error("status", &e) {
                Some(r) => {
                    tracing::warn!(group = %group.name_any(), code = r.code, error = %r.message, "status refused");
                    ctx.metrics.count_refused("consumergroups/status");
                    refusals.push(r);
                    // The last status written stays the report, with a Ready that says why.
                    let mut last = current.clone();
                    last.conditions = refused::mark(
                        &last.conditions,
                        &last.conditions,
                        READY,
                        &refusals,
                        "the status shown is the last one written",
                        group.metadata.generation,
                        now,
                    );
                    announce = conditions::changed(&current.conditions, &last.conditions, READY);
                    if announce
                        && let Written::Stale = write_status(ctx, group, &last)
                            .await
                            .map_err(|e| status_error(group, e))?
                    {
                        return Ok(Applied::Stale);
                    }
                }
                None => return Err(status_error(group, e)),
            },
        }
    }
    if announce {
        let note = refused::summary(&refusals);
        ctx.event(
            &group.object_ref(&()),
            true,
            WRITE_REJECTED,
            "Rebalance",
            note,
        )
        .await;
    }
    for event in &decision.events {
        // Nothing Normal is announced about writes that did not all land.
        if !refusals.is_empty() && !event.warning {
            continue;
        }
        let reference = match event.regarding {
            Regarding::Group => group.object_ref(&()),
            Regarding::Workload => match workload_ref(group) {
                Some(r) => r,
                None => continue,
            },
        };
        ctx.event(
            &reference,
            event.warning,
            &event.reason,
            "Rebalance",
            event.note.clone(),
        )
        .await;
    }
    Ok(Applied::Done)
}

/// What became of a status write.
enum Written {
    Yes,
    /// 409: the group changed since it was read.
    Stale,
    /// 404: deleted meanwhile, nothing left to report on.
    Gone,
}

async fn write_status(
    ctx: &Context,
    group: &ConsumerGroup,
    status: &ConsumerGroupStatus,
) -> Result<Written, kube::Error> {
    let api: Api<ConsumerGroup> =
        Api::namespaced(ctx.client.clone(), &group.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "ConsumerGroup",
        // A precondition of server-side apply: 409 Conflict when the group changed since it
        // was read, so a status computed from an older view never rolls a newer one back.
        "metadata": {"resourceVersion": group.resource_version()},
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch_status(&group.name_any(), &params, &Patch::Apply(&body))
        .await
    {
        Ok(_) => {
            ctx.metrics.count_write("consumergroups/status");
            Ok(Written::Yes)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            tracing::debug!(group = %group.name_any(), "decided from a stale view; not written");
            Ok(Written::Stale)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Written::Gone),
        Err(e) => Err(e),
    }
}

fn status_error(group: &ConsumerGroup, e: kube::Error) -> Error {
    Error::kube(
        format!(
            "apply status of consumergroup {}/{}",
            group.namespace().unwrap_or_default(),
            group.name_any()
        ),
        e,
    )
}

fn workload_ref(group: &ConsumerGroup) -> Option<ObjectReference> {
    let w = group.spec.consumers.as_ref()?.workload_ref.as_ref()?;
    Some(ObjectReference {
        api_version: Some(w.api_version.clone()),
        kind: Some(w.kind.clone()),
        name: Some(w.name.clone()),
        namespace: group.namespace(),
        ..Default::default()
    })
}
