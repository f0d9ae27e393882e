//! Fault injection on a control plane of this binary's own: etcd killed while 100 Applications
//! converge, kube-apiserver restarted and paused longer than the lease, the leader paused, the
//! issuer's JWKS endpoint down and slow, the operator killed with SIGKILL in the middle of issuing and
//! reconciling. Each scenario asserts the invariant that must hold after its fault (every Application
//! running at its generation with every object exactly once, no token without its record, one writer
//! at a time), not only that things come back, and prints what it measured (`--nocapture`).
//!
//! The scenarios break shared components, so one test runs them one after another, on a cluster it
//! starts for itself (`$OAM_TRUST_CLUSTER_DIR-faults`, see `support::cluster`) and stops at the end:
//! the test run's shared control plane never sees a fault. A failed scenario does not stop the
//! others; every component is brought back before the next one. `OAM_TRUST_FAULTS=etcd,jwks` runs
//! only the scenarios named.
mod federation_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use oam_trust::api::issuance::TokenIssuance;
use oam_trust::api::oam::Application;
use oam_trust::api::trust::GitLabTrust;
use oam_trust::dev_issuer::{DevIssuer, DevIssuerOptions, MintRequest};
use oam_trust::federation::binding::issuance_name;
use oam_trust::federation::client::{ExchangeCallError, ExchangeClient};
use serde_json::{Value, json};
use support::cluster::{Cluster, Component};
use support::replica::{self, Replica};

type Scenario = fn(Arc<Cluster>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

const SCENARIOS: &[(&str, Scenario)] = &[
    ("etcd", |c| {
        Box::pin(etcd_killed_while_applications_converge(c))
    }),
    ("apiserver-restart", |c| {
        Box::pin(api_server_restarted_while_jobs_exchange(c))
    }),
    ("apiserver-pause", |c| {
        Box::pin(api_server_paused_longer_than_the_lease(c))
    }),
    ("leader-pause", |c| {
        Box::pin(leader_paused_longer_than_its_lease(c))
    }),
    ("jwks", |c| Box::pin(jwks_down_then_slow(c))),
    ("operator-kill", |c| {
        Box::pin(operator_killed_mid_issuance_and_mid_reconcile(c))
    }),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_on_a_control_plane_of_its_own() {
    let cluster = Arc::new(Cluster::up(Cluster::dir_for("faults")).await);
    support::use_kubeconfig(cluster.kubeconfig());
    support::install_crds(&support::admin().await).await;
    let wanted: Option<Vec<String>> = std::env::var("OAM_TRUST_FAULTS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    for name in wanted.iter().flatten() {
        assert!(
            SCENARIOS.iter().any(|(n, _)| n == name),
            "OAM_TRUST_FAULTS names no scenario {name:?}; there are {:?}",
            SCENARIOS.iter().map(|(n, _)| *n).collect::<Vec<_>>()
        );
    }
    let mut failed = Vec::new();
    for (name, scenario) in SCENARIOS {
        if wanted
            .as_ref()
            .is_some_and(|w| !w.iter().any(|n| n == name))
        {
            continue;
        }
        let started = Instant::now();
        // Its own task: a failed assertion ends the scenario (and drops its replicas), not the run.
        match tokio::spawn(scenario(cluster.clone())).await {
            Ok(()) => eprintln!("[faults] {name}: passed in {:.1?}", started.elapsed()),
            Err(e) => {
                eprintln!(
                    "[faults] {name}: FAILED after {:.1?}: {e}",
                    started.elapsed()
                );
                failed.push(*name);
                cluster.heal().await;
            }
        }
        tidy(&support::admin().await).await;
    }
    if !failed.is_empty() {
        eprintln!("{}", cluster.logs().await);
        panic!("fault scenarios failed: {failed:?} (their output is above)");
    }
}

/// Deletes what a scenario left (its namespaces, and the trusts, whose dev issuers are gone), so the
/// next scenario's operators do not start by reconciling it.
async fn tidy(admin: &Client) {
    let labelled = ListParams::default().labels("oam-trust.dev/test=true");
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone());
    for ns in namespaces.list(&labelled).await.unwrap().items {
        let _ = namespaces
            .delete(&ns.name_any(), &DeleteParams::background())
            .await;
    }
    let trusts = Api::<GitLabTrust>::all(admin.clone());
    for t in trusts.list(&ListParams::default()).await.unwrap().items {
        let _ = trusts.delete(&t.name_any(), &DeleteParams::default()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Applications and what they must have rendered

/// The declaration every test Application carries: a read grant for project 1450.
const DECLARATION: &str = "read";

/// A webservice with an exposed port (a Deployment and a Service) and one read grant (a
/// ServiceAccount, a Role and a RoleBinding) under `trust`.
fn web_app(name: &str, trust: &str) -> Value {
    json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": name},
           "spec": {"components": [{"name": name, "type": "webservice",
                      "properties": {"image": "nginx", "ports": [{"port": 80, "expose": true}]}}],
                    "policies": [{"name": DECLARATION, "type": "gitlab-access", "properties": {
                        "trust": trust, "subjects": [{"projectId": "1450", "namespaceId": "72"}],
                        "access": "read"}}]}})
}

fn app_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

async fn apply_apps(client: &Client, ns: &str, names: &[String], trust: &str) {
    futures::stream::iter(names)
        .for_each_concurrent(16, |name| async move {
            support::apply_app(client, ns, web_app(name, trust)).await
        })
        .await;
}

/// Every object of kind `K` in `ns` (none when the list fails: the callers poll or report).
async fn listed<K>(client: &Client, ns: &str) -> Vec<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

async fn apps(client: &Client, ns: &str) -> Vec<Application> {
    listed(client, ns).await
}

async fn running(client: &Client, ns: &str) -> usize {
    apps(client, ns)
        .await
        .iter()
        .filter(|a| support::app_running(a))
        .count()
}

/// Waits until every Application of `ns` (there are `n`) runs at its generation; how long it took.
async fn converge(client: &Client, ns: &str, n: usize, timeout: Duration) -> Duration {
    let started = Instant::now();
    let done = support::eventually(timeout, || async { running(client, ns).await == n }).await;
    if !done {
        let stuck: Vec<String> = apps(client, ns)
            .await
            .iter()
            .filter(|a| !support::app_running(a))
            .map(|a| {
                let s = a.status.clone().unwrap_or_default();
                format!(
                    "{} (phase {:?}, observed {:?} of {:?}, {:?})",
                    a.name_any(),
                    s.status,
                    s.observed_generation,
                    a.metadata.generation,
                    s.conditions
                        .iter()
                        .map(|c| format!("{}={} {}", c.type_, c.status, c.message))
                        .collect::<Vec<_>>()
                )
            })
            .take(5)
            .collect();
        // What the cluster itself says of the stuck workloads: a status that lags them is the
        // operator's fault, a workload that is not ready is the control plane's.
        let deployments: Vec<String> = listed::<Deployment>(client, ns)
            .await
            .iter()
            .filter(|d| {
                d.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
                    < 1
            })
            .map(|d| format!("{}: {:?}", d.name_any(), d.status))
            .take(5)
            .collect();
        let pods: Vec<String> = listed::<k8s_openapi::api::core::v1::Pod>(client, ns)
            .await
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running"))
            .map(|p| format!("{}: {:?}", p.name_any(), p.status))
            .take(5)
            .collect();
        panic!(
            "{ns}: {} of {n} Applications running after {timeout:?}; first stuck: {stuck:#?}; \
             Deployments not ready: {deployments:#?}; pods not running: {pods:#?}",
            running(client, ns).await
        );
    }
    started.elapsed()
}

/// Asserts that the objects of kind `K` in `ns` with `labels` are exactly `expected`, as
/// (name, uids of their controllers), sorted.
async fn assert_objects<K>(
    client: &Client,
    ns: &str,
    labels: &str,
    expected: &[(String, Vec<String>)],
) where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut found: Vec<(String, Vec<String>)> = Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(labels))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| {
            let owners = o
                .meta()
                .owner_references
                .iter()
                .flatten()
                .filter(|r| r.controller == Some(true))
                .map(|r| r.uid.clone())
                .collect();
            (o.name_any(), owners)
        })
        .collect();
    found.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(
        found,
        expected,
        "{ns}: {} objects (name, controller uids)",
        K::kind(&())
    );
}

/// Nothing half-applied, nothing twice: every Application of `ns` is one of `names`, runs at its
/// generation, lists exactly its Deployment and Service in `appliedResources`, and those exist
/// once each, controlled by it; its declaration has exactly one ServiceAccount, Role and
/// RoleBinding; and no other object of the operator's is in `ns`.
async fn assert_converged_exactly(client: &Client, ns: &str, names: &[String]) {
    let apps = apps(client, ns).await;
    let uid: BTreeMap<String, String> = apps
        .iter()
        .map(|a| (a.name_any(), a.metadata.uid.clone().unwrap()))
        .collect();
    let want: BTreeSet<&String> = names.iter().collect();
    assert_eq!(
        uid.keys().collect::<BTreeSet<_>>(),
        want,
        "{ns}: the Applications"
    );
    for a in &apps {
        assert!(
            support::app_running(a),
            "{ns}/{}: not running",
            a.name_any()
        );
        let applied: BTreeSet<(String, String)> = a
            .status
            .as_ref()
            .unwrap()
            .applied_resources
            .iter()
            .map(|r| (r.kind.clone(), r.name.clone()))
            .collect();
        let name = a.name_any();
        assert_eq!(
            applied,
            BTreeSet::from([
                ("Deployment".to_string(), name.clone()),
                ("Service".to_string(), name.clone())
            ]),
            "{ns}/{name}: appliedResources"
        );
    }
    // Each rendered kind: one object per Application, named after it, controlled by it.
    let rendered: Vec<(String, Vec<String>)> = names
        .iter()
        .map(|n| (n.clone(), vec![uid[n].clone()]))
        .collect();
    let managed = "app.kubernetes.io/managed-by=oam-trust";
    assert_objects::<Deployment>(client, ns, managed, &rendered).await;
    assert_objects::<Service>(client, ns, managed, &rendered).await;
    // Grants: exactly one of each object per declaration, with the name derived from it.
    let id = format!("policy/{DECLARATION}");
    let grants: Vec<(String, Vec<String>)> = names
        .iter()
        .map(|n| {
            let name = oam_trust::access::objects::object_name(n, ns, DECLARATION, &id);
            (name, vec![uid[n].clone()])
        })
        .collect();
    let label = oam_trust::names::LABEL_GRANT;
    assert_objects::<ServiceAccount>(client, ns, label, &grants).await;
    assert_objects::<Role>(client, ns, label, &grants).await;
    assert_objects::<RoleBinding>(client, ns, label, &grants).await;
}

// ---------------------------------------------------------------------------------------------
// What replicas log: leadership changes and the requests they sent (JSON lines, wall-clock times)

/// `RUST_LOG` of replicas whose writes a scenario checks: every request they send is logged.
const TRACE_REQUESTS: &str = "info,kube=warn,tower=warn,hyper=warn,oam_trust::api_requests=trace";

fn log_time(line: &Value) -> Option<Timestamp> {
    line["timestamp"].as_str()?.parse().ok()
}

/// (when, leading) of each leadership change the replica logged.
fn leadership(r: &Replica) -> Vec<(Timestamp, bool)> {
    r.log_lines()
        .iter()
        .filter(|l| l["message"] == "leadership changed")
        .filter_map(|l| Some((log_time(l)?, l["leading"].as_bool()?)))
        .collect()
}

/// The intervals in which the replica said it led (an open one ends at `until`).
fn led(r: &Replica, until: Timestamp) -> Vec<(Timestamp, Timestamp)> {
    let mut out = Vec::new();
    let mut since = None;
    for (at, leading) in leadership(r) {
        match (leading, since) {
            (true, None) => since = Some(at),
            (false, Some(s)) => {
                out.push((s, at));
                since = None;
            }
            _ => {}
        }
    }
    if let Some(s) = since {
        out.push((s, until));
    }
    out
}

/// (when, "METHOD path") of every write the replica sent, leaving out the Lease (the election's own
/// writes, fenced by resourceVersion) and TokenIssuances (the reaper's deletes of expired records,
/// guarded by uid and harmless twice).
fn writes(r: &Replica) -> Vec<(Timestamp, String)> {
    r.log_lines()
        .iter()
        .filter(|l| l["target"] == oam_trust::runtime::metrics::API_REQUESTS_TARGET)
        .filter(|l| l["method"] != "GET")
        .filter_map(|l| {
            let path = l["path"].as_str()?;
            if path.contains("/leases") || path.contains("/tokenissuances") {
                return None;
            }
            Some((log_time(l)?, format!("{} {path}", l["method"].as_str()?)))
        })
        .collect()
}

/// Waits until at least `k` Applications of `ns` run: the convergence is under way.
async fn under_way(client: &Client, ns: &str, k: usize) {
    let reached = support::eventually(Duration::from_secs(120), || async {
        running(client, ns).await >= k
    })
    .await;
    assert!(
        reached,
        "{ns}: fewer than {k} Applications running after 120 s"
    );
}

/// Two replicas electing on Lease `ns/lease`, `a` leading, both logging every request, and `N`
/// Applications applied and converging under `a`.
struct Pair {
    admin: Client,
    ns: String,
    trust: String,
    names: Vec<String>,
    a: Replica,
    b: Replica,
}

async fn pair_mid_batch(prefix: &str, lease: &str, a: &str, b: &str, n: usize) -> Pair {
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, prefix, "admin").await;
    let trust = support::selecting_trust(&admin, &ns, None).await;
    let env = [("RUST_LOG", TRACE_REQUESTS)];
    let a = replica::start_with(a, &ns, lease, &[], &env).await;
    wait_holder(&admin, &ns, lease, &a.name, Duration::from_secs(20)).await;
    let b = replica::start_with(b, &ns, lease, &[], &env).await;
    let names = app_names("app", n);
    apply_apps(&admin, &ns, &names, &trust).await;
    under_way(&admin, &ns, 3).await;
    Pair {
        admin,
        ns,
        trust,
        names,
        a,
        b,
    }
}

async fn lease(client: &Client, ns: &str, name: &str) -> Option<Lease> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

async fn wait_holder(client: &Client, ns: &str, lease: &str, who: &str, timeout: Duration) {
    let held = support::eventually(timeout, || async {
        replica::holder(client, ns, lease).await.as_deref() == Some(who)
    })
    .await;
    assert!(
        held,
        "{who} does not hold Lease {ns}/{lease} after {timeout:?} (holder: {:?})",
        replica::holder(client, ns, lease).await
    );
}

fn secs(d: SignedDuration) -> f64 {
    d.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// Scenario: etcd killed and restarted while 100 Applications converge

async fn etcd_killed_while_applications_converge(cluster: Arc<Cluster>) {
    const N: usize = 100;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "etcd", "admin").await;
    let trust = support::selecting_trust(&admin, &ns, None).await;
    let op = replica::start("etcd-op", &ns, "faults-etcd").await;
    let names = app_names("app", N);
    let applied = Instant::now();
    apply_apps(&admin, &ns, &names, &trust).await;
    // Kill etcd once convergence is under way.
    under_way(&admin, &ns, 5).await;
    let at_kill = running(&admin, &ns).await;
    let down = Instant::now();
    cluster.kill(Component::Etcd).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restart = cluster.start(Component::Etcd).await;
    let outage = down.elapsed();
    // kwok, the fake kubelet, is not what is under test and does not recover from etcd going away
    // as a kubelet does: twice in CI it left a pod bound after the outage without ever running it
    // (PodScheduled, no container status, 300 s), with the Application rightly reporting its
    // Deployment `Ready:0/1`. Restarted, it lists every pod of its nodes again.
    cluster.restart(Component::Kwok).await;
    let restarted = Instant::now();
    let took = converge(&admin, &ns, N, Duration::from_secs(300)).await;
    assert_converged_exactly(&admin, &ns, &names).await;
    assert!(op.ready().await, "the operator is ready again");
    eprintln!(
        "[faults] etcd: killed with {at_kill}/{N} Applications running ({:.1?} after applying them); down {outage:.1?} (restart {restart:.1?}); all {N} running {took:.1?} after etcd was back ({:.1?} after applying), each with exactly 1 Deployment, 1 Service and 1 ServiceAccount, Role and RoleBinding ({} grant objects for {N} declarations)",
        down - applied,
        restarted.duration_since(applied) + took,
        3 * N
    );
}

// ---------------------------------------------------------------------------------------------
// The exchange world of an operator process: a dev issuer, its trust, a namespace with an
// Application declaring a read grant for project 1450, and jobs that exchange fresh ID tokens

struct ExchangeWorld {
    admin: Client,
    ns: String,
    trust: String,
    issuer: Arc<DevIssuer>,
}

async fn exchange_world(prefix: &str) -> ExchangeWorld {
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, prefix, "admin").await;
    let issuer = DevIssuer::start(DevIssuerOptions {
        audience: federation_support::AUD.into(),
        ..DevIssuerOptions::default()
    })
    .await
    .expect("dev issuer starts");
    let trust = federation_support::issuer_trust(&admin, &ns, &issuer).await;
    support::apply_app(&admin, &ns, exchange_app("shop", &trust)).await;
    ExchangeWorld {
        admin,
        ns,
        trust,
        issuer: Arc::new(issuer),
    }
}

/// An Application whose `read` grant project 1450's jobs on protected `main` get.
fn exchange_app(name: &str, trust: &str) -> Value {
    json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": name},
           "spec": {"components": [{"name": name, "type": "webservice", "properties": {"image": "nginx"}}],
                    "policies": [{"name": "read", "type": "gitlab-access", "properties": {
                        "trust": trust, "subjects": [{"projectId": "1450", "ref": "main"}],
                        "access": "read"}}]}})
}

/// What one exchange got (the texts are for failure messages).
#[derive(Debug, Clone)]
#[allow(dead_code)]
enum Answer {
    /// A token, for the ID token with this `jti`.
    Token(String),
    /// An RFC 6749 refusal: (error, description).
    Refused(String, String),
    /// No answer (connection refused or reset).
    Transport(String),
}

impl Answer {
    fn code(&self) -> String {
        match self {
            Answer::Token(_) => "token".into(),
            Answer::Refused(error, _) => error.clone(),
            Answer::Transport(_) => "transport".into(),
        }
    }
}

async fn exchange_once(
    issuer: &DevIssuer,
    client: &ExchangeClient,
    mint: &MintRequest,
    resource: Option<&str>,
) -> Answer {
    let token = issuer.mint(mint).unwrap();
    let jti = federation_support::jti(&token).unwrap();
    match client.exchange(&token, resource, None).await {
        Ok(_) => Answer::Token(jti),
        Err(ExchangeCallError::Refused { body, .. }) => {
            Answer::Refused(body.error, body.error_description)
        }
        Err(e) => Answer::Transport(e.to_string()),
    }
}

/// The `jti` of the first token a job gets (the operator may still be creating the grant's
/// ServiceAccount); panics after 30 s.
async fn first_token(issuer: &DevIssuer, client: &ExchangeClient, mint: &MintRequest) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match exchange_once(issuer, client, mint, None).await {
            Answer::Token(jti) => return jti,
            other => assert!(
                Instant::now() < deadline,
                "no token before the fault: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Jobs exchanging fresh ID tokens against `url` back to back until stopped; every answer kept.
struct Jobs {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(Instant, Answer)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Jobs {
    fn start(
        issuer: &Arc<DevIssuer>,
        url: &str,
        workers: usize,
        pause: Duration,
        mint: MintRequest,
    ) -> Jobs {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let client = ExchangeClient::new(url, None).unwrap();
        let tasks = (0..workers)
            .map(|_| {
                let (stop, answers, client) = (stop.clone(), answers.clone(), client.clone());
                let (issuer, mint) = (issuer.clone(), mint.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let answer = exchange_once(&issuer, &client, &mint, None).await;
                        answers.lock().unwrap().push((Instant::now(), answer));
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Jobs {
            stop,
            answers,
            tasks,
        }
    }

    fn answers(&self) -> Vec<(Instant, Answer)> {
        self.answers.lock().unwrap().clone()
    }

    /// No job starts another exchange; those in flight go on.
    fn halt(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    async fn stop(self) -> Vec<(Instant, Answer)> {
        self.halt();
        for t in self.tasks {
            let _ = t.await;
        }
        self.answers.lock().unwrap().clone()
    }
}

fn tally(answers: &[(Instant, Answer)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, a) in answers {
        *out.entry(a.code()).or_default() += 1;
    }
    out
}

fn tokens(answers: &[(Instant, Answer)]) -> Vec<String> {
    answers
        .iter()
        .filter_map(|(_, a)| match a {
            Answer::Token(jti) => Some(jti.clone()),
            _ => None,
        })
        .collect()
}

/// The TokenIssuance records of grants in `ns`.
async fn records(client: &Client, ns: &str) -> Vec<TokenIssuance> {
    Api::<TokenIssuance>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| r.spec.namespace == ns)
        .collect()
}

/// Asserts that the record of every token a job received exists now.
async fn assert_every_token_has_its_record(client: &Client, issuer: &str, jtis: &[String]) {
    let records = Api::<TokenIssuance>::all(client.clone());
    for jti in jtis {
        let name = issuance_name(issuer, jti);
        assert!(
            records.get_opt(&name).await.unwrap().is_some(),
            "a job received a token for jti {jti} but its TokenIssuance {name} does not exist"
        );
    }
}

/// The reasons of refusals in the replica's audit lines, counted.
fn audit_reasons(r: &Replica) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for l in r.log_lines() {
        if l["target"] == "oam_trust::audit" && l["outcome"] == "denied" {
            let key = format!(
                "{}/{}",
                l["error"].as_str().unwrap_or("?"),
                l["reason"].as_str().unwrap_or("?")
            );
            *out.entry(key).or_default() += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Scenario: kube-apiserver restarted while jobs exchange

async fn api_server_restarted_while_jobs_exchange(cluster: Arc<Cluster>) {
    let w = exchange_world("apiserver").await;
    let op = replica::start_with(
        "restart-op",
        &w.ns,
        "faults-restart",
        &["--exchange-reap-interval-seconds", "1"],
        &[],
    )
    .await;
    federation_support::wait_for_grants(&w.admin, &w.ns, 1).await;
    let client = ExchangeClient::new(&op.exchange_url(), None).unwrap();
    let first = first_token(&w.issuer, &client, &MintRequest::new()).await;

    // Readiness and exchanges, polled through the restart.
    let readiness: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let (readiness, stop, port) = (readiness.clone(), stop.clone(), op.health);
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let ready = replica::get(port, "/readyz")
                    .await
                    .is_some_and(|(s, _)| s == 200);
                readiness.lock().unwrap().push((Instant::now(), ready));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let jobs = Jobs::start(
        &w.issuer,
        &op.exchange_url(),
        2,
        Duration::from_millis(100),
        MintRequest::new(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down = Instant::now();
    let restart = cluster.restart(Component::KubeApiserver).await;
    let back = Instant::now();
    // The operator is ready again, and jobs get tokens again.
    let recovered = support::eventually(Duration::from_secs(60), || async {
        let ready_again = readiness
            .lock()
            .unwrap()
            .last()
            .is_some_and(|(at, r)| *r && *at > back);
        let issued_again = jobs
            .answers()
            .iter()
            .any(|(at, a)| *at > back && matches!(a, Answer::Token(_)));
        ready_again && issued_again
    })
    .await;
    let recovery = back.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answers = jobs.stop().await;
    stop.store(true, Ordering::SeqCst);
    probe.await.unwrap();
    let readiness = readiness.lock().unwrap().clone();
    assert!(
        recovered,
        "within 60 s of the API server's restart, the operator was not ready again or issued no token: answers {:?}",
        tally(&answers)
    );

    // Every answer is a token or "temporarily unavailable, retry".
    let unexpected: Vec<&Answer> = answers
        .iter()
        .map(|(_, a)| a)
        .filter(|a| !matches!(a, Answer::Token(_)))
        .filter(|a| !matches!(a, Answer::Refused(e, _) if e == "temporarily_unavailable"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} answers other than a token or temporarily_unavailable while the API server restarted ({:?}); the first: {:#?}",
        unexpected.len(),
        tally(&answers),
        &unexpected[..unexpected.len().min(3)]
    );
    let during = answers
        .iter()
        .filter(|(at, _)| *at > down && *at < back)
        .count();
    let refused = answers.len() - tokens(&answers).len();
    assert!(
        refused > 0,
        "no exchange was refused while the API server was down: the fault was not felt"
    );
    // Every token a job received has its durable record.
    let mut jtis = tokens(&answers);
    jtis.push(first);
    assert_every_token_has_its_record(&w.admin, w.issuer.url(), &jtis).await;
    let received: BTreeSet<&String> = jtis.iter().collect();
    // An issue that failed after its guard was created undoes it once the API server answers.
    let reasons = audit_reasons(&op);
    let half_way: usize = ["binding_secret_failed", "token_request_failed"]
        .iter()
        .map(|r| {
            reasons
                .get(&format!("temporarily_unavailable/{r}"))
                .copied()
                .unwrap_or(0)
        })
        .sum();
    let undo_started = Instant::now();
    let undone = support::eventually(Duration::from_secs(30), || async {
        records(&w.admin, &w.ns)
            .await
            .iter()
            .all(|r| received.contains(&r.spec.jti))
    })
    .await;
    let undo_took = undo_started.elapsed();
    assert!(
        undone,
        "records of failed issues are still there 30 s after the API server came back: {:?}",
        records(&w.admin, &w.ns)
            .await
            .iter()
            .filter(|r| !received.contains(&r.spec.jti))
            .map(|r| r.name_any())
            .collect::<Vec<_>>()
    );
    // /readyz went false during the outage, then true again.
    let unready: Vec<Instant> = readiness
        .iter()
        .filter(|(_, r)| !r)
        .map(|(at, _)| *at)
        .collect();
    assert!(
        unready.iter().any(|at| *at > down),
        "/readyz never turned false while the API server was down"
    );
    let unready_for = match (unready.first(), unready.last()) {
        (Some(a), Some(b)) => b.duration_since(*a),
        _ => Duration::ZERO,
    };

    // Watches resumed: drift is corrected, and a new Application gets grants and tokens.
    let deployments = Api::<Deployment>::namespaced(w.admin.clone(), &w.ns);
    deployments
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    let restored = support::eventually(Duration::from_secs(60), || async {
        deployments
            .get_opt("shop")
            .await
            .unwrap()
            .is_some_and(|d| d.metadata.deletion_timestamp.is_none())
    })
    .await;
    assert!(
        restored,
        "a deleted Deployment was not restored after the restart (the watches did not resume)"
    );
    support::apply_app(&w.admin, &w.ns, exchange_app("after", &w.trust)).await;
    let target = format!("{}/after", w.ns);
    let new_grant = support::eventually(Duration::from_secs(60), || async {
        matches!(
            exchange_once(&w.issuer, &client, &MintRequest::new(), Some(&target)).await,
            Answer::Token(_)
        )
    })
    .await;
    assert!(
        new_grant,
        "an Application created after the restart got no grant the exchange issues"
    );
    eprintln!(
        "[faults] apiserver-restart: restart took {restart:.1?} (stop + start until /readyz); operator ready and issuing again {recovery:.1?} after that; operator /readyz false for {unready_for:.1?}; {} exchanges ({during} during the restart): {:?}; refusal reasons in the audit log {:?}; every one of {} tokens has its TokenIssuance; the records of the issues that failed half-way ({half_way}) were deleted once it answered (none left {undo_took:.1?} into checking); drift corrected and a new Application's grant issued after the restart",
        answers.len(),
        tally(&answers),
        reasons,
        jtis.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Scenario: kube-apiserver paused (SIGSTOP) longer than the lease, two operator replicas

async fn api_server_paused_longer_than_the_lease(cluster: Arc<Cluster>) {
    const N: usize = 30;
    const PAUSE: Duration = Duration::from_secs(20);
    let lease_name = "faults-pause";
    let Pair {
        admin,
        ns,
        names,
        a,
        b,
        ..
    } = pair_mid_batch("apipause", lease_name, "pause-a", "pause-b", N).await;
    let renewed = lease(&admin, &ns, lease_name)
        .await
        .and_then(|l| l.spec?.renew_time)
        .unwrap()
        .0;
    let paused_at = Timestamp::now();
    cluster.pause(Component::KubeApiserver).await;
    tokio::time::sleep(PAUSE).await;
    // Taken before the signal: a replica may act on the first answer before the script returns.
    let resumed_at = Timestamp::now();
    cluster.resume(Component::KubeApiserver).await;

    // Someone leads again, and everything converges exactly once.
    let led_again = support::eventually(Duration::from_secs(60), || async {
        replica::holder(&admin, &ns, lease_name).await.is_some()
    })
    .await;
    assert!(led_again, "nobody leads 60 s after the API server resumed");
    let took = converge(&admin, &ns, N, Duration::from_secs(180)).await;
    assert_converged_exactly(&admin, &ns, &names).await;
    let holder = replica::holder(&admin, &ns, lease_name).await.unwrap();
    // The writes as logged so far, then the instant that ends a leadership still open: the leader
    // keeps writing after convergence (a reconcile of everything when it leads again), and a write
    // logged after `now` would fall outside an interval that `now` closed.
    let (a_writes, b_writes) = (writes(&a), writes(&b));
    let now = Timestamp::now();

    // The leader stepped down while the API server answered nothing, before its lease could have
    // been taken: it could not renew, so it could not know nobody else had.
    let a_led = led(&a, now);
    let b_led = led(&b, now);
    let stepped_down = leadership(&a)
        .into_iter()
        .find(|(at, leading)| !leading && *at > paused_at)
        .map(|(at, _)| at);
    let stepped_down = stepped_down
        .unwrap_or_else(|| panic!("pause-a never stepped down: it logged {:?}", leadership(&a)));
    // Its last renewal was sent before the pause: valid for 10 s (lease 15 s less the 5 s renew
    // period as skew margin), so it must stop within 10 s of the pause (slack for a loaded machine),
    // well before anyone else may take the lease, 15 s after that renewal.
    let valid = SignedDuration::from_secs(10);
    assert!(
        stepped_down < resumed_at
            && stepped_down <= paused_at + valid + SignedDuration::from_secs(2),
        "pause-a stepped down {:.1} s into the pause (its lease valid 10 s after its last renewal, sent {:.1} s before the pause at the latest); the API server answered again after {:.1} s",
        secs(stepped_down.duration_since(paused_at)),
        secs(paused_at.duration_since(renewed)),
        secs(resumed_at.duration_since(paused_at))
    );
    // One writer at a time: the replicas' leadership never overlapped, and each wrote only while
    // it led.
    for (x, y) in a_led.iter().flat_map(|x| b_led.iter().map(move |y| (x, y))) {
        assert!(
            x.1 <= y.0 || y.1 <= x.0,
            "pause-a led {x:?} and pause-b led {y:?}: at the same time"
        );
    }
    for (r, intervals, written) in [(&a, &a_led, &a_writes), (&b, &b_led, &b_writes)] {
        let outside: Vec<_> = written
            .iter()
            .filter(|(at, _)| !intervals.iter().any(|(s, e)| at >= s && at <= e))
            .collect();
        assert!(
            outside.is_empty(),
            "{} wrote while it did not lead ({intervals:?}): {outside:#?}",
            r.name
        );
    }
    let transitions = lease(&admin, &ns, lease_name)
        .await
        .and_then(|l| l.spec?.lease_transitions)
        .unwrap_or_default();
    let new_leader = if holder == a.name { &a } else { &b };
    let led_after = leadership(new_leader)
        .into_iter()
        .find(|(at, leading)| *leading && *at > resumed_at)
        .map_or(f64::NAN, |(at, _)| secs(at.duration_since(resumed_at)));
    eprintln!(
        "[faults] apiserver-pause: API server paused {PAUSE:?} with {N} Applications converging; pause-a stepped down {:.1} s into the pause (its lease valid 10 s after its last renewal, lease 15 s); {holder} led {led_after:.1} s after the API server answered again (lease transitions {transitions}); all {N} running {took:.1?} after the resume, every object exactly once; leadership never overlapped and no write fell outside it ({} writes by pause-a, {} by pause-b)",
        secs(stepped_down.duration_since(paused_at)),
        writes(&a).len(),
        writes(&b).len()
    );
}

// ---------------------------------------------------------------------------------------------
// Scenario: the leader process paused (SIGSTOP) longer than its lease

async fn leader_paused_longer_than_its_lease(_cluster: Arc<Cluster>) {
    const N: usize = 30;
    let lease_name = "faults-leader-pause";
    let Pair {
        admin,
        ns,
        trust,
        names,
        a,
        b,
    } = pair_mid_batch("leaderpause", lease_name, "stopped-a", "stopped-b", N).await;
    // Frozen in the middle of its work, as a long GC pause or a stalled VM would.
    a.signal("STOP").unwrap();
    let paused_at = Timestamp::now();
    let paused = Instant::now();
    wait_holder(
        &admin,
        &ns,
        lease_name,
        "stopped-b",
        Duration::from_secs(30),
    )
    .await;
    let handover = paused.elapsed();
    let took = converge(&admin, &ns, N, Duration::from_secs(180)).await;
    // Changes the frozen replica will see when it wakes, queued in its watches.
    for name in &names[..5] {
        let mut app = web_app(name, &trust);
        app["metadata"]["labels"] = json!({"touched": "while-a-was-stopped"});
        support::apply_app(&admin, &ns, app).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Taken before the signal: the woken replica may log before `kill` returns.
    let woke_at = Timestamp::now();
    a.signal("CONT").unwrap();
    // It wakes with reconciles in flight and events queued; its lease ran out long ago.
    let stepped_down = support::eventually(Duration::from_secs(20), || async {
        leadership(&a)
            .iter()
            .any(|(at, leading)| !leading && *at >= woke_at)
    })
    .await;
    assert!(
        stepped_down,
        "stopped-a did not log stepping down after it woke: {:?}",
        leadership(&a)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        replica::holder(&admin, &ns, lease_name).await.as_deref(),
        Some("stopped-b"),
        "the replica that took over keeps the lease"
    );
    let after_wake: Vec<_> = writes(&a)
        .into_iter()
        .filter(|(at, _)| *at >= paused_at)
        .collect();
    assert!(
        after_wake.is_empty(),
        "stopped-a wrote after it woke, while stopped-b held the lease: {after_wake:#?}"
    );
    converge(&admin, &ns, N, Duration::from_secs(60)).await;
    assert_converged_exactly(&admin, &ns, &names).await;
    eprintln!(
        "[faults] leader-pause: leader SIGSTOPped mid-batch; stopped-b took over after {handover:.1?} and converged all {N} in {took:.1?}; stopped-a woke {:.1} s after the pause and wrote nothing ({} writes before the pause, {} by stopped-b)",
        secs(woke_at.duration_since(paused_at)),
        writes(&a).len(),
        writes(&b).len()
    );
}

// ---------------------------------------------------------------------------------------------
// Scenario: the issuer's JWKS endpoint down, then slow

async fn trust_ready(client: &Client, trust: &str) -> Option<(String, String, String)> {
    let t = Api::<GitLabTrust>::all(client.clone())
        .get(trust)
        .await
        .ok()?;
    let c = t
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason, c.message))
}

/// A spec change, so the trust controller fetches the keys now.
async fn touch_trust(client: &Client, trust: &str, extra_audience: &str) {
    Api::<GitLabTrust>::all(client.clone())
        .patch(
            trust,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"audiences": [federation_support::AUD, extra_audience]}}),
            ),
        )
        .await
        .unwrap();
}

async fn wait_trust(client: &Client, trust: &str, status: &str, reason: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = trust_ready(client, trust).await;
        if let Some((_, _, message)) = last.as_ref().filter(|(s, r, _)| s == status && r == reason)
        {
            return message.clone();
        }
        assert!(
            Instant::now() < deadline,
            "trust {trust}: Ready={status} {reason} not reached in 60 s; last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Exchanges one fresh ID token after another for `period`; each answer and how long it took.
async fn exchange_for(
    w: &ExchangeWorld,
    client: &ExchangeClient,
    period: Duration,
) -> Vec<(Duration, Answer)> {
    let mut out = Vec::new();
    let until = Instant::now() + period;
    while Instant::now() < until {
        let started = Instant::now();
        let answer = exchange_once(&w.issuer, client, &MintRequest::new(), None).await;
        out.push((started.elapsed(), answer));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    out
}

fn assert_all_issued(phase: &str, answers: &[(Duration, Answer)], within: Duration) -> Duration {
    let bad: Vec<_> = answers
        .iter()
        .filter(|(took, a)| !matches!(a, Answer::Token(_)) || *took > within)
        .collect();
    assert!(
        bad.is_empty(),
        "JWKS {phase}: exchanges with the cached keys failed or took over {within:?}: {bad:#?}"
    );
    answers.iter().map(|(d, _)| *d).max().unwrap_or_default()
}

async fn jwks_down_then_slow(_cluster: Arc<Cluster>) {
    let w = exchange_world("jwks").await;
    let op = replica::start("jwks-op", &w.ns, "faults-jwks").await;
    federation_support::wait_for_grants(&w.admin, &w.ns, 1).await;
    let keys = wait_trust(&w.admin, &w.trust, "True", "KeysLoaded").await;
    let client = ExchangeClient::new(&op.exchange_url(), None).unwrap();
    first_token(&w.issuer, &client, &MintRequest::new()).await;
    // Longer than the key cache's refetch interval (10 s), so the exchange itself fetches again.
    let period = Duration::from_secs(12);
    // A stall on the issuer would be its fetch timeout (10 s); a loaded machine may take a second.
    let within = Duration::from_secs(5);

    // Down: the endpoint answers 503.
    w.issuer.set_jwks_available(false);
    touch_trust(&w.admin, &w.trust, "down").await;
    let down_message = wait_trust(&w.admin, &w.trust, "False", "KeyFetchFailed").await;
    let down = exchange_for(&w, &client, period).await;
    let down_max = assert_all_issued("down", &down, within);

    // Slow: the endpoint answers after 30 s, beyond the fetch timeout (10 s).
    w.issuer.set_jwks_available(true);
    w.issuer.set_jwks_delay(Duration::from_secs(30));
    let requests = w.issuer.jwks_requests();
    touch_trust(&w.admin, &w.trust, "slow").await;
    // Exchanges while the controller's fetch hangs (10 s), and past the refetch interval after it
    // timed out, when exchanges find the keys due for a refresh.
    let slow = exchange_for(
        &w,
        &client,
        Duration::from_secs(10) + period + Duration::from_secs(2),
    )
    .await;
    let slow_max = assert_all_issued("slow", &slow, within);
    let slow_message = wait_trust(&w.admin, &w.trust, "False", "KeyFetchFailed").await;
    assert!(
        w.issuer.jwks_requests() > requests,
        "the slow endpoint was asked"
    );

    // Back: fetched again, Ready.
    w.issuer.set_jwks_delay(Duration::ZERO);
    touch_trust(&w.admin, &w.trust, "back").await;
    wait_trust(&w.admin, &w.trust, "True", "KeysLoaded").await;
    for (phase, message) in [("down", &down_message), ("slow", &slow_message)] {
        assert!(
            message.contains("still using"),
            "JWKS {phase}: the trust's status says the cached keys stay in use: {message}"
        );
    }
    eprintln!(
        "[faults] jwks: {keys}; down (503): status {down_message:?}, {} exchanges in {period:?} all issued (slowest {down_max:.1?}); slow (30 s): status {slow_message:?}, {} exchanges all issued (slowest {slow_max:.1?})",
        down.len(),
        slow.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Scenario: the operator killed (SIGKILL) mid-issuance and mid-reconcile

async fn operator_killed_mid_issuance_and_mid_reconcile(_cluster: Arc<Cluster>) {
    const N: usize = 30;
    let lease_name = "faults-kill";
    let w = exchange_world("opkill").await;
    // The Applications being reconciled live beside the exchange's, under a trust of their own.
    let apps_ns = support::app_namespace(&w.admin, "opkill-apps", "admin").await;
    let trust = support::selecting_trust(&w.admin, &apps_ns, None).await;
    let args = ["--exchange-reap-interval-seconds", "1"];
    let mut a = replica::start_with("kill-a", &w.ns, lease_name, &args, &[]).await;
    wait_holder(
        &w.admin,
        &w.ns,
        lease_name,
        "kill-a",
        Duration::from_secs(20),
    )
    .await;
    let b = replica::start_with("kill-b", &w.ns, lease_name, &args, &[]).await;
    federation_support::wait_for_grants(&w.admin, &w.ns, 1).await;
    // Short-lived ID tokens: a record lives until the ID token's exp, so its expiry comes soon.
    let id_token_life = Duration::from_secs(30);
    let mint = MintRequest::new().lifetime(id_token_life);
    let client = ExchangeClient::new(&a.exchange_url(), None).unwrap();
    let first = first_token(&w.issuer, &client, &mint).await;

    let jobs = Jobs::start(
        &w.issuer,
        &a.exchange_url(),
        8,
        Duration::ZERO,
        mint.clone(),
    );
    let names = app_names("app", N);
    apply_apps(&w.admin, &apps_ns, &names, &trust).await;
    let busy = support::eventually(Duration::from_secs(60), || async {
        tokens(&jobs.answers()).len() >= 10 && running(&w.admin, &apps_ns).await >= 1
    })
    .await;
    assert!(busy, "kill-a issued no tokens or reconciled nothing");
    // Only the exchanges in flight when it dies are cut off.
    jobs.halt();
    a.kill();
    let killed = Instant::now();
    let at_kill = running(&w.admin, &apps_ns).await;
    let answers = jobs.stop().await;
    let mut jtis = tokens(&answers);
    jtis.push(first);
    // Every token a job received has its record; check before any could expire.
    assert_every_token_has_its_record(&w.admin, w.issuer.url(), &jtis).await;
    let cut = answers
        .iter()
        .filter(|(_, a)| matches!(a, Answer::Transport(_)))
        .count();
    assert!(cut > 0, "no exchange was in flight when kill-a died");
    let others: Vec<_> = answers
        .iter()
        .filter(|(_, a)| matches!(a, Answer::Refused(..)))
        .collect();
    assert!(
        others.is_empty(),
        "refusals while kill-a was healthy: {others:#?}"
    );
    let received: BTreeSet<&String> = jtis.iter().collect();
    let orphans: Vec<TokenIssuance> = records(&w.admin, &w.ns)
        .await
        .into_iter()
        .filter(|r| !received.contains(&r.spec.jti))
        .collect();
    let latest_expiry = orphans
        .iter()
        .filter_map(|r| r.spec.expires_at.parse::<Timestamp>().ok())
        .max();
    let orphan_secrets = {
        let secrets = Api::<Secret>::namespaced(w.admin.clone(), &w.ns);
        let mut n = 0;
        for r in &orphans {
            n += usize::from(
                secrets
                    .get_opt(&r.spec.binding_secret)
                    .await
                    .unwrap()
                    .is_some(),
            );
        }
        n
    };

    // The next leader converges everything, and the reaper deletes every record once it expires.
    wait_holder(
        &w.admin,
        &w.ns,
        lease_name,
        "kill-b",
        Duration::from_secs(30),
    )
    .await;
    let handover = killed.elapsed();
    let took = converge(&w.admin, &apps_ns, N, Duration::from_secs(180)).await;
    assert_converged_exactly(&w.admin, &apps_ns, &names).await;
    let last_expiry = records(&w.admin, &w.ns)
        .await
        .iter()
        .filter_map(|r| r.spec.expires_at.parse::<Timestamp>().ok())
        .max();
    let left = last_expiry.map_or(Duration::ZERO, |t| {
        Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or_default()
    });
    let reaped = support::eventually(left + Duration::from_secs(60), || async {
        records(&w.admin, &w.ns).await.is_empty()
    })
    .await;
    assert!(
        reaped,
        "records of kill-a's tokens are still there 60 s after their expiry: {:?}",
        records(&w.admin, &w.ns)
            .await
            .iter()
            .map(|r| (r.name_any(), r.spec.expires_at.clone()))
            .collect::<Vec<_>>()
    );
    let reaped_after = latest_expiry.map(|t| secs(Timestamp::now().duration_since(t)));
    let secrets_gone = support::eventually(Duration::from_secs(60), || async {
        federation_binding_secrets(&w.admin, &w.ns).await == 0
    })
    .await;
    assert!(
        secrets_gone,
        "binding Secrets outlived their records (garbage collection)"
    );
    drop(b);
    eprintln!(
        "[faults] operator-kill: kill -9 with {} tokens issued, {cut} exchanges cut off and {at_kill}/{N} Applications running; every received token has its record; {} records (with {orphan_secrets} binding Secrets) whose token never reached a job, all expiring within the ID token's {id_token_life:?}; kill-b led {handover:.1?} after the kill, converged all {N} in {took:.1?} with every object exactly once, and reaped every record (the last {:.1?} s after it expired)",
        jtis.len(),
        orphans.len(),
        reaped_after.unwrap_or_default()
    );
}

async fn federation_binding_secrets(client: &Client, ns: &str) -> usize {
    Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{}=true", oam_trust::names::LABEL_BINDING)))
        .await
        .unwrap()
        .items
        .len()
}
