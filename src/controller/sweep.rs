//! Pods whose group is gone. A group's own reconcile takes its label and annotation off pods that
//! leave it, but a deleted group never reconciles again; this loop watches only labelled pods and
//! cleans those whose group no longer exists, so no consumer keeps acting on a dead assignment.
//! (A finalizer would do the same at the price of groups stuck in Terminating whenever the
//! operator is not running.)

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};

use super::consumers::{GROUP_LABEL, leaver_patch};
use super::context::{Context, FIELD_MANAGER};
use super::error::Error;
use super::pod_index::PodIndex;
use crate::api::ConsumerGroup;

/// What the sweeper needs: the shared context and the groups the group controller has seen.
pub struct SweepContext {
    /// Shared context.
    pub ctx: Arc<Context>,
    /// The sweep's own cache of the groups.
    pub groups: Store<ConsumerGroup>,
    /// True once every cache of the scope has its first full list.
    pub synced: tokio::sync::watch::Receiver<bool>,
}

/// The group a pod is labelled for, when that group does not exist.
pub fn orphaned_from(pod: &Pod, groups: &Store<ConsumerGroup>) -> Option<String> {
    let group = pod.labels().get(GROUP_LABEL)?;
    let key = ObjectRef::new(group).within(&pod.namespace()?);
    groups.get(&key).is_none().then(|| group.clone())
}

/// The labelled pods of `group` in the sweep's cache.
pub fn pods_of_group(pods: &PodIndex, group: &ConsumerGroup) -> Vec<ObjectRef<Pod>> {
    let namespace = group.namespace().unwrap_or_default();
    pods.labelled(&namespace, GROUP_LABEL, &group.name_any())
        .into_iter()
        .map(|name| ObjectRef::new(&name).within(&namespace))
        .collect()
}

/// Cleans one labelled pod if its group is gone.
pub async fn reconcile(pod: Arc<Pod>, sweep: Arc<SweepContext>) -> Result<Action, Error> {
    let ctx = &sweep.ctx;
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    // An empty cache at start-up would make every group look deleted.
    // (Not `Store::wait_until_ready`: a kube store wakes only one of the tasks waiting for it.)
    if !super::scope::wait_synced(sweep.synced.clone()).await {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    // A pod on its way out is not worth a patch (and would often answer 404).
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(group) = orphaned_from(&pod, &sweep.groups) else {
        return Ok(Action::await_change());
    };
    let namespace = pod.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    tracing::info!(pod = %pod.name_any(), %group, "group is gone: removing its queues from the pod");
    match api
        .patch(&pod.name_any(), &params, &Patch::Merge(&leaver_patch()))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            return Err(Error::kube(
                format!("patch pod {namespace}/{}", pod.name_any()),
                e,
            ));
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::{reflector, watcher};
    use serde_json::json;

    #[test]
    fn only_pods_of_missing_groups_are_orphans() {
        let (groups, mut writer) = reflector::store::<ConsumerGroup>();
        let group: ConsumerGroup = serde_json::from_value(json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
            "metadata": {"name": "live", "namespace": "a"}, "spec": {"topics": ["t"]}
        }))
        .unwrap();
        writer.apply_watcher_event(&watcher::Event::Apply(group));
        let pod = |ns: &str, group: Option<&str>| -> Pod {
            let labels = group.map_or(json!({}), |g| json!({GROUP_LABEL: g}));
            serde_json::from_value(
                json!({"metadata": {"name": "p", "namespace": ns, "labels": labels}}),
            )
            .unwrap()
        };
        assert_eq!(orphaned_from(&pod("a", Some("live")), &groups), None);
        assert_eq!(
            orphaned_from(&pod("a", Some("gone")), &groups).as_deref(),
            Some("gone")
        );
        // Same name, other namespace: a different group.
        assert_eq!(
            orphaned_from(&pod("b", Some("live")), &groups).as_deref(),
            Some("live")
        );
        assert_eq!(orphaned_from(&pod("a", None), &groups), None);
    }

    #[test]
    fn a_group_maps_to_its_labelled_pods_of_its_namespace() {
        let pods = PodIndex::default();
        for (ns, name, group) in [("a", "p1", "g"), ("a", "p2", "other"), ("b", "p3", "g")] {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns, "labels": {GROUP_LABEL: group}}
            }))
            .unwrap();
            pods.observe(&watcher::Event::Apply(pod));
        }
        let group: ConsumerGroup = serde_json::from_value(json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
            "metadata": {"name": "g", "namespace": "a"}, "spec": {"topics": ["t"]}
        }))
        .unwrap();
        let names: Vec<String> = pods_of_group(&pods, &group)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["p1"]);
    }
}
