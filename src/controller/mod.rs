//! The operator: watches Topics, ConsumerGroups, their pods and workloads, and keeps each
//! group's assignment in its status and on its pods.

pub mod conditions;
pub mod consumers;
pub mod context;
pub mod error;
pub mod group;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod pod_index;
pub mod preflight;
pub mod refused;
pub mod scope;
pub mod server;
pub mod sweep;
pub mod topic;
pub mod topic_manage;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::reflector::store::WriterDropped;
use kube::{Client, ResourceExt};
use tokio::sync::watch as signal;

use crate::api::{ConsumerGroup, Topic};
pub use context::Context;
pub use error::Error;
use scope::Scope;

/// Settings of `rebalancer run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespaces to watch; empty = all.
    pub namespaces: Vec<String>,
    /// Lease to hold, when leader election is on.
    pub lease: Option<leader::LeaseLock>,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub metrics_addr: std::net::SocketAddr,
    /// This replica's name (Events' reporting instance, lease identity).
    pub instance: Option<String>,
    /// Most reconciles running at once per scope.
    pub concurrency: u16,
    /// How often a Topic with `nameServers` reads its route again.
    pub sync_period: Duration,
    /// How long Client-mode clients may hold other queues than computed.
    pub client_grace: Duration,
    /// Client-mode clients asked which queues they hold, by language.
    pub client_probe_languages: group::probe::Languages,
    /// Most requests per second to brokers.
    pub broker_requests_per_second: u32,
    /// How long start-up checks failing in a way that may pass (server unreachable, 429, 5xx)
    /// are retried; zero: not at all.
    pub startup_timeout: Duration,
}

/// How long a request to a broker may wait for a slot of `--broker-requests-per-second`
/// before it is refused.
const BROKER_SLOT_WAIT: Duration = Duration::from_secs(1);

/// Requeue after a failed reconcile: exponential for transient failures, slow for refusals that
/// only a person can fix.
fn retry(failures: &scope::Failures, key: String, error: &Error) -> Action {
    let n = failures.record(&key);
    let after = error.retry_after(n);
    tracing::warn!(%error, object = %key, attempt = n, retry_in = ?after, "reconcile failed");
    Action::requeue(after)
}

fn key_of<K: kube::Resource>(kind: &str, object: &K) -> String {
    format!(
        "{kind}/{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A cache that can say when its first full list is in.
trait Synced: Send + Sync {
    fn synced(&self) -> futures::future::BoxFuture<'_, Result<(), WriterDropped>>;
}

impl<K> Synced for Store<K>
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    fn synced(&self) -> futures::future::BoxFuture<'_, Result<(), WriterDropped>> {
        Box::pin(self.wait_until_ready())
    }
}

/// The caches of one scope. Until each holds a full list the operator's view is partial (a group
/// not listed yet looks deleted to the sweeper, a pod not listed yet looks gone), so readiness
/// waits for them.
#[derive(Clone, Default)]
struct Caches {
    stores: Vec<Arc<dyn Synced>>,
}

impl Caches {
    fn add(&mut self, store: impl Synced + 'static) {
        self.stores.push(Arc::new(store));
    }

    async fn wait_until_ready(&self) -> Result<(), WriterDropped> {
        for store in &self.stores {
            store.synced().await?;
        }
        Ok(())
    }
}

/// Raises a scope's sync flag once every one of its caches holds its first full list. The only
/// task that waits on the stores themselves: a kube store wakes only one waiting task, so every
/// other waiter (reconciles, readiness) waits on the flag.
async fn raise_when_synced(caches: Caches, flag: &signal::Sender<bool>) {
    if caches.wait_until_ready().await.is_ok() {
        let _ = flag.send(true);
    }
}

/// Sets `ready` once every scope has synced. Gives up (stays unready) when a scope stops before
/// its first full list, which happens only on shutdown.
async fn mark_ready_when_synced(scopes: Vec<signal::Receiver<bool>>, ready: Arc<AtomicBool>) {
    for flag in scopes {
        if !scope::wait_synced(flag).await {
            return;
        }
    }
    ready.store(true, Ordering::SeqCst);
    tracing::info!("watch caches synced; ready");
}

/// Logs a reconcile failure that the error policy has already reported and requeued.
async fn log_failure<T, E: std::fmt::Display>(what: &'static str, result: Result<T, E>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "{what}");
    }
}

/// A Deployment as the cache keeps it: its selector and replicas, not its pod template.
fn trim_deployment(d: &mut Deployment) {
    watch::trim_meta(d);
    if let Some(spec) = d.spec.as_mut() {
        spec.template = Default::default();
    }
    d.status = None;
}

fn trim_statefulset(d: &mut StatefulSet) {
    watch::trim_meta(d);
    if let Some(spec) = d.spec.as_mut() {
        spec.template = Default::default();
        spec.volume_claim_templates = None;
    }
    d.status = None;
}

fn trim_replicaset(d: &mut ReplicaSet) {
    watch::trim_meta(d);
    if let Some(spec) = d.spec.as_mut() {
        spec.template = None;
    }
    d.status = None;
}

/// The ConsumerGroup controller of one scope, over the scope's caches: its loop and caches.
#[allow(clippy::too_many_arguments)]
fn group_controller(
    client: &Client,
    ctx: Arc<Context>,
    ns: Option<&str>,
    settings: &Settings,
    gained: signal::Receiver<u64>,
    synced: signal::Receiver<bool>,
    (groups, group_events, index): (
        Store<ConsumerGroup>,
        Watched<ConsumerGroup>,
        Arc<index::GroupIndex>,
    ),
    (topics, topic_events): (Store<Topic>, Watched<Topic>),
) -> (Arc<Scope>, impl Future<Output = ()> + Send + use<>) {
    let (pods, pod_index, pod_events) = indexed_pods(client, ns, watch::config());
    let (deployments, deployment_events) = watch::reflect(
        scoped::<Deployment>(client, ns),
        watch::config(),
        trim_deployment,
        |_| {},
    );
    let (statefulsets, statefulset_events) = watch::reflect(
        scoped::<StatefulSet>(client, ns),
        watch::config(),
        trim_statefulset,
        |_| {},
    );
    let (replicasets, replicaset_events) = watch::reflect(
        scoped::<ReplicaSet>(client, ns),
        watch::config(),
        trim_replicaset,
        |_| {},
    );
    let scope = Arc::new(Scope {
        ctx,
        groups: groups.clone(),
        topics,
        pods,
        deployments,
        statefulsets,
        replicasets,
        pod_index,
        index: index.clone(),
        synced,
    });
    let workload_trigger = |kind: &'static str| {
        let index = index.clone();
        move |o: &dyn WorkloadObject| index.groups_of_workload(&o.ns(), kind, &o.name())
    };
    let (i1, i2) = (index.clone(), index.clone());
    let (w1, w2, w3) = (
        workload_trigger("Deployment"),
        workload_trigger("StatefulSet"),
        workload_trigger("ReplicaSet"),
    );
    let concurrency = settings.concurrency;
    let group_loop =
        Controller::for_stream(watch::log_errors(group_events, "ConsumerGroup"), groups)
            .watches_stream(watch::log_errors(topic_events, "Topic"), move |t: Topic| {
                i1.groups_of_topic(&t.namespace().unwrap_or_default(), &t.name_any())
            })
            .watches_stream(watch::log_errors(pod_events, "Pod"), move |p: Pod| {
                i2.groups_of_pod(&p)
            })
            .watches_stream(
                watch::log_errors(deployment_events, "Deployment"),
                move |d: Deployment| w1(&d),
            )
            .watches_stream(
                watch::log_errors(statefulset_events, "StatefulSet"),
                move |d: StatefulSet| w2(&d),
            )
            .watches_stream(
                watch::log_errors(replicaset_events, "ReplicaSet"),
                move |d: ReplicaSet| w3(&d),
            )
            .reconcile_all_on(leadership_gained(gained))
            // A rollout changes many pods within a second: plan once for the burst; and never more
            // reconciles at once than the API server should take from one client.
            .with_config(
                kube::runtime::controller::Config::default()
                    .debounce(Duration::from_millis(500))
                    .concurrency(concurrency),
            )
            .shutdown_on_signal()
            .run(
                group::reconcile,
                |g: Arc<ConsumerGroup>, e: &Error, s: Arc<Scope>| {
                    retry(&s.ctx.failures, key_of("ConsumerGroup", g.as_ref()), e)
                },
                scope.clone(),
            )
            .for_each(|r| log_failure("group reconcile", r));
    (scope, group_loop)
}

/// A pod watch (trimmed) with its store and its [`pod_index::PodIndex`].
fn indexed_pods(
    client: &Client,
    ns: Option<&str>,
    config: kube::runtime::watcher::Config,
) -> (
    Store<Pod>,
    Arc<pod_index::PodIndex>,
    impl futures::Stream<Item = Result<Pod, kube::runtime::watcher::Error>> + Send + use<>,
) {
    let index = Arc::new(pod_index::PodIndex::default());
    let observer = index.clone();
    let (store, events) = watch::reflect(
        scoped::<Pod>(client, ns),
        config,
        watch::trim_pod,
        move |event| observer.observe(event),
    );
    (store, index, events)
}

/// Namespace and name of a cached workload, for its trigger.
trait WorkloadObject {
    fn ns(&self) -> String;
    fn name(&self) -> String;
}

impl<K: kube::Resource> WorkloadObject for K {
    fn ns(&self) -> String {
        self.namespace().unwrap_or_default()
    }
    fn name(&self) -> String {
        self.name_any()
    }
}

/// The Topic controller of one scope: its loop, over the scope's Topic cache.
fn topic_controller(
    ctx: Arc<Context>,
    concurrency: u16,
    gained: signal::Receiver<u64>,
    (topics, events): (Store<Topic>, Watched<Topic>),
) -> impl Future<Output = ()> + Send + use<> {
    Controller::for_stream(watch::log_errors(events, "Topic"), topics)
        .reconcile_all_on(leadership_gained(gained))
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .shutdown_on_signal()
        .run(
            topic::reconcile,
            |t: Arc<Topic>, e: &Error, c: Arc<Context>| {
                retry(&c.failures, key_of("Topic", t.as_ref()), e)
            },
            ctx,
        )
        .for_each(|r| log_failure("topic reconcile", r))
}

/// The orphan sweep of one scope: its cache of labelled pods, and its loop.
fn sweep_controller(
    client: &Client,
    ctx: Arc<Context>,
    ns: Option<&str>,
    synced: signal::Receiver<bool>,
    gained: signal::Receiver<u64>,
    (groups, group_events): (Store<ConsumerGroup>, Watched<ConsumerGroup>),
) -> (Store<Pod>, impl Future<Output = ()> + Send + use<>) {
    // Only labelled pods are cached here: the consumers, not the whole cluster.
    let (labelled, members, pod_events) =
        indexed_pods(client, ns, watch::config().labels(consumers::GROUP_LABEL));
    // A deleted group changes none of its pods, so its deletion must start their sweep. The
    // groups' store is updated before the event that triggers it reaches the sweep.
    let sweep_ctx = Arc::new(sweep::SweepContext {
        ctx,
        groups: groups.clone(),
        synced,
    });
    let sweep_loop = Controller::for_stream(watch::log_errors(pod_events, "Pod"), labelled.clone())
        .watches_stream(
            watch::log_errors(group_events, "ConsumerGroup"),
            move |g: ConsumerGroup| sweep::pods_of_group(&members, &g),
        )
        // A new leader sweeps at once what a follower only looked at.
        .reconcile_all_on(leadership_gained(gained))
        .shutdown_on_signal()
        .run(
            sweep::reconcile,
            |p: Arc<Pod>, e: &Error, s: Arc<sweep::SweepContext>| {
                retry(&s.ctx.failures, key_of("Pod", p.as_ref()), e)
            },
            sweep_ctx,
        )
        .for_each(|r| log_failure("orphan sweep", r));
    (labelled, sweep_loop)
}

/// What one of several controllers reads of a shared watch (see [`watch::fan_out`]).
type Watched<K> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send>>;

/// The controllers of one namespace (or all): their caches, and a future that runs them until
/// shutdown.
///
/// Topics and ConsumerGroups are watched once each and their events fanned out (Topics to the
/// group and Topic controllers, groups to the group controller and the sweep), deletions
/// included: both second uses exist for deletions (a deleted Topic must re-plan its groups at
/// once, a deleted group must start its pods' sweep), which kube's shared reflectors do not pass
/// on.
fn run_scope(
    client: &Client,
    ctx: &Arc<Context>,
    namespace: Option<&str>,
    settings: &Settings,
    gained: &signal::Receiver<u64>,
) -> (
    signal::Receiver<bool>,
    impl Future<Output = ()> + Send + use<>,
) {
    let (synced_tx, synced) = signal::channel(false);
    let index = Arc::new(index::GroupIndex::default());
    // The index follows every group's spec before the group's own reconcile runs. (Not by
    // looking a group up in the store: during a list the store still holds the previous list,
    // so a listed group looked deleted and a new leader never heard of its Topics' changes.)
    let indexing = index.clone();
    let (groups, group_events) = watch::reflect_guarded(
        scoped::<DeserializeGuard<ConsumerGroup>>(client, namespace),
        watch::config(),
        watch::trim_meta,
        move |event| indexing.observe(event),
    );
    let (topics, topic_events) = watch::reflect_guarded(
        scoped::<DeserializeGuard<Topic>>(client, namespace),
        watch::config(),
        watch::trim_meta,
        |_| {},
    );
    let (group_watch, [groups_to_plan, groups_to_sweep]) =
        watch::fan_out(group_events, "ConsumerGroup");
    let (topic_watch, [topics_to_plan, topics_to_sync]) = watch::fan_out(topic_events, "Topic");
    let (scope, group_loop) = group_controller(
        client,
        ctx.clone(),
        namespace,
        settings,
        gained.clone(),
        synced.clone(),
        (groups.clone(), Box::pin(groups_to_plan), index),
        (topics.clone(), Box::pin(topics_to_plan)),
    );
    let topic_loop = topic_controller(
        ctx.clone(),
        settings.concurrency,
        gained.clone(),
        (topics, Box::pin(topics_to_sync)),
    );
    let (labelled_pods, sweep_loop) = sweep_controller(
        client,
        ctx.clone(),
        namespace,
        synced.clone(),
        gained.clone(),
        (groups, Box::pin(groups_to_sweep)),
    );
    let mut caches = Caches::default();
    caches.add(scope.groups.clone());
    caches.add(scope.topics.clone());
    caches.add(scope.pods.clone());
    caches.add(scope.deployments.clone());
    caches.add(scope.statefulsets.clone());
    caches.add(scope.replicasets.clone());
    caches.add(labelled_pods);
    let loops = async move {
        // The sender lives as long as the loops, so the flag never reads "gone" while they run.
        let raise = raise_when_synced(caches, &synced_tx);
        tokio::join!(
            group_watch,
            topic_watch,
            group_loop,
            topic_loop,
            sweep_loop,
            raise
        );
    };
    (synced, loops)
}

/// A stream that yields each time leadership is gained.
fn leadership_gained(
    rx: signal::Receiver<u64>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    tokio_stream::wrappers::WatchStream::from_changes(rx).map(|_| ())
}

/// The scopes to watch: each `--namespace`, or all namespaces.
fn scopes(namespaces: &[String]) -> Vec<Option<String>> {
    if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    }
}

fn log_started(settings: &Settings, server: &str) {
    let namespaces = if settings.namespaces.is_empty() {
        "all".to_owned()
    } else {
        settings.namespaces.join(",")
    };
    let leader_election = match &settings.lease {
        Some(l) => format!("on (lease {}/{} as {})", l.namespace, l.name, l.identity),
        None => "off".to_owned(),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        api_server = %server,
        namespaces = %namespaces,
        leader_election = %leader_election,
        metrics_addr = %settings.metrics_addr,
        sync_period = ?settings.sync_period,
        client_probe_languages = %settings.client_probe_languages,
        broker_requests_per_second = settings.broker_requests_per_second,
        "operator started"
    );
}

/// `rebalancer run`. Every start-up failure is returned as one line, before any controller starts.
pub async fn run(settings: Settings) -> Result<(), String> {
    let listener = server::bind(settings.metrics_addr).await?;
    let preflight::Connection {
        client,
        checks: checks_client,
        server: api_server,
    } = preflight::connect().await?;
    let metrics = Arc::new(metrics::Metrics::default());
    let leadership = match &settings.lease {
        Some(_) => leader::Leadership::follower(),
        None => leader::Leadership::always(),
    };
    let ready = Arc::new(AtomicBool::new(false));
    // Served while the checks are retried: a liveness probe that got no answer would restart
    // the pod in the middle of the wait (/readyz says 503 until the caches have synced).
    let server = tokio::spawn(server::serve(
        listener,
        metrics.clone(),
        leadership.clone(),
        ready.clone(),
    ));
    let checks = preflight::checks(&settings.namespaces, settings.lease.as_ref());
    if let Err(e) = preflight::run(
        &checks_client,
        &api_server,
        &checks,
        settings.startup_timeout,
    )
    .await
    {
        server.abort();
        return Err(e);
    }

    let (gained_tx, gained_rx) = signal::channel(0u64);
    let mut ctx = Context::new(
        client.clone(),
        metrics.clone(),
        leadership.clone(),
        settings.instance.clone(),
    );
    ctx.sync_period = settings.sync_period;
    ctx.slow_syncs = Arc::new(tokio::sync::Semaphore::new(context::slow_sync_slots(
        settings.concurrency,
    )));
    ctx.client_grace = settings.client_grace;
    ctx.probes = Arc::new(group::probe::Probes::new(group::probe::Policy::new(
        settings.client_probe_languages.clone(),
        settings.sync_period,
    )));
    let throttle = crate::rocketmq::Throttle::new(
        settings.broker_requests_per_second,
        BROKER_SLOT_WAIT,
        metrics.broker_request("sent"),
        metrics.broker_request("refused"),
    );
    ctx.rocketmq = Arc::new(
        crate::rocketmq::Connections::new(crate::rocketmq::Timeouts::default())
            .with_throttle(Arc::new(throttle)),
    );
    let ctx = Arc::new(ctx);
    let lease_task = settings
        .lease
        .clone()
        .map(|lease| tokio::spawn(lease.run(client.clone(), leadership.clone(), gained_tx)));
    let (caches, loops): (Vec<_>, Vec<_>) = scopes(&settings.namespaces)
        .iter()
        .map(|ns| run_scope(&client, &ctx, ns.as_deref(), &settings, &gained_rx))
        .unzip();
    log_started(&settings, &api_server);
    tokio::join!(
        futures::future::join_all(loops),
        mark_ready_when_synced(caches, ready)
    );
    // The controllers stopped on SIGTERM/SIGINT: stop renewing, then hand the lease over.
    if let (Some(task), Some(lease)) = (lease_task, &settings.lease) {
        task.abort();
        if let Err(e) = lease.release(client.clone(), &leadership).await {
            tracing::warn!(error = %e, "could not release the lease");
        }
    }
    server.abort();
    tracing::info!("shut down");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::{reflector, watcher};

    #[tokio::test]
    async fn leadership_gains_trigger_once_each_and_the_start_value_does_not() {
        let (tx, rx) = signal::channel(0u64);
        let mut gained = Box::pin(leadership_gained(rx));
        tx.send(1).unwrap();
        assert_eq!(gained.next().await, Some(()));
        tx.send(2).unwrap();
        drop(tx);
        assert_eq!(gained.next().await, Some(()));
        assert_eq!(gained.next().await, None);
    }

    #[tokio::test]
    async fn ready_only_once_every_cache_of_every_scope_has_synced() {
        let (groups_a, mut wa) = reflector::store::<ConsumerGroup>();
        let (pods_a, mut wpa) = reflector::store::<Pod>();
        let (groups_b, mut wb) = reflector::store::<ConsumerGroup>();
        let (mut a, mut b) = (Caches::default(), Caches::default());
        a.add(groups_a);
        a.add(pods_a);
        b.add(groups_b);
        let ((flag_a, synced_a), (flag_b, synced_b)) =
            (signal::channel(false), signal::channel(false));
        let ready = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(mark_ready_when_synced(
            vec![synced_a, synced_b],
            ready.clone(),
        ));
        let raising = tokio::spawn(async move {
            tokio::join!(raise_when_synced(a, &flag_a), raise_when_synced(b, &flag_b));
            (flag_a, flag_b)
        });
        wa.apply_watcher_event(&watcher::Event::InitDone);
        wb.apply_watcher_event(&watcher::Event::InitDone);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!ready.load(Ordering::SeqCst));
        wpa.apply_watcher_event(&watcher::Event::InitDone);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(ready.load(Ordering::SeqCst));
        drop(raising);
    }

    #[tokio::test]
    async fn a_scope_stopped_before_syncing_leaves_the_operator_unready() {
        let (groups, writer) = reflector::store::<ConsumerGroup>();
        let mut caches = Caches::default();
        caches.add(groups);
        let (flag, synced) = signal::channel(false);
        let ready = Arc::new(AtomicBool::new(false));
        drop(writer);
        raise_when_synced(caches, &flag).await;
        drop(flag);
        tokio::time::timeout(
            Duration::from_secs(5),
            mark_ready_when_synced(vec![synced], ready.clone()),
        )
        .await
        .unwrap();
        assert!(!ready.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn many_tasks_waiting_for_a_scope_all_wake() {
        // A kube store wakes one waiter only; the scope's flag must wake every one.
        let (groups, mut writer) = reflector::store::<ConsumerGroup>();
        let mut caches = Caches::default();
        caches.add(groups);
        let (flag, synced) = signal::channel(false);
        let waiters: Vec<_> = (0..16)
            .map(|_| tokio::spawn(scope::wait_synced(synced.clone())))
            .collect();
        writer.apply_watcher_event(&watcher::Event::InitDone);
        raise_when_synced(caches, &flag).await;
        for waiter in waiters {
            let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("every waiter wakes")
                .unwrap();
            assert!(woke);
        }
    }
}
