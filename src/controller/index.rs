//! Which groups an event concerns, without scanning every group: an index from Topics, workloads
//! and pod labels to the groups that read them.
//!
//! A group is indexed under its topics, its workload and the `matchLabels` pairs of the selector
//! its pods are found with (a workload's selector once a reconcile has read it). A pod event
//! concerns the groups indexed under any of its labels, the group its own label names, and the
//! groups whose pods cannot be indexed by label (a selector of expressions only): a superset,
//! which is enough, since a reconcile that changes nothing writes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::RwLock;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::core::{Expression, Selector};
use kube::runtime::reflector::ObjectRef;

use super::consumers::GROUP_LABEL;
use crate::api::ConsumerGroup;

type GroupRef = ObjectRef<ConsumerGroup>;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Topic {
        ns: String,
        name: String,
    },
    Workload {
        ns: String,
        kind: String,
        name: String,
    },
    Label {
        ns: String,
        key: String,
        value: String,
    },
    /// Pods of the namespace that no label finds.
    Unindexed {
        ns: String,
    },
}

#[derive(Default, Debug)]
struct Entry {
    /// From the spec: topics and workload.
    spec: Vec<Key>,
    /// Where its pods are found.
    pods: Vec<Key>,
    /// The workload the `pods` keys were resolved for (a changed workloadRef voids them).
    resolved_for: Option<Key>,
}

/// The index; shared by the watch mappers (readers) and the group stream and reconciles (writers).
#[derive(Default, Debug)]
pub struct GroupIndex {
    inner: RwLock<Inner>,
}

#[derive(Default, Debug)]
struct Inner {
    entries: HashMap<GroupRef, Entry>,
    by: HashMap<Key, HashSet<GroupRef>>,
    /// Groups seen since the current (re-)list began.
    listed: HashSet<GroupRef>,
    /// A (re-)list is under way.
    listing: bool,
}

impl Inner {
    fn unlink(&mut self, group: &GroupRef) {
        if let Some(entry) = self.entries.get(group) {
            for key in entry.spec.iter().chain(&entry.pods) {
                if let Some(set) = self.by.get_mut(key) {
                    set.remove(group);
                    if set.is_empty() {
                        self.by.remove(key);
                    }
                }
            }
        }
    }

    fn link(&mut self, group: &GroupRef) {
        if let Some(entry) = self.entries.get(group) {
            let keys: Vec<Key> = entry.spec.iter().chain(&entry.pods).cloned().collect();
            for key in keys {
                self.by.entry(key).or_default().insert(group.clone());
            }
        }
    }

    fn get(&self, key: &Key) -> impl Iterator<Item = &GroupRef> {
        self.by.get(key).into_iter().flatten()
    }
}

/// `matchLabels` pairs of a selector as keys, or the namespace fallback when it has none.
fn label_keys(ns: &str, selector: Option<&LabelSelector>) -> Vec<Key> {
    let pairs: Vec<Key> = selector
        .and_then(|s| s.match_labels.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, v)| Key::Label {
            ns: ns.to_string(),
            key: k.clone(),
            value: v.clone(),
        })
        .collect();
    if pairs.is_empty() {
        vec![Key::Unindexed { ns: ns.to_string() }]
    } else {
        pairs
    }
}

/// Equality terms (`k=v`, `k==v`) of a selector in its string form, as a `LabelSelector`.
pub fn selector_from_string(selector: &str) -> LabelSelector {
    let match_labels: BTreeMap<String, String> = split_terms(selector)
        .filter_map(|term| {
            let (k, v) = term.split_once("==").or_else(|| term.split_once('='))?;
            (!k.ends_with('!')).then(|| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    LabelSelector {
        match_labels: (!match_labels.is_empty()).then_some(match_labels),
        match_expressions: None,
    }
}

/// Parses a selector in its string form (a scale subresource's `status.selector`): `k=v`,
/// `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
pub fn parse_selector(text: &str) -> Result<Selector, String> {
    let mut expressions = Vec::new();
    for term in split_terms(text) {
        let set = |rest: &str| -> Result<BTreeSet<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("bad set in {term:?}"))?;
            Ok(inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect())
        };
        let expression = if let Some((k, v)) = term.split_once("!=") {
            Expression::NotEqual(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            Expression::Equal(k.trim().into(), v.trim().into())
        } else if let Some((k, rest)) = term.split_once(" notin ") {
            Expression::NotIn(k.trim().into(), set(rest)?)
        } else if let Some((k, rest)) = term.split_once(" in ") {
            Expression::In(k.trim().into(), set(rest)?)
        } else if let Some(k) = term.strip_prefix('!') {
            Expression::DoesNotExist(k.trim().into())
        } else if !term.contains(|c: char| c.is_whitespace() || "()".contains(c)) {
            Expression::Exists(term.into())
        } else {
            return Err(format!("cannot parse selector term {term:?}"));
        };
        expressions.push(expression);
    }
    Ok(expressions.into_iter().collect())
}

/// Top-level terms of a selector string (commas inside `in (a,b)` do not split).
fn split_terms(s: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0i32;
    let mut start = 0;
    let mut terms = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms.into_iter().map(str::trim).filter(|t| !t.is_empty())
}

impl GroupIndex {
    /// Indexes (or re-indexes) a group from its spec.
    pub fn upsert(&self, group: &ConsumerGroup) {
        let Some(ns) = group.namespace() else {
            return;
        };
        let key = ObjectRef::from_obj(group);
        let mut spec: Vec<Key> = group
            .spec
            .topics
            .iter()
            .map(|t| Key::Topic {
                ns: ns.clone(),
                name: t.clone(),
            })
            .collect();
        let consumers = group.spec.consumers.as_ref();
        let workload = consumers
            .and_then(|c| c.workload_ref.as_ref())
            .map(|w| Key::Workload {
                ns: ns.clone(),
                kind: w.kind.clone(),
                name: w.name.clone(),
            });
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let previous = inner.entries.get(&key);
        let (pods, resolved_for) = match &workload {
            // Keep the pods' keys while the workload is the same; they are refreshed on reconcile.
            Some(w) if previous.is_some_and(|p| p.resolved_for.as_ref() == Some(w)) => {
                let p = previous.unwrap();
                (p.pods.clone(), p.resolved_for.clone())
            }
            Some(_) => (vec![Key::Unindexed { ns: ns.clone() }], None),
            None => (
                label_keys(&ns, consumers.and_then(|c| c.selector.as_ref())),
                None,
            ),
        };
        spec.extend(workload);
        if inner.listing {
            inner.listed.insert(key.clone());
        }
        inner.unlink(&key);
        inner.entries.insert(
            key.clone(),
            Entry {
                spec,
                pods,
                resolved_for,
            },
        );
        inner.link(&key);
    }

    /// Records the selector a reconcile resolved from the group's workload.
    pub fn resolved(&self, group: &ConsumerGroup, selector: &LabelSelector) {
        let Some(ns) = group.namespace() else {
            return;
        };
        let Some(w) = group
            .spec
            .consumers
            .as_ref()
            .and_then(|c| c.workload_ref.as_ref())
        else {
            return;
        };
        let workload = Key::Workload {
            ns: ns.clone(),
            kind: w.kind.clone(),
            name: w.name.clone(),
        };
        let key = ObjectRef::from_obj(group);
        let pods = label_keys(&ns, Some(selector));
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner
            .entries
            .get(&key)
            .is_some_and(|e| e.pods == pods && e.resolved_for.as_ref() == Some(&workload))
        {
            return;
        }
        inner.unlink(&key);
        let entry = inner.entries.entry(key.clone()).or_default();
        entry.pods = pods;
        entry.resolved_for = Some(workload);
        inner.link(&key);
    }

    /// Forgets a deleted group.
    pub fn remove(&self, group: &ConsumerGroup) {
        let key = ObjectRef::from_obj(group);
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.unlink(&key);
        inner.entries.remove(&key);
    }

    /// Follows a group watch: every listed or changed group is indexed, a deleted one forgotten,
    /// and at the end of a (re-)list the groups that were not in it are forgotten too.
    pub fn observe(&self, event: &kube::runtime::watcher::Event<ConsumerGroup>) {
        use kube::runtime::watcher::Event;
        match event {
            Event::Apply(g) | Event::InitApply(g) => self.upsert(g),
            Event::Delete(g) => self.remove(g),
            Event::Init => {
                let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
                inner.listed.clear();
                inner.listing = true;
            }
            Event::InitDone => {
                let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
                let gone: Vec<GroupRef> = inner
                    .entries
                    .keys()
                    .filter(|k| !inner.listed.contains(*k))
                    .cloned()
                    .collect();
                for group in gone {
                    inner.unlink(&group);
                    inner.entries.remove(&group);
                }
                inner.listed.clear();
                inner.listing = false;
            }
        }
    }

    /// Groups subscribed to Topic `name` of `ns`.
    pub fn groups_of_topic(&self, ns: &str, name: &str) -> Vec<GroupRef> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .get(&Key::Topic {
                ns: ns.to_string(),
                name: name.to_string(),
            })
            .cloned()
            .collect()
    }

    /// Groups whose `workloadRef` names this workload.
    pub fn groups_of_workload(&self, ns: &str, kind: &str, name: &str) -> Vec<GroupRef> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .get(&Key::Workload {
                ns: ns.to_string(),
                kind: kind.to_string(),
                name: name.to_string(),
            })
            .cloned()
            .collect()
    }

    /// Groups a pod event may concern.
    pub fn groups_of_pod(&self, pod: &Pod) -> Vec<GroupRef> {
        let Some(ns) = pod.namespace() else {
            return Vec::new();
        };
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out: HashSet<GroupRef> = inner
            .get(&Key::Unindexed { ns: ns.clone() })
            .cloned()
            .collect();
        for (k, v) in pod.labels() {
            out.extend(
                inner
                    .get(&Key::Label {
                        ns: ns.clone(),
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .cloned(),
            );
        }
        // Its own group, which must take the label off a pod that left it.
        if let Some(group) = pod.labels().get(GROUP_LABEL) {
            out.insert(ObjectRef::new(group).within(&ns));
        }
        out.into_iter().collect()
    }

    /// Number of indexed groups (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    /// Whether no group is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(ns: &str, name: &str, topics: &[&str], consumers: serde_json::Value) -> ConsumerGroup {
        serde_json::from_value(json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"topics": topics, "consumers": consumers}
        }))
        .unwrap()
    }

    fn pod(ns: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": ns, "labels": labels}}),
        )
        .unwrap()
    }

    fn names(refs: Vec<GroupRef>) -> Vec<String> {
        let mut n: Vec<String> = refs.into_iter().map(|r| r.name).collect();
        n.sort();
        n
    }

    fn sample() -> (GroupIndex, ConsumerGroup) {
        let index = GroupIndex::default();
        let deploy = json!({"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders"}});
        let by_deploy = group("a", "by-deploy", &["orders", "payments"], deploy.clone());
        index.upsert(&by_deploy);
        index.upsert(&group(
            "a",
            "by-label",
            &["payments"],
            json!({"selector": {"matchLabels": {"app": "pay"}}}),
        ));
        index.upsert(&group(
            "a",
            "by-expression",
            &["payments"],
            json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}}),
        ));
        index.upsert(&group("b", "other-ns", &["orders"], deploy));
        (index, by_deploy)
    }

    #[test]
    fn topics_and_workloads_map_to_the_groups_of_their_namespace() {
        let (index, _) = sample();
        assert_eq!(names(index.groups_of_topic("a", "orders")), ["by-deploy"]);
        assert_eq!(
            names(index.groups_of_topic("a", "payments")),
            ["by-deploy", "by-expression", "by-label"]
        );
        assert_eq!(
            names(index.groups_of_workload("a", "Deployment", "orders")),
            ["by-deploy"]
        );
        assert!(
            index
                .groups_of_workload("a", "StatefulSet", "orders")
                .is_empty()
        );
    }

    #[test]
    fn pods_map_by_label_once_a_workload_is_resolved() {
        let (index, by_deploy) = sample();
        // Unresolved workload groups and expression selectors see every pod of the namespace.
        assert_eq!(
            names(index.groups_of_pod(&pod("a", json!({"app": "other"})))),
            ["by-deploy", "by-expression"]
        );
        index.resolved(
            &by_deploy,
            &selector_from_string("app=orders,tier in (a,b)"),
        );
        assert_eq!(
            names(index.groups_of_pod(&pod("a", json!({"app": "other"})))),
            ["by-expression"]
        );
        assert_eq!(
            names(index.groups_of_pod(&pod("a", json!({"app": "orders"})))),
            ["by-deploy", "by-expression"]
        );
        assert_eq!(
            names(index.groups_of_pod(&pod("a", json!({"app": "pay"})))),
            ["by-expression", "by-label"]
        );
        // A spec update that keeps the workload keeps the resolved keys.
        index.upsert(&by_deploy);
        assert_eq!(
            names(index.groups_of_pod(&pod("a", json!({"app": "other"})))),
            ["by-expression"]
        );
    }

    #[test]
    fn a_labelled_pod_concerns_its_group_and_removal_forgets() {
        let (index, by_deploy) = sample();
        let leaver = pod("b", json!({GROUP_LABEL: "gone"}));
        assert_eq!(names(index.groups_of_pod(&leaver)), ["gone", "other-ns"]);
        index.remove(&by_deploy);
        assert_eq!(
            names(index.groups_of_topic("a", "orders")),
            Vec::<String>::new()
        );
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn a_watch_indexes_listed_groups_and_a_relist_forgets_the_gone() {
        use kube::runtime::watcher::Event;
        let index = GroupIndex::default();
        let selector = json!({"selector": {"matchLabels": {"app": "x"}}});
        let a = group("n", "a", &["t"], selector.clone());
        let b = group("n", "b", &["t"], selector);
        // A (re-)list: the store still holds the previous list while its objects arrive.
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(a.clone()));
        index.observe(&Event::InitApply(b.clone()));
        index.observe(&Event::InitDone);
        assert_eq!(names(index.groups_of_topic("n", "t")), ["a", "b"]);
        // b was deleted while the watch was down: the next list no longer has it.
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(a.clone()));
        index.observe(&Event::InitDone);
        assert_eq!(names(index.groups_of_topic("n", "t")), ["a"]);
        index.observe(&Event::Delete(a));
        assert!(index.is_empty());
        index.observe(&Event::Apply(b));
        assert_eq!(names(index.groups_of_topic("n", "t")), ["b"]);
    }

    #[test]
    fn selector_strings_parse_into_exact_selectors() {
        use kube::core::SelectorExt;
        let s = parse_selector("app=x,tier in (a, b),!legacy,env!=prod").unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(s.matches(&labels(&[("app", "x"), ("tier", "b")])));
        assert!(!s.matches(&labels(&[("app", "x"), ("tier", "c")])));
        assert!(!s.matches(&labels(&[("app", "x"), ("tier", "a"), ("legacy", "1")])));
        assert!(!s.matches(&labels(&[("app", "x"), ("tier", "a"), ("env", "prod")])));
        assert!(parse_selector("a in b").is_err());
    }

    #[test]
    fn selector_strings_give_their_equality_terms() {
        let s = selector_from_string("app=x, tier==web, env!=prod, zone in (a,b)");
        let labels = s.match_labels.unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(labels["app"], "x");
        assert_eq!(labels["tier"], "web");
    }
}
