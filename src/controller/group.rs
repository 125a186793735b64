//! The ConsumerGroup reconciler: fetch (topics, workload scale, pods) → validate → plan with the
//! engine → write status and pod annotations, only where something changed.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::conditions::{self, Desired};
use super::consumers::{self, GROUP_LABEL, Resolved};
use super::context::{Context, FIELD_MANAGER};
use super::error::Error;
use crate::api::validation::validate_group;
use crate::api::{
    Allocation, ConsumerAssignment, ConsumerGroup, ConsumerGroupStatus, MessageModel, StrategyName,
    Topic,
};
use crate::plan::{PlanError, plan_group};

/// Condition type: the group's assignment is current.
pub const READY: &str = "Ready";
/// Condition type: more consumers than queues.
pub const IDLE: &str = "IdleConsumers";
/// Condition type: `assignments` left out of the status because of its size.
pub const TRUNCATED: &str = "StatusTruncated";
/// Condition type: some pods' queues are too many for their annotation.
pub const ANNOTATIONS_TRUNCATED: &str = "AnnotationsTruncated";

/// Retry of a reconcile whose view was older than the server's group (normally the watch event
/// of the newer group comes first).
const STALE_RETRY: Duration = Duration::from_secs(2);

/// How often a group is re-planned without any event (drift safety net).
const RESYNC: Duration = Duration::from_secs(300);

/// Reconciles one ConsumerGroup.
pub async fn reconcile(group: Arc<ConsumerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .measure("ConsumerGroup", reconcile_inner(&group, &ctx))
        .await
}

async fn reconcile_inner(group: &ConsumerGroup, ctx: &Context) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() {
        // Followers keep their caches warm but never write.
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let namespace = group.namespace().ok_or(Error::NoNamespace)?;
    let name = group.name_any();
    let current = group.status.clone().unwrap_or_default();

    let violations = validate_group(&group.spec, true);
    if !violations.is_empty() {
        fail(
            group,
            ctx,
            &current,
            PlanError::InvalidSpec(violations),
            None,
        )
        .await?;
        return Ok(Action::await_change());
    }

    // Topics.
    let topics_api: Api<Topic> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut topics = Vec::with_capacity(group.spec.topics.len());
    for topic in &group.spec.topics {
        match topics_api.get_opt(topic).await? {
            Some(t) => topics.push(t),
            None => {
                fail(
                    group,
                    ctx,
                    &current,
                    PlanError::TopicNotFound(topic.clone()),
                    None,
                )
                .await?;
                return Ok(Action::requeue(RESYNC));
            }
        }
    }

    // Consumers.
    let spec_consumers = group.spec.consumers.clone().unwrap_or_default();
    let resolved = match consumers::resolve(&ctx.client, &namespace, &spec_consumers).await {
        Ok(r) => r,
        Err(Error::Workload(what, why)) => {
            let err = PlanError::InvalidSpec(vec![crate::api::validation::Violation {
                field: "spec.consumers".into(),
                message: format!("{what}: {why}"),
            }]);
            fail(group, ctx, &current, err, None).await?;
            return Ok(Action::requeue(RESYNC));
        }
        Err(e) => return Err(e),
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods = consumers::list_pods(&pods_api, &resolved.selector).await?;
    let need_zones = group.spec.strategy == StrategyName::MachineRoomNearby
        && group.spec.message_model == MessageModel::Clustering;
    let consumer_inputs = consumers::consumers(&ctx.client, &pods, need_zones).await?;

    // Plan.
    let lookup = |n: &str| topics.iter().find(|t| t.name_any() == n);
    let previous = previous_allocation(&current, &pods, &name);
    let planned =
        if consumer_inputs.is_empty() && group.spec.message_model == MessageModel::Clustering {
            // Nobody to assign to (yet): not an error, the group is simply empty.
            Ok(empty_allocation(&topics))
        } else {
            plan_group(
                &group.spec,
                true,
                lookup,
                &consumer_inputs,
                previous.as_ref(),
            )
        };
    let allocation = match planned {
        Ok(a) => a,
        Err(e) => {
            fail(group, ctx, &current, e, Some(&resolved)).await?;
            return Ok(Action::requeue(RESYNC));
        }
    };

    let per_topic = readable_queues(&topics);
    // Each consumer's annotation, rendered once: the status may leave the list out, the pods never.
    let annotations: Vec<(String, String)> = allocation
        .assignments
        .iter()
        .map(|a| (a.consumer.clone(), consumers::annotation_value(a)))
        .collect();
    let oversized: Vec<&str> = annotations
        .iter()
        .filter(|(_, value)| value.len() > ctx.annotation_budget)
        .map(|(consumer, _)| consumer.as_str())
        .collect();
    let mut extra_conditions = vec![idle_condition(
        group,
        &per_topic,
        resolved.desired_replicas,
        consumer_inputs.len(),
        &allocation.idle_consumers,
    )];
    extra_conditions.extend(conditions::while_it_holds(
        &current.conditions,
        (!oversized.is_empty()).then(|| {
            Desired::new(
                ANNOTATIONS_TRUNCATED,
                true,
                "AnnotationTooLarge",
                format!(
                    "{} pods own more queue ranges than fit in the {}-byte rebalancer.dev/queues annotation, which they do not get: {}",
                    oversized.len(),
                    ctx.annotation_budget,
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
    let (status, rebalanced) = build_status(
        group,
        &current,
        previous.as_ref(),
        allocation,
        extra_conditions,
        resolved.desired_replicas,
        ctx.status_budget,
    );
    let metrics_labels = super::metrics::Metrics::group(&namespace, &name);
    ctx.metrics
        .idle_consumers
        .get_or_create(&metrics_labels)
        .set(i64::from(status.allocation.idle));

    // Pods first: consumers read their annotation, the status is a report.
    annotate_pods(ctx, &pods_api, &pods, &name, &annotations).await?;

    if status != current && !write_status(ctx, group, &status).await? {
        // Our view was stale: the newer group is on its way and reconciles again.
        return Ok(Action::requeue(STALE_RETRY));
    }
    if rebalanced {
        ctx.metrics
            .queues_moved
            .get_or_create(&metrics_labels)
            .inc_by(status.allocation.moved_queues);
    }
    emit_transitions(group, ctx, &current, &status, rebalanced).await;
    Ok(Action::requeue(RESYNC))
}

/// Readable queues per topic (RocketMQ name), in subscription order.
fn readable_queues(topics: &[Topic]) -> Vec<(String, u64)> {
    topics
        .iter()
        .map(|t| {
            let input = crate::plan::topic_input(t);
            let queues = input.readable_queues();
            (input.name, queues)
        })
        .collect()
}

/// An allocation with no consumers: every queue unassigned, counts filled in.
fn empty_allocation(topics: &[Topic]) -> Allocation {
    Allocation {
        queues: readable_queues(topics).iter().map(|(_, q)| *q as u32).sum(),
        warnings: vec!["no ready consumer pods".into()],
        ..Allocation::default()
    }
}

/// The allocation in force: the status, or, when the status had to leave `assignments` out,
/// the pods' own annotations.
fn previous_allocation(
    current: &ConsumerGroupStatus,
    pods: &[Pod],
    group: &str,
) -> Option<Allocation> {
    if !current.assignments_truncated {
        return (!current.allocation.assignments.is_empty()).then(|| current.allocation.clone());
    }
    let assignments = pods
        .iter()
        .filter(|p| p.labels().get(GROUP_LABEL).map(String::as_str) == Some(group))
        .filter_map(|p| {
            let queues = p.annotations().get(consumers::QUEUES_ANNOTATION)?;
            Some(ConsumerAssignment {
                consumer: p.name_any(),
                queues: serde_json::from_str(queues).ok()?,
            })
        })
        .collect();
    Some(Allocation {
        assignments,
        ..Allocation::default()
    })
}

/// The status to write, and whether the assignment changed.
fn build_status(
    group: &ConsumerGroup,
    current: &ConsumerGroupStatus,
    previous: Option<&Allocation>,
    mut allocation: Allocation,
    extra: Vec<Desired>,
    desired_replicas: Option<i32>,
    budget: usize,
) -> (ConsumerGroupStatus, bool) {
    let now = Timestamp::now();
    // No assignment in force (`previous` is None) is an empty one once a rebalance happened: an
    // empty group that stays empty has not rebalanced.
    let before = previous.map_or(&[][..], |p| p.assignments.as_slice());
    let rebalanced =
        current.last_rebalance_time.is_none() || !same_assignment(before, &allocation.assignments);
    if !rebalanced {
        // Same assignment: keep the numbers of the last rebalance instead of resetting them.
        allocation.moved_queues = current.allocation.moved_queues;
    }

    let mut desired = vec![Desired::new(
        READY,
        true,
        "Rebalanced",
        format!(
            "{} consumers, {} queues",
            allocation.consumers, allocation.queues
        ),
    )];
    desired.extend(extra);

    let mut status = ConsumerGroupStatus {
        observed_generation: group.meta().generation,
        desired_replicas,
        allocation,
        assignments_truncated: false,
        last_rebalance_time: if rebalanced {
            Some(Time(now))
        } else {
            current.last_rebalance_time.clone()
        },
        conditions: Vec::new(),
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
    let key = |list: &[ConsumerAssignment]| -> std::collections::BTreeMap<String, Vec<crate::api::QueueRange>> {
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

/// `IdleConsumers`: desired replicas or ready consumers exceed a topic's readable queues.
fn idle_condition(
    group: &ConsumerGroup,
    per_topic: &[(String, u64)],
    desired_replicas: Option<i32>,
    ready: usize,
    idle_consumers: &[String],
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
        return Desired::new(IDLE, true, "MoreConsumersThanQueues", messages.join("; "));
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

async fn annotate_pods(
    ctx: &Context,
    api: &Api<Pod>,
    pods: &[Pod],
    group: &str,
    annotations: &[(String, String)],
) -> Result<(), Error> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let assigned: std::collections::HashMap<&str, &str> = annotations
        .iter()
        .map(|(consumer, value)| (consumer.as_str(), value.as_str()))
        .collect();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.name_any();
        // Every consumer (Ready pod) has an entry, idle ones `[]`.
        let patch = if let Some(&value) = assigned.get(name.as_str()) {
            if value.len() > ctx.annotation_budget {
                // Reported by the AnnotationsTruncated condition; the status holds the queues.
                let labelled = pod.labels().get(GROUP_LABEL).map(String::as_str) == Some(group);
                if labelled && !pod.annotations().contains_key(consumers::QUEUES_ANNOTATION) {
                    continue;
                }
                consumers::oversized_patch(group)
            } else {
                if consumers::has_membership(pod, group, value) {
                    continue;
                }
                consumers::member_patch(group, value)
            }
        } else if pod.labels().get(GROUP_LABEL).map(String::as_str) == Some(group) {
            consumers::leaver_patch()
        } else {
            continue;
        };
        if !ctx.leadership.is_leader() {
            return Ok(());
        }
        match api.patch(&name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {}
            // The pod went away between list and patch: nothing to annotate.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            // Rejected (an admission webhook, a size limit): one pod must not stop the group.
            Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
                tracing::warn!(pod = %name, error = %s.message, "pod annotation rejected");
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Pods that carry our label but no longer match the selector.
    let selector = format!("{GROUP_LABEL}={group}");
    let labelled = api
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?;
    for pod in labelled.items {
        let name = pod.name_any();
        if pods.iter().any(|p| p.name_any() == name) || !ctx.leadership.is_leader() {
            continue;
        }
        match api
            .patch(&name, &params, &Patch::Merge(&consumers::leaver_patch()))
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes `status` computed from `group`, only if the server still holds that version of the
/// group: a status computed from an older view (a reconcile queued behind our own write) must not
/// roll back a newer one. Returns whether it was written.
async fn write_status(
    ctx: &Context,
    group: &ConsumerGroup,
    status: &ConsumerGroupStatus,
) -> Result<bool, Error> {
    if !ctx.leadership.is_leader() {
        return Ok(true);
    }
    let namespace = group.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<ConsumerGroup> = Api::namespaced(ctx.client.clone(), &namespace);
    let body = json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "ConsumerGroup",
        // A precondition of server-side apply: 409 Conflict when the group changed since.
        "metadata": {"resourceVersion": group.resource_version()},
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch_status(&group.name_any(), &params, &Patch::Apply(&body))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            tracing::debug!(group = %group.name_any(), "status computed from a stale view; not written");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Failure: `Ready=False` with the error's reason, everything else (assignments, annotations)
/// left as it was.
async fn fail(
    group: &ConsumerGroup,
    ctx: &Context,
    current: &ConsumerGroupStatus,
    error: PlanError,
    resolved: Option<&Resolved>,
) -> Result<(), Error> {
    let reason = error.reason();
    let message = error.to_string();
    tracing::warn!(group = %group.name_any(), reason, %message, "keeping the last good assignment");
    let now = Timestamp::now();
    let mut status = current.clone();
    status.observed_generation = group.meta().generation;
    if let Some(r) = resolved {
        status.desired_replicas = r.desired_replicas;
    }
    status.conditions = conditions::merge(
        &current.conditions,
        &[Desired::new(READY, false, reason, message.clone())],
        group.meta().generation,
        now,
    );
    if status != *current && !write_status(ctx, group, &status).await? {
        return Ok(());
    }
    if conditions::changed(&current.conditions, &status.conditions, READY) {
        ctx.event(&group.object_ref(&()), true, reason, "Rebalance", message)
            .await;
    }
    Ok(())
}

async fn emit_transitions(
    group: &ConsumerGroup,
    ctx: &Context,
    before: &ConsumerGroupStatus,
    after: &ConsumerGroupStatus,
    rebalanced: bool,
) {
    let reference = group.object_ref(&());
    let a = &after.allocation;
    if rebalanced {
        let note = format!(
            "{} consumers, {} queues, {} moved",
            a.consumers, a.queues, a.moved_queues
        );
        ctx.event(&reference, false, "Rebalanced", "Rebalance", note)
            .await;
    }
    if conditions::changed(&before.conditions, &after.conditions, IDLE)
        && let Some(c) = conditions::find(&after.conditions, IDLE)
        && c.status == "True"
    {
        ctx.event(&reference, true, IDLE, "Rebalance", c.message.clone())
            .await;
        if let Some(w) = group
            .spec
            .consumers
            .as_ref()
            .and_then(|c| c.workload_ref.as_ref())
        {
            let workload = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some(w.api_version.clone()),
                kind: Some(w.kind.clone()),
                name: Some(w.name.clone()),
                namespace: group.namespace(),
                ..Default::default()
            };
            ctx.event(&workload, true, IDLE, "Rebalance", c.message.clone())
                .await;
        }
    }
}
