//! Which clients are asked which queues they hold (`GET_CONSUMER_RUNNING_INFO`, 307), and when.
//!
//! The question is forwarded by a broker to the client. A client that does not answer it harms
//! its group through the broker: rocketmq-rust's broker closes that client's connection after
//! its 3 s wait (the client drops out of the group until its next heartbeat, and the others
//! re-allocate), and Apache RocketMQ's broker holds one of its 16 admin threads for 10 s per
//! question. So a watcher must not keep asking. The rules, first do no harm:
//!
//! - A client is asked only when the language it declared to the broker is one whose clients
//!   are known to answer (`--client-probe-languages`, default `JAVA,RUST`: Apache RocketMQ's
//!   Java client and rocketmq-client-rust, both proven here). Others are never asked.
//! - A client that answered is asked again at most once per `reuse` (half the sync period);
//!   meanwhile its last answer stands.
//! - A client that did not answer is asked again only after a back-off that starts at the sync
//!   period and doubles up to 10 minutes. Only an answer resets it: a reconnect does not, since
//!   on rocketmq-rust the reconnect may be the one the question caused.
//! - At most `per_broker` questions are in flight per broker, each held for as long as the
//!   broker may wait for the client, so the operator never occupies more than that many of a
//!   broker's threads. A reconcile waits for answers at most `reconcile_wait`; a later answer
//!   is kept for the next reconcile.
//! - Every question also takes a slot of the operator's limit on requests to brokers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::fetch::HeldQueue;
use crate::rocketmq::{Connections, Error as MqError};

/// Which clients may be asked, by the language they declared to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Languages {
    /// Nobody is asked.
    Off,
    /// Clients of these languages (upper case).
    Only(BTreeSet<String>),
    /// Every client.
    All,
}

impl Languages {
    /// Whether a client of `language` may be asked.
    pub fn allows(&self, language: &str) -> bool {
        match self {
            Languages::Off => false,
            Languages::All => true,
            Languages::Only(set) => set.contains(&language.trim().to_ascii_uppercase()),
        }
    }
}

impl FromStr for Languages {
    type Err = String;

    /// `none` (or empty): nobody; `*`: everybody; else a comma-separated list.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            return Ok(Languages::Off);
        }
        if s == "*" {
            return Ok(Languages::All);
        }
        let mut set = BTreeSet::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "{part:?} is not a language name (LanguageCode: JAVA, CPP, GO, RUST, ...)"
                ));
            }
            set.insert(part.to_ascii_uppercase());
        }
        Ok(Languages::Only(set))
    }
}

impl std::fmt::Display for Languages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Languages::Off => f.write_str("none"),
            Languages::All => f.write_str("*"),
            Languages::Only(set) => f.write_str(&set.iter().cloned().collect::<Vec<_>>().join(",")),
        }
    }
}

/// The probe's settings.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Who may be asked.
    pub languages: Languages,
    /// How long an answer stands before the client is asked again.
    pub reuse: Duration,
    /// First wait after a client did not answer.
    pub first_backoff: Duration,
    /// Longest wait after a client did not answer.
    pub max_backoff: Duration,
    /// Questions in flight per broker.
    pub per_broker: usize,
    /// How long a question may wait for the broker's answer (longer than the broker waits for
    /// the client: Apache RocketMQ 10 s, rocketmq-rust 3 s).
    pub broker_wait: Duration,
    /// How long a reconcile waits for answers.
    pub reconcile_wait: Duration,
}

impl Policy {
    /// The defaults for a sync period.
    pub fn new(languages: Languages, sync_period: Duration) -> Self {
        Policy {
            languages,
            reuse: (sync_period / 2).max(Duration::from_secs(1)),
            first_backoff: sync_period.max(Duration::from_secs(1)),
            max_backoff: Duration::from_secs(600),
            per_broker: 2,
            broker_wait: Duration::from_secs(12),
            reconcile_wait: Duration::from_secs(3),
        }
    }
}

/// Why a client was not asked this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAsked {
    /// `--client-probe-languages` is `none`.
    ProbeOff,
    /// Its language is not one known to answer.
    Language(String),
    /// It did not answer before; it is asked again after the back-off.
    BackingOff {
        /// Seconds until it may be asked again.
        retry_in: u64,
        /// What happened the last time.
        last_error: String,
    },
    /// The broker already has as many of the operator's questions in flight as allowed, or the
    /// operator's request limit was reached.
    Busy,
}

/// What is known of the queues one client holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// It answered (now or within the reuse time).
    Answered(BTreeSet<HeldQueue>),
    /// It was asked and did not answer (yet).
    NoAnswer(String),
    /// It was not asked.
    NotAsked(NotAsked),
}

/// A client of a group, as the brokers list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Client id.
    pub id: String,
    /// The language it declared.
    pub language: String,
    /// Brokers (addresses) that list it.
    pub brokers: Vec<String>,
}

#[derive(Debug)]
struct Entry {
    answer: Option<(Instant, BTreeSet<HeldQueue>)>,
    failure: Option<String>,
    next_ask: Instant,
    backoff: Duration,
    asking: bool,
    seen: Instant,
}

/// What the operator knows of every client it asked; shared by every reconcile.
#[derive(Debug)]
pub struct Probes {
    policy: Policy,
    entries: Mutex<HashMap<(String, String), Entry>>,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    swept: Mutex<Instant>,
}

/// What one asking round decided for a client before any I/O.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Known(Held),
    Ask,
}

impl Probes {
    /// A ledger with `policy`.
    pub fn new(policy: Policy) -> Self {
        Probes {
            policy,
            entries: Mutex::default(),
            slots: Mutex::default(),
            swept: Mutex::new(Instant::now()),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `client` of `group` is asked now, and if not what is known. Pure bookkeeping:
    /// marks the client as being asked when it is.
    fn step(&self, group: &str, client: &Listed, now: Instant) -> Step {
        if self.policy.languages == Languages::Off {
            return Step::Known(Held::NotAsked(NotAsked::ProbeOff));
        }
        if !self.policy.languages.allows(&client.language) {
            return Step::Known(Held::NotAsked(NotAsked::Language(client.language.clone())));
        }
        self.sweep(now);
        let mut entries = self.entries();
        let entry = entries
            .entry((group.to_string(), client.id.clone()))
            .or_insert_with(|| Entry {
                answer: None,
                failure: None,
                next_ask: now,
                backoff: self.policy.first_backoff,
                asking: false,
                seen: now,
            });
        entry.seen = now;
        if let Some((at, queues)) = &entry.answer
            && now.duration_since(*at) < self.policy.reuse
        {
            return Step::Known(Held::Answered(queues.clone()));
        }
        if entry.asking {
            return Step::Known(Held::NoAnswer("asked before, no answer yet".to_string()));
        }
        if let Some(error) = &entry.failure
            && now < entry.next_ask
        {
            return Step::Known(Held::NotAsked(NotAsked::BackingOff {
                retry_in: entry.next_ask.duration_since(now).as_secs().max(1),
                last_error: error.clone(),
            }));
        }
        entry.asking = true;
        Step::Ask
    }

    /// Records the outcome of a question. `None`: it was never sent (no slot).
    fn record(
        &self,
        group: &str,
        client: &str,
        outcome: Option<Result<BTreeSet<HeldQueue>, String>>,
    ) {
        let now = Instant::now();
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(&(group.to_string(), client.to_string())) else {
            return;
        };
        entry.asking = false;
        match outcome {
            None => {}
            Some(Ok(queues)) => {
                entry.answer = Some((now, queues));
                entry.failure = None;
                entry.backoff = self.policy.first_backoff;
                entry.next_ask = now;
            }
            Some(Err(error)) => {
                entry.answer = None;
                entry.failure = Some(error);
                entry.next_ask = now + entry.backoff;
                entry.backoff = (entry.backoff * 2).min(self.policy.max_backoff);
            }
        }
    }

    /// Forgets clients not listed for longer than the longest back-off.
    fn sweep(&self, now: Instant) {
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(*swept) < Duration::from_secs(60) {
            return;
        }
        *swept = now;
        let keep = self.policy.max_backoff * 2;
        self.entries()
            .retain(|_, e| e.asking || now.duration_since(e.seen) < keep);
    }

    fn slots_of(&self, broker: &str) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(broker.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.policy.per_broker.max(1))))
            .clone()
    }

    /// What each client of `group` (RocketMQ name) holds, asking those the rules allow, each
    /// through one of the brokers that list it.
    pub async fn ask(
        self: &Arc<Self>,
        connections: &Arc<Connections>,
        group: &str,
        clients: &[Listed],
    ) -> BTreeMap<String, Held> {
        let now = Instant::now();
        let deadline = now + self.policy.reconcile_wait;
        let mut out = BTreeMap::new();
        let mut asks = Vec::new();
        for client in clients {
            match self.step(group, client, now) {
                Step::Known(held) => {
                    out.insert(client.id.clone(), held);
                }
                Step::Ask => {
                    let Some(broker) = through(client) else {
                        self.record(group, &client.id, None);
                        out.insert(client.id.clone(), Held::NotAsked(NotAsked::Busy));
                        continue;
                    };
                    let task = tokio::spawn(self.clone().question(
                        connections.clone(),
                        broker,
                        group.to_string(),
                        client.id.clone(),
                        deadline,
                    ));
                    asks.push((client.id.clone(), task));
                }
            }
        }
        for (client, task) in asks {
            let held = match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(held)) => held,
                Ok(Err(join)) => Held::NoAnswer(format!("question failed: {join}")),
                Err(_) => Held::NoAnswer(format!(
                    "no answer within {}s",
                    self.policy.reconcile_wait.as_secs()
                )),
            };
            out.insert(client, held);
        }
        out
    }

    /// One question, on its own task: it holds a slot of the broker until the broker answers
    /// (or `broker_wait` passes), also after the reconcile that asked stopped waiting.
    async fn question(
        self: Arc<Self>,
        connections: Arc<Connections>,
        broker: String,
        group: String,
        client: String,
        slot_deadline: Instant,
    ) -> Held {
        let slots = self.slots_of(&broker);
        let Ok(Ok(_slot)) = tokio::time::timeout_at(slot_deadline, slots.acquire_owned()).await
        else {
            self.record(&group, &client, None);
            return Held::NotAsked(NotAsked::Busy);
        };
        let wait = self.policy.broker_wait;
        let result = connections
            .call_broker(&broker, |c| {
                let (group, client) = (group.clone(), client.clone());
                async move { c.held_queues(&group, &client, wait).await }
            })
            .await;
        match result {
            Ok(queues) => {
                let queues: BTreeSet<HeldQueue> = queues.into_iter().collect();
                self.record(&group, &client, Some(Ok(queues.clone())));
                Held::Answered(queues)
            }
            Err(MqError::Throttled { .. }) => {
                self.record(&group, &client, None);
                Held::NotAsked(NotAsked::Busy)
            }
            Err(e) => {
                let error = e.to_string();
                self.record(&group, &client, Some(Err(error.clone())));
                Held::NoAnswer(error)
            }
        }
    }
}

/// The broker a client is asked through: one that lists it, spread over them by client id so
/// that one broker does not forward every question.
fn through(client: &Listed) -> Option<String> {
    if client.brokers.is_empty() {
        return None;
    }
    // FNV-1a: stable across runs and versions (std's hasher is not).
    let hash = client.id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    Some(client.brokers[(hash % client.brokers.len() as u64) as usize].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: &str, language: &str) -> Listed {
        Listed {
            id: id.into(),
            language: language.into(),
            brokers: vec!["b1".into(), "b2".into()],
        }
    }

    fn policy(languages: &str) -> Policy {
        Policy::new(languages.parse().unwrap(), Duration::from_secs(10))
    }

    #[test]
    fn languages_parse() {
        assert_eq!("none".parse::<Languages>(), Ok(Languages::Off));
        assert_eq!("".parse::<Languages>(), Ok(Languages::Off));
        assert_eq!("*".parse::<Languages>(), Ok(Languages::All));
        let only: Languages = "java, Rust".parse().unwrap();
        assert!(only.allows("JAVA") && only.allows("rust") && !only.allows("GO"));
        assert_eq!(only.to_string(), "JAVA,RUST");
        assert!("JAVA;GO".parse::<Languages>().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_asked_again_only_after_a_growing_back_off() {
        let probes = Probes::new(policy("JAVA"));
        let c = listed("10.0.0.1@a", "JAVA");
        let mut asked_at = Vec::new();
        let start = Instant::now();
        // One check per second for 10 minutes.
        for _ in 0..600 {
            let now = Instant::now();
            if probes.step("g", &c, now) == Step::Ask {
                asked_at.push(now.duration_since(start).as_secs());
                probes.record("g", &c.id, Some(Err("timeout".into())));
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // 10 s, then 20, 40, 80, 160, 320: six questions in ten minutes, not 600.
        assert_eq!(asked_at, vec![0, 10, 30, 70, 150, 310], "{asked_at:?}");
        // An answer resets the back-off and is reused for half the sync period.
        tokio::time::advance(Duration::from_secs(700)).await;
        assert_eq!(probes.step("g", &c, Instant::now()), Step::Ask);
        probes.record("g", &c.id, Some(Ok(BTreeSet::new())));
        assert_eq!(
            probes.step("g", &c, Instant::now()),
            Step::Known(Held::Answered(BTreeSet::new()))
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(probes.step("g", &c, Instant::now()), Step::Ask);
        probes.record("g", &c.id, Some(Err("timeout".into())));
        let Step::Known(Held::NotAsked(NotAsked::BackingOff { retry_in, .. })) =
            probes.step("g", &c, Instant::now())
        else {
            panic!("not backing off");
        };
        assert_eq!(retry_in, 10);
    }

    #[test]
    fn other_languages_and_a_switched_off_probe_ask_nobody() {
        let probes = Probes::new(policy("JAVA,RUST"));
        let now = Instant::now();
        assert_eq!(
            probes.step("g", &listed("x", "GO"), now),
            Step::Known(Held::NotAsked(NotAsked::Language("GO".into())))
        );
        assert_eq!(probes.step("g", &listed("y", "RUST"), now), Step::Ask);
        // Being asked: a second round does not ask again.
        assert_eq!(
            probes.step("g", &listed("y", "RUST"), now),
            Step::Known(Held::NoAnswer("asked before, no answer yet".into()))
        );
        let off = Probes::new(policy("none"));
        assert_eq!(
            off.step("g", &listed("z", "JAVA"), now),
            Step::Known(Held::NotAsked(NotAsked::ProbeOff))
        );
    }

    #[test]
    fn questions_spread_over_the_brokers_that_list_the_client() {
        let mut seen = BTreeSet::new();
        for i in 0..20 {
            let b = through(&listed(&format!("10.0.0.{i}@x"), "JAVA")).unwrap();
            seen.insert(b);
        }
        assert_eq!(seen.len(), 2);
        let mut lonely = listed("a", "JAVA");
        lonely.brokers.clear();
        assert_eq!(through(&lonely), None);
    }
}
