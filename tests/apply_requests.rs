//! What the applier sends, request by request, on the real control plane: all-or-nothing without
//! sending every changed object twice. Before the first object of an apply is written, every other
//! one has passed a dry run; the first needs none (its own write is its check), so a change of one
//! object is one request, and an Application whose first object the API server refuses applies
//! nothing. Read from the operator's own record of its writes.
mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use oam_trust::api::oam::Application;
use oam_trust::runtime::metrics::Metrics;
use serde_json::{Value, json};

fn app(name: &str, components: Value) -> Value {
    json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": name},
           "spec": {"components": components}})
}

fn web(name: &str, image: &str) -> Value {
    json!({"name": name, "type": "webservice",
           "properties": {"image": image, "ports": [{"port": 80, "expose": true}]}})
}

fn applied_reason(a: &Application) -> Option<(String, String, String)> {
    let c = a
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Applied")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Each test runs an operator of its own, and every operator reconciles every Application: two at
/// once would each do part of the other's writes. One test at a time.
static ONE_OPERATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The writes so far whose path names `object` (`deployments/<name>`, …).
fn writes_to(metrics: &Metrics, ns: &str, object: &str) -> Vec<String> {
    metrics
        .written()
        .into_iter()
        .filter(|w| w.contains(&format!("/namespaces/{ns}/{object}")))
        .collect()
}

#[tokio::test]
async fn changed_objects_are_sent_once_and_a_refused_first_object_applies_nothing() {
    let _alone = ONE_OPERATOR.lock().await;
    let admin = support::admin().await;
    support::install_crds(&admin).await;
    // `edit` may create Deployments, Services and ConfigMaps, but no RBAC and nothing cluster-scoped.
    let ns = support::app_namespace(&admin, "apply-requests", "edit").await;
    let metrics = Arc::new(Metrics::recording_writes());
    let operator = support::start_own_operator(
        support::own_operator_args("apply-requests"),
        metrics.clone(),
    )
    .await;

    // A new Application of two objects: one dry run (the second object's) and two writes.
    support::apply_app(&admin, &ns, app("two", json!([web("two", "nginx:1.27")]))).await;
    support::wait_app(&admin, &ns, "two", "running", support::app_running).await;
    let deployment = writes_to(&metrics, &ns, "deployments/two");
    let service = writes_to(&metrics, &ns, "services/two");
    let dry_runs = |w: &[String]| w.iter().filter(|w| w.contains("dryRun=All")).count();
    assert_eq!(
        (
            deployment.len() + service.len(),
            dry_runs(&deployment) + dry_runs(&service)
        ),
        (3, 1),
        "two new objects: one dry run and two writes; sent {deployment:?} {service:?}"
    );

    // A new image changes the Deployment alone: one write, no dry run, nothing to the Service.
    support::apply_app(&admin, &ns, app("two", json!([web("two", "nginx:1.28")]))).await;
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &ns);
    let updated = support::eventually(Duration::from_secs(60), || {
        let deployments = deployments.clone();
        async move {
            deployments.get("two").await.ok().is_some_and(|d| {
                d.spec
                    .and_then(|s| s.template.spec)
                    .is_some_and(|p| p.containers[0].image.as_deref() == Some("nginx:1.28"))
            })
        }
    })
    .await;
    assert!(updated, "the new image was not applied");
    support::wait_app(
        &admin,
        &ns,
        "two",
        "running the new image",
        support::app_running,
    )
    .await;
    let after = writes_to(&metrics, &ns, "deployments/two");
    assert_eq!(
        &after[deployment.len()..],
        &[format!(
            "PATCH /apis/apps/v1/namespaces/{ns}/deployments/two?&force=true&fieldManager=oam-trust"
        )],
        "one changed object is one request"
    );
    assert_eq!(
        writes_to(&metrics, &ns, "services/two"),
        service,
        "the unchanged Service was sent again"
    );

    // The first object forbidden to the applier (a ClusterRole), then a valid component: its
    // refused write is the only request, and nothing of the Application exists.
    let cluster_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": format!("first-{ns}")}, "rules": []});
    support::apply_app(
        &admin,
        &ns,
        app(
            "forbidden-first",
            json!([{"name": "rbac", "type": "k8s-objects", "properties": {"objects": [cluster_role]}},
                   web("after-forbidden", "nginx")]),
        ),
    )
    .await;
    // The first object invalid (a ConfigMap value that is not a string), then a valid component.
    let invalid = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "invalid-first"}, "data": {"count": 3}});
    support::apply_app(
        &admin,
        &ns,
        app(
            "invalid-first",
            json!([{"name": "config", "type": "k8s-objects", "properties": {"objects": [invalid]}},
                   web("after-invalid", "nginx")]),
        ),
    )
    .await;
    for (name, reason, names) in [
        ("forbidden-first", "Forbidden", "ClusterRole"),
        ("invalid-first", "Invalid", "ConfigMap"),
    ] {
        let a = support::wait_app(&admin, &ns, name, "Applied=False", |a| {
            applied_reason(a).is_some()
        })
        .await;
        let (status, got, message) = applied_reason(&a).unwrap();
        assert_eq!(
            (status.as_str(), got.as_str()),
            ("False", reason),
            "{message}"
        );
        assert!(message.contains(names), "{message}");
    }
    for name in ["after-forbidden", "after-invalid"] {
        assert!(
            deployments.get_opt(name).await.unwrap().is_none(),
            "{name} was applied although the first object was refused"
        );
        // Their dry runs were sent (before the first object's write), no write of them.
        let written: Vec<String> = ["deployments", "services"]
            .iter()
            .flat_map(|kind| writes_to(&metrics, &ns, &format!("{kind}/{name}")))
            .filter(|w| !w.contains("dryRun=All"))
            .collect();
        assert_eq!(
            written,
            Vec::<String>::new(),
            "{name}: written although the first object was refused"
        );
    }
    assert!(
        writes_to(&metrics, &ns, "configmaps/invalid-first")
            .iter()
            .all(|w| !w.contains("dryRun")),
        "the first object is checked by its own write, not a dry run"
    );
    operator.abort();
}

/// Seconds from `from` to `to` (both as the API server stamps them: whole seconds).
fn seconds_between(
    from: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    to: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> i64 {
    to.0.as_second() - from.0.as_second()
}

#[tokio::test]
async fn a_new_generations_status_waits_while_its_workload_starts() {
    let _alone = ONE_OPERATOR.lock().await;
    let admin = support::admin().await;
    support::install_crds(&admin).await;
    let ns = support::app_namespace(&admin, "status-writes", "edit").await;
    let metrics = Arc::new(Metrics::recording_writes());
    let operator =
        support::start_own_operator(support::own_operator_args("status-writes"), metrics.clone())
            .await;
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &ns);
    let grace = oam_trust::controller::health::STARTING.as_secs() as i64;

    // A workload that starts at once: one status write, "running", not "unhealthy" first. When
    // this machine made it take most of the grace, the grace ran out first and the status was
    // written twice (unhealthy, then running): said, and counted as such.
    support::apply_app(&admin, &ns, app("quick", json!([web("quick", "nginx")]))).await;
    support::wait_app(&admin, &ns, "quick", "running", support::app_running).await;
    let d = deployments.get("quick").await.unwrap();
    let available = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "Available" && c.status == "True")
        })
        .and_then(|c| c.last_transition_time.clone())
        .expect("a running workload's Deployment is Available");
    let took = seconds_between(d.metadata.creation_timestamp.as_ref().unwrap(), &available);
    let writes = writes_to(&metrics, &ns, "applications/quick/status");
    if took < grace - 1 {
        assert_eq!(
            writes.len(),
            1,
            "ready {took} s after it was created, within the {grace} s grace: one status write; sent {writes:?}"
        );
    } else {
        println!(
            "the Deployment took {took} s to become available (grace {grace} s): two status writes expected"
        );
        assert_eq!(writes.len(), 2, "sent {writes:?}");
    }

    // A workload that cannot start (no node has 500 CPUs): no status until the grace is over.
    let greedy = json!({"name": "greedy", "type": "webservice", "properties": {"image": "nginx", "cpu": "500"}});
    support::apply_app(&admin, &ns, app("greedy", json!([greedy]))).await;
    let reported = support::wait_app(&admin, &ns, "greedy", "reported unhealthy", |a| {
        support::app_phase(a) == "unhealthy"
    })
    .await;
    let created = deployments
        .get("greedy")
        .await
        .unwrap()
        .metadata
        .creation_timestamp
        .unwrap();
    let status = reported.status.as_ref().unwrap();
    let healthy = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Healthy")
        .expect("a Healthy condition");
    let waited = seconds_between(&created, &healthy.last_transition_time);
    assert!(
        waited >= grace - 1,
        "the status was written {waited} s after the workload was created, within the {grace} s grace"
    );
    assert_eq!(
        writes_to(&metrics, &ns, "applications/greedy/status").len(),
        1,
        "one status write for the first report"
    );
    // The grace over, its pods are looked at: the scheduler's reason (in the first report when
    // the scheduler had tried by then, else at the recheck).
    support::wait_app(
        &admin,
        &ns,
        "greedy",
        "unhealthy with the scheduler's reason",
        |a| {
            a.status
                .as_ref()
                .and_then(|s| s.services.first())
                .and_then(|c| c.message.as_deref())
                .is_some_and(|m| m.starts_with("Ready:0/1 (pods cannot be scheduled: "))
        },
    )
    .await;
    operator.abort();
}
