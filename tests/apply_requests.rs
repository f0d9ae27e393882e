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
