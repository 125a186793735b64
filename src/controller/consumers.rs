//! Which pods consume for a group, and the per-pod annotation that tells each its queues.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind, Selector};
use serde_json::json;

use super::error::Error;
use crate::api::{ConsumerAssignment, ConsumersSpec};
use crate::assign::ConsumerInput;

/// Pod annotation holding the pod's own queues as JSON.
pub const QUEUES_ANNOTATION: &str = "rebalancer.dev/queues";
/// Pod label naming the group a pod consumes for; lets the operator find pods that left.
pub const GROUP_LABEL: &str = "rebalancer.dev/consumer-group";
/// Pod label that overrides the node's zone.
pub const ZONE_LABEL: &str = "rebalancer.dev/zone";
/// Largest `rebalancer.dev/queues` value written. The API server caps all of a pod's annotations
/// together at 256 KiB; a consumer owning tens of thousands of scattered queues would exceed it.
pub const ANNOTATION_BUDGET: usize = 128 * 1024;
/// Well-known node label for the zone.
pub const NODE_ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Where the consumers are, as resolved in one reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Label selector over pods (Kubernetes string form).
    pub selector: String,
    /// Replicas asked for by the workload, when `workloadRef` is used.
    pub desired_replicas: Option<i32>,
}

/// Reads the scale subresource of the workload, or converts the label selector.
pub async fn resolve(
    client: &kube::Client,
    namespace: &str,
    spec: &ConsumersSpec,
) -> Result<Resolved, Error> {
    if let Some(w) = &spec.workload_ref {
        let (group, version) = match w.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", w.api_version.as_str()),
        };
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &w.kind));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
        let what = format!("{} {}", w.kind, w.name);
        let scale = api.get_scale(&w.name).await.map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => {
                Error::Workload(what.clone(), "not found".into())
            }
            other => Error::Kube(other),
        })?;
        let selector = scale
            .status
            .as_ref()
            .and_then(|s| s.selector.clone())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Error::Workload(what, "its scale subresource reports no pod selector".into())
            })?;
        return Ok(Resolved {
            selector,
            // The scale subresource omits a zero `spec.replicas`: absent means scaled to 0.
            desired_replicas: Some(scale.spec.and_then(|s| s.replicas).unwrap_or(0)),
        });
    }
    let selector = spec.selector.clone().unwrap_or_default();
    let selector = Selector::try_from(selector)
        .map_err(|e| Error::Workload("selector".into(), e.to_string()))?;
    if selector.selects_all() {
        return Err(Error::Workload(
            "selector".into(),
            "an empty selector would select every pod".into(),
        ));
    }
    Ok(Resolved {
        selector: selector.to_string(),
        desired_replicas: None,
    })
}

/// A pod is a consumer when it is Ready and not terminating.
pub fn is_consumer(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Lists the pods the selector matches.
pub async fn list_pods(api: &Api<Pod>, selector: &str) -> Result<Vec<Pod>, Error> {
    Ok(api
        .list(&ListParams::default().labels(selector))
        .await?
        .items)
}

/// Consumers with their zones. Node zones are read only when `need_zones` (zone-aware strategies).
pub async fn consumers(
    client: &kube::Client,
    pods: &[Pod],
    need_zones: bool,
) -> Result<Vec<ConsumerInput>, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node_zones: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut out = Vec::new();
    for pod in pods.iter().filter(|p| is_consumer(p)) {
        let mut zone = pod.labels().get(ZONE_LABEL).cloned();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if zone.is_none()
            && need_zones
            && let Some(node) = node
        {
            if !node_zones.contains_key(&node) {
                let z = match nodes.get_opt(&node).await {
                    Ok(n) => n.and_then(|n| n.labels().get(NODE_ZONE_LABEL).cloned()),
                    // Without RBAC on nodes the zone is just unknown; the engine reports it.
                    Err(kube::Error::Api(s)) if s.code == 403 => None,
                    Err(e) => return Err(e.into()),
                };
                node_zones.insert(node.clone(), z);
            }
            zone = node_zones[&node].clone();
        }
        out.push(ConsumerInput {
            id: pod.name_any(),
            zone,
        });
    }
    Ok(out)
}

/// The annotation value for one consumer: its queues as a JSON array.
pub fn annotation_value(assignment: &ConsumerAssignment) -> String {
    serde_json::to_string(&assignment.queues).unwrap_or_else(|_| "[]".into())
}

/// Merge patch that marks a pod as a consumer of `group` owning `queues`.
pub fn member_patch(group: &str, queues: &str) -> serde_json::Value {
    json!({"metadata": {"labels": {GROUP_LABEL: group}, "annotations": {QUEUES_ANNOTATION: queues}}})
}

/// Merge patch for a member whose queues do not fit in an annotation: labelled, and no stale
/// annotation left behind for it to act on.
pub fn oversized_patch(group: &str) -> serde_json::Value {
    json!({"metadata": {"labels": {GROUP_LABEL: group}, "annotations": {QUEUES_ANNOTATION: null}}})
}

/// Merge patch that removes the label and annotation from a pod that left the group.
pub fn leaver_patch() -> serde_json::Value {
    json!({"metadata": {"labels": {GROUP_LABEL: null}, "annotations": {QUEUES_ANNOTATION: null}}})
}

/// Does the pod already carry exactly this membership?
pub fn has_membership(pod: &Pod, group: &str, queues: &str) -> bool {
    pod.labels().get(GROUP_LABEL).map(String::as_str) == Some(group)
        && pod.annotations().get(QUEUES_ANNOTATION).map(String::as_str) == Some(queues)
}
