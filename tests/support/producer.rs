//! A real Apache RocketMQ producer for the tests: `hack/java-consumer/JavaProducer.java` (an
//! unmodified `DefaultMQProducer` of the Java client 4.9.7), from the same class folder as the
//! Java consumer (`ROCKETMQ_JAVA_CONSUMER`), run with `java -cp
//! "$ROCKETMQ_JAVA_HOME/lib/*:$ROCKETMQ_JAVA_CONSUMER" JavaProducer`.
//!
//! [`Producer::start`] runs it (spawned with [`super::envtest::spawn`], so it dies with the test
//! process; its stdin is a pipe, whose end also stops it) and returns once it reported its client
//! id. A thread reads its JSON lines: every message the broker stored ([`Producer::sent`], with its
//! broker, queue id and offset) and every send that failed ([`Producer::failed`]). `Drop` stops it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::consumer::java_classes;
use super::envtest::{signal, spawn, stop};

/// The producer's main class.
pub const MAIN_CLASS: &str = "JavaProducer";

/// One message the broker stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub seq: u64,
    pub body: String,
    pub broker_name: String,
    pub queue_id: u32,
    pub queue_offset: i64,
    /// When its line was read (within milliseconds of the send's answer).
    pub at: Instant,
}

#[derive(Default)]
struct State {
    client_id: Option<String>,
    sent: Vec<Sent>,
    /// (body, error) of sends that failed after the client's retries.
    failed: Vec<(String, String)>,
    stopped: bool,
    eof: bool,
    garbage: Vec<String>,
}

impl State {
    fn apply(&mut self, line: &str) {
        let v: Option<serde_json::Value> = serde_json::from_str(line).ok();
        let text = |k: &str| {
            v.as_ref()
                .and_then(|v| v.get(k))
                .and_then(|s| s.as_str())
                .map(str::to_string)
        };
        let num = |k: &str| v.as_ref().and_then(|v| v.get(k)).and_then(|n| n.as_i64());
        let ok = match text("event").as_deref() {
            Some("started") => {
                self.client_id = text("clientId");
                self.client_id.is_some()
            }
            Some("sent") => {
                let sent = (|| {
                    Some(Sent {
                        seq: u64::try_from(num("seq")?).ok()?,
                        body: text("body")?,
                        broker_name: text("brokerName")?,
                        queue_id: u32::try_from(num("queueId")?).ok()?,
                        queue_offset: num("queueOffset")?,
                        at: Instant::now(),
                    })
                })();
                match sent {
                    Some(s) => {
                        self.sent.push(s);
                        true
                    }
                    None => false,
                }
            }
            Some("failed") => {
                self.failed.push((
                    text("body").unwrap_or_default(),
                    text("error").unwrap_or_default(),
                ));
                true
            }
            Some("stopped") => {
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

/// What a producer sends and who it is.
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// `HOST:PORT`, or several joined with `;`.
    pub namesrv: String,
    /// Producer group.
    pub group: String,
    pub topic: String,
    /// The instance part of the client id.
    pub instance_name: String,
    /// Messages per second.
    pub rate: u32,
    /// The route refresh (`pollNameServerInterval`), ms; `None`: the client's default (30 s).
    pub poll_name_server_interval_ms: Option<u64>,
}

/// One running producer process.
pub struct Producer {
    child: Child,
    stdin: Option<ChildStdin>,
    state: Arc<Mutex<State>>,
    client_id: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

const POLL: Duration = Duration::from_millis(20);

impl Producer {
    /// Starts the producer and waits (up to [`super::deadline`]) for its `started` line; `None`
    /// (after a SKIP line) without the Java client or classes.
    pub async fn start(test: &str, config: &ProducerConfig) -> Option<Producer> {
        let (home, classes) = java_classes(test)?;
        let dir = tempfile::Builder::new()
            .prefix("rocketmq-producer-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("stderr.log");
        let mut command = Command::new("java");
        command
            .args(["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xmx128m"])
            .arg(format!("-Duser.home={}", dir.path().display()))
            .arg(format!(
                "-Drocketmq.client.logRoot={}",
                dir.path().join("logs").display()
            ))
            .arg("-cp")
            .arg(format!("{}/lib/*:{}", home.display(), classes.display()))
            .arg(MAIN_CLASS)
            .env("HOME", dir.path())
            .args(["--namesrv", &config.namesrv])
            .args(["--group", &config.group])
            .args(["--topic", &config.topic])
            .args(["--instance-name", &config.instance_name])
            .args(["--rate", &config.rate.to_string()]);
        if let Some(ms) = config.poll_name_server_interval_ms {
            command.args(["--poll-name-server-interval-ms", &ms.to_string()]);
        }
        command
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("producer log file"));
        let mut child =
            spawn(command).unwrap_or_else(|e| panic!("cannot start the Java producer: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::Builder::new()
            .name(format!("producer-{}", config.instance_name))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    shared.lock().unwrap().apply(&line);
                }
                shared.lock().unwrap().eof = true;
            })
            .expect("producer reader thread");
        let mut producer = Producer {
            child,
            stdin,
            state,
            client_id: String::new(),
            log,
            _dir: dir,
        };
        let until = Instant::now() + super::deadline();
        loop {
            let started = producer.state.lock().unwrap().client_id.clone();
            if let Some(id) = started {
                producer.client_id = id;
                return Some(producer);
            }
            if let Some(status) = producer.exited() {
                panic!(
                    "the Java producer exited ({status}) before it started\n{}",
                    producer.log_tail()
                );
            }
            assert!(
                Instant::now() < until,
                "the Java producer did not start\n{}",
                producer.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The client id it reported.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Every message stored so far, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.state.lock().unwrap().sent.clone()
    }

    /// How many messages were stored so far.
    pub fn sent_count(&self) -> usize {
        self.state.lock().unwrap().sent.len()
    }

    /// (body, error) of every send that failed after the client's retries.
    pub fn failed(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().failed.clone()
    }

    /// Lines on its stdout that were not events of the contract (should be none).
    pub fn garbage(&self) -> Vec<String> {
        self.state.lock().unwrap().garbage.clone()
    }

    /// Its exit status once it exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops sending and the producer (SIGTERM), and waits for its `stopped` line and exit 0.
    pub async fn stop(&mut self) {
        if self.exited().is_none() {
            signal(&self.child, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let done = {
                let s = self.state.lock().unwrap();
                s.stopped && s.eof
            };
            if let (true, Some(status)) = (done, self.exited()) {
                assert!(status.success(), "producer exited with {status}");
                return;
            }
            assert!(
                Instant::now() < until,
                "the Java producer did not stop\n{}",
                self.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Closes its stdin, which also stops it.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// The last 30 lines of its stderr.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- producer {} stderr (tail)\n{}",
            self.client_id,
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(5));
    }
}
