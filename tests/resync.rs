//! A resync of unchanged Applications sends zero write requests: an operator that starts on a cluster
//! where everything already holds (rendered objects, grants, status) reconciles every Application and
//! writes nothing. Read from the operator's own request counter, on the real control plane.
mod support;

use std::sync::Arc;
use std::time::Duration;

use kube::Api;
use oam_trust::api::trust::GitLabTrust;
use oam_trust::runtime::metrics::Metrics;
use serde_json::json;

const APPS: usize = 8;

/// Runs an operator with its own counters; abort the handle to stop it.
async fn start_operator(metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
    support::start_own_operator(support::own_operator_args("resync"), metrics).await
}

#[tokio::test]
async fn a_restart_over_unchanged_applications_writes_nothing() {
    let admin = support::admin().await;
    support::install_crds(&admin).await;
    support::install_deploy_guard(&admin).await;
    let ns = support::app_namespace(&admin, "resync", "admin").await;
    let trust = support::trust_with_wide_ceiling(&admin, &ns).await;
    for i in 0..APPS {
        // Half declare access, so grant objects and the guard's parameters are resynced too.
        let policies = if i % 2 == 0 {
            json!([{"name": "deploy", "type": "gitlab-access", "properties": {"trust": trust,
                "subjects": [{"projectId": format!("{}", 100 + i), "namespaceId": "72"}], "access": "deploy"}}])
        } else {
            json!([])
        };
        support::apply_app(
            &admin,
            &ns,
            json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
                   "metadata": {"name": format!("app-{i}")},
                   "spec": {"components": [{"name": format!("web-{i}"), "type": "webservice",
                              "properties": {"image": "nginx", "ports": [{"port": 80, "expose": true}]},
                              "traits": [{"type": "scaler", "properties": {"replicas": 2}}]}],
                            "policies": policies}}),
        )
        .await;
    }

    let first = start_operator(Arc::new(Metrics::default())).await;
    for i in 0..APPS {
        support::wait_app(
            &admin,
            &ns,
            &format!("app-{i}"),
            "running with its grants",
            |a| {
                support::app_running(a)
                    && (i % 2 == 1
                        || a.status.as_ref().is_some_and(|s| {
                            s.conditions
                                .iter()
                                .any(|c| c.type_ == "AccessReady" && c.status == "True")
                        }))
            },
        )
        .await;
    }
    // The trust's status is the first operator's too: stop it only once both conditions are written,
    // or the second operator writes them and the count below is of a race, not of a resync.
    let trusts = Api::<GitLabTrust>::all(admin.clone());
    let written = support::eventually(Duration::from_secs(60), || {
        let trusts = trusts.clone();
        let trust = trust.clone();
        async move {
            trusts
                .get(&trust)
                .await
                .ok()
                .and_then(|t| t.status)
                .is_some_and(|s| {
                    ["Ready", "AdmissionPoliciesReady"]
                        .iter()
                        .all(|ty| s.conditions.iter().any(|c| c.type_ == *ty))
                })
        }
    })
    .await;
    assert!(
        written,
        "the first operator did not write the status of {trust}"
    );
    first.abort();
    let _ = first.await;

    let metrics = Arc::new(Metrics::recording_writes());
    let second = start_operator(metrics.clone()).await;
    let reconciled = support::eventually(Duration::from_secs(60), || {
        let m = metrics.clone();
        async move { m.reconciles("application") >= APPS as u64 }
    })
    .await;
    assert!(
        reconciled,
        "the restarted operator reconciled {} of {APPS}",
        metrics.reconciles("application")
    );
    // Let the triggers of the initial lists (owned objects, grants, namespaces) run out.
    let mut last = metrics.reconciles("application");
    let quiet = support::eventually(Duration::from_secs(60), || {
        let now = metrics.reconciles("application");
        let settled = now == last;
        last = now;
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            settled
        }
    })
    .await;
    assert!(quiet, "reconciles did not settle");
    // The cluster is shared with other tests, whose objects this operator reconciles too: count the
    // writes that touch this test's namespace, trust and ceiling.
    let ours: Vec<String> = metrics
        .written()
        .into_iter()
        .filter(|w| {
            w.contains(&format!("/namespaces/{ns}/"))
                || w.split('?')
                    .next()
                    .is_some_and(|p| p.ends_with(&format!("/{ns}")))
                || w.contains(&trust)
                || w.contains(&format!("ceiling-{ns}"))
        })
        .collect();
    assert_eq!(
        ours,
        Vec::<String>::new(),
        "a resync of {APPS} unchanged Applications ({} reconciles) wrote",
        metrics.reconciles("application")
    );
    second.abort();
}
