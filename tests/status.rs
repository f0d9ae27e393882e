//! `oam-trust status` on the real control plane, through the binary as a person runs it: a healthy
//! Application with grants, an issuance and an Event; an unhealthy one with a refused grant; what a
//! grant's own identity (a CI job after `oam-trust login`) sees; a missing Application; and a
//! workflow suspended at its approval step.
mod support;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use oam_trust::api::issuance::TokenIssuance;
use oam_trust::api::oam::Application;
use oam_trust::api::revision::ApplicationRevision;
use oam_trust::api::trust::GitLabTrust;
use serde_json::{Value, json};

/// Runs `oam-trust status <args>` with `kubeconfig`.
async fn status(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    support::oam_trust(kubeconfig, &[&["status"], args].concat()).await
}

/// `status -o json`, which must succeed.
async fn status_json(kubeconfig: &Path, app: &str, ns: &str) -> Value {
    let (code, out, err) = status(kubeconfig, &[app, "-n", ns, "-o", "json"]).await;
    assert_eq!(code, 0, "oam-trust status failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The text form, which must succeed; printed, so a run with --nocapture shows the real output.
async fn status_text(kubeconfig: &Path, app: &str, ns: &str) -> String {
    let (code, out, err) = status(kubeconfig, &[app, "-n", ns]).await;
    assert_eq!(code, 0, "oam-trust status failed: {err}");
    println!("$ oam-trust status {app} -n {ns}\n{out}");
    out
}

/// Asserts that some line of `text` matches the regular expression `pattern` (whole line).
fn assert_line(text: &str, pattern: &str) {
    let re = regex::Regex::new(&format!("^{pattern}$")).unwrap();
    assert!(
        text.lines().any(|l| re.is_match(l)),
        "no line matches {pattern:?} in:\n{text}"
    );
}

/// The grant ServiceAccounts the controller wrote for `app`, by grant id.
async fn grant_accounts(client: &Client, ns: &str, app: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("oam-trust.dev/grant,app.oam.dev/name={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|sa| {
            let id = sa.annotations()["oam-trust.dev/grant-id"].clone();
            (id, sa.name_any())
        })
        .collect();
    out.sort();
    out
}

/// A kubeconfig like the admin's that authenticates with `token` alone.
fn token_kubeconfig(dir: &Path, admin: &Path, token: &str) -> std::path::PathBuf {
    let mut kc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    kc["users"][0]["user"] = json!({"token": token});
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml_ng::to_string(&kc).unwrap()).unwrap();
    path
}

fn rfc3339(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second()).unwrap().to_string()
}

/// What the exchange writes for one token: a record of `service_account`'s grant.
async fn record_issuance(
    client: &Client,
    app: &Application,
    trust: &str,
    grant: (&str, &str),
) -> String {
    let ns = app.namespace().unwrap();
    let now = Timestamp::now();
    let name = format!("{ns}-status");
    let record: TokenIssuance = serde_json::from_value(json!({
        "apiVersion": "oam-trust.dev/v1alpha1", "kind": "TokenIssuance", "metadata": {"name": name},
        "spec": {
            "role": "replay-guard,token-binding",
            "issuedAt": rfc3339(now - SignedDuration::from_secs(5 * 60)),
            "tokenExpiresAt": rfc3339(now + SignedDuration::from_secs(5 * 60)),
            "expiresAt": rfc3339(now + SignedDuration::from_secs(5 * 60)),
            "issuer": "https://gitlab.example.com", "jti": format!("jti-{ns}"), "trust": trust,
            "namespace": ns, "application": app.name_any(), "applicationUid": app.uid().unwrap(),
            "grant": grant.1, "grantId": grant.0, "serviceAccount": grant.1,
            "projectId": "1450", "projectPath": "shop/api", "pipelineId": "99", "jobId": "4711",
            "user": "alice", "ref": "main", "correlationId": "c-1"
        }
    }))
    .unwrap();
    Api::<TokenIssuance>::all(client.clone())
        .create(&PostParams::default(), &record)
        .await
        .expect("creating the TokenIssuance");
    name
}

async fn cleanup(client: &Client, trust: &str, issuance: Option<&str>) {
    let _ = Api::<GitLabTrust>::all(client.clone())
        .delete(trust, &DeleteParams::default())
        .await;
    if let Some(name) = issuance {
        let _ = Api::<TokenIssuance>::all(client.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }
}

/// Running, and every declaration granted.
fn running_with_access(a: &Application) -> bool {
    support::app_running(a)
        && a.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "AccessReady" && c.status == "True")
        })
}

fn application(name: &str, components: Value, policies: Value) -> Value {
    json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": name},
           "spec": {"components": components, "policies": policies}})
}

#[tokio::test]
async fn a_healthy_application_shows_its_components_grants_last_issuance_and_events() {
    support::operator().await;
    let client = support::admin().await;
    let kubeconfig = support::kubeconfig_path().await;
    let ns = support::app_namespace(&client, "status-ok", "admin").await;
    let trust = support::selecting_trust(&client, &ns, None).await;
    let api = json!({"name": "api", "type": "webservice",
        "properties": {"image": "oamdev/hello-world:v1", "ports": [{"port": 8000, "expose": true}]},
        "traits": [{"type": "scaler", "properties": {"replicas": 2}},
                   {"type": "gitlab-access", "properties": {"trust": trust,
                        "subjects": [{"namespaceId": "72"}], "access": "read"}}]});
    let worker = json!({"name": "worker", "type": "worker", "properties": {"image": "busybox"}});
    let readers = json!([{"name": "readers", "type": "gitlab-access", "properties": {"trust": trust,
        "subjects": [{"namespaceId": "72"}], "access": "read", "ttl": "10m"}}]);
    support::apply_app(
        &client,
        &ns,
        application("shop-api", json!([api.clone(), worker]), readers.clone()),
    )
    .await;
    support::wait_app(&client, &ns, "shop-api", "running", support::app_running).await;
    // Removing a component prunes its Deployment: a Normal `Pruned` Event on the Application.
    support::apply_app(&client, &ns, application("shop-api", json!([api]), readers)).await;
    let app = support::wait_app(&client, &ns, "shop-api", "running with access", |a| {
        running_with_access(a) && a.status.as_ref().unwrap().services.len() == 1
    })
    .await;
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    assert!(
        support::eventually(Duration::from_secs(30), || {
            let events = events.clone();
            let uid = app.uid();
            async move {
                events
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .any(|e| {
                        e.reason.as_deref() == Some("Pruned")
                            && e.regarding.as_ref().and_then(|r| r.uid.clone()) == uid
                    })
            }
        })
        .await,
        "no Pruned Event on the Application"
    );
    let accounts = grant_accounts(&client, &ns, "shop-api").await;
    assert_eq!(
        accounts
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["component/api/trait/1", "policy/readers"]
    );
    let (trait_sa, readers_sa) = (accounts[0].1.clone(), accounts[1].1.clone());
    let issuance = record_issuance(&client, &app, &trust, ("policy/readers", &readers_sa)).await;

    let report = status_json(&kubeconfig, "shop-api", &ns).await;
    // `-o yaml` is the same report (but for when it was read, and Events that came since).
    let (code, yaml, err) = status(&kubeconfig, &["shop-api", "-n", &ns, "-o", "yaml"]).await;
    assert_eq!(code, 0, "oam-trust status -o yaml failed: {err}");
    let mut from_yaml: Value = serde_yaml_ng::from_str(&yaml).expect("YAML");
    let mut from_json = report.clone();
    for r in [&mut from_yaml, &mut from_json] {
        r.as_object_mut()
            .unwrap()
            .retain(|k, _| k != "observedAt" && k != "events");
    }
    assert_eq!(from_yaml, from_json);
    assert_eq!(report["application"], "shop-api");
    assert_eq!(report["namespace"], ns.as_str());
    assert_eq!(report["phase"], "running");
    assert_eq!(report["observedGeneration"], report["generation"]);
    assert_eq!(report["components"].as_array().unwrap().len(), 1);
    let component = &report["components"][0];
    assert_eq!(
        (
            &component["name"],
            &component["healthy"],
            &component["message"]
        ),
        (&json!("api"), &json!(true), &json!("Ready:2/2"))
    );
    assert_eq!(component["traits"][0]["type"], "scaler");
    assert_eq!(report["workflow"], Value::Null, "the default workflow");
    let revisions = Api::<ApplicationRevision>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels("app.oam.dev/name=shop-api"))
        .await
        .unwrap();
    assert_eq!(report["revision"]["kept"], revisions.items.len());
    assert_eq!(
        report["revision"]["latest"],
        serde_json::to_value(&app.status.as_ref().unwrap().latest_revision).unwrap()
    );
    let grants = report["grants"].as_array().unwrap();
    let summary: Vec<Value> = grants
        .iter()
        .map(|g| {
            json!([
                g["grant"],
                g["serviceAccount"],
                g["access"],
                g["ttl"],
                g["ttlDeclared"],
                g["state"]
            ])
        })
        .collect();
    assert_eq!(
        summary,
        [
            json!(["policy/readers", readers_sa, "read", "10m", true, "granted"]),
            json!([
                "component/api/trait/1",
                trait_sa,
                "read",
                "15m",
                false,
                "granted"
            ]),
        ],
        "a declaration's own TTL, or its trust's default"
    );
    let last = &grants[0]["lastIssuance"];
    assert_eq!(
        (&last["name"], &last["jobId"], &last["user"], &last["ref"]),
        (
            &json!(issuance),
            &json!("4711"),
            &json!("alice"),
            &json!("main")
        )
    );
    assert_eq!(grants[1]["lastIssuance"], Value::Null, "never issued");
    let events = report["events"].as_array().expect("Events are readable");
    let pruned = events
        .iter()
        .find(|e| e["reason"] == "Pruned")
        .expect("the Pruned Event");
    assert_eq!(pruned["type"], "Normal");
    assert!(
        pruned["message"]
            .as_str()
            .unwrap()
            .ends_with("objects no longer rendered"),
        "{pruned}"
    );

    let text = status_text(&kubeconfig, "shop-api", &ns).await;
    assert_line(&text, "Application: shop-api");
    assert_line(&text, &format!("Namespace:   {ns}"));
    assert_line(&text, "Phase:       running");
    assert_line(
        &text,
        r"Created:     \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+[sm] ago\)",
    );
    assert_line(
        &text,
        "Conditions:  Parsed, Applied, Healthy, AccessReady are True",
    );
    assert_line(&text, r"  NAME\s+NAMESPACE\s+HEALTHY\s+TRAITS\s+MESSAGE");
    assert_line(&text, &format!(r"  api\s+{ns}\s+yes\s+scaler\s+Ready:2/2"));
    assert_line(&text, "  default workflow: every component applied");
    assert_line(
        &text,
        &format!(
            r"  policy/readers\s+{readers_sa}\s+read\s+10m\s+granted\s+job 4711 by alice, 5m ago"
        ),
    );
    assert_line(
        &text,
        &format!(
            r"  component/api/trait/1\s+{trait_sa}\s+read\s+15m \(trust default\)\s+granted\s+none"
        ),
    );
    assert_line(&text, "Events \\(newest last\\)");
    assert_line(
        &text,
        r"  \d+[sm]\s+Normal\s+Pruned\s+deleted \d+ objects no longer rendered",
    );
    cleanup(&client, &trust, Some(&issuance)).await;
}

#[tokio::test]
async fn an_unhealthy_application_says_which_component_and_why_and_which_grant_is_refused() {
    support::operator().await;
    let client = support::admin().await;
    let kubeconfig = support::kubeconfig_path().await;
    let ns = support::app_namespace(&client, "status-bad", "admin").await;
    let trust = support::selecting_trust(&client, &ns, None).await;
    // No node has 500 CPUs: the pod is never scheduled. A TTL above the trust's cap (1h): refused.
    let greedy = json!({"name": "greedy", "type": "webservice", "properties": {"image": "nginx", "cpu": "500"}});
    let ci = json!([{"name": "ci", "type": "gitlab-access", "properties": {"trust": trust,
        "subjects": [{"namespaceId": "72"}], "access": "read", "ttl": "2h"}}]);
    support::apply_app(&client, &ns, application("greedy", json!([greedy]), ci)).await;
    support::wait_app(
        &client,
        &ns,
        "greedy",
        "unhealthy, its grant refused",
        |a| {
            let s = a.status.as_ref();
            support::app_phase(a) == "unhealthy"
                && s.and_then(|s| s.services.first())
                    .and_then(|c| c.message.as_deref())
                    .is_some_and(|m| m.contains("cannot be scheduled"))
                && s.is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "AccessDenied" && c.status == "True")
                })
        },
    )
    .await;

    let report = status_json(&kubeconfig, "greedy", &ns).await;
    assert_eq!(report["phase"], "unhealthy");
    let component = &report["components"][0];
    assert_eq!(component["healthy"], false);
    assert!(
        component["message"]
            .as_str()
            .unwrap()
            .starts_with("Ready:0/1 (pods cannot be scheduled: "),
        "{component}"
    );
    let healthy = report["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Healthy")
        .unwrap();
    assert_eq!(healthy["status"], "False");
    let grant = &report["grants"][0];
    assert_eq!(
        (&grant["grant"], &grant["state"], &grant["ttl"]),
        (&json!("policy/ci"), &json!("refused"), &json!("2h"))
    );
    let refusal = grant["message"].as_str().unwrap();
    assert!(
        refusal.contains("2h") && refusal.contains("1h"),
        "{refusal}"
    );
    assert!(
        grant_accounts(&client, &ns, "greedy").await.is_empty(),
        "a refused declaration has no ServiceAccount"
    );

    let text = status_text(&kubeconfig, "greedy", &ns).await;
    assert_line(&text, "Phase:       unhealthy");
    assert_line(&text, r"  Healthy=False \(\w+\): .+");
    assert_line(&text, r"  AccessDenied=True \(TtlAboveMax\): policy/ci: .+");
    assert_line(
        &text,
        &format!(r"  greedy\s+{ns}\s+no\s+-\s+Ready:0/1 \(pods cannot be scheduled: .+\)"),
    );
    assert_line(&text, r"  policy/ci\s+-\s+read\s+2h\s+refused\s+none");
    assert_line(
        &text,
        &format!("  policy/ci refused: {}", regex::escape(refusal)),
    );
    cleanup(&client, &trust, None).await;
}

/// A CI job after `oam-trust login` holds its grant's ServiceAccount: it may read its Application and
/// its objects, nothing else. `status` still reports, and says what it cannot see.
#[tokio::test]
async fn a_grant_identity_sees_its_application_and_is_told_what_it_cannot_see() {
    support::operator().await;
    let client = support::admin().await;
    let admin_kubeconfig = support::kubeconfig_path().await;
    let ns = support::app_namespace(&client, "status-tenant", "admin").await;
    let trust = support::selecting_trust(&client, &ns, None).await;
    let web = json!({"name": "web", "type": "webservice", "properties": {"image": "nginx"}});
    let readers = json!([{"name": "readers", "type": "gitlab-access", "properties": {"trust": trust,
        "subjects": [{"namespaceId": "72"}], "access": "read"}}]);
    support::apply_app(&client, &ns, application("web", json!([web]), readers)).await;
    support::wait_app(
        &client,
        &ns,
        "web",
        "running with access",
        running_with_access,
    )
    .await;
    let accounts = grant_accounts(&client, &ns, "web").await;
    let token = support::token_for(&client, &ns, &accounts[0].1, 600).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = token_kubeconfig(dir.path(), &admin_kubeconfig, &token);

    let report = status_json(&kubeconfig, "web", &ns).await;
    assert_eq!(report["phase"], "running");
    assert_eq!(report["components"][0]["healthy"], true);
    let grant = &report["grants"][0];
    assert_eq!(
        (&grant["serviceAccount"], &grant["state"]),
        (&json!(accounts[0].1), &json!("granted"))
    );
    assert_eq!(
        grant["lastIssuance"],
        json!({"unreadable": "not visible to you"})
    );
    assert_eq!(grant["ttl"], Value::Null, "the trust is not visible either");
    assert_eq!(
        report["events"],
        json!({"unreadable": "not visible to you"})
    );
    assert_eq!(
        report["revision"]["kept"],
        json!({"unreadable": "not visible to you"})
    );

    let text = status_text(&kubeconfig, "web", &ns).await;
    assert_line(
        &text,
        &format!(
            r"  policy/readers\s+{}\s+read\s+trust default\s+granted\s+not visible to you",
            accounts[0].1
        ),
    );
    assert_line(&text, "Events: not visible to you");
    cleanup(&client, &trust, None).await;
}

#[tokio::test]
async fn a_missing_application_fails_naming_the_namespace_searched() {
    let client = support::admin().await;
    support::install_crds(&client).await;
    let kubeconfig = support::kubeconfig_path().await;
    let ns = support::namespace(&client, "status-none").await;
    let (code, out, err) = status(&kubeconfig, &["nope", "-n", &ns]).await;
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err.trim(),
        format!(
            "error: Application \"nope\" not found in namespace \"{ns}\"; name its namespace with -n <namespace>"
        )
    );
    // Without -n, the kubeconfig context's namespace (the local cluster's context names none: default).
    let (code, _, err) = status(&kubeconfig, &["nope"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "not found in namespace \"default\" (the kubeconfig context's namespace); name its namespace with -n <namespace>"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_suspended_workflow_says_how_to_resume() {
    support::operator().await;
    let client = support::admin().await;
    let kubeconfig = support::kubeconfig_path().await;
    let ns = support::app_namespace(&client, "status-suspend", "admin").await;
    let app = json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "release"},
        "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx"}}],
                 "workflow": {"steps": [{"name": "deploy", "type": "deploy"},
                                        {"name": "approve", "type": "suspend"}]}}});
    support::apply_app(&client, &ns, app).await;
    let workflow_of = |a: &Application| a.status.as_ref().and_then(|s| s.workflow.clone());
    support::wait_app(&client, &ns, "release", "suspended at approve", |a| {
        support::app_phase(a) == "workflowSuspending" && workflow_of(a).is_some_and(|w| w.suspend)
    })
    .await;

    let report = status_json(&kubeconfig, "release", &ns).await;
    assert_eq!(report["phase"], "workflowSuspending");
    let workflow = &report["workflow"];
    assert_eq!(
        (&workflow["status"], &workflow["suspend"]),
        (&json!("suspending"), &json!(true))
    );
    let steps: Vec<(&Value, &Value, &Value)> = workflow["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (&s["name"], &s["type"], &s["phase"]))
        .collect();
    assert_eq!(
        steps,
        [
            (&json!("deploy"), &json!("deploy"), &json!("succeeded")),
            (&json!("approve"), &json!("suspend"), &json!("suspending")),
        ]
    );

    let text = status_text(&kubeconfig, "release", &ns).await;
    assert_line(&text, "Phase:       workflowSuspending");
    assert_line(&text, &format!(r"  web\s+{ns}\s+yes\s+-\s+Ready:1/1"));
    assert_line(
        &text,
        r"  phase suspending, mode StepByStep-DAG, revision \S+",
    );
    assert_line(
        &text,
        &format!("  SUSPENDED at step approve: resume with `oam-trust resume release -n {ns}`"),
    );
    assert_line(&text, r"  deploy\s+deploy\s+succeeded\s+.*");
    assert_line(&text, r"  approve\s+suspend\s+suspending\s+Suspended: .+");

    // The command it names is the one that resumes.
    let command = text
        .lines()
        .find_map(|l| l.strip_prefix("  SUSPENDED")?.split('`').nth(1))
        .expect("a resume command in backquotes");
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let (code, out, err) = support::oam_trust(&kubeconfig, &args).await;
    assert_eq!(code, 0, "{command} failed: {err}");
    assert!(out.contains("resumed workflow step approve"), "{out}");
    support::wait_app(&client, &ns, "release", "running, its workflow done", |a| {
        support::app_running(a) && workflow_of(a).is_some_and(|w| w.finished)
    })
    .await;
    let text = status_text(&kubeconfig, "release", &ns).await;
    assert_line(&text, "Phase:       running");
    assert_line(
        &text,
        r"  phase succeeded, mode StepByStep-DAG, revision \S+",
    );
    assert_line(&text, r"  approve\s+suspend\s+succeeded\s+.*");
    assert!(!text.contains("SUSPENDED"), "{text}");
}
