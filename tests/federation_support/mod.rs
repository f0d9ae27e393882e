//! A token-exchange world for one test: a dev issuer over HTTPS, a GitLabTrust for it, an application
//! namespace with an Application declaring gitlab-access, the operator (which creates the grants'
//! ServiceAccounts, Roles and RoleBindings) and an exchange service over TLS on 127.0.0.1, with audit
//! records captured in memory and its audit log in `<tls_dir>/audit.jsonl`.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use oam_trust::api::issuance::TokenIssuance;
use oam_trust::api::oam::Application;
use oam_trust::api::trust::GitLabTrust;
use oam_trust::dev_issuer::{DevIssuer, DevIssuerOptions};
use oam_trust::federation::client::{ExchangeCallError, ExchangeClient, ExchangeErrorBody};
use oam_trust::federation::{
    ExchangeArgs, ExchangeOptions, ExchangeResponse, ExchangeServer, MemoryAuditSink,
};
use oam_trust::oidc::{KeyCacheConfig, KeyCaches};
use oam_trust::runtime::metrics::Metrics;
use serde_json::{Value, json};

use crate::support;

pub const AUD: &str = "https://oam-trust.test/exchange";

pub struct World {
    pub admin: Client,
    pub ns: String,
    pub trust: String,
    pub issuer: DevIssuer,
    pub sink: Arc<MemoryAuditSink>,
    pub server: ExchangeServer,
    pub client: ExchangeClient,
    pub tls_dir: tempfile::TempDir,
    pub exchange_ca: String,
}

/// Makes a test's Application from the trust's and the namespace's names.
pub type MakeApplication = fn(&str, &str) -> Value;

/// What the test's Application declares.
pub struct Declarations {
    /// TTL of the deploy policy.
    pub deploy_ttl: &'static str,
    /// Another Application instead of `shop`: made from the trust's and the namespace's names, with
    /// how many grants it declares.
    pub application: Option<(MakeApplication, usize)>,
}

impl Default for Declarations {
    fn default() -> Self {
        Declarations {
            deploy_ttl: "10m",
            application: None,
        }
    }
}

fn self_signed(dir: &std::path::Path) -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("self-signed certificate");
    std::fs::write(dir.join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
    cert.cert.pem()
}

/// The audit log every exchange of a world appends to.
pub fn audit_log_path(tls_dir: &std::path::Path) -> std::path::PathBuf {
    tls_dir.join("audit.jsonl")
}

/// Starts an exchange service over TLS with its own key caches and audit sink; its audit log is
/// [`audit_log_path`].
pub async fn start_exchange(
    admin: &Client,
    tls_dir: &std::path::Path,
    sink: Arc<MemoryAuditSink>,
) -> ExchangeServer {
    start_exchange_with(admin, tls_dir, sink, None).await
}

/// As `start_exchange`, requiring `required_guards` instead of the shipped guard policies.
pub async fn start_exchange_with(
    admin: &Client,
    tls_dir: &std::path::Path,
    sink: Arc<MemoryAuditSink>,
    required_guards: Option<Vec<String>>,
) -> ExchangeServer {
    let args = ExchangeArgs {
        exchange_listen: "127.0.0.1:0".parse().unwrap(),
        exchange_tls_cert: Some(tls_dir.join("tls.crt")),
        exchange_tls_key: Some(tls_dir.join("tls.key")),
        exchange_reap_interval_seconds: 1,
        audit_log: Some(audit_log_path(tls_dir)),
        ..ExchangeArgs::default()
    };
    let caches = Arc::new(KeyCaches::with_config(KeyCacheConfig {
        refetch_interval: Duration::from_millis(200),
        ..KeyCacheConfig::default()
    }));
    ExchangeServer::start(
        admin.clone(),
        &support::admin_config().await,
        args,
        &Metrics::default(),
        caches,
        ExchangeOptions {
            audit_sink: Some(sink),
            instance: Some("exchange-test".into()),
            reap_gate: None,
            definitions_namespace: oam_trust::names::DEFAULT_DEFINITIONS_NAMESPACE.into(),
            required_guards,
        },
    )
    .await
    .expect("exchange starts")
}

/// Waits until the exchange has read the cluster (its /healthz turns 200).
pub async fn wait_ready(server: &ExchangeServer, ca: &str) {
    let client = oam_trust::oidc::https::HttpsClient::new(Some(ca), Duration::from_secs(5), 1024)
        .expect("https client");
    let url = format!("{}/healthz", server.url());
    let ready = support::eventually(Duration::from_secs(30), || {
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(&url).await.is_ok() }
    })
    .await;
    assert!(ready, "the exchange did not become ready within 30s");
}

/// The whole world; `prefix` names the namespace.
pub async fn world(prefix: &str, decl: Declarations) -> World {
    support::operator().await;
    let admin = support::admin().await;
    // Deploy grants are bounded by the deploy guard: the tests rely on it, whatever ran before.
    support::install_deploy_guard(&admin).await;
    let ns = support::app_namespace(&admin, prefix, "admin").await;
    let issuer = DevIssuer::start(DevIssuerOptions {
        audience: AUD.into(),
        ..DevIssuerOptions::default()
    })
    .await
    .expect("dev issuer starts");
    let trust = issuer_trust(&admin, &ns, &issuer).await;
    let (app, grants) = match decl.application {
        Some((make, grants)) => (make(&trust, &ns), grants),
        None => (shop(&trust, &ns, decl.deploy_ttl), 3),
    };
    let app: Application = serde_json::from_value(app).unwrap();
    Api::<Application>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &app)
        .await
        .unwrap();
    wait_for_grants(&admin, &ns, grants).await;

    let tls_dir = tempfile::tempdir().unwrap();
    let exchange_ca = self_signed(tls_dir.path());
    let sink = Arc::new(MemoryAuditSink::default());
    let server = start_exchange(&admin, tls_dir.path(), sink.clone()).await;
    wait_ready(&server, &exchange_ca).await;
    let client = ExchangeClient::new(&server.url(), Some(&exchange_ca)).unwrap();
    World {
        admin,
        ns,
        trust,
        issuer,
        sink,
        server,
        client,
        tls_dir,
        exchange_ca,
    }
}

/// The GitLabTrust `<ns>-trust` for `issuer`'s tokens, selecting namespace `ns` (labelled here) alone,
/// with group 72 allowed, protected refs required and ceiling `<ns>-ceiling` (read and patch the
/// Application, read its workloads). Returns the trust's name.
pub async fn issuer_trust(admin: &Client, ns: &str, issuer: &DevIssuer) -> String {
    let trust = format!("{ns}-trust");
    let ceiling = format!("{ns}-ceiling");
    let select_label = "oam-trust.dev/exchange-test";

    // The namespace opts in with a label the trust selects.
    Api::<Namespace>::all(admin.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {select_label: ns}}})),
        )
        .await
        .unwrap();
    let cr: ClusterRole = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": ceiling},
        "rules": [
            {"apiGroups": ["core.oam.dev"], "resources": ["applications"], "verbs": ["get", "list", "watch", "patch", "update"]},
            {"apiGroups": ["core.oam.dev"], "resources": ["applications/status"], "verbs": ["get", "patch"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": ["get", "list", "watch"]}
        ]
    }))
    .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .patch(
            &ceiling,
            &PatchParams::apply("exchange-tests").force(),
            &Patch::Apply(&cr),
        )
        .await
        .unwrap();
    let gt: GitLabTrust = serde_json::from_value(json!({
        "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust",
        "metadata": {"name": trust},
        "spec": {
            "issuer": issuer.url(),
            "audiences": [AUD],
            "jwks": {"caBundle": issuer.ca_pem()},
            "namespaceSelector": {"matchLabels": {select_label: ns}},
            "allow": [{"namespaceId": "72"}],
            "require": {"refProtected": true, "maxTokenAge": "2h"},
            "tokens": {"defaultTTL": "10m", "maxTTL": "1h"},
            "ceiling": {"clusterRoleRef": ceiling}
        }
    }))
    .unwrap();
    Api::<GitLabTrust>::all(admin.clone())
        .create(&PostParams::default(), &gt)
        .await
        .unwrap();
    trust
}

/// The usual Application: `shop`, a deploy policy for project 1450 on protected `main` in the
/// protected environment `production`, and two read grants.
fn shop(trust: &str, ns: &str, deploy_ttl: &str) -> Value {
    json!({
        "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
        "metadata": {"name": "shop", "namespace": ns},
        "spec": {
            "components": [
                {"name": "web", "type": "webservice", "properties": {"image": "nginx:1.27", "port": 80},
                 "traits": [{"type": "gitlab-access", "properties": {
                     "trust": trust, "subjects": [{"projectId": "1451"}], "access": "read"}}]},
                {"name": "api", "type": "webservice", "properties": {"image": "nginx:1.27", "port": 8080}}
            ],
            "policies": [
                {"name": "deploy", "type": "gitlab-access", "properties": {
                    "trust": trust,
                    "subjects": [{"projectId": "1450", "ref": "main", "environment": "production", "environmentProtected": true}],
                    "access": "deploy", "ttl": deploy_ttl}},
                {"name": "readers", "type": "gitlab-access", "properties": {
                    "trust": trust, "subjects": [{"projectId": "1451"}], "access": "read"}}
            ]
        }
    })
}

/// Waits until the operator has created `n` grant ServiceAccounts and RoleBindings in `ns`.
pub async fn wait_for_grants(admin: &Client, ns: &str, n: usize) {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let rbs: Api<RoleBinding> = Api::namespaced(admin.clone(), ns);
    let lp = ListParams::default().labels(oam_trust::names::LABEL_GRANT);
    let done = support::eventually(Duration::from_secs(60), || {
        let (sas, rbs, lp) = (sas.clone(), rbs.clone(), lp.clone());
        async move {
            let a = sas.list(&lp).await.map(|l| l.items.len()).unwrap_or(0);
            let b = rbs.list(&lp).await.map(|l| l.items.len()).unwrap_or(0);
            a >= n && b >= n
        }
    })
    .await;
    assert!(
        done,
        "the operator did not create {n} grant ServiceAccounts/RoleBindings in {ns} within 60s"
    );
}

impl World {
    pub async fn exchange(
        &self,
        token: &str,
        resource: Option<&str>,
    ) -> Result<ExchangeResponse, ExchangeCallError> {
        self.client.exchange(token, resource, None).await
    }

    /// The TokenIssuance records of grants in the test namespace (records are cluster-scoped).
    pub async fn issuances(&self) -> Vec<TokenIssuance> {
        Api::<TokenIssuance>::all(self.admin.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|r| r.spec.namespace == self.ns)
            .collect()
    }

    /// The audit log's lines so far, parsed.
    pub fn audit_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(audit_log_path(self.tls_dir.path()))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every audit line is JSON"))
            .collect()
    }

    /// Binding Secrets in the test namespace.
    pub async fn binding_secrets(&self) -> Vec<Secret> {
        Api::<Secret>::namespaced(self.admin.clone(), &self.ns)
            .list(
                &ListParams::default().labels(&format!("{}=true", oam_trust::names::LABEL_BINDING)),
            )
            .await
            .unwrap()
            .items
    }
}

/// The RFC 6749 error of a refused exchange; panics on success or transport errors.
pub fn refusal(result: Result<ExchangeResponse, ExchangeCallError>) -> ExchangeErrorBody {
    match result {
        Err(ExchangeCallError::Refused { body, .. }) => body,
        Ok(r) => panic!("expected a refusal, got a token for {:?}", r.grant),
        Err(e) => panic!("expected a refusal, got {e}"),
    }
}

/// The `jti` of a compact JWT (unverified).
pub fn jti(token: &str) -> Option<String> {
    let claims = oam_trust::oidc::peek(token).ok()?.claims;
    claims.get("jti")?.as_str().map(str::to_string)
}
