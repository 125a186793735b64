//! Apply: the writes a [`Decision`] lists, and nothing else. Pods first (consumers read their
//! annotation; the status is a report), then the status, guarded by the resourceVersion the
//! decision was made from, then the Events, only once the status they describe is written.

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::decide::{Decision, Regarding};
use crate::api::ConsumerGroup;
use crate::controller::Error;
use crate::controller::context::{Context, FIELD_MANAGER};

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

/// Applies `decision` for `group`.
pub async fn apply(
    ctx: &Context,
    group: &ConsumerGroup,
    decision: &Decision,
) -> Result<Applied, Error> {
    let namespace = group.namespace().ok_or(Error::NoNamespace)?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    for (name, patch) in &decision.pod_patches {
        if !ctx.leadership.is_leader() {
            return Ok(Applied::NotLeader);
        }
        match pods.patch(name, &params, &Patch::Merge(patch)).await {
            Ok(_) => ctx.metrics.count_write("pods"),
            // Gone between the cache and the patch: nothing to annotate.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            // Rejected (an admission webhook, a size limit): one pod must not stop the group.
            Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
                tracing::warn!(pod = %name, error = %s.message, "pod annotation rejected");
            }
            Err(e) => return Err(Error::kube(format!("patch pod {namespace}/{name}"), e)),
        }
    }
    if decision.write_status {
        if !ctx.leadership.is_leader() {
            return Ok(Applied::NotLeader);
        }
        let api: Api<ConsumerGroup> = Api::namespaced(ctx.client.clone(), &namespace);
        let body = json!({
            "apiVersion": crate::api::API_VERSION,
            "kind": "ConsumerGroup",
            // A precondition of server-side apply: 409 Conflict when the group changed since it
            // was read, so a status computed from an older view never rolls a newer one back.
            "metadata": {"resourceVersion": group.resource_version()},
            "status": decision.status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&group.name_any(), &params, &Patch::Apply(&body))
            .await
        {
            Ok(_) => ctx.metrics.count_write("consumergroups/status"),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!(group = %group.name_any(), "decided from a stale view; not written");
                return Ok(Applied::Stale);
            }
            // Deleted meanwhile: nothing left to report on.
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Applied::Done),
            Err(e) => {
                return Err(Error::kube(
                    format!(
                        "apply status of consumergroup {namespace}/{}",
                        group.name_any()
                    ),
                    e,
                ));
            }
        }
    }
    for event in &decision.events {
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
