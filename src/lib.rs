//! rebalancer: assigns Apache RocketMQ queues to consumers, in Kubernetes and offline.

pub mod api;
pub mod assign;
pub mod cli;
pub mod controller;
pub mod plan;
pub mod rocketmq;
