//! The operator: watches Topics, ConsumerGroups, their pods and workloads, and keeps each
//! group's assignment in its status and on its pods.

pub mod conditions;
pub mod consumers;
pub mod context;
pub mod error;
pub mod group;
pub mod leader;
pub mod metrics;
pub mod server;
pub mod sweep;
pub mod topic;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
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

/// Runs the controllers for one namespace (or all) until shutdown.
async fn run_scope(
    client: Client,
    ctx: Arc<Context>,
    namespace: Option<String>,
    gained: watch::Receiver<u64>,
) {
    let ns = namespace.as_deref();
    let groups = Controller::new(
        scoped::<ConsumerGroup>(&client, ns),
        watcher::Config::default().any_semantic(),
    );
    let store = groups.store();
    let (s1, s2, s3, s4) = (store.clone(), store.clone(), store.clone(), store.clone());
    let relead = leadership_gained(gained.clone());
    let group_loop = groups
        .watches(
            scoped::<Topic>(&client, ns),
            watcher::Config::default().any_semantic(),
            move |t| groups_of_topic(&s1, &t),
        )
        .watches(
            scoped::<Pod>(&client, ns),
            watcher::Config::default().any_semantic(),
            move |p| groups_of_pod(&s2, &p),
        )
        .watches(
            scoped::<Deployment>(&client, ns),
            watcher::Config::default().any_semantic(),
            move |d| groups_of_workload(&s3, "Deployment", d.namespace(), &d.name_any()),
        )
        .watches(
            scoped::<StatefulSet>(&client, ns),
            watcher::Config::default().any_semantic(),
            move |d| groups_of_workload(&s4, "StatefulSet", d.namespace(), &d.name_any()),
        )
        .reconcile_all_on(relead)
        // A rollout changes many pods within a second: plan once for the burst.
        .with_config(
            kube::runtime::controller::Config::default().debounce(Duration::from_millis(500)),
        )
        .shutdown_on_signal()
        .run(group::reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "group reconcile");
            }
        });
    let topic_loop = Controller::new(
        scoped::<Topic>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .reconcile_all_on(leadership_gained(gained))
    .shutdown_on_signal()
    .run(topic::reconcile, error_policy, ctx.clone())
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "topic reconcile");
        }
    });
    // Only labelled pods are cached here: the consumers, not the whole cluster.
    let labelled = watcher::Config::default()
        .labels(consumers::GROUP_LABEL)
        .any_semantic();
    let sweep_ctx = Arc::new(sweep::SweepContext { ctx, groups: store });
    let sweep_loop = Controller::new(scoped::<Pod>(&client, ns), labelled)
        .shutdown_on_signal()
        .run(sweep::reconcile, error_policy, sweep_ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "orphan sweep");
            }
        });
    tokio::join!(group_loop, topic_loop, sweep_loop);
}

/// A stream that yields each time leadership is gained.
fn leadership_gained(rx: watch::Receiver<u64>) -> impl futures::Stream<Item = ()> + Send + 'static {
    tokio_stream::wrappers::WatchStream::from_changes(rx).map(|_| ())
}

/// `rebalancer run`.
pub async fn run(settings: Settings) -> Result<(), String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("cannot reach the Kubernetes API: {e}"))?;
    // Fail early, with a hint, when the CRDs are missing.
    let probe: Api<ConsumerGroup> = Api::all(client.clone());
    if let Err(e) = probe.list(&kube::api::ListParams::default().limit(1)).await {
        let scoped_ok = match settings.namespaces.first() {
            Some(ns) => Api::<ConsumerGroup>::namespaced(client.clone(), ns)
                .list(&kube::api::ListParams::default().limit(1))
                .await
                .is_ok(),
            None => false,
        };
        if !scoped_ok {
            return Err(format!(
                "cannot list ConsumerGroups ({e}); are the CRDs installed? kubectl apply -f crds/"
            ));
        }
    }
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
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = server::serve(
        settings.metrics_addr,
        metrics.clone(),
        leadership.clone(),
        ready.clone(),
    );
    let server = tokio::spawn(server);
    let lease_task = settings
        .lease
        .clone()
        .map(|lease| tokio::spawn(lease.run(client.clone(), leadership.clone(), gained_tx)));
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    let loops = scopes
        .into_iter()
        .map(|ns| run_scope(client.clone(), ctx.clone(), ns, gained_rx.clone()));
    futures::future::join_all(loops).await;
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
