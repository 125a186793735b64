//! The real `rebalancer` binary, started as users start it: `rebalancer run --leader-elect` with
//! a kubeconfig holding a token of the chart's ServiceAccount.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use super::envtest::{free_port, signal, spawn, stop};

/// One running operator replica.
pub struct Operator {
    child: Child,
    /// Its identity (`POD_NAME`), which is the Lease holder when it leads.
    pub identity: String,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    log: PathBuf,
}

/// How to start a replica.
pub struct Launch<'a> {
    /// Kubeconfig file.
    pub kubeconfig: &'a Path,
    /// Namespace of the Lease (the chart's release namespace).
    pub lease_namespace: &'a str,
    /// `--namespace` flags (empty: all namespaces).
    pub namespaces: Vec<String>,
    /// `POD_NAME`.
    pub identity: String,
    /// Lease duration in seconds.
    pub lease_duration: u64,
    /// Folder for the log file.
    pub log_dir: &'a Path,
    /// More arguments after `run`.
    pub extra_args: Vec<String>,
}

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_rebalancer")
}

impl Operator {
    /// Starts `rebalancer run` with leader election on.
    pub fn start(launch: Launch<'_>) -> Operator {
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = launch.log_dir.join(format!("{}.log", launch.identity));
        let mut command = Command::new(binary());
        command
            .arg("run")
            .arg("--leader-elect")
            .arg(format!("--lease-namespace={}", launch.lease_namespace))
            .arg(format!("--lease-duration={}", launch.lease_duration))
            .arg(format!("--metrics-addr={metrics_addr}"))
            .args(launch.namespaces.iter().map(|n| format!("--namespace={n}")))
            .args(&launch.extra_args)
            .env("KUBECONFIG", launch.kubeconfig)
            .env("POD_NAME", &launch.identity)
            .env_remove("POD_NAMESPACE")
            .env(
                "RUST_LOG",
                std::env::var("REBALANCER_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(std::process::Stdio::null());
        let file = std::fs::File::create(&log).expect("operator log file");
        command.stdout(file.try_clone().unwrap()).stderr(file);
        let child = spawn(command).expect("starting the rebalancer binary");
        Operator {
            child,
            identity: launch.identity,
            metrics_addr,
            log,
        }
    }

    /// Its process id (for `/proc/<pid>/status` and `/proc/<pid>/stat`: peak RSS, CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stdout and stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no clean-up, no Lease release.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait up to 15 s for a clean exit.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        signal(&self.child, libc::SIGTERM);
        let until = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// GET `path` on the metrics server: (status code, body), or an error text.
    pub async fn http_get(&self, path: &str) -> Result<(u16, String), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.metrics_addr)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("not HTTP: {response}"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((code, body))
    }

    /// The value of metric `name` with exactly these `labels` (`k="v"` pairs as printed), summed
    /// over matching lines.
    pub async fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        let (_, text) = self.http_get("/metrics").await.ok()?;
        let prefix = if labels.is_empty() {
            format!("{name} ")
        } else {
            format!("{name}{{{labels}}} ")
        };
        let values: Vec<f64> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|v| v.trim().parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// Lines of its log that show a request RBAC refused. Every test asserts there are none:
    /// the chart must grant everything the operator does.
    pub fn forbidden_lines(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("forbidden") || l.contains("code: 403"))
            .map(str::to_string)
            .collect()
    }

    /// Panics when RBAC refused any of its requests or it panicked.
    pub fn assert_clean(&self) {
        let forbidden = self.forbidden_lines();
        assert!(
            forbidden.is_empty(),
            "the chart's RBAC refused requests of {}:\n{}",
            self.identity,
            forbidden.join("\n")
        );
        let logs = self.logs();
        assert!(
            !logs.contains("panicked") && !logs.contains("internal error"),
            "{} panicked:\n{logs}",
            self.identity
        );
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of operator {} ---\n{}", self.identity, self.logs());
        }
        stop(&mut self.child, Duration::from_secs(5));
    }
}
