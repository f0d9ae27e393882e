//! Foundation: the project's CRDs on the real API server, and the harness's identity helpers
//! (TokenRequest, bearer-token clients, impersonation, access reviews) proven against real RBAC.
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use oam_trust::api::trust::{GitLabTrust, GitLabTrustSpec};
use serde_json::json;
use support::Access;

/// Changes a valid spec into an invalid one.
type Mutation = Box<dyn Fn(&mut serde_json::Value)>;

fn trust(name: &str, spec: serde_json::Value) -> GitLabTrust {
    serde_json::from_value(json!({
        "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("test trust deserializes")
}

fn valid_spec() -> serde_json::Value {
    json!({
        "issuer": "https://gitlab.example.com",
        "audiences": ["https://oam-trust.example.com"],
        "namespaceSelector": {"matchLabels": {"oam-trust.dev/gitlab": "enabled"}},
        "allow": [{"namespaceId": "72"}, {"projectPath": "platform/*"}],
        "require": {"refProtected": true, "maxTokenAge": "1h"},
        "tokens": {"defaultTTL": "15m", "maxTTL": "1h"},
        "ceiling": {"clusterRoleRef": "oam-trust-ceiling"},
        "federation": {"tokenExchange": true, "gitlabAgent": false, "apiServer": false}
    })
}

async fn create_trust(client: &Client, t: &GitLabTrust) -> Result<GitLabTrust, kube::Error> {
    Api::<GitLabTrust>::all(client.clone())
        .create(&PostParams::default(), t)
        .await
}

/// The message of a 422 from the API server, or a panic if the request did not fail that way.
fn rejection(result: Result<GitLabTrust, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "expected 422 Invalid, got {s:?}");
            s.message
        }
        other => panic!("expected the API server to reject the GitLabTrust, got {other:?}"),
    }
}

#[tokio::test]
async fn every_crd_is_established() {
    let client = support::admin().await;
    support::install_crds(&client).await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for crd in oam_trust::api::all_crds() {
        let live = crds
            .get(crd.metadata.name.as_deref().unwrap())
            .await
            .unwrap();
        let established = live
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(
            established,
            "{} not Established",
            crd.metadata.name.unwrap()
        );
    }
}

#[tokio::test]
async fn valid_gitlab_trust_round_trips() {
    let client = support::admin().await;
    support::install_crds(&client).await;
    let name = format!("roundtrip-{}", std::process::id());
    let sent = trust(&name, valid_spec());
    let created = create_trust(&client, &sent)
        .await
        .expect("a valid GitLabTrust is accepted");
    assert_eq!(
        created.spec, sent.spec,
        "the API server kept every field as sent"
    );
    let read: GitLabTrust = Api::<GitLabTrust>::all(client.clone())
        .get(&name)
        .await
        .unwrap();
    assert_eq!(read.spec, sent.spec);
    assert_eq!(read.spec.allow.len(), 2);
    assert_eq!(
        read.spec.tokens.as_ref().unwrap().max_ttl.as_deref(),
        Some("1h")
    );
    Api::<GitLabTrust>::all(client)
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn invalid_gitlab_trusts_are_rejected_with_the_rule_message() {
    let client = support::admin().await;
    support::install_crds(&client).await;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "http-issuer",
            Box::new(|s| s["issuer"] = json!("http://gitlab.example.com")),
            "issuer must be an https:// URL",
        ),
        (
            "slash-issuer",
            Box::new(|s| s["issuer"] = json!("https://gitlab.example.com/")),
            "issuer must not end with '/'",
        ),
        (
            "no-audience",
            Box::new(|s| s["audiences"] = json!([])),
            "audiences must name at least one audience",
        ),
        (
            "ttl-order",
            Box::new(|s| s["tokens"] = json!({"defaultTTL": "2h", "maxTTL": "1h"})),
            "tokens.defaultTTL must not exceed tokens.maxTTL",
        ),
        (
            "bad-duration",
            Box::new(|s| s["tokens"] = json!({"defaultTTL": "15 minutes"})),
            "spec.tokens.defaultTTL",
        ),
        (
            "empty-allow",
            Box::new(|s| s["allow"] = json!([{}])),
            "each allow entry must name",
        ),
        (
            "path-as-id",
            Box::new(|s| s["allow"] = json!([{"projectId": "group/project"}])),
            "projectId must be the numeric id",
        ),
        (
            "jwks-both",
            Box::new(|s| s["jwks"] = json!({"uri": "https://x/jwks", "static": "{}"})),
            "jwks: set either uri or static",
        ),
    ];
    for (name, mutate, expected) in cases {
        let mut spec = valid_spec();
        mutate(&mut spec);
        let message =
            rejection(create_trust(&client, &trust(&format!("invalid-{name}"), spec)).await);
        assert!(
            message.contains(expected),
            "{name}: expected {expected:?} in the API server's message, got: {message}"
        );
    }
}

#[test]
fn spec_deserializes_from_the_design_example() {
    let spec: GitLabTrustSpec = serde_json::from_value(valid_spec()).unwrap();
    assert_eq!(spec.issuer, "https://gitlab.example.com");
    assert!(spec.federation().token_exchange);
}

#[tokio::test]
async fn token_request_authenticates_is_bounded_by_rbac_and_dies_with_its_service_account() {
    let admin = support::admin().await;
    let ns = support::namespace(&admin, "foundation").await;
    let token = support::service_account_token(&admin, &ns, "robot", 600).await;
    let robot = support::client_with_token(&token).await;

    let (user, groups) = support::whoami(&robot)
        .await
        .expect("SelfSubjectReview with the token");
    assert_eq!(user, format!("system:serviceaccount:{ns}:robot"));
    assert!(
        groups.contains(&format!("system:serviceaccounts:{ns}")),
        "groups: {groups:?}"
    );

    // No RoleBinding: the review says no, and a real request is refused with 403.
    let read_cm = Access {
        verb: "list",
        group: "",
        resource: "configmaps",
        namespace: Some(&ns),
        name: None,
    };
    assert!(!support::can_i(&robot, read_cm).await);
    let err = Api::<ConfigMap>::namespaced(robot.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "expected 403, got {err:?}"
    );

    // After the ServiceAccount is deleted, the token no longer authenticates (allow for the ~10 s cache).
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .delete("robot", &DeleteParams::default())
        .await
        .unwrap();
    let revoked =
        support::eventually(Duration::from_secs(30), || {
            let robot = robot.clone();
            async move {
                matches!(support::whoami(&robot).await, Err(kube::Error::Api(s)) if s.code == 401)
            }
        })
        .await;
    assert!(
        revoked,
        "the token still authenticated 30s after its ServiceAccount was deleted"
    );
}

#[tokio::test]
async fn rbac_grants_what_a_role_binding_says_and_impersonation_carries_groups() {
    let admin = support::admin().await;
    let ns = support::namespace(&admin, "rbac").await;
    let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(json!({
        "metadata": {"name": "cm-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    }))
    .unwrap();
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "cm-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "gitlab:project:1450"}]
    }))
    .unwrap();
    Api::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    Api::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let agent =
        support::impersonating("gitlab:ci_job:1", &["gitlab:ci_job", "gitlab:project:1450"]).await;
    let (user, groups) = support::whoami(&agent).await.unwrap();
    assert_eq!(user, "gitlab:ci_job:1");
    assert!(
        groups.contains(&"gitlab:project:1450".to_string()),
        "groups: {groups:?}"
    );
    let list = Access {
        verb: "list",
        group: "",
        resource: "configmaps",
        namespace: Some(&ns),
        name: None,
    };
    assert!(support::can_i(&agent, list).await);
    let write = Access {
        verb: "create",
        group: "",
        resource: "configmaps",
        namespace: Some(&ns),
        name: None,
    };
    assert!(!support::can_i(&agent, write).await);
    Api::<ConfigMap>::namespaced(agent.clone(), &ns)
        .list(&Default::default())
        .await
        .expect("the binding allows list");

    let other = support::impersonating("gitlab:ci_job:2", &["gitlab:project:9999"]).await;
    let list = Access {
        verb: "list",
        group: "",
        resource: "configmaps",
        namespace: Some(&ns),
        name: None,
    };
    assert!(!support::can_i(&other, list).await);
}
