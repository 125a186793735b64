//! The cached pods by namespace and label pair, so that a reconcile reads the pods its selector
//! can match instead of every cached pod.
//!
//! kube's `Store` answers only by name; a scan of `Store::state()` per reconcile is O(pods) and
//! made the cold start of 1,000 groups × 3 pods quadratic (6 million pod visits; it was the
//! operator's hottest function in `perf`). The index is fed by the pod watch after the store has
//! applied each event, so a name it returns is in the store, or was deleted an instant ago.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::runtime::watcher;

type Labels = BTreeMap<String, String>;

/// Pod names by namespace, and by namespace and label pair.
#[derive(Debug, Default)]
pub struct PodIndex {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Namespace → pod name → its labels.
    pods: HashMap<String, HashMap<String, Labels>>,
    /// Namespace → (label key, value) → pod names.
    by_label: HashMap<String, HashMap<(String, String), BTreeSet<String>>>,
    /// The pods of a re-list in progress (between `Init` and `InitDone`): the store keeps its
    /// previous content until `InitDone`, and so does the index.
    relist: Option<Vec<(String, String, Labels)>>,
}

impl Inner {
    fn insert(&mut self, ns: String, name: String, labels: Labels) {
        self.remove(&ns, &name);
        let by_label = self.by_label.entry(ns.clone()).or_default();
        for (k, v) in &labels {
            by_label
                .entry((k.clone(), v.clone()))
                .or_default()
                .insert(name.clone());
        }
        self.pods.entry(ns).or_default().insert(name, labels);
    }

    fn remove(&mut self, ns: &str, name: &str) {
        let Some(pods) = self.pods.get_mut(ns) else {
            return;
        };
        let Some(labels) = pods.remove(name) else {
            return;
        };
        if pods.is_empty() {
            self.pods.remove(ns);
        }
        if let Some(by_label) = self.by_label.get_mut(ns) {
            for pair in labels {
                if let Some(names) = by_label.get_mut(&pair) {
                    names.remove(name);
                    if names.is_empty() {
                        by_label.remove(&pair);
                    }
                }
            }
            if by_label.is_empty() {
                self.by_label.remove(ns);
            }
        }
    }
}

fn key(pod: &Pod) -> (String, String, Labels) {
    (
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.labels().clone(),
    )
}

impl PodIndex {
    /// Follows one event of the pod watch (after the store applied it).
    pub fn observe(&self, event: &watcher::Event<Pod>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(pod) => {
                let (ns, name, labels) = key(pod);
                inner.insert(ns, name, labels);
            }
            watcher::Event::Delete(pod) => {
                let (ns, name, _) = key(pod);
                inner.remove(&ns, &name);
            }
            watcher::Event::Init => inner.relist = Some(Vec::new()),
            watcher::Event::InitApply(pod) => inner.relist.get_or_insert_default().push(key(pod)),
            watcher::Event::InitDone => {
                let listed = inner.relist.take().unwrap_or_default();
                *inner = Inner::default();
                for (ns, name, labels) in listed {
                    inner.insert(ns, name, labels);
                }
            }
        }
    }

    /// Names of the pods of `ns` that can match a selector whose equality terms are `equal`:
    /// those carrying its rarest pair, or every pod of `ns` when it has none. The caller still
    /// applies the whole selector.
    pub fn candidates(&self, ns: &str, equal: &LabelSelector) -> Vec<String> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let pairs = equal.match_labels.iter().flatten();
        let rarest = pairs
            .map(|(k, v)| {
                inner
                    .by_label
                    .get(ns)
                    .and_then(|by| by.get(&(k.clone(), v.clone())))
            })
            .min_by_key(|names| names.map_or(0, BTreeSet::len));
        match rarest {
            Some(names) => names.into_iter().flatten().cloned().collect(),
            None => inner
                .pods
                .get(ns)
                .map(|pods| pods.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Names of the pods of `ns` labelled `key=value`.
    pub fn labelled(&self, ns: &str, key: &str, value: &str) -> Vec<String> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .by_label
            .get(ns)
            .and_then(|by| by.get(&(key.to_string(), value.to_string())))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Pods indexed (for tests and metrics).
    pub fn len(&self) -> usize {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.pods.values().map(HashMap::len).sum()
    }

    /// Whether no pod is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ns: &str, name: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels}
        }))
        .unwrap()
    }

    fn equal(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: None,
        }
    }

    fn sorted(mut names: Vec<String>) -> Vec<String> {
        names.sort();
        names
    }

    #[test]
    fn candidates_are_the_rarest_pair_within_the_namespace() {
        let index = PodIndex::default();
        for (ns, name, app, tier) in [
            ("a", "p1", "orders", "web"),
            ("a", "p2", "orders", "web"),
            ("a", "p3", "billing", "web"),
            ("b", "p1", "orders", "web"),
        ] {
            index.observe(&watcher::Event::Apply(pod(
                ns,
                name,
                json!({"app": app, "tier": tier}),
            )));
        }
        assert_eq!(
            sorted(index.candidates("a", &equal(&[("app", "orders"), ("tier", "web")]))),
            ["p1", "p2"]
        );
        assert_eq!(
            index.candidates("a", &equal(&[("app", "none")])),
            Vec::<String>::new()
        );
        // No equality term: every pod of the namespace, and only of it.
        assert_eq!(
            sorted(index.candidates("a", &LabelSelector::default())),
            ["p1", "p2", "p3"]
        );
        assert_eq!(index.labelled("b", "app", "orders"), ["p1"]);
    }

    #[test]
    fn relabel_and_delete_leave_no_stale_entry() {
        let index = PodIndex::default();
        index.observe(&watcher::Event::Apply(pod("a", "p1", json!({"app": "x"}))));
        index.observe(&watcher::Event::Apply(pod("a", "p1", json!({"app": "y"}))));
        assert!(index.labelled("a", "app", "x").is_empty());
        assert_eq!(index.labelled("a", "app", "y"), ["p1"]);
        index.observe(&watcher::Event::Delete(pod("a", "p1", json!({"app": "y"}))));
        assert!(index.is_empty());
        assert!(index.inner.read().unwrap().by_label.is_empty());
    }

    #[test]
    fn a_relist_replaces_the_index_only_when_done() {
        let index = PodIndex::default();
        index.observe(&watcher::Event::Apply(pod(
            "a",
            "gone",
            json!({"app": "x"}),
        )));
        index.observe(&watcher::Event::Init);
        index.observe(&watcher::Event::InitApply(pod(
            "a",
            "kept",
            json!({"app": "x"}),
        )));
        // Until InitDone the store still holds the old list, and so does the index.
        assert_eq!(index.labelled("a", "app", "x"), ["gone"]);
        index.observe(&watcher::Event::InitDone);
        assert_eq!(index.labelled("a", "app", "x"), ["kept"]);
        assert_eq!(index.len(), 1);
    }
}
