//! Load harness (not a criterion benchmark): the full token exchange on the local control plane
//! (HTTPS request, verification, matching, TokenIssuance record, binding Secret, TokenRequest, answer)
//! beside a bare TokenRequest on the same API server, then sustained exchanges per second with 50
//! concurrent clients.
//!
//!   hack/load-exchange                        # = cargo bench --bench exchange_load
//!   OAM_TRUST_LOAD_SECONDS=30 OAM_TRUST_LOAD_CLIENTS=50 cargo bench --bench exchange_load
//!   OAM_TRUST_LOAD_ID_TOKEN_SECONDS=3600 hack/load-exchange   # ID tokens outlive the 10m grant:
//!                                                             # a second (binding) record per exchange
//!
//! Uses the cluster of `OAM_TRUST_TEST_KUBECONFIG` (or `.cluster/kubeconfig`). The grant's
//! ServiceAccount, Role and RoleBinding are applied from `derive_grants` (what the operator applies), so
//! no operator runs; the exchange runs in this process with a TLS listener on 127.0.0.1.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use oam_trust::access::{GrantInput, derive_grants};
use oam_trust::api::oam::Application;
use oam_trust::api::trust::GitLabTrust;
use oam_trust::dev_issuer::{DevIssuer, DevIssuerOptions, MintRequest};
use oam_trust::federation::client::ExchangeClient;
use oam_trust::federation::{ExchangeArgs, ExchangeOptions, ExchangeServer};
use oam_trust::oidc::KeyCaches;
use oam_trust::render::{Definitions, render_application};
use oam_trust::runtime::metrics::Metrics;
use serde_json::json;

const AUD: &str = "https://oam-trust.load";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<28} n={:<5} p50={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
}

async fn config() -> Config {
    let path = std::env::var("OAM_TRUST_TEST_KUBECONFIG")
        .unwrap_or_else(|_| format!("{}/.cluster/kubeconfig", env!("CARGO_MANIFEST_DIR")));
    let kc =
        Kubeconfig::read_from(&path).expect("reading the kubeconfig (start hack/cluster.sh up)");
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap()
}

async fn apply<K>(api: &Api<K>, obj: &K)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        &obj.name_any(),
        &PatchParams::apply("oam-trust-load").force(),
        &Patch::Apply(obj),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {}: {e}", obj.name_any()));
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let seconds = env_or("OAM_TRUST_LOAD_SECONDS", 20);
    let clients = env_or("OAM_TRUST_LOAD_CLIENTS", 50) as usize;
    let samples = env_or("OAM_TRUST_LOAD_SAMPLES", 200) as usize;
    let config = config().await;
    let client = Client::try_from(config.clone()).unwrap();

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in oam_trust::api::all_crds() {
        apply(&crds, &crd).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let suffix = std::process::id();
    let ns = format!("exchange-load-{suffix}");
    let ns_obj: Namespace = serde_json::from_value(
        json!({"metadata": {"name": ns, "labels": {"oam-trust.dev/load": ns}}}),
    )
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns_obj)
        .await
        .unwrap();
    let issuer = DevIssuer::start(DevIssuerOptions {
        audience: AUD.into(),
        // GitLab's default ID-token lifetime (no job timeout) is 5 minutes.
        lifetime: Duration::from_secs(env_or("OAM_TRUST_LOAD_ID_TOKEN_SECONDS", 300)),
        ..DevIssuerOptions::default()
    })
    .await
    .unwrap();
    let ceiling: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": format!("{ns}-ceiling")},
        "rules": [{"apiGroups": ["core.oam.dev"], "resources": ["applications"], "verbs": ["get", "list", "watch", "patch", "update"]},
                  {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
                  {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]}]
    }))
    .unwrap();
    apply(&Api::all(client.clone()), &ceiling).await;
    let trust: GitLabTrust = serde_json::from_value(json!({
        "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust", "metadata": {"name": format!("{ns}-trust")},
        "spec": {"issuer": issuer.url(), "audiences": [AUD], "jwks": {"caBundle": issuer.ca_pem()},
                 "namespaceSelector": {"matchLabels": {"oam-trust.dev/load": ns}},
                 "allow": [{"namespaceId": "72"}], "tokens": {"defaultTTL": "10m", "maxTTL": "1h"},
                 "ceiling": {"clusterRoleRef": format!("{ns}-ceiling")}}
    }))
    .unwrap();
    let trust = Api::<GitLabTrust>::all(client.clone())
        .create(&PostParams::default(), &trust)
        .await
        .unwrap();
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
        "metadata": {"name": "shop", "namespace": ns},
        "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx"}}],
                 "policies": [{"name": "deploy", "type": "gitlab-access", "properties": {"trust": trust.name_any(),
                    "subjects": [{"projectId": "1450", "ref": "main"}], "access": "deploy", "ttl": "10m"}}]}
    }))
    .unwrap();
    let app = Api::<Application>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &app)
        .await
        .unwrap();
    // The grant's RBAC, exactly as derive_grants makes it.
    let rendered = render_application(&app, &Definitions::default()).unwrap();
    let set = derive_grants(&GrantInput {
        application: &app,
        namespace_labels: Some(&BTreeMap::from([(
            "oam-trust.dev/load".to_string(),
            ns.clone(),
        )])),
        trusts: &BTreeMap::from([(trust.name_any(), trust.clone())]),
        ceilings: &BTreeMap::from([(ceiling.name_any(), ceiling.clone())]),
        rendered: &rendered,
    });
    let grant = set.grants.first().expect("the deploy grant").clone();
    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), &ns),
        &grant.service_account,
    )
    .await;
    apply(&Api::<Role>::namespaced(client.clone(), &ns), &grant.role).await;
    apply(
        &Api::<RoleBinding>::namespaced(client.clone(), &ns),
        &grant.role_binding,
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
    let server = ExchangeServer::start(
        client.clone(),
        &config,
        ExchangeArgs {
            exchange_listen: "127.0.0.1:0".parse().unwrap(),
            exchange_tls_cert: Some(dir.path().join("tls.crt")),
            exchange_tls_key: Some(dir.path().join("tls.key")),
            exchange_max_concurrent_per_source: clients.max(64),
            audit_log: Some(dir.path().join("audit.jsonl")),
            ..ExchangeArgs::default()
        },
        &Metrics::default(),
        Arc::new(KeyCaches::default()),
        ExchangeOptions {
            // The harness installs no admission policies; the guard check it skips is one lookup
            // in a store per exchange.
            required_guards: Some(Vec::new()),
            definitions_namespace: oam_trust::names::DEFAULT_DEFINITIONS_NAMESPACE.into(),
            ..ExchangeOptions::default()
        },
    )
    .await
    .unwrap();
    let exchange = ExchangeClient::new(&server.url(), Some(&cert.cert.pem())).unwrap();
    // Wait until the exchange has read the cluster and issues.
    let mut warm = None;
    for _ in 0..120 {
        let token = issuer.mint(&MintRequest::new()).unwrap();
        match exchange.exchange(&token, None, None).await {
            Ok(a) => {
                warm = Some(a);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    warm.expect("the exchange issues a token");

    println!(
        "exchange load on {} ({} samples, ID tokens live {}s, grant TTL 10m)",
        config.cluster_url,
        samples,
        env_or("OAM_TRUST_LOAD_ID_TOKEN_SECONDS", 300)
    );
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let sa_name = grant.service_account.name_any();
    let mut bare = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        sas.create_token_request(&sa_name, &PostParams::default(), &tr)
            .await
            .unwrap();
        bare.push(t.elapsed());
    }
    report("bare TokenRequest", bare);
    let tokens: Vec<String> = (0..samples)
        .map(|_| issuer.mint(&MintRequest::new()).unwrap())
        .collect();
    let mut full = Vec::with_capacity(samples);
    for token in &tokens {
        let t = Instant::now();
        exchange.exchange(token, None, None).await.unwrap();
        full.push(t.elapsed());
    }
    report("full exchange (sequential)", full);

    // Sustained: `clients` concurrent clients for `seconds`, each exchanging fresh ID tokens.
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let issuer = Arc::new(issuer);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (exchange, issuer, ok, errors) =
            (exchange.clone(), issuer.clone(), ok.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let token = issuer.mint(&MintRequest::new()).unwrap();
                let t = Instant::now();
                match exchange.exchange(&token, None, None).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        latencies.push(t.elapsed());
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("exchange error: {e}");
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let ok = ok.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    report(&format!("exchange under {clients} clients"), latencies);
    println!(
        "sustained: {:.1} exchanges/s with {clients} concurrent clients over {:.1}s, {ok} issued, {errors} errors",
        ok as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );

    drop(server);
    // Records are cluster-scoped: the namespace's deletion does not take them.
    let records = Api::<oam_trust::api::issuance::TokenIssuance>::all(client.clone());
    if let Ok(list) = records.list(&Default::default()).await {
        for r in list.items.iter().filter(|r| r.spec.namespace == ns) {
            let _ = records
                .delete(&r.name_any(), &DeleteParams::default())
                .await;
        }
    }
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await;
    let _ = Api::<GitLabTrust>::all(client.clone())
        .delete(&trust.name_any(), &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(client)
        .delete(&ceiling.name_any(), &DeleteParams::default())
        .await;
    assert_eq!(errors, 0, "the load run had errors");
}
