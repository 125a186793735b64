//! Writes the API server refused for good (a 4xx that retrying the same body cannot cure: an
//! admission webhook, a size limit, RBAC, a schema rule). They are not errors to retry with
//! back-off, and they must not fail silently either: the object they concern says so in
//! `Ready=False` with reason [`WRITE_REJECTED`] and a Warning Event, and keeps every other field
//! it had (the last status that was written stays the report).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

use super::conditions::{self, Desired};

/// Condition and Event reason of a refused write.
pub const WRITE_REJECTED: &str = "WriteRejected";

/// How many refused writes a message names; the rest are counted.
const NAMED: usize = 5;
/// Longest part of an API-server message quoted per refusal.
const QUOTED: usize = 200;

/// One write the API server refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What was written, e.g. `pod shop/consumer-0` or `status`.
    pub target: String,
    /// HTTP status code.
    pub code: u16,
    /// The API server's message.
    pub message: String,
}

impl Refused {
    /// The refusal in `error`, if it is one: any 4xx but 404 (gone: nothing to write), 408 and
    /// 429 (transient), and 409 (a stale view, retried on the newer object).
    pub fn from_error(target: impl Into<String>, error: &kube::Error) -> Option<Refused> {
        match error {
            kube::Error::Api(s) if (400..500).contains(&s.code) => match s.code {
                404 | 408 | 409 | 429 => None,
                code => Some(Refused {
                    target: target.into(),
                    code,
                    message: s.message.clone(),
                }),
            },
            _ => None,
        }
    }
}

/// One line naming the refused writes (at most [`NAMED`], each message cut to [`QUOTED`]).
pub fn summary(refused: &[Refused]) -> String {
    let mut parts: Vec<String> = refused
        .iter()
        .take(NAMED)
        .map(|r| {
            let mut message: String = r.message.lines().collect::<Vec<_>>().join(" ");
            if message.len() > QUOTED {
                let mut cut = QUOTED;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
                message.push('…');
            }
            format!("{} ({}: {message})", r.target, r.code)
        })
        .collect();
    if refused.len() > NAMED {
        parts.push(format!("and {} more", refused.len() - NAMED));
    }
    format!(
        "the API server refused {} write{}: {}",
        refused.len(),
        if refused.len() == 1 { "" } else { "s" },
        parts.join("; ")
    )
}

/// `conditions` with `ready_type` set to `False`/[`WRITE_REJECTED`], saying what was refused and
/// `consequence` (what the object's status therefore shows). Its transition time is reckoned
/// from `written`, the conditions the API server holds, so the same refusal again marks the same
/// status.
pub fn mark(
    conditions: &[Condition],
    written: &[Condition],
    ready_type: &'static str,
    refused: &[Refused],
    consequence: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let message = format!("{}; {consequence}", summary(refused));
    let desired = [Desired::new(ready_type, false, WRITE_REJECTED, message)];
    let ready = conditions::merge(written, &desired, generation, now)
        .into_iter()
        .filter(|c| c.type_ == ready_type);
    let mut out: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != ready_type)
        .cloned()
        .collect();
    out.extend(ready);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, "Invalid").with_code(code).boxed())
    }

    #[test]
    fn only_lasting_client_errors_are_refusals() {
        for code in [400, 403, 413, 422] {
            let r = Refused::from_error("status", &api(code, "no")).expect("a refusal");
            assert_eq!((r.code, r.message.as_str()), (code, "no"));
        }
        for code in [404, 408, 409, 429, 500, 503] {
            assert_eq!(
                Refused::from_error("status", &api(code, "no")),
                None,
                "{code}"
            );
        }
    }

    #[test]
    fn the_summary_is_one_bounded_line() {
        let refused: Vec<Refused> = (0..8)
            .map(|i| Refused {
                target: format!("pod shop/p{i}"),
                code: 422,
                message: format!("line one\nline two {}", "x".repeat(500)),
            })
            .collect();
        let s = summary(&refused);
        assert!(!s.contains('\n'), "{s}");
        assert!(
            s.starts_with("the API server refused 8 writes: pod shop/p0 (422: line one line two x"),
            "{s}"
        );
        assert!(s.ends_with("; and 3 more"), "{s}");
        assert!(s.len() < 6 * (QUOTED + 40), "{}", s.len());
        assert_eq!(
            summary(&refused[..1]).split(": ").next(),
            Some("the API server refused 1 write")
        );
    }

    #[test]
    fn mark_sets_ready_false_and_keeps_the_others() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let current = conditions::merge(
            &[],
            &[
                Desired::new("Ready", true, "Rebalanced", "2 consumers"),
                Desired::new("IdleConsumers", false, "AllBusy", "none idle"),
            ],
            Some(1),
            now,
        );
        let refused = [Refused {
            target: "status".into(),
            code: 413,
            message: "too large".into(),
        }];
        let marked = mark(
            &current,
            &current,
            "Ready",
            &refused,
            "the status shown is the last written",
            Some(1),
            now,
        );
        let ready = conditions::find(&marked, "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", WRITE_REJECTED)
        );
        assert_eq!(
            ready.message,
            "the API server refused 1 write: status (413: too large); the status shown is the last written"
        );
        assert_eq!(
            conditions::find(&marked, "IdleConsumers"),
            conditions::find(&current, "IdleConsumers")
        );
        // Marked again later: the transition time is the first mark's.
        let later = Timestamp::from_second(1_800_000_600).unwrap();
        let again = mark(
            &current,
            &marked,
            "Ready",
            &refused,
            "the status shown is the last written",
            Some(1),
            later,
        );
        assert_eq!(again, marked);
    }
}
