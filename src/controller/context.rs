//! What every reconcile shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use super::group::probe::{Languages, Policy, Probes};
use super::leader::Leadership;
use super::metrics::Metrics;
use super::scope::{Failures, NodeZones};
use crate::rocketmq::{Connections, NameServers, Timeouts};

/// Field manager of every write.
pub const FIELD_MANAGER: &str = "rebalancer";

/// `reportingController` of the operator's Events.
pub const REPORTING_CONTROLLER: &str = "rebalancer";

/// Largest serialised status the operator writes with its `assignments` list; beyond it the list
/// is left out (every pod still has its queues in its annotation). etcd caps objects at ~1.5 MiB.
pub const STATUS_BUDGET_BYTES: usize = 768 * 1024;

/// How often a Topic with `nameServers` reads its route again (`--sync-period`).
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(30);

/// Languages whose clients are asked which queues they hold (`--client-probe-languages`): Apache
/// RocketMQ's Java client and rocketmq-client-rust answer `GET_CONSUMER_RUNNING_INFO`.
pub const DEFAULT_PROBE_LANGUAGES: &str = "JAVA,RUST";

/// Requests per second the operator sends to brokers at most (`--broker-requests-per-second`).
pub const DEFAULT_BROKER_RPS: u32 = 200;

/// Shared state of the reconcilers.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Whether this replica may write.
    pub leadership: Leadership,
    /// This replica's name: the Events' `reportingInstance`.
    pub instance: String,
    /// Status size budget in bytes.
    pub status_budget: usize,
    /// Largest `rebalancer.dev/queues` annotation value in bytes.
    pub annotation_budget: usize,
    /// Zones of nodes (zone-aware strategies).
    pub nodes: Arc<NodeZones>,
    /// Consecutive failures per object.
    pub failures: Arc<Failures>,
    /// How often a Topic with `nameServers` reads its route again.
    pub sync_period: Duration,
    /// How long Client-mode clients may hold other queues than computed (`ClientsDiverge`).
    pub client_grace: Duration,
    /// One [`NameServers`] per distinct `spec.nameServers` list, so that its failover preference
    /// (the last NameServer that answered) outlives a reconcile.
    name_servers: Arc<Mutex<HashMap<Vec<String>, Arc<NameServers>>>>,
    /// Connections to NameServers and brokers, kept open and shared by every reconcile
    /// (RocketMQ's default admin timeouts: 3 s to connect, 3 s per request).
    pub rocketmq: Arc<Connections>,
    /// `consumerIds: Client`: which clients are asked which queues they hold, and their answers.
    pub probes: Arc<Probes>,
    /// Syncs of Topics whose NameServers did not answer last time may take every request's
    /// timeout; they run only within these slots, so that they never hold every worker the
    /// healthy Topics need (see `topic::reconcile`).
    pub slow_syncs: Arc<tokio::sync::Semaphore>,
}

/// Slots for Topics whose NameServers did not answer: a quarter of the workers, at least one.
pub fn slow_sync_slots(concurrency: u16) -> usize {
    usize::from(concurrency / 4).max(1)
}

impl Context {
    /// A context with the default budget.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        leadership: Leadership,
        instance: Option<String>,
    ) -> Self {
        Self {
            instance: instance.unwrap_or_else(|| format!("rebalancer-{}", std::process::id())),
            nodes: Arc::new(NodeZones::new(client.clone())),
            failures: Arc::new(Failures::default()),
            client,
            metrics,
            leadership,
            status_budget: STATUS_BUDGET_BYTES,
            annotation_budget: super::consumers::ANNOTATION_BUDGET,
            sync_period: DEFAULT_SYNC_PERIOD,
            client_grace: Duration::from_secs(60),
            name_servers: Arc::default(),
            rocketmq: Arc::new(Connections::new(Timeouts::default())),
            probes: Arc::new(Probes::new(Policy::new(
                DEFAULT_PROBE_LANGUAGES.parse().unwrap_or(Languages::Off),
                DEFAULT_SYNC_PERIOD,
            ))),
            slow_syncs: Arc::new(tokio::sync::Semaphore::new(slow_sync_slots(16))),
        }
    }

    /// The NameServers of a `spec.nameServers` list, over the shared connections.
    pub fn name_servers(&self, addrs: &[String]) -> Arc<NameServers> {
        let mut lists = self.name_servers.lock().unwrap_or_else(|e| e.into_inner());
        lists
            .entry(addrs.to_vec())
            .or_insert_with(|| {
                Arc::new(NameServers::with_connections(
                    addrs.iter().cloned(),
                    self.rocketmq.clone(),
                ))
            })
            .clone()
    }

    /// Reports an object this operator cannot read (a placeholder of the watch caches, see
    /// `watch::Unreadable`): a Warning Event `Unreadable`, and nothing else written.
    pub async fn report_unreadable<K>(&self, object: &K, reason: &str)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        self.event(
            &object.object_ref(&()),
            true,
            "Unreadable",
            "Read",
            format!(
                "rebalancer cannot read this object ({reason}); it is left as it is until it changes"
            ),
        )
        .await;
    }

    /// Publishes an Event; a failure is logged, never fatal.
    ///
    /// Each call creates its own Event object. (kube's `Recorder` folds Events of the same
    /// reason and object into one series for minutes and keeps the first one's text, so a later
    /// "3 consumers, 8 queues, 3 moved" read "2 consumers, 8 queues, 0 moved"; Events here are
    /// sent on transitions only, so there is nothing to fold.)
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
        let Some(namespace) = reference.namespace.clone() else {
            return;
        };
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                // client-go's naming: the object's name and the time in hex nanoseconds.
                name: Some(format!(
                    "{}.{:x}",
                    reference.name.as_deref().unwrap_or("rebalancer"),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            reason: Some(reason.into()),
            action: Some(action.into()),
            note: Some(truncate(note, 1000)),
            regarding: Some(reference.clone()),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match api.create(&params, &event).await {
            Ok(_) => self.metrics.count_write("events"),
            Err(e) => tracing::warn!(error = %e, reason, "could not publish event"),
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
