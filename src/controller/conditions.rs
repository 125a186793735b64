//! Conditions that keep their `lastTransitionTime` while their status stays the same, so a
//! reconcile that changes nothing produces an identical status and therefore no write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition as computed, before the transition time is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Condition type.
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    /// `Unknown` instead (a state not settled yet).
    pub unknown: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl Desired {
    /// A new desired condition.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            unknown: false,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A condition whose status is `Unknown`.
    pub fn unknown(
        type_: &'static str,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            unknown: true,
            ..Self::new(type_, false, reason, message)
        }
    }

    fn status_text(&self) -> String {
        if self.unknown {
            "Unknown".to_string()
        } else {
            status_text(self.status)
        }
    }
}

fn status_text(b: bool) -> String {
    if b { "True" } else { "False" }.to_string()
}

/// Merges desired conditions with the current ones: unchanged status keeps its transition time.
/// Conditions of types not in `desired` are kept as they are.
pub fn merge(
    current: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = current
        .iter()
        .filter(|c| !desired.iter().any(|d| d.type_ == c.type_))
        .cloned()
        .collect();
    for d in desired {
        let status = d.status_text();
        let previous = current.iter().find(|c| c.type_ == d.type_);
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Time(now),
        };
        out.push(Condition {
            type_: d.type_.to_string(),
            status,
            reason: d.reason.clone(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// A condition that exists only around a problem: `raised` while the problem holds, `cleared`
/// once it stopped holding if it was ever raised, and no condition at all otherwise.
pub fn while_it_holds(
    current: &[Condition],
    raised: Option<Desired>,
    cleared: Desired,
) -> Option<Desired> {
    raised.or_else(|| find(current, cleared.type_).map(|_| cleared))
}

/// The condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of `type_` differs in status, reason or message between two lists.
pub fn changed(before: &[Condition], after: &[Condition], type_: &str) -> bool {
    let key =
        |c: Option<&Condition>| c.map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
    key(find(before, type_)) != key(find(after, type_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_transition_time_while_status_holds() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let first = merge(
            &[],
            &[Desired::new("Ready", true, "Rebalanced", "ok")],
            Some(1),
            t0,
        );
        let second = merge(
            &first,
            &[Desired::new("Ready", true, "Rebalanced", "still ok")],
            Some(2),
            t1,
        );
        assert_eq!(second[0].last_transition_time, Time(t0));
        let third = merge(
            &second,
            &[Desired::new("Ready", false, "TopicNotFound", "x")],
            Some(2),
            t1,
        );
        assert_eq!(third[0].last_transition_time, Time(t1));
        assert!(changed(&second, &third, "Ready"));
        assert!(!changed(&first, &first, "Ready"));
    }

    #[test]
    fn a_problem_condition_appears_only_around_the_problem() {
        let t = Timestamp::from_second(1_000).unwrap();
        let raised = || Some(Desired::new("Truncated", true, "TooLarge", "x"));
        let cleared = || Desired::new("Truncated", false, "Fits", "y");
        assert_eq!(while_it_holds(&[], None, cleared()), None);
        assert_eq!(while_it_holds(&[], raised(), cleared()), raised());
        let before = merge(&[], &[raised().unwrap()], None, t);
        assert_eq!(while_it_holds(&before, None, cleared()), Some(cleared()));
    }
}
