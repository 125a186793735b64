//! Errors of the reconcilers. A variant's name is the reason in Events and metrics.

use crate::plan::PlanError;

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed (network, RBAC, conflict, ...).
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object has no namespace (the kinds are namespaced, so this is a bug upstream).
    #[error("object has no namespace")]
    NoNamespace,
    /// The group could not be planned; the last good assignment stays in place.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The workload named by `workloadRef` could not be read.
    #[error("workload {0}: {1}")]
    Workload(String, String),
}

impl Error {
    /// Low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeError",
            Error::NoNamespace => "NoNamespace",
            Error::Plan(p) => p.reason(),
            Error::Workload(..) => "WorkloadError",
        }
    }
}
