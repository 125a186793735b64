//! Errors of the reconcilers: only I/O failures. A group that cannot be planned is not an error
//! here but a `Ready=False` condition with a Warning Event (see `group::decide`); what remains
//! is a request that failed, retried with a backoff that depends on what failed.

use std::time::Duration;

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{op}: {source}")]
    Kube {
        /// What was being done, e.g. `patch pod a/p-0`.
        op: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The object has no namespace (the kinds are namespaced, so this is a bug upstream).
    #[error("object has no namespace")]
    NoNamespace,
}

/// Shortest retry of a failed reconcile.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest retry of a transient failure.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Retry of a refusal that only a person can fix (RBAC, an admission webhook).
const REFUSED_RETRY: Duration = Duration::from_secs(300);

impl Error {
    /// Wraps a client error with the operation that failed.
    pub fn kube(op: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            op: op.into(),
            source,
        }
    }

    /// Low-cardinality label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(s) if s.code == 403 => "Forbidden",
                kube::Error::Api(s) if s.code == 404 => "NotFound",
                kube::Error::Api(s) if s.code == 409 => "Conflict",
                kube::Error::Api(s) if s.code == 429 => "Throttled",
                kube::Error::Api(s) if s.code >= 500 => "ServerError",
                kube::Error::Api(_) => "Rejected",
                _ => "Connection",
            },
            Error::NoNamespace => "NoNamespace",
        }
    }

    /// Whether retrying soon can succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        !matches!(self.category(), "Forbidden" | "Rejected" | "NoNamespace")
    }

    /// When to retry after the `failures`-th consecutive failure (1-based): exponential for
    /// transient failures, slow for refusals.
    pub fn retry_after(&self, failures: u32) -> Duration {
        if !self.is_transient() {
            return REFUSED_RETRY;
        }
        let exp = failures.saturating_sub(1).min(16);
        FIRST_RETRY.saturating_mul(1 << exp).min(MAX_RETRY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> Error {
        Error::kube(
            "patch pod a/p",
            kube::Error::Api(
                kube::core::Status::failure("m", "r")
                    .with_code(code)
                    .boxed(),
            ),
        )
    }

    #[test]
    fn transient_failures_back_off_exponentially_and_refusals_wait() {
        let e = api(503);
        assert_eq!(e.category(), "ServerError");
        assert_eq!(e.retry_after(1), Duration::from_millis(500));
        assert_eq!(e.retry_after(2), Duration::from_secs(1));
        assert_eq!(e.retry_after(4), Duration::from_secs(4));
        assert_eq!(e.retry_after(40), MAX_RETRY);
        let refused = api(403);
        assert_eq!(refused.category(), "Forbidden");
        assert!(!refused.is_transient());
        assert_eq!(refused.retry_after(1), REFUSED_RETRY);
        assert!(api(409).is_transient());
        assert_eq!(
            api(409).to_string().split(':').next(),
            Some("patch pod a/p")
        );
    }
}
