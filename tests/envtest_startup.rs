//! Start-up of the real `rebalancer run` binary against a real kube-apiserver (envtest).
//!
//! Every start-up failure (no kubeconfig, server unreachable, wrong CA, rejected token, CRDs
//! missing, RBAC refusing the first list, metrics address taken) must end as exactly one
//! `error: ` line on stderr and exit code 1, never a panic or a backtrace (`RUST_BACKTRACE=1` is
//! set to prove it); the words of each line are those of `src/controller/preflight.rs`. Failures
//! of configuration fail at once; an API server that cannot be reached yet (or answers 429 or
//! 5xx) is retried for `--startup-timeout` seconds. And the binary must start over TLS under the
//! chart's RBAC: it used to panic there because rustls had no crypto provider. See
//! `tests/support/`.

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use rebalancer::api::{ConsumerGroup, Topic};
use serde_json::json;
use support::envtest::{Server, free_port, spawn};
use support::fixtures::{Env, condition_is};
use support::operator::{Launch, Operator, binary};
use support::tcp_proxy::TcpProxy;
use support::{chart, eventually};

/// A run that has not exited by then is killed and fails the test: a start-up failure must be
/// reported, not retried forever.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a replica may take to exit after SIGTERM (release the Lease, stop the watchers).
const SHUTDOWN_WITHIN: Duration = Duration::from_secs(5);

/// Words that must never appear in the output of the binary.
const NEVER: [&str; 4] = ["panicked", "backtrace", "internal error", "cryptoprovider"];

/// One finished run of the binary.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Output {
    fn describe(&self) -> String {
        format!(
            "exit {:?} after {:?}\n--- stderr\n{}--- stdout\n{}",
            self.status.code(),
            self.elapsed,
            self.stderr,
            self.stdout
        )
    }
}

/// A folder for the files of one test: kubeconfigs, an empty HOME, the outputs of each run.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("envtest-startup-")
        .tempdir()
        .expect("temp dir")
}

/// Runs `rebalancer run ARGS` with a clean environment (no in-cluster variables, no
/// `POD_NAMESPACE`, an empty HOME) holding only `KUBECONFIG=kubeconfig`, `RUST_BACKTRACE=1` and
/// `RUST_LOG=info`. Adds `--metrics-addr=127.0.0.1:<free port>` unless `args` name one. Kills
/// the process and fails when it has not exited within [`EXIT_TIMEOUT`].
async fn run_binary(dir: &Path, kubeconfig: &Path, args: &[String]) -> Output {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::SeqCst);
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (stdout_file, stderr_file) = (
        dir.join(format!("run-{run}.stdout")),
        dir.join(format!("run-{run}.stderr")),
    );
    let mut command = Command::new(binary());
    command.arg("run").args(args);
    if !args.iter().any(|a| a.starts_with("--metrics-addr")) {
        command.arg(format!("--metrics-addr=127.0.0.1:{}", free_port()));
    }
    command
        .env_clear()
        .env("HOME", &home)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_file).unwrap())
        .stderr(std::fs::File::create(&stderr_file).unwrap());
    let started = Instant::now();
    let mut child = spawn(command).expect("starting the rebalancer binary");
    let read = |path: &PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the binary") {
            break status;
        }
        if started.elapsed() > EXIT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`rebalancer run {}` had not exited after {EXIT_TIMEOUT:?} (killed)\n--- stderr\n{}--- stdout\n{}",
                args.join(" "),
                read(&stderr_file),
                read(&stdout_file)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Output {
        status,
        stdout: read(&stdout_file),
        stderr: read(&stderr_file),
        elapsed: started.elapsed(),
    }
}

/// Fails unless `text` is free of panics and backtraces.
fn assert_no_panic(text: &str, what: &str) {
    let lower = text.to_lowercase();
    for word in NEVER {
        assert!(!lower.contains(word), "{what} contains {word:?}:\n{text}");
    }
}

/// Fails unless the run exited with code 1 and printed exactly one line on stderr, starting
/// with `error: ` and containing every keyword, and no panic or backtrace anywhere. Returns the
/// line.
fn assert_one_line_error(output: &Output, keywords: &[&str]) -> String {
    let described = output.describe();
    assert_eq!(
        output.status.code(),
        Some(1),
        "want exit code 1\n{described}"
    );
    let lines: Vec<&str> = output.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "want exactly one line on stderr\n{described}"
    );
    assert!(
        output.stderr.ends_with('\n'),
        "stderr does not end its line\n{described}"
    );
    let line = lines[0];
    assert!(
        line.starts_with("error: "),
        "the line does not start with `error: `\n{described}"
    );
    for keyword in keywords {
        assert!(
            line.contains(keyword),
            "the line lacks {keyword:?}: {line}\n{described}"
        );
    }
    assert_no_panic(&format!("{}{}", output.stdout, output.stderr), &described);
    println!("after {:?}: {line}", output.elapsed);
    line.to_string()
}

/// A configuration error is reported without retrying: within this, and with no retry logged.
const AT_ONCE: Duration = Duration::from_secs(5);

/// What the operator logs (on stdout) for each start-up attempt it retries.
const RETRYING: &str = "start-up check failed, retrying";

/// Fails unless the run failed at once, without a single retry.
fn assert_at_once(output: &Output) {
    assert!(
        output.elapsed < AT_ONCE && !output.stdout.contains(RETRYING),
        "want a failure at once, without retrying (within {AT_ONCE:?})\n{}",
        output.describe()
    );
}

/// `text` without ANSI escape sequences (the text log format colours levels and field names).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// N of the "(still failing after N attempts" a run that gave up ends its line with.
fn attempts_of(line: &str) -> usize {
    line.split("(still failing after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no attempt count in: {line}"))
}

/// Writes a kubeconfig for `server_url`, trusting the CA in `ca_file`, with `token`.
fn write_kubeconfig(
    dir: &Path,
    name: &str,
    server_url: &str,
    ca_file: &Path,
    token: &str,
) -> PathBuf {
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server_url}\n    certificate-authority: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
        ca = ca_file.display(),
    );
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A self-signed CA that signed nothing the server serves, PEM.
fn foreign_ca_pem() -> String {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "some other CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .pem()
}

/// Waits until the replica's `/readyz` answers 200; fails at once when it exits.
async fn wait_ready(op: &mut Operator) {
    let until = Instant::now() + support::deadline();
    loop {
        if let Some(status) = op.exited() {
            panic!("{} exited ({status}) before it was ready", op.identity);
        }
        let last = match op.http_get("/readyz").await {
            Ok((200, _)) => return,
            Ok((code, body)) => format!("{code} {body}"),
            Err(e) => e,
        };
        assert!(
            Instant::now() < until,
            "{} not ready within {:?}: {last}",
            op.identity,
            support::deadline()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM, and the replica exits with code 0 within [`SHUTDOWN_WITHIN`].
fn assert_clean_shutdown(op: &mut Operator) {
    let started = Instant::now();
    let status = op.terminate();
    let took = started.elapsed();
    let status = status.unwrap_or_else(|| panic!("{} did not exit after SIGTERM", op.identity));
    assert_eq!(
        status.code(),
        Some(0),
        "{} exited with {status} after SIGTERM",
        op.identity
    );
    assert!(
        took <= SHUTDOWN_WITHIN,
        "{} took {took:?} to exit after SIGTERM",
        op.identity
    );
    assert_no_panic(&op.logs(), "the operator's log");
}

#[tokio::test]
async fn no_kubeconfig_is_one_line() {
    let Some(_server) = support::envtest::shared("startup-no-kubeconfig").await else {
        return;
    };
    let dir = scratch();
    let missing = dir.path().join("absent").join("kubeconfig");
    let output = run_binary(dir.path(), &missing, &[]).await;
    assert_one_line_error(
        &output,
        &[
            "error: no Kubernetes configuration was found",
            "set KUBECONFIG (or create ~/.kube/config)",
            "in-cluster configuration",
            // The file it tried.
            &missing.display().to_string(),
        ],
    );
    assert_at_once(&output);
}

#[tokio::test]
async fn unreachable_server_is_one_line() {
    let Some(server) = support::envtest::shared("startup-unreachable").await else {
        return;
    };
    let dir = scratch();
    // Nothing listens there: the port was bound and released.
    let url = format!("https://127.0.0.1:{}", free_port());
    let kubeconfig = write_kubeconfig(
        dir.path(),
        "unreachable",
        &url,
        &server.ca_file,
        &server.admin_token,
    );
    let output = run_binary(dir.path(), &kubeconfig, &["--startup-timeout=0".into()]).await;
    let line = assert_one_line_error(
        &output,
        &[
            &format!("error: cannot reach the Kubernetes API server at {url}: "),
            "Connection refused",
        ],
    );
    // 0: not retried.
    assert_at_once(&output);
    assert!(!line.contains("--startup-timeout"), "{line}");
}

/// Nothing ever listens: connection refused is retried (0.5 s, 1 s, then the last attempt at
/// the deadline), one warning per retry, then one line naming the cause and the timeout.
#[tokio::test]
async fn unreachable_server_is_retried_until_the_startup_timeout() {
    let Some(server) = support::envtest::shared("startup-unreachable-retried").await else {
        return;
    };
    let dir = scratch();
    let url = format!("https://127.0.0.1:{}", free_port());
    let kubeconfig = write_kubeconfig(
        dir.path(),
        "unreachable",
        &url,
        &server.ca_file,
        &server.admin_token,
    );
    let output = run_binary(dir.path(), &kubeconfig, &["--startup-timeout=2".into()]).await;
    let line = assert_one_line_error(
        &output,
        &[
            &format!("error: cannot reach the Kubernetes API server at {url}: "),
            "Connection refused",
            "(still failing after ",
            " attempts in 2.",
            "--startup-timeout=2)",
        ],
    );
    assert!(
        output.elapsed >= Duration::from_secs(2) && output.elapsed < Duration::from_secs(10),
        "want an exit after the 2 s timeout, and soon after it\n{}",
        output.describe()
    );
    let stdout = without_colours(&output.stdout);
    let retries: Vec<&str> = stdout.lines().filter(|l| l.contains(RETRYING)).collect();
    let delays: Vec<&str> = retries
        .iter()
        .filter_map(|l| l.split("retry_in=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    // Attempts at 0, 0.5 s, 1.5 s and at the deadline, 2 s; fewer on a slow machine, where
    // a wait is cut short to make the last attempt at the deadline.
    let attempts = attempts_of(&line);
    assert!(attempts >= 3, "{}", output.describe());
    assert_eq!(
        delays.len(),
        attempts - 1,
        "want one warning per retry\n{}",
        output.describe()
    );
    assert_eq!(delays[0], "500ms", "{}", output.describe());
    for line in &retries {
        assert!(
            line.contains("WARN") && line.contains("Connection refused"),
            "a retry line without level or cause: {line}"
        );
    }
}

/// An API server that answers 503 (as one does while it starts): each attempt is one request
/// (kube's own retries are off for the checks, which used to spend 20 s in them and then say "no
/// answer"), retried with the backoff, and the final line keeps the server's answer.
#[tokio::test]
async fn a_server_answering_503_is_retried_and_its_answer_reported() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(server) = support::envtest::shared("startup-503").await else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let unavailable = tokio::spawn(async move {
        let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the server is currently unable to handle the request","reason":"ServiceUnavailable","code":503}"#;
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let response = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    let dir = scratch();
    let kubeconfig = write_kubeconfig(
        dir.path(),
        "unavailable",
        &url,
        &server.ca_file,
        &server.admin_token,
    );
    let output = run_binary(dir.path(), &kubeconfig, &["--startup-timeout=2".into()]).await;
    unavailable.abort();
    let line = assert_one_line_error(
        &output,
        &[
            &format!(
                "error: `list consumergroups.rebalancer.dev in all namespaces` failed at {url}: \
                 503 ServiceUnavailable: the server is currently unable to handle the request"
            ),
            "(still failing after ",
            " attempts in 2.",
            "--startup-timeout=2)",
        ],
    );
    assert!(
        output.elapsed < Duration::from_secs(10),
        "{}",
        output.describe()
    );
    let attempts = attempts_of(&line);
    assert!(attempts >= 3, "{}", output.describe());
    assert_eq!(
        served.load(Ordering::SeqCst),
        attempts,
        "one request per attempt\n{}",
        output.describe()
    );
    let stdout = without_colours(&output.stdout);
    let retries: Vec<&str> = stdout.lines().filter(|l| l.contains(RETRYING)).collect();
    assert_eq!(retries.len(), attempts - 1, "{}", output.describe());
    assert!(
        retries.iter().all(|l| l.contains("503 ServiceUnavailable")),
        "{}",
        output.describe()
    );
}

/// An operator started while the API server is away (nothing listens at its address yet, as
/// while it restarts) waits for it: /healthz answers meanwhile, /readyz says not ready, and once
/// the server appears there the operator gets ready and reconciles.
// Multi-threaded: the proxy's tasks must keep forwarding while the test blocks in
// `terminate` (the operator releases its Lease through the proxy on SIGTERM).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_appears_later_is_waited_for() {
    let Some(env) = Env::new("startup-server-appears-later").await else {
        return;
    };
    let port = free_port();
    let upstream = env
        .server
        .url
        .strip_prefix("https://")
        .expect("an https URL")
        .to_string();
    let kubeconfig = env.dir.join("later.kubeconfig");
    let text = std::fs::read_to_string(&env.kubeconfig).unwrap();
    assert!(text.contains(&env.server.url), "{text}");
    std::fs::write(
        &kubeconfig,
        text.replace(&env.server.url, &format!("https://127.0.0.1:{port}")),
    )
    .unwrap();
    let mut op = Operator::start(Launch {
        kubeconfig: &kubeconfig,
        lease_namespace: &env.ns,
        namespaces: vec![env.ns.clone()],
        identity: "op".into(),
        lease_duration: 4,
        log_dir: &env.dir,
        extra_args: Vec::new(),
    });
    // At least two refused attempts, and alive but not ready meanwhile.
    let until = Instant::now() + support::deadline();
    while op.logs().matches(RETRYING).count() < 2 {
        if let Some(status) = op.exited() {
            panic!(
                "the operator exited ({status}) while waiting:\n{}",
                op.logs()
            );
        }
        assert!(
            Instant::now() < until,
            "fewer than two retries logged within {:?}:\n{}",
            support::deadline(),
            op.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(op.http_get("/healthz").await, Ok((200, "ok".into())));
    assert_eq!(op.http_get("/readyz").await, Ok((503, "starting".into())));
    // One line per attempt, naming the cause: nothing else is logged while waiting.
    let waiting = without_colours(&op.logs());
    for line in waiting.lines() {
        assert!(
            line.contains(RETRYING) && line.contains("Connection refused"),
            "a line other than a retry naming its cause while waiting: {line}\n{waiting}"
        );
    }

    let _proxy = TcpProxy::listen(&format!("127.0.0.1:{port}"), &upstream).await;
    wait_ready(&mut op).await;
    assert!(
        op.logs()
            .contains("the Kubernetes API server answered every start-up check"),
        "{}",
        op.logs()
    );
    env.wait_holder("op").await;
    env.topic("orders", &[("broker-a", 4)]).await;
    env.deployment("consumer", 2).await;
    env.pods("consumer", 2).await;
    env.group(
        "cg",
        json!({
            "topics": ["orders"],
            "strategy": "Averagely",
            "consumers": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "consumer"}}
        }),
    )
    .await;
    let group = env
        .wait_group("cg", "Ready with 2 consumers", |g| {
            condition_is(g, "Ready", "True")?;
            match g.status.as_ref().map(|s| s.allocation.consumers) {
                Some(2) => Ok(()),
                other => Err(format!("{other:?} consumers")),
            }
        })
        .await;
    assert_eq!(group.status.unwrap().allocation.queues, 4);
    op.assert_clean();
    assert_clean_shutdown(&mut op);
}

#[tokio::test]
async fn foreign_ca_is_one_tls_line() {
    let Some(server) = support::envtest::shared("startup-foreign-ca").await else {
        return;
    };
    let dir = scratch();
    let ca = dir.path().join("other-ca.crt");
    std::fs::write(&ca, foreign_ca_pem()).unwrap();
    let kubeconfig = write_kubeconfig(
        dir.path(),
        "foreign-ca",
        &server.url,
        &ca,
        &server.admin_token,
    );
    let output = run_binary(dir.path(), &kubeconfig, &[]).await;
    assert_one_line_error(
        &output,
        &[
            &format!("error: TLS handshake with {} failed: ", server.url),
            "invalid peer certificate",
            "(check certificate-authority or certificate-authority-data of the cluster in the \
             kubeconfig)",
        ],
    );
    assert_at_once(&output);
}

#[tokio::test]
async fn rejected_token_is_one_401_line() {
    let Some(server) = support::envtest::shared("startup-rejected-token").await else {
        return;
    };
    let dir = scratch();
    let kubeconfig = write_kubeconfig(
        dir.path(),
        "bogus-token",
        &server.url,
        &server.ca_file,
        "not-a-token-this-server-knows",
    );
    let output = run_binary(dir.path(), &kubeconfig, &[]).await;
    assert_one_line_error(
        &output,
        &[
            &format!(
                "error: the API server at {} rejected the credentials (401 Unauthorized)",
                server.url
            ),
            "missing, expired or not for this cluster",
        ],
    );
    assert_at_once(&output);
}

/// On a server of its own: the CRDs are deleted, which the shared server's tests must not see.
#[tokio::test]
async fn missing_crds_are_one_line() {
    let Some(assets) = support::envtest::assets("startup-missing-crds") else {
        return;
    };
    let server = Server::start(&assets)
        .await
        .unwrap_or_else(|e| panic!("own API server did not start: {e}"));
    let admin = server.admin().await.expect("admin client");
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let names = [ConsumerGroup::crd_name(), Topic::crd_name()];
    for name in names {
        crds.delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting CRD {name}: {e}"));
    }
    // Gone from the API and no longer served (a 404 for the list the preflight makes first).
    let groups: Api<ConsumerGroup> = Api::all(admin.clone());
    eventually("the CRDs to be deleted and no longer served", || async {
        for name in names {
            if crds
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                return Err(format!("CRD {name} still exists"));
            }
        }
        match groups.list_metadata(&ListParams::default().limit(1)).await {
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            other => Err(format!("listing consumergroups: {other:?}")),
        }
    })
    .await;

    let dir = scratch();
    let kubeconfig = write_kubeconfig(
        dir.path(),
        "admin",
        &server.url,
        &server.ca_file,
        &server.admin_token,
    );
    let output = run_binary(dir.path(), &kubeconfig, &[]).await;
    assert_one_line_error(
        &output,
        &[
            "error: the rebalancer.dev CRDs are not installed",
            "(`list consumergroups.rebalancer.dev in all namespaces` answered 404 Not Found)",
            "kubectl apply --server-side -f crds/",
        ],
    );
    assert_at_once(&output);
    // The preflight only read: still no CRDs.
    for name in names {
        assert!(
            crds.get_opt(name).await.unwrap().is_none(),
            "CRD {name} reappeared"
        );
    }
}

/// A ServiceAccount without any binding: its first list (the ConsumerGroups) is refused, in a
/// namespace and across all namespaces, and the line names the scope and the fix.
#[tokio::test]
async fn rbac_refusing_the_first_list_is_one_line() {
    let Some(server) = support::envtest::shared("startup-rbac-unbound").await else {
        return;
    };
    let admin = server.admin().await.expect("admin client");
    let ns = server.namespace(&admin, "startup-rbac-unbound").await;
    let sa = "unbound";
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(sa.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &account)
        .await
        .expect("creating the ServiceAccount");
    let token = chart::token(&admin, &ns, sa).await;
    let dir = scratch();
    let kubeconfig = write_kubeconfig(dir.path(), sa, &server.url, &server.ca_file, &token);
    let user =
        format!("User \"system:serviceaccount:{ns}:{sa}\" cannot list resource \"consumergroups\"");

    let output = run_binary(dir.path(), &kubeconfig, &[format!("--namespace={ns}")]).await;
    assert_one_line_error(
        &output,
        &[
            &format!(
                "error: not allowed to list consumergroups.rebalancer.dev in namespace \"{ns}\" \
                 (403 Forbidden): "
            ),
            &user,
            "grant it with the chart's Role in that namespace (list it in watchNamespaces)",
        ],
    );
    assert_at_once(&output);

    let output = run_binary(dir.path(), &kubeconfig, &[]).await;
    assert_one_line_error(
        &output,
        &[
            "error: not allowed to list consumergroups.rebalancer.dev in all namespaces \
             (403 Forbidden): ",
            &user,
            "grant it with the chart's ClusterRole (watchNamespaces empty)",
        ],
    );
    assert_at_once(&output);
}

/// The chart in namespaced mode grants one namespace: asking for another is refused with a line
/// naming it (also when the granted one is asked for first); the granted one starts, gets ready
/// and stops cleanly.
#[tokio::test]
async fn chart_rbac_namespaced_mode_refuses_an_unwatched_namespace() {
    let test = "startup-rbac-namespaced";
    let Some(server) = support::envtest::shared(test).await else {
        return;
    };
    let Some(helm) = chart::helm(test) else {
        return;
    };
    let admin = server.admin().await.expect("admin client");
    let release_ns = server.namespace(&admin, "startup-ns-release").await;
    let watched = server.namespace(&admin, "startup-ns-watched").await;
    let unwatched = server.namespace(&admin, "startup-ns-unwatched").await;
    let token = chart::install_rbac(
        &admin,
        &helm,
        &release_ns,
        &["--set", &format!("watchNamespaces={{{watched}}}")],
    )
    .await;
    let dir = scratch();
    let kubeconfig = write_kubeconfig(
        dir.path(),
        "namespaced",
        &server.url,
        &server.ca_file,
        &token,
    );
    let refused = format!(
        "error: not allowed to list consumergroups.rebalancer.dev in namespace \"{unwatched}\" \
         (403 Forbidden): "
    );
    let keywords = [refused.as_str(), "list it in watchNamespaces"];

    let output = run_binary(
        dir.path(),
        &kubeconfig,
        &[format!("--namespace={unwatched}")],
    )
    .await;
    assert_one_line_error(&output, &keywords);

    let output = run_binary(
        dir.path(),
        &kubeconfig,
        &[
            format!("--namespace={watched}"),
            format!("--namespace={unwatched}"),
        ],
    )
    .await;
    let line = assert_one_line_error(&output, &keywords);
    assert!(
        !line.contains(&format!("\"{watched}\"")),
        "the line names the watched namespace: {line}"
    );

    // As the chart runs it: the watched namespace, leader election in the release namespace.
    let mut op = Operator::start(Launch {
        kubeconfig: &kubeconfig,
        lease_namespace: &release_ns,
        namespaces: vec![watched.clone()],
        identity: "op".into(),
        lease_duration: 4,
        log_dir: dir.path(),
        extra_args: Vec::new(),
    });
    wait_ready(&mut op).await;
    op.assert_clean();
    assert_clean_shutdown(&mut op);
}

/// Regression guard for the rustls crypto-provider crash: the binary used to panic on its first
/// TLS connection to any real API server ("no process-level CryptoProvider"). Over TLS, under
/// the chart's RBAC, with leader election: it gets ready, holds the Lease, logs no panic, and on
/// SIGTERM exits 0 promptly and hands the Lease back.
#[tokio::test]
async fn tls_leader_starts_without_rustls_crypto_provider_panic() {
    let Some(env) = Env::new("startup-rustls-crypto-provider").await else {
        return;
    };
    // Not `env.leader`: a replica that crashes at start fails here at once, with its log.
    let mut op = env.operator("op");
    wait_ready(&mut op).await;
    env.wait_holder("op").await;
    let leases: Api<Lease> = env.api();
    let holder = |lease: Lease| lease.spec.and_then(|s| s.holder_identity);
    assert_eq!(
        holder(leases.get("rebalancer-leader").await.unwrap()).as_deref(),
        Some("op")
    );
    assert!(op.exited().is_none(), "the operator exited:\n{}", op.logs());
    op.assert_clean();
    assert_no_panic(&op.logs(), "the operator's log");
    assert_clean_shutdown(&mut op);
    let lease = leases.get("rebalancer-leader").await.unwrap();
    assert_eq!(
        holder(lease.clone()),
        None,
        "the Lease was not released on SIGTERM: {:?}",
        lease.spec
    );
}

#[tokio::test]
async fn metrics_address_in_use_is_one_line() {
    let Some(server) = support::envtest::shared("startup-metrics-addr").await else {
        return;
    };
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a port");
    let addr: SocketAddr = taken.local_addr().unwrap();
    let dir = scratch();
    // Everything else is fine: the admin kubeconfig of the real server.
    let kubeconfig = write_kubeconfig(
        dir.path(),
        "admin",
        &server.url,
        &server.ca_file,
        &server.admin_token,
    );
    let output = run_binary(dir.path(), &kubeconfig, &[format!("--metrics-addr={addr}")]).await;
    assert_one_line_error(
        &output,
        &[
            &format!("error: cannot listen on {addr} (--metrics-addr): "),
            "already in use",
        ],
    );
    drop(taken);
}
