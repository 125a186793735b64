//! What the reconcilers of one scope (a namespace, or all of them) read: the shared [`Context`],
//! the watch caches of that scope, and the index from events to groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use tokio::sync::OnceCell;

use super::consumers::NODE_ZONE_LABEL;
use super::context::Context;
use super::index::GroupIndex;
use super::pod_index::PodIndex;
use super::watch;
use crate::api::{ConsumerGroup, Topic};

/// One scope's caches.
#[derive(Clone)]
pub struct Scope {
    /// Shared context.
    pub ctx: Arc<Context>,
    /// ConsumerGroups (the group controller's own cache).
    pub groups: Store<ConsumerGroup>,
    /// Topics.
    pub topics: Store<Topic>,
    /// Pods, trimmed to what reconciles read.
    pub pods: Store<Pod>,
    /// The same pods by namespace and label pair.
    pub pod_index: Arc<PodIndex>,
    /// Deployments.
    pub deployments: Store<Deployment>,
    /// StatefulSets.
    pub statefulsets: Store<StatefulSet>,
    /// ReplicaSets.
    pub replicasets: Store<ReplicaSet>,
    /// Events → groups.
    pub index: Arc<GroupIndex>,
    /// True once every cache of the scope has its first full list.
    pub synced: tokio::sync::watch::Receiver<bool>,
}

impl Scope {
    /// Waits until every cache of the scope holds its first full list. kube's controller waits
    /// only for the groups' own cache; a group decided before the pods or Topics are listed would
    /// see no consumers or a missing topic, and write that (measured at 1,000 groups: up to 283
    /// groups written with 0 consumers, some stuck until the resync). Waits on the scope's sync
    /// flag, not on the stores: a kube store wakes only one of the tasks waiting for it.
    pub async fn synced(&self) -> bool {
        wait_synced(self.synced.clone()).await
    }
}

/// Waits until the flag is true; false when its sender is gone first (shutdown).
pub async fn wait_synced(mut flag: tokio::sync::watch::Receiver<bool>) -> bool {
    flag.wait_for(|synced| *synced).await.is_ok()
}

/// Zones of nodes, from a node cache started the first time a zone-aware group needs it (most
/// installations never do, and nodes are cluster-scoped: no cache, no permission needed).
pub struct NodeZones {
    client: Client,
    store: OnceCell<Option<Store<Node>>>,
}

/// How long the first zone lookup waits for the node cache.
const NODE_SYNC_TIMEOUT: Duration = Duration::from_secs(10);

impl NodeZones {
    /// A cache not started yet.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            store: OnceCell::new(),
        }
    }

    /// The zone of each named node (`None`: unknown node or no zone label). When the nodes
    /// cannot be read (no permission), every zone is unknown and the engine says so.
    pub async fn zones_of(
        &self,
        nodes: impl Iterator<Item = String>,
    ) -> BTreeMap<String, Option<String>> {
        let store = self
            .store
            .get_or_init(|| async {
                let (store, stream) = watch::reflect(
                    Api::<Node>::all(self.client.clone()),
                    watch::config(),
                    |n: &mut Node| {
                        n.managed_fields_mut().clear();
                        n.spec = None;
                        n.status = None;
                        n.annotations_mut().clear();
                    },
                    |_| {},
                );
                tokio::spawn(
                    watch::log_errors(stream, "Node").for_each(|_| futures::future::ready(())),
                );
                match tokio::time::timeout(NODE_SYNC_TIMEOUT, store.wait_until_ready()).await {
                    Ok(Ok(())) => Some(store),
                    _ => {
                        tracing::warn!("node zones unavailable (cannot list nodes); zone-aware strategies will report unknown zones");
                        None
                    }
                }
            })
            .await;
        nodes
            .map(|n| {
                let zone = store.as_ref().and_then(|s| {
                    s.get(&kube::runtime::reflector::ObjectRef::new(&n))
                        .and_then(|node| node.labels().get(NODE_ZONE_LABEL).cloned())
                });
                (n, zone)
            })
            .collect()
    }
}

/// Consecutive failures per object, for the error backoff.
#[derive(Default)]
pub struct Failures {
    counts: Mutex<HashMap<String, u32>>,
}

impl Failures {
    /// Counts one more failure of `key`; returns the count.
    pub fn record(&self, key: &str) -> u32 {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    /// Forgets the failures of `key` (it succeeded).
    pub fn clear(&self, key: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.remove(key);
    }
}
