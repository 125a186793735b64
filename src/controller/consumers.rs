//! Which pods consume for a group, and the per-pod annotation that tells each its queues.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::json;

use crate::api::ConsumerAssignment;

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

/// A pod is a consumer when it is Ready and not terminating.
pub fn is_consumer(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
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
