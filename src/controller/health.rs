//! Workload health in KubeVela's terms: `healthy` and a `Ready:<ready>/<replicas>` message, with the
//! reason when pods cannot be scheduled. Pure functions over live objects, plus one pod lookup.
use serde_json::Value;

/// Health of one component's workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    pub message: String,
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// Judges a live workload object. Unknown kinds are healthy once they exist (KubeVela's default for
/// objects without a health policy).
pub fn of_workload(live: &Value) -> Health {
    let status = &live["status"];
    let generation = int(&live["metadata"]["generation"]);
    let observed = status["observedGeneration"].as_i64().unwrap_or(generation);
    let current = observed >= generation;
    match live["kind"].as_str().unwrap_or_default() {
        "Deployment" | "StatefulSet" => {
            let replicas = live["spec"]["replicas"].as_i64().unwrap_or(1);
            let ready = int(&status["readyReplicas"]);
            let updated = int(&status["updatedReplicas"]);
            let healthy = current && ready >= replicas && updated >= replicas;
            Health {
                healthy,
                message: format!("Ready:{ready}/{replicas}"),
            }
        }
        "DaemonSet" => {
            let desired = int(&status["desiredNumberScheduled"]);
            let ready = int(&status["numberReady"]);
            Health {
                healthy: current && ready >= desired,
                message: format!("Ready:{ready}/{desired}"),
            }
        }
        "Job" => {
            let completions = live["spec"]["completions"].as_i64().unwrap_or(1);
            let succeeded = int(&status["succeeded"]);
            let failed = status["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Failed" && c["status"] == "True")
            });
            let message = if failed {
                format!(
                    "Failed: {}",
                    first_condition_message(status, "Failed").unwrap_or_default()
                )
            } else {
                format!("Succeeded:{succeeded}/{completions}")
            };
            Health {
                healthy: !failed && succeeded >= completions,
                message,
            }
        }
        _ => Health {
            healthy: true,
            message: String::new(),
        },
    }
}

fn first_condition_message(status: &Value, type_: &str) -> Option<String> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["message"].as_str())
        .map(str::to_string)
}

/// How long a workload is given to become ready before it counts as unhealthy: a new or rolled-out
/// workload is unready for a moment as a matter of course (its pods are being created and
/// scheduled). While it is *starting*, its pods are not looked at for a reason (a pod list per
/// reconcile, and a status write per changing reason), and a new generation's status waits for it
/// (`application::update_status`): the next change of the workload, usually its readiness, is
/// written instead, once. A workload still unready after this is explained and reported.
pub const STARTING: std::time::Duration = std::time::Duration::from_secs(5);

/// While workload `live` is starting at `now`, how much of [`STARTING`] is left: measured from its
/// creation, or from when its `Available` condition last turned false (a Deployment's rollout).
/// `None` once it has been unready longer, or without a parsable time (a report is never withheld
/// for good), or with a time ahead of `now` (another clock).
pub fn starting(live: &Value, now: k8s_openapi::jiff::Timestamp) -> Option<std::time::Duration> {
    let time = |v: &Value| {
        v.as_str()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
    };
    let created = time(&live["metadata"]["creationTimestamp"]);
    let unavailable = live["status"]["conditions"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "Available" && c["status"] == "False")
        })
        .and_then(|c| time(&c["lastTransitionTime"]));
    let since = created.into_iter().chain(unavailable).max()?;
    if since > now {
        return None;
    }
    STARTING
        .checked_sub(now.duration_since(since).unsigned_abs())
        .filter(|left| !left.is_zero())
}

/// The scheduler's explanation for the first unschedulable pod among `pods`, if any.
pub fn unschedulable_reason(pods: &[Value]) -> Option<String> {
    pods.iter().find_map(|p| {
        p["status"]["conditions"].as_array()?.iter().find_map(|c| {
            (c["type"] == "PodScheduled" && c["status"] == "False")
                .then(|| c["message"].as_str().unwrap_or("unschedulable").to_string())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_workload_is_starting_only_until_it_has_been_unready_for_a_while() {
        let now: k8s_openapi::jiff::Timestamp = "2026-12-02T12:00:10Z".parse().unwrap();
        let created = |t: &str| json!({"metadata": {"creationTimestamp": t}});
        assert_eq!(
            starting(&created("2026-12-02T12:00:08Z"), now),
            Some(std::time::Duration::from_secs(3))
        );
        assert_eq!(starting(&created("2026-12-02T12:00:05Z"), now), None);
        // An old Deployment whose rollout made it unavailable 1 s ago: not yet.
        let rolled = json!({"metadata": {"creationTimestamp": "2026-12-01T00:00:00Z"},
            "status": {"conditions": [
                {"type": "Available", "status": "False", "lastTransitionTime": "2026-12-02T12:00:09Z"},
                {"type": "Progressing", "status": "True", "lastTransitionTime": "2026-12-01T00:00:00Z"}]}});
        assert_eq!(
            starting(&rolled, now),
            Some(std::time::Duration::from_secs(4))
        );
        // Available, yet not every replica ready (a rollout stuck on one pod): explained at once.
        let stuck = json!({"metadata": {"creationTimestamp": "2026-12-01T00:00:00Z"},
            "status": {"conditions": [
                {"type": "Available", "status": "True", "lastTransitionTime": "2026-12-02T12:00:09Z"}]}});
        assert_eq!(starting(&stuck, now), None);
        // No time to go by, or a clock ahead of ours: never withheld for good.
        assert_eq!(starting(&json!({}), now), None);
        assert_eq!(starting(&created("2026-12-02T13:00:00Z"), now), None);
    }

    #[test]
    fn deployment_ready_message_and_health() {
        let d = json!({"kind": "Deployment", "metadata": {"generation": 2}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "readyReplicas": 2, "updatedReplicas": 3}});
        assert_eq!(
            of_workload(&d),
            Health {
                healthy: false,
                message: "Ready:2/3".into()
            }
        );
        let ok = json!({"kind": "Deployment", "metadata": {"generation": 2}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3}});
        assert!(of_workload(&ok).healthy);
        let stale = json!({"kind": "Deployment", "metadata": {"generation": 3}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 3}});
        assert!(
            !of_workload(&stale).healthy,
            "a rollout the controller has not seen yet is not healthy"
        );
    }

    #[test]
    fn jobs_daemonsets_and_unknown_kinds() {
        let job = json!({"kind": "Job", "spec": {"completions": 2}, "status": {"succeeded": 2}});
        assert_eq!(
            of_workload(&job),
            Health {
                healthy: true,
                message: "Succeeded:2/2".into()
            }
        );
        let ds =
            json!({"kind": "DaemonSet", "status": {"desiredNumberScheduled": 2, "numberReady": 1}});
        assert_eq!(of_workload(&ds).message, "Ready:1/2");
        assert!(of_workload(&json!({"kind": "ConfigMap"})).healthy);
    }

    #[test]
    fn scheduler_message_is_surfaced() {
        let pods = vec![
            json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/2 nodes are available: 2 Insufficient cpu."}]}}),
        ];
        assert_eq!(
            unschedulable_reason(&pods).as_deref(),
            Some("0/2 nodes are available: 2 Insufficient cpu.")
        );
        assert_eq!(unschedulable_reason(&[json!({"status": {}})]), None);
    }
}
