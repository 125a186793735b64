//! Scale check: a 1,048,576-queue topic (256 brokers × 4,096) over 65,536 consumers goes through
//! the whole `plan` path (engine, rendering, status allocation) and the process's peak memory stays
//! under 1 GiB. Timing lives in `cargo bench` (benches/assign.rs), not here.

use rebalancer::api::{Allocation, ConsumerGroupSpec, StrategyName, Topic, TopicSpec};
use rebalancer::assign::ConsumerInput;
use rebalancer::plan::plan_group;

const BROKERS: usize = 256;
const QUEUES_PER_BROKER: u32 = 4096;
const CONSUMERS: usize = 65_536;

/// Peak resident set size of this process, from /proc (Linux).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn group(strategy: StrategyName) -> ConsumerGroupSpec {
    serde_json::from_value(serde_json::json!({"topics": ["orders"], "strategy": strategy})).unwrap()
}

#[test]
fn a_million_queues_over_65536_consumers_stays_under_1_gib() {
    let brokers: Vec<_> = (0..BROKERS)
        .map(|b| serde_json::json!({"name": format!("broker-{b}"), "readQueues": QUEUES_PER_BROKER, "writeQueues": QUEUES_PER_BROKER}))
        .collect();
    let spec: TopicSpec = serde_json::from_value(serde_json::json!({"brokers": brokers})).unwrap();
    let topic = Topic::new("orders", spec);
    let lookup = |name: &str| (name == "orders").then_some(&topic);
    let consumers: Vec<ConsumerInput> = (0..CONSUMERS)
        .map(|i| ConsumerInput::new(format!("orders-consumer-{i}")))
        .collect();

    let first: Allocation = plan_group(
        &group(StrategyName::Averagely),
        false,
        lookup,
        &consumers[..CONSUMERS - 1],
        None,
    )
    .unwrap();
    assert_eq!(first.queues, 1 << 20);
    // Scale up by one with Sticky, reading the previous allocation as the operator does.
    let second = plan_group(
        &group(StrategyName::Sticky),
        false,
        lookup,
        &consumers,
        Some(&first),
    )
    .unwrap();
    assert_eq!(second.consumers as usize, CONSUMERS);
    assert_eq!(second.idle, 0);
    assert_eq!(
        second.moved_queues, 16,
        "the newcomer's share, nothing else"
    );

    let peak = peak_rss_bytes().expect("/proc/self/status has VmHWM");
    println!("peak RSS {} MiB", peak / (1024 * 1024));
    assert!(peak < 1 << 30, "peak RSS {peak} bytes");
}
