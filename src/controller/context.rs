//! What every reconcile shares.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::leader::Leadership;
use super::metrics::Metrics;

/// Field manager of every write.
pub const FIELD_MANAGER: &str = "rebalancer";

/// Largest serialised status the operator writes with its `assignments` list; beyond it the list
/// is left out (every pod still has its queues in its annotation). etcd caps objects at ~1.5 MiB.
pub const STATUS_BUDGET_BYTES: usize = 768 * 1024;

/// Shared state of the reconcilers.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Whether this replica may write.
    pub leadership: Leadership,
    /// Event recorder.
    pub recorder: Recorder,
    /// Status size budget in bytes.
    pub status_budget: usize,
    /// Largest `rebalancer.dev/queues` annotation value in bytes.
    pub annotation_budget: usize,
}

impl Context {
    /// A context with the default budget.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        leadership: Leadership,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: "rebalancer".into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            leadership,
            status_budget: STATUS_BUDGET_BYTES,
            annotation_budget: super::consumers::ANNOTATION_BUDGET,
        }
    }

    /// Publishes an Event; a failure is logged, never fatal.
    pub async fn event(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        if !self.leadership.is_leader() {
            return;
        }
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(truncate(note, 1000)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
