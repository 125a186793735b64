//! Fetch: everything one group's decision needs, read from the watch caches. The only requests
//! it may make are the scale subresource of a workload kind the operator does not cache, and,
//! with `consumerIds: Client`, the brokers' lists of the group's connected clients and the
//! questions to those clients that `probe` allows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind, Selector, SelectorExt};
use kube::runtime::reflector::ObjectRef;

use super::probe::{Held, Listed};
use crate::api::{ConsumerGroup, MessageModel, StrategyName, Topic};
use crate::controller::Error;
use crate::controller::consumers::GROUP_LABEL;
use crate::controller::index::{parse_selector, selector_from_string};
use crate::controller::scope::Scope;
use crate::rocketmq::Connections;

/// Where a group's consumers come from, resolved.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Selector over the pods of the namespace.
    pub selector: Selector,
    /// The same selector's equality terms, for the index.
    pub labels: LabelSelector,
    /// Replicas the workload asks for (`workloadRef` only).
    pub desired_replicas: Option<i32>,
}

/// Why a group's consumers could not be resolved; each is a condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadProblem {
    /// `workloadRef` names nothing.
    #[error("{0} not found")]
    WorkloadNotFound(String),
    /// The workload's scale subresource has no selector.
    #[error("{0}: its scale subresource reports no pod selector")]
    WorkloadWithoutSelector(String),
    /// The selector cannot be used.
    #[error("spec.consumers.selector: {0}")]
    InvalidSelector(String),
}

impl WorkloadProblem {
    /// Condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            WorkloadProblem::WorkloadNotFound(_) => "WorkloadNotFound",
            WorkloadProblem::WorkloadWithoutSelector(_) => "WorkloadWithoutSelector",
            WorkloadProblem::InvalidSelector(_) => "InvalidSelector",
        }
    }
}

/// Why a group's topics cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicProblem {
    /// No Topic of that name in the group's namespace.
    NotFound(String),
    /// The Topic exists but this operator cannot read it.
    Unreadable {
        /// The Topic's name.
        name: String,
        /// Why.
        error: String,
    },
}

/// Why a `consumerIds: Client` group's clients could not be read; each is a condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientsProblem {
    /// A topic is not read from NameServers, so no broker is known to ask.
    #[error(
        "consumerIds Client needs every topic to sync from NameServers: Topic {0} has no spec.nameServers"
    )]
    NoNameServers(String),
    /// A topic's route has not been read yet (or names no master).
    #[error("Topic {0} has no route with a broker master yet (status.observed)")]
    NotSynced(String),
    /// No broker answered.
    #[error("cannot read the group's clients: no broker answered: {0}")]
    BrokerUnreachable(String),
}

impl ClientsProblem {
    /// Condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ClientsProblem::NoNameServers(_) => "ClientsNeedNameServers",
            ClientsProblem::NotSynced(_) => "TopicNotSynced",
            ClientsProblem::BrokerUnreachable(_) => "BrokerUnreachable",
        }
    }
}

/// One group and its world, as the caches hold them.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The group.
    pub group: Arc<ConsumerGroup>,
    /// Its topics in subscription order, or the first that cannot be used.
    pub topics: Result<Vec<Arc<Topic>>, TopicProblem>,
    /// Its consumers' selector and desired replicas.
    pub workload: Result<Workload, WorkloadProblem>,
    /// Pods the selector matches (Ready or not).
    pub pods: Vec<Arc<Pod>>,
    /// Pods carrying this group's label (members, and leavers to clean).
    pub labelled: Vec<Arc<Pod>>,
    /// Zone of each node the pods run on (zone-aware strategies only).
    pub node_zones: BTreeMap<String, Option<String>>,
    /// `consumerIds: Client`: the client ids connected to the group's brokers, sorted.
    pub clients: Option<Result<Vec<String>, ClientsProblem>>,
    /// `consumerIds: Client`: what is known of the queues each client holds.
    pub held: BTreeMap<String, Held>,
    /// `consumerIds: Client`: how the brokers listed the clients.
    pub listing: Option<Listing>,
}

/// A queue a client holds: (RocketMQ topic, broker, queue id).
pub type HeldQueue = (String, String, u32);

/// Kinds whose objects are cached (`apps/v1`): no request is needed for their scale.
const CACHED_KINDS: [&str; 3] = ["Deployment", "StatefulSet", "ReplicaSet"];

/// Reads one group's world from the caches.
pub async fn fetch(group: Arc<ConsumerGroup>, scope: &Scope) -> Result<Snapshot, Error> {
    let namespace = group.namespace().ok_or(Error::NoNamespace)?;
    let topics: Result<Vec<Arc<Topic>>, TopicProblem> = group
        .spec
        .topics
        .iter()
        .map(|name| {
            let topic = scope
                .topics
                .get(&ObjectRef::new(name).within(&namespace))
                .ok_or_else(|| TopicProblem::NotFound(name.clone()))?;
            match crate::controller::watch::unreadable(topic.as_ref()) {
                Some(error) => Err(TopicProblem::Unreadable {
                    name: name.clone(),
                    error: error.to_string(),
                }),
                None => Ok(topic),
            }
        })
        .collect();
    let workload = resolve(&group, &namespace, scope).await?;
    if let Ok(w) = &workload {
        scope.index.resolved(&group, &w.labels);
    }
    let name = group.name_any();
    let cached = |names: Vec<String>| -> Vec<Arc<Pod>> {
        names
            .iter()
            .filter_map(|n| scope.pods.get(&ObjectRef::new(n).within(&namespace)))
            .collect()
    };
    let mut labelled: Vec<Arc<Pod>> =
        cached(scope.pod_index.labelled(&namespace, GROUP_LABEL, &name))
            .into_iter()
            .filter(|p| p.labels().get(GROUP_LABEL) == Some(&name))
            .collect();
    let mut pods: Vec<Arc<Pod>> = match &workload {
        Ok(w) => cached(scope.pod_index.candidates(&namespace, &w.labels))
            .into_iter()
            .filter(|p| w.selector.matches(p.labels()))
            .collect(),
        Err(_) => Vec::new(),
    };
    // Store order is arbitrary; a stable order makes decisions reproducible.
    pods.sort_by_key(|p| p.name_any());
    labelled.sort_by_key(|p| p.name_any());
    let node_zones = if needs_zones(&group) {
        scope
            .ctx
            .nodes
            .zones_of(
                pods.iter()
                    .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone())),
            )
            .await
    } else {
        BTreeMap::new()
    };
    let (clients, held, listing) = match &topics {
        Ok(topics) if group.spec.client_mode() => {
            match connected_clients(&scope.ctx.rocketmq, &group, topics).await {
                Ok((listed, listing)) => {
                    let held = scope
                        .ctx
                        .probes
                        .ask(&scope.ctx.rocketmq, &rocketmq_group(&group), &listed)
                        .await;
                    let ids = listed.into_iter().map(|c| c.id).collect();
                    (Some(Ok(ids)), held, Some(listing))
                }
                Err(problem) => (Some(Err(problem)), BTreeMap::new(), None),
            }
        }
        _ => (None, BTreeMap::new(), None),
    };
    Ok(Snapshot {
        group,
        topics,
        workload,
        pods,
        labelled,
        node_zones,
        clients,
        held,
        listing,
    })
}

/// The RocketMQ group name of `group`: `spec.groupName`, or its own name.
pub fn rocketmq_group(group: &ConsumerGroup) -> String {
    group
        .spec
        .group_name
        .clone()
        .unwrap_or_else(|| group.name_any())
}

/// How the brokers listed a group's clients, when they did not all agree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Brokers asked.
    pub brokers: usize,
    /// Brokers that did not answer, with why (`addr: error`), sorted.
    pub unreachable: Vec<String>,
    /// Clients some answering brokers listed and others did not, sorted.
    pub partial: Vec<String>,
}

/// The clients connected under the group's RocketMQ name: the union of what every master of
/// the group's topics lists (`GET_CONSUMER_CONNECTION_LIST`, asked of all of them at once). A
/// client heartbeats to every broker of the topics it subscribes, so each master should list
/// it; one that does not (it dropped the client a moment ago, or has not seen its heartbeat
/// yet) is no proof of absence. Fails only when no master answers.
async fn connected_clients(
    connections: &Connections,
    group: &ConsumerGroup,
    topics: &[Arc<Topic>],
) -> Result<(Vec<Listed>, Listing), ClientsProblem> {
    let name = rocketmq_group(group);
    let mut masters: BTreeSet<String> = BTreeSet::new();
    for topic in topics {
        let topic_name = topic.name_any();
        if topic.spec.name_servers.as_ref().is_none_or(Vec::is_empty) {
            return Err(ClientsProblem::NoNameServers(topic_name));
        }
        let of_topic: Vec<String> = topic
            .status
            .as_ref()
            .and_then(|s| s.observed.as_ref())
            .map(|o| {
                o.brokers
                    .iter()
                    .filter_map(|b| b.master_addr.clone())
                    .collect()
            })
            .unwrap_or_default();
        if of_topic.is_empty() {
            return Err(ClientsProblem::NotSynced(topic_name));
        }
        masters.extend(of_topic);
    }
    let asks = masters.iter().map(|addr| {
        let name = name.clone();
        async move {
            let result = connections
                .call_broker(addr, |client| {
                    let name = name.clone();
                    async move { client.consumer_connections(&name).await }
                })
                .await;
            (addr.clone(), result)
        }
    });
    let answers = futures::future::join_all(asks).await;
    let mut listing = Listing {
        brokers: masters.len(),
        ..Listing::default()
    };
    let mut clients: BTreeMap<String, Listed> = BTreeMap::new();
    let mut answered = 0usize;
    for (addr, answer) in answers {
        match answer {
            Ok(connections) => {
                answered += 1;
                for c in connections {
                    let listed = clients
                        .entry(c.client_id.clone())
                        .or_insert_with(|| Listed {
                            id: c.client_id.clone(),
                            language: c.language.clone(),
                            brokers: Vec::new(),
                        });
                    if !listed.brokers.contains(&addr) {
                        listed.brokers.push(addr.clone());
                    }
                }
            }
            Err(e) => listing.unreachable.push(format!("{addr}: {e}")),
        }
    }
    if answered == 0 {
        return Err(ClientsProblem::BrokerUnreachable(
            listing.unreachable.join("; "),
        ));
    }
    listing.partial = clients
        .values()
        .filter(|c| c.brokers.len() < answered)
        .map(|c| c.id.clone())
        .collect();
    Ok((clients.into_values().collect(), listing))
}

/// Zone-aware strategies read the nodes' zones.
pub fn needs_zones(group: &ConsumerGroup) -> bool {
    group.spec.strategy == StrategyName::MachineRoomNearby
        && group.spec.message_model == MessageModel::Clustering
}

async fn resolve(
    group: &ConsumerGroup,
    namespace: &str,
    scope: &Scope,
) -> Result<Result<Workload, WorkloadProblem>, Error> {
    let Some(consumers) = group.spec.consumers.as_ref() else {
        return Ok(Err(WorkloadProblem::InvalidSelector(
            "spec.consumers is required".into(),
        )));
    };
    let Some(w) = &consumers.workload_ref else {
        let selector = consumers.selector.clone().unwrap_or_default();
        return Ok(from_label_selector(selector, None));
    };
    let what = format!("{} {}", w.kind, w.name);
    if w.api_version == "apps/v1" && CACHED_KINDS.contains(&w.kind.as_str()) {
        let (name, ns) = (w.name.as_str(), namespace);
        let spec = match w.kind.as_str() {
            "Deployment" => scope
                .deployments
                .get(&ObjectRef::new(name).within(ns))
                .map(|d| d.spec.as_ref().map(|s| (s.selector.clone(), s.replicas))),
            "StatefulSet" => scope
                .statefulsets
                .get(&ObjectRef::new(name).within(ns))
                .map(|d| d.spec.as_ref().map(|s| (s.selector.clone(), s.replicas))),
            _ => scope
                .replicasets
                .get(&ObjectRef::new(name).within(ns))
                .map(|d| d.spec.as_ref().map(|s| (s.selector.clone(), s.replicas))),
        };
        return Ok(match spec {
            None => Err(WorkloadProblem::WorkloadNotFound(what)),
            Some(None) => Err(WorkloadProblem::WorkloadWithoutSelector(what)),
            // The API server defaults an unset `replicas` to 1.
            Some(Some((selector, replicas))) => {
                from_label_selector(selector, Some(replicas.unwrap_or(1)))
            }
        });
    }
    // Any other kind with a scale subresource: one request, as `kubectl scale` would make.
    let (api_group, version) = w
        .api_version
        .split_once('/')
        .unwrap_or(("", &w.api_version));
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(api_group, version, &w.kind));
    let api: Api<DynamicObject> =
        Api::namespaced_with(scope.ctx.client.clone(), namespace, &resource);
    let scale = match api.get_scale(&w.name).await {
        Ok(s) => s,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Ok(Err(WorkloadProblem::WorkloadNotFound(what)));
        }
        Err(e) => return Err(Error::kube(format!("get {what}/scale in {namespace}"), e)),
    };
    let text = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .filter(|s| !s.is_empty());
    let Some(text) = text else {
        return Ok(Err(WorkloadProblem::WorkloadWithoutSelector(what)));
    };
    Ok(match parse_selector(&text) {
        Err(e) => Err(WorkloadProblem::InvalidSelector(format!("{what}: {e}"))),
        Ok(selector) => Ok(Workload {
            selector,
            labels: selector_from_string(&text),
            // The scale subresource omits a zero `spec.replicas`: absent means scaled to 0.
            desired_replicas: Some(scale.spec.and_then(|s| s.replicas).unwrap_or(0)),
        }),
    })
}

fn from_label_selector(
    selector: LabelSelector,
    desired_replicas: Option<i32>,
) -> Result<Workload, WorkloadProblem> {
    match Selector::try_from(selector.clone()) {
        Err(e) => Err(WorkloadProblem::InvalidSelector(e.to_string())),
        Ok(s) if s.selects_all() => Err(WorkloadProblem::InvalidSelector(
            "an empty selector would select every pod".into(),
        )),
        Ok(s) => Ok(Workload {
            selector: s,
            labels: selector,
            desired_replicas,
        }),
    }
}
