//! The operator's watch caches: one reflector per kind, trimmed to what reconciles read, with a
//! retry policy that comes back within seconds of an API-server restart.

use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::consumers::QUEUES_ANNOTATION;
use crate::api::{ConsumerGroup, ConsumerGroupSpec, Topic, TopicSpec};

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
    observe: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    reflect_events(
        watcher(api, config).backoff(QuickBackoff::default()),
        trim,
        observe,
    )
}

/// Cache annotation of an object the API server holds but this operator cannot read (e.g. a
/// status edited by hand with a value out of its type's range, or a field of another version):
/// its value is the reason. Such an object is cached as a placeholder with its metadata (see
/// [`Unreadable`]); it never reaches the API server.
pub const UNREADABLE_ANNOTATION: &str = "rebalancer.dev/unreadable";

/// Kinds whose unreadable objects are cached as placeholders instead of failing the whole
/// watch: without that, one such object stalls the list, and with it every object of the kind.
pub trait Unreadable: Resource<DynamicType = ()> + Sized {
    /// An object with `metadata`, an empty spec, and [`UNREADABLE_ANNOTATION`].
    fn placeholder(metadata: ObjectMeta) -> Self;
}

impl Unreadable for ConsumerGroup {
    fn placeholder(metadata: ObjectMeta) -> Self {
        ConsumerGroup {
            metadata,
            spec: ConsumerGroupSpec::default(),
            status: None,
        }
    }
}

impl Unreadable for Topic {
    fn placeholder(metadata: ObjectMeta) -> Self {
        Topic {
            metadata,
            spec: TopicSpec::default(),
            status: None,
        }
    }
}

/// Why `object` could not be read, when it is a placeholder.
pub fn unreadable<K: Resource>(object: &K) -> Option<&str> {
    object
        .meta()
        .annotations
        .as_ref()?
        .get(UNREADABLE_ANNOTATION)
        .map(String::as_str)
}

/// The object of a guarded watch, or its placeholder.
fn open<K: Unreadable>(guard: DeserializeGuard<K>) -> K {
    match guard.0 {
        Ok(object) => object,
        Err(invalid) => {
            let mut metadata = invalid.metadata;
            tracing::warn!(
                kind = %K::kind(&()),
                namespace = metadata.namespace.as_deref().unwrap_or_default(),
                name = metadata.name.as_deref().unwrap_or_default(),
                error = %invalid.error,
                "cannot read this object; it is ignored until it changes"
            );
            metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(UNREADABLE_ANNOTATION.to_string(), invalid.error);
            K::placeholder(metadata)
        }
    }
}

fn open_event<K: Unreadable>(event: watcher::Event<DeserializeGuard<K>>) -> watcher::Event<K> {
    use watcher::Event;
    match event {
        Event::Apply(g) => Event::Apply(open(g)),
        Event::Delete(g) => Event::Delete(open(g)),
        Event::InitApply(g) => Event::InitApply(open(g)),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

/// [`reflect`] for a kind with [`Unreadable`] placeholders, calling `observe` with every event
/// once the store has applied it (a list's objects arrive as `InitApply` events while the store
/// still holds the previous list; the store swaps at `InitDone`): an object that does not
/// deserialize is cached as a placeholder (reconciles report it and write nothing), and every
/// other object of the kind flows as usual.
pub fn reflect_guarded<K>(
    api: Api<DeserializeGuard<K>>,
    config: watcher::Config,
    trim: impl FnMut(&mut K) + Send + 'static,
    observe: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Unreadable + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let events = watcher(api, config)
        .backoff(QuickBackoff::default())
        .map(|event| event.map(open_event));
    reflect_events(events, trim, observe)
}

/// The store fed by `events` (trimmed), and the objects they touch, passed on once the store
/// has applied each event and `observe` has seen it.
fn reflect_events<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    trim: impl FnMut(&mut K) + Send + 'static,
    mut observe: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, events.modify(trim))
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
        // Dual-stack pods: a RocketMQ client may report either family in its client id.
        pod_ips: status.pod_ips,
        conditions: Some(ready),
        ..PodStatus::default()
    });
}

/// Room for this many objects between a watch and each of its readers in [`fan_out`].
const FAN_OUT_BUFFER: usize = 256;

/// One watch for `N` controllers: every object the stream touches, deleted ones included, goes
/// to each of the `N` streams, in order. (kube's shared reflectors, `reflect_shared` and
/// `for_shared_stream`, would do this but do not pass deletions on, and a deleted Topic must
/// re-plan its groups at once, a deleted group start its pods' sweep.) The first value drives
/// the watch, and so its store: run it with the readers; it ends once every reader is dropped.
/// Errors are logged there, by [`log_errors`].
pub fn fan_out<K, const N: usize>(
    events: impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    kind: &'static str,
) -> (
    impl Future<Output = ()> + Send + 'static,
    [impl Stream<Item = Result<K, watcher::Error>> + Send + 'static; N],
)
where
    K: Clone + Send + 'static,
{
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..N)
        .map(|_| tokio::sync::mpsc::channel::<K>(FAN_OUT_BUFFER))
        .unzip();
    let driver = async move {
        let mut events = std::pin::pin!(log_errors(events, kind));
        // The watch ends when every reader is gone (their controllers shut down).
        let mut gone = std::pin::pin!(futures::future::join_all(
            senders.iter().map(|tx| tx.closed())
        ));
        loop {
            let event = tokio::select! {
                _ = &mut gone => break,
                event = events.next() => event,
            };
            match event {
                // log_errors passes objects only.
                None | Some(Err(_)) => break,
                Some(Ok(object)) => {
                    for tx in &senders {
                        // A reader that is gone is skipped.
                        let _ = tx.send(object.clone()).await;
                    }
                }
            }
        }
    };
    let streams: Vec<_> = receivers
        .into_iter()
        .map(|rx| tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok))
        .collect();
    let Ok(streams) = <[_; N]>::try_from(streams) else {
        unreachable!("N receivers were made")
    };
    (driver, streams)
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
    fn an_unreadable_object_becomes_a_marked_placeholder_and_a_readable_one_passes() {
        let object = |idle: u64| {
            json!({
                "apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
                "metadata": {"name": "g", "namespace": "ns", "resourceVersion": "7",
                             "annotations": {"team": "orders"}},
                "spec": {"topics": ["orders"]},
                "status": {"idle": idle}
            })
        };
        let guard: DeserializeGuard<ConsumerGroup> =
            serde_json::from_value(object(5_000_000_000)).unwrap();
        let opened = match open_event(watcher::Event::Apply(guard)) {
            watcher::Event::Apply(g) => g,
            other => panic!("{other:?}"),
        };
        let reason = unreadable(&opened).expect("marked unreadable");
        assert!(reason.contains("5000000000"), "{reason}");
        assert_eq!(opened.name_any(), "g");
        assert_eq!(opened.resource_version().as_deref(), Some("7"));
        assert_eq!(opened.annotations()["team"], "orders");
        assert!(opened.spec.topics.is_empty() && opened.status.is_none());

        let guard: DeserializeGuard<ConsumerGroup> = serde_json::from_value(object(1)).unwrap();
        let opened = match open_event(watcher::Event::InitApply(guard)) {
            watcher::Event::InitApply(g) => g,
            other => panic!("{other:?}"),
        };
        assert_eq!(unreadable(&opened), None);
        assert_eq!(opened.spec.topics, ["orders"]);
        assert_eq!(opened.status.unwrap().allocation.idle, 1);
    }

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

    #[tokio::test]
    async fn fan_out_gives_every_reader_every_object_and_ends_with_them() {
        let events = futures::stream::iter(vec![
            Ok::<_, watcher::Error>("a"),
            Ok("b (deleted)"),
            Ok("c"),
        ])
        .chain(futures::stream::pending());
        let (driver, [one, two]) = fan_out::<&str, 2>(events, "Test");
        let driver = tokio::spawn(driver);
        let read = |s: std::pin::Pin<
            Box<dyn Stream<Item = Result<&'static str, watcher::Error>> + Send>,
        >| async move { s.take(3).map(Result::unwrap).collect::<Vec<_>>().await };
        let (one, two) = tokio::join!(read(Box::pin(one)), read(Box::pin(two)));
        assert_eq!(one, ["a", "b (deleted)", "c"]);
        assert_eq!(two, one);
        // Both readers are dropped (take(3) consumed them): the watch, endless itself, ends.
        tokio::time::timeout(Duration::from_secs(5), driver)
            .await
            .expect("the driver did not end with its readers")
            .unwrap();
    }
}
