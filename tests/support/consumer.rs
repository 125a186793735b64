//! Real RocketMQ consumers for the tests, in two flavours ([`Flavour`]) speaking one stdout
//! contract:
//! - [`Flavour::Rust`]: the `rocketmq-consumer` helper binary (`hack/rocketmq-consumer`, an
//!   unmodified `DefaultMQPushConsumer` of the crates.io crate `rocketmq-client-rust`), from
//!   `ROCKETMQ_CONSUMER`;
//! - [`Flavour::Java`]: `hack/java-consumer` (an unmodified `DefaultMQPushConsumer` of Apache
//!   RocketMQ 4.9.7's Java client), compiled classes from `ROCKETMQ_JAVA_CONSUMER`, run with
//!   `java -cp "$ROCKETMQ_JAVA_HOME/lib/*:$ROCKETMQ_JAVA_CONSUMER" JavaConsumer`.
//!
//! [`Consumer::start`] runs one consumer process (spawned with [`super::envtest::spawn`], so it
//! dies with the test process; its stdin is a pipe, whose end also stops it) and returns once it
//! reported its client id `IP@NAME`. A thread reads its JSON lines into shared state: the queues
//! it holds now ([`Consumer::queues`], read from the client's own process-queue table, as
//! `mqadmin consumerStatus` shows them), how often that set changed ([`Consumer::reallocations`])
//! and the messages it consumed ([`Consumer::messages`]). Its stderr (the client's logs) goes to
//! a file, for failure messages ([`Consumer::log_tail`]). `Drop` stops it: SIGTERM, then SIGKILL
//! after 5 s.
//!
//! Timing (rocketmq-client-rust 1.0.0 against the rocketmq-rust 1.0.0 broker): the consumer
//! rebalances every second (`--rebalance-interval-ms`, default 1000; the client's own default is
//! 20 s) and, at most once a second, when the broker notifies it that the group changed. The broker
//! notifies when a consumer joins, not when one leaves (unregisters or its connection closes),
//! though it drops the leaver from its consumer list at once: so a join shows in the others'
//! queues within about 1 s, a leave within about 1 s (the period). A new consumer holds nothing
//! for its first second.
//!
//! The Java one (against the Java broker, which notifies joins and leaves) also rebalances every
//! `--rebalance-interval-ms` (the system property `rocketmq.client.rebalance.waitInterval`); its
//! JVM starts in about 1 s. Unlike the Rust one it leaves the group's `%RETRY%` topic out of its
//! `queues` events: compare one topic ([`Consumer::queues_of`]).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::envtest::{signal, spawn, stop};
use super::rocketmq::{REQUIRE_JAVA_VAR, REQUIRE_VAR};

/// Environment variable naming the consumer binary.
pub const BIN_VAR: &str = "ROCKETMQ_CONSUMER";

/// The command that builds the binary (from the repository root).
pub const BUILD_COMMAND: &str = "cargo build --locked --manifest-path \
     hack/rocketmq-consumer/Cargo.toml --target-dir target/rocketmq-consumer";

/// The consumer binary, or `None` after printing why the test is skipped
/// (`REBALANCER_REQUIRE_ROCKETMQ=1`: a panic instead).
pub fn binary(test: &str) -> Option<PathBuf> {
    match std::env::var_os(BIN_VAR).filter(|v| !v.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") => panic!(
            "{REQUIRE_VAR}=1 but {BIN_VAR} is not set: the RocketMQ consumer tests must run here \
             (build it with `{BUILD_COMMAND}` and set {BIN_VAR}=target/rocketmq-consumer/debug/\
             rocketmq-consumer)"
        ),
        None => {
            println!(
                "SKIP {test}: {BIN_VAR} is not set (the real RocketMQ consumer: `{BUILD_COMMAND}`, \
                 then {BIN_VAR}=$PWD/target/rocketmq-consumer/debug/rocketmq-consumer)"
            );
            None
        }
    }
}

/// Environment variable naming the Java consumer's class folder (`javac -d` of
/// `hack/java-consumer`).
pub const JAVA_CLASSES_VAR: &str = "ROCKETMQ_JAVA_CONSUMER";

/// The command that compiles the Java consumer (from the repository root).
pub const JAVA_BUILD_COMMAND: &str = "javac -cp \"$ROCKETMQ_JAVA_HOME/lib/*\" -d \
     target/java-consumer hack/java-consumer/*.java";

/// The Java consumer's main class.
pub const JAVA_MAIN_CLASS: &str = "JavaConsumer";

/// `ROCKETMQ_JAVA_HOME` (whose `lib/` holds the client's jars) and the Java consumer's class
/// folder, or `None` after printing why the test is skipped (`REBALANCER_REQUIRE_ROCKETMQ_JAVA=1`:
/// a panic instead).
pub fn java_classes(test: &str) -> Option<(PathBuf, PathBuf)> {
    let home = super::rocketmq::java_home(test)?;
    match std::env::var_os(JAVA_CLASSES_VAR).filter(|v| !v.is_empty()) {
        Some(path) => Some((home, PathBuf::from(path))),
        None if std::env::var(REQUIRE_JAVA_VAR).is_ok_and(|v| v == "1") => panic!(
            "{REQUIRE_JAVA_VAR}=1 but {JAVA_CLASSES_VAR} is not set: the Java consumer tests must \
             run here (compile it with `{JAVA_BUILD_COMMAND}` and set \
             {JAVA_CLASSES_VAR}=$PWD/target/java-consumer)"
        ),
        None => {
            println!(
                "SKIP {test}: {JAVA_CLASSES_VAR} is not set (the Java RocketMQ consumer: \
                 `{JAVA_BUILD_COMMAND}`, then {JAVA_CLASSES_VAR}=$PWD/target/java-consumer)"
            );
            None
        }
    }
}

/// Which implementation a [`Consumer`] runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavour {
    /// `hack/rocketmq-consumer` (rocketmq-client-rust).
    #[default]
    Rust,
    /// `hack/java-consumer` (Apache RocketMQ 4.9.7's Java client).
    Java,
}

impl Flavour {
    /// Whether this flavour can run here; `false` after printing a SKIP line (a panic instead
    /// where it is required).
    pub fn available(self, test: &str) -> bool {
        match self {
            Flavour::Rust => binary(test).is_some(),
            Flavour::Java => java_classes(test).is_some(),
        }
    }

    /// The client of the servers `mq` runs: rocketmq-client-rust for rocketmq-rust's,
    /// Apache RocketMQ 4.9.7's Java client for its Java servers.
    pub fn of(mq: &super::rocketmq::RocketMq) -> Flavour {
        if mq.is_java() {
            Flavour::Java
        } else {
            Flavour::Rust
        }
    }

    /// `body` as the name of this flavour's test wrapper (`rust_body`, `java_body`), for SKIP
    /// lines and logs.
    pub fn test_name(self, body: &str) -> String {
        match self {
            Flavour::Rust => format!("rust_{body}"),
            Flavour::Java => format!("java_{body}"),
        }
    }

    /// The command running it, before its arguments; `None` after a SKIP line.
    fn command(self, test: &str, dir: &std::path::Path) -> Option<Command> {
        match self {
            Flavour::Rust => {
                let mut command = Command::new(binary(test)?);
                // The client keeps local state (broadcast offsets) under HOME.
                command.env("HOME", dir);
                Some(command)
            }
            Flavour::Java => {
                let (home, classes) = java_classes(test)?;
                let mut command = Command::new("java");
                // Lean on 2 shared cores, as the servers' own script does; the client keeps
                // local state (broadcast offsets) under user.home.
                command
                    .args(["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xmx128m"])
                    .arg(format!("-Duser.home={}", dir.display()))
                    .arg(format!(
                        "-Drocketmq.client.logRoot={}",
                        dir.join("logs").display()
                    ))
                    .arg("-cp")
                    .arg(format!("{}/lib/*:{}", home.display(), classes.display()))
                    .arg(JAVA_MAIN_CLASS)
                    .env("HOME", dir);
                Some(command)
            }
        }
    }
}

/// What a consumer subscribes to and who it is.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// `HOST:PORT`, or several joined with `;`.
    pub namesrv: String,
    /// Consumer group.
    pub group: String,
    /// Topics, each subscribed with `*`.
    pub topics: Vec<String>,
    /// The ip part of the client id: only a label (use distinct `127.x.y.z` strings).
    pub client_ip: String,
    /// The instance part of the client id.
    pub instance_name: String,
}

impl ConsumerConfig {
    /// The client id the consumer announces: `client_ip@instance_name`.
    pub fn client_id(&self) -> String {
        format!("{}@{}", self.client_ip, self.instance_name)
    }
}

/// A held queue: (topic, brokerName, queueId).
pub type Queue = (String, String, u32);

/// One consumed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub broker_name: String,
    pub queue_id: u32,
    pub queue_offset: i64,
    pub body: String,
}

#[derive(Default)]
struct State {
    client_id: Option<String>,
    /// Latest `queues` event.
    queues: Option<BTreeSet<Queue>>,
    /// Every `queues` event, in order.
    history: Vec<BTreeSet<Queue>>,
    messages: Vec<Message>,
    stopped: bool,
    /// stdout closed (the process exited or is exiting).
    eof: bool,
    /// Lines that are not one of the events (the contract allows none).
    garbage: Vec<String>,
}

impl State {
    fn apply(&mut self, line: &str) {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        let event = parsed
            .as_ref()
            .ok()
            .and_then(|v| v.get("event"))
            .and_then(|e| e.as_str());
        let v = parsed.as_ref().ok();
        let text =
            |v: &serde_json::Value, k: &str| v.get(k).and_then(|s| s.as_str()).map(str::to_string);
        let ok = match (event, v) {
            (Some("started"), Some(v)) => {
                self.client_id = text(v, "clientId");
                self.client_id.is_some()
            }
            (Some("queues"), Some(v)) => match parse_queues(v) {
                Some(queues) => {
                    self.history.push(queues.clone());
                    self.queues = Some(queues);
                    true
                }
                None => false,
            },
            (Some("message"), Some(v)) => match parse_message(v) {
                Some(m) => {
                    self.messages.push(m);
                    true
                }
                None => false,
            },
            (Some("stopped"), _) => {
                self.stopped = true;
                true
            }
            _ => false,
        };
        if !ok {
            self.garbage.push(line.to_string());
        }
    }
}

fn parse_queues(v: &serde_json::Value) -> Option<BTreeSet<Queue>> {
    v.get("queues")?
        .as_array()?
        .iter()
        .map(|q| {
            Some((
                q.get("topic")?.as_str()?.to_string(),
                q.get("brokerName")?.as_str()?.to_string(),
                u32::try_from(q.get("queueId")?.as_u64()?).ok()?,
            ))
        })
        .collect()
}

fn parse_message(v: &serde_json::Value) -> Option<Message> {
    Some(Message {
        topic: v.get("topic")?.as_str()?.to_string(),
        broker_name: v.get("brokerName")?.as_str()?.to_string(),
        queue_id: u32::try_from(v.get("queueId")?.as_u64()?).ok()?,
        queue_offset: v.get("queueOffset")?.as_i64()?,
        body: v.get("body")?.as_str()?.to_string(),
    })
}

/// One running consumer process.
pub struct Consumer {
    child: Child,
    stdin: Option<ChildStdin>,
    state: Arc<Mutex<State>>,
    client_id: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// How often the waits look at the state.
const POLL: Duration = Duration::from_millis(20);

impl Consumer {
    /// Starts a consumer and waits (up to [`super::deadline`]) for its `started` line; `None`
    /// (after a SKIP line) without `ROCKETMQ_CONSUMER`. A consumer that does not start fails the
    /// test.
    pub async fn start(test: &str, config: &ConsumerConfig) -> Option<Consumer> {
        Consumer::start_with(test, config, &[]).await
    }

    /// [`Consumer::start`] with more arguments (`--broadcast`, `--rebalance-interval-ms MS`).
    pub async fn start_with(
        test: &str,
        config: &ConsumerConfig,
        extra_args: &[&str],
    ) -> Option<Consumer> {
        Consumer::start_as(test, Flavour::Rust, config, extra_args).await
    }

    /// [`Consumer::start_with`] running the `flavour` implementation; `None` (after a SKIP
    /// line) when it is not there.
    pub async fn start_as(
        test: &str,
        flavour: Flavour,
        config: &ConsumerConfig,
        extra_args: &[&str],
    ) -> Option<Consumer> {
        let dir = tempfile::Builder::new()
            .prefix("rocketmq-consumer-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("stderr.log");
        let mut command = flavour.command(test, dir.path())?;
        command
            .arg("--namesrv")
            .arg(&config.namesrv)
            .arg("--group")
            .arg(&config.group)
            .arg("--client-ip")
            .arg(&config.client_ip)
            .arg("--instance-name")
            .arg(&config.instance_name)
            .args(config.topics.iter().flat_map(|t| ["--topic", t.as_str()]))
            .args(extra_args)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("consumer log file"));
        let mut child = spawn(command)
            .unwrap_or_else(|e| panic!("cannot start the {flavour:?} consumer for {test}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::Builder::new()
            .name(format!("consumer-{}", config.instance_name))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    shared.lock().unwrap().apply(&line);
                }
                shared.lock().unwrap().eof = true;
            })
            .expect("consumer reader thread");
        let mut consumer = Consumer {
            child,
            stdin,
            state,
            client_id: String::new(),
            log,
            _dir: dir,
        };
        let until = Instant::now() + super::deadline();
        loop {
            let started = consumer.state.lock().unwrap().client_id.clone();
            if let Some(id) = started {
                consumer.client_id = id;
                return Some(consumer);
            }
            if let Some(status) = consumer.exited() {
                panic!(
                    "consumer {} exited ({status}) before it started\n{}",
                    config.client_id(),
                    consumer.log_tail()
                );
            }
            if Instant::now() > until {
                panic!(
                    "consumer {} did not start within {:?}\n{}",
                    config.client_id(),
                    super::deadline(),
                    consumer.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The client id it reported (`IP@NAME`).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The queues it held at its latest report (empty before the first).
    pub fn queues(&self) -> BTreeSet<Queue> {
        self.state
            .lock()
            .unwrap()
            .queues
            .clone()
            .unwrap_or_default()
    }

    /// Its held queues of `topic` (the client also holds its group's `%RETRY%` topic's queues).
    pub fn queues_of(&self, topic: &str) -> BTreeSet<Queue> {
        self.queues()
            .into_iter()
            .filter(|(t, _, _)| t == topic)
            .collect()
    }

    /// Polls the reported queues until `pred` holds, up to `within`; the queues, or an error
    /// with the last ones seen and the log tail. Fails at once when the process exits.
    pub async fn wait_queues<F>(
        &self,
        mut pred: F,
        within: Duration,
    ) -> Result<BTreeSet<Queue>, String>
    where
        F: FnMut(&BTreeSet<Queue>) -> bool,
    {
        let until = Instant::now() + within;
        loop {
            let queues = self.queues();
            if pred(&queues) {
                return Ok(queues);
            }
            if self.state.lock().unwrap().eof {
                return Err(format!(
                    "consumer {} exited; last queues {queues:?}\n{}",
                    self.client_id,
                    self.log_tail()
                ));
            }
            if Instant::now() > until {
                return Err(format!(
                    "consumer {}: queues not as expected within {within:?}; last {queues:?}\n{}",
                    self.client_id,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// How many times its held queues of `topic` changed after it first held one of them: the
    /// re-allocations it went through (0 for a client that got its share once and kept it).
    pub fn reallocations(&self, topic: &str) -> usize {
        let state = self.state.lock().unwrap();
        let mut changes = 0;
        let mut last: Option<BTreeSet<&Queue>> = None;
        for queues in &state.history {
            let now: BTreeSet<&Queue> = queues.iter().filter(|(t, _, _)| t == topic).collect();
            match &last {
                None if now.is_empty() => continue,
                None => {}
                Some(before) if *before == now => continue,
                Some(_) => changes += 1,
            }
            last = Some(now);
        }
        changes
    }

    /// Every message consumed so far, in arrival order.
    pub fn messages(&self) -> Vec<Message> {
        self.state.lock().unwrap().messages.clone()
    }

    /// Lines on its stdout that were not events of the contract (should be none).
    pub fn garbage(&self) -> Vec<String> {
        self.state.lock().unwrap().garbage.clone()
    }

    /// Whether it printed `{"event":"stopped"}`.
    pub fn stopped(&self) -> bool {
        self.state.lock().unwrap().stopped
    }

    /// Its exit status once it exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops it gracefully (SIGTERM) and waits for its `stopped` line and exit 0; panics (with
    /// the log tail) otherwise. The consumer bounds its own shutdown to 3 s.
    pub async fn stop(&mut self) {
        if self.exited().is_none() {
            signal(&self.child, libc::SIGTERM);
        }
        self.wait_stopped(Duration::from_secs(10)).await;
    }

    /// Closes its stdin (as a dead parent would), which also stops it; then as [`Consumer::stop`].
    pub async fn close_stdin(&mut self) {
        drop(self.stdin.take());
        self.wait_stopped(Duration::from_secs(10)).await;
    }

    async fn wait_stopped(&mut self, within: Duration) {
        let until = Instant::now() + within;
        loop {
            let done = {
                let s = self.state.lock().unwrap();
                s.stopped && s.eof
            };
            if let (true, Some(status)) = (done, self.exited()) {
                assert!(
                    status.success(),
                    "consumer {} exited with {status}\n{}",
                    self.client_id,
                    self.log_tail()
                );
                return;
            }
            if Instant::now() > until {
                let exit = self.exited();
                panic!(
                    "consumer {} did not stop within {within:?} (stopped line: {}, exit: {exit:?})\n{}",
                    self.client_id,
                    self.stopped(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills it at once (SIGKILL): no unregistration, the broker sees the connection close.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last 30 lines of its stderr (the client's logs).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- consumer {} stderr (tail)\n{}",
            self.client_id,
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(5));
    }
}
