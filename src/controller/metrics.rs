//! Prometheus metrics, served as text on `/metrics`.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels by kind (`Topic` or `ConsumerGroup`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Kind reconciled.
    pub kind: String,
}

/// Labels of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Kind reconciled.
    pub kind: String,
    /// Error variant (low cardinality).
    pub reason: String,
}

/// Labels of one group.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// Namespace.
    pub namespace: String,
    /// ConsumerGroup name.
    pub group: String,
}

/// Labels of a group's client/pod mismatch count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MismatchLabels {
    /// Namespace.
    pub namespace: String,
    /// ConsumerGroup name.
    pub group: String,
    /// `without_pod` (clients) or `pod_without_client` (Ready pods).
    pub kind: String,
}

/// Labels of a request to a broker.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerRequestLabels {
    /// `sent`, or `refused` by `--broker-requests-per-second`.
    pub result: String,
}

/// Labels of one Topic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// Namespace.
    pub namespace: String,
    /// Topic name (the object's).
    pub topic: String,
}

/// Labels of a failed sync of a Topic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncFailureLabels {
    /// Namespace.
    pub namespace: String,
    /// Topic name (the object's).
    pub topic: String,
    /// The `Synced=False` reason: `NameServerUnreachable`, `TopicNotFound`, `NameServerError`.
    pub reason: String,
}

/// Labels of a write to the API server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// Resource written (`pods`, `consumergroups/status`, `topics/status`, `events`).
    pub resource: String,
}

/// All metrics of the operator.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Reconciles started.
    pub reconciles: Family<KindLabels, Counter>,
    /// Reconciles that failed.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration.
    pub duration: Family<KindLabels, Histogram>,
    /// Idle consumers per group.
    pub idle_consumers: Family<GroupLabels, Gauge>,
    /// Queues that changed owner, per group.
    pub queues_moved: Family<GroupLabels, Counter>,
    /// `consumerIds: Client`: clients in no pod of the group, and Ready pods with no client.
    pub clients_mismatched: Family<MismatchLabels, Gauge>,
    /// `consumerIds: Client`: clients holding other queues than computed for them.
    pub clients_diverging: Family<GroupLabels, Gauge>,
    /// `consumerIds: Client`: clients whose queues are not known (not asked, or no answer).
    pub clients_unverified: Family<GroupLabels, Gauge>,
    /// Requests to brokers, sent or refused by the operator's own limit.
    pub broker_requests: Family<BrokerRequestLabels, Counter>,
    /// 1 while this replica holds the leader lease (or runs without leader election).
    pub leader: Gauge,
    /// Successful writes by resource.
    pub writes: Family<WriteLabels, Counter>,
    /// Writes the API server refused for good (a 4xx: webhook, size, RBAC), by resource.
    pub writes_refused: Family<WriteLabels, Counter>,
    /// Syncs of a Topic with `nameServers` that read no route, by reason.
    pub topic_sync_failures: Family<SyncFailureLabels, Counter>,
    /// 1 while a Topic's `spec.brokers` differs from its observed layout.
    pub topic_drifted: Family<TopicLabels, Gauge>,
    /// Unix time of a Topic's last successful sync.
    pub topic_last_sync: Family<TopicLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rebalancer");
        let reconciles = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
        });
        let idle_consumers = Family::<GroupLabels, Gauge>::default();
        let queues_moved = Family::<GroupLabels, Counter>::default();
        let clients_mismatched = Family::<MismatchLabels, Gauge>::default();
        let clients_diverging = Family::<GroupLabels, Gauge>::default();
        let clients_unverified = Family::<GroupLabels, Gauge>::default();
        let broker_requests = Family::<BrokerRequestLabels, Counter>::default();
        let leader = Gauge::default();
        let writes = Family::<WriteLabels, Counter>::default();
        let writes_refused = Family::<WriteLabels, Counter>::default();
        let topic_sync_failures = Family::<SyncFailureLabels, Counter>::default();
        let topic_drifted = Family::<TopicLabels, Gauge>::default();
        let topic_last_sync = Family::<TopicLabels, Gauge>::default();
        registry.register(
            "writes",
            "Successful writes to the API server by resource",
            writes.clone(),
        );
        registry.register(
            "writes_refused",
            "Writes the API server refused for good (4xx), by resource",
            writes_refused.clone(),
        );
        registry.register("reconciles", "Reconciles by kind", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles by kind and reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by kind",
            duration.clone(),
        );
        registry.register(
            "idle_consumers",
            "Consumers of a group that own no queue",
            idle_consumers.clone(),
        );
        registry.register(
            "queues_moved",
            "Queues that changed owner",
            queues_moved.clone(),
        );
        registry.register(
            "clients_mismatched",
            "consumerIds Client: connected clients in no pod of the group (kind=without_pod), Ready pods running no client (kind=pod_without_client)",
            clients_mismatched.clone(),
        );
        registry.register(
            "clients_diverging",
            "consumerIds Client: clients that hold other queues than computed for them (asked with GET_CONSUMER_RUNNING_INFO)",
            clients_diverging.clone(),
        );
        registry.register(
            "clients_unverified",
            "consumerIds Client: clients whose queues are not known: not asked (language, back-off, probe off) or no answer",
            clients_unverified.clone(),
        );
        registry.register(
            "broker_requests",
            "Requests to brokers: sent, or refused by --broker-requests-per-second",
            broker_requests.clone(),
        );
        registry.register("leader", "1 when this replica may write", leader.clone());
        registry.register(
            "topic_sync_failures",
            "Syncs of a Topic with nameServers that read no route, by reason",
            topic_sync_failures.clone(),
        );
        registry.register(
            "topic_drifted",
            "1 while a Topic's spec.brokers differs from the layout observed on its NameServers",
            topic_drifted.clone(),
        );
        registry.register(
            "topic_last_sync_timestamp_seconds",
            "Unix time of the last sync of a Topic that read its route",
            topic_last_sync.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            reconciles,
            errors,
            duration,
            idle_consumers,
            queues_moved,
            clients_mismatched,
            clients_diverging,
            clients_unverified,
            broker_requests,
            leader,
            writes,
            writes_refused,
            topic_sync_failures,
            topic_drifted,
            topic_last_sync,
        }
    }
}

impl Metrics {
    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// The counter of broker requests with `result` (shared with the throttle that counts them).
    pub fn broker_request(&self, result: &str) -> Counter {
        self.broker_requests
            .get_or_create(&BrokerRequestLabels {
                result: result.to_string(),
            })
            .clone()
    }

    /// Labels of a group.
    pub fn group(namespace: &str, group: &str) -> GroupLabels {
        GroupLabels {
            namespace: namespace.to_string(),
            group: group.to_string(),
        }
    }

    /// Labels of a group's mismatch count of `kind`.
    pub fn mismatch(group: &GroupLabels, kind: &str) -> MismatchLabels {
        MismatchLabels {
            namespace: group.namespace.clone(),
            group: group.group.clone(),
            kind: kind.to_string(),
        }
    }

    /// Labels of a Topic.
    pub fn topic(namespace: &str, topic: &str) -> TopicLabels {
        TopicLabels {
            namespace: namespace.to_string(),
            topic: topic.to_string(),
        }
    }

    /// Runs one reconcile of `kind`, counting it, timing it and counting its failure.
    pub async fn measure<T>(
        &self,
        kind: &str,
        reconcile: impl std::future::Future<Output = Result<T, super::Error>>,
    ) -> Result<T, super::Error> {
        let labels = Self::kind(kind);
        self.reconciles.get_or_create(&labels).inc();
        let started = std::time::Instant::now();
        let result = reconcile.await;
        self.duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            self.errors
                .get_or_create(&ErrorLabels {
                    kind: kind.into(),
                    reason: e.category().into(),
                })
                .inc();
        }
        result
    }

    /// Counts one write of `resource` the API server refused for good (4xx).
    pub fn count_refused(&self, resource: &str) {
        self.writes_refused
            .get_or_create(&WriteLabels {
                resource: resource.to_string(),
            })
            .inc();
    }

    /// Counts a successful write to `resource`.
    pub fn count_write(&self, resource: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                resource: resource.to_string(),
            })
            .inc();
    }

    /// Labels of a kind.
    pub fn kind(kind: &str) -> KindLabels {
        KindLabels {
            kind: kind.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_families_with_prefix() {
        let m = Metrics::default();
        m.reconciles
            .get_or_create(&Metrics::kind("ConsumerGroup"))
            .inc();
        m.idle_consumers
            .get_or_create(&Metrics::group("ns", "g"))
            .set(2);
        m.topic_sync_failures
            .get_or_create(&SyncFailureLabels {
                namespace: "ns".into(),
                topic: "t".into(),
                reason: "TopicNotFound".into(),
            })
            .inc();
        m.topic_drifted
            .get_or_create(&Metrics::topic("ns", "t"))
            .set(1);
        m.topic_last_sync
            .get_or_create(&Metrics::topic("ns", "t"))
            .set(1_700_000_000);
        let text = m.encode();
        assert!(
            text.contains("rebalancer_reconciles_total{kind=\"ConsumerGroup\"} 1"),
            "{text}"
        );
        for line in [
            "rebalancer_topic_sync_failures_total{namespace=\"ns\",topic=\"t\",reason=\"TopicNotFound\"} 1",
            "rebalancer_topic_drifted{namespace=\"ns\",topic=\"t\"} 1",
            "rebalancer_topic_last_sync_timestamp_seconds{namespace=\"ns\",topic=\"t\"} 1700000000",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            text.contains("rebalancer_idle_consumers{namespace=\"ns\",group=\"g\"} 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn measure_counts_runs_and_failures_by_reason() {
        let m = Metrics::default();
        let ok: Result<(), super::super::Error> = m.measure("Topic", async { Ok(()) }).await;
        assert!(ok.is_ok());
        let err = m
            .measure("Topic", async {
                Err::<(), _>(super::super::Error::NoNamespace)
            })
            .await;
        assert!(err.is_err());
        let text = m.encode();
        assert!(
            text.contains("rebalancer_reconciles_total{kind=\"Topic\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "rebalancer_reconcile_errors_total{kind=\"Topic\",reason=\"NoNamespace\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("rebalancer_reconcile_duration_seconds_count{kind=\"Topic\"} 2"),
            "{text}"
        );
    }
}
