//! Load harness (not a criterion benchmark): the full token exchange on the local control plane
//! (HTTPS request, verification, matching, TokenIssuance record, binding Secret, TokenRequest, answer)
//! beside the same API calls made bare, then sustained exchanges per second with 50 concurrent
//! clients, beside the bare calls under the same concurrency. With `OAM_TRUST_LOAD_MODE=soak`
//! (`hack/soak.sh`) it soaks the real operator instead.
//!
//!   hack/load-exchange                        # = cargo bench --bench exchange_load
//!   OAM_TRUST_LOAD_SECONDS=30 OAM_TRUST_LOAD_CLIENTS=50 cargo bench --bench exchange_load
//!   OAM_TRUST_LOAD_ID_TOKEN_SECONDS=3600 hack/load-exchange   # ID tokens outlive the 10m grant:
//!                                                             # a second (binding) record per exchange
//!   hack/soak.sh [SECONDS] [CLIENTS]          # = OAM_TRUST_LOAD_MODE=soak ... (default 600 s, 50)
//!
//! Uses the cluster of `OAM_TRUST_TEST_KUBECONFIG` (or `.cluster/kubeconfig`).
//!
//! Load mode: the grant's ServiceAccount, Role and RoleBinding are applied from `derive_grants` (what
//! the operator applies), so no operator runs; the exchange runs in this process with a TLS listener
//! on 127.0.0.1. "Bare" is what one exchange asks of the API server, made directly with the same
//! client, one call after the other: create the TokenIssuance record, create the binding Secret it
//! owns, create the TokenRequest bound to that Secret (the objects built by the same functions as the
//! exchange's), and create the `TokenIssued` Event in the background as the exchange does. The sequential
//! samples alternate one bare exchange's calls and one exchange, so both see the same machine. The
//! sustained run's ID tokens are signed before it starts (`OAM_TRUST_LOAD_PREMINT`, default 200 a
//! second of the run; 0 signs each on the spot, as the first version of this harness did): RSA signing
//! is GitLab's work, and on a 2-core machine it took CPU from the API server under test.
//!
//! Soak mode: runs `oam-trust run` (the operator binary, exchange on TLS, leader election, every
//! controller) as a child process, lets the clients exchange for `OAM_TRUST_SOAK_WARMUP_SECONDS`
//! (30), then for `OAM_TRUST_LOAD_SECONDS`, printing every `OAM_TRUST_SOAK_SAMPLE_SECONDS` (60) the
//! child's resident memory (VmRSS) and CPU time and how many TokenIssuance records exist; then waits
//! until the records drain (revoked at their TTL, the reaper as the backstop).
use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::Reporter;
use kube::{Api, Client, Config, Resource, ResourceExt};
use oam_trust::access::{Grant, GrantInput, derive_grants};
use oam_trust::api::issuance::TokenIssuance;
use oam_trust::api::oam::Application;
use oam_trust::api::trust::GitLabTrust;
use oam_trust::dev_issuer::{DevIssuer, DevIssuerOptions, MintRequest};
use oam_trust::federation::AuditRecord;
use oam_trust::federation::binding::{self, BindingRecord};
use oam_trust::federation::client::ExchangeClient;
use oam_trust::federation::{ExchangeArgs, ExchangeOptions, ExchangeServer};
use oam_trust::oidc::KeyCaches;
use oam_trust::render::{Definitions, render_application};
use oam_trust::runtime::metrics::Metrics;
use serde_json::json;

#[path = "support/process.rs"]
mod process;
use process::free_port;

const AUD: &str = "https://oam-trust.load";
const SELECT: &str = "oam-trust.dev/load";

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

/// Prints one latency line; returns p50.
fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    if samples.is_empty() {
        println!("{name:<34} n=0");
        return Duration::ZERO;
    }
    samples.sort();
    let p50 = percentile(&samples, 0.50);
    println!(
        "{name:<34} n={:<6} p50={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
    p50
}

fn kubeconfig_path() -> String {
    std::env::var("OAM_TRUST_TEST_KUBECONFIG")
        .unwrap_or_else(|_| format!("{}/.cluster/kubeconfig", env!("CARGO_MANIFEST_DIR")))
}

async fn config() -> Config {
    let kc = Kubeconfig::read_from(kubeconfig_path())
        .expect("reading the kubeconfig (start hack/cluster.sh up)");
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

/// What both modes set up: a namespace the trust selects (with the applier an operator needs), the dev
/// issuer, its GitLabTrust and ceiling, and Application `shop` with one grant for project 1450.
struct World {
    client: Client,
    config: Config,
    ns: String,
    issuer: Arc<DevIssuer>,
    trust: GitLabTrust,
    ceiling: ClusterRole,
    app: Application,
}

async fn world(access: &str) -> World {
    let config = config().await;
    let client = Client::try_from(config.clone()).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in oam_trust::api::all_crds() {
        apply(&crds, &crd).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let ns = format!("exchange-load-{}", std::process::id());
    let ns_obj: Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns, "labels": {SELECT: ns}}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns_obj)
        .await
        .unwrap();
    // The applier an operator applies the Application's objects as (soak mode runs one).
    let applier: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "oam-trust-applier"}})).unwrap();
    apply(&Api::namespaced(client.clone(), &ns), &applier).await;
    let applier_binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "oam-trust-applier"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "oam-trust-applier", "namespace": ns}]
    }))
    .unwrap();
    apply(&Api::namespaced(client.clone(), &ns), &applier_binding).await;
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
                 "namespaceSelector": {"matchLabels": {SELECT: ns}},
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
                 "policies": [{"name": access, "type": "gitlab-access", "properties": {"trust": trust.name_any(),
                    "subjects": [{"projectId": "1450", "ref": "main"}], "access": access, "ttl": "10m"}}]}
    }))
    .unwrap();
    let app = Api::<Application>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &app)
        .await
        .unwrap();
    World {
        client,
        config,
        ns,
        issuer: Arc::new(issuer),
        trust,
        ceiling,
        app,
    }
}

impl World {
    /// The Application's grant, exactly as `derive_grants` makes it.
    fn grant(&self) -> Grant {
        let rendered = render_application(&self.app, &Definitions::default()).unwrap();
        let set = derive_grants(&GrantInput {
            application: &self.app,
            namespace_labels: Some(&BTreeMap::from([(SELECT.to_string(), self.ns.clone())])),
            trusts: &BTreeMap::from([(self.trust.name_any(), self.trust.clone())]),
            ceilings: &BTreeMap::from([(self.ceiling.name_any(), self.ceiling.clone())]),
            rendered: &rendered,
        });
        set.grants.first().expect("the grant").clone()
    }

    /// How many TokenIssuance records exist (cluster-wide: the control plane is this harness's).
    async fn records(&self) -> u64 {
        let api = Api::<TokenIssuance>::all(self.client.clone());
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(list) => {
                list.items.len() as u64
                    + list.metadata.remaining_item_count.unwrap_or(0).max(0) as u64
            }
            Err(_) => u64::MAX,
        }
    }

    async fn cleanup(&self) {
        // Records are cluster-scoped: the namespace's deletion does not take them.
        let records = Api::<TokenIssuance>::all(self.client.clone());
        if let Ok(list) = records.list(&Default::default()).await {
            for r in list.items.iter().filter(|r| r.spec.namespace == self.ns) {
                let _ = records
                    .delete(&r.name_any(), &DeleteParams::default())
                    .await;
            }
        }
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await;
        let _ = Api::<GitLabTrust>::all(self.client.clone())
            .delete(&self.trust.name_any(), &DeleteParams::default())
            .await;
        let _ = Api::<ClusterRole>::all(self.client.clone())
            .delete(&self.ceiling.name_any(), &DeleteParams::default())
            .await;
    }
}

/// Exchanges until the exchange at `url` issues (it reads the cluster first, an operator creates the
/// grant's ServiceAccount first); panics after `within`.
async fn first_token(exchange: &ExchangeClient, issuer: &DevIssuer, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let token = issuer.mint(&MintRequest::new()).unwrap();
        match exchange.exchange(&token, None, None).await {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => panic!("the exchange issues no token: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Counters shared by the clients of a sustained run.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    errors: AtomicU64,
}

/// Fresh ID tokens signed ahead, so the load generator's RSA signing (GitLab's work, on GitLab's
/// machines) does not take the CPU of the machine under test during the measurement.
type Pool = Arc<std::sync::Mutex<Vec<String>>>;

/// Signs `n` ID tokens on two threads.
async fn premint(issuer: &Arc<DevIssuer>, n: usize) -> Pool {
    let halves = [n / 2, n - n / 2].map(|k| {
        let issuer = issuer.clone();
        tokio::task::spawn_blocking(move || {
            (0..k)
                .map(|_| issuer.mint(&MintRequest::new()).unwrap())
                .collect::<Vec<_>>()
        })
    });
    let mut tokens = Vec::with_capacity(n);
    for half in halves {
        tokens.extend(half.await.unwrap());
    }
    Arc::new(std::sync::Mutex::new(tokens))
}

/// `clients` concurrent clients, each exchanging a fresh ID token after the other until `stop`
/// (from `pool` while it lasts, else signed on the spot); returns every successful exchange's latency.
async fn exchange_clients(
    exchange: &ExchangeClient,
    issuer: &Arc<DevIssuer>,
    pool: Option<Pool>,
    clients: usize,
    tally: &Arc<Tally>,
    stop: &Arc<AtomicBool>,
) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (exchange, issuer, tally, stop, pool) = (
            exchange.clone(),
            issuer.clone(),
            tally.clone(),
            stop.clone(),
            pool.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let pooled = pool.as_ref().and_then(|p| p.lock().unwrap().pop());
                let token = match pooled {
                    Some(t) => t,
                    None => issuer.mint(&MintRequest::new()).unwrap(),
                };
                let t = Instant::now();
                match exchange.exchange(&token, None, None).await {
                    Ok(_) => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        latencies.push(t.elapsed());
                    }
                    Err(e) => {
                        if tally.errors.fetch_add(1, Ordering::Relaxed) < 5 {
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
    latencies
}

/// Stops `stop` after `d`.
fn stop_after(d: Duration, stop: &Arc<AtomicBool>) {
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(d).await;
        stop.store(true, Ordering::Relaxed);
    });
}

/// The API calls of one exchange, made directly: record, Secret, TokenRequest, then the `TokenIssued`
/// Event created in the background (as `TokenEvents` publishes it).
struct Bare {
    client: Client,
    grant: Grant,
    app: Application,
    issuer: String,
    trust: String,
    reporter: Reporter,
    serial: AtomicU64,
}

impl Bare {
    async fn once(&self) {
        let jti = format!(
            "bare-{}-{}",
            std::process::id(),
            self.serial.fetch_add(1, Ordering::Relaxed)
        );
        let now = SystemTime::now();
        let life = Duration::from_secs(300);
        let record = BindingRecord {
            issuer: &self.issuer,
            jti: &jti,
            trust: &self.trust,
            grant: &self.grant,
            application: Some(&self.app),
            project_id: "1450",
            project_path: "acme/shop",
            pipeline_id: "1000",
            job_id: "2000",
            user: "jane",
            ref_: "main",
            environment: "",
            issued_at: now,
            expires_at: now + life,
            id_token_expires_at: now + life,
            correlation_id: "0123456789abcdef01234567",
        };
        let pp = PostParams::default();
        let guard = Api::<TokenIssuance>::all(self.client.clone())
            .create(&pp, &binding::guard_record(&record))
            .await
            .expect("creating the record");
        let secret = Api::<Secret>::namespaced(self.client.clone(), &self.grant.namespace)
            .create(&pp, &binding::binding_secret(&record, &guard))
            .await
            .expect("creating the Secret");
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(binding::request_seconds(life)),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Secret".into()),
                    name: secret.metadata.name.clone(),
                    uid: secret.metadata.uid.clone(),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let sa = self.grant.service_account.name_any();
        let token = Api::<ServiceAccount>::namespaced(self.client.clone(), &self.grant.namespace)
            .create_token_request(&sa, &pp, &request)
            .await
            .expect("the TokenRequest");
        assert!(token.status.is_some_and(|s| !s.token.is_empty()));
        let audit = AuditRecord {
            correlation_id: format!("{:024x}", self.serial.fetch_add(1, Ordering::Relaxed)),
            namespace: self.grant.namespace.clone(),
            issuance: guard.name_any(),
            ..Default::default()
        };
        let event = oam_trust::federation::events::issued_event(
            &self.reporter,
            self.app.object_ref(&()),
            &audit,
            format!("issued a 300s token for ServiceAccount {sa} to job {jti}"),
        );
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.grant.namespace);
        tokio::spawn(async move {
            let _ = events.create(&PostParams::default(), &event).await;
        });
    }
}

/// `clients` concurrent loops of [`Bare::once`] until `stop`; returns their latencies.
async fn bare_clients(bare: &Arc<Bare>, clients: usize, stop: &Arc<AtomicBool>) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (bare, stop) = (bare.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                bare.once().await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    latencies
}

/// A self-signed TLS pair for 127.0.0.1 in `dir`: (cert PEM, cert path, key path).
fn tls_pair(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    (cert.cert.pem(), crt, key)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    match std::env::var("OAM_TRUST_LOAD_MODE").as_deref() {
        Ok("soak") => soak().await,
        Ok("load") | Err(_) => load().await,
        Ok(other) => panic!("OAM_TRUST_LOAD_MODE={other}: use load or soak"),
    }
}

async fn load() {
    let seconds = env_or("OAM_TRUST_LOAD_SECONDS", 20);
    let clients = env_or("OAM_TRUST_LOAD_CLIENTS", 50) as usize;
    let samples = env_or("OAM_TRUST_LOAD_SAMPLES", 200) as usize;
    let w = world("deploy").await;
    let client = w.client.clone();
    let grant = w.grant();
    let ns = &w.ns;
    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), ns),
        &grant.service_account,
    )
    .await;
    apply(&Api::<Role>::namespaced(client.clone(), ns), &grant.role).await;
    apply(
        &Api::<RoleBinding>::namespaced(client.clone(), ns),
        &grant.role_binding,
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, crt, key) = tls_pair(dir.path());
    let server = ExchangeServer::start(
        client.clone(),
        &w.config,
        ExchangeArgs {
            exchange_listen: "127.0.0.1:0".parse().unwrap(),
            exchange_tls_cert: Some(crt),
            exchange_tls_key: Some(key),
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
    let exchange = ExchangeClient::new(&server.url(), Some(&cert_pem)).unwrap();
    first_token(&exchange, &w.issuer, Duration::from_secs(30)).await;

    println!(
        "exchange load on {} ({} samples, ID tokens live {}s, grant TTL 10m)",
        w.config.cluster_url,
        samples,
        env_or("OAM_TRUST_LOAD_ID_TOKEN_SECONDS", 300)
    );
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let sa_name = grant.service_account.name_any();
    let mut one = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        sas.create_token_request(&sa_name, &PostParams::default(), &tr)
            .await
            .unwrap();
        one.push(t.elapsed());
    }
    report("one bare TokenRequest", one);
    let bare = Arc::new(Bare {
        client: client.clone(),
        grant: grant.clone(),
        app: w.app.clone(),
        issuer: w.issuer.url().to_string(),
        trust: w.trust.name_any(),
        reporter: Reporter {
            controller: "oam-trust-load-bare".into(),
            instance: None,
        },
        serial: AtomicU64::new(0),
    });
    // Interleaved, so both see the same machine: a bare exchange's calls, then an exchange.
    let tokens: Vec<String> = (0..samples)
        .map(|_| w.issuer.mint(&MintRequest::new()).unwrap())
        .collect();
    let (mut bare_seq, mut full) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for token in &tokens {
        let t = Instant::now();
        bare.once().await;
        bare_seq.push(t.elapsed());
        let t = Instant::now();
        exchange.exchange(token, None, None).await.unwrap();
        full.push(t.elapsed());
    }
    let bare_p50 = report("bare: the exchange's API calls", bare_seq);
    let full_p50 = report("full exchange (sequential)", full);
    println!(
        "full exchange p50 / bare p50 = {:.2}",
        full_p50.as_secs_f64() / bare_p50.as_secs_f64()
    );

    // Sustained: `clients` concurrent clients for `seconds`, each exchanging fresh ID tokens.
    let premints = env_or("OAM_TRUST_LOAD_PREMINT", seconds * 200) as usize;
    let pool = premint(&w.issuer, premints).await;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    stop_after(Duration::from_secs(seconds), &stop);
    let latencies = exchange_clients(
        &exchange,
        &w.issuer,
        Some(pool.clone()),
        clients,
        &tally,
        &stop,
    )
    .await;
    let left = pool.lock().unwrap().len();
    println!(
        "ID tokens: {premints} signed before the run, {} signed during it (OAM_TRUST_LOAD_PREMINT=0: all during it)",
        (tally.ok.load(Ordering::Relaxed) + tally.errors.load(Ordering::Relaxed))
            .saturating_sub((premints - left) as u64)
    );
    let elapsed = started.elapsed();
    let ok = tally.ok.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    report(&format!("exchange under {clients} clients"), latencies);
    println!(
        "sustained: {:.1} exchanges/s with {clients} concurrent clients over {:.1}s, {ok} issued, {errors} errors",
        ok as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    drop(server);

    // The same concurrency on the bare calls: what the API server allows at most.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    stop_after(Duration::from_secs(seconds), &stop);
    let latencies = bare_clients(&bare, clients, &stop).await;
    let elapsed = started.elapsed();
    let n = latencies.len();
    report(&format!("bare calls under {clients} clients"), latencies);
    println!(
        "bare: {:.1} exchanges' API calls/s with {clients} concurrent clients over {:.1}s",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );

    w.cleanup().await;
    assert_eq!(errors, 0, "the load run had errors");
}

// -------------------------------------------------------------------------------------------------
// Soak: the operator binary as a child process

/// `oam-trust run` with the exchange on TLS; killed when dropped.
struct Operator {
    child: Child,
    health: u16,
    log: std::path::PathBuf,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Operator {
    fn start(
        dir: &std::path::Path,
        ns: &str,
        crt: &std::path::Path,
        key: &std::path::Path,
        clients: usize,
    ) -> (Operator, u16) {
        let (health, exchange) = (free_port(), free_port());
        let log = dir.join("operator.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_oam-trust"))
            .args([
                "run",
                "--instance",
                "soak",
                "--lease-namespace",
                ns,
                "--lease-name",
                "soak",
            ])
            .arg(format!("--health-addr=127.0.0.1:{health}"))
            .arg(format!("--exchange-listen=127.0.0.1:{exchange}"))
            .arg(format!("--exchange-tls-cert={}", crt.display()))
            .arg(format!("--exchange-tls-key={}", key.display()))
            .arg(format!(
                "--exchange-max-concurrent-per-source={}",
                clients.max(64)
            ))
            .arg(format!("--audit-log={}", dir.join("audit.jsonl").display()))
            .env("KUBECONFIG", kubeconfig_path())
            .env("OAM_TRUST_LOG_FORMAT", "json")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting oam-trust run");
        (Operator { child, health, log }, exchange)
    }

    /// `(VmRSS in KiB, user + system CPU seconds)` from /proc.
    fn usage(&self) -> (u64, f64) {
        let pid = self.child.id();
        let rss_kib = (process::rss_mib(pid).0 * 1024.0).round() as u64;
        (rss_kib, process::cpu_seconds(pid))
    }

    async fn ready(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.health)).await else {
            return false;
        };
        let req = "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if s.write_all(req.as_bytes()).await.is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
        out.starts_with("HTTP/1.1 200")
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn soak() {
    let seconds = env_or("OAM_TRUST_LOAD_SECONDS", 600);
    let clients = env_or("OAM_TRUST_LOAD_CLIENTS", 50) as usize;
    let warmup = env_or("OAM_TRUST_SOAK_WARMUP_SECONDS", 30);
    let every = env_or("OAM_TRUST_SOAK_SAMPLE_SECONDS", 60).max(1);
    // A read grant: the operator's exchange refuses a grant that writes until the guard admission
    // policies are installed; the API calls of an exchange are the same.
    let w = world("read").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, crt, key) = tls_pair(dir.path());
    let (mut op, port) = Operator::start(dir.path(), &w.ns, &crt, &key, clients);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !op.ready().await {
        if let Some(status) = op.child.try_wait().unwrap() {
            panic!(
                "oam-trust run exited ({status}): {}",
                std::fs::read_to_string(&op.log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "oam-trust run not ready in 60 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let exchange =
        ExchangeClient::new(&format!("https://127.0.0.1:{port}"), Some(&cert_pem)).unwrap();
    first_token(&exchange, &w.issuer, Duration::from_secs(60)).await;
    let (rss, _) = op.usage();
    println!(
        "soak: oam-trust run (pid {}) on {}, {clients} clients, {warmup}s warm-up then {seconds}s, ID tokens live {}s; ready at {:.1} MiB RSS",
        op.child.id(),
        w.config.cluster_url,
        env_or("OAM_TRUST_LOAD_ID_TOKEN_SECONDS", 300),
        mib(rss)
    );

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (exchange, issuer, tally, stop) = (
            exchange.clone(),
            w.issuer.clone(),
            tally.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            exchange_clients(&exchange, &issuer, None, clients, &tally, &stop).await
        })
    };
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    let (ok0, err0) = (
        tally.ok.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    let started = Instant::now();
    let (rss_start, cpu_start) = op.usage();
    let records_start = w.records().await;
    println!(
        "{:>6} {:>10} {:>8} {:>7} {:>9} {:>9} {:>8}",
        "t(s)", "exchanges", "rate/s", "errors", "RSS MiB", "CPU s", "records"
    );
    println!(
        "{:>6} {:>10} {:>8} {:>7} {:>9.1} {:>9.1} {:>8}",
        0,
        0,
        "-",
        0,
        mib(rss_start),
        0.0,
        records_start
    );
    let (mut last_ok, mut last_t) = (ok0, Duration::ZERO);
    let mut rss_samples = vec![rss_start];
    let end = Duration::from_secs(seconds);
    while started.elapsed() < end {
        let next = (last_t + Duration::from_secs(every)).min(end);
        tokio::time::sleep(next.saturating_sub(started.elapsed())).await;
        let t = started.elapsed();
        let ok = tally.ok.load(Ordering::Relaxed);
        let (rss, cpu) = op.usage();
        rss_samples.push(rss);
        println!(
            "{:>6.0} {:>10} {:>8.1} {:>7} {:>9.1} {:>9.1} {:>8}",
            t.as_secs_f64(),
            ok - ok0,
            (ok - last_ok) as f64 / (t - last_t).as_secs_f64(),
            tally.errors.load(Ordering::Relaxed) - err0,
            mib(rss),
            cpu - cpu_start,
            w.records().await
        );
        (last_ok, last_t) = (ok, t);
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let (rss_end, cpu_end) = op.usage();
    let ok = tally.ok.load(Ordering::Relaxed) - ok0;
    let errors = tally.errors.load(Ordering::Relaxed);
    // Latencies of the whole run, warm-up included (the clients keep one list each).
    let latencies = load.await.unwrap();
    let records_end = w.records().await;
    report("soak exchange latency", latencies);
    println!(
        "soak: {ok} exchanges in {:.0}s ({:.1}/s) with {clients} clients, {errors} errors (warm-up included); RSS {:.1} MiB after warm-up, {:.1} MiB at the end (min {:.1}, max {:.1}); {:.1} CPU-s in the operator ({:.2} ms an exchange); {records_end} TokenIssuance records at the end",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
        mib(rss_start),
        mib(rss_end),
        mib(*rss_samples.iter().min().unwrap()),
        mib(*rss_samples.iter().max().unwrap()),
        cpu_end - cpu_start,
        (cpu_end - cpu_start) * 1e3 / ok.max(1) as f64
    );
    // Every record goes at its TTL (the ID token's remaining life here) or by the reaper's next pass.
    if env_or("OAM_TRUST_SOAK_DRAIN", 1) == 1 {
        let drain = Instant::now();
        let limit = Duration::from_secs(env_or("OAM_TRUST_LOAD_ID_TOKEN_SECONDS", 300) + 60);
        let mut left = records_end;
        while left > 0 && drain.elapsed() < limit {
            tokio::time::sleep(Duration::from_secs(10)).await;
            left = w.records().await;
        }
        let (rss, _) = op.usage();
        println!(
            "soak: {left} records left {:.0}s after the load stopped (RSS then {:.1} MiB)",
            drain.elapsed().as_secs_f64(),
            mib(rss)
        );
    }
    let alive = op.child.try_wait().unwrap().is_none();
    drop(op);
    w.cleanup().await;
    assert!(alive, "oam-trust run died during the soak");
    assert_eq!(errors, 0, "the soak had errors");
}
