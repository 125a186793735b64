//! Conformance: the engine against what Apache RocketMQ 5.3.3's own Java strategies answered.
//!
//! `tests/data/rocketmq-vectors.jsonl` (described in `tests/data/rocketmq-vectors.md`) holds one case a
//! line: a topic's readable queues, the group's client ids, a strategy and, per client, the queues its
//! own `allocate()` call returned. Every case that fits the engine's model runs through
//! [`allocate`] and must give every consumer the same SET of queues (RocketMQ turns the returned
//! list into a set, so order and duplicates do not matter), including consumers that got nothing.
//!
//! Cases outside the model are skipped with a reason, and the skip list itself is asserted (count
//! per reason), so a new skip cannot hide a regression.
//!
//! `probes` (calls with a `currentCID` that is not in the list: empty, blank, null, unknown) are
//! ignored on purpose: a central controller computes assignments for the group's members only, so
//! there is no call by a non-member to compare.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use rebalancer::assign::{
    AssignError, Assignment, BrokerInput, ConsumerInput, GroupInput, InnerStrategy, MessageModel,
    Permission, Strategy, TopicInput, allocate,
};
use serde_json::Value;

/// A queue as RocketMQ names it: (broker, queue id).
type Queue = (String, u32);

/// Why a vector is not compared queue by queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Skip {
    /// `queues` or `consumers` is a Java null: no such input exists for a controller.
    JavaNull,
    /// CONFIG returns one configured list to every consumer; `ByConfig` is a per-consumer map.
    Config,
    /// MACHINE_ROOM configured differently on each client: a central controller has one config.
    ConsumeridcsByConsumer,
    /// The same client id twice: the engine rejects it by design (checked: `DuplicateConsumer`).
    DuplicateConsumer,
    /// No consumer, so RocketMQ had nobody to call (checked: `NoConsumers`).
    NoConsumers,
}

impl Skip {
    fn reason(self) -> &'static str {
        match self {
            Skip::JavaNull => "Java null queues/consumers",
            Skip::Config => "CONFIG: one list for every consumer",
            Skip::ConsumeridcsByConsumer => "consumeridcsByConsumer: per-client config",
            Skip::DuplicateConsumer => "duplicate consumer ids (engine: DuplicateConsumer)",
            Skip::NoConsumers => "empty consumer list (engine: NoConsumers)",
        }
    }
}

/// The skips this data set is expected to contain. Update deliberately, never to make a test pass.
const EXPECTED_SKIPS: [(Skip, usize); 5] = [
    (Skip::JavaNull, 1),
    (Skip::Config, 14),
    (Skip::ConsumeridcsByConsumer, 1),
    (Skip::DuplicateConsumer, 4),
    (Skip::NoConsumers, 7),
];
const EXPECTED_VECTORS: usize = 598;

struct Vector {
    raw: Value,
}

impl Vector {
    fn id(&self) -> &str {
        self.raw["id"].as_str().expect("id")
    }

    fn label(&self) -> String {
        match self.raw["note"].as_str() {
            Some(note) => format!("{} ({}, {note})", self.id(), self.strategy_name()),
            None => format!("{} ({})", self.id(), self.strategy_name()),
        }
    }

    fn strategy_name(&self) -> &str {
        self.raw["strategyName"].as_str().expect("strategyName")
    }

    fn params(&self) -> &Value {
        &self.raw["params"]
    }

    fn consumers(&self) -> Vec<String> {
        self.raw["consumers"]
            .as_array()
            .expect("consumers")
            .iter()
            .map(|c| c.as_str().expect("consumer id").to_string())
            .collect()
    }

    fn queues(&self) -> Vec<Queue> {
        self.raw["queues"]
            .as_array()
            .expect("queues")
            .iter()
            .map(queue)
            .collect()
    }

    fn skip(&self) -> Option<Skip> {
        if self.raw["queues"].is_null() || self.raw["consumers"].is_null() {
            return Some(Skip::JavaNull);
        }
        if self.strategy_name() == "CONFIG" {
            return Some(Skip::Config);
        }
        if self.params().get("consumeridcsByConsumer").is_some() {
            return Some(Skip::ConsumeridcsByConsumer);
        }
        let ids = self.consumers();
        if ids.iter().collect::<BTreeSet<_>>().len() != ids.len() {
            return Some(Skip::DuplicateConsumer);
        }
        if ids.is_empty() {
            return Some(Skip::NoConsumers);
        }
        None
    }

    fn model(&self) -> MessageModel {
        match self.raw["messageModel"].as_str() {
            Some("CLUSTERING") => MessageModel::Clustering,
            Some("BROADCASTING") => MessageModel::Broadcasting,
            other => panic!("{}: unknown messageModel {other:?}", self.id()),
        }
    }

    fn strategy(&self) -> Strategy {
        let p = self.params();
        let count = |key: &str| -> u32 {
            let n = p[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{}: params.{key}", self.id()));
            u32::try_from(n).expect("virtual node count fits u32")
        };
        let name = self.strategy_name();
        match name {
            "AVG" => Strategy::Averagely,
            "AVG_BY_CIRCLE" => Strategy::AveragelyByCircle,
            "CONSISTENT_HASH" => Strategy::ConsistentHash {
                virtual_nodes: count("virtualNodeCnt"),
            },
            "MACHINE_ROOM" => Strategy::ByMachineRoom {
                consume_zones: p["consumeridcs"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{}: params.consumeridcs", self.id()))
                    .iter()
                    .map(|z| z.as_str().expect("room").to_string())
                    .collect(),
            },
            _ => {
                let inner = name
                    .strip_prefix("MACHINE_ROOM_NEARBY-")
                    .unwrap_or_else(|| panic!("{}: unknown strategy {name}", self.id()));
                assert_eq!(p["innerStrategy"].as_str(), Some(inner), "{}", self.id());
                let inner = match inner {
                    "AVG" => InnerStrategy::Averagely,
                    "AVG_BY_CIRCLE" => InnerStrategy::AveragelyByCircle,
                    "CONSISTENT_HASH" => InnerStrategy::ConsistentHash {
                        virtual_nodes: count("innerVirtualNodeCnt"),
                    },
                    other => panic!("{}: unknown inner strategy {other}", self.id()),
                };
                Strategy::MachineRoomNearby { inner }
            }
        }
    }

    fn is_nearby(&self) -> bool {
        self.strategy_name().starts_with("MACHINE_ROOM_NEARBY-")
    }

    /// The room the vector's resolver gave `key` (a broker or a client id), for Nearby only.
    fn room(&self, map: &str, key: &str) -> Option<String> {
        if !self.is_nearby() {
            return None;
        }
        let room = self.params()[map][key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: params.{map} has no {key}", self.id()));
        Some(room.to_string())
    }

    /// One topic; brokers from `queues`, each with ids `0..n` (checked), readable and writable.
    fn topic(&self) -> TopicInput {
        let mut ids: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (broker, id) in self.queues() {
            ids.entry(broker).or_default().push(id);
        }
        let brokers = ids
            .into_iter()
            .map(|(name, mut ids)| {
                ids.sort_unstable();
                let n = ids.len() as u32;
                assert!(
                    ids.iter().copied().eq(0..n),
                    "{}: broker {name} has queue ids {ids:?}, not 0..{n}",
                    self.id()
                );
                BrokerInput {
                    zone: self.room("brokerRooms", &name),
                    name,
                    read_queues: n,
                    write_queues: n,
                    permission: Permission::ReadWrite,
                }
            })
            .collect();
        TopicInput {
            name: self.raw["topic"].as_str().expect("topic").to_string(),
            brokers,
        }
    }

    fn consumer_inputs(&self) -> Vec<ConsumerInput> {
        self.consumers()
            .into_iter()
            .map(|id| ConsumerInput {
                zone: self.room("consumerRooms", &id),
                id,
            })
            .collect()
    }

    fn run(&self) -> Result<Assignment, AssignError> {
        let topics = [self.topic()];
        let consumers = self.consumer_inputs();
        let strategy = self.strategy();
        allocate(&GroupInput {
            topics: &topics,
            consumers: &consumers,
            strategy: &strategy,
            model: self.model(),
            previous: None,
        })
    }

    /// RocketMQ's answer per consumer, as sets; consumers without an entry got nothing.
    fn expected(&self) -> BTreeMap<String, BTreeSet<Queue>> {
        let answers = self.raw["assignment"].as_object().expect("assignment");
        for id in answers.keys() {
            assert!(
                self.consumers().contains(id),
                "{}: assignment names {id}, which is not a consumer",
                self.id()
            );
        }
        self.consumers()
            .into_iter()
            .map(|id| {
                let set = answers
                    .get(&id)
                    .map(|qs| {
                        qs.as_array()
                            .expect("queue list")
                            .iter()
                            .map(queue)
                            .collect()
                    })
                    .unwrap_or_default();
                (id, set)
            })
            .collect()
    }

    fn stat(&self, key: &str) -> u64 {
        self.raw["stats"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: stats.{key}", self.id()))
    }
}

fn queue(v: &Value) -> Queue {
    let broker = v["broker"].as_str().expect("broker").to_string();
    let id = v["queueId"].as_u64().expect("queueId");
    (broker, u32::try_from(id).expect("queue id fits u32"))
}

/// What the engine gave each consumer, as sets, and the queues nobody got.
fn actual(a: &Assignment) -> (BTreeMap<String, BTreeSet<Queue>>, BTreeSet<Queue>) {
    let rendered = a.by_consumer();
    let expand = |blocks: &[rebalancer::assign::QueueBlock]| -> BTreeSet<Queue> {
        let mut set = BTreeSet::new();
        for b in blocks {
            let broker = &a.topics[b.topic as usize].brokers[b.broker as usize].name;
            for &(start, end) in &b.ranges {
                set.extend((start..=end).map(|id| (broker.clone(), id)));
            }
        }
        set
    };
    let owned = a
        .consumers
        .iter()
        .zip(&rendered.owned)
        .map(|(id, blocks)| (id.clone(), expand(blocks)))
        .collect();
    (owned, expand(&rendered.unassigned))
}

fn fmt_queues<'a>(queues: impl IntoIterator<Item = &'a Queue>) -> String {
    let mut out = String::new();
    let mut by_broker: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (b, id) in queues {
        by_broker.entry(b).or_default().push(*id);
    }
    for (b, mut ids) in by_broker {
        ids.sort_unstable();
        let mut ranges = Vec::new();
        for id in ids {
            rebalancer::assign::ranges::push_id(&mut ranges, id);
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        let _ = write!(
            out,
            "{b}:{}",
            rebalancer::assign::ranges::format_ranges(&ranges)
        );
    }
    if out.is_empty() { "-".into() } else { out }
}

/// The engine error RocketMQ's exception message stands for.
fn expected_error(v: &Vector, message: &str) -> AssignError {
    let topic = v.raw["topic"].as_str().expect("topic").to_string();
    match message {
        "mqAll is null or mqAll empty" => AssignError::NoQueues { topic },
        "cidAll is null or cidAll empty" => AssignError::NoConsumers,
        "currentCID is empty" => AssignError::EmptyConsumerId,
        m => panic!("{}: no engine error is known for RocketMQ's {m:?}", v.id()),
    }
}

/// Compares one fitting vector; returns human-readable mismatches.
fn check(v: &Vector) -> Vec<String> {
    let mut problems = Vec::new();
    let result = v.run();

    if let Some(errors) = v.raw.get("errors").and_then(Value::as_object) {
        let messages: BTreeSet<&str> = errors
            .values()
            .map(|e| e["message"].as_str().expect("error message"))
            .collect();
        assert_eq!(
            errors.keys().collect::<BTreeSet<_>>(),
            v.consumers().iter().collect::<BTreeSet<_>>(),
            "{}: `errors` must cover every consumer",
            v.id()
        );
        assert_eq!(messages.len(), 1, "{}: mixed errors {messages:?}", v.id());
        let want = expected_error(v, messages.first().unwrap());
        match result {
            Err(e) if e == want => {}
            Err(e) => problems.push(format!("expected Err({want:?}), got Err({e:?})")),
            Ok(_) => problems.push(format!("expected Err({want:?}), got Ok")),
        }
        return problems;
    }

    let a = match result {
        Ok(a) => a,
        Err(e) => return vec![format!("RocketMQ allocated, the engine failed: {e}")],
    };
    let expected = v.expected();
    let (got, unassigned) = actual(&a);
    let empty = BTreeSet::new();
    for (id, want) in &expected {
        let have = got.get(id).unwrap_or(&empty);
        if want != have {
            problems.push(format!(
                "consumer {id}:\n      expected {}\n      got      {}\n      missing  {}\n      extra    {}",
                fmt_queues(want),
                fmt_queues(have),
                fmt_queues(want.difference(have)),
                fmt_queues(have.difference(want)),
            ));
        }
    }
    for id in got.keys().filter(|id| !expected.contains_key(*id)) {
        problems.push(format!("the engine invented consumer {id}"));
    }

    // Queues nobody got: the engine's count must match RocketMQ's, and so must the queues.
    let all: BTreeSet<Queue> = v.queues().into_iter().collect();
    let taken: BTreeSet<Queue> = expected.values().flatten().cloned().collect();
    let want_unassigned: BTreeSet<Queue> = all.difference(&taken).cloned().collect();
    if v.stat("unassignedQueues") != want_unassigned.len() as u64 {
        problems.push(format!(
            "data: stats.unassignedQueues={} but the assignment leaves {} queues",
            v.stat("unassignedQueues"),
            want_unassigned.len()
        ));
    }
    if unassigned.len() as u64 != v.stat("unassignedQueues") {
        problems.push(format!(
            "unassigned: RocketMQ {} ({}), engine {} ({})",
            v.stat("unassignedQueues"),
            fmt_queues(&want_unassigned),
            unassigned.len(),
            fmt_queues(&unassigned)
        ));
    }
    if a.model == MessageModel::Clustering && v.stat("multiAssignedQueues") != 0 {
        problems.push(format!(
            "RocketMQ gave {} queues to several consumers; clustering cannot",
            v.stat("multiAssignedQueues")
        ));
    }
    problems
}

#[test]
fn rocketmq_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rocketmq-vectors.jsonl"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let vectors: Vec<Vector> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| Vector {
            raw: serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}:{}: {e}", n + 1)),
        })
        .collect();

    let mut skipped: BTreeMap<Skip, Vec<String>> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut passed = 0usize;
    for v in &vectors {
        if let Some(skip) = v.skip() {
            // Skipped vectors still pin down the engine's own answer where it has one.
            let ok = match skip {
                Skip::DuplicateConsumer => Some(match v.run() {
                    Err(AssignError::DuplicateConsumer(id)) => {
                        v.consumers().iter().filter(|c| **c == id).count() > 1
                    }
                    _ => false,
                }),
                Skip::NoConsumers => Some(v.run() == Err(AssignError::NoConsumers)),
                _ => None,
            };
            if ok == Some(false) {
                failures.push(format!(
                    "{}\n    skipped ({}), but the engine answered {:?}",
                    v.label(),
                    skip.reason(),
                    v.run().map(|_| "Ok")
                ));
            }
            skipped.entry(skip).or_default().push(v.id().to_string());
            continue;
        }
        let problems = check(v);
        if problems.is_empty() {
            passed += 1;
        } else {
            failures.push(format!("{}\n    {}", v.label(), problems.join("\n    ")));
        }
    }

    let reasons: Vec<String> = skipped
        .iter()
        .map(|(s, ids)| format!("{} {}", ids.len(), s.reason()))
        .collect();
    let skipped_total: usize = skipped.values().map(Vec::len).sum();
    let summary = format!(
        "{} vectors: {passed} passed, {skipped_total} skipped ({}), {} failed",
        vectors.len(),
        reasons.join(", "),
        failures.len()
    );
    println!("{summary}");

    assert!(
        failures.is_empty(),
        "{summary}\n\n{} mismatching vectors:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert_eq!(vectors.len(), EXPECTED_VECTORS, "{summary}");
    let counts: Vec<(Skip, usize)> = skipped.iter().map(|(s, ids)| (*s, ids.len())).collect();
    assert_eq!(
        counts, EXPECTED_SKIPS,
        "{summary}\nthe skip list changed: {skipped:#?}"
    );
    assert_eq!(passed + skipped_total, vectors.len(), "{summary}");
}
