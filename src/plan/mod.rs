//! From API objects to an [`Allocation`]: the one code path shared by `rebalancer plan` and the
//! operator, so that `plan -o json` prints exactly what the operator writes to the status.

mod input;
mod output;
pub mod topic_manage;
pub mod topic_status;
pub mod topic_sync;
mod warning;

/// A consumer as the plan takes it (id and zone); the operator builds these from pods.
pub use crate::assign::ConsumerInput;
pub use input::{
    awaits_sync, consumer_strategy, observed_layout, previous_owners, topic_input, topic_name,
};
pub use output::{allocation_from, empty_allocation, owned_queue_count, plan_from, queue_set};
pub use topic_status::{TopicCondition, topic_status};
pub use warning::{PlanWarning, QueueMismatch, idle_on_topic, idle_summary};

use crate::api::validation::{Violation, validate_group, validate_topic_shape};
use crate::api::{Allocation, ConsumerGroupSpec, MessageModel, Topic};
use crate::assign::{self, AssignError, GroupInput};

/// Why a group could not be planned. [`PlanError::reason`] is the Kubernetes Event / condition
/// reason, [`PlanError::category`] the metric label.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The spec of the group or of one of its topics breaks a rule.
    #[error("{}", join(.0))]
    InvalidSpec(Vec<Violation>),
    /// A subscribed topic does not exist.
    #[error("spec.topics: topic {0} not found")]
    TopicNotFound(String),
    /// A subscribed topic has `nameServers` but no layout yet: it has not been read from its
    /// NameServers and has no `spec.brokers` to fall back on.
    #[error(
        "topic {0} has no layout yet: it is read from its NameServers and none has answered (see its Synced condition)"
    )]
    TopicNotSynced(String),
    /// The engine refused (no queues, no consumers, unknown zone, ...).
    #[error(transparent)]
    AllocationFailed(#[from] AssignError),
}

impl PlanError {
    /// The Event reason / condition reason for this error: `InvalidSpec`, `TopicNotFound`, or the
    /// engine's own reason (`NoReadableQueues`, `MissingConsumerZone`, `UnknownQueue`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::InvalidSpec(_) => "InvalidSpec",
            PlanError::TopicNotFound(_) => "TopicNotFound",
            PlanError::TopicNotSynced(_) => "TopicNotSynced",
            PlanError::AllocationFailed(e) => e.reason(),
        }
    }

    /// A low-cardinality label for metrics: `InvalidSpec`, `TopicNotFound`, `TopicNotSynced` or
    /// `Allocation`.
    pub fn category(&self) -> &'static str {
        match self {
            PlanError::InvalidSpec(_) => "InvalidSpec",
            PlanError::TopicNotFound(_) => "TopicNotFound",
            PlanError::TopicNotSynced(_) => "TopicNotSynced",
            PlanError::AllocationFailed(e) => e.category(),
        }
    }
}

/// A planned group: the allocation (as written to the status) and its warnings, typed.
/// `allocation.warnings` holds the texts of `warnings`, in the same order.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// What the operator writes to the status and `plan -o json` prints.
    pub allocation: Allocation,
    /// The warnings, typed.
    pub warnings: Vec<PlanWarning>,
}

fn join(v: &[Violation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Plans one group. `lookup` finds a subscribed `Topic` object by name; `previous` is the
/// allocation in force (for `Sticky` and the moved-queue count).
pub fn plan_group<'t>(
    spec: &ConsumerGroupSpec,
    require_consumers: bool,
    lookup: impl Fn(&str) -> Option<&'t Topic>,
    consumers: &[ConsumerInput],
    previous: Option<&Allocation>,
) -> Result<Allocation, PlanError> {
    plan_group_with_warnings(spec, require_consumers, lookup, consumers, previous)
        .map(|p| p.allocation)
}

/// [`plan_group`], with the warnings typed as well.
pub fn plan_group_with_warnings<'t>(
    spec: &ConsumerGroupSpec,
    require_consumers: bool,
    lookup: impl Fn(&str) -> Option<&'t Topic>,
    consumers: &[ConsumerInput],
    previous: Option<&Allocation>,
) -> Result<Plan, PlanError> {
    let violations = validate_group(spec, require_consumers);
    if !violations.is_empty() {
        return Err(PlanError::InvalidSpec(violations));
    }
    let mut topics = Vec::with_capacity(spec.topics.len());
    for name in &spec.topics {
        let topic = lookup(name).ok_or_else(|| PlanError::TopicNotFound(name.clone()))?;
        let violations: Vec<Violation> = validate_topic_shape(&topic.spec)
            .into_iter()
            .map(|v| Violation {
                field: format!("Topic {name}: {}", v.field),
                message: v.message,
            })
            .collect();
        if !violations.is_empty() {
            return Err(PlanError::InvalidSpec(violations));
        }
        if awaits_sync(topic) {
            return Err(PlanError::TopicNotSynced(name.clone()));
        }
        topics.push(topic_input(topic));
    }
    let strategy = consumer_strategy(spec).map_err(PlanError::InvalidSpec)?;
    let previous = previous.map(previous_owners);
    let model = match spec.message_model {
        MessageModel::Clustering => assign::MessageModel::Clustering,
        MessageModel::Broadcasting => assign::MessageModel::Broadcasting,
    };
    let assignment = assign::allocate(&GroupInput {
        topics: &topics,
        consumers,
        strategy: &strategy,
        model,
        previous: previous.as_deref(),
    })?;
    Ok(plan_from(&assignment, &topics))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_what_happened_and_categories_stay_few() {
        let invalid = PlanError::InvalidSpec(vec![Violation {
            field: "spec.topics".into(),
            message: "required".into(),
        }]);
        assert_eq!(invalid.reason(), "InvalidSpec");
        assert_eq!(invalid.category(), "InvalidSpec");
        assert_eq!(invalid.to_string(), "spec.topics: required");

        let missing = PlanError::TopicNotFound("orders".into());
        assert_eq!(missing.reason(), "TopicNotFound");
        assert_eq!(missing.category(), "TopicNotFound");
        assert_eq!(missing.to_string(), "spec.topics: topic orders not found");

        let empty = PlanError::from(AssignError::NoQueues {
            topic: "orders".into(),
        });
        assert_eq!(empty.reason(), "NoReadableQueues");
        assert_eq!(empty.category(), "Allocation");
        assert_eq!(empty.to_string(), "topic orders has no readable queues");

        let zone = PlanError::from(AssignError::MissingConsumerZone {
            consumer: "c-0".into(),
        });
        assert_eq!(zone.reason(), "MissingConsumerZone");
        assert_eq!(zone.category(), "Allocation");
    }
}
