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
