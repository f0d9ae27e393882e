//! The third transport, on the real kube-apiserver: a GitLabTrust with `federation.apiServer: true`
//! becomes a `jwt` authenticator in the file `hack/cluster.sh` gives kube-apiserver as
//! `--authentication-config`, kept current by the controller (`--authn-config-out`). A dev-issuer ID
//! token is then used directly as a bearer token: no operator in the data path.
//!
//! Measured here (printed): how long the API server takes to apply a changed file.
mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use oam_trust::access::{GitLabClaims, MatchOutcome, match_token};
use oam_trust::api::trust::GitLabTrust;
use oam_trust::dev_issuer::{DevIssuer, DevIssuerOptions, MintRequest};
use oam_trust::runtime::metrics::Metrics;
use serde_json::{Value, json};

const AUD: &str = "https://oam-trust.test/apiserver";

/// The file kube-apiserver reads (`hack/cluster.sh`): beside the kubeconfig.
async fn authn_file() -> PathBuf {
    let kubeconfig = support::kubeconfig_path().await;
    kubeconfig.parent().unwrap().join("authn-config.yaml")
}

/// An operator of this test only, keeping the authentication config current.
async fn start_operator(out: PathBuf) -> tokio::task::JoinHandle<()> {
    let mut args = support::own_operator_args("authn");
    args.authn.authn_config_out = Some(out);
    support::start_own_operator(args, Arc::new(Metrics::default())).await
}

/// `(username, groups)` the API server authenticates `token` as, or the HTTP status it refuses with.
async fn who(token: &str) -> Result<(String, Vec<String>), u16> {
    let client = support::client_with_token(token).await;
    match support::whoami(&client).await {
        Ok(found) => Ok(found),
        Err(kube::Error::Api(s)) => Err(s.code),
        Err(e) => panic!("asking who the token is: {e}"),
    }
}

async fn can(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    ns: &str,
    name: Option<&str>,
) -> bool {
    support::can_i(
        client,
        support::Access {
            verb,
            group,
            resource,
            namespace: Some(ns),
            name,
        },
    )
    .await
}

struct Scene {
    admin: Client,
    ns: String,
    trust: String,
    issuer: DevIssuer,
    file: PathBuf,
}

impl Scene {
    fn mint(&self, req: MintRequest) -> String {
        self.issuer.mint(&req.audience(AUD)).unwrap()
    }

    fn group(&self, grant_name: &str) -> String {
        format!(
            "{}{}:{grant_name}",
            oam_trust::names::GRANT_GROUP_PREFIX,
            self.ns
        )
    }

    async fn grant_names(&self) -> Vec<(String, String)> {
        let app = Api::<oam_trust::api::oam::Application>::namespaced(self.admin.clone(), &self.ns)
            .get("shop")
            .await
            .unwrap();
        let world = self.world().await;
        world
            .derive(&app)
            .unwrap()
            .grants
            .grants
            .into_iter()
            .map(|g| (g.id, g.name))
            .collect()
    }

    async fn world(&self) -> oam_trust::access::World {
        let trust = Api::<GitLabTrust>::all(self.admin.clone())
            .get(&self.trust)
            .await
            .unwrap();
        let ns = Api::<Namespace>::all(self.admin.clone())
            .get(&self.ns)
            .await
            .unwrap();
        let ceiling = Api::<ClusterRole>::all(self.admin.clone())
            .get(&format!("{}-ceiling", self.ns))
            .await
            .unwrap();
        oam_trust::access::World {
            trusts: [(self.trust.clone(), trust)].into(),
            ceilings: [(format!("{}-ceiling", self.ns), ceiling)].into(),
            namespaces: [(self.ns.clone(), Arc::new(ns))].into(),
            ..Default::default()
        }
    }

    /// Waits until the API server authenticates a fresh token of `req` as `pred` says; returns how long.
    async fn until(
        &self,
        what: &str,
        req: impl Fn() -> MintRequest,
        pred: impl Fn(&Result<(String, Vec<String>), u16>) -> bool,
    ) -> Duration {
        let started = Instant::now();
        let mut last = Err(0);
        while started.elapsed() < Duration::from_secs(150) {
            last = who(&self.mint(req())).await;
            if pred(&last) {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!(
            "{what}: not within 150 s; last answer {last:?}; file:\n{}",
            std::fs::read_to_string(&self.file).unwrap_or_default()
        );
    }
}

async fn scene() -> Scene {
    let admin = support::admin().await;
    support::install_crds(&admin).await;
    // kube-apiserver applies a new file only when every issuer in it answers: a trust left by an
    // earlier run of this test (its dev issuer gone) would block every later update.
    let trusts = Api::<GitLabTrust>::all(admin.clone());
    for t in trusts.list(&Default::default()).await.unwrap().items {
        let name = kube::ResourceExt::name_any(&t);
        if name.starts_with("authn-") {
            let _ = trusts.delete(&name, &Default::default()).await;
        }
    }
    support::install_deploy_guard(&admin).await;
    let ns = support::app_namespace(&admin, "authn", "admin").await;
    let issuer = DevIssuer::start(DevIssuerOptions {
        audience: AUD.into(),
        ..DevIssuerOptions::default()
    })
    .await
    .expect("dev issuer starts");
    let label = "oam-trust.dev/authn-test";
    Api::<Namespace>::all(admin.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {label: ns}}})),
        )
        .await
        .unwrap();
    let ceiling = format!("{ns}-ceiling");
    let pp = PatchParams::apply("authn-tests").force();
    Api::<ClusterRole>::all(admin.clone())
        .patch(&ceiling, &pp, &Patch::Apply(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": ceiling},
            "rules": [
                {"apiGroups": ["core.oam.dev"], "resources": ["applications"], "verbs": ["get", "list", "watch", "patch", "update"]},
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]}
            ]})))
        .await
        .unwrap();
    let trust = format!("{ns}-trust");
    Api::<GitLabTrust>::all(admin.clone())
        .patch(&trust, &pp, &Patch::Apply(json!({
            "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust", "metadata": {"name": trust},
            "spec": {"issuer": issuer.url(), "audiences": [AUD], "jwks": {"caBundle": issuer.ca_pem()},
                     "namespaceSelector": {"matchLabels": {label: ns}},
                     "allow": [{"namespaceId": "72"}],
                     "require": {"refProtected": true, "maxTokenAge": "2h"},
                     "ceiling": {"clusterRoleRef": ceiling},
                     "federation": {"apiServer": true}}})))
        .await
        .unwrap();
    support::apply_app(&admin, &ns, json!({
        "apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "shop"},
        "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx:1"}}],
                 "policies": [
                    {"name": "deploy", "type": "gitlab-access", "properties": {"trust": trust,
                        "subjects": [{"projectId": "1450", "ref": "main", "environment": "production", "environmentProtected": true}],
                        "access": "deploy"}},
                    {"name": "readers", "type": "gitlab-access", "properties": {"trust": trust,
                        "subjects": [{"projectPath": "platform/*-api"}], "access": "read"}},
                    // More subject shapes, so the differential below covers each field the API
                    // server's CEL must carry.
                    {"name": "tags", "type": "gitlab-access", "properties": {"trust": trust,
                        "subjects": [{"namespacePath": "plat*", "refType": "tag", "ref": "v*"}], "access": "read"}},
                    {"name": "pushers", "type": "gitlab-access", "properties": {"trust": trust,
                        "subjects": [{"projectId": "1452", "pipelineSource": ["push", "web"], "userLogin": "alice"},
                                     {"projectId": "1453", "deploymentTier": "staging"}], "access": "read"}},
                    {"name": "deep", "type": "gitlab-access", "properties": {"trust": trust,
                        "subjects": [{"projectPath": "platform/**/a-?pi", "refProtected": true}], "access": "read"}},
                    {"name": "maintainers", "type": "gitlab-access", "properties": {"trust": trust,
                        "subjects": [{"projectId": "1450", "condition": "claims.user_access_level in ['maintainer', 'owner']"}],
                        "access": "read"}}]}}))
        .await;
    Scene {
        admin,
        ns,
        trust,
        issuer,
        file: authn_file().await,
    }
}

#[tokio::test]
async fn an_id_token_is_a_bearer_token_for_exactly_its_grant() {
    let s = scene().await;
    let started = Instant::now();
    let operator = start_operator(s.file.clone()).await;
    support::wait_app(&s.admin, &s.ns, "shop", "access granted", |a| {
        a.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "AccessReady" && c.status == "True")
        })
    })
    .await;
    let grants = s.grant_names().await;
    let deploy = grants
        .iter()
        .find(|(id, _)| id == "policy/deploy")
        .unwrap()
        .1
        .clone();
    let readers = grants
        .iter()
        .find(|(id, _)| id == "policy/readers")
        .unwrap()
        .1
        .clone();

    // The file gains the trust's authenticator; the API server picks it up on its own.
    s.until("the deploy job authenticated", MintRequest::new, |r| {
        r.as_ref()
            .is_ok_and(|(_, groups)| groups.contains(&s.group(&deploy)))
    })
    .await;
    let took = started.elapsed();
    println!(
        "authentication config applied by kube-apiserver {:.1} s after the operator started",
        took.as_secs_f64()
    );
    let token = s.mint(MintRequest::new());
    let (user, groups) = who(&token).await.unwrap();
    assert!(user.starts_with("gitlab:ci_job:"), "{user}");
    assert!(
        groups.contains(&s.group(&deploy)) && groups.contains(&s.group(&readers)),
        "{groups:?}"
    );
    let job = support::client_with_token(&token).await;
    assert!(
        can(
            &job,
            "patch",
            "core.oam.dev",
            "applications",
            &s.ns,
            Some("shop")
        )
        .await,
        "deploy: patch its Application"
    );
    assert!(
        !can(&job, "get", "", "secrets", &s.ns, None).await,
        "never Secrets"
    );
    assert!(
        !can(&job, "get", "core.oam.dev", "applications", "default", None).await,
        "not another namespace"
    );

    // Another project of the group: only the reader grant (by path pattern).
    let reader = s.mint(
        MintRequest::new()
            .claim("project_id", "1451")
            .claim("job_project_id", "1451")
            .claim("project_path", "platform/orders-api")
            .claim("job_project_path", "platform/orders-api"),
    );
    let (_, groups) = who(&reader).await.unwrap();
    assert_eq!(
        groups
            .iter()
            .filter(|g| g.starts_with(oam_trust::names::GRANT_GROUP_PREFIX))
            .collect::<Vec<_>>(),
        [&s.group(&readers)]
    );
    let reader = support::client_with_token(&reader).await;
    assert!(
        can(
            &reader,
            "get",
            "core.oam.dev",
            "applications",
            &s.ns,
            Some("shop")
        )
        .await
    );
    assert!(
        !can(
            &reader,
            "patch",
            "core.oam.dev",
            "applications",
            &s.ns,
            Some("shop")
        )
        .await
    );

    // What the trust refuses, the API server refuses: 401, no identity at all.
    for (what, req) in [
        (
            "unprotected ref",
            MintRequest::new().claim("ref_protected", "false"),
        ),
        (
            "another GitLab group",
            MintRequest::new()
                .claim("namespace_id", "666")
                .claim("job_namespace_id", "666"),
        ),
        (
            "fork pipeline",
            MintRequest::new().claim("job_project_id", "9999"),
        ),
        (
            "wrong audience",
            MintRequest::new().audience("https://elsewhere.test"),
        ),
    ] {
        let token = s
            .issuer
            .mint(&if what == "wrong audience" {
                req
            } else {
                req.audience(AUD)
            })
            .unwrap();
        assert_eq!(who(&token).await, Err(401), "{what}");
    }

    the_api_server_and_the_matcher_agree_on_every_claim_set(&s).await;

    // Removing the deploy declaration: the group stops being issued once the API server reloads.
    support::apply_app(&s.admin, &s.ns, json!({
        "apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "shop"},
        "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx:1"}}],
                 "policies": [{"name": "readers", "type": "gitlab-access", "properties": {"trust": s.trust,
                        "subjects": [{"projectPath": "platform/*-api"}], "access": "read"}}]}}))
        .await;
    let removed = Instant::now();
    s.until("the deploy group gone", MintRequest::new, |r| {
        r.as_ref()
            .is_ok_and(|(_, g)| !g.contains(&s.group(&deploy)))
    })
    .await;
    println!(
        "a removed declaration stopped authenticating after {:.1} s",
        removed.elapsed().as_secs_f64()
    );

    // Switching the trust's flag off removes the authenticator: 401.
    Api::<GitLabTrust>::all(s.admin.clone())
        .patch(
            &s.trust,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"federation": {"apiServer": false}}})),
        )
        .await
        .unwrap();
    let off = Instant::now();
    s.until("the authenticator removed", MintRequest::new, |r| {
        *r == Err(401)
    })
    .await;
    println!(
        "a trust switched off stopped authenticating after {:.1} s",
        off.elapsed().as_secs_f64()
    );
    operator.abort();
}

/// Claim sets judged by the matcher (the exchange's decision) and by the API server with the file
/// the operator wrote: the grants a token gets must be the same. (One test binary, one file: this
/// runs inside the test above, while its authenticator is loaded.)
async fn the_api_server_and_the_matcher_agree_on_every_claim_set(s: &Scene) {
    let grants = s.world().await;
    let app = Api::<oam_trust::api::oam::Application>::namespaced(s.admin.clone(), &s.ns)
        .get("shop")
        .await
        .unwrap();
    let derived = grants.derive(&app).unwrap().grants;

    let trust = grants.trusts.get(&s.trust).unwrap();
    let variants: Vec<Vec<(&str, Value)>> = {
        let mut v = Vec::new();
        for project in [
            ("1450", "platform/payments-api"),
            ("1451", "platform/orders-api"),
            ("1452", "platform/web"),
            ("1453", "platform/x-api-y"),
        ] {
            for (r, protected) in [("main", "true"), ("main", "false"), ("release", "true")] {
                for env in ["production", "staging"] {
                    for env_protected in ["true", "false"] {
                        v.push(vec![
                            ("project_id", json!(project.0)),
                            ("job_project_id", json!(project.0)),
                            ("project_path", json!(project.1)),
                            ("job_project_path", json!(project.1)),
                            ("ref", json!(r)),
                            ("ref_protected", json!(protected)),
                            ("environment", json!(env)),
                            ("environment_protected", json!(env_protected)),
                        ]);
                    }
                }
            }
        }
        v.push(vec![("ref_type", json!("tag"))]);
        v.push(vec![("environment_protected", json!("false"))]);
        v.push(vec![
            ("namespace_id", json!("73")),
            ("job_namespace_id", json!("73")),
        ]);
        v.push(vec![("job_project_id", json!("1"))]);
        v.push(vec![
            ("pipeline_source", json!("merge_request_event")),
            ("job_project_id", Value::Null),
        ]);
        v.push(vec![("environment", Value::Null)]);
        v.push(vec![
            ("project_path", json!("platform/payments-api-x")),
            ("job_project_path", json!("platform/payments-api-x")),
            ("project_id", json!("1460")),
            ("job_project_id", json!("1460")),
        ]);
        v.push(vec![
            ("project_path", json!("other/payments-api")),
            ("job_project_path", json!("other/payments-api")),
            ("project_id", json!("1461")),
            ("job_project_id", json!("1461")),
        ]);
        v.push(vec![
            ("project_path", json!("platform/sub/a-api")),
            ("job_project_path", json!("platform/sub/a-api")),
            ("project_id", json!("1462")),
            ("job_project_id", json!("1462")),
        ]);
        v.push(vec![("ref", json!("mainline"))]);
        v.push(vec![("deployment_tier", json!("staging"))]);
        v.push(vec![("user_login", json!("mallory"))]);
        for (r, t) in [
            ("v1.2", "tag"),
            ("v1.2", "branch"),
            ("main", "tag"),
            ("x-v1", "tag"),
        ] {
            v.push(vec![("ref", json!(r)), ("ref_type", json!(t))]);
        }
        for (project, source, user, tier) in [
            ("1452", "push", "alice", "production"),
            ("1452", "web", "alice", "production"),
            ("1452", "schedule", "alice", "production"),
            ("1452", "push", "bob", "production"),
            ("1453", "push", "bob", "staging"),
            ("1453", "push", "bob", "production"),
        ] {
            v.push(vec![
                ("project_id", json!(project)),
                ("job_project_id", json!(project)),
                ("pipeline_source", json!(source)),
                ("user_login", json!(user)),
                ("deployment_tier", json!(tier)),
            ]);
        }
        for path in [
            "platform/sub/a-api",
            "platform/a/b/a-xpi",
            "platform/a-api",
            "platform/sub/a-apix",
        ] {
            v.push(vec![
                ("project_path", json!(path)),
                ("job_project_path", json!(path)),
                ("project_id", json!("1470")),
                ("job_project_id", json!("1470")),
            ]);
        }
        for level in ["developer", "owner", "maintainer"] {
            v.push(vec![("user_access_level", json!(level))]);
        }
        v.push(vec![("user_access_level", Value::Null)]);
        v
    };
    assert!(variants.len() >= 50, "{} claim sets", variants.len());
    let mut disagreements = Vec::new();
    for (i, variant) in variants.iter().enumerate() {
        let mut req = MintRequest::new();
        for (k, v) in variant {
            req = req.claim_json(k, v.clone());
        }
        let token = s.mint(req);
        let claims =
            GitLabClaims::from_json(oam_trust::oidc::peek(&token).unwrap().claims.into()).ok();
        // The matcher, grant by grant (ambiguity is the exchange's business, not a group's).
        let expected: Option<Vec<String>> = match &claims {
            None => None,
            Some(claims) => {
                let mut matched = Vec::new();
                let mut refused = false;
                for g in &derived.grants {
                    let one = oam_trust::access::GrantSet {
                        grants: vec![g.clone()],
                        ..Default::default()
                    };
                    match match_token(claims, trust, &one, None) {
                        MatchOutcome::Matched { grant, .. } => matched.push(s.group(&grant.name)),
                        MatchOutcome::TokenRefused(_) => refused = true,
                        _ => {}
                    }
                }
                matched.sort();
                (!refused).then_some(matched)
            }
        };
        let answer = who(&token).await;
        let got: Option<Vec<String>> = match answer {
            Ok((_, groups)) => {
                let mut ours: Vec<String> = groups
                    .into_iter()
                    .filter(|g| g.starts_with(oam_trust::names::GRANT_GROUP_PREFIX))
                    .collect();
                ours.sort();
                Some(ours)
            }
            Err(401) => None,
            Err(code) => panic!("claim set {i}: unexpected {code}"),
        };
        if got != expected {
            disagreements.push(format!(
                "claim set {i} {variant:?}: matcher {expected:?}, API server {got:?}"
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    println!(
        "matcher and API server agree on {} claim sets",
        variants.len()
    );
}
