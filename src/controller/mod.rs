//! The operator: watches Topics, ConsumerGroups, their pods and workloads, and keeps each
//! group's assignment in its status and on its pods.

pub mod conditions;
pub mod consumers;
pub mod context;
pub mod error;
pub mod group;
pub mod leader;
pub mod metrics;
pub mod preflight;
pub mod server;
pub mod sweep;
pub mod topic;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::store::WriterDropped;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::api::{ConsumerGroup, Topic};
pub use context::Context;
pub use error::Error;

/// Settings of `rebalancer run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespaces to watch; empty = all.
    pub namespaces: Vec<String>,
    /// Lease to hold, when leader election is on.
    pub lease: Option<leader::LeaseLock>,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub metrics_addr: std::net::SocketAddr,
    /// This replica's name (Events' reporting instance, lease identity).
    pub instance: Option<String>,
}

fn error_policy<K, C>(_: Arc<K>, error: &Error, _: Arc<C>) -> Action {
    tracing::warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

/// Groups in `namespace` that subscribe to topic `name`.
fn groups_of_topic(store: &Store<ConsumerGroup>, topic: &Topic) -> Vec<ObjectRef<ConsumerGroup>> {
    let namespace = topic.namespace();
    let name = topic.name_any();
    store
        .state()
        .iter()
        .filter(|g| g.namespace() == namespace && g.spec.topics.contains(&name))
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

/// Groups a pod may belong to: ours by label, or any group of its namespace whose selector
/// matches it (workload groups are matched on the next reconcile, so they are all triggered).
fn groups_of_pod(store: &Store<ConsumerGroup>, pod: &Pod) -> Vec<ObjectRef<ConsumerGroup>> {
    let namespace = pod.namespace();
    let labels: BTreeMap<String, String> = pod.labels().clone();
    store
        .state()
        .iter()
        .filter(|g| g.namespace() == namespace)
        .filter(|g| {
            if labels.get(consumers::GROUP_LABEL) == Some(&g.name_any()) {
                return true;
            }
            match g.spec.consumers.as_ref() {
                Some(c) => match &c.selector {
                    Some(sel) => kube::core::Selector::try_from(sel.clone())
                        .map(|s| kube::core::SelectorExt::matches(&s, &labels))
                        .unwrap_or(true),
                    None => true,
                },
                None => false,
            }
        })
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

/// Groups whose `workloadRef` names this workload.
fn groups_of_workload(
    store: &Store<ConsumerGroup>,
    kind: &str,
    namespace: Option<String>,
    name: &str,
) -> Vec<ObjectRef<ConsumerGroup>> {
    store
        .state()
        .iter()
        .filter(|g| g.namespace() == namespace)
        .filter(|g| {
            g.spec
                .consumers
                .as_ref()
                .and_then(|c| c.workload_ref.as_ref())
                .is_some_and(|w| w.kind == kind && w.name == name)
        })
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The caches of one scope that reconciles read. Until each holds a full list the operator's view
/// is partial (a group not listed yet looks deleted to the sweeper), so readiness waits for them.
struct Caches {
    groups: Store<ConsumerGroup>,
    topics: Store<Topic>,
    labelled_pods: Store<Pod>,
    swept_groups: Store<ConsumerGroup>,
}

impl Caches {
    async fn wait_until_ready(&self) -> Result<(), WriterDropped> {
        self.groups.wait_until_ready().await?;
        self.topics.wait_until_ready().await?;
        self.labelled_pods.wait_until_ready().await?;
        self.swept_groups.wait_until_ready().await
    }
}

/// Sets `ready` once every cache of every scope has synced. Gives up (stays unready) when a
/// controller stops before its first full list, which happens only on shutdown.
async fn mark_ready_when_synced(caches: Vec<Caches>, ready: Arc<AtomicBool>) {
    for cache in &caches {
        if cache.wait_until_ready().await.is_err() {
            return;
        }
    }
    ready.store(true, Ordering::SeqCst);
    tracing::info!("watch caches synced; ready");
}

/// Logs a reconcile failure that the error policy has already reported and requeued.
async fn log_failure<T, E: std::fmt::Display>(what: &'static str, result: Result<T, E>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "{what}");
    }
}

/// The ConsumerGroup controller of one scope: its cache and its loop.
fn group_controller(
    client: &Client,
    ctx: Arc<Context>,
    ns: Option<&str>,
    gained: watch::Receiver<u64>,
) -> (
    Store<ConsumerGroup>,
    impl Future<Output = ()> + Send + use<>,
) {
    let groups = Controller::new(
        scoped::<ConsumerGroup>(client, ns),
        watcher::Config::default().any_semantic(),
    );
    let store = groups.store();
    let (s1, s2, s3, s4) = (store.clone(), store.clone(), store.clone(), store.clone());
    let group_loop = groups
        .watches(
            scoped::<Topic>(client, ns),
            watcher::Config::default().any_semantic(),
            move |t| groups_of_topic(&s1, &t),
        )
        .watches(
            scoped::<Pod>(client, ns),
            watcher::Config::default().any_semantic(),
            move |p| groups_of_pod(&s2, &p),
        )
        .watches(
            scoped::<Deployment>(client, ns),
            watcher::Config::default().any_semantic(),
            move |d| groups_of_workload(&s3, "Deployment", d.namespace(), &d.name_any()),
        )
        .watches(
            scoped::<StatefulSet>(client, ns),
            watcher::Config::default().any_semantic(),
            move |d| groups_of_workload(&s4, "StatefulSet", d.namespace(), &d.name_any()),
        )
        .reconcile_all_on(leadership_gained(gained))
        // A rollout changes many pods within a second: plan once for the burst.
        .with_config(
            kube::runtime::controller::Config::default().debounce(Duration::from_millis(500)),
        )
        .shutdown_on_signal()
        .run(group::reconcile, error_policy, ctx)
        .for_each(|r| log_failure("group reconcile", r));
    (store, group_loop)
}

/// The Topic controller of one scope: its cache and its loop.
fn topic_controller(
    client: &Client,
    ctx: Arc<Context>,
    ns: Option<&str>,
    gained: watch::Receiver<u64>,
) -> (Store<Topic>, impl Future<Output = ()> + Send + use<>) {
    let topics = Controller::new(
        scoped::<Topic>(client, ns),
        watcher::Config::default().any_semantic(),
    );
    let store = topics.store();
    let topic_loop = topics
        .reconcile_all_on(leadership_gained(gained))
        .shutdown_on_signal()
        .run(topic::reconcile, error_policy, ctx)
        .for_each(|r| log_failure("topic reconcile", r));
    (store, topic_loop)
}

/// The orphan sweep of one scope: its cache of labelled pods and its loop.
fn sweep_controller(
    client: &Client,
    ctx: Arc<Context>,
    ns: Option<&str>,
) -> (
    Store<Pod>,
    Store<ConsumerGroup>,
    impl Future<Output = ()> + Send + use<>,
) {
    // Only labelled pods are cached here: the consumers, not the whole cluster.
    let labelled = watcher::Config::default()
        .labels(consumers::GROUP_LABEL)
        .any_semantic();
    let pods = Controller::new(scoped::<Pod>(client, ns), labelled);
    let store = pods.store();
    let members = store.clone();
    // A deleted group changes none of its pods, so its deletion must start their sweep. The
    // sweep reads its own copy of the groups, updated before the event that triggers it: the
    // group controller's cache may not have seen the deletion yet.
    let (groups, writer) = kube::runtime::reflector::store::<ConsumerGroup>();
    let group_events = kube::runtime::reflector(
        writer,
        watcher(
            scoped::<ConsumerGroup>(client, ns),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff(),
    )
    .touched_objects();
    let sweep_ctx = Arc::new(sweep::SweepContext {
        ctx,
        groups: groups.clone(),
    });
    let sweep_loop = pods
        .watches_stream(group_events, move |g| sweep::pods_of_group(&members, &g))
        .shutdown_on_signal()
        .run(sweep::reconcile, error_policy, sweep_ctx)
        .for_each(|r| log_failure("orphan sweep", r));
    (store, groups, sweep_loop)
}

/// The controllers of one namespace (or all): their caches, and a future that runs them until
/// shutdown.
fn run_scope(
    client: &Client,
    ctx: &Arc<Context>,
    namespace: Option<&str>,
    gained: &watch::Receiver<u64>,
) -> (Caches, impl Future<Output = ()> + Send + use<>) {
    let (groups, group_loop) = group_controller(client, ctx.clone(), namespace, gained.clone());
    let (topics, topic_loop) = topic_controller(client, ctx.clone(), namespace, gained.clone());
    let (labelled_pods, swept_groups, sweep_loop) =
        sweep_controller(client, ctx.clone(), namespace);
    let caches = Caches {
        groups,
        topics,
        labelled_pods,
        swept_groups,
    };
    let loops = async move {
        tokio::join!(group_loop, topic_loop, sweep_loop);
    };
    (caches, loops)
}

/// A stream that yields each time leadership is gained.
fn leadership_gained(rx: watch::Receiver<u64>) -> impl futures::Stream<Item = ()> + Send + 'static {
    tokio_stream::wrappers::WatchStream::from_changes(rx).map(|_| ())
}

/// The scopes to watch: each `--namespace`, or all namespaces.
fn scopes(namespaces: &[String]) -> Vec<Option<String>> {
    if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    }
}

fn log_started(settings: &Settings, server: &str) {
    let namespaces = if settings.namespaces.is_empty() {
        "all".to_owned()
    } else {
        settings.namespaces.join(",")
    };
    let leader_election = match &settings.lease {
        Some(l) => format!("on (lease {}/{} as {})", l.namespace, l.name, l.identity),
        None => "off".to_owned(),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        api_server = %server,
        namespaces = %namespaces,
        leader_election = %leader_election,
        metrics_addr = %settings.metrics_addr,
        "operator started"
    );
}

/// `rebalancer run`. Every start-up failure is returned as one line, before any controller starts.
pub async fn run(settings: Settings) -> Result<(), String> {
    let listener = server::bind(settings.metrics_addr).await?;
    let (client, api_server) = preflight::connect().await?;
    let checks = preflight::checks(&settings.namespaces, settings.lease.as_ref());
    preflight::run(&client, &api_server, &checks).await?;

    let metrics = Arc::new(metrics::Metrics::default());
    let (gained_tx, gained_rx) = watch::channel(0u64);
    let leadership = match &settings.lease {
        Some(_) => leader::Leadership::follower(),
        None => leader::Leadership::always(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        leadership.clone(),
        settings.instance.clone(),
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(server::serve(
        listener,
        metrics.clone(),
        leadership.clone(),
        ready.clone(),
    ));
    let lease_task = settings
        .lease
        .clone()
        .map(|lease| tokio::spawn(lease.run(client.clone(), leadership.clone(), gained_tx)));
    let (caches, loops): (Vec<_>, Vec<_>) = scopes(&settings.namespaces)
        .iter()
        .map(|ns| run_scope(&client, &ctx, ns.as_deref(), &gained_rx))
        .unzip();
    log_started(&settings, &api_server);
    tokio::join!(
        futures::future::join_all(loops),
        mark_ready_when_synced(caches, ready)
    );
    // The controllers stopped on SIGTERM/SIGINT: stop renewing, then hand the lease over.
    if let (Some(task), Some(lease)) = (lease_task, &settings.lease) {
        task.abort();
        if let Err(e) = lease.release(client.clone(), &leadership).await {
            tracing::warn!(error = %e, "could not release the lease");
        }
    }
    server.abort();
    tracing::info!("shut down");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use serde_json::json;

    fn store(groups: Vec<serde_json::Value>) -> Store<ConsumerGroup> {
        let (reader, mut writer) = reflector::store();
        for g in groups {
            let group: ConsumerGroup = serde_json::from_value(g).unwrap();
            writer.apply_watcher_event(&watcher::Event::Apply(group));
        }
        reader
    }

    fn group(
        ns: &str,
        name: &str,
        topics: &[&str],
        consumers: serde_json::Value,
    ) -> serde_json::Value {
        json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"topics": topics, "consumers": consumers}
        })
    }

    fn names(refs: Vec<ObjectRef<ConsumerGroup>>) -> Vec<String> {
        let mut n: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        n.sort();
        n
    }

    fn sample() -> Store<ConsumerGroup> {
        let deploy = json!({"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders"}});
        let sts = json!({"workloadRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "orders"}});
        let selector = json!({"selector": {"matchLabels": {"app": "pay"}}});
        store(vec![
            group("a", "by-deploy", &["orders", "payments"], deploy.clone()),
            group("a", "by-sts", &["orders"], sts),
            group("a", "by-label", &["payments"], selector),
            group("b", "other-ns", &["orders"], deploy),
        ])
    }

    #[test]
    fn a_topic_replans_the_groups_of_its_namespace_that_subscribe() {
        let topic: Topic = serde_json::from_value(json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": "orders", "namespace": "a"}, "spec": {"brokers": [{"name": "b", "readQueues": 1, "writeQueues": 1}]}
        }))
        .unwrap();
        assert_eq!(
            names(groups_of_topic(&sample(), &topic)),
            ["by-deploy", "by-sts"]
        );
    }

    #[test]
    fn a_pod_triggers_matching_selector_groups_and_workload_groups() {
        let pod = |labels: serde_json::Value| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": "p", "namespace": "a", "labels": labels}}),
            )
            .unwrap()
        };
        let s = sample();
        assert_eq!(
            names(groups_of_pod(&s, &pod(json!({"app": "pay"})))),
            ["by-deploy", "by-label", "by-sts"]
        );
        assert_eq!(
            names(groups_of_pod(&s, &pod(json!({"app": "other"})))),
            ["by-deploy", "by-sts"]
        );
        // A pod that left a selector group still carries its label: that group must clean it up.
        let leaver = pod(json!({"app": "other", consumers::GROUP_LABEL: "by-label"}));
        assert_eq!(
            names(groups_of_pod(&s, &leaver)),
            ["by-deploy", "by-label", "by-sts"]
        );
    }

    #[tokio::test]
    async fn leadership_gains_trigger_once_each_and_the_start_value_does_not() {
        let (tx, rx) = watch::channel(0u64);
        let mut gained = Box::pin(leadership_gained(rx));
        tx.send(1).unwrap();
        assert_eq!(gained.next().await, Some(()));
        tx.send(2).unwrap();
        drop(tx);
        assert_eq!(gained.next().await, Some(()));
        assert_eq!(gained.next().await, None);
    }

    struct Writers {
        groups: reflector::store::Writer<ConsumerGroup>,
        topics: reflector::store::Writer<Topic>,
        labelled_pods: reflector::store::Writer<Pod>,
        swept_groups: reflector::store::Writer<ConsumerGroup>,
    }

    fn caches() -> (Caches, Writers) {
        let (groups, groups_writer) = reflector::store();
        let (topics, topics_writer) = reflector::store();
        let (labelled_pods, pods_writer) = reflector::store();
        let (swept_groups, swept_writer) = reflector::store();
        let caches = Caches {
            groups,
            topics,
            labelled_pods,
            swept_groups,
        };
        let writers = Writers {
            groups: groups_writer,
            topics: topics_writer,
            labelled_pods: pods_writer,
            swept_groups: swept_writer,
        };
        (caches, writers)
    }

    #[tokio::test]
    async fn ready_only_once_every_cache_of_every_scope_has_synced() {
        let ((a, mut wa), (b, mut wb)) = (caches(), caches());
        let ready = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(mark_ready_when_synced(vec![a, b], ready.clone()));
        wa.groups.apply_watcher_event(&watcher::Event::InitDone);
        wa.topics.apply_watcher_event(&watcher::Event::InitDone);
        wa.labelled_pods
            .apply_watcher_event(&watcher::Event::InitDone);
        wa.swept_groups
            .apply_watcher_event(&watcher::Event::InitDone);
        wb.swept_groups
            .apply_watcher_event(&watcher::Event::InitDone);
        wb.groups.apply_watcher_event(&watcher::Event::InitDone);
        wb.topics.apply_watcher_event(&watcher::Event::InitDone);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!ready.load(Ordering::SeqCst));
        wb.labelled_pods
            .apply_watcher_event(&watcher::Event::InitDone);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(ready.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_controller_stopped_before_syncing_leaves_the_operator_unready() {
        let (a, writers) = caches();
        let ready = Arc::new(AtomicBool::new(false));
        drop(writers);
        tokio::time::timeout(
            Duration::from_secs(5),
            mark_ready_when_synced(vec![a], ready.clone()),
        )
        .await
        .unwrap();
        assert!(!ready.load(Ordering::SeqCst));
    }

    #[test]
    fn a_workload_triggers_only_the_groups_that_name_it() {
        let s = sample();
        assert_eq!(
            names(groups_of_workload(
                &s,
                "Deployment",
                Some("a".into()),
                "orders"
            )),
            ["by-deploy"]
        );
        assert_eq!(
            names(groups_of_workload(
                &s,
                "StatefulSet",
                Some("a".into()),
                "orders"
            )),
            ["by-sts"]
        );
        assert!(groups_of_workload(&s, "Deployment", Some("a".into()), "nope").is_empty());
    }
}
