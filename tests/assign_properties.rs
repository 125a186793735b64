//! Properties of the allocation engine over random groups, plus a few hand-worked cases from
//! `docs/rocketmq-allocation.md` run end to end through [`allocate`].
//!
//! The generators mix the awkward inputs real clusters produce: broker names with `@` (RocketMQ's
//! `room@broker` rule), digits that sort as text (`broker-10` < `broker-9`), capitals, non-ASCII and
//! non-BMP consumer ids (Java's UTF-16 order differs from Rust's there), unreadable brokers, zero
//! queue counts and missing zones.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use rebalancer::assign::ranges::push_id;
use rebalancer::assign::{
    AssignError, Assignment, BrokerInput, ConsumerInput, GroupInput, InnerStrategy, MessageModel,
    Permission, PreviousOwner, QueueBlock, QueueSelection, Strategy as Rule, TopicInput,
    UNASSIGNED, allocate, zone,
};

const ZONES: &[&str] = &["az1", "az2", "az3"];
const CONSUME_ZONES: &[&str] = &["az1", "az2", "az3", ""];
const ODD_BROKERS: &[&str] = &["@broker-x", "room1@", "a@b@c", "@", "az1@broker-a@"];
const GARBAGE_BROKERS: &[&str] = &["", "a", "b", "A", "b-10", "b-9", "z1@b", "@", "x@y@z"];
const GARBAGE_TOPICS: &[&str] = &["", "t", "u", "T", "%RETRY%g"];
const GARBAGE_SELECTED_TOPICS: &[&str] = &["", "t", "u", "nope"];
const GARBAGE_IDS: &[&str] = &[
    "",
    " ",
    "c-0",
    "c-1",
    "c-10",
    "c-2",
    "\u{1F600}",
    "\u{FF21}",
];

// ---------------------------------------------------------------------------------------------
// A tiny deterministic PRNG (SplitMix64) for shuffles and previous assignments derived from a seed.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs.

#[derive(Clone, Debug)]
struct Case {
    topics: Vec<TopicInput>,
    consumers: Vec<ConsumerInput>,
    rule: Rule,
    model: MessageModel,
    previous: Option<Vec<PreviousOwner>>,
}

impl Case {
    fn run(&self) -> Result<Assignment, AssignError> {
        allocate(&GroupInput {
            topics: &self.topics,
            consumers: &self.consumers,
            strategy: &self.rule,
            model: self.model,
            previous: self.previous.as_deref(),
        })
    }

    fn with(&self, rule: Rule, previous: Option<Vec<PreviousOwner>>) -> Case {
        Case {
            rule,
            previous,
            ..self.clone()
        }
    }

    /// The same group, listed in another order.
    fn shuffled(&self, seed: u64) -> Case {
        let mut rng = Rng(seed);
        let mut c = self.clone();
        rng.shuffle(&mut c.topics);
        for t in &mut c.topics {
            rng.shuffle(&mut t.brokers);
        }
        rng.shuffle(&mut c.consumers);
        if let Some(p) = &mut c.previous {
            rng.shuffle(p);
            for entry in p.iter_mut() {
                rng.shuffle(&mut entry.queues);
            }
        }
        c
    }
}

fn broker_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u32..20).prop_map(|n| format!("broker-{n}")),
        2 => (0u32..12).prop_map(|n| format!("Broker-{n}")),
        3 => (select(ZONES), 0u32..12).prop_map(|(z, n)| format!("{z}@broker-{n}")),
        2 => "[a-zA-Z0-9@._-]{1,10}",
        1 => select(ODD_BROKERS).prop_map(String::from),
        1 => (0u32..3, 0u32..12).prop_map(|(a, b)| format!("10.0.{a}.{b}@1")),
    ]
}

fn permission() -> impl Strategy<Value = Permission> {
    prop_oneof![
        6 => Just(Permission::ReadWrite),
        2 => Just(Permission::ReadOnly),
        1 => Just(Permission::WriteOnly),
        1 => Just(Permission::Deny),
    ]
}

fn zone_choice() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        6 => select(ZONES).prop_map(|z| Some(z.to_string())),
        1 => Just(Some(String::new())),
    ]
}

fn broker_input() -> impl Strategy<Value = BrokerInput> {
    (
        broker_name(),
        0u32..40,
        0u32..40,
        permission(),
        zone_choice(),
    )
        .prop_map(
            |(name, read_queues, write_queues, permission, zone)| BrokerInput {
                name,
                read_queues,
                write_queues,
                permission,
                zone,
            },
        )
}

fn dedupe_by<T, K: Ord + Clone>(items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut seen = std::collections::BTreeSet::new();
    items.into_iter().filter(|i| seen.insert(key(i))).collect()
}

fn topic() -> impl Strategy<Value = TopicInput> {
    let name = prop_oneof![
        Just("orders".to_string()),
        Just("%RETRY%cg".to_string()),
        "[a-zA-Z0-9_%-]{1,8}",
    ];
    (name, prop::collection::vec(broker_input(), 1..=6)).prop_map(|(name, brokers)| TopicInput {
        name,
        brokers: dedupe_by(brokers, |b| b.name.clone()),
    })
}

fn topics() -> impl Strategy<Value = Vec<TopicInput>> {
    prop::collection::vec(topic(), 1..=3).prop_map(|t| dedupe_by(t, |t| t.name.clone()))
}

fn consumer_id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u32..60).prop_map(|n| format!("orders-consumer-{n}")),
        2 => (0u32..3, 0u32..20).prop_map(|(a, b)| format!("10.0.{a}.{b}@1")),
        3 => "[a-zA-Z0-9@.#-]{1,12}",
        // Non-ASCII, and non-BMP (surrogate pairs in Java) next to high-BMP characters.
        2 => "[aé中\u{FF21}\u{FFFD}\u{1F600}\u{10437}-]{1,4}",
    ]
}

fn consumers(max: usize) -> impl Strategy<Value = Vec<ConsumerInput>> {
    prop::collection::vec((consumer_id(), zone_choice()), 1..=max).prop_map(|cs| {
        dedupe_by(cs, |c| c.0.clone())
            .into_iter()
            .map(|(id, zone)| ConsumerInput { id, zone })
            .collect()
    })
}

fn inner() -> impl Strategy<Value = InnerStrategy> {
    prop_oneof![
        Just(InnerStrategy::Averagely),
        Just(InnerStrategy::AveragelyByCircle),
        (0u32..12).prop_map(|virtual_nodes| InnerStrategy::ConsistentHash { virtual_nodes }),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    prop_oneof![
        Just(Rule::Averagely),
        Just(Rule::AveragelyByCircle),
        (0u32..12).prop_map(|virtual_nodes| Rule::ConsistentHash { virtual_nodes }),
        prop::collection::vec(select(CONSUME_ZONES), 0..=3).prop_map(|z| {
            Rule::ByMachineRoom {
                consume_zones: z.into_iter().map(String::from).collect(),
            }
        }),
        inner().prop_map(|inner| Rule::MachineRoomNearby { inner }),
        Just(Rule::Sticky),
    ]
}

/// Gives every broker and consumer a machine room, so that `MachineRoomNearby` can run.
fn fill_zones(topics: &mut [TopicInput], consumers: &mut [ConsumerInput]) {
    for t in topics {
        for (i, b) in t.brokers.iter_mut().enumerate() {
            let room = zone::broker_zone(&b.name, b.zone.as_deref());
            if room.is_none_or(|r| r.is_empty()) {
                b.zone = Some(ZONES[i % ZONES.len()].to_string());
            }
        }
    }
    for (i, c) in consumers.iter_mut().enumerate() {
        if c.zone.as_deref().unwrap_or("").is_empty() {
            c.zone = Some(ZONES[i % 2].to_string());
        }
    }
}

/// Makes every topic have at least one readable queue.
fn make_readable(topics: &mut [TopicInput]) {
    for t in topics {
        let b = &mut t.brokers[0];
        b.permission = Permission::ReadWrite;
        b.read_queues = b.read_queues.max(1);
    }
}

/// A random previous assignment: each queue (and a few ids past the end) unowned, owned by a
/// present consumer, or owned by one that left; plus entries naming things that do not exist.
/// Every queue is claimed at most once.
fn previous_from_seed(
    topics: &[TopicInput],
    consumers: &[ConsumerInput],
    seed: u64,
) -> Vec<PreviousOwner> {
    let mut rng = Rng(seed);
    let mut map: BTreeMap<String, Vec<QueueSelection>> = BTreeMap::new();
    let keep_own = rng.below(4) == 0;
    for t in topics {
        for b in &t.brokers {
            for id in 0..b.read_queues + 2 {
                let owner = match rng.below(10) {
                    0 if !keep_own => continue,
                    1 => format!("gone-{}", rng.below(3)),
                    _ => consumers[rng.below(consumers.len())].id.clone(),
                };
                let sels = map.entry(owner).or_default();
                match sels.last_mut() {
                    Some(s) if s.topic == t.name && s.broker == b.name => {
                        push_id(&mut s.ranges, id)
                    }
                    _ => sels.push(QueueSelection {
                        topic: t.name.clone(),
                        broker: b.name.clone(),
                        ranges: vec![(id, id)],
                    }),
                }
            }
        }
    }
    map.entry(consumers[0].id.clone())
        .or_default()
        .push(QueueSelection {
            topic: "gone-topic".into(),
            broker: "broker-1".into(),
            ranges: vec![(0, 3)],
        });
    map.entry("gone-0".into())
        .or_default()
        .push(QueueSelection {
            topic: topics[0].name.clone(),
            broker: "gone-broker".into(),
            ranges: vec![(0, u32::MAX)],
        });
    map.into_iter()
        .map(|(consumer, queues)| PreviousOwner { consumer, queues })
        .collect()
}

fn case() -> impl Strategy<Value = Case> {
    (
        topics(),
        consumers(40),
        rule(),
        prop_oneof![9 => Just(MessageModel::Clustering), 1 => Just(MessageModel::Broadcasting)],
        prop::option::of(any::<u64>()),
        prop::bool::weighted(0.75),
    )
        .prop_map(|(mut topics, mut consumers, rule, model, seed, fill)| {
            if fill {
                fill_zones(&mut topics, &mut consumers);
            }
            let previous = seed.map(|s| previous_from_seed(&topics, &consumers, s));
            Case {
                topics,
                consumers,
                rule,
                model,
                previous,
            }
        })
}

/// A clustering case that always allocates: readable queues, zones set, no Nearby errors.
fn good_case() -> impl Strategy<Value = Case> {
    case().prop_map(|mut c| {
        make_readable(&mut c.topics);
        fill_zones(&mut c.topics, &mut c.consumers);
        c.model = MessageModel::Clustering;
        c
    })
}

// ---------------------------------------------------------------------------------------------
// Views of an assignment.

/// Previous owner id of each (topic, broker, id), from a list without double claims.
fn previous_map(previous: &[PreviousOwner]) -> HashMap<(String, String, u32), String> {
    let mut map = HashMap::new();
    for entry in previous {
        for sel in &entry.queues {
            for &(start, end) in &sel.ranges {
                for id in start..=end.min(5_000) {
                    let key = (sel.topic.clone(), sel.broker.clone(), id);
                    assert!(map.insert(key, entry.consumer.clone()).is_none());
                }
            }
        }
    }
    map
}

/// Per topic, for each queue in order: (broker name, queue id).
fn queue_names(a: &Assignment, t: usize) -> Vec<(&str, u32)> {
    a.topics[t]
        .brokers
        .iter()
        .flat_map(|b| (0..b.count).map(move |id| (b.name.as_str(), id)))
        .collect()
}

/// Queue counts per consumer, per topic.
fn counts(a: &Assignment, t: usize) -> Vec<usize> {
    let mut n = vec![0; a.consumers.len()];
    for &o in &a.topics[t].owners {
        if o != UNASSIGNED {
            n[o as usize] += 1;
        }
    }
    n
}

/// Queues of topic `t` whose owner differs from `previous` (queues without a previous owner do
/// not count), as `moved_queues` defines it.
fn changed(a: &Assignment, t: usize, previous: &HashMap<(String, String, u32), String>) -> u64 {
    let topic = &a.topics[t];
    queue_names(a, t)
        .iter()
        .zip(&topic.owners)
        .filter(|&(&(b, id), &o)| {
            previous
                .get(&(topic.topic.clone(), b.to_string(), id))
                .is_some_and(|p| o == UNASSIGNED || a.consumers[o as usize] != *p)
        })
        .count() as u64
}

// ---------------------------------------------------------------------------------------------
// Checks shared by several properties.

/// Java `String.compareTo` (UTF-16 code units), written independently of the engine's own.
fn java_lt(a: &str, b: &str) -> bool {
    a.encode_utf16().lt(b.encode_utf16())
}

fn check_blocks(blocks: &[QueueBlock], a: &Assignment) -> Result<(), TestCaseError> {
    for pair in blocks.windows(2) {
        prop_assert!(
            (pair[0].topic, pair[0].broker) < (pair[1].topic, pair[1].broker),
            "blocks out of order or split: {blocks:?}"
        );
    }
    for b in blocks {
        let count = a.topics[b.topic as usize].brokers[b.broker as usize].count;
        prop_assert!(!b.ranges.is_empty());
        for &(start, end) in &b.ranges {
            prop_assert!(start <= end && end < count, "bad range in {b:?}");
        }
        for pair in b.ranges.windows(2) {
            // Sorted, and merged: a gap of at least one id between ranges.
            prop_assert!(
                pair[0].1.checked_add(1).is_some_and(|n| n < pair[1].0),
                "ranges not sorted/merged: {:?}",
                b.ranges
            );
        }
    }
    Ok(())
}

/// Structure, order and `by_consumer()` round trip of any successful assignment.
fn check_assignment(c: &Case, a: &Assignment) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.model, c.model);
    prop_assert_eq!(a.consumers.len(), c.consumers.len());
    for pair in a.consumers.windows(2) {
        prop_assert!(java_lt(&pair[0], &pair[1]), "{:?}", &a.consumers);
    }
    prop_assert_eq!(a.topics.len(), c.topics.len());
    for pair in a.topics.windows(2) {
        prop_assert!(java_lt(&pair[0].topic, &pair[1].topic));
    }
    for t in &a.topics {
        let input = c.topics.iter().find(|i| i.name == t.topic).unwrap();
        let readable: Vec<&BrokerInput> = input
            .brokers
            .iter()
            .filter(|b| b.permission.readable() && b.read_queues > 0)
            .collect();
        prop_assert_eq!(t.brokers.len(), readable.len());
        let mut offset = 0;
        for (i, b) in t.brokers.iter().enumerate() {
            if i > 0 {
                prop_assert!(java_lt(&t.brokers[i - 1].name, &b.name));
            }
            let src = readable.iter().find(|r| r.name == b.name).unwrap();
            prop_assert_eq!(b.count, src.read_queues);
            prop_assert_eq!(b.offset, offset);
            prop_assert_eq!(&b.zone, &zone::broker_zone(&src.name, src.zone.as_deref()));
            offset += b.count;
        }
        match a.model {
            MessageModel::Broadcasting => prop_assert!(t.owners.is_empty()),
            MessageModel::Clustering => {
                prop_assert_eq!(t.owners.len() as u32, offset);
                for &o in &t.owners {
                    prop_assert!(o == UNASSIGNED || (o as usize) < a.consumers.len());
                }
            }
        }
    }

    // by_consumer(): blocks cover exactly the owned queues (and `unassigned` the rest), each
    // queue once, blocks in (topic, broker) order, ranges sorted and merged.
    let r = a.by_consumer();
    prop_assert_eq!(r.owned.len(), a.consumers.len());
    for blocks in r.owned.iter().chain([&r.unassigned]) {
        check_blocks(blocks, a)?;
    }
    if a.model == MessageModel::Broadcasting {
        prop_assert!(r.unassigned.is_empty());
        return Ok(());
    }
    const UNSEEN: u32 = u32::MAX - 7;
    let mut rebuilt: Vec<Vec<u32>> = a
        .topics
        .iter()
        .map(|t| vec![UNSEEN; t.owners.len()])
        .collect();
    let owners = (0..a.consumers.len() as u32).map(|i| (i, &r.owned[i as usize]));
    for (owner, blocks) in owners.chain([(UNASSIGNED, &r.unassigned)]) {
        for b in blocks {
            let slice = &a.topics[b.topic as usize].brokers[b.broker as usize];
            for &(start, end) in &b.ranges {
                for id in start..=end {
                    let slot = &mut rebuilt[b.topic as usize][(slice.offset + id) as usize];
                    prop_assert_eq!(*slot, UNSEEN, "queue listed twice");
                    *slot = owner;
                }
            }
        }
    }
    for (t, topic) in a.topics.iter().enumerate() {
        prop_assert_eq!(&rebuilt[t], &topic.owners);
    }
    let total: u64 = r
        .owned
        .iter()
        .chain([&r.unassigned])
        .map(|b| rebalancer::assign::ConsumerQueues::count(b))
        .sum();
    prop_assert_eq!(
        total,
        a.topics.iter().map(|t| t.owners.len() as u64).sum::<u64>()
    );
    Ok(())
}

/// Which queues clustering may leave unowned, and balance where the strategy promises it.
fn check_clustering(c: &Case, a: &Assignment) -> Result<(), TestCaseError> {
    for (t, topic) in a.topics.iter().enumerate() {
        for b in &topic.brokers {
            let owners = &topic.owners[b.offset as usize..][..b.count as usize];
            let expect_owned = match &c.rule {
                Rule::ConsistentHash { virtual_nodes: 0 }
                | Rule::MachineRoomNearby {
                    inner: InnerStrategy::ConsistentHash { virtual_nodes: 0 },
                } => false,
                Rule::ByMachineRoom { consume_zones } => {
                    b.zone.as_ref().is_some_and(|z| consume_zones.contains(z))
                }
                _ => true,
            };
            for &o in owners {
                prop_assert_eq!(
                    o != UNASSIGNED,
                    expect_owned,
                    "topic {} broker {} (zone {:?}): owners {:?}",
                    &topic.topic,
                    &b.name,
                    &b.zone,
                    owners
                );
            }
        }
        if matches!(
            c.rule,
            Rule::Averagely | Rule::AveragelyByCircle | Rule::Sticky
        ) {
            let n = counts(a, t);
            let (min, max) = (n.iter().min().unwrap(), n.iter().max().unwrap());
            prop_assert!(max - min <= 1, "unbalanced {}: {n:?}", &topic.topic);
        }
    }
    Ok(())
}

/// Sticky keeps every queue of a present consumer that is within its new quota, and
/// `moved_queues` counts exactly the queues whose owner changed.
fn check_previous(c: &Case, a: &Assignment) -> Result<(), TestCaseError> {
    let Some(previous) = &c.previous else {
        prop_assert_eq!(a.moved_queues, 0);
        return Ok(());
    };
    let prev = previous_map(previous);
    let index: HashMap<&str, usize> = a
        .consumers
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut moved = 0;
    for (t, topic) in a.topics.iter().enumerate() {
        moved += changed(a, t, &prev);
        if c.rule != Rule::Sticky {
            continue;
        }
        let names = queue_names(a, t);
        let prev_owner: Vec<Option<usize>> = names
            .iter()
            .map(|&(b, id)| {
                prev.get(&(topic.topic.clone(), b.to_string(), id))
                    .and_then(|p| index.get(p.as_str()).copied())
            })
            .collect();
        let mut held = vec![0usize; a.consumers.len()];
        for p in prev_owner.iter().flatten() {
            held[*p] += 1;
        }
        let now = counts(a, t);
        for (q, p) in prev_owner.iter().enumerate() {
            if let Some(p) = *p
                && topic.owners[q] != p as u32
            {
                prop_assert!(
                    held[p] > now[p],
                    "{} lost {:?} although it held {} and now holds {}",
                    &a.consumers[p],
                    names[q],
                    held[p],
                    now[p]
                );
            }
        }
    }
    if a.model == MessageModel::Clustering {
        prop_assert_eq!(a.moved_queues, moved);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Listing topics, brokers, consumers and previous owners in another order changes nothing,
    /// errors included.
    #[test]
    fn input_order_is_irrelevant(c in case(), seed in any::<u64>()) {
        let a = c.run();
        prop_assert_eq!(&a, &c.shuffled(seed).run());
        if let Ok(a) = &a {
            check_assignment(&c, a)?;
        }
    }

    /// Every successful assignment is well formed and renders back to itself; clustering owns
    /// every readable queue once (except where RocketMQ gives queues to nobody), balanced
    /// strategies are within ±1, and `moved_queues` is right.
    #[test]
    fn assignments_are_complete_and_balanced(c in good_case()) {
        let a = c.run();
        prop_assert!(a.is_ok(), "{:?}", a);
        let a = a.unwrap();
        check_assignment(&c, &a)?;
        check_clustering(&c, &a)?;
        check_previous(&c, &a)?;
    }

    /// The same for arbitrary cases (errors allowed).
    #[test]
    fn any_result_is_consistent(c in case()) {
        if let Ok(a) = c.run() {
            check_assignment(&c, &a)?;
            if a.model == MessageModel::Clustering {
                check_clustering(&c, &a)?;
                check_previous(&c, &a)?;
            }
        }
    }

    /// Sticky without history is Averagely.
    #[test]
    fn sticky_without_previous_is_averagely(c in good_case()) {
        let sticky = c.with(Rule::Sticky, None).run();
        prop_assert_eq!(sticky, c.with(Rule::Averagely, None).run());
    }

    /// Broadcasting: every consumer reads every readable queue, whatever the strategy.
    #[test]
    fn broadcasting_gives_everyone_everything(c in case()) {
        let c = Case { model: MessageModel::Broadcasting, ..c };
        let a = c.run();
        prop_assert!(a.is_ok(), "{:?}", a);
        let a = a.unwrap();
        check_assignment(&c, &a)?;
        prop_assert_eq!(a.moved_queues, 0);
        let r = a.by_consumer();
        let all: Vec<QueueBlock> = a.topics.iter().enumerate().flat_map(|(t, topic)| {
            topic.brokers.iter().enumerate().map(move |(b, slice)| QueueBlock {
                topic: t as u32,
                broker: b as u32,
                ranges: vec![(0, slice.count - 1)],
            })
        }).collect();
        for blocks in &r.owned {
            prop_assert_eq!(blocks, &all);
        }
    }
}

/// A balanced previous assignment of `c` (Averagely or AveragelyByCircle).
fn balanced(c: &Case, by_circle: bool) -> Assignment {
    let rule = if by_circle {
        Rule::AveragelyByCircle
    } else {
        Rule::Averagely
    };
    c.with(rule, None).run().expect("balanced previous")
}

fn unique_id(consumers: &[ConsumerInput], id: String) -> String {
    let mut id = id;
    while consumers.iter().any(|c| c.id == id) {
        id.push('+');
    }
    id
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// One consumer joins a balanced group: per topic at most ⌈Q/(C+1)⌉ queues move, and only from
    /// consumers above their new quota.
    #[test]
    fn sticky_scale_up_moves_little(
        c in good_case(),
        by_circle in any::<bool>(),
        new_id in consumer_id(),
        new_zone in zone_choice(),
    ) {
        let before = balanced(&c, by_circle);
        let mut grown = c.with(Rule::Sticky, Some(before.previous_owners()));
        let id = unique_id(&grown.consumers, new_id);
        grown.consumers.push(ConsumerInput { id, zone: new_zone });
        let after = grown.run();
        prop_assert!(after.is_ok(), "{:?}", after);
        let after = after.unwrap();
        check_assignment(&grown, &after)?;
        check_clustering(&grown, &after)?;
        check_previous(&grown, &after)?;
        let prev = previous_map(grown.previous.as_ref().unwrap());
        let c_old = c.consumers.len() as u64;
        for t in 0..after.topics.len() {
            let q = after.topics[t].owners.len() as u64;
            let moved = changed(&after, t, &prev);
            prop_assert!(
                moved <= q.div_ceil(c_old + 1),
                "topic {}: {moved} of {q} queues moved for {c_old}+1 consumers",
                &after.topics[t].topic
            );
        }
    }

    /// One consumer leaves a balanced group: its queues move, and otherwise only what balancing
    /// needs (consumers above ⌈Q/(C-1)⌉, which a balanced start never has).
    #[test]
    fn sticky_scale_down_moves_only_the_leavers_queues(
        c in good_case(),
        by_circle in any::<bool>(),
        leaver in any::<prop::sample::Index>(),
    ) {
        prop_assume!(c.consumers.len() >= 2);
        let before = balanced(&c, by_circle);
        let mut shrunk = c.with(Rule::Sticky, Some(before.previous_owners()));
        let gone = shrunk.consumers.remove(leaver.index(c.consumers.len())).id;
        let after = shrunk.run();
        prop_assert!(after.is_ok(), "{:?}", after);
        let after = after.unwrap();
        check_assignment(&shrunk, &after)?;
        check_clustering(&shrunk, &after)?;
        check_previous(&shrunk, &after)?;
        let prev = previous_map(shrunk.previous.as_ref().unwrap());
        let c_new = shrunk.consumers.len() as u64;
        for t in 0..after.topics.len() {
            let q = after.topics[t].owners.len() as u64;
            let ceil = q.div_ceil(c_new);
            let gone_held = before.topics[t]
                .owners
                .iter()
                .filter(|&&o| o != UNASSIGNED && before.consumers[o as usize] == gone)
                .count() as u64;
            let excess: u64 = counts(&before, t)
                .iter()
                .zip(&before.consumers)
                .filter(|(_, id)| **id != gone)
                .map(|(&n, _)| (n as u64).saturating_sub(ceil))
                .sum();
            prop_assert_eq!(excess, 0);
            let moved = changed(&after, t, &prev);
            prop_assert!(
                moved <= gone_held + excess,
                "topic {}: {moved} moved, the leaver held {gone_held}",
                &after.topics[t].topic
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Garbage: nothing may panic.

fn garbage_case() -> impl Strategy<Value = Case> {
    let name = || select(GARBAGE_BROKERS);
    let count = || prop_oneof![8 => 0u32..8, 1 => 0u32..=4096];
    let brokers = prop::collection::vec(
        (name(), count(), count(), permission(), zone_choice()),
        0..=5,
    )
    .prop_map(|bs| {
        bs.into_iter()
            .map(|(n, r, w, p, z)| BrokerInput {
                name: n.to_string(),
                read_queues: r,
                write_queues: w,
                permission: p,
                zone: z,
            })
            .collect::<Vec<_>>()
    });
    let topic_name = select(GARBAGE_TOPICS);
    let topics = prop::collection::vec((topic_name, brokers), 0..=3).prop_map(|ts| {
        ts.into_iter()
            .map(|(n, brokers)| TopicInput {
                name: n.to_string(),
                brokers,
            })
            .collect::<Vec<_>>()
    });
    let ids = select(GARBAGE_IDS);
    let consumer_list = prop_oneof![
        6 => prop::collection::vec((ids.clone().prop_map(String::from), zone_choice()), 0..=8),
        1 => (0usize..300).prop_map(|n| (0..n).map(|i| (format!("c-{i}"), Some(ZONES[i % 3].to_string()))).collect()),
    ]
    .prop_map(|cs| {
        cs.into_iter()
            .map(|(id, zone)| ConsumerInput { id, zone })
            .collect::<Vec<_>>()
    });
    let id_val = || prop_oneof![0u32..6, Just(4095), Just(4096), Just(u32::MAX)];
    let selection = (
        select(GARBAGE_SELECTED_TOPICS),
        name(),
        prop::collection::vec((id_val(), id_val()), 0..=3),
    )
        .prop_map(|(t, b, ranges)| QueueSelection {
            topic: t.to_string(),
            broker: b.to_string(),
            ranges,
        });
    let selections = prop::collection::vec(selection, 0..=3);
    let by_config = prop::collection::btree_map(
        ids.clone().prop_map(String::from),
        selections.clone(),
        0..=3,
    )
    .prop_map(|assignments| Rule::ByConfig { assignments });
    let rules = prop_oneof![4 => rule(), 1 => by_config];
    let previous = prop::option::of(prop::collection::vec(
        (ids.prop_map(String::from), selections),
        0..=4,
    ))
    .prop_map(|p| {
        p.map(|entries| {
            entries
                .into_iter()
                .map(|(consumer, queues)| PreviousOwner { consumer, queues })
                .collect::<Vec<_>>()
        })
    });
    let model = prop_oneof![
        Just(MessageModel::Clustering),
        Just(MessageModel::Broadcasting)
    ];
    (topics, consumer_list, rules, model, previous).prop_map(
        |(topics, consumers, rule, model, previous)| Case {
            topics,
            consumers,
            rule,
            model,
            previous,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Garbage in (empty and duplicate ids, duplicate brokers and topics, zero-queue topics, queue
    /// counts up to 4096, nonsense previous and ByConfig ranges): errors are fine, panics are not,
    /// and the answer does not depend on input order.
    #[test]
    fn garbage_never_panics(c in garbage_case(), seed in any::<u64>()) {
        let a = c.run();
        if let Ok(a) = &a {
            let _ = a.by_consumer();
            check_assignment(&c, a)?;
        }
        prop_assert_eq!(&a, &c.shuffled(seed).run());
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-worked cases from docs/rocketmq-allocation.md, through `allocate`.

fn broker(name: &str, queues: u32) -> BrokerInput {
    BrokerInput {
        name: name.into(),
        read_queues: queues,
        write_queues: queues,
        permission: Permission::ReadWrite,
        zone: None,
    }
}

fn zoned(name: &str, queues: u32, zone: &str) -> BrokerInput {
    BrokerInput {
        zone: Some(zone.into()),
        ..broker(name, queues)
    }
}

fn run(
    brokers: Vec<BrokerInput>,
    consumers: &[ConsumerInput],
    rule: Rule,
) -> Result<Assignment, AssignError> {
    let topics = [TopicInput {
        name: "orders".into(),
        brokers,
    }];
    allocate(&GroupInput {
        topics: &topics,
        consumers,
        strategy: &rule,
        model: MessageModel::Clustering,
        previous: None,
    })
}

/// Each consumer's queues as `broker:ranges` text, e.g. `broker-a:0-3;broker-b:1`.
fn render(a: &Assignment) -> BTreeMap<String, String> {
    let r = a.by_consumer();
    let text = |blocks: &[QueueBlock]| {
        blocks
            .iter()
            .map(|b| {
                let name = &a.topics[b.topic as usize].brokers[b.broker as usize].name;
                format!(
                    "{name}:{}",
                    rebalancer::assign::ranges::format_ranges(&b.ranges)
                )
            })
            .collect::<Vec<_>>()
            .join(";")
    };
    let mut out: BTreeMap<String, String> = a
        .consumers
        .iter()
        .zip(&r.owned)
        .map(|(id, blocks)| (id.clone(), text(blocks)))
        .collect();
    out.insert("(unassigned)".into(), text(&r.unassigned));
    out
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ids(ids: &[&str]) -> Vec<ConsumerInput> {
    ids.iter().map(|&id| ConsumerInput::new(id)).collect()
}

#[test]
fn statefulset_ordinals_sort_as_text() {
    // 11 pods, 11 queues: Java order is 0, 1, 10, 2, ..., 9, so pod 10 gets the third queue.
    let pods: Vec<String> = (0..11).map(|i| format!("orders-consumer-{i}")).collect();
    let consumers = ids(&pods.iter().map(String::as_str).collect::<Vec<_>>());
    let a = run(vec![broker("broker-a", 11)], &consumers, Rule::Averagely).unwrap();
    let r = render(&a);
    assert_eq!(r["orders-consumer-0"], "broker-a:0");
    assert_eq!(r["orders-consumer-1"], "broker-a:1");
    assert_eq!(r["orders-consumer-10"], "broker-a:2");
    assert_eq!(r["orders-consumer-2"], "broker-a:3");
    assert_eq!(r["orders-consumer-9"], "broker-a:10");
}

#[test]
fn ip_client_ids_and_broker_names_sort_as_text() {
    // 10.0.0.10@1 < 10.0.0.9@1, and broker-10 < broker-9: the first page is broker-10's queues.
    let a = run(
        vec![broker("broker-9", 2), broker("broker-10", 2)],
        &ids(&["10.0.0.9@1", "10.0.0.10@1"]),
        Rule::Averagely,
    )
    .unwrap();
    assert_eq!(
        render(&a),
        expect(&[
            ("10.0.0.10@1", "broker-10:0-1"),
            ("10.0.0.9@1", "broker-9:0-1"),
            ("(unassigned)", ""),
        ])
    );
}

#[test]
fn by_machine_room_deals_the_remainder_from_the_tail() {
    // 10 eligible queues (az1: 6, az2: 4), 3 consumers: c0 gets e0-e2 and e9, az3 goes to nobody.
    // Zones come from RocketMQ's room@broker naming rule.
    let a = run(
        vec![
            broker("az3@broker-c", 5),
            broker("az2@broker-b", 4),
            broker("az1@broker-a", 6),
        ],
        &ids(&["c-0", "c-1", "c-2"]),
        Rule::ByMachineRoom {
            consume_zones: vec!["az1".into(), "az2".into()],
        },
    )
    .unwrap();
    assert_eq!(
        render(&a),
        expect(&[
            ("c-0", "az1@broker-a:0-2;az2@broker-b:3"),
            ("c-1", "az1@broker-a:3-5"),
            ("c-2", "az2@broker-b:0-2"),
            ("(unassigned)", "az3@broker-c:0-4"),
        ])
    );
}

#[test]
fn nearby_orphan_rooms_are_shared_by_everyone_room_by_room() {
    // Everyone is in az1. az2 and az3 have no consumer, so each is split over the whole group on
    // its own, and the remainders pile up on the first consumers.
    let consumers: Vec<ConsumerInput> = ["c-0", "c-1", "c-2"]
        .iter()
        .map(|&id| ConsumerInput {
            id: id.into(),
            zone: Some("az1".into()),
        })
        .collect();
    let a = run(
        vec![
            zoned("broker-a", 4, "az1"),
            zoned("broker-b", 2, "az2"),
            zoned("broker-c", 2, "az3"),
        ],
        &consumers,
        Rule::MachineRoomNearby {
            inner: InnerStrategy::Averagely,
        },
    )
    .unwrap();
    assert_eq!(
        render(&a),
        expect(&[
            ("c-0", "broker-a:0-1;broker-b:0;broker-c:0"),
            ("c-1", "broker-a:2;broker-b:1;broker-c:1"),
            ("c-2", "broker-a:3"),
            ("(unassigned)", ""),
        ])
    );
}

#[test]
fn nearby_consumers_without_a_local_broker_get_only_orphan_rooms() {
    // az1 and az2 have brokers; c-2 lives in az4. az2 has no consumer: it is shared by all.
    let consumers = vec![
        ConsumerInput {
            id: "c-0".into(),
            zone: Some("az1".into()),
        },
        ConsumerInput {
            id: "c-1".into(),
            zone: Some("az1".into()),
        },
        ConsumerInput {
            id: "c-2".into(),
            zone: Some("az4".into()),
        },
    ];
    let a = run(
        vec![zoned("broker-a", 4, "az1"), zoned("broker-b", 3, "az2")],
        &consumers,
        Rule::MachineRoomNearby {
            inner: InnerStrategy::AveragelyByCircle,
        },
    )
    .unwrap();
    assert_eq!(
        render(&a),
        expect(&[
            ("c-0", "broker-a:0,2;broker-b:0"),
            ("c-1", "broker-a:1,3;broker-b:1"),
            ("c-2", "broker-b:2"),
            ("(unassigned)", ""),
        ])
    );
}

#[test]
fn nearby_needs_every_consumer_zone() {
    let consumers = vec![
        ConsumerInput {
            id: "c-0".into(),
            zone: Some("az1".into()),
        },
        ConsumerInput::new("c-1"),
    ];
    let err = run(
        vec![zoned("broker-a", 4, "az1")],
        &consumers,
        Rule::MachineRoomNearby {
            inner: InnerStrategy::Averagely,
        },
    )
    .unwrap_err();
    assert_eq!(
        err,
        AssignError::MissingConsumerZone {
            consumer: "c-1".into()
        }
    );
    // An empty zone is as good as none, as RocketMQ's resolver returning "" throws.
    let consumers = vec![ConsumerInput {
        id: "c-0".into(),
        zone: Some(String::new()),
    }];
    let err = run(
        vec![zoned("broker-a", 4, "az1")],
        &consumers,
        Rule::MachineRoomNearby {
            inner: InnerStrategy::Averagely,
        },
    )
    .unwrap_err();
    assert!(matches!(err, AssignError::MissingConsumerZone { .. }));
}

#[test]
fn nearby_needs_every_broker_zone() {
    // broker-b has no zone and no room@ prefix.
    let consumers = vec![ConsumerInput {
        id: "c-0".into(),
        zone: Some("az1".into()),
    }];
    let err = run(
        vec![zoned("broker-a", 4, "az1"), broker("broker-b", 2)],
        &consumers,
        Rule::MachineRoomNearby {
            inner: InnerStrategy::Averagely,
        },
    )
    .unwrap_err();
    assert_eq!(
        err,
        AssignError::MissingBrokerZone {
            topic: "orders".into(),
            broker: "broker-b".into()
        }
    );
}

#[test]
fn consistent_hash_without_virtual_nodes_assigns_nothing() {
    let a = run(
        vec![broker("broker-a", 3), broker("broker-b", 2)],
        &ids(&["c-0", "c-1"]),
        Rule::ConsistentHash { virtual_nodes: 0 },
    )
    .unwrap();
    assert_eq!(
        render(&a),
        expect(&[
            ("c-0", ""),
            ("c-1", ""),
            ("(unassigned)", "broker-a:0-2;broker-b:0-1"),
        ])
    );
}

#[test]
fn topic_without_readable_queues_keeps_the_old_assignment() {
    // RocketMQ throws "mqAll is null or mqAll empty"; the caller keeps what is in force.
    let mut b = broker("broker-a", 4);
    b.permission = Permission::WriteOnly;
    let err = run(vec![b], &ids(&["c-0"]), Rule::Averagely).unwrap_err();
    assert_eq!(
        err,
        AssignError::NoQueues {
            topic: "orders".into()
        }
    );
}

#[test]
fn non_bmp_ids_sort_in_utf16_order() {
    // Java puts U+1F600 (surrogates D83D DE00) before U+FF21; Rust's str order the other way.
    let a = run(
        vec![broker("broker-a", 2)],
        &ids(&["x\u{FF21}", "x\u{1F600}"]),
        Rule::Averagely,
    )
    .unwrap();
    assert_eq!(a.consumers, ["x\u{1F600}", "x\u{FF21}"]);
    assert_eq!(render(&a)["x\u{1F600}"], "broker-a:0");
}
