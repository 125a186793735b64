//! End-to-end tests against a real cluster in which the operator is already installed
//! (`hack/e2e-kind.sh` creates a kind cluster, installs the chart and then runs
//! `REBALANCER_E2E=1 cargo test --test e2e -- --nocapture --test-threads=1`).
//!
//! Without `REBALANCER_E2E=1`, or when no kubeconfig can be loaded, every test prints why it is
//! skipped and passes: that is how `cargo test` runs them where there is no cluster.
//!
//! Each test works in a namespace of its own (`rb-e2e-<test>-<random>`, labelled
//! `rebalancer.dev/e2e=true`) that is deleted at the end, whether the test passed or not
//! (`REBALANCER_E2E_KEEP_NAMESPACE=1` keeps the namespace of a failed test for inspection; leftovers
//! of an interrupted run go with `kubectl delete ns -l rebalancer.dev/e2e=true`).
//! Nothing sleeps for a fixed time: every wait is a watch (`await_condition`) or a poll of a
//! predicate, bounded by a deadline (`REBALANCER_E2E_TIMEOUT_SECS`, default 120 s), and a timeout
//! reports the last state seen.
//!
//! Environment:
//! - `REBALANCER_E2E=1`: run the tests.
//! - `REBALANCER_E2E_NAMESPACE` (default `rebalancer-system`), `REBALANCER_E2E_DEPLOYMENT`
//!   (default `rebalancer`), `REBALANCER_E2E_LEASE` (default `rebalancer-leader`): where the
//!   operator runs, for the restart test and for reading the leader's metrics.
//! - `REBALANCER_E2E_TIMEOUT_SECS`: deadline of each wait.
//! - `REBALANCER_E2E_KEEP_NAMESPACE=1`: keep the namespace of a failed test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{FutureExt, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::conditions::is_deleted;
use kube::runtime::wait::await_condition;
use kube::{Client, Resource, ResourceExt};
use rebalancer::api::{ConsumerGroup, QueueRange, Topic};
// Ready and not terminating: the operator's own definition of a live pod.
use rebalancer::controller::consumers::is_consumer;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

// Shared with the envtest suites.
#[path = "../support/queues.rs"]
#[allow(dead_code)]
mod queues;
use queues::{QueueId, all_queues, expand, status_json};

/// Pod label naming the group a pod consumes for (the operator's contract).
const GROUP_LABEL: &str = "rebalancer.dev/consumer-group";
/// Pod annotation holding the pod's queues as JSON (the operator's contract).
const QUEUES_ANNOTATION: &str = "rebalancer.dev/queues";
/// Label of every namespace the suite creates.
const E2E_LABEL: &str = "rebalancer.dev/e2e";
/// A label the operator does not care about, used to cause a reconcile.
const TOUCH_LABEL: &str = "e2e.rebalancer.dev/touched";
/// Annotation `kubectl rollout restart` sets on a pod template.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Field manager of the suite's writes.
const FIELD_MANAGER: &str = "rebalancer-e2e";
/// How long the no-op test watches the group when the operator's metrics cannot be read.
const QUIET_WINDOW: Duration = Duration::from_secs(20);
/// Interval of polling loops.
const POLL: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Deadline of every wait.
fn deadline() -> Duration {
    let secs = std::env::var("REBALANCER_E2E_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// A random lowercase hex suffix for namespace names.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() & 0xffff_ffff)
}

/// One test's cluster access and temporary namespace.
#[derive(Clone)]
struct Env {
    client: Client,
    ns: String,
}

/// Runs `body` in a fresh namespace when the suite is enabled, and always deletes the namespace
/// afterwards, also when `body` panics (the panic is re-raised after the clean-up).
async fn e2e<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    match std::env::var("REBALANCER_E2E") {
        Ok(v) if v == "1" => {}
        other => {
            let got = other.map(|v| format!(" (it is {v:?})")).unwrap_or_default();
            println!(
                "SKIP e2e: REBALANCER_E2E is not set to 1{got}; `{test}` needs a cluster with the operator installed: run hack/e2e-kind.sh"
            );
            return;
        }
    }
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            println!("SKIP e2e: cannot load a kubeconfig for `{test}`: {e}");
            return;
        }
    };
    let ns = format!("rb-e2e-{}-{}", test.replace('_', "-"), random_suffix());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object: Namespace = from_json(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns, "labels": {E2E_LABEL: "true", "rebalancer.dev/e2e-test": test}},
    }));
    let created = namespaces
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("cannot create namespace {ns}: {e}"));
    let uid = created.uid().unwrap_or_default();
    println!("=== {test}: namespace {ns}");

    let env = Env {
        client: client.clone(),
        ns: ns.clone(),
    };
    let outcome = AssertUnwindSafe(body(env)).catch_unwind().await;

    let keep =
        outcome.is_err() && std::env::var("REBALANCER_E2E_KEEP_NAMESPACE").is_ok_and(|v| v == "1");
    if keep {
        println!("=== {test}: failed; namespace {ns} kept (REBALANCER_E2E_KEEP_NAMESPACE=1)");
    } else {
        delete_namespace(&namespaces, &ns, &uid).await;
    }
    match outcome {
        Ok(()) => println!("=== {test}: passed"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Deletes a namespace and waits (bounded) until it is gone, so that the next test starts with
/// the cluster as it was. A slow deletion is reported, not fatal.
async fn delete_namespace(api: &Api<Namespace>, ns: &str, uid: &str) {
    match api.delete(ns, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return,
        Err(e) => {
            eprintln!("WARN cannot delete namespace {ns}: {e}; delete it by hand");
            return;
        }
    }
    let gone = tokio::time::timeout(
        deadline(),
        await_condition(api.clone(), ns, is_deleted(uid)),
    );
    match gone.await {
        Ok(Ok(_)) => println!("    namespace {ns} deleted"),
        Ok(Err(e)) => eprintln!("WARN waiting for namespace {ns} to go: {e}"),
        Err(_) => eprintln!(
            "WARN namespace {ns} still terminating after {:?}; it goes away on its own",
            deadline()
        ),
    }
}

/// Polls `probe` until it returns `Ok`, at most [`deadline`]; `Err` carries the state seen, which
/// is what a timeout reports.
async fn eventually<T, Fut>(what: &str, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    let limit = deadline();
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(POLL);
    let mut last = String::from("(never probed)");
    while started.elapsed() < limit {
        ticks.tick().await;
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, probe()).await {
            Ok(Ok(v)) => {
                println!("    ok after {:.1?}: {what}", started.elapsed());
                return v;
            }
            Ok(Err(state)) => last = state,
            Err(_) => last = format!("the last probe did not answer ({last})"),
        }
    }
    panic!("timed out after {limit:?} waiting for {what}; last seen: {last}");
}

/// Patch parameters of every write of the suite.
fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("test object does not parse: {e}"))
}

/// The pod template of every consumer: a busybox that sleeps and is always ready, under the
/// restricted Pod Security profile.
fn consumer_template(app: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}
            },
            "containers": [{
                "name": "consumer",
                "image": "busybox:1.36",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
                "readinessProbe": {
                    "exec": {"command": ["true"]},
                    "periodSeconds": 1,
                    "failureThreshold": 1
                },
                "resources": {
                    "requests": {"cpu": "5m", "memory": "8Mi"},
                    "limits": {"memory": "16Mi"}
                },
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "runAsNonRoot": true,
                    "runAsUser": 65532,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"}
                }
            }]
        }
    })
}

fn sorted(mut v: Vec<QueueRange>) -> Vec<QueueRange> {
    v.sort();
    v
}

fn condition<'a>(group: &'a ConsumerGroup, type_: &str) -> Option<&'a Condition> {
    group
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

fn condition_is(group: &ConsumerGroup, type_: &str, status: &str) -> bool {
    condition(group, type_).is_some_and(|c| c.status == status)
}

/// The status describes the current spec, `consumers` consumers, `replicas` desired replicas,
/// and `Ready=True`.
fn settled(group: &ConsumerGroup, consumers: u32, replicas: i32) -> bool {
    let Some(status) = group.status.as_ref() else {
        return false;
    };
    status.observed_generation == group.metadata.generation
        && status.desired_replicas == Some(replicas)
        && status.allocation.consumers == consumers
        && status.allocation.assignments.len() == consumers as usize
        && condition_is(group, "Ready", "True")
}

fn pod_summary(pod: &Pod) -> String {
    format!(
        "{}(ready={}, terminating={}, {}={:?}, {}={:?})",
        pod.name_any(),
        is_consumer(pod),
        pod.metadata.deletion_timestamp.is_some(),
        GROUP_LABEL,
        pod.labels().get(GROUP_LABEL),
        QUEUES_ANNOTATION,
        pod.annotations().get(QUEUES_ANNOTATION),
    )
}

impl Env {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create<K>(&self, object: Value) -> K
    where
        K: Resource<Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + Debug,
        <K as Resource>::DynamicType: Default,
    {
        let object: K = from_json(object);
        let name = object.meta().name.clone().unwrap_or_default();
        self.api::<K>()
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("cannot create {name} in {}: {e}", self.ns))
    }

    async fn create_topic(&self, name: &str, brokers: &[(&str, u32)]) -> Topic {
        let brokers: Vec<Value> = brokers
            .iter()
            .map(|(b, n)| json!({"name": b, "readQueues": n, "writeQueues": n}))
            .collect();
        self.create(json!({
            "apiVersion": "rebalancer.dev/v1alpha1",
            "kind": "Topic",
            "metadata": {"name": name},
            "spec": {"brokers": brokers},
        }))
        .await
    }

    async fn create_deployment(&self, name: &str, replicas: i32) -> Deployment {
        self.create(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": consumer_template(name),
            },
        }))
        .await
    }

    async fn create_statefulset(&self, name: &str, replicas: i32) -> StatefulSet {
        self.create(json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": name}},
                "template": consumer_template(name),
            },
        }))
        .await
    }

    async fn create_group(
        &self,
        name: &str,
        topics: &[&str],
        strategy: &str,
        kind: &str,
        workload: &str,
    ) -> ConsumerGroup {
        self.create(json!({
            "apiVersion": "rebalancer.dev/v1alpha1",
            "kind": "ConsumerGroup",
            "metadata": {"name": name},
            "spec": {
                "topics": topics,
                "messageModel": "Clustering",
                "strategy": strategy,
                "consumers": {"workloadRef": {"apiVersion": "apps/v1", "kind": kind, "name": workload}},
            },
        }))
        .await
    }

    /// Sets `spec.replicas` of a Deployment or StatefulSet.
    async fn scale<K>(&self, name: &str, replicas: i32)
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
        <K as Resource>::DynamicType: Default,
    {
        println!("    scaling {name} to {replicas}");
        self.api::<K>()
            .patch(
                name,
                &patch_params(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .unwrap_or_else(|e| panic!("cannot scale {name} to {replicas}: {e}"));
    }

    /// What a timeout prints: the group's status and every pod's membership.
    async fn describe(&self, group: &str) -> String {
        let status = match self.api::<ConsumerGroup>().get_opt(group).await {
            Ok(Some(g)) => status_json(&g),
            Ok(None) => "<group not found>".into(),
            Err(e) => format!("<cannot read the group: {e}>"),
        };
        let pods = match self.api::<Pod>().list(&ListParams::default()).await {
            Ok(list) => list
                .items
                .iter()
                .map(pod_summary)
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("<cannot list pods: {e}>"),
        };
        format!("status {status}; pods [{pods}]")
    }

    /// Watches the group until `pred` holds, at most [`deadline`].
    async fn wait_group(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&ConsumerGroup) -> bool,
    ) -> ConsumerGroup {
        let started = tokio::time::Instant::now();
        let cond = move |g: Option<&ConsumerGroup>| g.is_some_and(&pred);
        let waited = tokio::time::timeout(
            deadline(),
            await_condition(self.api::<ConsumerGroup>(), name, cond),
        )
        .await;
        match waited {
            Ok(Ok(Some(group))) => {
                println!(
                    "    ok after {:.1?}: group {name}: {what}",
                    started.elapsed()
                );
                group
            }
            Ok(Ok(None)) => panic!("group {name} disappeared while waiting for {what}"),
            Ok(Err(e)) => panic!("watching group {name} for {what} failed: {e}"),
            Err(_) => panic!(
                "timed out after {:?} waiting for group {name}: {what}; last seen: {}",
                deadline(),
                self.describe(name).await
            ),
        }
    }

    /// The group's status and the pods agree, and the assignment is a partition of `expected`:
    /// - exactly the consumers of the status carry the group label and the queues annotation, and
    ///   each annotation parses and equals the status entry (pods that left carry neither);
    /// - every queue of `expected` is owned by exactly one consumer, and nothing else is owned;
    /// - `idle`/`idleConsumers` match the consumers without queues;
    /// - the split is balanced (sizes differ by at most one), as Averagely and Sticky promise.
    async fn check_assignment(
        &self,
        group: &str,
        expected: &BTreeSet<QueueId>,
    ) -> Result<ConsumerGroup, String> {
        let g = self
            .api::<ConsumerGroup>()
            .get(group)
            .await
            .map_err(|e| format!("cannot read group {group}: {e}"))?;
        let status = g.status.as_ref().ok_or("the group has no status yet")?;
        let a = &status.allocation;
        let state = || status_json(&g);
        if a.assignments.len() != a.consumers as usize {
            return Err(format!(
                "consumers={} but {} assignments: {}",
                a.consumers,
                a.assignments.len(),
                state()
            ));
        }
        let in_status: BTreeMap<String, Vec<QueueRange>> = a
            .assignments
            .iter()
            .map(|c| (c.consumer.clone(), sorted(c.queues.clone())))
            .collect();

        let pods = self
            .api::<Pod>()
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("cannot list pods: {e}"))?;
        let mut on_pods: BTreeMap<String, Vec<QueueRange>> = BTreeMap::new();
        for pod in &pods.items {
            let name = pod.name_any();
            let label = pod.labels().get(GROUP_LABEL);
            let annotation = pod.annotations().get(QUEUES_ANNOTATION);
            match (label, annotation) {
                (None, None) => {}
                (Some(l), Some(value)) if l == group => {
                    let queues: Vec<QueueRange> = serde_json::from_str(value).map_err(|e| {
                        format!("pod {name}: annotation {QUEUES_ANNOTATION}={value:?} does not parse: {e}")
                    })?;
                    on_pods.insert(name, sorted(queues));
                }
                _ => {
                    return Err(format!(
                        "pod {name} has a partial or foreign membership: {}",
                        pod_summary(pod)
                    ));
                }
            }
        }
        if on_pods != in_status {
            let pods: Vec<String> = pods.items.iter().map(pod_summary).collect();
            return Err(format!(
                "pod annotations {on_pods:?} differ from the status {in_status:?}; pods: {pods:?}"
            ));
        }

        let mut owners: BTreeMap<QueueId, Vec<&str>> = BTreeMap::new();
        for (consumer, queues) in &in_status {
            for q in expand(queues)? {
                owners.entry(q).or_default().push(consumer);
            }
        }
        let shared: Vec<_> = owners.iter().filter(|(_, o)| o.len() > 1).collect();
        if !shared.is_empty() {
            return Err(format!(
                "queues with several owners: {shared:?}; {}",
                state()
            ));
        }
        let owned: BTreeSet<QueueId> = owners.keys().cloned().collect();
        if &owned != expected {
            let missing: Vec<_> = expected.difference(&owned).collect();
            let extra: Vec<_> = owned.difference(expected).collect();
            return Err(format!(
                "unowned queues {missing:?}, unknown queues {extra:?}; {}",
                state()
            ));
        }
        if a.queues as usize != expected.len() {
            return Err(format!(
                "queues={} but {} expected; {}",
                a.queues,
                expected.len(),
                state()
            ));
        }

        let idle: BTreeSet<&str> = in_status
            .iter()
            .filter(|(_, q)| q.is_empty())
            .map(|(c, _)| c.as_str())
            .collect();
        let reported: BTreeSet<&str> = a.idle_consumers.iter().map(String::as_str).collect();
        if a.idle as usize != idle.len() || reported != idle {
            return Err(format!(
                "idle={} idleConsumers={reported:?}, but consumers without queues are {idle:?}",
                a.idle
            ));
        }

        let sizes: Vec<usize> = in_status
            .values()
            .map(|q| expand(q).map(|s| s.len()))
            .collect::<Result<_, _>>()?;
        if let (Some(min), Some(max)) = (sizes.iter().min(), sizes.iter().max())
            && max - min > 1
        {
            return Err(format!("unbalanced split {sizes:?}; {}", state()));
        }
        Ok(g)
    }

    /// [`Env::check_assignment`] until it holds.
    async fn assignment_settles(&self, group: &str, expected: &BTreeSet<QueueId>) -> ConsumerGroup {
        let what = format!("pods of {group} annotated exactly as its status");
        eventually(&what, || self.check_assignment(group, expected)).await
    }

    /// Events (`events.k8s.io/v1`) of the namespace about `kind`/`name` with this type and reason.
    async fn events_about(
        &self,
        kind: &str,
        name: &str,
        type_: &str,
        reason: &str,
    ) -> Result<Vec<Event>, String> {
        let list = self
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("cannot list events: {e}"))?;
        let all: Vec<String> = list
            .items
            .iter()
            .map(|e| {
                let r = e.regarding.as_ref();
                format!(
                    "{:?} {:?} {:?}/{:?}: {:?}",
                    e.type_,
                    e.reason,
                    r.and_then(|r| r.kind.as_deref()),
                    r.and_then(|r| r.name.as_deref()),
                    e.note
                )
            })
            .collect();
        let found: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| {
                e.type_.as_deref() == Some(type_)
                    && e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().is_some_and(|r| {
                        r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                    })
            })
            .collect();
        if found.is_empty() {
            Err(format!(
                "no {type_} {reason} event about {kind} {name}; events: {all:?}"
            ))
        } else {
            Ok(found)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The operator, for the restart test and for observing reconciles
// ---------------------------------------------------------------------------------------------

/// Where the operator runs.
struct Operator {
    client: Client,
    namespace: String,
    deployment: String,
    lease: String,
}

impl Operator {
    fn from_env(client: &Client) -> Self {
        let var = |k: &str, default: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        Self {
            client: client.clone(),
            namespace: var("REBALANCER_E2E_NAMESPACE", "rebalancer-system"),
            deployment: var("REBALANCER_E2E_DEPLOYMENT", "rebalancer"),
            lease: var("REBALANCER_E2E_LEASE", "rebalancer-leader"),
        }
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn get_deployment(&self) -> Result<Deployment, String> {
        self.deployments().get(&self.deployment).await.map_err(|e| {
            format!(
                "cannot read the operator Deployment {}/{}: {e}",
                self.namespace, self.deployment
            )
        })
    }

    /// The operator's pods that are not terminating.
    async fn pods(&self) -> Result<Vec<Pod>, String> {
        let deployment = self.get_deployment().await?;
        let labels = deployment
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone())
            .unwrap_or_default();
        if labels.is_empty() {
            return Err("the operator Deployment has no matchLabels".into());
        }
        let selector = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let pods = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| format!("cannot list the operator pods: {e}"))?;
        Ok(pods
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect())
    }

    /// The ready pod that holds the lease (or the only pod, without leader election).
    async fn leader(&self) -> Result<Pod, String> {
        let pods = self.pods().await?;
        let names: Vec<String> = pods
            .iter()
            .map(|p| format!("{}(ready={})", p.name_any(), is_consumer(p)))
            .collect();
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let lease = leases
            .get_opt(&self.lease)
            .await
            .map_err(|e| format!("cannot read the lease {}: {e}", self.lease))?;
        match lease {
            Some(lease) => {
                let holder = lease
                    .spec
                    .and_then(|s| s.holder_identity)
                    .unwrap_or_default();
                pods.into_iter()
                    .find(|p| p.name_any() == holder && is_consumer(p))
                    .ok_or_else(|| format!("lease held by {holder:?}, which is not among the live, ready operator pods {names:?}"))
            }
            None => match <[Pod; 1]>::try_from(pods) {
                Ok([pod]) if is_consumer(&pod) => Ok(pod),
                _ => Err(format!(
                    "no lease {} and not exactly one ready operator pod: {names:?}",
                    self.lease
                )),
            },
        }
    }

    /// `(started, finished)` ConsumerGroup reconciles, from a pod's `/metrics` through the API
    /// server's pod proxy.
    async fn reconcile_counts(&self, pod: &Pod) -> Result<(u64, u64), String> {
        let port = pod
            .spec
            .as_ref()
            .and_then(|s| {
                let ports: Vec<_> = s
                    .containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .collect();
                ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some("metrics"))
                    .or(ports.first())
                    .map(|p| p.container_port)
            })
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}{port}/proxy/metrics",
            self.namespace,
            pod.name_any()
        );
        let request = http::Request::get(&path)
            .body(Vec::new())
            .map_err(|e| format!("bad request {path}: {e}"))?;
        let text = self
            .client
            .request_text(request)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        if !text.contains("rebalancer_") {
            return Err(format!("{path} serves no rebalancer metrics"));
        }
        let value = |prefix: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(0, |v| v as u64)
        };
        Ok((
            value("rebalancer_reconciles_total{kind=\"ConsumerGroup\"} "),
            value("rebalancer_reconcile_duration_seconds_count{kind=\"ConsumerGroup\"} "),
        ))
    }

    /// `kubectl rollout restart`: stamps the pod template; returns the stamp.
    async fn restart(&self) -> String {
        let stamp = k8s_openapi::jiff::Timestamp::now().to_string();
        let patch =
            json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}});
        self.deployments()
            .patch(&self.deployment, &patch_params(), &Patch::Merge(patch))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot restart the operator Deployment {}/{}: {e}",
                    self.namespace, self.deployment
                )
            });
        stamp
    }

    /// The rollout is complete: every replica is updated, ready and available, no old one is left.
    async fn rolled_out(&self) -> Result<(), String> {
        let d = self.get_deployment().await?;
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let s = d.status.clone().unwrap_or_default();
        let done = s.observed_generation >= d.metadata.generation
            && s.updated_replicas == Some(want)
            && s.replicas == Some(want)
            && s.ready_replicas == Some(want)
            && s.available_replicas == Some(want)
            && s.terminating_replicas.unwrap_or(0) == 0;
        if done {
            Ok(())
        } else {
            Err(format!(
                "generation {:?}, want {want} replicas, status {}",
                d.metadata.generation,
                serde_json::to_string(&s).unwrap_or_default()
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios (the same stories as tests/controller_mock.rs, against a real API server)
// ---------------------------------------------------------------------------------------------

/// Topic `orders`, 2 brokers × 4 queues.
const ORDERS: [(&str, u32); 2] = [("broker-a", 4), ("broker-b", 4)];

/// A Deployment of 2, a group over `orders` with Averagely, and the wait for its first assignment.
async fn two_consumers(env: &Env, name: &str) -> ConsumerGroup {
    env.create_topic("orders", &ORDERS).await;
    env.create_deployment(name, 2).await;
    env.create_group(name, &["orders"], "Averagely", "Deployment", name)
        .await;
    env.wait_group(name, "2 consumers, 2 replicas, Ready=True", |g| {
        settled(g, 2, 2)
    })
    .await;
    env.assignment_settles(name, &all_queues("orders", &ORDERS))
        .await
}

#[tokio::test]
async fn s1_first_assignment() {
    e2e("first_assignment", |env| async move {
        let group = two_consumers(&env, "orders-consumer").await;
        let status = group.status.as_ref().expect("status");
        assert_eq!(status.allocation.queues, 8);
        assert_eq!(status.allocation.idle, 0);
        let ready = condition(&group, "Ready").expect("Ready condition");
        assert_eq!(ready.reason, "Rebalanced", "{ready:?}");
        assert!(
            condition_is(&group, "IdleConsumers", "False"),
            "IdleConsumers should be False: {}",
            status_json(&group)
        );
        for a in &status.allocation.assignments {
            let n = expand(&a.queues).expect("queue ids").len();
            assert_eq!(n, 4, "each of 2 consumers owns 4 of 8 queues: {a:?}");
        }
        println!("    assignments: {:?}", status.allocation.assignments);
    })
    .await;
}

#[tokio::test]
async fn s2_scale_up_then_down() {
    e2e("scale_up_down", |env| async move {
        let name = "orders-consumer";
        let expected = all_queues("orders", &ORDERS);
        two_consumers(&env, name).await;

        env.scale::<Deployment>(name, 4).await;
        env.wait_group(name, "4 consumers, 4 replicas, Ready=True", |g| {
            settled(g, 4, 4)
        })
        .await;
        let group = env.assignment_settles(name, &expected).await;
        let status = group.status.as_ref().expect("status");
        for a in &status.allocation.assignments {
            assert_eq!(expand(&a.queues).expect("queue ids").len(), 2, "{a:?}");
        }
        assert!(
            status.allocation.moved_queues > 0,
            "{}",
            status_json(&group)
        );

        env.scale::<Deployment>(name, 1).await;
        env.wait_group(name, "1 consumer, 1 replica, Ready=True", |g| {
            settled(g, 1, 1)
        })
        .await;
        // check_assignment also requires that the 3 pods that left carry no label or annotation
        // any more (or are gone).
        let group = env.assignment_settles(name, &expected).await;
        let status = group.status.as_ref().expect("status");
        let only = &status.allocation.assignments[0];
        assert_eq!(expand(&only.queues).expect("queue ids"), expected);
        let members = env
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("{GROUP_LABEL}={name}")))
            .await
            .expect("list pods");
        assert_eq!(
            members
                .items
                .iter()
                .map(ResourceExt::name_any)
                .collect::<Vec<_>>(),
            vec![only.consumer.clone()]
        );

        // Scaling down deletes the pods that leave, so the above only shows that they went away.
        // A pod that leaves while it keeps running (relabelled out of the selector: the
        // ReplicaSet releases it and starts a replacement) must lose its label and annotation.
        let released = only.consumer.clone();
        let pods = env.api::<Pod>();
        pods.patch(
            &released,
            &patch_params(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": format!("{name}-released")}}})),
        )
        .await
        .expect("relabel the pod");
        println!("    released pod {released} from the Deployment's selector");
        let (env_ref, expected_ref, released_ref, pods_ref) = (&env, &expected, &released, &pods);
        eventually(
            "the released pod to lose its membership and its replacement to take over",
            || async move {
                let group = env_ref.check_assignment(name, expected_ref).await?;
                let status = group.status.as_ref().ok_or("no status")?;
                let consumers: Vec<&str> = status
                    .allocation
                    .assignments
                    .iter()
                    .map(|a| a.consumer.as_str())
                    .collect();
                if consumers.len() != 1 || consumers[0] == released_ref.as_str() {
                    return Err(format!("consumers {consumers:?}"));
                }
                // check_assignment saw the released pod without label and annotation; it must
                // still be running, or this proves nothing.
                let pod = pods_ref
                    .get(released_ref)
                    .await
                    .map_err(|e| format!("released pod: {e}"))?;
                if pod.metadata.deletion_timestamp.is_some() {
                    panic!("the released pod is being deleted: {}", pod_summary(&pod));
                }
                Ok(())
            },
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn s3_more_replicas_than_queues() {
    e2e("idle_consumers", |env| async move {
        let name = "events-consumer";
        let brokers = [("broker-a", 2), ("broker-b", 2)];
        let expected = all_queues("events", &brokers);
        env.create_topic("events", &brokers).await;
        env.create_deployment(name, 2).await;
        env.create_group(name, &["events"], "Averagely", "Deployment", name)
            .await;
        env.wait_group(name, "2 consumers, Ready=True", |g| settled(g, 2, 2))
            .await;

        env.scale::<Deployment>(name, 10).await;
        let group = env
            .wait_group(name, "IdleConsumers=True mentioning 10 replicas", |g| {
                condition(g, "IdleConsumers")
                    .is_some_and(|c| c.status == "True" && c.message.contains("10 replicas"))
            })
            .await;
        let idle = condition(&group, "IdleConsumers").expect("IdleConsumers");
        assert_eq!(idle.reason, "MoreConsumersThanQueues", "{idle:?}");
        println!("    IdleConsumers: {}", idle.message);

        env.wait_group(name, "10 consumers, Ready=True", |g| settled(g, 10, 10))
            .await;
        let group = env.assignment_settles(name, &expected).await;
        let status = group.status.as_ref().expect("status");
        assert_eq!(status.allocation.idle, 6, "{}", status_json(&group));
        assert_eq!(status.allocation.idle_consumers.len(), 6);
        assert!(
            condition_is(&group, "IdleConsumers", "True"),
            "{}",
            status_json(&group)
        );

        let on_group = eventually("a Warning IdleConsumers Event about the group", || {
            env.events_about("ConsumerGroup", name, "Warning", "IdleConsumers")
        })
        .await;
        println!("    group event: {:?}", on_group[0].note);
        let on_workload = eventually("a Warning IdleConsumers Event about the Deployment", || {
            env.events_about("Deployment", name, "Warning", "IdleConsumers")
        })
        .await;
        println!("    workload event: {:?}", on_workload[0].note);
    })
    .await;
}

#[tokio::test]
async fn s4_missing_topic_then_created() {
    e2e("missing_topic", |env| async move {
        let name = "late-consumer";
        env.create_deployment(name, 2).await;
        env.create_group(name, &["nope"], "Averagely", "Deployment", name)
            .await;
        let group = env
            .wait_group(name, "Ready=False reason TopicNotFound", |g| {
                condition(g, "Ready")
                    .is_some_and(|c| c.status == "False" && c.reason == "TopicNotFound")
            })
            .await;
        let ready = condition(&group, "Ready").expect("Ready");
        assert!(ready.message.contains("nope"), "{ready:?}");
        // Nothing was assigned: no pod carries a membership.
        let pods = env
            .api::<Pod>()
            .list(&ListParams::default())
            .await
            .expect("list pods");
        for pod in &pods.items {
            assert!(
                !pod.annotations().contains_key(QUEUES_ANNOTATION)
                    && !pod.labels().contains_key(GROUP_LABEL),
                "no pod should be annotated while the topic is missing: {}",
                pod_summary(pod)
            );
        }

        let brokers = [("broker-a", 4)];
        env.create_topic("nope", &brokers).await;
        let group = env
            .wait_group(name, "Ready=True once the topic exists", |g| {
                settled(g, 2, 2)
            })
            .await;
        assert_eq!(
            condition(&group, "Ready").map(|c| c.reason.as_str()),
            Some("Rebalanced")
        );
        env.assignment_settles(name, &all_queues("nope", &brokers))
            .await;
    })
    .await;
}

#[tokio::test]
async fn s4b_deleted_group_releases_its_pods() {
    e2e("deleted_group", |env| async move {
        let name = "doomed-consumer";
        two_consumers(&env, name).await;
        env.api::<ConsumerGroup>()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete the group");
        let pods = env.api::<Pod>();
        eventually(
            "the pods of the deleted group to lose label and annotation",
            || {
                let pods = pods.clone();
                async move {
                    let list = pods
                        .list(&ListParams::default())
                        .await
                        .map_err(|e| format!("list pods: {e}"))?;
                    let marked: Vec<String> = list
                        .items
                        .iter()
                        .filter(|p| {
                            p.labels().contains_key(GROUP_LABEL)
                                || p.annotations().contains_key(QUEUES_ANNOTATION)
                        })
                        .map(pod_summary)
                        .collect();
                    if list.items.is_empty() {
                        return Err("no pods (the Deployment should keep running)".into());
                    }
                    if marked.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("still marked: {marked:?}"))
                    }
                }
            },
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn s5_stable_group_is_not_rewritten() {
    e2e("no_op", |env| async move {
        let name = "orders-consumer";
        let expected = all_queues("orders", &ORDERS);
        // Settled: the status has 2 consumers and the pods carry exactly its assignment (read
        // with a fresh GET after the status was seen).
        let before = two_consumers(&env, name).await;
        let groups = env.api::<ConsumerGroup>();
        let rv0 = before.resource_version().expect("resourceVersion");
        let operator = Operator::from_env(&env.client);
        let op = &operator;

        // How the reconcile caused below is observed: the leader's count of finished
        // ConsumerGroup reconciles (written after any status write of that reconcile).
        let metrics = match operator.leader().await {
            Ok(leader) => match operator.reconcile_counts(&leader).await {
                Ok(_) => Some(leader),
                Err(e) => {
                    println!("    NOTE: cannot read the operator's metrics ({e})");
                    None
                }
            },
            Err(e) => {
                println!("    NOTE: cannot find the operator leader ({e})");
                None
            }
        };
        let others: Vec<String> = Api::<ConsumerGroup>::all(env.client.clone())
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|g| g.namespace().as_deref() != Some(env.ns.as_str()))
                    .map(|g| format!("{}/{}", g.namespace().unwrap_or_default(), g.name_any()))
                    .collect()
            })
            .unwrap_or_default();
        if !others.is_empty() {
            println!(
                "    NOTE: other ConsumerGroups exist ({others:?}); the reconcile counter is shared with them"
            );
        }
        let finished_before = match &metrics {
            Some(leader) => {
                // No reconcile in flight: started == finished.
                let (_, finished) = eventually("no ConsumerGroup reconcile in flight", || async move {
                    let (started, finished) = op.reconcile_counts(leader).await?;
                    if started == finished {
                        Ok((started, finished))
                    } else {
                        Err(format!("started {started}, finished {finished}"))
                    }
                })
                .await;
                Some(finished)
            }
            None => None,
        };

        // Touch a consumer pod with a label the operator ignores: the pod watch maps it to the group
        // (the pod carries the group label) and causes a reconcile whose inputs are unchanged.
        let pods = env.api::<Pod>();
        let target = before
            .status
            .as_ref()
            .and_then(|s| s.allocation.assignments.first())
            .map(|a| a.consumer.clone())
            .expect("a consumer");
        let touched = pods
            .patch(
                &target,
                &patch_params(),
                &Patch::Merge(json!({"metadata": {"labels": {TOUCH_LABEL: "1"}}})),
            )
            .await
            .expect("touch the pod");
        assert_eq!(touched.labels().get(TOUCH_LABEL).map(String::as_str), Some("1"));
        println!("    touched pod {target}");

        match (&metrics, finished_before) {
            (Some(leader), Some(before)) => {
                eventually("a ConsumerGroup reconcile to finish after the touch", || async move {
                    let (_, finished) = op.reconcile_counts(leader).await?;
                    if finished > before {
                        Ok(())
                    } else {
                        Err(format!("finished reconciles still {finished}"))
                    }
                })
                .await;
            }
            _ => {
                // No metrics: watch the group from the recorded version for a bounded window; any
                // modification within it fails the test.
                println!(
                    "    NOTE: falling back to a {QUIET_WINDOW:?} watch window (not a proof that a reconcile ran)"
                );
                let params = WatchParams::default()
                    .fields(&format!("metadata.name={name}"))
                    .timeout(QUIET_WINDOW.as_secs() as u32 + 10);
                let mut stream = groups.watch(&params, &rv0).await.expect("watch the group").boxed();
                let seen = tokio::time::timeout(QUIET_WINDOW, async {
                    while let Some(event) = stream.next().await {
                        match event {
                            Ok(WatchEvent::Bookmark(_)) => {}
                            Ok(WatchEvent::Modified(g)) => {
                                return Some(format!("Modified: {}", status_json(&g)));
                            }
                            Ok(other) => return Some(format!("{other:?}")),
                            Err(e) => return Some(format!("watch error: {e}")),
                        }
                    }
                    None
                })
                .await;
                if let Ok(Some(event)) = seen {
                    panic!("the stable group was written: {event}");
                }
            }
        }

        // A read after the reconcile finished sees any write it made.
        let after = groups.get(name).await.expect("read the group");
        assert_eq!(
            after.resource_version().as_deref(),
            Some(rv0.as_str()),
            "a reconcile with unchanged inputs rewrote the group:\nbefore {}\nafter  {}",
            status_json(&before),
            status_json(&after)
        );
        let still = env.check_assignment(name, &expected).await.expect("still settled");
        assert_eq!(still.status, before.status);
    })
    .await;
}

#[tokio::test]
async fn s6_sticky_across_operator_restart() {
    e2e("sticky_restart", |env| async move {
        let name = "sticky-consumer";
        let expected = all_queues("orders", &ORDERS);
        let operator = Operator::from_env(&env.client);
        operator
            .get_deployment()
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        env.create_topic("orders", &ORDERS).await;
        env.create_statefulset(name, 2).await;
        env.create_group(name, &["orders"], "Sticky", "StatefulSet", name)
            .await;
        env.wait_group(name, "2 consumers, 2 replicas, Ready=True", |g| {
            settled(g, 2, 2)
        })
        .await;
        let group = env.assignment_settles(name, &expected).await;
        let before: BTreeMap<String, BTreeSet<QueueId>> = group
            .status
            .as_ref()
            .expect("status")
            .allocation
            .assignments
            .iter()
            .map(|a| (a.consumer.clone(), expand(&a.queues).expect("queue ids")))
            .collect();
        println!("    before the restart: {before:?}");

        // Restart the operator: nothing survives but the group's status.
        let stamp = operator.restart().await;
        println!(
            "    restarting {}/{} ({RESTARTED_AT}={stamp})",
            operator.namespace, operator.deployment
        );
        eventually("the operator rollout to complete", || operator.rolled_out()).await;
        let (op, stamp) = (&operator, stamp.as_str());
        let leader = eventually("a restarted operator pod to lead", || async move {
            let leader = op.leader().await?;
            let restamped = leader.annotations().get(RESTARTED_AT).cloned();
            if restamped.as_deref() == Some(stamp) {
                Ok(leader)
            } else {
                Err(format!(
                    "leader {} has {RESTARTED_AT}={restamped:?}",
                    leader.name_any()
                ))
            }
        })
        .await;
        println!("    new leader: {}", leader.name_any());

        env.scale::<StatefulSet>(name, 3).await;
        env.wait_group(name, "3 consumers, 3 replicas, Ready=True", |g| {
            settled(g, 3, 3)
        })
        .await;
        let group = env.assignment_settles(name, &expected).await;
        let status = group.status.as_ref().expect("status");
        let after: BTreeMap<String, BTreeSet<QueueId>> = status
            .allocation
            .assignments
            .iter()
            .map(|a| (a.consumer.clone(), expand(&a.queues).expect("queue ids")))
            .collect();
        println!(
            "    after scaling to 3: {after:?}, movedQueues={}",
            status.allocation.moved_queues
        );

        let newcomers: Vec<&String> = after.keys().filter(|c| !before.contains_key(*c)).collect();
        assert_eq!(newcomers.len(), 1, "one new consumer: {after:?}");
        let newcomer = &after[newcomers[0]];
        for (consumer, kept) in &before {
            let now = after
                .get(consumer)
                .unwrap_or_else(|| panic!("{consumer} left the group: {after:?}"));
            assert!(
                now.is_subset(kept),
                "{consumer} gained queues it did not own before: before {kept:?}, after {now:?}"
            );
            let lost: BTreeSet<_> = kept.difference(now).cloned().collect();
            assert!(
                lost.is_subset(newcomer),
                "queues taken from {consumer} went elsewhere than the newcomer: {lost:?}"
            );
        }
        assert_eq!(
            status.allocation.moved_queues,
            newcomer.len() as u64,
            "movedQueues is the newcomer's share: {}",
            status_json(&group)
        );
        assert_eq!(
            newcomer.len(),
            expected.len() / 3,
            "the newcomer takes the smallest balanced share (fewest moves): {after:?}"
        );
    })
    .await;
}
