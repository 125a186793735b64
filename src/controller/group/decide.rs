//! Decide: from a [`Snapshot`] and the time, everything a reconcile should write. Pure: no I/O,
//! no clock, no Kubernetes client; tested with plain `#[test]`s.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use super::clients::ClientMap;
use super::fetch::{Listing, Snapshot, TopicProblem, needs_zones};
use super::probe::{Held, NotAsked};
use super::{
    ANNOTATIONS_TRUNCATED, CLIENTS_DIVERGE, CLIENTS_MISMATCH, IDLE, PODS_CONTESTED, READY,
    TRUNCATED,
};
use crate::api::validation::validate_group;
use crate::api::{
    Allocation, ConsumerAssignment, ConsumerGroup, ConsumerGroupStatus, MessageModel, Topic,
};
use crate::controller::conditions::{self, Desired};
use crate::controller::consumers::{self, GROUP_LABEL, ZONE_LABEL, is_consumer};
use crate::plan::{ConsumerInput, PlanError, plan_group};

/// Limits of what a decision may write.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// Largest status (bytes) that keeps its `assignments` list.
    pub status: usize,
    /// Largest `rebalancer.dev/queues` value (bytes).
    pub annotation: usize,
    /// How long clients may hold other queues than computed before `ClientsDiverge=True`.
    pub client_grace: std::time::Duration,
}

/// Whom an Event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regarding {
    /// The group.
    Group,
    /// The group's workload.
    Workload,
}

/// An Event to publish once the status is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    /// Whom it is about.
    pub regarding: Regarding,
    /// Warning (else Normal).
    pub warning: bool,
    /// Reason (CamelCase).
    pub reason: String,
    /// Message.
    pub note: String,
}

/// What kind of result the decision is, for the requeue and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Planned.
    Planned,
    /// Not planned; the last good assignment stays. Carries the reason.
    Failed(&'static str),
}

/// Everything the apply step does.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The status the group should have.
    pub status: ConsumerGroupStatus,
    /// Whether it differs from the current one.
    pub write_status: bool,
    /// Merge patches of pods, by pod name, in name order.
    pub pod_patches: Vec<(String, serde_json::Value)>,
    /// Events, published after the status write.
    pub events: Vec<EventSpec>,
    /// Queues that changed owner, when the assignment changed.
    pub moved: Option<u64>,
    /// Planned or failed.
    pub outcome: Outcome,
    /// `consumerIds: Client` (planned): the clients' pods and the mismatches.
    pub clients: Option<ClientMap>,
    /// `consumerIds: Client` (planned): clients holding other queues than computed for them.
    pub diverging: Option<usize>,
    /// `consumerIds: Client` (planned): clients whose queues are not known.
    pub unverified: Option<usize>,
}

/// Decides one group.
pub fn decide(snapshot: &Snapshot, now: Timestamp, budgets: Budgets) -> Decision {
    let group = snapshot.group.as_ref();
    let current = group.status.clone().unwrap_or_default();
    let desired_replicas = snapshot
        .workload
        .as_ref()
        .ok()
        .and_then(|w| w.desired_replicas);

    let mut violations = validate_group(&group.spec, true);
    // Admission refuses longer names (CEL); a group created before that rule existed is told.
    let name = group.name_any();
    if name.len() > 63 {
        violations.push(crate::api::validation::Violation {
            field: "metadata.name".into(),
            message: format!(
                "{} characters: at most 63, the name is the value of the pods' {GROUP_LABEL} label",
                name.len()
            ),
        });
    }
    if !violations.is_empty() {
        return failure(
            group,
            &current,
            &PlanError::InvalidSpec(violations),
            None,
            now,
        );
    }
    let topics: Vec<&Topic> = match &snapshot.topics {
        Ok(t) => t.iter().map(AsRef::as_ref).collect(),
        Err(TopicProblem::NotFound(missing)) => {
            let error = PlanError::TopicNotFound(missing.clone());
            return failure(group, &current, &error, desired_replicas, now);
        }
        Err(TopicProblem::Unreadable { name, error }) => {
            let message = format!("Topic {name} cannot be read by rebalancer: {error}");
            return failure_with(
                group,
                &current,
                "TopicUnreadable",
                message,
                desired_replicas,
                now,
            );
        }
    };
    // A status read back is not trusted more than a spec: an observed layout beyond the limits
    // (written by hand, or by anyone allowed to write topics/status) is refused before any
    // allocation.
    let inputs: Vec<_> = topics.iter().map(|t| crate::plan::topic_input(t)).collect();
    if let Err(e) = crate::assign::limits::check_topics(&inputs) {
        return failure(group, &current, &PlanError::from(e), desired_replicas, now);
    }
    let workload = match &snapshot.workload {
        Ok(w) => w,
        Err(problem) => {
            return failure_with(
                group,
                &current,
                problem.reason(),
                problem.to_string(),
                None,
                now,
            );
        }
    };

    // A pod belongs to one group at a time, the first that labelled it: pods another group of
    // the namespace has labelled are left to it (neither consumers nor patched here) and named
    // in PodsContested. Two groups selecting one pod then write it once, not in turns forever.
    let (contested, owned): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) =
        snapshot.pods.iter().cloned().partition(|p| {
            p.labels()
                .get(GROUP_LABEL)
                .is_some_and(|g| *g != group.name_any())
        });
    let narrowed;
    let snapshot = if contested.is_empty() {
        snapshot
    } else {
        narrowed = Snapshot {
            pods: owned,
            ..snapshot.clone()
        };
        &narrowed
    };
    let contested_condition = conditions::while_it_holds(
        &current.conditions,
        (!contested.is_empty()).then(|| {
            let named: Vec<String> = contested
                .iter()
                .map(|p| {
                    format!(
                        "{} ({})",
                        p.name_any(),
                        p.labels().get(GROUP_LABEL).cloned().unwrap_or_default()
                    )
                })
                .collect();
            Desired::new(
                PODS_CONTESTED,
                true,
                "PodsOfAnotherGroup",
                format!(
                    "{} selected pods belong to another ConsumerGroup ({GROUP_LABEL} label), which keeps them: {}",
                    contested.len(),
                    name_some(&named, 10)
                ),
            )
        }),
        Desired::new(
            PODS_CONTESTED,
            false,
            "NoContestedPods",
            "no selected pod belongs to another group",
        ),
    );

    let clients = match &snapshot.clients {
        None => None,
        Some(Ok(ids)) => Some((ids, ClientMap::new(ids, &snapshot.pods))),
        Some(Err(problem)) => {
            return failure_with(
                group,
                &current,
                problem.reason(),
                problem.to_string(),
                workload.desired_replicas,
                now,
            );
        }
    };
    let consumers = match &clients {
        None => consumer_inputs(snapshot),
        Some((ids, map)) => client_inputs(snapshot, ids, map),
    };
    let previous = previous_allocation(&current, &snapshot.labelled, &group.name_any());
    // A truncated status leaves the assignment in force to the pods' annotations, which are per
    // pod; with clients as consumers the two are compared per pod (see `keyed` below).
    let per_pod_previous = clients.is_some() && current.assignments_truncated;
    // An empty group is planned without the engine, which would not look at its Topics: a Topic
    // with no layout yet is said, not planned as 0 queues.
    if consumers.is_empty()
        && let Some(t) = topics.iter().find(|t| crate::plan::awaits_sync(t))
    {
        let error = PlanError::TopicNotSynced(t.name_any());
        return failure(group, &current, &error, workload.desired_replicas, now);
    }
    let planned = if consumers.is_empty() && group.spec.message_model == MessageModel::Clustering {
        // Nobody to assign to (yet): not an error, the group is simply empty (Ready says so).
        let released = previous.as_ref().map_or(0, crate::plan::owned_queue_count);
        Ok(crate::plan::empty_allocation(&inputs, released))
    } else {
        plan_group(
            &group.spec,
            true,
            |n| topics.iter().copied().find(|t| t.name_any() == n),
            &consumers,
            previous.as_ref().filter(|_| !per_pod_previous),
        )
    };
    let mut allocation = match planned {
        Ok(a) => a,
        Err(e) => return failure(group, &current, &e, workload.desired_replicas, now),
    };
    // What each pod is told: its own queues, or with clients the queues of the clients it runs.
    let keyed: Cow<'_, [ConsumerAssignment]> = match &clients {
        None => Cow::Borrowed(&allocation.assignments),
        Some((_, map)) => {
            map.label(&mut allocation.assignments);
            Cow::Owned(map.by_pod(&allocation.assignments))
        }
    };

    let per_topic = readable_queues(&topics);
    let max_useful = max_useful_replicas(group, &per_topic);
    let annotations: Vec<(String, String)> = keyed
        .iter()
        .map(|a| (a.consumer.clone(), consumers::annotation_value(a)))
        .collect();
    let oversized: Vec<&str> = annotations
        .iter()
        .filter(|(_, value)| value.len() > budgets.annotation)
        .map(|(consumer, _)| consumer.as_str())
        .collect();
    // With clients as consumers, the idle count is theirs: replicas that run no client consume
    // nothing and are reported by ClientsMismatch instead.
    let replicas_for_idle = if clients.is_some() {
        None
    } else {
        workload.desired_replicas
    };
    let mut extra = vec![idle_condition(
        group,
        &per_topic,
        replicas_for_idle,
        consumers.len(),
        &allocation.idle_consumers,
        max_useful,
    )];
    extra.extend(contested_condition);
    extra.extend(clients_condition(
        &current,
        clients.as_ref().map(|(ids, map)| (ids.len(), map)),
    ));
    let diverging = clients
        .as_ref()
        .map(|(ids, _)| diverging_clients(&topics, &allocation.assignments, ids, &snapshot.held));
    extra.extend(diverge_condition(
        &current,
        diverging.as_ref(),
        now,
        budgets.client_grace,
    ));
    extra.extend(conditions::while_it_holds(
        &current.conditions,
        (!oversized.is_empty()).then(|| {
            Desired::new(
                ANNOTATIONS_TRUNCATED,
                true,
                "AnnotationTooLarge",
                format!(
                    "{} pods own more queue ranges than fit in the {}-byte rebalancer.dev/queues annotation, which they do not get: {}",
                    oversized.len(),
                    budgets.annotation,
                    oversized.join(", ")
                ),
            )
        }),
        Desired::new(
            ANNOTATIONS_TRUNCATED,
            false,
            "AnnotationsFit",
            "every consumer's queues fit in its annotation",
        ),
    ));
    // With the status truncated, the assignment in force is read from the annotations, where a
    // member whose queues do not fit has none: taken as unchanged while they still do not fit,
    // or a converged group would count as rebalanced (status write, Event) at every reconcile.
    let previous = match previous {
        Some(p) if current.assignments_truncated => Some(with_unannotated(
            p,
            &snapshot.labelled,
            &group.name_any(),
            &keyed,
            &oversized,
        )),
        other => other,
    };
    let before = previous
        .as_ref()
        .map_or(&[][..], |p| p.assignments.as_slice());
    let after = if per_pod_previous {
        &keyed[..]
    } else {
        &allocation.assignments[..]
    };
    // No assignment in force (`previous` is None) is an empty one once a rebalance happened: an
    // empty group that stays empty has not rebalanced.
    let rebalanced = current.last_rebalance_time.is_none() || !same_assignment(before, after);
    let pod_patches = pod_patches(snapshot, &annotations, budgets.annotation);
    drop(keyed);
    let ready = ready_condition(
        group,
        &allocation,
        clients.as_ref().map(|(ids, _)| ids.len()),
        snapshot.listing.as_ref(),
    );
    let (mut status, rebalanced) = build_status(
        group,
        &current,
        rebalanced,
        allocation,
        ready,
        extra,
        budgets.status,
        now,
    );
    status.desired_replicas = workload.desired_replicas;
    status.max_useful_replicas = max_useful;
    // One definition of idle for status.idle, the IDLE column, the metric and IdleConsumers: the
    // consumers that own no queue, or, when the workload asks for more replicas than are Ready,
    // those its replicas will leave without one.
    if let (Some(desired), Some(useful), None) = (replicas_for_idle, max_useful, &clients)
        && group.spec.message_model == MessageModel::Clustering
    {
        let expected = u32::try_from(desired.max(0))
            .unwrap_or(0)
            .saturating_sub(useful);
        status.allocation.idle = status.allocation.idle.max(expected);
    }
    if let Some((_, map)) = &clients {
        status.clients_without_pod = map.without_pod.clone();
        status.pods_without_client = map.pods_without_client.clone();
    }

    let mut events = Vec::new();
    let ready_now = conditions::find(&status.conditions, READY);
    // A workload scaled to zero on purpose has no consumers: said in Ready, not warned about.
    let scaled_to_zero = workload.desired_replicas == Some(0);
    if let Some(c) = ready_now.filter(|c| c.status == "False")
        && conditions::changed(&current.conditions, &status.conditions, READY)
        && !(scaled_to_zero && c.reason == NO_CONSUMERS)
    {
        events.push(EventSpec {
            regarding: Regarding::Group,
            warning: true,
            reason: c.reason.clone(),
            note: c.message.clone(),
        });
    } else if rebalanced && ready_now.is_some_and(|c| c.status == "True") {
        let a = &status.allocation;
        events.push(EventSpec {
            regarding: Regarding::Group,
            warning: false,
            reason: "Rebalanced".into(),
            note: format!(
                "{} consumers, {} queues, {} moved",
                a.consumers, a.queues, a.moved_queues
            ),
        });
    }
    for type_ in [IDLE, CLIENTS_MISMATCH, CLIENTS_DIVERGE, PODS_CONTESTED] {
        if conditions::changed(&current.conditions, &status.conditions, type_)
            && let Some(c) = conditions::find(&status.conditions, type_)
            && c.status == "True"
        {
            events.push(EventSpec {
                regarding: Regarding::Group,
                warning: true,
                reason: type_.into(),
                note: c.message.clone(),
            });
            // Idle replicas are the workload's to fix: its owners see the Event there too.
            if type_ == IDLE && workload.desired_replicas.is_some() {
                events.push(EventSpec {
                    regarding: Regarding::Workload,
                    warning: true,
                    reason: IDLE.into(),
                    note: c.message.clone(),
                });
            }
        }
    }
    // Any other change of Ready (a recovery) is reported by the Rebalanced Event or the status.
    let write_status = status != current;
    let moved = rebalanced.then_some(status.allocation.moved_queues);
    Decision {
        status,
        write_status,
        pod_patches,
        events,
        moved,
        outcome: Outcome::Planned,
        clients: clients.map(|(_, map)| map),
        diverging: diverging.as_ref().map(|d| d.diverging.len()),
        unverified: diverging.as_ref().map(Divergence::unverified),
    }
}

/// `Ready=False` of a planned group with no consumer pod.
const NO_CONSUMERS: &str = "NoConsumers";

/// `Ready` of a planned group: `Rebalanced`; with no consumer pod `NoConsumers`; with
/// `consumerIds: Client` and no client connected `NoClientsConnected`. Says how the brokers'
/// lists of clients disagreed.
fn ready_condition(
    group: &ConsumerGroup,
    allocation: &Allocation,
    clients: Option<usize>,
    listing: Option<&Listing>,
) -> Desired {
    let mut note = String::new();
    if let Some(l) = listing {
        if !l.unreachable.is_empty() {
            note.push_str(&format!(
                "; clients read from {} of {} brokers (unreachable: {})",
                l.brokers - l.unreachable.len(),
                l.brokers,
                name_some(&l.unreachable, 3)
            ));
        }
        if !l.partial.is_empty() {
            note.push_str(&format!(
                "; {} clients listed by some brokers only (counted): {}",
                l.partial.len(),
                name_some(&l.partial, 10)
            ));
        }
    }
    if allocation.consumers == 0 && clients.is_none() {
        return Desired::new(
            READY,
            false,
            NO_CONSUMERS,
            format!(
                "no Ready consumer pod: {} queues consumed by nobody",
                allocation.queues
            ),
        );
    }
    if clients == Some(0) {
        let brokers = listing.map_or(0, |l| l.brokers - l.unreachable.len());
        return Desired::new(
            READY,
            false,
            "NoClientsConnected",
            format!(
                "no client of RocketMQ group {} is connected: none of the {brokers} brokers that answered lists one{note}",
                super::fetch::rocketmq_group(group)
            ),
        );
    }
    Desired::new(
        READY,
        true,
        "Rebalanced",
        format!(
            "{} consumers, {} queues{note}",
            allocation.consumers, allocation.queues
        ),
    )
}

/// The group's consumers: its Ready pods, with their zones when the strategy needs them.
fn consumer_inputs(snapshot: &Snapshot) -> Vec<ConsumerInput> {
    let zones = needs_zones(&snapshot.group);
    snapshot
        .pods
        .iter()
        .filter(|p| is_consumer(p))
        .map(|pod| {
            let mut zone = pod.labels().get(ZONE_LABEL).cloned();
            if zone.is_none() && zones {
                zone = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .and_then(|n| snapshot.node_zones.get(n).cloned().flatten());
            }
            ConsumerInput {
                id: pod.name_any(),
                zone,
            }
        })
        .collect()
}

/// The group's consumers with `consumerIds: Client`: the connected clients, each in the zone of
/// its pod when the strategy needs zones.
fn client_inputs(snapshot: &Snapshot, ids: &[String], map: &ClientMap) -> Vec<ConsumerInput> {
    let zones: BTreeMap<String, Option<String>> = consumer_inputs(snapshot)
        .into_iter()
        .map(|c| (c.id, c.zone))
        .collect();
    ids.iter()
        .map(|id| ConsumerInput {
            id: id.clone(),
            zone: map
                .pod_of
                .get(id)
                .and_then(|pod| zones.get(pod).cloned().flatten()),
        })
        .collect()
}

/// `ClientsMismatch` (`consumerIds: Client`): every connected client runs in a pod of the group
/// and every Ready pod runs a client. Without clients as consumers, a condition left from an
/// earlier `Client` spec is cleared.
fn clients_condition(
    current: &ConsumerGroupStatus,
    clients: Option<(usize, &ClientMap)>,
) -> Option<Desired> {
    let Some((count, map)) = clients else {
        return conditions::while_it_holds(
            &current.conditions,
            None,
            Desired::new(
                CLIENTS_MISMATCH,
                false,
                "PodConsumers",
                "consumerIds is Pod: the pods are the consumers",
            ),
        );
    };
    if map.matches() {
        return Some(Desired::new(
            CLIENTS_MISMATCH,
            false,
            "ClientsMatchPods",
            format!(
                "{count} connected clients, each in a Ready pod of the group, and every Ready pod runs one"
            ),
        ));
    }
    let mut parts = Vec::new();
    if !map.without_pod.is_empty() {
        parts.push(format!(
            "{} connected clients run in no pod of the group (status.clientsWithoutPod): {}",
            map.without_pod.len(),
            name_some(&map.without_pod, 10)
        ));
    }
    if !map.pods_without_client.is_empty() {
        parts.push(format!(
            "{} Ready pods run no connected client (status.podsWithoutClient): {}",
            map.pods_without_client.len(),
            name_some(&map.pods_without_client, 10)
        ));
    }
    Some(Desired::new(
        CLIENTS_MISMATCH,
        true,
        "ClientsMismatch",
        parts.join("; "),
    ))
}

/// What is known of the clients' queues, against what the allocation computed for them, over
/// the group's own topics (clients also hold their group's retry topic).
#[derive(Debug, Default)]
struct Divergence {
    /// Answered, and hold something else.
    diverging: Vec<String>,
    /// Asked, and did not answer.
    silent: Vec<String>,
    /// Not asked, with why (one line each).
    not_asked: Vec<(String, String)>,
    /// Answered.
    answered: usize,
    /// Every client listed.
    clients: usize,
    /// Nobody was asked because the probe is off.
    probe_off: bool,
}

impl Divergence {
    /// Clients whose queues are not known.
    fn unverified(&self) -> usize {
        self.silent.len() + self.not_asked.len()
    }
}

fn diverging_clients(
    topics: &[&Topic],
    assignments: &[ConsumerAssignment],
    ids: &[String],
    held: &BTreeMap<String, Held>,
) -> Divergence {
    let names: std::collections::BTreeSet<String> =
        topics.iter().map(|t| crate::plan::topic_name(t)).collect();
    let mut out = Divergence {
        clients: ids.len(),
        ..Divergence::default()
    };
    for client in ids {
        match held.get(client) {
            None => out
                .not_asked
                .push((client.clone(), "not asked".to_string())),
            Some(Held::NotAsked(NotAsked::ProbeOff)) => {
                out.probe_off = true;
                out.not_asked
                    .push((client.clone(), "the probe is off".to_string()));
            }
            Some(Held::NotAsked(why)) => out.not_asked.push((client.clone(), not_asked(why))),
            Some(Held::NoAnswer(_)) => out.silent.push(client.clone()),
            Some(Held::Answered(queues)) => {
                out.answered += 1;
                let holds: std::collections::BTreeSet<_> = queues
                    .iter()
                    .filter(|(topic, _, _)| names.contains(topic))
                    .cloned()
                    .collect();
                let computed = assignments
                    .iter()
                    .find(|a| &a.consumer == client)
                    .map(|a| crate::plan::queue_set(&a.queues))
                    .unwrap_or_default();
                if holds != computed {
                    out.diverging.push(client.clone());
                }
            }
        }
    }
    out
}

fn not_asked(why: &NotAsked) -> String {
    match why {
        NotAsked::ProbeOff => "the probe is off".to_string(),
        NotAsked::Language(language) => {
            format!("language {language:?} is not in --client-probe-languages")
        }
        NotAsked::BackingOff { retry_in, .. } => {
            format!("did not answer before, asked again in {retry_in}s")
        }
        NotAsked::Busy => "the broker's question slots were busy".to_string(),
    }
}

/// `, N did not answer: a, b; M not asked (why): c` for the clients whose queues are unknown.
fn unverified_note(d: &Divergence) -> String {
    let mut parts = Vec::new();
    if !d.silent.is_empty() {
        parts.push(format!(
            "{} did not answer GET_CONSUMER_RUNNING_INFO: {}",
            d.silent.len(),
            name_some(&d.silent, 10)
        ));
    }
    if !d.not_asked.is_empty() {
        let mut why: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (client, reason) in &d.not_asked {
            why.entry(reason.as_str()).or_default().push(client.clone());
        }
        for (reason, clients) in why {
            parts.push(format!(
                "{} not asked ({reason}): {}",
                clients.len(),
                name_some(&clients, 10)
            ));
        }
    }
    parts.join("; ")
}

/// `ClientsDiverge` (`consumerIds: Client`): whether the clients hold the queues computed for
/// them. It says only what was seen: `False` only when every client was asked, answered and
/// holds its queues; clients whose queues are unknown make it `Unknown` (never an all-clear).
/// Clients re-allocate on their own schedule (every 20 s by default, and rocketmq-rust's broker
/// tells no one when a client leaves), so a difference is first `Unknown` (reason
/// `Rebalancing`), and `True` only once it has lasted `grace`: then the clients do something
/// else than the spec says (another strategy, another client version, other topics).
fn diverge_condition(
    current: &ConsumerGroupStatus,
    divergence: Option<&Divergence>,
    now: Timestamp,
    grace: std::time::Duration,
) -> Option<Desired> {
    let Some(d) = divergence else {
        return conditions::while_it_holds(
            &current.conditions,
            None,
            Desired::new(
                CLIENTS_DIVERGE,
                false,
                "PodConsumers",
                "consumerIds is Pod: the pods are the consumers",
            ),
        );
    };
    let unverified = unverified_note(d);
    if d.diverging.is_empty() {
        if d.clients == 0 {
            return Some(Desired::unknown(
                CLIENTS_DIVERGE,
                "NoClientsConnected",
                "no client is connected: nothing to compare",
            ));
        }
        if d.probe_off {
            return Some(Desired::unknown(
                CLIENTS_DIVERGE,
                "ProbeDisabled",
                "the operator does not ask clients which queues they hold (--client-probe-languages=none)",
            ));
        }
        if !d.silent.is_empty() || !d.not_asked.is_empty() {
            let reason = if d.silent.is_empty() {
                "ClientsNotAsked"
            } else {
                "ClientsNotAnswering"
            };
            return Some(Desired::unknown(
                CLIENTS_DIVERGE,
                reason,
                format!(
                    "{} of {} clients answered and hold the queues computed for them; {unverified}",
                    d.answered, d.clients
                ),
            ));
        }
        return Some(Desired::new(
            CLIENTS_DIVERGE,
            false,
            "ClientsHoldTheirQueues",
            format!(
                "all {} clients answered and hold exactly the queues computed for them",
                d.answered
            ),
        ));
    }
    let who = name_some(&d.diverging, 10);
    let unverified = if unverified.is_empty() {
        unverified
    } else {
        format!("; {unverified}")
    };
    // Only a difference seen before counts towards the grace, not an unknown of another kind.
    let since = conditions::find(&current.conditions, CLIENTS_DIVERGE)
        .filter(|c| c.status == "True" || (c.status == "Unknown" && c.reason == "Rebalancing"))
        .map(|c| (c.status.clone(), c.last_transition_time.0));
    let lasted = since.as_ref().is_some_and(|(status, from)| {
        status == "True" || now.duration_since(*from).unsigned_abs() >= grace && now >= *from
    });
    let desired = if lasted {
        Desired::new(
            CLIENTS_DIVERGE,
            true,
            "ClientsDiverge",
            format!(
                "{} clients have held other queues than computed for them for {}s or more (another strategy, client version or subscription than the spec?): {who}{unverified}",
                d.diverging.len(),
                grace.as_secs()
            ),
        )
    } else {
        Desired::unknown(
            CLIENTS_DIVERGE,
            "Rebalancing",
            format!(
                "{} clients hold other queues than computed for them, for now (clients re-allocate on their own schedule): {who}{unverified}",
                d.diverging.len()
            ),
        )
    };
    Some(desired)
}

/// Pod patches: members get their label and queues, leavers lose both, pods on their way out
/// are left alone.
fn pod_patches(
    snapshot: &Snapshot,
    annotations: &[(String, String)],
    budget: usize,
) -> Vec<(String, serde_json::Value)> {
    let group = snapshot.group.name_any();
    let assigned: HashMap<&str, &str> = annotations
        .iter()
        .map(|(consumer, value)| (consumer.as_str(), value.as_str()))
        .collect();
    let mut patches: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let labelled_for_us =
        |pod: &Pod| pod.labels().get(GROUP_LABEL).map(String::as_str) == Some(group.as_str());
    for pod in &snapshot.pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.name_any();
        let patch = if let Some(&value) = assigned.get(name.as_str()) {
            if value.len() > budget {
                // Reported by the AnnotationsTruncated condition; the status holds the queues.
                if labelled_for_us(pod)
                    && !pod.annotations().contains_key(consumers::QUEUES_ANNOTATION)
                {
                    continue;
                }
                joining(pod, &group, consumers::oversized_patch(&group))
            } else if consumers::has_membership(pod, &group, value) {
                continue;
            } else {
                joining(pod, &group, consumers::member_patch(&group, value))
            }
        } else if labelled_for_us(pod) {
            consumers::leaver_patch()
        } else {
            continue;
        };
        patches.insert(name, patch);
    }
    // Pods that carry our label but no longer match the selector.
    for pod in &snapshot.labelled {
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some()
            || snapshot.pods.iter().any(|p| p.name_any() == name)
        {
            continue;
        }
        patches.insert(name, consumers::leaver_patch());
    }
    patches.into_iter().collect()
}

/// `patch` for a pod that does not carry the group's label yet, with the resourceVersion the
/// cache saw as a precondition: the API server answers 409 when the pod changed since, e.g.
/// another group that selects it labelled it meanwhile. Of two groups that saw the pod free at
/// once, the first to label it keeps it (without it, the last writer took the pod from the
/// first).
fn joining(pod: &Pod, group: &str, mut patch: serde_json::Value) -> serde_json::Value {
    if pod.labels().get(GROUP_LABEL).map(String::as_str) != Some(group)
        && let Some(version) = &pod.metadata.resource_version
    {
        patch["metadata"]["resourceVersion"] = serde_json::Value::String(version.clone());
    }
    patch
}

/// Readable queues per topic (RocketMQ name), in subscription order.
fn readable_queues(topics: &[&Topic]) -> Vec<(String, u64)> {
    topics
        .iter()
        .map(|t| {
            let input = crate::plan::topic_input(t);
            let queues = input.readable_queues();
            (input.name, queues)
        })
        .collect()
}

/// The most consumers that can all own a queue: the smallest readable-queue count over the
/// group's topics in Clustering mode (no limit in Broadcasting).
fn max_useful_replicas(group: &ConsumerGroup, per_topic: &[(String, u64)]) -> Option<u32> {
    if group.spec.message_model == MessageModel::Broadcasting {
        return None;
    }
    per_topic
        .iter()
        .map(|(_, q)| u32::try_from(*q).unwrap_or(u32::MAX))
        .min()
}

/// The allocation in force: the status, or, when the status had to leave `assignments` out,
/// the pods' own annotations.
fn previous_allocation(
    current: &ConsumerGroupStatus,
    labelled: &[std::sync::Arc<Pod>],
    group: &str,
) -> Option<Allocation> {
    if !current.assignments_truncated {
        return (!current.allocation.assignments.is_empty()).then(|| current.allocation.clone());
    }
    let assignments = labelled
        .iter()
        .filter(|p| p.labels().get(GROUP_LABEL).map(String::as_str) == Some(group))
        .filter_map(|p| {
            let queues = p.annotations().get(consumers::QUEUES_ANNOTATION)?;
            Some(ConsumerAssignment {
                consumer: p.name_any(),
                pod: None,
                queues: serde_json::from_str(queues).ok()?,
            })
        })
        .collect();
    Some(Allocation {
        assignments,
        ..Allocation::default()
    })
}

/// `previous`, read from the annotations, completed with what `allocation` gives the members
/// labelled without an annotation because their queues did not fit in one, as long as they
/// still do not fit: the queues in force are not written anywhere for those.
fn with_unannotated(
    mut previous: Allocation,
    labelled: &[std::sync::Arc<Pod>],
    group: &str,
    allocation: &[ConsumerAssignment],
    oversized: &[&str],
) -> Allocation {
    for pod in labelled {
        let name = pod.name_any();
        if pod.labels().get(GROUP_LABEL).map(String::as_str) != Some(group)
            || pod.annotations().contains_key(consumers::QUEUES_ANNOTATION)
            || !oversized.contains(&name.as_str())
        {
            continue;
        }
        let unseen = allocation.iter().find(|a| a.consumer == name);
        previous.assignments.extend(unseen.cloned());
    }
    previous
}

/// The status to write, and whether the assignment changed.
#[allow(clippy::too_many_arguments)]
fn build_status(
    group: &ConsumerGroup,
    current: &ConsumerGroupStatus,
    rebalanced: bool,
    mut allocation: Allocation,
    ready: Desired,
    extra: Vec<Desired>,
    budget: usize,
    now: Timestamp,
) -> (ConsumerGroupStatus, bool) {
    if !rebalanced {
        // Same assignment: keep the numbers of the last rebalance instead of resetting them.
        allocation.moved_queues = current.allocation.moved_queues;
    }
    let mut desired = vec![ready];
    desired.extend(extra);
    let mut status = ConsumerGroupStatus {
        observed_generation: group.meta().generation,
        allocation,
        assignments_truncated: false,
        last_rebalance_time: if rebalanced {
            Some(Time(now))
        } else {
            current.last_rebalance_time.clone()
        },
        ..ConsumerGroupStatus::default()
    };
    let size = serde_json::to_vec(&status)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    let too_large = size > budget;
    if too_large {
        status.allocation.assignments.clear();
        status.assignments_truncated = true;
    }
    desired.extend(conditions::while_it_holds(
        &current.conditions,
        too_large.then(|| {
            Desired::new(
                TRUNCATED,
                true,
                "StatusTooLarge",
                format!(
                    "the assignment takes {size} bytes, more than the {budget}-byte budget: it is left out of the status; each pod's rebalancer.dev/queues annotation holds its queues"
                ),
            )
        }),
        Desired::new(TRUNCATED, false, "StatusFits", "the assignment fits in the status"),
    ));
    status.conditions =
        conditions::merge(&current.conditions, &desired, group.meta().generation, now);
    (status, rebalanced)
}

/// Same owners for the same queues, whatever the order of the lists (pod annotations come back
/// in list order, the status in Java order).
fn same_assignment(a: &[ConsumerAssignment], b: &[ConsumerAssignment]) -> bool {
    let key = |list: &[ConsumerAssignment]| -> BTreeMap<String, Vec<crate::api::QueueRange>> {
        list.iter()
            .filter(|c| !c.queues.is_empty())
            .map(|c| {
                let mut q = c.queues.clone();
                q.sort();
                (c.consumer.clone(), q)
            })
            .collect()
    };
    key(a) == key(b) && a.len() == b.len()
}

/// `IdleConsumers`: desired replicas or ready consumers exceed a topic's readable queues, or the
/// strategy left a consumer without a queue.
fn idle_condition(
    group: &ConsumerGroup,
    per_topic: &[(String, u64)],
    desired_replicas: Option<i32>,
    ready: usize,
    idle_consumers: &[String],
    max_useful: Option<u32>,
) -> Desired {
    if group.spec.message_model == MessageModel::Broadcasting {
        return Desired::new(
            IDLE,
            false,
            "Broadcasting",
            "every consumer reads every queue",
        );
    }
    let replicas = desired_replicas.map_or(0, |r| r.max(0) as u64);
    let ready = ready as u64;
    let (count, noun) = if replicas >= ready && desired_replicas.is_some() {
        (replicas, "replica")
    } else {
        (ready, "consumer")
    };
    let messages: Vec<String> = per_topic
        .iter()
        .filter_map(|(topic, queues)| crate::plan::idle_on_topic(count, noun, *queues, topic))
        .collect();
    if !messages.is_empty() {
        let fix = max_useful.map_or(String::new(), |m| {
            format!("; at most {m} can own a queue (status.maxUsefulReplicas): scale to {m} or add queues")
        });
        return Desired::new(
            IDLE,
            true,
            "MoreConsumersThanQueues",
            format!("{}{fix}", messages.join("; ")),
        );
    }
    // Enough queues, yet the strategy left someone without one (a hash ring with few virtual
    // nodes, a ByConfig map, a zone with no broker): the condition must agree with the list.
    if !idle_consumers.is_empty() {
        return Desired::new(
            IDLE,
            true,
            "ConsumersWithoutQueues",
            format!(
                "{} of {} consumers own no queue under strategy {:?}: {}",
                idle_consumers.len(),
                ready,
                group.spec.strategy,
                name_some(idle_consumers, 10)
            ),
        );
    }
    Desired::new(
        IDLE,
        false,
        "Balanced",
        "every consumer owns at least one queue of each topic",
    )
}

/// The first `max` names, and how many more.
fn name_some(names: &[String], max: usize) -> String {
    let shown = names[..names.len().min(max)].join(", ");
    match names.len().saturating_sub(max) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

fn failure(
    group: &ConsumerGroup,
    current: &ConsumerGroupStatus,
    error: &PlanError,
    desired_replicas: Option<i32>,
    now: Timestamp,
) -> Decision {
    failure_with(
        group,
        current,
        error.reason(),
        error.to_string(),
        desired_replicas,
        now,
    )
}

/// `Ready=False` with `reason`; assignments and annotations stay as they are. The Warning Event
/// goes out when the condition changes, not on every retry.
fn failure_with(
    group: &ConsumerGroup,
    current: &ConsumerGroupStatus,
    reason: &'static str,
    message: String,
    desired_replicas: Option<i32>,
    now: Timestamp,
) -> Decision {
    let mut status = current.clone();
    status.observed_generation = group.meta().generation;
    let has_workload = group
        .spec
        .consumers
        .as_ref()
        .is_some_and(|c| c.workload_ref.is_some());
    // Unknown now (e.g. the workload cannot be read): the last value read stays. But a group
    // that no longer names a workload has no replica count at all, not its old workload's.
    if !has_workload {
        status.desired_replicas = None;
    } else if desired_replicas.is_some() {
        status.desired_replicas = desired_replicas;
    }
    status.conditions = conditions::merge(
        &current.conditions,
        &[Desired::new(READY, false, reason, message.clone())],
        group.meta().generation,
        now,
    );
    let events = if conditions::changed(&current.conditions, &status.conditions, READY) {
        vec![EventSpec {
            regarding: Regarding::Group,
            warning: true,
            reason: reason.into(),
            note: message,
        }]
    } else {
        Vec::new()
    };
    Decision {
        write_status: status != *current,
        status,
        pod_patches: Vec::new(),
        events,
        moved: None,
        outcome: Outcome::Failed(reason),
        clients: None,
        diverging: None,
        unverified: None,
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
