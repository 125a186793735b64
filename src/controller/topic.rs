//! The Topic reconciler: totals, producer shares and the `QueueMismatch` warning in the status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::conditions::{self, Desired};
use super::context::{Context, FIELD_MANAGER};
use super::error::Error;
use crate::api::validation::validate_topic;
use crate::api::{BrokerStatus, Topic, TopicStatus};
use crate::assign::java_order::java_cmp;
use crate::assign::producer::{format_share, mismatches};
use crate::plan::topic_input;

/// Condition type: a broker's read and write queue counts differ.
pub const QUEUE_MISMATCH: &str = "QueueMismatch";

/// The status a topic should have (conditions not yet merged).
pub fn desired_status(topic: &Topic) -> (TopicStatus, Vec<Desired>) {
    let violations = validate_topic(&topic.spec);
    if !violations.is_empty() {
        let message = violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let status = TopicStatus {
            observed_generation: topic.meta().generation,
            ..topic.status.clone().unwrap_or_default()
        };
        return (
            status,
            vec![Desired::new("Ready", false, "InvalidSpec", message)],
        );
    }
    let input = topic_input(topic);
    let mut brokers: Vec<_> = input.brokers.iter().collect();
    brokers.sort_by(|a, b| java_cmp(&a.name, &b.name));
    let total_write: u32 = brokers.iter().map(|b| b.writable_queues()).sum();
    let status = TopicStatus {
        observed_generation: topic.meta().generation,
        broker_count: brokers.len() as u32,
        read_queues: brokers.iter().map(|b| b.readable_queues()).sum(),
        write_queues: total_write,
        brokers: brokers
            .iter()
            .map(|b| BrokerStatus {
                name: b.name.clone(),
                read_queues: b.readable_queues(),
                write_queues: b.writable_queues(),
                producer_share: if total_write == 0 {
                    "0%".into()
                } else {
                    format_share(f64::from(b.writable_queues()) / f64::from(total_write))
                },
            })
            .collect(),
        conditions: Vec::new(),
    };
    let problems = mismatches(&input);
    let mut desired = vec![if status.read_queues == 0 {
        Desired::new(
            "Ready",
            false,
            "NoReadableQueues",
            "no broker has readable queues: consumer groups of this topic cannot be planned",
        )
    } else {
        Desired::new(
            "Ready",
            true,
            "Valid",
            format!(
                "{} readable, {} writable queues",
                status.read_queues, status.write_queues
            ),
        )
    }];
    desired.push(if problems.is_empty() {
        Desired::new(
            QUEUE_MISMATCH,
            false,
            "Matched",
            "every broker reads the queues it writes",
        )
    } else {
        Desired::new(
            QUEUE_MISMATCH,
            true,
            "ReadWriteMismatch",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    });
    (status, desired)
}

/// Reconciles one Topic.
pub async fn reconcile(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .measure("Topic", reconcile_inner(&topic, &ctx))
        .await
}

async fn reconcile_inner(topic: &Topic, ctx: &Context) -> Result<Action, Error> {
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let namespace = topic.namespace().ok_or(Error::NoNamespace)?;
    let current = topic.status.clone().unwrap_or_default();
    let (mut status, desired) = desired_status(topic);
    status.conditions = conditions::merge(
        &current.conditions,
        &desired,
        topic.meta().generation,
        Timestamp::now(),
    );
    if status != current {
        let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &namespace);
        let body =
            json!({"apiVersion": crate::api::API_VERSION, "kind": "Topic", "status": status});
        api.patch_status(
            &topic.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    }
    let reference = topic.object_ref(&());
    for type_ in [QUEUE_MISMATCH, "Ready"] {
        if conditions::changed(&current.conditions, &status.conditions, type_)
            && let Some(c) = conditions::find(&status.conditions, type_)
        {
            let warning = (type_ == QUEUE_MISMATCH) == (c.status == "True");
            if warning {
                let reason = if type_ == QUEUE_MISMATCH {
                    QUEUE_MISMATCH
                } else {
                    c.reason.as_str()
                };
                ctx.event(&reference, true, reason, "Validate", c.message.clone())
                    .await;
            }
        }
    }
    Ok(Action::await_change())
}
