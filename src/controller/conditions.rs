//! `metav1.Condition` bookkeeping: a condition's `lastTransitionTime` moves only when its status does.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The condition a reconcile wants to report; `set` turns it into a `Condition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Desired {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Merges `desired` into `existing`: untouched types are kept, a type whose status is unchanged keeps
/// its transition time. The result is sorted by type so repeated reconciles produce identical lists.
pub fn merge(
    existing: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = existing
        .iter()
        .filter(|c| !desired.iter().any(|d| d.type_ == c.type_))
        .cloned()
        .collect();
    for d in desired {
        let status = if d.status { "True" } else { "False" }.to_string();
        let since = existing
            .iter()
            .find(|c| c.type_ == d.type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        out.push(Condition {
            type_: d.type_.to_string(),
            status,
            reason: d.reason.clone(),
            message: d.message.clone(),
            last_transition_time: since,
            observed_generation: generation,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Equal apart from transition times: used to skip status writes that would change nothing.
pub fn same_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        let first = merge(
            &[],
            &[Desired::new("Parsed", true, "Rendered", "ok")],
            Some(1),
            t0,
        );
        let same = merge(
            &first,
            &[Desired::new("Parsed", true, "Rendered", "still ok")],
            Some(2),
            t1,
        );
        assert_eq!(same[0].last_transition_time.0, t0);
        assert_eq!(same[0].message, "still ok");
        let flipped = merge(
            &same,
            &[Desired::new("Parsed", false, "RenderError", "bad")],
            Some(3),
            t1,
        );
        assert_eq!(flipped[0].last_transition_time.0, t1);
        assert_eq!(flipped[0].status, "False");
    }

    #[test]
    fn other_condition_types_are_kept_and_sorted() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let a = merge(&[], &[Desired::new("Parsed", true, "R", "")], None, t0);
        let b = merge(&a, &[Desired::new("Healthy", false, "H", "")], None, t0);
        assert_eq!(
            b.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            ["Healthy", "Parsed"]
        );
        assert!(same_ignoring_time(&b, &b.clone()));
    }
}
