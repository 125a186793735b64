//! The operator's watch caches: one reflector per kind, trimmed to what reconciles read, with a
//! retry policy that comes back within seconds of an API-server restart.

use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::consumers::QUEUES_ANNOTATION;

/// Longest wait between two attempts of a failing watch. kube's default grows to 30 s and stays
/// there for two minutes; an API-server restart is a normal event and must cost seconds.
pub const MAX_WATCH_BACKOFF: Duration = Duration::from_secs(4);

/// Exponential backoff from 250 ms to [`MAX_WATCH_BACKOFF`], reset by every event received.
#[derive(Debug, Clone)]
pub struct QuickBackoff {
    next: Duration,
}

impl Default for QuickBackoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(250),
        }
    }
}

impl Iterator for QuickBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (self.next * 2).min(MAX_WATCH_BACKOFF);
        Some(current)
    }
}

impl Backoff for QuickBackoff {
    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Lists read etcd's latest state (`resourceVersion` unset), not the watch cache: a re-list after
/// a `410 Gone` must move past the position that expired instead of returning to it.
pub fn config() -> watcher::Config {
    watcher::Config::default()
}

/// A reflected watch of `api`: the store is updated before each event is passed on, so a
/// reconcile triggered by an event always finds that event in the store.
pub fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    reflect_observed(api, config, trim, |_| {})
}

/// [`reflect`], calling `observe` with every event once the store has applied it (a list's
/// objects arrive as `InitApply` events while the store still holds the previous list; the store
/// swaps at `InitDone`).
pub fn reflect_observed<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
    mut observe: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, config)
            .modify(trim)
            .backoff(QuickBackoff::default()),
    )
    .inspect(move |event| {
        if let Ok(event) = event {
            observe(event);
        }
    })
    .touched_objects();
    (reader, stream)
}

/// Keeps what reconciles read of any object: managed fields are a large share of an object and
/// nothing here uses them.
pub fn trim_meta<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
}

/// Keeps only what the operator reads of a pod: name, labels, its queues annotation, deletion,
/// node, IP and the Ready condition. A full pod is ~10× larger and a cluster has many.
pub fn trim_pod(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    let keep = pod.annotations().get(QUEUES_ANNOTATION).cloned();
    let annotations = pod.annotations_mut();
    annotations.clear();
    if let Some(value) = keep {
        annotations.insert(QUEUES_ANNOTATION.to_string(), value);
    }
    pod.metadata.owner_references = None;
    pod.metadata.finalizers = None;
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    pod.spec = Some(PodSpec {
        node_name,
        containers: Vec::new(),
        ..PodSpec::default()
    });
    let status = pod.status.take().unwrap_or_default();
    let ready: Vec<PodCondition> = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ == "Ready")
        .map(|c| PodCondition {
            type_: c.type_,
            status: c.status,
            ..PodCondition::default()
        })
        .collect();
    pod.status = Some(PodStatus {
        phase: status.phase,
        pod_ip: status.pod_ip,
        conditions: Some(ready),
        ..PodStatus::default()
    });
}

/// Logs and drops the errors of a trigger stream. Each watch retries on its own backoff; passed
/// on, an error would also pause the controller's shared trigger backoff, which holds back every
/// other watch of that controller (measured: 30-40 s of deafness after an API-server restart).
pub fn log_errors<K, S>(
    stream: S,
    kind: &'static str,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    S: Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    stream.filter_map(move |item| {
        futures::future::ready(match item {
            Ok(object) => Some(Ok(object)),
            Err(e) => {
                tracing::warn!(kind, error = %e, "watch failed; retrying");
                None
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::consumers::ZONE_LABEL;
    use serde_json::json;

    #[test]
    fn backoff_is_capped_and_resets() {
        let mut b = QuickBackoff::default();
        let waits: Vec<Duration> = (0..8).map(|_| b.next().unwrap()).collect();
        assert_eq!(waits[0], Duration::from_millis(250));
        assert!(waits.iter().all(|w| *w <= MAX_WATCH_BACKOFF));
        assert_eq!(*waits.last().unwrap(), MAX_WATCH_BACKOFF);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn a_trimmed_pod_keeps_what_reconciles_read() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "p", "namespace": "a", "resourceVersion": "7",
                "labels": {"app": "x", ZONE_LABEL: "z1"},
                "annotations": {QUEUES_ANNOTATION: "[]", "big": "x".repeat(1000)},
                "managedFields": [{"manager": "kubectl"}]
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [
                {"type": "Ready", "status": "True", "message": "m"},
                {"type": "Initialized", "status": "True"}
            ]}
        }))
        .unwrap();
        trim_pod(&mut pod);
        assert_eq!(pod.labels().len(), 2);
        assert_eq!(pod.annotations().len(), 1);
        assert!(pod.managed_fields().is_empty());
        assert_eq!(pod.resource_version().as_deref(), Some("7"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert!(spec.containers.is_empty());
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
        assert!(super::super::consumers::is_consumer(&pod));
    }
}
