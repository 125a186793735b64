//! One test's world on the shared server: its own namespace (also the chart's release
//! namespace, so its ClusterRole and Lease are its own), an admin client, the chart's RBAC and a
//! token for the operator, and short ways to make Topics, groups, workloads and Ready pods.

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rebalancer::api::{ConsumerGroup, Topic};
use serde_json::{Value, json};

use super::envtest::{HARNESS_MANAGER, Server, shared};
use super::operator::{Launch, Operator};
use super::{chart, eventually};

/// Pod label naming the group a pod consumes for (the operator's contract).
pub const GROUP_LABEL: &str = "rebalancer.dev/consumer-group";
/// Pod annotation holding the pod's queues (the operator's contract).
pub const QUEUES_ANNOTATION: &str = "rebalancer.dev/queues";

/// The API server of an [`Env`].
pub enum ServerHandle {
    /// The test binary's shared server.
    Shared(&'static Server),
    /// A server of the test's own, which it may restart or crash.
    Own(Box<Server>),
}

impl std::ops::Deref for ServerHandle {
    type Target = Server;

    fn deref(&self) -> &Server {
        match self {
            ServerHandle::Shared(s) => s,
            ServerHandle::Own(s) => s,
        }
    }
}

/// A test's namespace on the shared server (or on its own, [`Env::on_own_server`]).
pub struct Env {
    /// The server.
    pub server: ServerHandle,
    /// Admin client.
    pub client: Client,
    /// The test's namespace.
    pub ns: String,
    /// The helm binary.
    pub helm: PathBuf,
    /// Kubeconfig holding the chart ServiceAccount's token.
    pub kubeconfig: PathBuf,
    /// Folder for logs and files of this test.
    pub dir: PathBuf,
}

impl Env {
    /// Sets up `test`'s namespace with the chart's RBAC (default values); `None` after a SKIP
    /// line when the suite may skip here.
    pub async fn new(test: &str) -> Option<Env> {
        Env::with_chart_values(test, &[]).await
    }

    /// [`Env::new`] with more `helm template` arguments (e.g. `--set`).
    pub async fn with_chart_values(test: &str, values: &[&str]) -> Option<Env> {
        let server = shared(test).await?;
        let helm = chart::helm(test)?;
        Some(Env::set_up(test, ServerHandle::Shared(server), helm, values).await)
    }

    /// What [`Env::new`] sets up, on an API server of the test's own (for tests that restart or
    /// crash it).
    pub async fn on_own_server(test: &str) -> Option<Env> {
        let assets = super::envtest::assets(test)?;
        let helm = chart::helm(test)?;
        let server = Server::start(&assets)
            .await
            .unwrap_or_else(|e| panic!("the test's own API server did not start: {e}"));
        Some(Env::set_up(test, ServerHandle::Own(Box::new(server)), helm, &[]).await)
    }

    async fn set_up(test: &str, server: ServerHandle, helm: PathBuf, values: &[&str]) -> Env {
        let client = server.admin().await.expect("admin client");
        let ns = server.namespace(&client, test).await;
        let token = chart::install_rbac(&client, &helm, &ns, values).await;
        let kubeconfig = server.write_kubeconfig(&ns, &token);
        let dir = server.scratch(&ns);
        Env {
            server,
            client,
            ns,
            helm,
            kubeconfig,
            dir,
        }
    }

    /// Starts a replica watching this namespace (Lease `rebalancer-leader` in it).
    pub fn operator(&self, identity: &str) -> Operator {
        self.operator_with(identity, Vec::new())
    }

    /// [`Env::operator`] with more arguments.
    pub fn operator_with(&self, identity: &str, extra_args: Vec<String>) -> Operator {
        Operator::start(Launch {
            kubeconfig: &self.kubeconfig,
            lease_namespace: &self.ns,
            namespaces: vec![self.ns.clone()],
            identity: identity.to_string(),
            lease_duration: 4,
            log_dir: &self.dir,
            extra_args,
        })
    }

    /// Starts one replica and waits until it holds the Lease.
    pub async fn leader(&self, identity: &str) -> Operator {
        let op = self.operator(identity);
        self.wait_holder(identity).await;
        op
    }

    /// Waits until the Lease names `identity`.
    pub async fn wait_holder(&self, identity: &str) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.ns);
        eventually(&format!("{identity} to hold the Lease"), || async {
            let lease = api
                .get_opt("rebalancer-leader")
                .await
                .map_err(|e| e.to_string())?;
            let holder = lease.and_then(|l| l.spec).and_then(|s| s.holder_identity);
            if holder.as_deref() == Some(identity) {
                Ok(())
            } else {
                Err(format!("holder {holder:?}"))
            }
        })
        .await
    }

    /// Namespaced API of `K`.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Server-side applies `object` (JSON with apiVersion, kind, metadata.name) in the namespace.
    pub async fn apply<K>(&self, object: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        self.api::<K>()
            .patch(
                &name,
                &PatchParams::apply(HARNESS_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
            .unwrap_or_else(|e| panic!("applying {name}: {e}"))
    }

    /// A static Topic with `brokers` (name, read = write queues).
    pub async fn topic(&self, name: &str, brokers: &[(&str, u32)]) -> Topic {
        let brokers: Vec<Value> = brokers
            .iter()
            .map(|(b, q)| json!({"name": b, "readQueues": q, "writeQueues": q}))
            .collect();
        self.apply(json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": name}, "spec": {"brokers": brokers}
        }))
        .await
    }

    /// A ConsumerGroup with `spec` (JSON).
    pub async fn group(&self, name: &str, spec: Value) -> ConsumerGroup {
        self.apply(json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
            "metadata": {"name": name}, "spec": spec
        }))
        .await
    }

    /// A Deployment named `name` whose pods carry `app: name`, with `replicas`.
    pub async fn deployment(&self, name: &str, replicas: i32) -> Deployment {
        self.apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "consumer:1"}]}
                }
            }
        }))
        .await
    }

    /// Sets a Deployment's `spec.replicas`.
    pub async fn scale(&self, name: &str, replicas: i32) {
        self.api::<Deployment>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .unwrap_or_else(|e| panic!("scaling {name}: {e}"));
    }

    /// A pod with `labels`, Ready when `ready`. (No kubelet here: the test is the kubelet.)
    pub async fn pod(&self, name: &str, labels: Value, ready: bool) -> Pod {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "consumer:1"}]}
        }))
        .unwrap();
        self.api::<Pod>()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("creating pod {name}: {e}"));
        self.set_ready(name, ready).await
    }

    /// Pods `{app}-0 .. {app}-{n-1}` labelled `app: {app}`, all Ready.
    pub async fn pods(&self, app: &str, n: usize) -> Vec<Pod> {
        let mut pods = Vec::with_capacity(n);
        for i in 0..n {
            pods.push(
                self.pod(&format!("{app}-{i}"), json!({"app": app}), true)
                    .await,
            );
        }
        pods
    }

    /// Marks a pod Ready (or not) through its status subresource.
    pub async fn set_ready(&self, name: &str, ready: bool) -> Pod {
        let status = if ready { "True" } else { "False" };
        self.api::<Pod>()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": status}],
                }})),
            )
            .await
            .unwrap_or_else(|e| panic!("pod {name} ready={ready}: {e}"))
    }

    /// Deletes a pod (no node: it goes at once).
    pub async fn delete_pod(&self, name: &str) {
        self.api::<Pod>()
            .delete(name, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("deleting pod {name}: {e}"));
    }

    /// The group as the server holds it.
    pub async fn get_group(&self, name: &str) -> ConsumerGroup {
        self.api::<ConsumerGroup>()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("reading group {name}: {e}"))
    }

    /// Waits until `check` accepts the group, and returns it.
    pub async fn wait_group<F>(&self, name: &str, what: &str, check: F) -> ConsumerGroup
    where
        F: Fn(&ConsumerGroup) -> Result<(), String>,
    {
        let api = self.api::<ConsumerGroup>();
        eventually(&format!("group {name}: {what}"), || async {
            let group = api.get(name).await.map_err(|e| e.to_string())?;
            check(&group).map_err(|e| {
                format!(
                    "{e}; status {}",
                    serde_json::to_string(&group.status).unwrap_or_default()
                )
            })?;
            Ok(group)
        })
        .await
    }

    /// Pods of the namespace with `selector` (label selector text).
    pub async fn list_pods(&self, selector: &str) -> Vec<Pod> {
        self.api::<Pod>()
            .list(&ListParams::default().labels(selector))
            .await
            .expect("listing pods")
            .items
    }

    /// Events of the namespace (events.k8s.io/v1) about `kind/name`, as (type, reason) pairs.
    pub async fn events_of(&self, kind: &str, name: &str) -> Vec<(String, String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> = self.api();
        api.list(&ListParams::default())
            .await
            .expect("listing events")
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
            })
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// A condition of a group's status.
pub fn condition<'a>(group: &'a ConsumerGroup, type_: &str) -> Option<&'a Condition> {
    group
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// `Ok` when condition `type_` has `status`.
pub fn condition_is(group: &ConsumerGroup, type_: &str, status: &str) -> Result<(), String> {
    match condition(group, type_) {
        Some(c) if c.status == status => Ok(()),
        Some(c) => Err(format!("{type_}={} ({})", c.status, c.message)),
        None => Err(format!("no {type_} condition")),
    }
}

/// The `rebalancer.dev/queues` annotation of a pod.
pub fn queues_of(pod: &Pod) -> Option<String> {
    pod.annotations().get(QUEUES_ANNOTATION).cloned()
}

/// The group label of a pod.
pub fn group_of(pod: &Pod) -> Option<String> {
    pod.labels().get(GROUP_LABEL).cloned()
}
