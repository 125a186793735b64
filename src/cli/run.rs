//! `rebalancer run`: the operator.

use std::net::SocketAddr;
use std::time::Duration;

use crate::controller::preflight::one_line;
use crate::controller::{Settings, leader::LeaseLock};

/// Log output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `rebalancer run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Namespace to watch (repeatable). Default: all namespaces.
    #[arg(long = "namespace")]
    pub namespaces: Vec<String>,
    /// Hold a coordination.k8s.io Lease and write only while holding it.
    #[arg(long)]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "rebalancer-leader")]
    pub lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Seconds a lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_duration: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Most group reconciles running at once (per watched namespace). Bounds the load on the
    /// API server during a cold start or after a restart.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_reconciles: u16,
    /// Seconds between two reads of the route of a Topic with `nameServers` (each Topic is also
    /// read on every change of it).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_period: u64,
    /// Seconds a `consumerIds: Client` group's clients may hold other queues than computed before
    /// `ClientsDiverge=True` (clients re-allocate every 20 s by default, and rocketmq-rust's
    /// broker does not tell them when one leaves).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub client_grace: u64,
    /// `consumerIds: Client`: the languages (as clients declare them to the broker) of the
    /// clients asked which queues they hold (GET_CONSUMER_RUNNING_INFO, forwarded by a broker).
    /// A client that does not answer it can be disconnected by the broker (rocketmq-rust) or hold
    /// a broker thread for 10 s (Apache RocketMQ), so only clients known to answer are asked:
    /// a comma-separated list, `*` for every client, `none` to ask nobody.
    #[arg(long, default_value = crate::controller::context::DEFAULT_PROBE_LANGUAGES)]
    pub client_probe_languages: crate::controller::group::probe::Languages,
    /// Most requests per second the operator sends to brokers, all groups and Topics together;
    /// a request that would exceed it waits up to 1 s, then is refused (metric
    /// rebalancer_broker_requests_total).
    #[arg(long, default_value_t = crate::controller::context::DEFAULT_BROKER_RPS, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub broker_requests_per_second: u32,
    /// Seconds to keep retrying the start-up checks while the API server cannot be reached or
    /// answers 429 or 5xx (e.g. while it restarts), waiting 0.5 s, doubling up to 10 s, between
    /// attempts; 0: fail at the first error. Rejected credentials, missing permissions or CRDs
    /// and an untrusted certificate fail at once.
    #[arg(long, default_value_t = 120)]
    pub startup_timeout: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

fn init_logging(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // kube's client logs every failed request as an ERROR without its cause ("failed with error
    // client error (Connect)"), also those retried at start-up and by the watchers, each of
    // which the operator logs itself with the cause. Naming kube_client in RUST_LOG shows them.
    let named = std::env::var("RUST_LOG").is_ok_and(|v| v.contains("kube_client"));
    if !named && let Ok(quiet) = "kube_client::client::builder=off".parse() {
        filter = filter.add_directive(quiet);
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Starts the operator and blocks until it is asked to stop.
pub fn run(args: &RunArgs) -> Result<(), String> {
    init_logging(args.log_format);
    let instance = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty());
    let lease = if args.leader_elect {
        let namespace = args
            .lease_namespace
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or("--leader-elect needs --lease-namespace or $POD_NAMESPACE")?;
        let identity = instance
            .clone()
            .unwrap_or_else(|| format!("rebalancer-{}", std::process::id()));
        let duration = Duration::from_secs(args.lease_duration.max(2));
        Some(LeaseLock {
            name: args.lease_name.clone(),
            namespace,
            identity,
            duration,
            renew_every: duration / 3,
        })
    } else {
        None
    };
    let settings = Settings {
        namespaces: args.namespaces.clone(),
        lease,
        metrics_addr: args.metrics_addr,
        instance,
        concurrency: args.max_concurrent_reconciles,
        sync_period: Duration::from_secs(args.sync_period),
        client_grace: Duration::from_secs(args.client_grace),
        client_probe_languages: args.client_probe_languages.clone(),
        broker_requests_per_second: args.broker_requests_per_second,
        startup_timeout: Duration::from_secs(args.startup_timeout),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(crate::controller::run(settings));
    // A plain drop would wait for blocking tasks, e.g. a DNS lookup that has not timed out yet.
    runtime.shutdown_background();
    result.map_err(|e| one_line(&e))
}
