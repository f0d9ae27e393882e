//! The Application controller on the real control plane (kube-apiserver, controller-manager with its
//! garbage collector, scheduler, kwok nodes): apply, status, scaling, pruning, drift, deletion,
//! invalid input, applier RBAC as the bound on what an Application creates, definition changes, scale.
mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Service};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use oam_trust::api::oam::Application;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn app(name: &str, components: Value) -> Value {
    json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": name}, "spec": {"components": components}})
}

fn condition<'a>(
    a: &'a Application,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    a.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

async fn deployment(client: &Client, ns: &str, name: &str) -> Option<Deployment> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

async fn gone<K>(api: Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    support::eventually(WAIT, || {
        let api = api.clone();
        async move { api.get_opt(name).await.unwrap().is_none() }
    })
    .await
}

fn web(name: &str, replicas: i64) -> Value {
    json!({"name": name, "type": "webservice",
        "properties": {"image": "oamdev/hello-world:v1", "ports": [{"port": 8000, "expose": true}]},
        "traits": [{"type": "scaler", "properties": {"replicas": replicas}}]})
}

#[tokio::test]
async fn quick_start_application_runs_with_labels_owner_and_status() {
    support::operator().await;
    let client = support::admin().await;
    let ns = support::app_namespace(&client, "app-run", "admin").await;
    support::apply_app(
        &client,
        &ns,
        app("first-vela-app", json!([web("express-server", 2)])),
    )
    .await;

    let a = support::wait_app(
        &client,
        &ns,
        "first-vela-app",
        "phase running",
        support::app_running,
    )
    .await;
    let status = a.status.clone().unwrap();
    assert_eq!(status.services.len(), 1);
    assert!(status.services[0].healthy);
    assert_eq!(status.services[0].message.as_deref(), Some("Ready:2/2"));
    for t in ["Parsed", "Applied", "Healthy"] {
        assert_eq!(
            condition(&a, t).map(|c| c.status.as_str()),
            Some("True"),
            "condition {t}"
        );
    }
    let kinds: Vec<&str> = status
        .applied_resources
        .iter()
        .map(|r| r.kind.as_str())
        .collect();
    assert_eq!(kinds, ["Deployment", "Service"]);

    let d = deployment(&client, &ns, "express-server")
        .await
        .expect("the Deployment exists");
    let labels = d.labels();
    assert_eq!(labels["app.oam.dev/name"], "first-vela-app");
    assert_eq!(labels["app.oam.dev/namespace"], ns);
    assert_eq!(labels["app.oam.dev/component"], "express-server");
    assert_eq!(labels["workload.oam.dev/type"], "webservice");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "oam-trust");
    let owner = &d.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Application", a.uid().unwrap().as_str(), Some(true))
    );
    let managers: Vec<String> = d
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&"oam-trust".to_string()),
        "field managers: {managers:?}"
    );
    let svc = Api::<Service>::namespaced(client.clone(), &ns)
        .get("express-server")
        .await
        .unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 8000);
}

#[tokio::test]
async fn trait_change_scales_and_removed_parts_are_pruned() {
    support::operator().await;
    let client = support::admin().await;
    let ns = support::app_namespace(&client, "app-prune", "admin").await;
    let worker = json!({"name": "jobs", "type": "worker", "properties": {"image": "busybox"}});
    support::apply_app(&client, &ns, app("shop", json!([web("front", 1), worker]))).await;
    support::wait_app(&client, &ns, "shop", "running", support::app_running).await;
    assert!(deployment(&client, &ns, "jobs").await.is_some());

    support::apply_app(&client, &ns, app("shop", json!([web("front", 3), worker]))).await;
    let a = support::wait_app(&client, &ns, "shop", "scaled to 3", |a| {
        support::app_running(a)
            && a.status.as_ref().unwrap().services[0].message.as_deref() == Some("Ready:3/3")
    })
    .await;
    assert_eq!(a.status.unwrap().services.len(), 2);
    assert_eq!(
        deployment(&client, &ns, "front")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(3)
    );

    // Drop the worker component and the expose port: both objects go.
    let front_unexposed = json!({"name": "front", "type": "webservice", "properties": {"image": "oamdev/hello-world:v1"}});
    support::apply_app(&client, &ns, app("shop", json!([front_unexposed]))).await;
    assert!(
        gone(Api::<Deployment>::namespaced(client.clone(), &ns), "jobs").await,
        "the removed component's Deployment was pruned"
    );
    assert!(
        gone(Api::<Service>::namespaced(client.clone(), &ns), "front").await,
        "the Service of the removed port was pruned"
    );
    let a = support::wait_app(
        &client,
        &ns,
        "shop",
        "running after prune",
        support::app_running,
    )
    .await;
    assert_eq!(a.status.unwrap().applied_resources.len(), 1);
}

#[tokio::test]
async fn hand_edits_and_deletions_are_reverted() {
    support::operator().await;
    let client = support::admin().await;
    let ns = support::app_namespace(&client, "app-drift", "admin").await;
    support::apply_app(&client, &ns, app("drift", json!([web("api", 2)]))).await;
    support::wait_app(&client, &ns, "drift", "running", support::app_running).await;

    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    deployments
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    let reverted = support::eventually(Duration::from_secs(20), || {
        let d = deployments.clone();
        async move { d.get("api").await.unwrap().spec.unwrap().replicas == Some(2) }
    })
    .await;
    assert!(reverted, "a hand-edited replica count was not reverted");

    let services = Api::<Service>::namespaced(client.clone(), &ns);
    services
        .delete("api", &DeleteParams::default())
        .await
        .unwrap();
    let recreated = support::eventually(Duration::from_secs(20), || {
        let s = services.clone();
        async move { s.get_opt("api").await.unwrap().is_some() }
    })
    .await;
    assert!(recreated, "a deleted Service was not recreated");
}

#[tokio::test]
async fn deleting_the_application_cascades_through_the_garbage_collector() {
    support::operator().await;
    let client = support::admin().await;
    let ns = support::app_namespace(&client, "app-delete", "admin").await;
    support::apply_app(&client, &ns, app("temp", json!([web("temp-web", 1)]))).await;
    support::wait_app(&client, &ns, "temp", "running", support::app_running).await;
    Api::<Application>::namespaced(client.clone(), &ns)
        .delete("temp", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        gone(
            Api::<Deployment>::namespaced(client.clone(), &ns),
            "temp-web"
        )
        .await,
        "Deployment survived its Application"
    );
    assert!(
        gone(Api::<Service>::namespaced(client.clone(), &ns), "temp-web").await,
        "Service survived its Application"
    );
}

#[tokio::test]
async fn properties_a_definition_does_not_declare_are_ignored_and_reported() {
    support::operator().await;
    let client = support::admin().await;
    let ns = support::app_namespace(&client, "app-typo", "admin").await;
    // `imagee` is a typo KubeVela ignores: the Application runs, and the user is told.
    support::apply_app(
        &client,
        &ns,
        app(
            "typo",
            json!([{"name": "web", "type": "webservice", "properties": {"image": "nginx", "imagee": "nginx:2"}}]),
        ),
    )
    .await;
    let a = support::wait_app(&client, &ns, "typo", "running", support::app_running).await;
    let parsed = condition(&a, "Parsed").unwrap();
    assert_eq!(
        (parsed.status.as_str(), parsed.reason.as_str()),
        ("True", "UndeclaredParameter"),
        "{}",
        parsed.message
    );
    assert!(parsed.message.contains("imagee"), "{}", parsed.message);
    let warned = support::eventually(WAIT, || {
        let events = Api::<Event>::namespaced(client.clone(), &ns);
        async move {
            events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("UndeclaredParameter")
                        && e.message.as_deref().is_some_and(|m| m.contains("imagee"))
                })
        }
    })
    .await;
    assert!(warned, "a Warning Event names the ignored property");
}

#[tokio::test]
async fn invalid_applications_report_the_reason_and_apply_nothing() {
    support::operator().await;
    let client = support::admin().await;
    let ns = support::app_namespace(&client, "app-invalid", "admin").await;
    support::apply_app(
        &client,
        &ns,
        app(
            "unknown-type",
            json!([{"name": "x", "type": "no-such-type", "properties": {}}]),
        ),
    )
    .await;
    let bad_trait = json!({"name": "api", "type": "webservice", "properties": {"image": "nginx"},
        "traits": [{"type": "scaler", "properties": {"replicas": "three"}}]});
    support::apply_app(
        &client,
        &ns,
        app("bad-field", json!([web("fine", 1), bad_trait])),
    )
    .await;

    let a = support::wait_app(&client, &ns, "unknown-type", "Parsed=False", |a| {
        condition(a, "Parsed").is_some()
    })
    .await;
    let c = condition(&a, "Parsed").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "RenderError")
    );
    assert!(c.message.contains("no-such-type"), "{}", c.message);
    let a = support::wait_app(&client, &ns, "bad-field", "Parsed=False", |a| {
        condition(a, "Parsed").is_some()
    })
    .await;
    let message = &condition(&a, "Parsed").unwrap().message;
    assert_eq!(
        message,
        r#"component "api": trait "scaler": field "replicas": expected integer, got string "three""#
    );

    // Nothing of either Application was applied, not even the valid component.
    let listed = Api::<Deployment>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        listed.items.is_empty(),
        "objects were applied for an invalid Application"
    );
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("RenderFailed")),
        "no RenderFailed Event"
    );
}

#[tokio::test]
async fn the_applier_identity_bounds_what_an_application_can_create() {
    support::operator().await;
    let client = support::admin().await;
    // `edit` can create Deployments and Services but no RBAC and nothing cluster-scoped.
    let ns = support::app_namespace(&client, "app-escalate", "edit").await;
    let other = support::namespace(&client, "app-escalate-other").await;
    let cluster_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": format!("escalate-{ns}")}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
    let sneaky =
        json!({"name": "sneaky", "type": "k8s-objects", "properties": {"objects": [cluster_role]}});
    support::apply_app(
        &client,
        &ns,
        app("escalate", json!([web("innocent", 1), sneaky])),
    )
    .await;
    let a = support::wait_app(&client, &ns, "escalate", "Applied=False", |a| {
        condition(a, "Applied").is_some()
    })
    .await;
    let c = condition(&a, "Applied").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "Forbidden"),
        "{}",
        c.message
    );
    assert!(
        c.message.contains("ClusterRole") && c.message.contains(&format!("{ns}/oam-trust-applier")),
        "{}",
        c.message
    );
    assert!(
        Api::<ClusterRole>::all(client.clone())
            .get_opt(&format!("escalate-{ns}"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        deployment(&client, &ns, "innocent").await.is_none(),
        "part of a refused Application was applied"
    );

    // A topology policy aimed at a namespace the applier has no rights in is refused the same way.
    let mut cross = app("cross", json!([web("elsewhere", 1)]));
    cross["spec"]["policies"] =
        json!([{"name": "there", "type": "topology", "properties": {"namespace": other}}]);
    support::apply_app(&client, &ns, cross).await;
    let a = support::wait_app(&client, &ns, "cross", "Applied=False", |a| {
        condition(a, "Applied").is_some()
    })
    .await;
    let c = condition(&a, "Applied").unwrap();
    assert_eq!(c.reason, "Forbidden", "{}", c.message);
    assert!(c.message.contains(&other), "{}", c.message);
    assert!(deployment(&client, &other, "elsewhere").await.is_none());
}

#[tokio::test]
async fn objects_in_other_namespaces_are_cleaned_up_by_the_finalizer() {
    support::operator().await;
    let client = support::admin().await;
    let ns = support::app_namespace(&client, "app-topo", "admin").await;
    let target = support::namespace(&client, "app-topo-target").await;
    // The namespace admin of `target` lets this namespace's applier deploy there.
    let rb: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "from-app-topo"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "oam-trust-applier", "namespace": ns}]
    }))
    .unwrap();
    Api::namespaced(client.clone(), &target)
        .create(&Default::default(), &rb)
        .await
        .unwrap();
    let mut placed = app("placed", json!([web("remote", 1)]));
    placed["spec"]["policies"] =
        json!([{"name": "target", "type": "topology", "properties": {"namespace": target}}]);
    support::apply_app(&client, &ns, placed).await;
    let a = support::wait_app(&client, &ns, "placed", "running", support::app_running).await;
    assert!(
        a.finalizers()
            .contains(&"oam-trust.dev/cleanup".to_string())
    );
    let remote = deployment(&client, &target, "remote")
        .await
        .expect("deployed into the topology namespace");
    assert!(
        remote.owner_references().is_empty(),
        "no ownerReference across namespaces"
    );

    Api::<Application>::namespaced(client.clone(), &ns)
        .delete("placed", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        gone(
            Api::<Deployment>::namespaced(client.clone(), &target),
            "remote"
        )
        .await
    );
    assert!(
        gone(
            Api::<Application>::namespaced(client.clone(), &ns),
            "placed"
        )
        .await,
        "the finalizer was not removed"
    );
}

#[tokio::test]
async fn unschedulable_pods_leave_the_application_unhealthy_with_the_reason() {
    support::operator().await;
    let client = support::admin().await;
    let ns = support::app_namespace(&client, "app-unhealthy", "admin").await;
    let huge = json!({"name": "greedy", "type": "webservice", "properties": {"image": "nginx", "cpu": "500"}});
    support::apply_app(&client, &ns, app("greedy", json!([huge]))).await;
    let a = support::wait_app(&client, &ns, "greedy", "unhealthy with a reason", |a| {
        support::app_phase(a) == "unhealthy"
            && a.status
                .as_ref()
                .unwrap()
                .services
                .first()
                .and_then(|s| s.message.as_deref())
                .is_some_and(|m| m.contains("cannot be scheduled"))
    })
    .await;
    let s = &a.status.as_ref().unwrap().services[0];
    assert!(!s.healthy);
    assert!(
        s.message
            .as_deref()
            .unwrap()
            .starts_with("Ready:0/1 (pods cannot be scheduled: 0/2 nodes are available"),
        "{:?}",
        s.message
    );
    assert_eq!(condition(&a, "Healthy").unwrap().status, "False");
}

#[tokio::test]
async fn changing_a_component_definition_re_renders_its_applications() {
    support::operator().await;
    let client = support::admin().await;
    let ns = support::app_namespace(&client, "app-defs", "admin").await;
    let def = |greeting: &str| {
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "ComponentDefinition", "metadata": {"name": "greeting", "namespace": ns},
            "spec": {"workload": {"definition": {"apiVersion": "v1", "kind": "ConfigMap"}},
                "schematic": {"kube": {
                    "template": {"apiVersion": "v1", "kind": "ConfigMap", "data": {"greeting": greeting, "name": "x"}},
                    "parameters": [{"name": "who", "type": "string", "required": true, "fieldPaths": ["data.name"]}]}}}})
    };
    let defs: Api<oam_trust::api::oam::ComponentDefinition> = Api::namespaced(client.clone(), &ns);
    let pp = PatchParams::apply("test-user").force();
    defs.patch("greeting", &pp, &Patch::Apply(def("hello")))
        .await
        .unwrap();
    support::apply_app(
        &client,
        &ns,
        app(
            "hi",
            json!([{"name": "card", "type": "greeting", "properties": {"who": "world"}}]),
        ),
    )
    .await;
    support::wait_app(&client, &ns, "hi", "running", support::app_running).await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let data = cms.get("card").await.unwrap().data.unwrap();
    assert_eq!(
        (data["greeting"].as_str(), data["name"].as_str()),
        ("hello", "world")
    );

    defs.patch("greeting", &pp, &Patch::Apply(def("bonjour")))
        .await
        .unwrap();
    let updated = support::eventually(WAIT, || {
        let cms = cms.clone();
        async move { cms.get("card").await.unwrap().data.unwrap()["greeting"] == "bonjour" }
    })
    .await;
    assert!(
        updated,
        "the ConfigMap was not re-rendered after its ComponentDefinition changed"
    );
}

#[tokio::test]
async fn two_hundred_applications_in_one_namespace_all_converge() {
    support::operator().await;
    let client = support::admin().await;
    let ns = support::app_namespace(&client, "app-many", "admin").await;
    let n = 200;
    let creates = (0..n).map(|i| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            support::apply_app(
                &client,
                &ns,
                app(
                    &format!("app-{i:03}"),
                    json!([web(&format!("web-{i:03}"), 1)]),
                ),
            )
            .await
        }
    });
    futures::future::join_all(creates).await;
    let api = Api::<Application>::namespaced(client.clone(), &ns);
    let converged = support::eventually(Duration::from_secs(240), || {
        let api = api.clone();
        async move {
            api.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .filter(|a| support::app_running(a))
                .count()
                == n
        }
    })
    .await;
    let running = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|a| support::app_running(a))
        .count();
    assert!(converged, "only {running}/{n} Applications reached running");
}

#[tokio::test]
async fn an_application_whose_cleanup_is_refused_waits_in_deleting_until_allowed() {
    support::operator().await;
    let client = support::admin().await;
    let ns = support::app_namespace(&client, "app-deleting", "admin").await;
    let target = support::namespace(&client, "app-deleting-target").await;
    // In the target namespace the applier may create and update, but not delete.
    let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(json!({
        "metadata": {"name": "no-delete"},
        "rules": [{"apiGroups": ["apps", ""], "resources": ["deployments", "services"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch"]}]
    }))
    .unwrap();
    let bind = |role_kind: &str,
                role_name: &str,
                name: &str|
     -> k8s_openapi::api::rbac::v1::RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": "oam-trust-applier", "namespace": ns}]
        }))
        .unwrap()
    };
    Api::namespaced(client.clone(), &target)
        .create(&Default::default(), &role)
        .await
        .unwrap();
    let rbs: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(client.clone(), &target);
    rbs.create(&Default::default(), &bind("Role", "no-delete", "no-delete"))
        .await
        .unwrap();
    let mut placed = app("sticky", json!([web("far", 1)]));
    placed["spec"]["policies"] =
        json!([{"name": "t", "type": "topology", "properties": {"namespace": target}}]);
    support::apply_app(&client, &ns, placed).await;
    support::wait_app(&client, &ns, "sticky", "running", support::app_running).await;

    Api::<Application>::namespaced(client.clone(), &ns)
        .delete("sticky", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_app(&client, &ns, "sticky", "phase deleting", |a| {
        support::app_phase(a) == "deleting"
    })
    .await;
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    let refused = support::eventually(WAIT, || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("CleanupFailed"))
        }
    })
    .await;
    assert!(
        refused,
        "no CleanupFailed Event while the applier may not delete"
    );
    assert!(
        deployment(&client, &target, "far").await.is_some(),
        "nothing was deleted behind the applier's back"
    );

    rbs.create(
        &Default::default(),
        &bind("ClusterRole", "admin", "now-allowed"),
    )
    .await
    .unwrap();
    assert!(
        gone(
            Api::<Deployment>::namespaced(client.clone(), &target),
            "far"
        )
        .await
    );
    assert!(
        gone(
            Api::<Application>::namespaced(client.clone(), &ns),
            "sticky"
        )
        .await,
        "the finalizer was not removed once allowed"
    );
}
