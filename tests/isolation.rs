//! Tenant isolation, tried as an attacker would, on the real control plane: what a namespace's
//! objects (or a GitLab project) can make the operator do to another namespace.
mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use oam_trust::api::oam::{Application, ComponentDefinition};
use serde_json::{Value, json};

/// A `kube` ComponentDefinition named `name` that renders a Deployment running `image` as
/// `oam-trust-applier` (what the attacker of `evil` wrote) — or a ConfigMap, for the system case.
fn definition(name: &str, namespace: &str, template: Value) -> Value {
    json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "ComponentDefinition",
           "metadata": {"name": name, "namespace": namespace},
           "spec": {"workload": {"definition": {"apiVersion": template["apiVersion"], "kind": template["kind"]}},
                    "schematic": {"kube": {"template": template, "parameters": []}}}})
}

async fn ensure_namespace(client: &kube::Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

fn component_definition(app: &Application, component: &str) -> Option<String> {
    app.status
        .as_ref()?
        .services
        .iter()
        .find(|s| s.name == component)?
        .definition
        .clone()
}

#[tokio::test]
async fn a_definition_in_another_tenants_namespace_never_renders_an_application_here() {
    support::operator().await;
    let admin = support::admin().await;
    let evil = support::app_namespace(&admin, "evil", "admin").await;
    let payments = support::app_namespace(&admin, "payments", "admin").await;
    let pp = PatchParams::apply("attacker").force();
    // The attack: `evil` defines `worker`, which would run its image as the victim's applier.
    let attack = definition(
        "worker",
        &evil,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "spec": {"selector": {"matchLabels": {"app": "miner"}},
                        "template": {"metadata": {"labels": {"app": "miner"}},
                                     "spec": {"serviceAccountName": "oam-trust-applier",
                                              "containers": [{"name": "miner", "image": "attacker/miner:latest"}]}}}}),
    );
    Api::<ComponentDefinition>::namespaced(admin.clone(), &evil)
        .patch("worker", &pp, &Patch::Apply(&attack))
        .await
        .unwrap();
    support::apply_app(
        &admin,
        &payments,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "payments"},
               "spec": {"components": [{"name": "worker", "type": "worker", "properties": {"image": "payments/worker:1.0"}}]}}),
    )
    .await;
    let app = support::wait_app(
        &admin,
        &payments,
        "payments",
        "running",
        support::app_running,
    )
    .await;
    assert_eq!(
        component_definition(&app, "worker").as_deref(),
        Some("built-in worker"),
        "the status says what rendered the component"
    );
    let deployment = Api::<Deployment>::namespaced(admin.clone(), &payments)
        .get("worker")
        .await
        .unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let images: Vec<String> = pod
        .containers
        .iter()
        .filter_map(|c| c.image.clone())
        .collect();
    assert_eq!(
        images,
        ["payments/worker:1.0"],
        "the built-in worker rendered"
    );
    assert_eq!(
        pod.service_account_name, None,
        "no applier identity smuggled in"
    );

    // In its own namespace the tenant's definition does apply: it is theirs to use.
    support::apply_app(
        &admin,
        &evil,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "own"},
               "spec": {"components": [{"name": "miner", "type": "worker"}]}}),
    )
    .await;
    let own = support::wait_app(
        &admin,
        &evil,
        "own",
        "rendered with its namespace's definition",
        |a| component_definition(a, "miner").is_some(),
    )
    .await;
    assert_eq!(
        component_definition(&own, "miner"),
        Some(format!("ComponentDefinition {evil}/worker"))
    );
}

#[tokio::test]
async fn a_definition_in_the_system_namespace_applies_to_every_namespace() {
    support::operator().await;
    let admin = support::admin().await;
    let system = oam_trust::names::DEFAULT_DEFINITIONS_NAMESPACE;
    ensure_namespace(&admin, system).await;
    let ns = support::app_namespace(&admin, "sysdef", "admin").await;
    let name = format!("card-{ns}");
    let def = definition(
        &name,
        system,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"from": "system"}}),
    );
    Api::<ComponentDefinition>::namespaced(admin.clone(), system)
        .patch(
            &name,
            &PatchParams::apply("platform").force(),
            &Patch::Apply(&def),
        )
        .await
        .unwrap();
    support::apply_app(
        &admin,
        &ns,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "cards"},
               "spec": {"components": [{"name": "card", "type": name}]}}),
    )
    .await;
    let app = support::wait_app(&admin, &ns, "cards", "running", support::app_running).await;
    assert_eq!(
        component_definition(&app, "card"),
        Some(format!("ComponentDefinition {system}/{name}"))
    );
    let cm = Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .get("card")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["from"], "system");
    Api::<ComponentDefinition>::namespaced(admin.clone(), system)
        .delete(&name, &Default::default())
        .await
        .unwrap();
}

fn condition<'a>(
    app: &'a Application,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    app.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

#[tokio::test]
async fn an_object_another_application_owns_is_never_taken_over() {
    support::operator().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "takeover", "admin").await;
    let web = |app: &str, image: &str| {
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": app},
               "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": image}}]}})
    };
    support::apply_app(&admin, &ns, web("first", "first/web:1")).await;
    support::wait_app(&admin, &ns, "first", "running", support::app_running).await;
    // A second Application of the namespace renders an object of the same name.
    support::apply_app(&admin, &ns, web("second", "second/web:1")).await;
    let second = support::wait_app(&admin, &ns, "second", "refused", |a| {
        condition(a, "Applied").is_some_and(|c| c.status == "False")
    })
    .await;
    let applied = condition(&second, "Applied").unwrap();
    assert_eq!(applied.reason, "NameConflict", "{}", applied.message);
    assert!(
        applied.message.contains("belongs to Application first"),
        "{}",
        applied.message
    );
    let deployment = Api::<Deployment>::namespaced(admin.clone(), &ns)
        .get("web")
        .await
        .unwrap();
    let image = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(
        image.as_deref(),
        Some("first/web:1"),
        "the first owner's object is untouched"
    );
}

#[tokio::test]
async fn a_grant_name_taken_by_another_application_is_refused_not_adopted() {
    support::operator().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "grantname", "admin").await;
    let trust = support::selecting_trust(&admin, &ns, None).await;
    // The attacker's Application, and a ServiceAccount it owns under the name the victim's grant
    // will have (names are deterministic, so anyone can compute them).
    support::apply_app(
        &admin,
        &ns,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "attacker"},
               "spec": {"components": []}}),
    )
    .await;
    let attacker = Api::<Application>::namespaced(admin.clone(), &ns)
        .get("attacker")
        .await
        .unwrap();
    let name = oam_trust::access::objects::object_name("victim", &ns, "read", "policy/read");
    let squatted: k8s_openapi::api::core::v1::ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": [attacker.controller_reference().unwrap()]}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &squatted)
        .await
        .unwrap();
    support::apply_app(
        &admin,
        &ns,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "victim"},
               "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx"}}],
                        "policies": [{"name": "read", "type": "gitlab-access", "properties": {"trust": trust,
                            "subjects": [{"projectId": "1450", "namespaceId": "72"}], "access": "read"}}]}}),
    )
    .await;
    let victim = support::wait_app(&admin, &ns, "victim", "access refused", |a| {
        condition(a, "AccessDenied").is_some_and(|c| c.status == "True")
    })
    .await;
    let denied = condition(&victim, "AccessDenied").unwrap();
    assert_eq!(denied.reason, "NameConflict", "{}", denied.message);
    let sa = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), &ns)
        .get(&name)
        .await
        .unwrap();
    let owners: Vec<String> = sa
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(
        owners,
        ["attacker"],
        "the squatted ServiceAccount was not adopted"
    );
    let bindings = Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), &ns)
        .get_opt(&name)
        .await
        .unwrap();
    assert!(
        bindings.is_none(),
        "no RoleBinding names the squatted ServiceAccount"
    );
}
