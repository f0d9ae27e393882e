//! Load harness (not a criterion benchmark): how fast the operator converges N Applications on the
//! local control plane, beside the same rendered objects server-side applied in a plain loop, what
//! each costs the API server (CPU seconds of kube-apiserver and etcd, read from /proc), what the
//! operator process costs (CPU, resident memory, requests by method), and, after a restart, how
//! soon a new operator is ready, how long its resync of the unchanged Applications takes and how
//! many writes it sends (target: zero).
//!
//!   cargo bench --bench converge                                   # N = 500, one run
//!   OAM_TRUST_BENCH_APPS=100,250,500 OAM_TRUST_BENCH_RUNS=2 cargo bench --bench converge
//!   OAM_TRUST_BENCH_APPS=5000 OAM_TRUST_BENCH_PLAIN=0 cargo bench --bench converge   # scale
//!   OAM_TRUST_BENCH_CSV=target/converge.csv …                     # one row a measurement
//!   hack/bench-converge.sh 100 250 500 1000                        # runs it and plots the PNG
//!
//! The operator is the real binary (`oam-trust run --role controller`), a child process, so its CPU
//! and memory are its own. Uses the cluster of `OAM_TRUST_TEST_KUBECONFIG` (its `pids/` beside the
//! kubeconfig, as `hack/cluster.sh` writes them), or starts `hack/cluster.sh up`.
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::ApiResource;
use kube::{Api, Client, Config, ResourceExt};
use oam_trust::api::oam::Application;
use serde_json::{Value, json};

#[path = "support/process.rs"]
mod process;
use process::{cpu_seconds, free_port, rss_mib};

fn app(i: usize) -> Value {
    json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": format!("bench-{i:05}")},
        "spec": {"components": [{"name": format!("web-{i:05}"), "type": "webservice",
            "properties": {"image": "oamdev/hello-world:v1", "ports": [{"port": 8000, "expose": true}]},
            "traits": [{"type": "scaler", "properties": {"replicas": 1}}]}]}})
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

fn env_flag(name: &str, default: bool) -> bool {
    std::env::var(name).map_or(default, |v| v != "0" && v != "false")
}

async fn kubeconfig() -> PathBuf {
    if let Ok(p) = std::env::var("OAM_TRUST_TEST_KUBECONFIG") {
        return p.into();
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let ok = Command::new("bash")
        .arg(format!("{root}/hack/cluster.sh"))
        .arg("up")
        .status()
        .unwrap();
    assert!(ok.success(), "hack/cluster.sh up failed");
    format!("{root}/.cluster/kubeconfig").into()
}

async fn config(path: &Path) -> Config {
    let kc = Kubeconfig::read_from(path).unwrap();
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap()
}

/// The control plane's processes, from the `pids/` directory `hack/cluster.sh` writes.
struct ControlPlane {
    apiserver: u32,
    etcd: u32,
}

impl ControlPlane {
    fn of(kubeconfig: &Path) -> ControlPlane {
        let dir = kubeconfig.parent().unwrap().join("pids");
        let pid = |name: &str| {
            std::fs::read_to_string(dir.join(format!("{name}.pid")))
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no pid of {name} in {}", dir.display()))
        };
        ControlPlane {
            apiserver: pid("kube-apiserver"),
            etcd: pid("etcd"),
        }
    }
    /// CPU seconds of kube-apiserver and etcd so far.
    fn cpu(&self) -> (f64, f64) {
        (cpu_seconds(self.apiserver), cpu_seconds(self.etcd))
    }
}

/// `GET path` on 127.0.0.1:port: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The real operator binary, as a child process (controller role, no leader election).
struct Operator {
    child: Child,
    health: u16,
}

impl Operator {
    fn start(kubeconfig: &Path, name: &str) -> Operator {
        let health = free_port();
        let log = std::env::temp_dir().join(format!("oam-trust-bench-{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_oam-trust"))
            .args([
                "run",
                "--role",
                "controller",
                "--leader-elect",
                "false",
                "--instance",
                name,
            ])
            .arg(format!("--health-addr=127.0.0.1:{health}"))
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("OAM_TRUST_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting oam-trust run");
        Operator { child, health }
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Waits for `/readyz` to answer 200; returns how long that took from `since`.
    async fn wait_ready(&mut self, since: Instant) -> Duration {
        loop {
            if http_get(self.health, "/readyz").is_some_and(|(s, _)| s == 200) {
                return since.elapsed();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the operator exited ({status}) before it was ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    /// One counter of `/metrics`, summed over the series whose labels contain `labels`.
    fn metric(&self, name: &str, labels: &str) -> u64 {
        let (_, text) = http_get(self.health, "/metrics").unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
    fn requests(&self, method: &str) -> u64 {
        self.metric(
            "oam_trust_api_requests_total",
            &format!("method=\"{method}\""),
        )
    }
    fn writes(&self) -> u64 {
        ["POST", "PUT", "PATCH", "DELETE"]
            .iter()
            .map(|m| self.requests(m))
            .sum()
    }
    fn reconciles(&self) -> u64 {
        self.metric("oam_trust_reconciles_total", "controller=\"application\"")
    }
    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn delete_namespace(client: &Client, name: &str) {
    let api = Api::<Namespace>::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    while api.get_opt(name).await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn namespace(client: &Client, name: &str) {
    delete_namespace(client, name).await;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// Watches `api` until `n` of its objects satisfy each of `marks`, in order; returns when each was
/// reached, measured from `since`. A watch, not a poll: a list of every object four times a second
/// would cost the API server more than some of what is measured (a list of 500 Applications is a
/// JSON encoding of each), and the two sides list different kinds, so polling would weigh them
/// unevenly.
async fn watch_until<K>(
    api: Api<K>,
    n: usize,
    since: Instant,
    marks: &[&dyn Fn(&K) -> bool],
) -> Vec<f64>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    use futures::TryStreamExt as _;
    use kube::runtime::{WatchStreamExt as _, reflector, watcher};
    let (store, writer) = reflector::store();
    let events = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    futures::pin_mut!(events);
    let mut reached = Vec::new();
    while reached.len() < marks.len() {
        events
            .try_next()
            .await
            .expect("watching the measured objects")
            .expect("the watch of the measured objects ended");
        let objects = store.state();
        while reached.len() < marks.len()
            && objects.iter().filter(|o| marks[reached.len()](o)).count() >= n
        {
            reached.push(since.elapsed().as_secs_f64());
        }
    }
    reached
}

fn ready(d: &Deployment) -> bool {
    d.status.as_ref().and_then(|s| s.ready_replicas) == Some(1)
}

fn applied(a: &Application) -> bool {
    a.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Applied" && c.status == "True")
    })
}

fn running(a: &Application) -> bool {
    a.status.as_ref().and_then(|s| s.status.as_deref()) == Some("running")
}

/// What one side of a measurement cost.
#[derive(Default)]
struct Cost {
    applied: f64,
    ready: f64,
    apiserver_cpu: f64,
    etcd_cpu: f64,
}

/// The plain loop: every Application rendered once, each object server-side applied in turn.
async fn plain_loop(client: &Client, cp: &ControlPlane, n: usize, ns: &str) -> Cost {
    namespace(client, ns).await;
    let defs = oam_trust::render::Definitions::default();
    let mut objects = Vec::new();
    for i in 0..n {
        let mut a: Application = serde_json::from_value(app(i)).unwrap();
        a.metadata.namespace = Some(ns.into());
        objects.extend(
            oam_trust::render::render_application(&a, &defs)
                .unwrap()
                .into_iter()
                .map(|r| r.object),
        );
    }
    let (api0, etcd0) = cp.cpu();
    let started = Instant::now();
    for obj in &objects {
        let api_version = obj["apiVersion"].as_str().unwrap();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let kind = obj["kind"].as_str().unwrap();
        let ar = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            plural: format!("{}s", kind.to_lowercase()),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        let name = obj["metadata"]["name"].as_str().unwrap();
        api.patch(
            name,
            &PatchParams::apply("bench-plain").force(),
            &Patch::Apply(obj),
        )
        .await
        .unwrap();
    }
    let applied = started.elapsed().as_secs_f64();
    let ready = watch_until(
        Api::<Deployment>::namespaced(client.clone(), ns),
        n,
        started,
        &[&ready],
    )
    .await[0];
    let (api1, etcd1) = cp.cpu();
    println!(
        "  plain loop: {} objects applied in {applied:.1}s, {n} Deployments ready after {ready:.1}s; kube-apiserver {:.1} CPU-s, etcd {:.1} CPU-s",
        objects.len(),
        api1 - api0,
        etcd1 - etcd0
    );
    Cost {
        applied,
        ready,
        apiserver_cpu: api1 - api0,
        etcd_cpu: etcd1 - etcd0,
    }
}

/// What the operator side measured beyond its [`Cost`].
#[derive(Default)]
struct OperatorRun {
    cost: Cost,
    cpu: f64,
    idle_rss: f64,
    rss: f64,
    peak_rss: f64,
    writes: u64,
    gets: u64,
    restart_ready: f64,
    resync: f64,
    resync_writes: u64,
    resync_gets: u64,
    resync_rss: f64,
}

async fn operator(
    client: &Client,
    kubeconfig: &Path,
    cp: &ControlPlane,
    n: usize,
    ns: &str,
    restart: bool,
) -> OperatorRun {
    namespace(client, ns).await;
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "oam-trust-applier"}})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let rb: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "applier"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "oam-trust-applier", "namespace": ns}]})).unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();
    let mut op = Operator::start(kubeconfig, "bench");
    op.wait_ready(Instant::now()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss_mib(op.pid()).0;
    let (api0, etcd0) = cp.cpu();
    let op_cpu0 = cpu_seconds(op.pid());
    let started = Instant::now();
    let apps = Api::<Application>::namespaced(client.clone(), ns);
    for i in 0..n {
        let a: Application = serde_json::from_value(app(i)).unwrap();
        apps.patch(
            &a.name_any(),
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&a),
        )
        .await
        .unwrap();
    }
    let reached = watch_until(apps, n, started, &[&applied, &running]).await;
    let (t_applied, t_running) = (reached[0], reached[1]);
    let (api1, etcd1) = cp.cpu();
    let cpu = cpu_seconds(op.pid()) - op_cpu0;
    let (rss, peak_rss) = rss_mib(op.pid());
    let (writes, gets) = (op.writes(), op.requests("GET"));
    println!(
        "  operator: {n} Applications applied in {t_applied:.1}s, all running after {t_running:.1}s; kube-apiserver {:.1} CPU-s, etcd {:.1} CPU-s; operator {cpu:.1} CPU-s, RSS {rss:.1} MiB (idle {idle_rss:.1}, peak {peak_rss:.1}); {writes} writes, {gets} GETs",
        api1 - api0,
        etcd1 - etcd0
    );
    let mut run = OperatorRun {
        cost: Cost {
            applied: t_applied,
            ready: t_running,
            apiserver_cpu: api1 - api0,
            etcd_cpu: etcd1 - etcd0,
        },
        cpu,
        idle_rss,
        rss,
        peak_rss,
        writes,
        gets,
        ..Default::default()
    };
    if restart {
        // Let it settle (no write for 5 s), then restart: a new process lists everything and
        // reconciles every Application once more.
        let mut last = op.writes();
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let now = op.writes();
            if now == last {
                break;
            }
            last = now;
        }
        op.stop();
        let started = Instant::now();
        let mut op = Operator::start(kubeconfig, "bench-restarted");
        run.restart_ready = op.wait_ready(started).await.as_secs_f64();
        while op.reconciles() < n as u64 && started.elapsed() < Duration::from_secs(1800) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        run.resync = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        run.resync_writes = op.writes();
        run.resync_gets = op.requests("GET");
        run.resync_rss = rss_mib(op.pid()).0;
        println!(
            "  restart: ready after {:.1}s, {} reconciles after {:.1}s, {} writes, {} GETs, RSS {:.1} MiB",
            run.restart_ready,
            op.reconciles(),
            run.resync,
            run.resync_writes,
            run.resync_gets,
            run.resync_rss
        );
        // Applications have a finalizer: the namespace goes while an operator runs.
        delete_namespace(client, ns).await;
        op.stop();
    } else {
        delete_namespace(client, ns).await;
        op.stop();
    }
    run
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("converge is a load harness: run it with `cargo bench --bench converge`");
        return;
    }
    let sizes = env_list("OAM_TRUST_BENCH_APPS", "500");
    let runs = env_list("OAM_TRUST_BENCH_RUNS", "1")
        .first()
        .copied()
        .unwrap_or(1);
    let with_plain = env_flag("OAM_TRUST_BENCH_PLAIN", true);
    let restart = env_flag("OAM_TRUST_BENCH_RESTART", true);
    let kubeconfig = kubeconfig().await;
    let config = config(&kubeconfig).await;
    let client = Client::try_from(config.clone()).unwrap();
    let cp = ControlPlane::of(&kubeconfig);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in oam_trust::api::all_crds() {
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Only this harness's Applications may be in the cluster: leftovers of test runs (some invalid on
    // purpose, retried on a timer) would add their own writes to the resync count. No operator runs
    // yet to release their Applications' finalizers, so they are dropped here.
    let namespaces = Api::<Namespace>::all(client.clone());
    for ns in namespaces
        .list(&ListParams::default().labels("oam-trust.dev/test=true"))
        .await
        .unwrap()
    {
        let _ = namespaces
            .delete(&ns.name_any(), &DeleteParams::default())
            .await;
        let apps = Api::<Application>::namespaced(client.clone(), &ns.name_any());
        for a in apps.list(&ListParams::default()).await.unwrap() {
            let _ = apps
                .patch(
                    &a.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await;
        }
        delete_namespace(&client, &ns.name_any()).await;
    }

    let mut csv = std::env::var("OAM_TRUST_BENCH_CSV")
        .ok()
        .map(|path| std::fs::File::create(path).expect("creating OAM_TRUST_BENCH_CSV"));
    if let Some(f) = &mut csv {
        writeln!(f, "apps,run,plain_applied_s,plain_ready_s,plain_apiserver_cpu_s,plain_etcd_cpu_s,operator_applied_s,operator_running_s,operator_apiserver_cpu_s,operator_etcd_cpu_s,operator_cpu_s,operator_idle_rss_mib,operator_rss_mib,operator_peak_rss_mib,operator_writes,operator_gets,restart_ready_s,resync_s,resync_writes,resync_gets,resync_rss_mib").unwrap();
    }
    for &n in &sizes {
        for run in 1..=runs {
            println!("{n} Applications, run {run}:");
            let plain = match with_plain {
                true => plain_loop(&client, &cp, n, "bench-plain").await,
                false => Cost::default(),
            };
            delete_namespace(&client, "bench-plain").await;
            let op = operator(&client, &kubeconfig, &cp, n, "bench-operator", restart).await;
            if with_plain {
                println!(
                    "  ratio operator/plain: applied {:.2}x, ready/running {:.2}x, kube-apiserver CPU {:.2}x",
                    op.cost.applied / plain.applied,
                    op.cost.ready / plain.ready,
                    op.cost.apiserver_cpu / plain.apiserver_cpu
                );
            }
            if let Some(f) = &mut csv {
                writeln!(
                    f,
                    "{n},{run},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.1},{:.1},{:.1},{},{},{:.2},{:.2},{},{},{:.1}",
                    plain.applied,
                    plain.ready,
                    plain.apiserver_cpu,
                    plain.etcd_cpu,
                    op.cost.applied,
                    op.cost.ready,
                    op.cost.apiserver_cpu,
                    op.cost.etcd_cpu,
                    op.cpu,
                    op.idle_rss,
                    op.rss,
                    op.peak_rss,
                    op.writes,
                    op.gets,
                    op.restart_ready,
                    op.resync,
                    op.resync_writes,
                    op.resync_gets,
                    op.resync_rss
                )
                .unwrap();
            }
        }
    }
    std::process::exit(0);
}
