//! Start-up checks. The client connects lazily and the watchers retry every failure forever, so
//! without these checks a missing CRD, a wrong CA or a missing RBAC rule would only show up as
//! warnings in a loop. Each check is the request a watcher would make first (or the lease's first
//! read), and its failure is turned into one line that says what to fix. A server that is only
//! away (restarting, overloaded) is waited for, up to `--startup-timeout`: see [`run`].

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::config::{InferConfigError, KubeconfigError};
use kube::{Client, Config};

use super::leader::LeaseLock;
use crate::api::{ConsumerGroup, Topic};

/// kube's default (30 s) makes an unreachable server look like a hung operator.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds a check as a whole: the connect timeout does not cover DNS, a TLS handshake with a
/// silent peer, or the client's own retries of 429/503/504.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// A kind the operator watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watched {
    /// `consumergroups.rebalancer.dev`.
    ConsumerGroups,
    /// `topics.rebalancer.dev`.
    Topics,
    /// `pods`.
    Pods,
    /// `deployments.apps`.
    Deployments,
    /// `statefulsets.apps`.
    StatefulSets,
    /// `replicasets.apps`.
    ReplicaSets,
}

impl Watched {
    /// Every watched kind, CRDs first: a missing CRD is the likeliest failure and the one with
    /// the clearest fix.
    pub const ALL: [Watched; 6] = [
        Watched::ConsumerGroups,
        Watched::Topics,
        Watched::Pods,
        Watched::Deployments,
        Watched::StatefulSets,
        Watched::ReplicaSets,
    ];

    /// The name kubectl and RBAC messages use: plural, qualified by the API group.
    pub fn name(self) -> String {
        match self {
            Watched::ConsumerGroups => qualified::<ConsumerGroup>(),
            Watched::Topics => qualified::<Topic>(),
            Watched::Pods => qualified::<Pod>(),
            Watched::Deployments => qualified::<Deployment>(),
            Watched::StatefulSets => qualified::<StatefulSet>(),
            Watched::ReplicaSets => qualified::<ReplicaSet>(),
        }
    }

    fn is_crd(self) -> bool {
        matches!(self, Watched::ConsumerGroups | Watched::Topics)
    }
}

fn qualified<K: kube::Resource<DynamicType = ()>>() -> String {
    let (plural, group) = (K::plural(&()), K::group(&()));
    if group.is_empty() {
        plural.into_owned()
    } else {
        format!("{plural}.{group}")
    }
}

/// One request the operator must be allowed to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// `list` a watched kind in one namespace (`None`: all namespaces).
    List {
        /// What is listed.
        kind: Watched,
        /// Where; `None` is all namespaces.
        namespace: Option<String>,
    },
    /// `get` the leader-election Lease.
    GetLease {
        /// Lease name.
        name: String,
        /// Lease namespace.
        namespace: String,
    },
}

impl Check {
    /// The request in words, e.g. `list pods in namespace "a"`.
    pub fn action(&self) -> String {
        match self {
            Check::List { kind, namespace } => format!("list {} {}", kind.name(), scope(namespace)),
            Check::GetLease { name, namespace } => {
                format!(
                    "get {} {name:?} in namespace {namespace:?}",
                    qualified::<Lease>()
                )
            }
        }
    }

    /// Which part of the Helm chart grants this request.
    fn rbac_hint(&self) -> String {
        match self {
            Check::List {
                namespace: None, ..
            } => "grant it with the chart's ClusterRole (watchNamespaces empty) or a ClusterRole \
                  and ClusterRoleBinding for the operator's service account"
                .into(),
            Check::List {
                namespace: Some(_), ..
            } => "grant it with the chart's Role in that namespace (list it in watchNamespaces) \
                  or a Role and RoleBinding for the operator's service account"
                .into(),
            Check::GetLease { name, .. } => format!(
                "grant it with the chart's leader-election Role (leaderElection.enabled=true, \
                 leaderElection.leaseName={name})"
            ),
        }
    }
}

fn scope(namespace: &Option<String>) -> String {
    match namespace {
        Some(ns) => format!("in namespace {ns:?}"),
        None => "in all namespaces".into(),
    }
}

/// What the operator will request at start: every watched kind in every scope, then the Lease.
pub fn checks(namespaces: &[String], lease: Option<&LeaseLock>) -> Vec<Check> {
    let lists = super::scopes(namespaces).into_iter().flat_map(|namespace| {
        Watched::ALL.into_iter().map(move |kind| Check::List {
            kind,
            namespace: namespace.clone(),
        })
    });
    let lease = lease.map(|l| Check::GetLease {
        name: l.name.clone(),
        namespace: l.namespace.clone(),
    });
    lists.chain(lease).collect()
}

/// The clients of the kubeconfig or of the in-cluster service account.
pub struct Connection {
    /// The operator's client, which retries 429, 503 and 504 itself (kube's default).
    pub client: Client,
    /// The start-up checks' client, which does not: [`run`] retries them with its own backoff
    /// and log line, and keeps the server's answer for the message. Through kube's retries a
    /// server answering 503 used up the whole [`CHECK_TIMEOUT`] and read "no answer".
    pub checks: Client,
    /// The API server's URL, for messages.
    pub server: String,
}

/// The clients and the API server's URL. Nothing is sent yet: see [`run`].
pub async fn connect() -> Result<Connection, String> {
    let mut config = Config::infer().await.map_err(|e| config_error(&e))?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    // The API server names writes without a field manager after the User-Agent; kube sends none,
    // which reads "unknown" in managedFields and audit logs.
    config.headers.push((
        axum::http::header::USER_AGENT,
        axum::http::HeaderValue::from_static(concat!("rebalancer/", env!("CARGO_PKG_VERSION"))),
    ));
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    let build = |config: Config| {
        Client::try_from(config).map_err(|e| {
            one_line(&format!(
                "cannot build a Kubernetes client for {server} from the configuration: {}",
                cause_text(&e)
            ))
        })
    };
    let mut without_retry = config.clone();
    without_retry.default_retry = false;
    let checks = build(without_retry)?;
    let client = build(config)?;
    Ok(Connection {
        client,
        checks,
        server,
    })
}

fn config_error(error: &InferConfigError) -> String {
    let kubeconfig = error
        .source()
        .and_then(|s| s.downcast_ref::<KubeconfigError>());
    describe_config_error(kubeconfig, &error.to_string())
}

/// The message for a configuration that could not be loaded. `kubeconfig` is why the kubeconfig
/// could not be used and `detail` the full error (both sources' failures).
pub fn describe_config_error(kubeconfig: Option<&KubeconfigError>, detail: &str) -> String {
    let detail = detail
        .strip_prefix("failed to infer config: ")
        .unwrap_or(detail);
    let absent = match kubeconfig {
        Some(KubeconfigError::FindPath) | None => true,
        Some(KubeconfigError::ReadConfig(e, _)) => e.kind() == io::ErrorKind::NotFound,
        Some(_) => false,
    };
    let message = if absent {
        format!(
            "no Kubernetes configuration was found: set KUBECONFIG (or create ~/.kube/config), \
             or run in a pod with a service account for the in-cluster configuration ({detail})"
        )
    } else {
        format!(
            "the kubeconfig cannot be used ({detail}); fix it or point KUBECONFIG at another file"
        )
    };
    one_line(&message)
}

/// The first wait between two start-up attempts; it doubles up to [`RETRY_MAX_DELAY`].
pub const RETRY_FIRST_DELAY: Duration = Duration::from_millis(500);

/// The longest wait between two start-up attempts: a server back after a long outage is found
/// within this.
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(10);

/// The waits between start-up attempts: 0.5 s, 1 s, 2 s, 4 s, 8 s, then 10 s.
pub fn backoff() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(RETRY_FIRST_DELAY), |d| {
        Some((*d * 2).min(RETRY_MAX_DELAY))
    })
}

/// One failed check: its one-line message, and whether waiting may fix it.
struct Failed {
    message: String,
    transient: bool,
}

/// Makes every request of `checks`, in order. A failure that may pass on its own (the server
/// unreachable, 429, a 5xx, no answer in time: see [`is_transient`]) is retried from the failed
/// check, after the waits of [`backoff`] with one warning each, as long as `retry_for` has not
/// passed since the start (`ZERO`: never). Any other failure, or the last one, is returned at
/// once. No attempt starts after `retry_for`; each waits up to [`CHECK_TIMEOUT`] for an answer.
pub async fn run(
    client: &Client,
    server: &str,
    checks: &[Check],
    retry_for: Duration,
) -> Result<(), String> {
    let started = tokio::time::Instant::now();
    // None: too far to represent, that is never.
    let deadline = started.checked_add(retry_for);
    let mut delays = backoff();
    let mut done = 0;
    let mut attempt = 1u32;
    loop {
        let failed = match run_from(client, server, &checks[done..]).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(
                        attempts = attempt,
                        after = ?started.elapsed(),
                        "the Kubernetes API server answered every start-up check"
                    );
                }
                return Ok(());
            }
            Err((passed, failed)) => {
                done += passed;
                failed
            }
        };
        let now = tokio::time::Instant::now();
        if !failed.transient || retry_for.is_zero() {
            return Err(failed.message);
        }
        if deadline.is_some_and(|d| now >= d) {
            return Err(one_line(&format!(
                "{} (still failing after {attempt} attempts in {}, --startup-timeout={})",
                failed.message,
                seconds(now - started),
                retry_for.as_secs()
            )));
        }
        // The last attempt is made at the deadline, not one wait before it.
        let delay = delays.next().unwrap_or(RETRY_MAX_DELAY);
        let delay = deadline.map_or(delay, |d| delay.min(d - now));
        tracing::warn!(
            attempt,
            error = %failed.message,
            retry_in = ?delay,
            "start-up check failed, retrying (--startup-timeout={})",
            retry_for.as_secs()
        );
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// Makes the requests of `checks` in order; at the first failure, how many passed before it.
async fn run_from(client: &Client, server: &str, checks: &[Check]) -> Result<(), (usize, Failed)> {
    for (passed, check) in checks.iter().enumerate() {
        let failed = match tokio::time::timeout(CHECK_TIMEOUT, execute(client, check)).await {
            Ok(Ok(())) => {
                tracing::debug!(check = %check.action(), "preflight ok");
                continue;
            }
            Ok(Err(e)) => Failed {
                message: describe(&e, server, check),
                transient: is_transient(&e),
            },
            Err(_) => Failed {
                message: timed_out(server, check, CHECK_TIMEOUT),
                transient: true,
            },
        };
        return Err((passed, failed));
    }
    Ok(())
}

/// Whether `error` may pass on its own: a server that is restarting, overloaded or not
/// reachable yet. Rejected credentials, missing permissions or CRDs and a certificate the
/// kubeconfig does not trust are configuration, which waiting does not fix.
pub fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::Service(_) | kube::Error::HyperError(_) => !is_tls(error) || dropped(error),
        _ => false,
    }
}

/// A connection refused, reset or closed half-way, or not made in time: what a restarting
/// server does, also during a TLS handshake (whose failures are otherwise configuration).
fn dropped(error: &(dyn StdError + 'static)) -> bool {
    chain(error).any(|e| {
        e.downcast_ref::<io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::NotConnected
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::TimedOut
            )
        })
    })
}

/// `d` as `20s`, or `1.5s` when not a whole number of seconds.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

async fn execute(client: &Client, check: &Check) -> Result<(), kube::Error> {
    match check {
        Check::List { kind, namespace } => list(client, *kind, namespace.as_deref()).await,
        // Absent is fine: the first replica creates it.
        Check::GetLease { name, namespace } => Api::<Lease>::namespaced(client.clone(), namespace)
            .get_metadata_opt(name)
            .await
            .map(drop),
    }
}

async fn list(client: &Client, kind: Watched, namespace: Option<&str>) -> Result<(), kube::Error> {
    match kind {
        Watched::ConsumerGroups => list_one::<ConsumerGroup>(client, namespace).await,
        Watched::Topics => list_one::<Topic>(client, namespace).await,
        Watched::Pods => list_one::<Pod>(client, namespace).await,
        Watched::Deployments => list_one::<Deployment>(client, namespace).await,
        Watched::StatefulSets => list_one::<StatefulSet>(client, namespace).await,
        Watched::ReplicaSets => list_one::<ReplicaSet>(client, namespace).await,
    }
}

/// Metadata only: an object our types cannot parse must not fail the check, only access can.
async fn list_one<K>(client: &Client, namespace: Option<&str>) -> Result<(), kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    super::scoped::<K>(client, namespace)
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map(drop)
}

fn timed_out(server: &str, check: &Check, after: Duration) -> String {
    unreachable(
        server,
        &format!(
            "no answer to `{}` within {}s",
            check.action(),
            after.as_secs()
        ),
    )
}

fn unreachable(server: &str, cause: &str) -> String {
    one_line(&format!(
        "cannot reach the Kubernetes API server at {server}: {cause}"
    ))
}

/// The message for `check` failing with `error` against `server`.
pub fn describe(error: &kube::Error, server: &str, check: &Check) -> String {
    let message = match error {
        kube::Error::Api(status) => {
            describe_status(status.code, &status.reason, &status.message, server, check)
        }
        kube::Error::Auth(_) => format!(
            "cannot authenticate to the API server at {server}: {}",
            cause_text(error)
        ),
        kube::Error::RustlsTls(_) => tls_failed(server, &cause_text(error)),
        kube::Error::Service(_) | kube::Error::HyperError(_) if is_tls(error) => {
            tls_failed(server, &cause_text(error))
        }
        kube::Error::Service(_) | kube::Error::HyperError(_) => {
            unreachable(server, &connect_cause(error))
        }
        _ => format!("`{}` failed at {server}: {error}", check.action()),
    };
    one_line(&message)
}

/// The connector's own timeout only says "deadline has elapsed".
fn connect_cause(error: &kube::Error) -> String {
    let cause = cause_text(error);
    let timed_out = chain(error).any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
    });
    if timed_out {
        format!(
            "no connection within {}s ({cause})",
            CONNECT_TIMEOUT.as_secs()
        )
    } else {
        cause
    }
}

fn tls_failed(server: &str, cause: &str) -> String {
    format!(
        "TLS handshake with {server} failed: {cause} (check certificate-authority or \
         certificate-authority-data of the cluster in the kubeconfig)"
    )
}

/// The message for an HTTP error answer.
pub fn describe_status(
    code: u16,
    reason: &str,
    message: &str,
    server: &str,
    check: &Check,
) -> String {
    match (code, check) {
        (401, _) => format!(
            "the API server at {server} rejected the credentials (401 Unauthorized): the token or \
             client certificate of the kubeconfig's user (or the pod's service account token) is \
             missing, expired or not for this cluster"
        ),
        (403, _) => format!(
            "not allowed to {} (403 Forbidden): {message}; {}",
            check.action(),
            check.rbac_hint()
        ),
        (404, Check::List { kind, .. }) if kind.is_crd() => format!(
            "the {} CRDs are not installed (`{}` answered 404 Not Found): install them with \
             `kubectl apply --server-side -f crds/` (or `helm install rebalancer \
             charts/rebalancer`, which includes them)",
            crate::api::GROUP,
            check.action()
        ),
        _ => format!(
            "`{}` failed at {server}: {code} {reason}: {message}",
            check.action()
        ),
    }
}

/// Whether a transport failure happened in the TLS handshake. rustls reports through `io::Error`
/// (kind `InvalidData`), wrapped once more by the connector; the message test is a fallback for
/// wrappings that lose the kind.
fn is_tls(error: &(dyn StdError + 'static)) -> bool {
    chain(error).any(|e| {
        let kind = e.downcast_ref::<io::Error>().map(io::Error::kind);
        let text = e.to_string().to_lowercase();
        kind == Some(io::ErrorKind::InvalidData)
            || ["tls", "certificate", "handshake"]
                .iter()
                .any(|w| text.contains(w))
    })
}

/// `error` and its causes, outermost first. An `io::Error`'s `source()` skips the error it wraps
/// (and so loses its type), hence the detour through `get_ref`.
fn chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e| match e.downcast_ref::<io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
        None => e.source(),
    })
}

/// The causes of `error` joined by ": ", without kube's own wrapper (its variant name tells a
/// user nothing). Wrappers that only print their cause again, and hyper's "client error
/// (Connect)", which only names the phase, are left out.
pub fn cause_text(error: &kube::Error) -> String {
    let mut messages: Vec<String> = Vec::new();
    for e in chain(error).skip(1) {
        let text = e.to_string();
        let repeated = messages.last().is_some_and(|m| m.contains(&text));
        if !repeated && !text.starts_with("client error (") {
            messages.push(text);
        }
    }
    if messages.is_empty() {
        return error.to_string();
    }
    messages.join(": ")
}

/// `text` on one line, so that a start-up failure is exactly one line on stderr.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    const SERVER: &str = "https://10.0.0.1:6443";

    fn list(kind: Watched, namespace: Option<&str>) -> Check {
        Check::List {
            kind,
            namespace: namespace.map(str::to_owned),
        }
    }

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, reason).with_code(code).boxed())
    }

    /// An error that prints `message` and has `source` as its cause, like hyper's wrappers.
    #[derive(Debug)]
    struct Wrapper {
        message: &'static str,
        source: Option<Box<dyn StdError + Send + Sync>>,
    }

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.message)
        }
    }

    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.source
                .as_deref()
                .map(|e| e as &(dyn StdError + 'static))
        }
    }

    fn wrap(message: &'static str, source: impl StdError + Send + Sync + 'static) -> Wrapper {
        Wrapper {
            message,
            source: Some(Box::new(source)),
        }
    }

    /// What hyper-util and the connectors return for a refused TCP connection.
    fn refused() -> kube::Error {
        let io = io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let connect = wrap("tcp connect error", io);
        kube::Error::Service(Box::new(wrap("client error (Connect)", connect)))
    }

    /// What hyper-rustls returns for an untrusted certificate: rustls' error in an `InvalidData`
    /// io::Error, wrapped again by the connector.
    fn untrusted() -> kube::Error {
        let rustls = Wrapper {
            message: "invalid peer certificate: UnknownIssuer",
            source: None,
        };
        let tls = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, rustls));
        kube::Error::Service(Box::new(wrap("client error (Connect)", tls)))
    }

    #[test]
    fn one_check_per_watched_kind_and_scope_then_the_lease() {
        let names =
            |checks: Vec<Check>| -> Vec<String> { checks.iter().map(Check::action).collect() };
        assert_eq!(
            names(checks(&[], None)),
            [
                "list consumergroups.rebalancer.dev in all namespaces",
                "list topics.rebalancer.dev in all namespaces",
                "list pods in all namespaces",
                "list deployments.apps in all namespaces",
                "list statefulsets.apps in all namespaces",
                "list replicasets.apps in all namespaces",
            ]
        );
        let lease = LeaseLock {
            name: "rebalancer-leader".into(),
            namespace: "ops".into(),
            identity: "me".into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        };
        let scoped = names(checks(&["a".into(), "b".into()], Some(&lease)));
        assert_eq!(scoped.len(), 13);
        assert_eq!(
            scoped[6],
            "list consumergroups.rebalancer.dev in namespace \"b\""
        );
        assert_eq!(
            scoped[12],
            "get leases.coordination.k8s.io \"rebalancer-leader\" in namespace \"ops\""
        );
    }

    #[test]
    fn a_missing_configuration_names_kubeconfig_and_in_cluster() {
        let missing = KubeconfigError::ReadConfig(
            io::Error::from(io::ErrorKind::NotFound),
            "/root/.kube/config".into(),
        );
        let detail = "failed to infer config: in-cluster: (failed to read an incluster \
                      environment variable: environment variable not found), kubeconfig: \
                      (failed to read kubeconfig from '\"/root/.kube/config\"': entity not found)";
        assert_eq!(
            describe_config_error(Some(&missing), detail),
            "no Kubernetes configuration was found: set KUBECONFIG (or create ~/.kube/config), \
             or run in a pod with a service account for the in-cluster configuration (in-cluster: \
             (failed to read an incluster environment variable: environment variable not found), \
             kubeconfig: (failed to read kubeconfig from '\"/root/.kube/config\"': entity not \
             found))"
        );
        assert!(
            describe_config_error(Some(&KubeconfigError::FindPath), "x")
                .starts_with("no Kubernetes configuration was found")
        );
    }

    #[test]
    fn a_broken_kubeconfig_is_not_reported_as_missing() {
        let broken = KubeconfigError::LoadContext("no context named \"prod\"".into());
        assert_eq!(
            describe_config_error(
                Some(&broken),
                "failed to infer config: in-cluster: (x), kubeconfig: (failed to load current \
                 context: no context named \"prod\")"
            ),
            "the kubeconfig cannot be used (in-cluster: (x), kubeconfig: (failed to load current \
             context: no context named \"prod\")); fix it or point KUBECONFIG at another file"
        );
    }

    #[test]
    fn a_refused_connection_says_the_server_is_unreachable() {
        let check = list(Watched::ConsumerGroups, None);
        assert_eq!(
            describe(&refused(), SERVER, &check),
            "cannot reach the Kubernetes API server at https://10.0.0.1:6443: tcp connect error: \
             Connection refused (os error 111)"
        );
        let dns =
            io::Error::other("failed to lookup address information: Name or service not known");
        let error = kube::Error::Service(Box::new(wrap("dns error", dns)));
        assert_eq!(
            describe(&error, SERVER, &check),
            "cannot reach the Kubernetes API server at https://10.0.0.1:6443: dns error: failed \
             to lookup address information: Name or service not known"
        );
    }

    #[test]
    fn a_connect_timeout_says_how_long_it_waited() {
        let elapsed = io::Error::new(io::ErrorKind::TimedOut, "deadline has elapsed");
        let error = kube::Error::Service(Box::new(wrap("client error (Connect)", elapsed)));
        assert_eq!(
            describe(&error, SERVER, &list(Watched::ConsumerGroups, None)),
            "cannot reach the Kubernetes API server at https://10.0.0.1:6443: no connection \
             within 10s (deadline has elapsed)"
        );
    }

    #[test]
    fn no_answer_in_time_says_the_server_is_unreachable() {
        assert_eq!(
            timed_out(
                SERVER,
                &list(Watched::Pods, Some("a")),
                Duration::from_secs(20)
            ),
            "cannot reach the Kubernetes API server at https://10.0.0.1:6443: no answer to `list \
             pods in namespace \"a\"` within 20s"
        );
    }

    #[test]
    fn an_untrusted_certificate_is_a_tls_failure() {
        assert_eq!(
            describe(&untrusted(), SERVER, &list(Watched::ConsumerGroups, None)),
            "TLS handshake with https://10.0.0.1:6443 failed: invalid peer certificate: \
             UnknownIssuer (check certificate-authority or certificate-authority-data of the \
             cluster in the kubeconfig)"
        );
    }

    #[test]
    fn a_tls_failure_is_found_by_its_message_when_the_kind_is_lost() {
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
        let error = kube::Error::Service(Box::new(wrap("client error (Connect)", eof)));
        assert!(
            describe(&error, SERVER, &list(Watched::Pods, None))
                .starts_with("TLS handshake with https://10.0.0.1:6443 failed: tls handshake eof")
        );
    }

    #[test]
    fn rejected_credentials_are_reported_as_such() {
        let error = api(401, "Unauthorized", "Unauthorized");
        assert_eq!(
            describe(&error, SERVER, &list(Watched::ConsumerGroups, None)),
            "the API server at https://10.0.0.1:6443 rejected the credentials (401 \
             Unauthorized): the token or client certificate of the kubeconfig's user (or the \
             pod's service account token) is missing, expired or not for this cluster"
        );
    }

    #[test]
    fn a_404_on_our_kinds_means_the_crds_are_missing() {
        let error = api(404, "Failed to parse error data", "404 page not found");
        assert_eq!(
            describe(&error, SERVER, &list(Watched::Topics, Some("a"))),
            "the rebalancer.dev CRDs are not installed (`list topics.rebalancer.dev in namespace \
             \"a\"` answered 404 Not Found): install them with `kubectl apply --server-side -f \
             crds/` (or `helm install rebalancer charts/rebalancer`, which includes them)"
        );
        // Not ours: no CRD hint.
        assert_eq!(
            describe(&error, SERVER, &list(Watched::Pods, None)),
            "`list pods in all namespaces` failed at https://10.0.0.1:6443: 404 Failed to parse \
             error data: 404 page not found"
        );
    }

    #[test]
    fn a_403_names_the_request_and_the_chart_rbac() {
        let message = "pods is forbidden: User \"system:serviceaccount:ops:rebalancer\" cannot \
                       list resource \"pods\" in API group \"\" at the cluster scope";
        let error = api(403, "Forbidden", message);
        assert_eq!(
            describe(&error, SERVER, &list(Watched::Pods, None)),
            "not allowed to list pods in all namespaces (403 Forbidden): pods is forbidden: User \
             \"system:serviceaccount:ops:rebalancer\" cannot list resource \"pods\" in API group \
             \"\" at the cluster scope; grant it with the chart's ClusterRole (watchNamespaces \
             empty) or a ClusterRole and ClusterRoleBinding for the operator's service account"
        );
        let message = "deployments.apps is forbidden: User \"system:serviceaccount:ops:rebalancer\" \
                       cannot list resource \"deployments\" in API group \"apps\" in the namespace \"a\"";
        assert_eq!(
            describe(
                &api(403, "Forbidden", message),
                SERVER,
                &list(Watched::Deployments, Some("a"))
            ),
            "not allowed to list deployments.apps in namespace \"a\" (403 Forbidden): \
             deployments.apps is forbidden: User \"system:serviceaccount:ops:rebalancer\" cannot \
             list resource \"deployments\" in API group \"apps\" in the namespace \"a\"; grant it \
             with the chart's Role in that namespace (list it in watchNamespaces) or a Role and \
             RoleBinding for the operator's service account"
        );
    }

    #[test]
    fn a_403_on_the_lease_points_at_the_leader_election_role() {
        let lease = Check::GetLease {
            name: "rebalancer-leader".into(),
            namespace: "ops".into(),
        };
        let message = "leases.coordination.k8s.io \"rebalancer-leader\" is forbidden: User \
                       \"system:serviceaccount:ops:rebalancer\" cannot get resource \"leases\" in \
                       API group \"coordination.k8s.io\" in the namespace \"ops\"";
        assert_eq!(
            describe(&api(403, "Forbidden", message), SERVER, &lease),
            "not allowed to get leases.coordination.k8s.io \"rebalancer-leader\" in namespace \
             \"ops\" (403 Forbidden): leases.coordination.k8s.io \"rebalancer-leader\" is \
             forbidden: User \"system:serviceaccount:ops:rebalancer\" cannot get resource \
             \"leases\" in API group \"coordination.k8s.io\" in the namespace \"ops\"; grant it \
             with the chart's leader-election Role (leaderElection.enabled=true, \
             leaderElection.leaseName=rebalancer-leader)"
        );
    }

    #[test]
    fn other_answers_keep_code_reason_and_message_on_one_line() {
        let error = api(500, "InternalError", "etcd\nunavailable");
        assert_eq!(
            describe(&error, SERVER, &list(Watched::Topics, None)),
            "`list topics.rebalancer.dev in all namespaces` failed at https://10.0.0.1:6443: 500 \
             InternalError: etcd unavailable"
        );
    }

    #[test]
    fn the_server_restarting_or_overloaded_is_retried_configuration_is_not() {
        let io_error = |kind: io::ErrorKind| {
            let io = io::Error::new(kind, "x");
            kube::Error::Service(Box::new(wrap("client error (Connect)", io)))
        };
        for error in [
            refused(),
            api(503, "ServiceUnavailable", "starting"),
            api(500, "InternalError", "etcd unavailable"),
            api(504, "Timeout", "x"),
            api(429, "TooManyRequests", "x"),
            io_error(io::ErrorKind::ConnectionReset),
            io_error(io::ErrorKind::TimedOut),
            // A restarting server closing the connection in the handshake.
            io_error(io::ErrorKind::UnexpectedEof),
            kube::Error::Service(Box::new(wrap(
                "dns error",
                io::Error::other("failed to lookup address information"),
            ))),
        ] {
            assert!(is_transient(&error), "{error:?}");
        }
        for error in [
            api(401, "Unauthorized", "Unauthorized"),
            api(403, "Forbidden", "x"),
            api(404, "NotFound", "404 page not found"),
            api(422, "Invalid", "x"),
            untrusted(),
        ] {
            assert!(!is_transient(&error), "{error:?}");
        }
    }

    #[test]
    fn retries_wait_half_a_second_doubling_up_to_ten() {
        let secs: Vec<f64> = backoff().take(8).map(|d| d.as_secs_f64()).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]);
        assert_eq!(seconds(Duration::from_secs(20)), "20s");
        assert_eq!(seconds(Duration::from_millis(1540)), "1.5s");
    }

    #[test]
    fn one_line_joins_lines() {
        assert_eq!(one_line("a\r\n  b\n\nc "), "a b c");
    }
}
