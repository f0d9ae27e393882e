//! Workflows on the real control plane: an approval gate (deploy to staging, suspend, deploy to
//! production through topology + override) holds production until resumed, by `oam-trust resume` or
//! by a GitLab job holding an `approve` grant through the token exchange, which can do nothing else;
//! an unknown step type is refused and applies nothing; a canary step and the full rollout of the same
//! Deployment each apply their own content.
mod federation_support;
mod support;

use std::time::Duration;

use federation_support::{Declarations, world};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use oam_trust::api::oam::Application;
use oam_trust::dev_issuer::MintRequest;
use serde_json::{Value, json};

fn image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

fn step_phase(a: &Application, name: &str) -> Option<String> {
    let wf = a.status.as_ref()?.workflow.as_ref()?;
    wf.steps
        .iter()
        .chain(wf.steps.iter().flat_map(|s| s.sub_steps.iter()))
        .find(|s| s.name == name)
        .map(|s| s.phase.clone())
}

fn suspended(a: &Application) -> bool {
    support::app_phase(a) == "workflowSuspending"
        && a.status
            .as_ref()
            .and_then(|s| s.workflow.as_ref())
            .is_some_and(|w| w.suspend)
}

/// A namespace whose admin lets the applier of `from` deploy into it (what a production namespace's
/// owner does once).
async fn target_namespace(admin: &Client, prefix: &str, from: &str) -> String {
    let target = support::namespace(admin, prefix).await;
    let rb: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("from-{from}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "oam-trust-applier", "namespace": from}]
    }))
    .unwrap();
    Api::namespaced(admin.clone(), &target)
        .create(&Default::default(), &rb)
        .await
        .unwrap();
    target
}

/// Staging, an approval, then production with its own image: the gate KubeVela users write.
fn gated(name: &str, staging: &str, production: &str, extra_policies: Value) -> Value {
    let mut policies = json!([
        {"name": "staging", "type": "topology", "properties": {"namespace": staging}},
        {"name": "production", "type": "topology", "properties": {"namespace": production}},
        {"name": "production-image", "type": "override", "properties": {"components": [
            {"name": "web", "properties": {"image": "nginx:1.28"}}]}}
    ]);
    policies
        .as_array_mut()
        .unwrap()
        .extend(extra_policies.as_array().unwrap().iter().cloned());
    json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
    "metadata": {"name": name},
    "spec": {
        "components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx:1.27", "port": 80}}],
        "policies": policies,
        "workflow": {"steps": [
            {"name": "deploy-staging", "type": "deploy", "properties": {"policies": ["staging"]}},
            {"name": "approve", "type": "suspend"},
            {"name": "deploy-production", "type": "deploy", "properties": {"policies": ["production", "production-image"]}}
        ]}
    }})
}

async fn wait_suspended(admin: &Client, ns: &str, name: &str) -> Application {
    support::wait_app(admin, ns, name, "suspended at the approval", suspended).await
}

async fn deployment(admin: &Client, ns: &str, name: &str) -> Option<Deployment> {
    Api::<Deployment>::namespaced(admin.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

async fn reasons(admin: &Client, ns: &str, app: &str) -> Vec<String> {
    Api::<Event>::namespaced(admin.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(app))
        .filter_map(|e| e.reason)
        .collect()
}

/// `oam-trust <args>` with `kubeconfig`; (exit code, stdout + stderr).
async fn cli(kubeconfig: &std::path::Path, args: &[&str]) -> (i32, String) {
    let (code, out, err) = support::oam_trust(kubeconfig, args).await;
    (code, out + &err)
}

#[tokio::test]
async fn an_approval_gate_holds_production_until_resumed() {
    support::operator().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "wf-gate", "admin").await;
    let prod = target_namespace(&admin, "wf-gate-prod", &ns).await;
    support::apply_app(&admin, &ns, gated("gate", &ns, &prod, json!([]))).await;

    let a = wait_suspended(&admin, &ns, "gate").await;
    assert_eq!(
        step_phase(&a, "deploy-staging").as_deref(),
        Some("succeeded")
    );
    assert_eq!(step_phase(&a, "approve").as_deref(), Some("suspending"));
    assert_eq!(
        step_phase(&a, "deploy-production").as_deref(),
        Some("pending")
    );
    let staging = deployment(&admin, &ns, "web")
        .await
        .expect("staging deployed");
    assert_eq!(image(&staging), "nginx:1.27");
    // Nothing reaches production while the gate holds, however long it waits.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        deployment(&admin, &prod, "web").await.is_none(),
        "production was deployed before the approval"
    );
    let a = wait_suspended(&admin, &ns, "gate").await;
    assert!(
        a.status
            .as_ref()
            .unwrap()
            .workflow
            .as_ref()
            .unwrap()
            .message
            .as_deref()
            .unwrap()
            .contains("oam-trust resume"),
        "the status says how to resume"
    );
    assert!(
        reasons(&admin, &ns, "gate")
            .await
            .contains(&"WorkflowSuspended".to_string())
    );

    let kubeconfig = support::kubeconfig_path().await;
    let (code, out) = cli(&kubeconfig, &["resume", "gate", "-n", &ns]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("resumed workflow step approve"), "{out}");

    let a = support::wait_app(
        &admin,
        &ns,
        "gate",
        "running after the approval",
        support::app_running,
    )
    .await;
    let wf = a.status.as_ref().unwrap().workflow.clone().unwrap();
    assert!(wf.finished && !wf.suspend, "{wf:?}");
    assert_eq!(wf.status.as_deref(), Some("succeeded"));
    assert_eq!(step_phase(&a, "approve").as_deref(), Some("succeeded"));
    let production = deployment(&admin, &prod, "web")
        .await
        .expect("production deployed after the approval");
    assert_eq!(
        image(&production),
        "nginx:1.28",
        "the production override applies"
    );
    assert_eq!(
        image(&deployment(&admin, &ns, "web").await.unwrap()),
        "nginx:1.27"
    );
    let said = reasons(&admin, &ns, "gate").await;
    for reason in ["WorkflowResumed", "WorkflowSucceeded"] {
        assert!(said.contains(&reason.to_string()), "{reason} in {said:?}");
    }

    // Resuming what is not suspended is an error that says why, and changes nothing.
    let (code, out) = cli(&kubeconfig, &["resume", "gate", "-n", &ns]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is not suspended"), "{out}");

    // A spec change is a new run: staging gets the new image, production waits for a new approval.
    // `set-image --wait` returns once the change is deployed up to the gate.
    let (code, out) = cli(
        &kubeconfig,
        &[
            "set-image",
            "web=nginx:1.29",
            "--app",
            "gate",
            "-n",
            &ns,
            "--wait",
            "--timeout",
            "2m",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("waits to be resumed"), "{out}");
    let a = support::wait_app(&admin, &ns, "gate", "suspended again", |a| {
        suspended(a)
            && a.status.as_ref().and_then(|s| s.observed_generation) == a.metadata.generation
    })
    .await;
    assert_eq!(
        step_phase(&a, "deploy-production").as_deref(),
        Some("pending")
    );
    assert_eq!(
        image(&deployment(&admin, &ns, "web").await.unwrap()),
        "nginx:1.29"
    );
    assert_eq!(
        image(&deployment(&admin, &prod, "web").await.unwrap()),
        "nginx:1.28",
        "production keeps the approved version until the next approval (not pruned, not updated)"
    );
}

#[tokio::test]
async fn an_unknown_step_type_is_refused_and_nothing_is_applied() {
    support::operator().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "wf-unknown", "admin").await;
    support::apply_app(
        &admin,
        &ns,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "odd"},
            "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx"}}],
                "workflow": {"steps": [
                    {"name": "ship", "type": "deploy"},
                    {"name": "tell-the-team", "type": "notification", "properties": {"slack": {"url": "x"}}}
                ]}}}),
    )
    .await;
    let a = support::wait_app(&admin, &ns, "odd", "Parsed=False", |a| {
        a.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Parsed" && c.status == "False")
        })
    })
    .await;
    let parsed = a
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Parsed")
        .unwrap();
    assert_eq!(parsed.reason, "RenderError");
    assert!(
        parsed.message.contains("\"tell-the-team\""),
        "{}",
        parsed.message
    );
    assert!(
        parsed.message.contains("\"notification\""),
        "{}",
        parsed.message
    );
    assert!(
        parsed
            .message
            .contains("supported: deploy, suspend, apply-component, step-group"),
        "{}",
        parsed.message
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        deployment(&admin, &ns, "web").await.is_none(),
        "nothing is applied"
    );
    assert!(a.status.as_ref().unwrap().workflow.is_none());
}

#[tokio::test]
async fn a_canary_step_and_the_full_rollout_each_apply_their_own_content() {
    support::operator().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "wf-canary", "admin").await;
    support::apply_app(
        &admin,
        &ns,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "canary"},
            "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx:2"},
                                     "traits": [{"type": "scaler", "properties": {"replicas": 3}}]}],
                "policies": [{"name": "one-replica", "type": "override", "properties": {"components": [
                    {"name": "web", "traits": [{"type": "scaler", "properties": {"replicas": 1}}]}]}}],
                "workflow": {"steps": [
                    {"name": "canary", "type": "deploy", "properties": {"policies": ["one-replica"]}},
                    {"name": "check", "type": "suspend"},
                    {"name": "rollout", "type": "deploy"}
                ]}}}),
    )
    .await;
    wait_suspended(&admin, &ns, "canary").await;
    let replicas = |d: Deployment| d.spec.unwrap().replicas;
    assert_eq!(
        replicas(deployment(&admin, &ns, "web").await.unwrap()),
        Some(1),
        "the canary step applies the canary, not the rollout's copy of the same Deployment"
    );
    let apps = Api::<Application>::namespaced(admin.clone(), &ns);
    oam_trust::resume::resume_app(&apps, "canary")
        .await
        .unwrap();
    support::wait_app(&admin, &ns, "canary", "running", support::app_running).await;
    assert_eq!(
        replicas(deployment(&admin, &ns, "web").await.unwrap()),
        Some(3)
    );
}

fn approvals(trust: &str, ns: &str) -> Value {
    let mut app = gated(
        "release",
        ns,
        &format!("{ns}-prod"),
        json!([{"name": "approvers", "type": "gitlab-access", "properties": {
            "trust": trust,
            "subjects": [{"projectId": "1450", "ref": "main", "environment": "production-approval", "environmentProtected": true}],
            "access": "approve", "ttl": "5m"}}]),
    );
    app["metadata"]["namespace"] = json!(ns);
    app
}

#[tokio::test]
async fn a_gitlab_job_with_an_approve_grant_resumes_and_can_do_nothing_else() {
    let w = world(
        "wf-approve",
        Declarations {
            application: Some((approvals, 1)),
            ..Declarations::default()
        },
    )
    .await;
    // The production namespace the Application deploys to after the approval.
    let prod = format!("{}-prod", w.ns);
    let ns_obj: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": prod}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(w.admin.clone())
        .create(&Default::default(), &ns_obj)
        .await
        .unwrap();
    let rb: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "from-app"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "oam-trust-applier", "namespace": w.ns}]
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(w.admin.clone(), &prod)
        .create(&Default::default(), &rb)
        .await
        .unwrap();
    wait_suspended(&w.admin, &w.ns, "release").await;

    // The approval job of the protected environment exchanges its ID token.
    let id_token = w
        .issuer
        .mint(&MintRequest::new().claim("environment", "production-approval"))
        .unwrap();
    let answer = w
        .exchange(&id_token, None)
        .await
        .expect("the approve job gets a token");
    assert_eq!(answer.grant.grant, "policy/approvers");
    let job = support::client_with_token(&answer.access_token).await;
    let apps = Api::<Application>::namespaced(job.clone(), &w.ns);

    // It cannot change the spec, labels, or any other part of the status.
    let spec = apps
        .patch(
            "release",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "evil"}}]}})),
        )
        .await
        .expect_err("an approver cannot edit the spec");
    assert!(
        matches!(&spec, kube::Error::Api(e) if e.code == 403),
        "{spec:?}"
    );
    let live = apps
        .get("release")
        .await
        .expect("an approver reads its Application");
    let rv = live.metadata.resource_version.clone().unwrap();
    for (what, patch) in [
        (
            "mark the production step succeeded",
            json!({"status": {"workflow": {"suspend": false, "steps": [
                {"id": "deploy-staging", "name": "deploy-staging", "type": "deploy", "phase": "succeeded"},
                {"id": "approve", "name": "approve", "type": "suspend", "phase": "succeeded"},
                {"id": "deploy-production", "name": "deploy-production", "type": "deploy", "phase": "succeeded"}]}}}),
        ),
        (
            "add an object to prune",
            json!({"status": {"workflow": {"suspend": false}, "appliedResources": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "kube-root-ca.crt", "namespace": w.ns}]}}),
        ),
        (
            "rewrite the phase",
            json!({"status": {"status": "running"}}),
        ),
    ] {
        let mut patch = patch;
        patch["metadata"] = json!({"resourceVersion": rv});
        let refused = apps
            .patch_status("release", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err(what);
        assert!(
            matches!(&refused, kube::Error::Api(e) if e.code == 403 || e.code == 422),
            "{what}: {refused:?}"
        );
    }
    // Nor touch another Application, or the rendered objects.
    assert!(
        Api::<Deployment>::namespaced(job.clone(), &w.ns)
            .get("web")
            .await
            .is_err(),
        "an approver reads no workload"
    );
    assert!(deployment(&w.admin, &prod, "web").await.is_none());

    // The one thing it may do: resume.
    let steps = oam_trust::resume::resume_app(&apps, "release")
        .await
        .expect("the approver resumes");
    assert_eq!(steps, vec!["approve".to_string()]);
    let a = support::wait_app(
        &w.admin,
        &w.ns,
        "release",
        "running after the approval",
        support::app_running,
    )
    .await;
    assert_eq!(
        step_phase(&a, "deploy-production").as_deref(),
        Some("succeeded")
    );
    assert_eq!(
        image(&deployment(&w.admin, &prod, "web").await.unwrap()),
        "nginx:1.28"
    );
    // And only once: with nothing suspended, its resume is refused by the guard.
    let again = apps
        .patch_status(
            "release",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"workflow": {"suspend": false}}})),
        )
        .await
        .expect_err("nothing to resume");
    assert!(
        matches!(&again, kube::Error::Api(e) if e.message.contains("not suspended")),
        "{again:?}"
    );
}
