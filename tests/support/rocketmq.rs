//! A real RocketMQ for the tests: rocketmq-rust's NameServer and Broker(s), from `ROCKETMQ_BIN`
//! (a folder holding `rocketmq-namesrv-rust` and `rocketmq-broker-rust`).
//!
//! [`RocketMq::start`] runs one NameServer and one broker on free ports ([`RocketMq::start_with`]:
//! more brokers of one cluster, more NameServers), with `ROCKETMQ_HOME`, `HOME`, the working
//! directory and the stores in a temp dir; processes are spawned with [`super::envtest::spawn`]
//! (`PR_SET_PDEATHSIG`, so they die with the test process) and stopped (SIGTERM, then SIGKILL) on
//! `Drop`. It returns once every NameServer lists every broker in its cluster info.
//!
//! Brokers re-register with the NameServers every 10 s (`registerNameServerPeriod=10000`, the
//! smallest period rocketmq-rust accepts, as Apache RocketMQ): a restarted NameServer knows the
//! brokers again within about 10 s.
//!
//! The same struct also runs Apache RocketMQ 4.9.7's Java NameServer and Brokers
//! ([`RocketMq::start_java_with`], [`shared_java`]) from `ROCKETMQ_JAVA_HOME` (a folder holding
//! `bin/rocketmq-java`, e.g. `../shared/rocketmq-java`). Differences from the rust flavour:
//! - each process gets `RMQ_WORK` (its `user.home`; Java's own logs land in
//!   `RMQ_WORK/logs/rocketmqlogs/`, which [`RocketMq::logs_tail`] also shows);
//! - the Java servers bind every interface (4.9.7 has no bind-address setting), so their ports
//!   are picked free on `0.0.0.0` (as [`free_run`] does for both flavours);
//! - a broker maps small files (64 MiB commit log, 300 kB consume queues, a 4 MiB index) instead
//!   of the 1 GiB + 420 MB defaults;
//! - the brokers start once the NameServers answer (a 4.9.7 broker that misses its first
//!   registration only retries 10 s later);
//! - a Java broker's SIGTERM shutdown takes 5-8 s, so all the Java processes are signalled
//!   together and then waited for.
//!
//! Measured on 2 cores (idle): a Java NameServer answers about 3 s after its spawn; with two
//! brokers, all are registered 5.4-11 s after the first spawn ([`RocketMq::started_in`]);
//! stopping all three takes about 7 s. Resident memory: about 100 MB per NameServer, 175 MB per
//! broker.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rebalancer::rocketmq::{Command as Request, RemotingClient, Timeouts, code};

use super::envtest::{signal, spawn, stop};

/// Set (to `1`) where the RocketMQ tests must run: a missing `ROCKETMQ_BIN` is then a failure.
pub const REQUIRE_VAR: &str = "REBALANCER_REQUIRE_ROCKETMQ";

/// Set (to `1`) where the Java RocketMQ tests must run: a missing `ROCKETMQ_JAVA_HOME` is then a
/// failure.
pub const REQUIRE_JAVA_VAR: &str = "REBALANCER_REQUIRE_ROCKETMQ_JAVA";

/// The folder holding `bin/rocketmq-java` (Apache RocketMQ 4.9.7), from `ROCKETMQ_JAVA_HOME`, or
/// `None` after printing why the test is skipped.
pub fn java_home(test: &str) -> Option<PathBuf> {
    match std::env::var_os("ROCKETMQ_JAVA_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var(REQUIRE_JAVA_VAR).is_ok_and(|v| v == "1") => panic!(
            "{REQUIRE_JAVA_VAR}=1 but ROCKETMQ_JAVA_HOME is not set: the Java RocketMQ tests \
             must run here"
        ),
        None => {
            println!(
                "SKIP {test}: ROCKETMQ_JAVA_HOME is not set (a folder with bin/rocketmq-java, \
                 Apache RocketMQ 4.9.7: ../shared/rocketmq-java)"
            );
            None
        }
    }
}

/// The folder of the servers, or `None` after printing why the test is skipped.
pub fn bin_dir(test: &str) -> Option<PathBuf> {
    match std::env::var_os("ROCKETMQ_BIN").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") => {
            panic!("{REQUIRE_VAR}=1 but ROCKETMQ_BIN is not set: the RocketMQ tests must run here")
        }
        None => {
            println!(
                "SKIP {test}: ROCKETMQ_BIN is not set (a folder with rocketmq-namesrv-rust and \
                 rocketmq-broker-rust: `cargo install --locked rocketmq-namesrv rocketmq-broker`, \
                 or ../shared/rocketmq/bin)"
            );
            None
        }
    }
}

/// Where the servers' folder goes: `ROCKETMQ_STORE_DIR` if set, else whichever of the temp dir
/// and `/dev/shm` has the most room by the broker's own measure.
///
/// A rocketmq-rust 1.0.0 broker exits at start-up (status 70, "Service lifecycle operation
/// failed", no reason logged) when its store's file system is more than 90% used, counted as
/// `(total - available) / total` (so space reserved for root counts as used, unlike `df`'s Use%),
/// or has less room than one commit-log file. That limit is clamped in the broker
/// (`diskSpaceWarningLevelRatio` cannot raise it), and a CI machine whose disk holds a cold
/// `target/` can be past it: measured here, a 252 GB disk that `df` shows 59% full is 85% full
/// to the broker. The tests write a few kilobytes, so a RAM-backed `/dev/shm` serves as well.
fn store_root() -> Result<PathBuf, String> {
    const MAX_USED: f64 = 0.88;
    const MIN_AVAILABLE: u64 = 4 * COMMIT_LOG_FILE;
    if let Some(dir) = std::env::var_os("ROCKETMQ_STORE_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let candidates = [std::env::temp_dir(), PathBuf::from("/dev/shm")];
    let measured: Vec<(PathBuf, Option<(f64, u64)>)> = candidates
        .into_iter()
        .map(|dir| {
            let room = disk_room(&dir);
            (dir, room)
        })
        .collect();
    measured
        .iter()
        .filter_map(|(dir, room)| room.map(|(used, available)| (dir, used, available)))
        .filter(|&(_, used, available)| used < MAX_USED && available >= MIN_AVAILABLE)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(dir, _, _)| dir.clone())
        .ok_or_else(|| {
            let seen: Vec<String> = measured
                .iter()
                .map(|(dir, room)| match room {
                    Some((used, available)) => format!(
                        "{}: {:.0}% used, {} MiB available",
                        dir.display(),
                        used * 100.0,
                        available >> 20
                    ),
                    None => format!("{}: not measurable", dir.display()),
                })
                .collect();
            format!(
                "no folder for the RocketMQ stores: a broker needs its file system under 90% used \
                 (total - available) and at least a commit-log file free; want < {:.0}% and \
                 {} MiB ({}). Free some space or set ROCKETMQ_STORE_DIR.",
                MAX_USED * 100.0,
                MIN_AVAILABLE >> 20,
                seen.join("; ")
            )
        })
}

/// `(used, available bytes)` of the file system holding `dir`, used as the broker counts it.
fn disk_room(dir: &Path) -> Option<(f64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let total = stat.f_blocks as u64 * stat.f_frsize as u64;
    let available = stat.f_bavail as u64 * stat.f_frsize as u64;
    (total > 0 && available <= total)
        .then(|| ((total - available) as f64 / total as f64, available))
}

/// Size of one commit-log file (the broker's default is 1 GiB, and it wants that much free).
const COMMIT_LOG_FILE: u64 = 64 << 20;

/// Name of the cluster the brokers join.
pub const CLUSTER: &str = "DefaultCluster";

/// Which servers a [`RocketMq`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    /// rocketmq-rust 1.0.0: `rocketmq-namesrv-rust` and `rocketmq-broker-rust` in `ROCKETMQ_BIN`.
    Rust,
    /// Apache RocketMQ 4.9.7: `bin/rocketmq-java namesrv|broker` in `ROCKETMQ_JAVA_HOME`.
    Java,
}

impl Flavor {
    /// How long a process gets after SIGTERM before SIGKILL. A Java broker's shutdown hook
    /// takes 5-8 s on 2 cores (measured up to 7.4 s while a build ran), a Java NameServer's up
    /// to 3 s.
    fn stop_grace(self) -> Duration {
        match self {
            Flavor::Rust => Duration::from_secs(10),
            Flavor::Java => Duration::from_secs(20),
        }
    }
}

/// One broker process.
pub struct Broker {
    /// `brokerName`, `broker-a`, `broker-b`, ...
    pub name: String,
    /// `127.0.0.1:listenPort`, as registered with the NameServer.
    pub addr: String,
    child: Mutex<Option<Child>>,
}

/// NameServers and their brokers.
pub struct RocketMq {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    flavor: Flavor,
    /// `ROCKETMQ_BIN` (rust) or `ROCKETMQ_JAVA_HOME` (Java).
    bin: PathBuf,
    /// From the first spawn to every broker registered with every NameServer.
    started_in: Duration,
    namesrv_ports: Vec<u16>,
    namesrvs: Vec<Mutex<Option<Child>>>,
    /// The brokers, in start order.
    pub brokers: Vec<Broker>,
}

/// Ports handed out by this process (never twice, even after their processes stop).
fn taken() -> &'static Mutex<HashSet<u16>> {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    TAKEN.get_or_init(Default::default)
}

/// Whether `port` can be bound on every interface right now.
fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
        && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// `n` consecutive ports `base..base+n`, all bindable, none handed out before, below the
/// kernel's ephemeral range (32768+) so that no outgoing connection takes one meanwhile.
fn free_run(n: u16) -> u16 {
    let mut taken = taken().lock().unwrap();
    for _ in 0..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        let base = 20000 + (h.finish() % 12000) as u16;
        let ports: Vec<u16> = (base..base + n).collect();
        if ports.iter().all(|p| !taken.contains(p) && bindable(*p)) {
            taken.extend(&ports);
            return base;
        }
    }
    panic!("no {n} consecutive free ports in 20000..32000");
}

fn spawn_logged(mut command: Command, dir: &Path, log: &str) -> std::io::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(log))?;
    let mut header = file.try_clone()?;
    let _ = writeln!(header, "--- start {:?}", command.get_program());
    command
        .current_dir(dir)
        .env("ROCKETMQ_HOME", dir.join("home"))
        .env("HOME", dir.join("home"))
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    spawn(command)
}

impl RocketMq {
    /// A NameServer and one broker (`broker-a`); `None` (after a SKIP line) without
    /// `ROCKETMQ_BIN`. Servers that do not come up fail the test.
    pub async fn start(test: &str) -> Option<RocketMq> {
        RocketMq::start_with(test, 1, 1).await
    }

    /// `namesrvs` NameServers and `brokers` brokers (`broker-a`, `broker-b`, ...) of one
    /// cluster, each broker registered with every NameServer.
    pub async fn start_with(test: &str, brokers: usize, namesrvs: usize) -> Option<RocketMq> {
        let bin = bin_dir(test)?;
        match RocketMq::try_start(Flavor::Rust, &bin, brokers, namesrvs).await {
            Ok(mq) => Some(mq),
            Err(e) => panic!("RocketMQ did not start for {test}: {e}"),
        }
    }

    /// Apache RocketMQ 4.9.7 (Java): `namesrvs` NameServers and `brokers` brokers (`broker-a`,
    /// `broker-b`, ...) of [`CLUSTER`], each broker registered with every NameServer; `None`
    /// (after a SKIP line) without `ROCKETMQ_JAVA_HOME`. Servers that do not come up fail the
    /// test.
    pub async fn start_java_with(test: &str, brokers: usize, namesrvs: usize) -> Option<RocketMq> {
        let home = java_home(test)?;
        match RocketMq::try_start(Flavor::Java, &home, brokers, namesrvs).await {
            Ok(mq) => Some(mq),
            Err(e) => panic!("Java RocketMQ did not start for {test}: {e}"),
        }
    }

    async fn try_start(
        flavor: Flavor,
        bin: &Path,
        brokers: usize,
        namesrvs: usize,
    ) -> Result<RocketMq, String> {
        let started = Instant::now();
        let tmp = tempfile::Builder::new()
            .prefix(match flavor {
                Flavor::Rust => "rocketmq-",
                Flavor::Java => "rocketmq-java-",
            })
            .tempdir_in(store_root()?)
            .map_err(|e| format!("temp dir: {e}"))?;
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("home")).map_err(|e| e.to_string())?;
        let mut mq = RocketMq {
            _dir: tmp,
            dir: dir.clone(),
            flavor,
            bin: bin.to_path_buf(),
            started_in: Duration::ZERO,
            namesrv_ports: (0..namesrvs).map(|_| free_run(1)).collect(),
            namesrvs: (0..namesrvs).map(|_| Mutex::new(None)).collect(),
            brokers: Vec::new(),
        };
        for i in 0..namesrvs {
            mq.start_namesrv_at(i)?;
        }
        if flavor == Flavor::Java {
            // A 4.9.7 broker registers once at start and then every registerNameServerPeriod
            // (10 s): started together with a NameServer whose JVM is slower to listen, its first
            // registration fails and it shows up 10 s later (measured: 15 s instead of 5 s).
            // So the NameServers answer first.
            mq.wait_namesrvs_up(super::deadline()).await?;
        }
        for i in 0..brokers {
            let name = format!("broker-{}", (b'a' + i as u8) as char);
            // listenPort - 2 (the "fast" port), listenPort, and haListenPort = listenPort + 1.
            let base = free_run(4);
            let listen = base + 2;
            let store = dir.join(format!("store-{name}"));
            let props = dir.join(format!("{name}.properties"));
            let mut config = format!(
                "brokerName={name}\nbrokerClusterName={CLUSTER}\nbrokerId=0\n\
                 brokerIP1=127.0.0.1\nlistenPort={listen}\nhaListenPort={ha}\n\
                 namesrvAddr={ns}\nstorePathRootDir={store}\n\
                 registerNameServerPeriod=10000\nmappedFileSizeCommitLog={COMMIT_LOG_FILE}\n",
                ha = listen + 1,
                ns = mq.namesrv_addrs().join(";"),
                store = store.display(),
            );
            if flavor == Flavor::Java {
                // A master with asynchronous flush, and small files: without them a 4.9.7
                // broker maps a 1 GiB commit log and a 420 MB index (MessageStoreConfig.java).
                config.push_str(&format!(
                    "brokerRole=ASYNC_MASTER\nflushDiskType=ASYNC_FLUSH\n\
                     storePathCommitLog={commitlog}\nmappedFileSizeConsumeQueue=300000\n\
                     maxHashSlotNum=50000\nmaxIndexNum=200000\n",
                    commitlog = store.join("commitlog").display(),
                ));
            }
            std::fs::write(&props, config).map_err(|e| e.to_string())?;
            let mut command = mq.server_command("broker", &name);
            command.arg("-c").arg(&props);
            let program = PathBuf::from(command.get_program());
            let child = spawn_logged(command, &dir, &format!("{name}.log"))
                .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
            mq.brokers.push(Broker {
                name,
                addr: format!("127.0.0.1:{listen}"),
                child: Mutex::new(Some(child)),
            });
        }
        mq.wait_registered(super::deadline()).await?;
        mq.started_in = started.elapsed();
        Ok(mq)
    }

    /// The command of a server (`namesrv` or `broker`) named `name` (`namesrv-0`, `broker-a`):
    /// rocketmq-rust's binary, or `bin/rocketmq-java` with `RMQ_WORK` (the process's
    /// `user.home`, where it logs) in a folder of its own.
    fn server_command(&self, kind: &str, name: &str) -> Command {
        match self.flavor {
            Flavor::Rust => Command::new(self.bin.join(format!("rocketmq-{kind}-rust"))),
            Flavor::Java => {
                let mut command = Command::new(self.bin.join("bin").join("rocketmq-java"));
                command.arg(kind).env("RMQ_WORK", self.java_work(name));
                command
            }
        }
    }

    /// `RMQ_WORK` of the Java process `name`.
    fn java_work(&self, name: &str) -> PathBuf {
        self.dir.join(format!("work-{name}"))
    }

    /// From the first spawn until every broker was registered with every NameServer.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Whether these are Apache RocketMQ's Java servers.
    pub fn is_java(&self) -> bool {
        self.flavor == Flavor::Java
    }

    /// `127.0.0.1:port` of the first NameServer.
    pub fn namesrv_addr(&self) -> String {
        self.namesrv_addrs().swap_remove(0)
    }

    /// `127.0.0.1:port` of every NameServer.
    pub fn namesrv_addrs(&self) -> Vec<String> {
        self.namesrv_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// The first broker's address.
    pub fn broker_addr(&self) -> &str {
        &self.brokers[0].addr
    }

    /// Starts the first NameServer (again, on the same port).
    pub fn start_namesrv(&self) -> Result<(), String> {
        self.start_namesrv_at(0)
    }

    /// Stops the first NameServer (SIGTERM, then SIGKILL); the brokers keep running.
    pub fn stop_namesrv(&self) {
        self.stop_namesrv_at(0)
    }

    /// Starts NameServer `i` (again, on the same port).
    pub fn start_namesrv_at(&self, i: usize) -> Result<(), String> {
        let mut command = self.server_command("namesrv", &format!("namesrv-{i}"));
        match self.flavor {
            Flavor::Rust => {
                command
                    .args(["--listenPort", &self.namesrv_ports[i].to_string()])
                    .args(["--bindAddress", "127.0.0.1"]);
            }
            Flavor::Java => {
                // No bind address in 4.9.7: it listens on every interface.
                let state = self.dir.join(format!("namesrv-{i}"));
                let props = self.dir.join(format!("namesrv-{i}.properties"));
                std::fs::write(
                    &props,
                    format!(
                        "listenPort={port}\nkvConfigPath={kv}\nconfigStorePath={config}\n",
                        port = self.namesrv_ports[i],
                        kv = state.join("kvConfig.json").display(),
                        config = state.join("namesrv.properties").display(),
                    ),
                )
                .map_err(|e| e.to_string())?;
                command.arg("-c").arg(&props);
            }
        }
        let program = PathBuf::from(command.get_program());
        let child = spawn_logged(command, &self.dir, &format!("namesrv-{i}.log"))
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        *self.namesrvs[i].lock().unwrap() = Some(child);
        Ok(())
    }

    /// Stops NameServer `i` (SIGTERM, then SIGKILL).
    pub fn stop_namesrv_at(&self, i: usize) {
        if let Some(mut child) = self.namesrvs[i].lock().unwrap().take() {
            stop(&mut child, self.flavor.stop_grace());
        }
    }

    /// Polls the cluster info of every running NameServer until it lists every broker at its
    /// address, failing early when a process exited.
    pub async fn wait_registered(&self, within: Duration) -> Result<(), String> {
        for (i, addr) in self.namesrv_addrs().iter().enumerate() {
            if self.namesrvs[i].lock().unwrap().is_some() {
                self.wait_registered_at(addr, within).await?;
            }
        }
        Ok(())
    }

    /// Polls every running NameServer until it answers a cluster info request, failing early
    /// when a process exited.
    async fn wait_namesrvs_up(&self, within: Duration) -> Result<(), String> {
        let until = Instant::now() + within;
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(2),
        };
        for (i, addr) in self.namesrv_addrs().iter().enumerate() {
            if self.namesrvs[i].lock().unwrap().is_none() {
                continue;
            }
            loop {
                self.check_alive()?;
                let answer = match RemotingClient::connect(addr, timeouts).await {
                    Ok(client) => client.cluster_info().await.map(|_| ()),
                    Err(e) => Err(e),
                };
                match answer {
                    Ok(()) => break,
                    Err(e) if Instant::now() >= until => {
                        return Err(format!(
                            "NameServer {addr} not answering within {within:?}: {e}\n{}",
                            self.logs_tail()
                        ));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        Ok(())
    }

    /// Polls the cluster info of the NameServer at `addr` until it lists every broker.
    pub async fn wait_registered_at(&self, addr: &str, within: Duration) -> Result<(), String> {
        let until = Instant::now() + within;
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(2),
        };
        let mut last = String::new();
        while Instant::now() < until {
            self.check_alive()?;
            let info = match RemotingClient::connect(addr, timeouts).await {
                Ok(client) => client.cluster_info().await,
                Err(e) => Err(e),
            };
            match info {
                Ok(info) => {
                    let missing: Vec<&str> = self
                        .brokers
                        .iter()
                        .filter(|b| {
                            info.broker_addr_table
                                .get(&b.name)
                                .and_then(|d| d.master_addr())
                                != Some(b.addr.as_str())
                        })
                        .map(|b| b.name.as_str())
                        .collect();
                    if missing.is_empty() {
                        return Ok(());
                    }
                    last = format!("not registered yet: {missing:?}; cluster info {info:?}");
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "brokers not registered with {addr} within {within:?}: {last}\n{}",
            self.logs_tail()
        ))
    }

    fn check_alive(&self) -> Result<(), String> {
        for (i, namesrv) in self.namesrvs.iter().enumerate() {
            if let Some(child) = namesrv.lock().unwrap().as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "NameServer {i} exited ({status})\n{}",
                    self.logs_tail()
                ));
            }
        }
        for broker in &self.brokers {
            if let Some(child) = broker.child.lock().unwrap().as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let room = disk_room(&self.dir).map_or("not measurable".to_string(), |(u, a)| {
                    format!("{:.0}% used, {} MiB available", u * 100.0, a >> 20)
                });
                return Err(format!(
                    "{} exited ({status}); its store {} is {room}\n{}",
                    broker.name,
                    self.dir.display(),
                    self.logs_tail()
                ));
            }
        }
        Ok(())
    }

    /// The last lines of every server's log, for failure messages: what each process wrote to
    /// stdout and stderr, and for the Java servers also their own log
    /// (`RMQ_WORK/logs/rocketmqlogs/namesrv.log`, `broker.log`), where their errors go.
    pub fn logs_tail(&self) -> String {
        let tail = |name: &str| {
            let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            format!(
                "--- {name} (tail)\n{}",
                lines[lines.len().saturating_sub(15)..].join("\n")
            )
        };
        let processes = (0..self.namesrvs.len())
            .map(|i| (format!("namesrv-{i}"), "namesrv.log"))
            .chain(self.brokers.iter().map(|b| (b.name.clone(), "broker.log")));
        let mut tails = Vec::new();
        for (name, java_log) in processes {
            tails.push(tail(&format!("{name}.log")));
            if self.flavor == Flavor::Java {
                let own = self
                    .java_work(&name)
                    .join("logs")
                    .join("rocketmqlogs")
                    .join(java_log);
                if let Ok(own) = own.strip_prefix(&self.dir)
                    && self.dir.join(own).exists()
                {
                    tails.push(tail(&own.to_string_lossy()));
                }
            }
        }
        tails.join("\n")
    }
}

impl RocketMq {
    /// Stops every process: rocketmq-rust's brokers first (they unregister), then the
    /// NameServers; the Java ones all together.
    fn stop_all(&self) {
        match self.flavor {
            Flavor::Rust => {
                for broker in &self.brokers {
                    if let Some(mut child) = broker.child.lock().unwrap().take() {
                        stop(&mut child, Duration::from_secs(10));
                    }
                }
                for i in 0..self.namesrvs.len() {
                    self.stop_namesrv_at(i);
                }
            }
            Flavor::Java => {
                // A Java broker's shutdown hook takes 5-8 s (each of its two remoting servers
                // waits out its event thread's 3 s poll), a NameServer's up to 3 s: one after
                // the other, two brokers and a NameServer took 20 s. Signalled together they
                // take as long as the slowest; nothing watches the brokers unregister here (a
                // NameServer already gone refuses the connection at once).
                let slots = self.brokers.iter().map(|b| &b.child);
                stop_together(slots.chain(&self.namesrvs), self.flavor.stop_grace());
            }
        }
    }
}

/// Stops the processes in `slots` together: SIGTERM to each, then [`stop`] each (which waits up
/// to `grace`, then kills).
fn stop_together<'a>(slots: impl Iterator<Item = &'a Mutex<Option<Child>>>, grace: Duration) {
    let mut children: Vec<Child> = slots.filter_map(|s| s.lock().unwrap().take()).collect();
    for child in &mut children {
        if matches!(child.try_wait(), Ok(None)) {
            signal(child, libc::SIGTERM);
        }
    }
    for child in &mut children {
        stop(child, grace);
    }
}

impl Drop for RocketMq {
    fn drop(&mut self) {
        self.stop_all();
    }
}

static SHARED: tokio::sync::OnceCell<RocketMq> = tokio::sync::OnceCell::const_new();

extern "C" fn stop_shared() {
    if let Some(mq) = SHARED.get() {
        mq.stop_all();
        let _ = std::fs::remove_dir_all(&mq.dir);
    }
}

/// The RocketMQ of this test binary — one NameServer, two brokers (`broker-a`, `broker-b`) of
/// [`CLUSTER`] — started on first use; `None` (after one SKIP line) without `ROCKETMQ_BIN`.
/// Tests that stop a server start their own with [`RocketMq::start_with`].
pub async fn shared(test: &str) -> Option<&'static RocketMq> {
    let bin = bin_dir(test)?;
    let mq = SHARED
        .get_or_init(|| async move {
            // SAFETY: registers a plain function; called once.
            unsafe {
                libc::atexit(stop_shared);
            }
            match RocketMq::try_start(Flavor::Rust, &bin, 2, 1).await {
                Ok(mq) => mq,
                Err(e) => panic!("the shared RocketMQ did not start: {e}"),
            }
        })
        .await;
    Some(mq)
}

static SHARED_JAVA: tokio::sync::OnceCell<RocketMq> = tokio::sync::OnceCell::const_new();

extern "C" fn stop_shared_java() {
    if let Some(mq) = SHARED_JAVA.get() {
        mq.stop_all();
        let _ = std::fs::remove_dir_all(&mq.dir);
    }
}

/// The Java RocketMQ (Apache RocketMQ 4.9.7) of this test binary — one NameServer, two brokers
/// (`broker-a`, `broker-b`) of [`CLUSTER`] — started on first use; `None` (after one SKIP line)
/// without `ROCKETMQ_JAVA_HOME`. Tests that stop a server start their own with
/// [`RocketMq::start_java_with`].
pub async fn shared_java(test: &str) -> Option<&'static RocketMq> {
    let home = java_home(test)?;
    let mq = SHARED_JAVA
        .get_or_init(|| async move {
            // SAFETY: registers a plain function; called once.
            unsafe {
                libc::atexit(stop_shared_java);
            }
            match RocketMq::try_start(Flavor::Java, &home, 2, 1).await {
                Ok(mq) => mq,
                Err(e) => panic!("the shared Java RocketMQ did not start: {e}"),
            }
        })
        .await;
    Some(mq)
}

/// `#[tokio::test]` wrappers running one test body, an `async fn(&RocketMq)`, on each flavour:
/// `both!(body, rust_body, java_body)` on the shared servers ([`shared`], [`shared_java`]);
/// `both!(body, rust_body, java_body, own(brokers, namesrvs))` on servers of the test's own
/// ([`RocketMq::start_with`], [`RocketMq::start_java_with`]), for tests that stop one. Without
/// a flavour's servers its wrapper prints one SKIP line (or fails where they are required).
#[allow(unused_macros)]
macro_rules! both {
    ($body:ident, $rust:ident, $java:ident) => {
        #[tokio::test]
        async fn $rust() {
            if let Some(mq) = $crate::support::rocketmq::shared(stringify!($rust)).await {
                $body(mq).await;
            }
        }
        #[tokio::test]
        async fn $java() {
            if let Some(mq) = $crate::support::rocketmq::shared_java(stringify!($java)).await {
                $body(mq).await;
            }
        }
    };
    ($body:ident, $rust:ident, $java:ident, own($brokers:expr, $namesrvs:expr)) => {
        #[tokio::test]
        async fn $rust() {
            let test = stringify!($rust);
            let start = $crate::support::rocketmq::RocketMq::start_with(test, $brokers, $namesrvs);
            if let Some(mq) = start.await {
                $body(&mq).await;
            }
        }
        #[tokio::test]
        async fn $java() {
            let test = stringify!($java);
            let start =
                $crate::support::rocketmq::RocketMq::start_java_with(test, $brokers, $namesrvs);
            if let Some(mq) = start.await {
                $body(&mq).await;
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both;

// What a RocketMQ client sends, for tests that play one (a producer, a consumer registering or
// committing offsets) with the operator's own protocol client.

/// Timeouts of the tests' own requests.
pub fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(5),
    }
}

/// A connection to `addr`; panics if there is none.
pub async fn connect(addr: &str) -> RemotingClient {
    RemotingClient::connect(addr, timeouts())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Registers `client_id` as a consumer of `group` (subscribed to `topic`) on the broker behind
/// `client`, the way a RocketMQ consumer does: `HEART_BEAT` (34) with a `HeartbeatData` body
/// (`HeartbeatData.java`, `ConsumerData.java`, `SubscriptionData.java`). It also creates the
/// group's subscription (offsets cannot be committed without one). The registration lasts as
/// long as the connection.
pub async fn heartbeat(client: &RemotingClient, client_id: &str, group: &str, topic: &str) {
    let body = serde_json::json!({
        "clientID": client_id,
        "producerDataSet": [],
        "consumerDataSet": [{
            "groupName": group,
            "consumeType": "CONSUME_PASSIVELY",
            "messageModel": "CLUSTERING",
            "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET",
            "subscriptionDataSet": [{
                "classFilterMode": false, "topic": topic, "subString": "*",
                "tagsSet": [], "codeSet": [], "subVersion": 1, "expressionType": "TAG"
            }],
            "unitMode": false
        }]
    });
    let request = Request::new(code::HEART_BEAT).with_body(serde_json::to_vec(&body).unwrap());
    client
        .invoke_ok(request)
        .await
        .unwrap_or_else(|e| panic!("heartbeat: {e}"));
}

/// Sends one message with `body` to `queue_id` of `topic` (`SEND_MESSAGE`, 10,
/// `SendMessageRequestHeader`), and checks the broker stored it in that queue.
pub async fn send(client: &RemotingClient, topic: &str, queue_id: u32, body: &str) {
    let request = Request::request(
        code::SEND_MESSAGE,
        [
            ("producerGroup", "rebalancer_test_producer".to_string()),
            ("topic", topic.to_string()),
            ("defaultTopic", "TBW102".to_string()),
            ("defaultTopicQueueNums", "4".to_string()),
            ("queueId", queue_id.to_string()),
            ("sysFlag", "0".to_string()),
            ("bornTimestamp", "0".to_string()),
            ("flag", "0".to_string()),
            ("properties", String::new()),
            ("reconsumeTimes", "0".to_string()),
            ("unitMode", "false".to_string()),
            ("batch", "false".to_string()),
        ],
    )
    .with_body(body.as_bytes().to_vec());
    let response = client
        .invoke_ok(request)
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
    assert_eq!(
        response.ext_fields.get("queueId"),
        Some(&queue_id.to_string())
    );
    // The broker answers once the message is in the commit log; its consume queue (what
    // GET_CONSUME_STATS and consumers see) is filled asynchronously from it.
    let stored: i64 = response
        .ext_fields
        .get("queueOffset")
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("send: no queueOffset in {:?}", response.ext_fields));
    let deadline = Instant::now() + super::deadline();
    loop {
        let max = max_offset(client, topic, queue_id).await;
        if max > stored {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}/{queue_id}: consume queue still at {max} after the message at offset {stored}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET_MAX_OFFSET (30): the next offset of a queue's consume queue, with the operator's own
/// request ([`RemotingClient::max_offset`]).
pub async fn max_offset(client: &RemotingClient, topic: &str, queue_id: u32) -> i64 {
    client
        .max_offset(topic, queue_id)
        .await
        .unwrap_or_else(|e| panic!("max offset: {e}"))
}

/// Commits `offset` for `group` on `queue_id` (`UPDATE_CONSUMER_OFFSET`, 15,
/// `UpdateConsumerOffsetRequestHeader`).
pub async fn commit(client: &RemotingClient, group: &str, topic: &str, queue_id: u32, offset: i64) {
    let request = Request::request(
        code::UPDATE_CONSUMER_OFFSET,
        [
            ("consumerGroup", group.to_string()),
            ("topic", topic.to_string()),
            ("queueId", queue_id.to_string()),
            ("commitOffset", offset.to_string()),
        ],
    );
    client
        .invoke_ok(request)
        .await
        .unwrap_or_else(|e| panic!("commit: {e}"));
}
