//! Every grant identity is bounded by admission, on the real control plane with real tokens: the
//! deploy guard and the grant guard (config/admission/, installed exactly as shipped), attacked with
//! the token of a `manage` grant's ServiceAccount. Each attack of issue 10 is refused; scaling,
//! restarting and an image change are allowed; the applier and admins are not bound; and the grant
//! guard's rules that need no parameters hold for a grant identity whose parameters are missing.
mod support;

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use oam_trust::api::oam::Application;
use oam_trust::api::trust::GitLabTrust;
use serde_json::{Value, json};
use support::Access;
use tokio::sync::OnceCell;

const WAIT: Duration = Duration::from_secs(60);
const GRANT_GUARD: &str = "ValidatingAdmissionPolicy 'oam-trust-grant-guard' with binding 'oam-trust-grant-guard' denied request: ";
const GRANT_GUARD_PARAMS: &str = "ValidatingAdmissionPolicy 'oam-trust-grant-guard' with binding 'oam-trust-grant-guard-params' denied request: ";
const GRANT_IDENTITY: &str = "a grant identity (GitLab job) ";

static GUARDS: OnceCell<()> = OnceCell::const_new();

/// Installs both admission policies exactly as shipped (config/admission/*.yaml), once, and waits
/// until each binding judges requests. Bindings are never deleted: the API server's shared
/// ConfigMap parameter informer stops when the last binding using it goes.
async fn install_guards(client: &Client) {
    GUARDS
        .get_or_init(|| async {
            for file in ["deploy-guard.yaml", "grant-guard.yaml"] {
                let path = format!("{}/config/admission/{file}", env!("CARGO_MANIFEST_DIR"));
                let text = std::fs::read_to_string(path).unwrap();
                let pp = PatchParams::apply("oam-trust-tests").force();
                for doc in oam_trust::manifest::parse_documents(&text).unwrap() {
                    let name = doc["metadata"]["name"].as_str().unwrap().to_string();
                    match doc["kind"].as_str().unwrap() {
                        "ValidatingAdmissionPolicy" => {
                            Api::<ValidatingAdmissionPolicy>::all(client.clone())
                                .patch(&name, &pp, &Patch::Apply(&doc))
                                .await
                                .unwrap_or_else(|e| panic!("{file}: policy {name}: {e}"));
                        }
                        "ValidatingAdmissionPolicyBinding" => {
                            Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
                                .patch(&name, &pp, &Patch::Apply(&doc))
                                .await
                                .unwrap_or_else(|e| panic!("{file}: binding {name}: {e}"));
                        }
                        other => panic!("unexpected kind {other} in {file}"),
                    }
                }
            }
            await_guards(client).await;
        })
        .await;
}

/// Polls (dry runs, nothing changes) until each of the three bindings refuses what it must.
async fn await_guards(client: &Client) {
    support::install_crds(client).await;
    let ns = support::namespace(client, "guards-probe").await;
    let user = format!("system:serviceaccount:{ns}:oam-probe-ci-00000000");
    let params: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "oam-trust.deploy-guard.probe",
                     "labels": {"oam-trust.dev/deploy-guard": "params"}},
        "data": {"application": "probe", "g.principals": format!("user:{user}"), "g.components": "web",
                 "grant-principals": format!("user:{user}")}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &params)
        .await
        .unwrap();
    support::apply_app(
        client,
        &ns,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "probe"},
               "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx"}}]}}),
    )
    .await;
    // Deployments of no Application (made by the admin): one running as an account of its own (the
    // parameters' binding refuses keeping it), one as `default` (only the unparameterised binding
    // refuses a Secret volume there), so each probe is refused by one binding alone.
    for (name, account) in [("tool", "tool-sa"), ("plain", "default")] {
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .create(
                &PostParams::default(),
                &deployment(name, json!({}), account),
            )
            .await
            .unwrap();
    }
    // The probe is a grant identity whose RBAC allows everything: only admission can refuse it.
    let probe = support::impersonating(&user, &["system:masters"]).await;
    let dry = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let refused = |r: kube::Result<Value>, what: &str| matches!(r, Err(kube::Error::Api(s)) if s.message.contains(what));
    let ready = support::eventually(Duration::from_secs(30), || {
        let (apps, deployments) = (
            Api::<Application>::namespaced(probe.clone(), &ns),
            Api::<Deployment>::namespaced(probe.clone(), &ns),
        );
        let dry = dry.clone();
        async move {
            let label = Patch::Merge(json!({"metadata": {"labels": {"probe": "edited"}}}));
            let deploy_guard = apps.patch("probe", &dry, &label).await.map(|_| Value::Null);
            let secret = Patch::Merge(json!({"spec": {"template": {"spec": {
                "volumes": [{"name": "s", "secret": {"secretName": "x"}}]}}}}));
            let grant_guard = deployments
                .patch("plain", &dry, &secret)
                .await
                .map(|_| Value::Null);
            let image = Patch::Merge(
                json!({"spec": {"template": {"metadata": {"annotations": {"probe": "1"}}}}}),
            );
            let params = deployments
                .patch("tool", &dry, &image)
                .await
                .map(|_| Value::Null);
            refused(deploy_guard, "may change only")
                && refused(grant_guard, GRANT_GUARD)
                && refused(params, GRANT_GUARD_PARAMS)
        }
    })
    .await;
    assert!(
        ready,
        "the deploy guard and both grant guard bindings did not start judging within 30 s"
    );
}

/// A Deployment named `name` with `labels`, running one container as `account`.
fn deployment(name: &str, labels: Value, account: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"serviceAccountName": account,
                                       "containers": [{"name": "main", "image": "nginx:1"}]}}}
    }))
    .unwrap()
}

/// A namespace with an applier, a trust selecting it and a ceiling wide enough for `manage` on
/// Deployments, Pods, Services and ServiceAccounts (all named after the namespace).
struct Scene {
    client: Client,
    ns: String,
    trust: String,
    ceiling: String,
}

async fn scene(prefix: &str) -> Scene {
    support::operator().await;
    let client = support::admin().await;
    install_guards(&client).await;
    let ns = support::app_namespace(&client, prefix, "admin").await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"oam-trust.dev/isolation-test": ns}}})),
        )
        .await
        .unwrap();
    let trust = format!("trust-{ns}");
    let ceiling = format!("ceiling-{ns}");
    let all = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": ceiling},
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": all},
            {"apiGroups": [""], "resources": ["pods", "services", "configmaps", "serviceaccounts"], "verbs": all},
            {"apiGroups": ["core.oam.dev"], "resources": ["applications"], "verbs": ["get", "list", "watch", "update", "patch"]}
        ]
    }))
    .unwrap();
    let pp = PatchParams::apply("oam-trust-tests").force();
    Api::<ClusterRole>::all(client.clone())
        .patch(&ceiling, &pp, &Patch::Apply(&role))
        .await
        .unwrap();
    let glt = json!({
        "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust", "metadata": {"name": trust},
        "spec": {
            "issuer": "https://gitlab.example.com",
            "audiences": ["https://oam-trust.test"],
            "jwks": {"static": r#"{"keys":[]}"#},
            "namespaceSelector": {"matchLabels": {"oam-trust.dev/isolation-test": ns}},
            "allow": [{"namespaceId": "72"}],
            "tokens": {"defaultTTL": "10m", "maxTTL": "1h"},
            "ceiling": {"clusterRoleRef": ceiling},
            "federation": {"tokenExchange": true}
        }
    });
    Api::<GitLabTrust>::all(client.clone())
        .patch(&trust, &pp, &Patch::Apply(&glt))
        .await
        .expect("the API server accepts the GitLabTrust");
    Scene {
        client,
        ns,
        trust,
        ceiling,
    }
}

impl Scene {
    /// Removes the cluster-scoped objects of the scene (namespaces stay for inspection).
    async fn cleanup(self) {
        let _ = Api::<GitLabTrust>::all(self.client.clone())
            .delete(&self.trust, &DeleteParams::default())
            .await;
        let _ = Api::<ClusterRole>::all(self.client.clone())
            .delete(&self.ceiling, &DeleteParams::default())
            .await;
    }
}

/// Application `shop`: component `web` (a webservice running as the ServiceAccount `web-sa` its
/// `service-account` trait creates) and component `runner` (a bare Pod), with a `manage` policy.
/// Returns the manage grant's ServiceAccount once the grant and the rendered objects exist.
async fn manage_scene(s: &Scene) -> String {
    let policy = json!([{"name": "ci", "type": "gitlab-access", "properties": {
        "trust": s.trust, "subjects": [{"projectId": "1450", "namespaceId": "72"}],
        "access": "manage", "ttl": "10m"}}]);
    let runner = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "runner"},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "main", "image": "busybox"}]}});
    support::apply_app(
        &s.client,
        &s.ns,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "shop"},
            "spec": {"components": [
                {"name": "web", "type": "webservice", "properties": {"image": "nginx:1"},
                 "traits": [{"type": "service-account", "properties": {"name": "web-sa", "create": true}}]},
                {"name": "runner", "type": "k8s-objects", "properties": {"objects": [runner]}}
            ], "policies": policy}}),
    )
    .await;
    let grant_label = "oam-trust.dev/grant,app.oam.dev/name=shop";
    let sas = Api::<ServiceAccount>::namespaced(s.client.clone(), &s.ns);
    let found = support::eventually(WAIT, || async {
        sas.list(&ListParams::default().labels(grant_label))
            .await
            .unwrap()
            .items
            .len()
            == 1
    })
    .await;
    assert!(found, "the manage grant's ServiceAccount is created");
    let sa = sas
        .list(&ListParams::default().labels(grant_label))
        .await
        .unwrap()
        .items[0]
        .name_any();
    let deployments = Api::<Deployment>::namespaced(s.client.clone(), &s.ns);
    wait_deployment(&deployments, "web", |d| {
        service_account_of(d).as_deref() == Some("web-sa")
    })
    .await;
    let params = Api::<ConfigMap>::namespaced(s.client.clone(), &s.ns);
    let cm = support::wait_for(
        &params,
        "oam-trust.deploy-guard.shop",
        "guard parameters name web-sa",
        WAIT,
        |cm| {
            cm.data
                .as_ref()
                .is_some_and(|d| d.get("serviceAccounts.web").map(String::as_str) == Some("web-sa"))
        },
    )
    .await;
    let data = cm.data.unwrap();
    assert_eq!(
        data["grant-principals"],
        format!("user:system:serviceaccount:{}:{sa}", s.ns),
        "every grant's principals, not only deploy ones"
    );
    assert!(
        !data.keys().any(|k| k.ends_with(".principals")),
        "no deploy grant, so no deploy guard principals: {data:?}"
    );
    sa
}

/// Polls until Deployment `name` exists and satisfies `pred` (it may not exist yet).
async fn wait_deployment(api: &Api<Deployment>, name: &str, pred: impl Fn(&Deployment) -> bool) {
    let reached = support::eventually(WAIT, || async {
        api.get_opt(name).await.unwrap().is_some_and(|d| pred(&d))
    })
    .await;
    assert!(reached, "Deployment {name} not as expected within {WAIT:?}");
}

fn service_account_of(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .service_account_name
        .clone()
}

/// The request was refused by admission with a message that starts with `prefix` (policy and
/// binding) and ends with `message`.
fn assert_refused(r: kube::Result<impl std::fmt::Debug>, prefix: &str, message: &str) {
    match r {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"), "{s:?}");
            assert!(
                s.message.contains(prefix) && s.message.ends_with(message),
                "refused with {prefix:?}…{message:?}; got {:?}",
                s.message
            );
        }
        other => panic!("expected a refusal by the API server, got {other:?}"),
    }
}

fn strategic(v: Value) -> Patch<Value> {
    Patch::Strategic(v)
}

#[tokio::test]
async fn a_manage_token_cannot_become_the_applier_or_read_secrets() {
    let s = scene("iso-manage").await;
    let sa = manage_scene(&s).await;
    let token =
        support::client_with_token(&support::token_for(&s.client, &s.ns, &sa, 600).await).await;
    let (user, _) = support::whoami(&token).await.unwrap();
    assert_eq!(user, format!("system:serviceaccount:{}:{sa}", s.ns));
    let pp = PatchParams::default();

    // 1. The Application: manage reads it and cannot write it (RBAC: only deploy writes it).
    let apps = Api::<Application>::namespaced(token.clone(), &s.ns);
    apps.get("shop")
        .await
        .expect("manage reads its Application");
    let policy_666 = json!({"spec": {"policies": [{"name": "evil", "type": "gitlab-access",
        "properties": {"trust": s.trust, "subjects": [{"projectId": "666"}], "access": "manage"}}]}});
    match apps.patch("shop", &pp, &Patch::Merge(policy_666)).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("patching the Application must be refused, got {other:?}"),
    }
    for verb in ["patch", "update", "delete"] {
        assert!(
            !support::can_i(
                &token,
                Access {
                    verb,
                    group: "core.oam.dev",
                    resource: "applications",
                    namespace: Some(&s.ns),
                    name: Some("shop"),
                }
            )
            .await,
            "manage may not {verb} the Application"
        );
    }

    // 2.-4. The rendered Deployment: another ServiceAccount, a Secret volume, Secret env.
    let deployments = Api::<Deployment>::namespaced(token.clone(), &s.ns);
    assert_refused(
        deployments
            .patch(
                "web",
                &pp,
                &strategic(
                    json!({"spec": {"template": {"spec": {"serviceAccountName": "oam-trust-applier"}}}}),
                ),
            )
            .await,
        GRANT_GUARD,
        &format!(
            "Deployment web: {GRANT_IDENTITY}may not make a pod run as ServiceAccount oam-trust-applier; \
             it keeps the ServiceAccount the object runs as, or default"
        ),
    );
    assert_refused(
        deployments
            .patch(
                "web",
                &pp,
                &strategic(json!({"spec": {"template": {"spec": {
                    "volumes": [{"name": "db", "secret": {"secretName": "db-password"}}]}}}})),
            )
            .await,
        GRANT_GUARD,
        &format!(
            "Deployment web: {GRANT_IDENTITY}may not add secret, projected (ServiceAccount token) or hostPath volumes"
        ),
    );
    let secret_refs = format!(
        "Deployment web: {GRANT_IDENTITY}may not add Secret references (env valueFrom.secretKeyRef, envFrom secretRef)"
    );
    let container = |extra: Value| {
        let mut c = json!({"name": "web"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        strategic(json!({"spec": {"template": {"spec": {"containers": [c]}}}}))
    };
    assert_refused(
        deployments
            .patch(
                "web",
                &pp,
                &container(json!({"envFrom": [{"secretRef": {"name": "db-password"}}]})),
            )
            .await,
        GRANT_GUARD,
        &secret_refs,
    );
    assert_refused(
        deployments
            .patch(
                "web",
                &pp,
                &container(json!({"env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "pw"}}}]})),
            )
            .await,
        GRANT_GUARD,
        &secret_refs,
    );
    assert_refused(
        deployments
            .patch(
                "web",
                &pp,
                &container(json!({"securityContext": {"privileged": true}})),
            )
            .await,
        GRANT_GUARD,
        &format!(
            "Deployment web: {GRANT_IDENTITY}may not make a container privileged or add capabilities"
        ),
    );
    assert_refused(
        deployments
            .patch(
                "web",
                &pp,
                &strategic(json!({"spec": {"template": {"spec": {"hostPID": true}}}})),
            )
            .await,
        GRANT_GUARD,
        &format!(
            "Deployment web: {GRANT_IDENTITY}may not add host namespaces (hostNetwork, hostPID, hostIPC)"
        ),
    );

    // 5. New workloads as the applier: a Pod and a Deployment (manage creates both kinds).
    let applier_pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "evil"},
        "spec": {"serviceAccountName": "oam-trust-applier", "automountServiceAccountToken": false,
                 "containers": [{"name": "main", "image": "attacker/miner:latest"}]}
    }))
    .unwrap();
    assert_refused(
        Api::<Pod>::namespaced(token.clone(), &s.ns)
            .create(&PostParams::default(), &applier_pod)
            .await,
        GRANT_GUARD,
        &format!(
            "Pod evil: {GRANT_IDENTITY}may not make a pod run as ServiceAccount oam-trust-applier; \
             it keeps the ServiceAccount the object runs as, or default"
        ),
    );
    assert_refused(
        deployments
            .create(
                &PostParams::default(),
                &deployment("evil", json!({}), "oam-trust-applier"),
            )
            .await,
        GRANT_GUARD,
        &format!(
            "Deployment evil: {GRANT_IDENTITY}may not make a pod run as ServiceAccount oam-trust-applier; \
             it keeps the ServiceAccount the object runs as, or default"
        ),
    );
    // Even the component's own ServiceAccount is kept, never introduced.
    assert_refused(
        deployments
            .create(
                &PostParams::default(),
                &deployment(
                    "evil",
                    json!({"app.oam.dev/name": "shop", "app.oam.dev/component": "web"}),
                    "web-sa",
                ),
            )
            .await,
        GRANT_GUARD,
        &format!(
            "Deployment evil: {GRANT_IDENTITY}may not make a pod run as ServiceAccount web-sa; \
             it keeps the ServiceAccount the object runs as, or default"
        ),
    );

    // Allowed: scale (spec.replicas), restart (what `kubectl rollout restart` patches), a new image,
    // and a Pod of its own as `default` without a token.
    deployments
        .patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .expect("manage scales its Deployment");
    deployments
        .patch(
            "web",
            &pp,
            &strategic(json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-12-01T21:00:00Z"}}}}})),
        )
        .await
        .expect("manage restarts its Deployment");
    deployments
        .patch("web", &pp, &container(json!({"image": "nginx:2"})))
        .await
        .expect("manage changes the image; the pod keeps running as web-sa");
    let own_pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "debug"},
        "spec": {"automountServiceAccountToken": false,
                 "containers": [{"name": "main", "image": "busybox"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(token.clone(), &s.ns)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &own_pod,
        )
        .await
        .expect("manage creates a Pod running as default, without a token");
    let live = Api::<Deployment>::namespaced(s.client.clone(), &s.ns)
        .get("web")
        .await
        .unwrap();
    assert_eq!(service_account_of(&live).as_deref(), Some("web-sa"));
    let pod_spec = live.spec.unwrap().template.spec.unwrap();
    assert!(
        pod_spec
            .volumes
            .iter()
            .flatten()
            .all(|v| v.secret.is_none()),
        "no Secret volume got through"
    );

    // The applier and the admin are not bound by the grant guard.
    let applier = support::impersonating(
        &format!("system:serviceaccount:{}:oam-trust-applier", s.ns),
        &["system:serviceaccounts"],
    )
    .await;
    Api::<Deployment>::namespaced(applier, &s.ns)
        .patch(
            "web",
            &PatchParams {
                dry_run: true,
                ..Default::default()
            },
            &strategic(json!({"spec": {"template": {"spec": {
                "volumes": [{"name": "db", "secret": {"secretName": "db-password"}}]}}}})),
        )
        .await
        .expect("the applier mounts Secrets as before");
    s.cleanup().await;
}

#[tokio::test]
async fn a_grant_identity_cannot_keep_a_foreign_service_account() {
    let s = scene("iso-foreign").await;
    let sa = manage_scene(&s).await;
    // A workload of no Application, made by the namespace's admin, running as a powerful account.
    Api::<Deployment>::namespaced(s.client.clone(), &s.ns)
        .create(
            &PostParams::default(),
            &deployment("admin-tool", json!({}), "oam-trust-applier"),
        )
        .await
        .unwrap();
    // The grant's own identity, with RBAC out of the way (as an explicit rule on Deployments would
    // allow): only admission stands between it and the applier's ServiceAccount.
    let wide = support::impersonating(
        &format!("system:serviceaccount:{}:{sa}", s.ns),
        &["system:masters"],
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(wide, &s.ns);
    let image = strategic(json!({"spec": {"template": {"spec": {
        "containers": [{"name": "main", "image": "attacker/miner:latest"}]}}}}));
    assert_refused(
        deployments
            .patch("admin-tool", &PatchParams::default(), &image)
            .await,
        GRANT_GUARD_PARAMS,
        &format!(
            "Deployment admin-tool: {GRANT_IDENTITY}may make a pod run only as default \
             (the object belongs to no Application), not oam-trust-applier"
        ),
    );
    // Relabelling the object as the Application's does not help: the old object's labels count.
    let relabel = strategic(json!({
        "metadata": {"labels": {"app.oam.dev/name": "shop", "app.oam.dev/component": "web"}},
        "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "attacker/miner:latest"}]}}}}));
    assert_refused(
        deployments
            .patch("admin-tool", &PatchParams::default(), &relabel)
            .await,
        GRANT_GUARD_PARAMS,
        &format!(
            "Deployment admin-tool: {GRANT_IDENTITY}may make a pod run only as default \
             (the object belongs to no Application), not oam-trust-applier"
        ),
    );
    // Its own component's Deployment runs as what the Application renders: allowed.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:3"}]}}}})),
        )
        .await
        .expect("the rendered ServiceAccount is the component's");
    s.cleanup().await;
}

/// A grant identity whose Application has no guard parameters: the Application `lone` has no
/// declarations (so oam-trust writes no parameters for it and nothing re-creates them), and the
/// namespace's admin gives a ServiceAccount named like a grant's the RBAC a manage grant would have.
/// This is the state after the parameters were deleted, held still, so nothing races.
#[tokio::test]
async fn without_parameters_a_grant_identity_still_gets_no_secrets_and_no_other_account() {
    support::operator().await;
    let client = support::admin().await;
    install_guards(&client).await;
    let ns = support::app_namespace(&client, "iso-noparams", "admin").await;
    support::apply_app(
        &client,
        &ns,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "lone"},
            "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx:1"}}]}}),
    )
    .await;
    support::wait_app(&client, &ns, "lone", "rendered", |a| {
        !support::app_phase(a).is_empty()
    })
    .await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    wait_deployment(&deployments, "web", |_| true).await;
    let grant = "oam-lone-ci-00000000";
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": grant}})).unwrap(),
    )
    .await
    .unwrap();
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": grant},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch", "update", "create"]},
                  {"apiGroups": ["core.oam.dev"], "resources": ["applications"], "resourceNames": ["lone"], "verbs": ["get", "patch"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": grant},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": grant},
        "subjects": [{"kind": "ServiceAccount", "name": grant, "namespace": ns}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels("oam-trust.dev/deploy-guard=params"))
            .await
            .unwrap()
            .items
            .is_empty(),
        "the namespace has no guard parameters"
    );
    let token =
        support::client_with_token(&support::token_for(&client, &ns, grant, 600).await).await;
    let pp = PatchParams::default();
    let mine = Api::<Deployment>::namespaced(token.clone(), &ns);
    // RBAC takes a moment to reach the authorizer's cache: wait until a harmless patch goes through.
    let allowed = support::eventually(WAIT, || async {
        mine.patch(
            "web",
            &pp,
            &strategic(
                json!({"spec": {"template": {"metadata": {"annotations": {"restart": "1"}}}}}),
            ),
        )
        .await
        .is_ok()
    })
    .await;
    assert!(
        allowed,
        "the RoleBinding lets the token restart the Deployment"
    );
    // The deploy guard fails closed without parameters: its base binding lets a grant identity change
    // component images and nothing else of the Application.
    let apps = Api::<oam_trust::api::oam::Application>::namespaced(token.clone(), &ns);
    let image = json!({"spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx:2"}}]}});
    apps.patch("lone", &pp, &Patch::Merge(&image))
        .await
        .expect("an image change passes the base binding");
    let trait_ = json!({"spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx:2"},
        "traits": [{"type": "scaler", "properties": {"replicas": 9}}]}]}});
    match apps.patch("lone", &pp, &Patch::Merge(&trait_)).await {
        Err(kube::Error::Api(s)) => assert!(
            s.code == 403
                && s.message.contains("binding 'oam-trust-deploy-guard-base'")
                && s.message.ends_with(
                    "Application lone: a grant identity may change only component images; traits cannot change"
                ),
            "{s:?}"
        ),
        other => panic!("a trait change without parameters must be refused: {other:?}"),
    }
    assert_refused(
        mine.patch(
            "web",
            &pp,
            &strategic(
                json!({"spec": {"template": {"spec": {"serviceAccountName": "oam-trust-applier"}}}}),
            ),
        )
        .await,
        GRANT_GUARD,
        &format!(
            "Deployment web: {GRANT_IDENTITY}may not make a pod run as ServiceAccount oam-trust-applier; \
             it keeps the ServiceAccount the object runs as, or default"
        ),
    );
    assert_refused(
        mine.patch(
            "web",
            &pp,
            &strategic(json!({"spec": {"template": {"spec": {
                "volumes": [{"name": "db", "secret": {"secretName": "db-password"}}]}}}})),
        )
        .await,
        GRANT_GUARD,
        &format!(
            "Deployment web: {GRANT_IDENTITY}may not add secret, projected (ServiceAccount token) or hostPath volumes"
        ),
    );
    assert_refused(
        mine.create(
            &PostParams::default(),
            &deployment("evil", json!({}), "oam-trust-applier"),
        )
        .await,
        GRANT_GUARD,
        &format!(
            "Deployment evil: {GRANT_IDENTITY}may not make a pod run as ServiceAccount oam-trust-applier; \
             it keeps the ServiceAccount the object runs as, or default"
        ),
    );
    // The GitLab agent's ci_job identity is bounded the same way.
    let agent =
        support::impersonating("gitlab:ci_job:7", &["gitlab:ci_job", "system:masters"]).await;
    assert_refused(
        Api::<Deployment>::namespaced(agent, &ns)
            .patch(
                "web",
                &pp,
                &strategic(json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "web", "envFrom": [{"secretRef": {"name": "db-password"}}]}]}}}})),
            )
            .await,
        GRANT_GUARD,
        &format!(
            "Deployment web: {GRANT_IDENTITY}may not add Secret references (env valueFrom.secretKeyRef, envFrom secretRef)"
        ),
    );
}
