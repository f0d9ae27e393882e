//! The operator's own least privilege, on the real control plane: the chart's two identities
//! (controller and exchange), each with a TokenRequest token of its own ServiceAccount, try what a
//! compromised operator would try. Every attempt must be refused, and the test says by what: RBAC
//! (the chart grants no such verb), the RBAC escalation check (a Role or binding beyond what the
//! identity holds: the ceiling is enforced by the API server, not by the operator's code), or the
//! operator guard (`charts/oam-trust/templates/operator-guard.yaml`, which the operator cannot
//! lift). Positive controls first: the shapes the operator really writes are admitted, so every
//! refusal below is about the attempt, not about a policy that refuses everything.
//!
//! Run with `--nocapture` to print the table the README's security model section quotes.
mod support;

use std::collections::BTreeSet;

use kube::Client;
use oam_trust::access::rights::{Rights, ServiceAccountRef};
use serde_json::{Value, json};
use support::helm;

/// What refuses an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum By {
    /// The identity holds no such verb on such a resource there.
    Rbac,
    /// The API server's RBAC escalation check: a Role or binding beyond what the identity holds.
    Escalation,
    /// The operator guard admission policy.
    Guard,
}

impl By {
    fn name(self) -> &'static str {
        match self {
            By::Rbac => "RBAC",
            By::Escalation => "RBAC escalation check",
            By::Guard => "operator guard (admission)",
        }
    }

    fn matches(self, message: &str) -> bool {
        match self {
            By::Rbac => message.contains(" cannot "),
            By::Escalation => message.contains("not currently held"),
            By::Guard => {
                message.contains("ValidatingAdmissionPolicy") && message.contains("operator-guard")
            }
        }
    }
}

/// One request, as raw as a compromised process would send it.
struct Request {
    method: &'static str,
    path: String,
    body: Option<Value>,
    /// Extra header (impersonation).
    header: Option<(&'static str, String)>,
}

fn get(path: impl Into<String>) -> Request {
    Request {
        method: "GET",
        path: path.into(),
        body: None,
        header: None,
    }
}

fn post(path: impl Into<String>, body: Value) -> Request {
    Request {
        method: "POST",
        path: path.into(),
        body: Some(body),
        header: None,
    }
}

fn patch(path: impl Into<String>, body: Value) -> Request {
    Request {
        method: "PATCH",
        path: path.into(),
        body: Some(body),
        header: None,
    }
}

fn delete(path: impl Into<String>) -> Request {
    Request {
        method: "DELETE",
        path: path.into(),
        body: None,
        header: None,
    }
}

async fn send(client: &Client, r: &Request) -> Result<Value, kube::Error> {
    let content_type = if r.method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let mut builder = axum::http::Request::builder()
        .method(r.method)
        .uri(&r.path)
        .header("Content-Type", content_type);
    if let Some((name, value)) = &r.header {
        builder = builder.header(*name, value);
    }
    let body = r
        .body
        .as_ref()
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    client.request::<Value>(builder.body(body).unwrap()).await
}

/// The chart's identities, installed from `helm template` into a release namespace of their own.
struct Chart {
    release_ns: String,
    controller_user: String,
    exchange_user: String,
    exchange_role: String,
    ceiling: String,
    guard: String,
    controller: Client,
    exchange: Client,
}

async fn install(admin: &Client) -> Chart {
    support::install_crds(admin).await;
    let release_ns = support::namespace(admin, "lp-operator").await;
    let release = format!("lp{}", release_ns.rsplit('-').next().unwrap());
    let ceiling = format!("{release}-ceiling");
    let objects = helm::render(
        &release,
        &release_ns,
        &[
            "--set",
            &format!("ceiling.name={ceiling}"),
            // The tenant guards are cluster-wide with fixed names: other tests install them.
            "--set",
            "admissionPolicy.enabled=false",
        ],
    );
    let identity_kinds = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    let wanted: Vec<&Value> = objects
        .iter()
        .filter(|o| identity_kinds.contains(&o["kind"].as_str().unwrap_or_default()))
        .collect();
    helm::apply_all(admin, &wanted).await;
    let fullname = format!("{release}-oam-trust");
    let controller_sa = format!("{fullname}-controller");
    let exchange_sa = format!("{fullname}-exchange");
    let controller_token = support::token_for(admin, &release_ns, &controller_sa, 3600).await;
    let exchange_token = support::token_for(admin, &release_ns, &exchange_sa, 3600).await;
    let chart = Chart {
        controller_user: format!("system:serviceaccount:{release_ns}:{controller_sa}"),
        exchange_user: format!("system:serviceaccount:{release_ns}:{exchange_sa}"),
        exchange_role: format!("{fullname}-exchange-namespace"),
        guard: format!("{fullname}-operator-guard"),
        release_ns,
        ceiling,
        controller: support::client_with_token(&controller_token).await,
        exchange: support::client_with_token(&exchange_token).await,
    };
    // A new policy is enforced once the API server has compiled it: wait for the guard to refuse.
    let probe = post(
        format!("/api/v1/namespaces/{}/configmaps", chart.release_ns),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}}),
    );
    let enforced = support::eventually(std::time::Duration::from_secs(30), || async {
        match send(&chart.controller, &probe).await {
            Err(kube::Error::Api(s)) => By::Guard.matches(&s.message),
            _ => false,
        }
    })
    .await;
    assert!(enforced, "the operator guard was not enforced within 30s");
    chart
}

const GRANT: &str = "oam-shop-deploy-0123456789abcdef0123";
const SECRET: &str = "oam-trust-binding-0123456789abcdef0123456789abcdef01234567";

fn grant_labels() -> Value {
    json!({"oam-trust.dev/grant": "true", "app.oam.dev/name": "shop"})
}

fn token_request(bound: Option<Value>) -> Value {
    let mut spec = json!({"expirationSeconds": 600});
    if let Some(b) = bound {
        spec["boundObjectRef"] = b;
    }
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
}

fn bound_to_secret(name: &str, uid: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "name": name, "uid": uid})
}

fn role(name: &str, labels: Value, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
           "metadata": {"name": name, "labels": labels}, "rules": rules})
}

fn role_binding(name: &str, labels: Value, role_ref: Value, subjects: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
           "metadata": {"name": name, "labels": labels}, "roleRef": role_ref, "subjects": subjects})
}

fn cluster_role(name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name})
}

fn sa_subject(ns: &str, name: &str) -> Value {
    json!([{"kind": "ServiceAccount", "name": name, "namespace": ns}])
}

fn secret(name: &str, type_: &str, owners: Value, data: Option<Value>) -> Value {
    let mut s = json!({"apiVersion": "v1", "kind": "Secret", "type": type_,
                       "metadata": {"name": name, "labels": {"oam-trust.dev/token-binding": "true"},
                                    "ownerReferences": owners}});
    if let Some(d) = data {
        s["data"] = d;
    }
    s
}

fn issuance(name: &str, ns: &str) -> Value {
    json!({"apiVersion": "oam-trust.dev/v1alpha1", "kind": "TokenIssuance", "metadata": {"name": name},
           "spec": {"application": "shop", "correlationId": "c-1", "expiresAt": "2099-01-01T00:00:00Z",
                    "grant": GRANT, "grantId": "policy/deploy", "issuedAt": "2026-12-01T00:00:00Z",
                    "issuer": "https://gitlab.example.com", "jti": "lp-1", "namespace": ns,
                    "role": "replay-guard,token-binding", "serviceAccount": GRANT,
                    "tokenExpiresAt": "2099-01-01T00:00:00Z", "trust": "lp"}})
}

fn owner(kind: &str, api_version: &str, name: &str, uid: &str) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": true}])
}

fn uid(v: &Value) -> String {
    v["metadata"]["uid"].as_str().unwrap().to_string()
}

async fn allowed(client: &Client, what: &str, r: Request) -> Value {
    send(client, &r)
        .await
        .unwrap_or_else(|e| panic!("positive control refused: {what}: {e}"))
}

#[tokio::test]
async fn neither_identity_of_the_operator_can_leave_its_lane() {
    let admin = support::admin().await;
    let chart = install(&admin).await;
    // `sel`: where grants live (the controller binds the rights there); `unsel`: where none do.
    let sel = support::namespace(&admin, "lp-sel").await;
    let unsel = support::namespace(&admin, "lp-unsel").await;
    let opns = chart.release_ns.clone();
    let core = |ns: &str, rest: &str| format!("/api/v1/namespaces/{ns}/{rest}");
    let rbac =
        |ns: &str, rest: &str| format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/{rest}");

    // Positive controls, as the controller: its namespace rights, exactly as the code builds them
    // (access::rights), then a grant within the ceiling and the deploy guard's parameters.
    let rights = Rights {
        controller: Some(chart.controller_user.parse::<ServiceAccountRef>().unwrap()),
        exchange: Some((
            chart.exchange_user.parse().unwrap(),
            chart.exchange_role.clone(),
        )),
    };
    for rb in rights.bindings(&sel, &BTreeSet::from([chart.ceiling.clone()])) {
        let value = oam_trust::access::objects::typed(&rb);
        allowed(
            &chart.controller,
            "the controller binds its namespace rights",
            post(rbac(&sel, "rolebindings"), value),
        )
        .await;
    }
    let within = json!([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "patch"]}]);
    let beyond = json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]);
    allowed(&chart.controller, "grant ServiceAccount", post(core(&sel, "serviceaccounts"),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": GRANT, "labels": grant_labels()}}))).await;
    allowed(
        &chart.controller,
        "grant Role within the ceiling",
        post(
            rbac(&sel, "roles"),
            role(GRANT, grant_labels(), within.clone()),
        ),
    )
    .await;
    allowed(&chart.controller, "grant RoleBinding", post(rbac(&sel, "rolebindings"),
        role_binding(GRANT, grant_labels(),
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": GRANT}),
            json!([{"kind": "ServiceAccount", "name": GRANT, "namespace": sel},
                   {"kind": "Group", "name": "gitlab:project:1450", "apiGroup": "rbac.authorization.k8s.io"}])))).await;
    allowed(&chart.controller, "deploy guard parameters", post(core(&sel, "configmaps"),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "oam-trust.deploy-guard.shop", "labels": {"oam-trust.dev/deploy-guard": "true"}},
               "data": {"application": "shop"}}))).await;
    // An ApplicationRevision of a tenant's Application, as controller::revision writes it.
    let revisions = format!("/apis/core.oam.dev/v1beta1/namespaces/{sel}/applicationrevisions");
    let shop = allowed(&admin, "a tenant Application", post(format!("/apis/core.oam.dev/v1beta1/namespaces/{sel}/applications"),
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "shop"},
               "spec": {"components": [{"name": "web", "type": "webservice"}]}}))).await;
    let shop_owner = owner("Application", "core.oam.dev/v1beta1", "shop", &uid(&shop));
    let revision = |name: &str, app: &str, owners: Value| {
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "ApplicationRevision",
               "metadata": {"name": name, "labels": {"app.oam.dev/name": app}, "ownerReferences": owners},
               "spec": {"application": {"metadata": {"name": app, "namespace": sel}, "spec": {"components": []}},
                        "revision": 1, "revisionHash": "0"}})
    };
    allowed(
        &chart.controller,
        "an ApplicationRevision owned by its Application",
        post(&revisions, revision("shop-v1", "shop", shop_owner.clone())),
    )
    .await;
    allowed(&chart.controller, "its Lease", post(format!("/apis/coordination.k8s.io/v1/namespaces/{opns}/leases"),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "lp-lease"}}))).await;

    // As the exchange: a record, the binding Secret it owns, a token of the grant bound to it.
    let record = allowed(
        &chart.exchange,
        "a TokenIssuance",
        post(
            "/apis/oam-trust.dev/v1alpha1/tokenissuances",
            issuance(&format!("lp-{sel}"), &sel),
        ),
    )
    .await;
    let owners = owner(
        "TokenIssuance",
        "oam-trust.dev/v1alpha1",
        record["metadata"]["name"].as_str().unwrap(),
        &uid(&record),
    );
    let binding = allowed(
        &chart.exchange,
        "a binding Secret",
        post(
            core(&sel, "secrets"),
            secret(SECRET, "oam-trust.dev/token-binding", owners.clone(), None),
        ),
    )
    .await;
    let token = allowed(
        &chart.exchange,
        "a grant token bound to it",
        post(
            core(&sel, &format!("serviceaccounts/{GRANT}/token")),
            token_request(Some(bound_to_secret(SECRET, &uid(&binding)))),
        ),
    )
    .await;
    assert!(
        !token["status"]["token"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );

    // A tenant's own objects in the namespace, which neither identity may touch.
    let tenant_cm = allowed(
        &admin,
        "tenant ConfigMap",
        post(
            core(&sel, "configmaps"),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tenant-owned"}}),
        ),
    )
    .await;
    allowed(&admin, "the namespace's applier", post(core(&sel, "serviceaccounts"),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "oam-trust-applier"}}))).await;
    allowed(
        &admin,
        "a tenant Deployment",
        post(
            format!("/apis/apps/v1/namespaces/{sel}/deployments"),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                   "spec": {"selector": {"matchLabels": {"app": "web"}},
                            "template": {"metadata": {"labels": {"app": "web"}},
                                         "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
        ),
    )
    .await;
    let bound_secret = || bound_to_secret(SECRET, &uid(&binding));
    let other_secret = |n: &str| format!("oam-trust-binding-{n:0>40}");

    // What neither identity may do, by RBAC alone: tried as each of them.
    let refused_to_both = || -> Vec<(&str, By, Request)> {
        vec![
            (
                "token for kube-system's default ServiceAccount",
                By::Rbac,
                post(
                    core("kube-system", "serviceaccounts/default/token"),
                    token_request(None),
                ),
            ),
            (
                "read a Secret",
                By::Rbac,
                get(core(&sel, &format!("secrets/{SECRET}"))),
            ),
            (
                "list Secrets cluster-wide",
                By::Rbac,
                get("/api/v1/secrets"),
            ),
            (
                "patch a Deployment in kube-system",
                By::Rbac,
                patch(
                    "/apis/apps/v1/namespaces/kube-system/deployments/coredns",
                    json!({"spec": {"replicas": 0}}),
                ),
            ),
            (
                "edit the operator guard",
                By::Rbac,
                patch(
                    format!(
                        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/{}",
                        chart.guard
                    ),
                    json!({"spec": {"failurePolicy": "Ignore"}}),
                ),
            ),
            (
                "delete the operator guard's binding",
                By::Rbac,
                delete(format!(
                    "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/{}",
                    chart.guard
                )),
            ),
            (
                "a Pod",
                By::Rbac,
                post(
                    core(&sel, "pods"),
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mallory"},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
                ),
            ),
            (
                "impersonate kube-system's default ServiceAccount",
                By::Rbac,
                Request {
                    header: Some((
                        "Impersonate-User",
                        "system:serviceaccount:kube-system:default".into(),
                    )),
                    ..get("/api/v1/namespaces")
                },
            ),
        ]
    };
    let mut exchange_attempts: Vec<(&str, By, Request)> = vec![
        (
            "token for a grant ServiceAccount where no grant lives",
            By::Rbac,
            post(
                core(&unsel, &format!("serviceaccounts/{GRANT}/token")),
                token_request(None),
            ),
        ),
        (
            "token for the controller's own ServiceAccount",
            By::Rbac,
            post(
                core(
                    &opns,
                    &format!(
                        "serviceaccounts/{}/token",
                        chart.controller_user.rsplit(':').next().unwrap()
                    ),
                ),
                token_request(None),
            ),
        ),
        (
            "token for the namespace's default ServiceAccount",
            By::Guard,
            post(
                core(&sel, "serviceaccounts/default/token"),
                token_request(Some(bound_secret())),
            ),
        ),
        (
            "token for the namespace's applier",
            By::Guard,
            post(
                core(&sel, "serviceaccounts/oam-trust-applier/token"),
                token_request(Some(bound_secret())),
            ),
        ),
        (
            "grant token bound to nothing (unrevocable)",
            By::Guard,
            post(
                core(&sel, &format!("serviceaccounts/{GRANT}/token")),
                token_request(None),
            ),
        ),
        (
            "grant token bound to a Pod",
            By::Guard,
            post(
                core(&sel, &format!("serviceaccounts/{GRANT}/token")),
                token_request(Some(
                    json!({"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u"}),
                )),
            ),
        ),
        (
            "grant token bound to a tenant's ConfigMap",
            By::Guard,
            post(
                core(&sel, &format!("serviceaccounts/{GRANT}/token")),
                token_request(Some(
                    json!({"apiVersion": "v1", "kind": "Secret", "name": "tenant-owned", "uid": uid(&tenant_cm)}),
                )),
            ),
        ),
        (
            "list Secrets in a grant namespace",
            By::Rbac,
            get(core(&sel, "secrets")),
        ),
        (
            "watch kube-system's Secrets",
            By::Rbac,
            get(format!("{}?watch=true", core("kube-system", "secrets"))),
        ),
        (
            "an Opaque Secret",
            By::Guard,
            post(
                core(&sel, "secrets"),
                secret(&other_secret("1"), "Opaque", owners.clone(), None),
            ),
        ),
        (
            "a binding Secret owned by nothing",
            By::Guard,
            post(
                core(&sel, "secrets"),
                secret(
                    &other_secret("2"),
                    "oam-trust.dev/token-binding",
                    json!([]),
                    None,
                ),
            ),
        ),
        (
            "a binding Secret owned by a tenant's ConfigMap",
            By::Guard,
            post(
                core(&sel, "secrets"),
                secret(
                    &other_secret("3"),
                    "oam-trust.dev/token-binding",
                    owner("ConfigMap", "v1", "tenant-owned", &uid(&tenant_cm)),
                    None,
                ),
            ),
        ),
        (
            "a binding Secret carrying data",
            By::Guard,
            post(
                core(&sel, "secrets"),
                secret(
                    &other_secret("4"),
                    "oam-trust.dev/token-binding",
                    owners.clone(),
                    Some(json!({"token": "c3RvbGVu"})),
                ),
            ),
        ),
        (
            "a Secret in kube-system",
            By::Rbac,
            post(
                core("kube-system", "secrets"),
                secret(
                    &other_secret("5"),
                    "oam-trust.dev/token-binding",
                    owners.clone(),
                    None,
                ),
            ),
        ),
        (
            "a Secret where no grant lives",
            By::Rbac,
            post(
                core(&unsel, "secrets"),
                secret(
                    &other_secret("6"),
                    "oam-trust.dev/token-binding",
                    owners.clone(),
                    None,
                ),
            ),
        ),
        (
            "delete a binding Secret",
            By::Rbac,
            delete(core(&sel, &format!("secrets/{SECRET}"))),
        ),
        (
            "patch a binding Secret's owner reference away",
            By::Rbac,
            patch(
                core(&sel, &format!("secrets/{SECRET}")),
                json!({"metadata": {"ownerReferences": null}}),
            ),
        ),
        (
            "patch a TokenIssuance",
            By::Rbac,
            patch(
                format!("/apis/oam-trust.dev/v1alpha1/tokenissuances/lp-{sel}"),
                json!({"metadata": {"labels": {"x": "y"}}}),
            ),
        ),
        (
            "a ServiceAccount",
            By::Rbac,
            post(
                core(&sel, "serviceaccounts"),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "mallory"}}),
            ),
        ),
        (
            "a Role",
            By::Rbac,
            post(
                rbac(&sel, "roles"),
                role("mallory", json!({}), within.clone()),
            ),
        ),
        (
            "a RoleBinding",
            By::Rbac,
            post(
                rbac(&sel, "rolebindings"),
                role_binding(
                    "mallory",
                    json!({}),
                    cluster_role("edit"),
                    sa_subject(&sel, "default"),
                ),
            ),
        ),
        (
            "a ClusterRoleBinding to cluster-admin",
            By::Rbac,
            post(
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "lp-mallory"},
                "roleRef": cluster_role("cluster-admin"), "subjects": sa_subject(&opns, "default")}),
            ),
        ),
        (
            "patch a Deployment in a grant namespace",
            By::Rbac,
            patch(
                format!("/apis/apps/v1/namespaces/{sel}/deployments/web"),
                json!({"spec": {"replicas": 0}}),
            ),
        ),
        (
            "a ConfigMap in the operator's namespace",
            By::Rbac,
            post(
                core(&opns, "configmaps"),
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mallory"}}),
            ),
        ),
        (
            "take the controllers' Lease",
            By::Rbac,
            post(
                format!("/apis/coordination.k8s.io/v1/namespaces/{opns}/leases"),
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "mallory"}}),
            ),
        ),
        (
            "patch a GitLabTrust",
            By::Rbac,
            patch(
                "/apis/oam-trust.dev/v1alpha1/gitlabtrusts/any",
                json!({"spec": {"allow": []}}),
            ),
        ),
        (
            "delete a namespace",
            By::Rbac,
            delete(format!("/api/v1/namespaces/{unsel}")),
        ),
    ];

    let mut controller_attempts: Vec<(&str, By, Request)> = vec![
        (
            "an ApplicationRevision owned by nothing",
            By::Guard,
            post(&revisions, revision("shop-v2", "shop", json!([]))),
        ),
        (
            "an ApplicationRevision not named after its Application",
            By::Guard,
            post(&revisions, revision("shop-x", "shop", shop_owner.clone())),
        ),
        (
            "an ApplicationRevision owned by a tenant's ConfigMap",
            By::Guard,
            post(
                &revisions,
                revision(
                    "shop-v3",
                    "shop",
                    owner("ConfigMap", "v1", "tenant-owned", &uid(&tenant_cm)),
                ),
            ),
        ),
        (
            "edit an ApplicationRevision",
            By::Rbac,
            patch(
                format!("{revisions}/shop-v1"),
                json!({"spec": {"revision": 9}}),
            ),
        ),
        (
            "token for a grant ServiceAccount",
            By::Rbac,
            post(
                core(&sel, &format!("serviceaccounts/{GRANT}/token")),
                token_request(Some(bound_secret())),
            ),
        ),
        (
            "a Secret",
            By::Rbac,
            post(
                core(&sel, "secrets"),
                secret(
                    &other_secret("7"),
                    "oam-trust.dev/token-binding",
                    owners.clone(),
                    None,
                ),
            ),
        ),
        (
            "a ClusterRoleBinding",
            By::Rbac,
            post(
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "lp-mallory"},
                "roleRef": cluster_role(&chart.ceiling), "subjects": sa_subject(&opns, "default")}),
            ),
        ),
        (
            "bind itself cluster-admin in a grant namespace",
            By::Escalation,
            post(
                rbac(&sel, "rolebindings"),
                role_binding(
                    "oam-trust-ceiling-mallory",
                    json!({"oam-trust.dev/namespace-rights": "ceiling"}),
                    cluster_role("cluster-admin"),
                    sa_subject(&opns, chart.controller_user.rsplit(':').next().unwrap()),
                ),
            ),
        ),
        (
            "bind a tenant `edit`",
            By::Escalation,
            post(
                rbac(&sel, "rolebindings"),
                role_binding(
                    GRANT,
                    grant_labels(),
                    cluster_role("edit"),
                    sa_subject(&sel, GRANT),
                ),
            ),
        ),
        (
            "a Role beyond the ceiling (the code's own check bypassed)",
            By::Escalation,
            post(
                rbac(&sel, "roles"),
                role(
                    "oam-shop-steal-0123456789abcdef0123",
                    grant_labels(),
                    beyond.clone(),
                ),
            ),
        ),
        (
            "a grant Role where it holds no ceiling",
            By::Escalation,
            post(
                rbac(&unsel, "roles"),
                role(GRANT, grant_labels(), within.clone()),
            ),
        ),
        (
            "bind itself the ceiling in kube-system",
            By::Guard,
            post(
                rbac("kube-system", "rolebindings"),
                oam_trust::access::objects::typed(
                    &rights.bindings("kube-system", &BTreeSet::from([chart.ceiling.clone()]))[0],
                ),
            ),
        ),
        (
            "bind a tenant's ServiceAccount the ceiling",
            By::Guard,
            post(
                rbac(&sel, "rolebindings"),
                role_binding(
                    "oam-trust-ceiling-tenant",
                    json!({"oam-trust.dev/namespace-rights": "ceiling"}),
                    cluster_role(&chart.ceiling),
                    sa_subject(&sel, "default"),
                ),
            ),
        ),
        (
            "bind itself the exchange's namespace role",
            By::Guard,
            post(
                rbac(&sel, "rolebindings"),
                role_binding(
                    "oam-trust-exchange",
                    json!({"oam-trust.dev/namespace-rights": "exchange"}),
                    cluster_role(&chart.exchange_role),
                    sa_subject(&opns, chart.controller_user.rsplit(':').next().unwrap()),
                ),
            ),
        ),
        (
            "bind a grant's Role to a user outside GitLab",
            By::Guard,
            patch(
                rbac(&sel, &format!("rolebindings/{GRANT}")),
                json!({"subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}]}),
            ),
        ),
        (
            "bind the ceiling ClusterRole as a grant",
            By::Guard,
            post(
                rbac(&sel, "rolebindings"),
                role_binding(
                    "oam-shop-wide-0123456789abcdef0123",
                    grant_labels(),
                    cluster_role(&chart.ceiling),
                    sa_subject(&sel, "oam-shop-wide-0123456789abcdef0123"),
                ),
            ),
        ),
        (
            "a Role within the ceiling that is no grant",
            By::Guard,
            post(
                rbac(&sel, "roles"),
                role("mallory", json!({}), within.clone()),
            ),
        ),
        (
            "a ServiceAccount that is no grant",
            By::Guard,
            post(
                core(&sel, "serviceaccounts"),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "mallory"}}),
            ),
        ),
        (
            "delete the namespace's default ServiceAccount",
            By::Guard,
            delete(core(&sel, "serviceaccounts/default")),
        ),
        (
            "a ServiceAccount in kube-system",
            By::Guard,
            post(
                core("kube-system", "serviceaccounts"),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": GRANT, "labels": grant_labels()}}),
            ),
        ),
        (
            "a grant ServiceAccount in the operator's namespace",
            By::Guard,
            post(
                core(&opns, "serviceaccounts"),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": GRANT, "labels": grant_labels()}}),
            ),
        ),
        (
            "overwrite a tenant's ConfigMap",
            By::Guard,
            patch(
                core(&sel, "configmaps/tenant-owned"),
                json!({"data": {"x": "y"}}),
            ),
        ),
        (
            "a ConfigMap in the operator's namespace",
            By::Guard,
            post(
                core(&opns, "configmaps"),
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "oam-trust.deploy-guard.x", "labels": {"oam-trust.dev/deploy-guard": "true"}}}),
            ),
        ),
        (
            // It holds the ceiling here (that is what lets it write grant Roles), so RBAC allows
            // this; the guard refuses its own writes of workloads: those go through the applier.
            "patch a Deployment in a grant namespace",
            By::Guard,
            patch(
                format!("/apis/apps/v1/namespaces/{sel}/deployments/web"),
                json!({"spec": {"replicas": 0}}),
            ),
        ),
        (
            "a TokenIssuance",
            By::Rbac,
            post(
                "/apis/oam-trust.dev/v1alpha1/tokenissuances",
                issuance("lp-forged", &sel),
            ),
        ),
        (
            "widen the ceiling ClusterRole",
            By::Rbac,
            patch(
                format!(
                    "/apis/rbac.authorization.k8s.io/v1/clusterroles/{}",
                    chart.ceiling
                ),
                json!({"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
            ),
        ),
        (
            "delete a CRD",
            By::Rbac,
            delete(
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gitlabtrusts.oam-trust.dev",
            ),
        ),
    ];

    exchange_attempts.extend(refused_to_both());
    controller_attempts.extend(refused_to_both());

    let mut table = vec![
        "| identity | attempt | refused by |".to_string(),
        "|---|---|---|".to_string(),
    ];
    let mut failures = Vec::new();
    for (who, client, attempts) in [
        ("exchange", &chart.exchange, &exchange_attempts),
        ("controller", &chart.controller, &controller_attempts),
    ] {
        assert!(
            attempts.len() >= 25,
            "{who}: {} attempts, at least 25 are due",
            attempts.len()
        );
        for (what, by, request) in attempts {
            match send(client, request).await {
                Err(kube::Error::Api(s)) if s.code == 403 && by.matches(&s.message) => {
                    table.push(format!("| {who} | {what} | {} |", by.name()));
                }
                Err(kube::Error::Api(s)) => failures.push(format!(
                    "{who}: {what}: expected a refusal by {}, got {} {}",
                    by.name(),
                    s.code,
                    s.message
                )),
                Err(e) => failures.push(format!("{who}: {what}: {e}")),
                Ok(_) => failures.push(format!("{who}: {what}: ALLOWED")),
            }
        }
    }
    println!("{}", table.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
