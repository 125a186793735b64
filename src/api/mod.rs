//! The custom resources: `Topic` and `ConsumerGroup` (group `rebalancer.dev`, version `v1alpha1`).
//!
//! This module is the only place the schema is defined; `crds/` is generated from it by
//! `rebalancer crds` and a test fails when the two drift apart.

mod consumer_group;
mod queue_ref;
mod topic;
pub mod validation;

pub use consumer_group::*;
pub use queue_ref::*;
pub use topic::*;

use kube::CustomResourceExt;

/// API group of both kinds.
pub const GROUP: &str = "rebalancer.dev";
/// API version of both kinds.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in YAML.
pub const API_VERSION: &str = "rebalancer.dev/v1alpha1";

/// The CRDs as `(file name, YAML)`, in the order they are printed by `rebalancer crds`.
pub fn crd_files() -> Vec<(String, String)> {
    let render = |crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let yaml = serde_yaml::to_string(&crd).expect("a CRD always serialises to YAML");
        (format!("{name}.yaml"), yaml)
    };
    vec![render(Topic::crd()), render(ConsumerGroup::crd())]
}

/// Both CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> String {
    crd_files()
        .into_iter()
        .map(|(_, yaml)| format!("---\n{yaml}"))
        .collect()
}
