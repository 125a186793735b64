//! One allocation of 1,048,576 queues (256 brokers × 4,096) to 65,536 consumers, then
//! `by_consumer()`, timed once. Run it under `/usr/bin/time -v` to see the peak RSS:
//!
//! ```text
//! cargo build --release --example scale_check
//! /usr/bin/time -v target/release/examples/scale_check [averagely|sticky|consistent-hash]
//! ```
//!
//! `sticky` first builds the previous assignment (Averagely over 65,535 consumers), untimed, and
//! then times the Sticky scale-up to 65,536.

use std::time::Instant;

use rebalancer::assign::{
    Assignment, BrokerInput, ConsumerInput, ConsumerQueues, GroupInput, MessageModel, Permission,
    PreviousOwner, Strategy, TopicInput, allocate,
};

const BROKERS: usize = 256;
const QUEUES_PER_BROKER: u32 = 4096;
const CONSUMERS: usize = 65_536;

fn run(
    topics: &[TopicInput],
    consumers: &[ConsumerInput],
    strategy: &Strategy,
    previous: Option<&[PreviousOwner]>,
) -> Assignment {
    allocate(&GroupInput {
        topics,
        consumers,
        strategy,
        model: MessageModel::Clustering,
        previous,
    })
    .expect("allocates")
}

fn main() {
    let mode = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "averagely".into());
    let topics = vec![TopicInput {
        name: "orders".into(),
        brokers: (0..BROKERS)
            .map(|b| BrokerInput {
                name: format!("broker-{b}"),
                read_queues: QUEUES_PER_BROKER,
                write_queues: QUEUES_PER_BROKER,
                permission: Permission::ReadWrite,
                zone: None,
            })
            .collect(),
    }];
    let consumers: Vec<ConsumerInput> = (0..CONSUMERS)
        .map(|i| ConsumerInput::new(format!("orders-consumer-{i}")))
        .collect();

    let (strategy, previous) = match mode.as_str() {
        "averagely" => (Strategy::Averagely, None),
        "consistent-hash" => (Strategy::ConsistentHash { virtual_nodes: 10 }, None),
        "sticky" => {
            let before = run(
                &topics,
                &consumers[..CONSUMERS - 1],
                &Strategy::Averagely,
                None,
            );
            (Strategy::Sticky, Some(before.previous_owners()))
        }
        other => panic!("unknown mode {other}: averagely, sticky or consistent-hash"),
    };

    let start = Instant::now();
    let a = run(&topics, &consumers, &strategy, previous.as_deref());
    let allocated = start.elapsed();
    let rendered = a.by_consumer();
    let total = start.elapsed();

    let owned: u64 = rendered
        .owned
        .iter()
        .map(|b| ConsumerQueues::count(b))
        .sum();
    let blocks: usize = rendered.owned.iter().map(Vec::len).sum();
    println!(
        "{mode}: {} queues, {} consumers: allocate {:.1} ms, by_consumer {:.1} ms, total {:.1} ms; \
         {owned} owned in {blocks} blocks, {} unassigned, {} moved",
        a.topics[0].owners.len(),
        a.consumers.len(),
        allocated.as_secs_f64() * 1e3,
        (total - allocated).as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        ConsumerQueues::count(&rendered.unassigned),
        a.moved_queues,
    );
}
