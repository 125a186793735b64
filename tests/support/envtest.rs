//! A real kube-apiserver and etcd for the tests, from `KUBEBUILDER_ASSETS` (the envtest layout:
//! a folder holding `kube-apiserver` and `etcd`).
//!
//! Each test binary starts one server ([`shared`]) on free loopback ports, with a CA and a serving
//! certificate signed by it (so kube-rs's real rustls path runs), an admin token, and
//! service-account signing (so TokenRequest works). The CRDs in `crds/` are installed with
//! server-side apply. Tests that restart the API server start their own ([`Server::start`]).
//!
//! Every process is spawned with `PR_SET_PDEATHSIG` from one thread that lives as long as the
//! test process, so a panicking, timed-out or killed test binary never leaves a server behind;
//! servers owned by a test are also stopped by `Drop`.

use std::ffi::OsString;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};

/// Set (to `1`) where the suite must run: a missing `KUBEBUILDER_ASSETS` or a server that does
/// not start is then a failure, never a skip. `.ci/run` sets it.
pub const REQUIRE_VAR: &str = "REBALANCER_REQUIRE_ENVTEST";

/// Field manager of the harness's own writes.
pub const HARNESS_MANAGER: &str = "envtest-harness";

/// The assets folder, or `None` after printing why the test is skipped.
pub fn assets(test: &str) -> Option<PathBuf> {
    match std::env::var_os("KUBEBUILDER_ASSETS").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None if required() => panic!(
            "{REQUIRE_VAR}=1 but KUBEBUILDER_ASSETS is not set: the envtest suite must run here"
        ),
        None => {
            println!(
                "SKIP {test}: KUBEBUILDER_ASSETS is not set (a folder with kube-apiserver and etcd: \
                 `setup-envtest use 1.26 -p path`, or ../shared/envtest/bin)"
            );
            None
        }
    }
}

/// Whether skipping is forbidden here.
pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// A free loopback port (bound, read back, released).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` so that it dies with the test process. `PR_SET_PDEATHSIG` fires when the
/// spawning *thread* exits, so every child is spawned from one thread that never does.
pub fn spawn(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("envtest-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let mut command = command;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    sender
        .lock()
        .unwrap()
        .send((command, tx))
        .expect("spawner thread gone");
    rx.recv().expect("spawner thread gone")
}

/// Sends `signal` to `child` (no-op when it has exited).
pub fn signal(child: &Child, signal: i32) {
    // SAFETY: plain syscall on a pid we own.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// Stops a child: SIGTERM, then SIGKILL after `grace`.
pub fn stop(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child, libc::SIGTERM);
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Certificates and keys of one server, written under its folder.
struct Pki {
    ca_pem: String,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    sa_key_file: PathBuf,
    sa_pub_file: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "envtest CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params
        .subject_alt_names
        .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let sa = KeyPair::generate().unwrap();

    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca_pem: ca.pem(),
        ca_file: write("ca.crt", &ca.pem()),
        cert_file: write("apiserver.crt", &cert.pem()),
        key_file: write("apiserver.key", &key.serialize_pem()),
        sa_key_file: write("sa.key", &sa.serialize_pem()),
        sa_pub_file: write("sa.pub", &sa.public_key_pem()),
    }
}

/// A running etcd + kube-apiserver pair.
pub struct Server {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    assets: PathBuf,
    etcd: Mutex<Child>,
    apiserver: Mutex<Option<Child>>,
    apiserver_args: Vec<OsString>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The CA that signed the serving certificate, PEM.
    pub ca_pem: String,
    /// File holding [`Server::ca_pem`].
    pub ca_file: PathBuf,
    /// A `system:masters` bearer token.
    pub admin_token: String,
}

impl Server {
    /// Starts etcd and kube-apiserver from `assets`, waits until `/readyz` is ok and installs
    /// the CRDs.
    pub async fn start(assets: &Path) -> Result<Server, String> {
        let tmp = tempfile::Builder::new()
            .prefix("envtest-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let dir = tmp.path().to_path_buf();
        let pki = make_pki(&dir);
        let admin_token = format!("admin-{}", super::random_suffix(16));
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{admin_token},admin,admin-uid,system:masters\n"),
        )
        .map_err(|e| e.to_string())?;

        let (client_port, peer_port, secure_port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(assets.join("etcd"));
        etcd.arg("--data-dir")
            .arg(dir.join("etcd"))
            .args(["--name", "default"])
            .args(["--listen-client-urls", &etcd_url])
            .args(["--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .arg("--unsafe-no-fsync");
        let etcd = spawn_logged(etcd, &dir.join("etcd.log"))
            .map_err(|e| format!("cannot start {}: {e}", assets.join("etcd").display()))?;

        let arg = |k: &str, v: &dyn AsRef<std::ffi::OsStr>| {
            let mut s = OsString::from(format!("--{k}="));
            s.push(v.as_ref());
            s
        };
        let apiserver_args = vec![
            arg("etcd-servers", &etcd_url),
            arg("secure-port", &secure_port.to_string()),
            arg("bind-address", &"127.0.0.1"),
            arg("advertise-address", &"127.0.0.1"),
            arg("tls-cert-file", &pki.cert_file),
            arg("tls-private-key-file", &pki.key_file),
            arg("client-ca-file", &pki.ca_file),
            arg("token-auth-file", &dir.join("tokens.csv")),
            arg("authorization-mode", &"RBAC"),
            arg(
                "service-account-issuer",
                &"https://kubernetes.default.svc.cluster.local",
            ),
            arg("service-account-key-file", &pki.sa_pub_file),
            arg("service-account-signing-key-file", &pki.sa_key_file),
            arg("service-cluster-ip-range", &"10.96.0.0/16"),
            arg("endpoint-reconciler-type", &"none"),
            arg("disable-admission-plugins", &"ServiceAccount"),
            arg("cert-dir", &dir.join("certs")),
            arg("allow-privileged", &"true"),
        ];
        let server = Server {
            _dir: tmp,
            dir: dir.clone(),
            assets: assets.to_path_buf(),
            etcd: Mutex::new(etcd),
            apiserver: Mutex::new(None),
            apiserver_args,
            url: format!("https://127.0.0.1:{secure_port}"),
            ca_pem: pki.ca_pem,
            ca_file: pki.ca_file,
            admin_token,
        };
        server.start_apiserver()?;
        server.wait_ready(Duration::from_secs(60)).await?;
        server.install_crds().await?;
        Ok(server)
    }

    /// Starts kube-apiserver (again) on the same port and etcd.
    pub fn start_apiserver(&self) -> Result<(), String> {
        let mut command = Command::new(self.assets.join("kube-apiserver"));
        command.args(&self.apiserver_args);
        let child = spawn_logged(command, &self.dir.join("apiserver.log")).map_err(|e| {
            format!(
                "cannot start {}: {e}",
                self.assets.join("kube-apiserver").display()
            )
        })?;
        *self.apiserver.lock().unwrap() = Some(child);
        Ok(())
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL); etcd keeps running.
    pub fn stop_apiserver(&self) {
        if let Some(mut child) = self.apiserver.lock().unwrap().take() {
            stop(&mut child, Duration::from_secs(10));
        }
    }

    /// Stops and starts kube-apiserver, and waits until it is ready again.
    pub async fn restart_apiserver(&self) -> Result<(), String> {
        self.stop_apiserver();
        self.start_apiserver()?;
        self.wait_ready(Duration::from_secs(60)).await
    }

    /// Polls `/readyz` until it answers `ok`, failing early when a process exited.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let until = Instant::now() + within;
        let client = self.admin().await?;
        let mut last = String::new();
        while Instant::now() < until {
            self.check_alive()?;
            let request = http::Request::get("/readyz").body(Vec::new()).unwrap();
            match client.request_text(request).await {
                Ok(text) if text.trim() == "ok" => return Ok(()),
                Ok(text) => last = text,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "kube-apiserver not ready within {within:?}: {last}\n{}",
            self.logs_tail()
        ))
    }

    fn check_alive(&self) -> Result<(), String> {
        if let Ok(Some(status)) = self.etcd.lock().unwrap().try_wait() {
            return Err(format!("etcd exited ({status})\n{}", self.logs_tail()));
        }
        if let Some(child) = self.apiserver.lock().unwrap().as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(format!(
                "kube-apiserver exited ({status})\n{}",
                self.logs_tail()
            ));
        }
        Ok(())
    }

    /// The last lines of both servers' logs, for failure messages.
    pub fn logs_tail(&self) -> String {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        format!(
            "--- etcd.log (tail)\n{}\n--- apiserver.log (tail)\n{}",
            tail("etcd.log"),
            tail("apiserver.log")
        )
    }

    /// A kubeconfig (YAML) for `token`, trusting this server's CA.
    pub fn kubeconfig_yaml(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: user\ncurrent-context: envtest\n",
            url = self.url,
            ca = self.ca_file.display(),
        )
    }

    /// Writes a kubeconfig for `token` into the server's folder and returns its path.
    pub fn write_kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, self.kubeconfig_yaml(token)).unwrap();
        path
    }

    /// A client for `token`, through kube-rs's own kubeconfig and rustls path.
    pub async fn client_for(&self, token: &str) -> Result<Client, String> {
        let kubeconfig =
            Kubeconfig::from_yaml(&self.kubeconfig_yaml(token)).map_err(|e| e.to_string())?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        Client::try_from(config).map_err(|e| e.to_string())
    }

    /// An admin (`system:masters`) client.
    pub async fn admin(&self) -> Result<Client, String> {
        self.client_for(&self.admin_token).await
    }

    /// A folder for the test's own files, inside the server's temp dir.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.dir.join("scratch").join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// Applies every CRD in `crds/` with server-side apply and waits until each is Established.
    pub async fn install_crds(&self) -> Result<(), String> {
        let client = self.admin().await?;
        let api: Api<CustomResourceDefinition> = Api::all(client);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        let mut names = Vec::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
            let crd: CustomResourceDefinition =
                serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            let name = crd.name_any();
            api.patch(
                &name,
                &PatchParams::apply(HARNESS_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .map_err(|e| format!("applying {}: {e}", file.display()))?;
            names.push(name);
        }
        let until = Instant::now() + Duration::from_secs(30);
        for name in names {
            loop {
                let crd = api.get(&name).await.map_err(|e| e.to_string())?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    break;
                }
                if Instant::now() > until {
                    return Err(format!("CRD {name} not Established within 30 s"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Creates a namespace named after the test (plus a random suffix) and returns its name.
    pub async fn namespace(&self, client: &Client, test: &str) -> String {
        let prefix: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let name = format!("{}-{}", prefix.trim_matches('-'), super::random_suffix(6));
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        name
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_apiserver();
        stop(self.etcd.get_mut().unwrap(), Duration::from_secs(5));
    }
}

fn spawn_logged(mut command: Command, log: &Path) -> std::io::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut header = file.try_clone()?;
    let _ = writeln!(header, "--- start {:?}", command.get_program());
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    spawn(command)
}

static SHARED: tokio::sync::OnceCell<Result<Server, String>> = tokio::sync::OnceCell::const_new();

/// Statics are never dropped: stop the shared server and remove its folder when the test
/// process exits normally (PDEATHSIG covers the abnormal exits).
extern "C" fn stop_shared() {
    if let Some(Ok(server)) = SHARED.get() {
        server.stop_apiserver();
        if let Ok(mut etcd) = server.etcd.lock() {
            stop(&mut etcd, Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&server.dir);
    }
}

/// The server of this test binary, started on first use; `None` (after one SKIP line) when no
/// assets are given. A server that cannot start fails the test.
pub async fn shared(test: &str) -> Option<&'static Server> {
    let assets = assets(test)?;
    let server = SHARED
        .get_or_init(|| async move {
            // SAFETY: registers a plain function; called once.
            unsafe {
                libc::atexit(stop_shared);
            }
            Server::start(&assets).await
        })
        .await;
    match server {
        Ok(s) => Some(s),
        Err(e) => panic!("the envtest API server did not start: {e}"),
    }
}
