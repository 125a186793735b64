//! Allocation engine benchmarks (`cargo bench --bench assign`).
//!
//! `assign_65536q_4096c`: one topic of 16 brokers × 4,096 queues and 4,096 consumers named like
//! StatefulSet pods (`orders-consumer-123`), in 3 zones. Targets: every strategy under 5 ms,
//! ConsistentHash (MD5 per queue and per virtual node) under 50 ms.
//!
//! `scale_1m`: 256 brokers × 4,096 queues (1,048,576) and 65,536 consumers, Averagely and Sticky.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use rebalancer::assign::{
    Assignment, BrokerInput, ConsumerInput, GroupInput, InnerStrategy, MessageModel, Permission,
    PreviousOwner, Strategy, TopicInput, allocate,
};

const ZONES: [&str; 3] = ["az1", "az2", "az3"];

struct Group {
    topics: Vec<TopicInput>,
    consumers: Vec<ConsumerInput>,
}

impl Group {
    fn new(brokers: usize, queues: u32, consumers: usize) -> Group {
        let brokers = (0..brokers)
            .map(|b| BrokerInput {
                name: format!("broker-{b}"),
                read_queues: queues,
                write_queues: queues,
                permission: Permission::ReadWrite,
                zone: Some(ZONES[b % ZONES.len()].to_string()),
            })
            .collect();
        Group {
            topics: vec![TopicInput {
                name: "orders".into(),
                brokers,
            }],
            consumers: (0..consumers)
                .map(|i| ConsumerInput {
                    id: format!("orders-consumer-{i}"),
                    zone: Some(ZONES[i % ZONES.len()].to_string()),
                })
                .collect(),
        }
    }

    fn run(
        &self,
        strategy: &Strategy,
        model: MessageModel,
        previous: Option<&[PreviousOwner]>,
    ) -> Assignment {
        allocate(&GroupInput {
            topics: &self.topics,
            consumers: &self.consumers,
            strategy,
            model,
            previous,
        })
        .expect("allocates")
    }

    /// The assignment in force before the last consumer joined (Averagely over all but the last).
    fn previous_without_last(&self) -> Vec<PreviousOwner> {
        let fewer = Group {
            topics: self.topics.clone(),
            consumers: self.consumers[..self.consumers.len() - 1].to_vec(),
        };
        fewer
            .run(&Strategy::Averagely, MessageModel::Clustering, None)
            .previous_owners()
    }
}

fn strategies() -> Vec<(&'static str, Strategy)> {
    vec![
        ("averagely", Strategy::Averagely),
        ("averagely_by_circle", Strategy::AveragelyByCircle),
        (
            "consistent_hash_v10",
            Strategy::ConsistentHash { virtual_nodes: 10 },
        ),
        (
            "by_machine_room",
            Strategy::ByMachineRoom {
                consume_zones: vec!["az1".into(), "az2".into()],
            },
        ),
        (
            "nearby_averagely",
            Strategy::MachineRoomNearby {
                inner: InnerStrategy::Averagely,
            },
        ),
        (
            "nearby_consistent_hash_v10",
            Strategy::MachineRoomNearby {
                inner: InnerStrategy::ConsistentHash { virtual_nodes: 10 },
            },
        ),
    ]
}

fn assign_65536q_4096c(c: &mut Criterion) {
    let g = Group::new(16, 4096, 4096);
    let previous = g.previous_without_last();
    let mut group = c.benchmark_group("assign_65536q_4096c");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    for (name, strategy) in strategies() {
        group.bench_function(name, |b| {
            b.iter(|| g.run(black_box(&strategy), MessageModel::Clustering, None))
        });
    }
    group.bench_function("sticky_scale_up_4095_to_4096", |b| {
        b.iter(|| {
            g.run(
                &Strategy::Sticky,
                MessageModel::Clustering,
                Some(black_box(&previous)),
            )
        })
    });
    group.bench_function("broadcasting", |b| {
        b.iter(|| g.run(&Strategy::Averagely, MessageModel::Broadcasting, None))
    });

    let averagely = g.run(&Strategy::Averagely, MessageModel::Clustering, None);
    group.bench_function("by_consumer_averagely", |b| {
        b.iter(|| black_box(&averagely).by_consumer())
    });
    let hashed = g.run(
        &Strategy::ConsistentHash { virtual_nodes: 10 },
        MessageModel::Clustering,
        None,
    );
    group.bench_function("by_consumer_consistent_hash", |b| {
        b.iter(|| black_box(&hashed).by_consumer())
    });
    group.finish();
}

fn scale_1m(c: &mut Criterion) {
    let g = Group::new(256, 4096, 65_536);
    let previous = g.previous_without_last();
    let mut group = c.benchmark_group("scale_1m");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("averagely", |b| {
        b.iter(|| g.run(&Strategy::Averagely, MessageModel::Clustering, None))
    });
    group.bench_function("sticky_scale_up_65535_to_65536", |b| {
        b.iter(|| {
            g.run(
                &Strategy::Sticky,
                MessageModel::Clustering,
                Some(black_box(&previous)),
            )
        })
    });
    let averagely = g.run(&Strategy::Averagely, MessageModel::Clustering, None);
    group.bench_function("by_consumer_averagely", |b| {
        b.iter(|| black_box(&averagely).by_consumer())
    });
    group.finish();
}

criterion_group!(benches, assign_65536q_4096c, scale_1m);
criterion_main!(benches);
