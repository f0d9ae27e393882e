//! Load harness (not a criterion benchmark): how fast the operator converges N Applications on the
//! local control plane, beside the same rendered objects server-side applied in a plain loop, and how
//! many write requests a full resync of unchanged Applications sends (target: zero).
//!
//!   cargo bench --bench converge              # N = 500
//!   OAM_TRUST_BENCH_APPS=100 cargo bench --bench converge
//!
//! Uses the cluster of `OAM_TRUST_TEST_KUBECONFIG`, or starts `hack/cluster.sh up`.
use std::sync::Arc;
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
use oam_trust::runtime::metrics::Metrics;
use oam_trust::runtime::{RunArgs, run_with_metrics};
use serde_json::{Value, json};

fn app(i: usize) -> Value {
    json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": format!("bench-{i:04}")},
        "spec": {"components": [{"name": format!("web-{i:04}"), "type": "webservice",
            "properties": {"image": "oamdev/hello-world:v1", "ports": [{"port": 8000, "expose": true}]},
            "traits": [{"type": "scaler", "properties": {"replicas": 1}}]}]}})
}

async fn config() -> Config {
    let path = match std::env::var("OAM_TRUST_TEST_KUBECONFIG") {
        Ok(p) => p,
        Err(_) => {
            let root = env!("CARGO_MANIFEST_DIR");
            let ok = std::process::Command::new("bash")
                .arg(format!("{root}/hack/cluster.sh"))
                .arg("up")
                .status()
                .unwrap();
            assert!(ok.success(), "hack/cluster.sh up failed");
            format!("{root}/.cluster/kubeconfig")
        }
    };
    let kc = Kubeconfig::read_from(path).unwrap();
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap()
}

async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
    while Api::<Namespace>::all(client.clone())
        .get_opt(name)
        .await
        .unwrap()
        .is_some()
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

async fn wait_ready_deployments(client: &Client, ns: &str, n: usize) {
    let api = Api::<Deployment>::namespaced(client.clone(), ns);
    loop {
        let ready = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|d| d.status.as_ref().and_then(|s| s.ready_replicas) == Some(1))
            .count();
        if ready >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn count_apps(client: &Client, ns: &str, pred: impl Fn(&Application) -> bool) -> usize {
    Api::<Application>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|a| pred(a))
        .count()
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

fn start_operator(config: Config, metrics: Arc<Metrics>) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let args = RunArgs {
            health_addr: "127.0.0.1:0".parse().unwrap(),
            concurrency: 16,
            instance: Some("bench".into()),
            leader_elect: false,
            lease_namespace: "default".into(),
            definitions_namespace: oam_trust::names::DEFAULT_DEFINITIONS_NAMESPACE.into(),
            role: Default::default(),
            rights: Default::default(),
            authn: Default::default(),
            lease_name: "oam-trust-bench".into(),
            exchange: Default::default(),
            revision_limit: oam_trust::names::DEFAULT_REVISION_LIMIT,
        };
        rt.block_on(async move { run_with_metrics(config, args, metrics).await.unwrap() });
    });
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("converge is a load harness: run it with `cargo bench --bench converge`");
        return;
    }
    oam_trust::telemetry::init(oam_trust::telemetry::LogFormat::Text, "warn");
    let n: usize = std::env::var("OAM_TRUST_BENCH_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let config = config().await;
    let client = Client::try_from(config.clone()).unwrap();
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
    // purpose, retried on a timer) would add their own writes to the resync count.
    let namespaces = Api::<Namespace>::all(client.clone());
    for ns in namespaces
        .list(&ListParams::default().labels("oam-trust.dev/test=true"))
        .await
        .unwrap()
    {
        let _ = namespaces
            .delete(&ns.name_any(), &DeleteParams::default())
            .await;
    }
    while !namespaces
        .list(&ListParams::default().labels("oam-trust.dev/test=true"))
        .await
        .unwrap()
        .items
        .is_empty()
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Plain loop: render every Application once, server-side apply each object in turn.
    let plain = "bench-plain";
    namespace(&client, plain).await;
    let defs = oam_trust::render::Definitions::default();
    let mut objects = Vec::new();
    for i in 0..n {
        let mut a: Application = serde_json::from_value(app(i)).unwrap();
        a.metadata.namespace = Some(plain.into());
        objects.extend(
            oam_trust::render::render_application(&a, &defs)
                .unwrap()
                .into_iter()
                .map(|r| r.object),
        );
    }
    let started = Instant::now();
    for obj in &objects {
        let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (
                String::new(),
                obj["apiVersion"].as_str().unwrap().to_string(),
            ),
        };
        let kind = obj["kind"].as_str().unwrap();
        let plural = format!("{}s", kind.to_lowercase());
        let ar = ApiResource {
            group: group.clone(),
            version: version.clone(),
            api_version: obj["apiVersion"].as_str().unwrap().into(),
            kind: kind.into(),
            plural,
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), plain, &ar);
        let name = obj["metadata"]["name"].as_str().unwrap();
        api.patch(
            name,
            &PatchParams::apply("bench-plain").force(),
            &Patch::Apply(obj),
        )
        .await
        .unwrap();
    }
    let plain_applied = started.elapsed();
    wait_ready_deployments(&client, plain, n).await;
    let plain_ready = started.elapsed();
    println!(
        "plain loop: {} objects applied in {:.1}s, {n} Deployments ready after {:.1}s",
        objects.len(),
        plain_applied.as_secs_f64(),
        plain_ready.as_secs_f64()
    );

    // Operator: N Applications created, one operator converges them.
    let ns = "bench-operator";
    namespace(&client, ns).await;
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
    let metrics = Arc::new(Metrics::default());
    start_operator(config.clone(), metrics.clone());
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
    let mut t_applied = None;
    loop {
        if t_applied.is_none() && count_apps(&client, ns, applied).await >= n {
            t_applied = Some(started.elapsed());
        }
        if count_apps(&client, ns, running).await >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let t_running = started.elapsed();
    let t_applied = t_applied.unwrap_or(t_running);
    println!(
        "operator: {n} Applications applied in {:.1}s, all running after {:.1}s ({} write requests)",
        t_applied.as_secs_f64(),
        t_running.as_secs_f64(),
        metrics.api_writes()
    );
    println!(
        "ratio operator/plain: applied {:.2}x, ready/running {:.2}x",
        t_applied.as_secs_f64() / plain_applied.as_secs_f64(),
        t_running.as_secs_f64() / plain_ready.as_secs_f64()
    );

    // Let the first operator settle: no write from it for 5 s.
    let mut last = metrics.api_writes();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = metrics.api_writes();
        if now == last {
            break;
        }
        last = now;
    }
    // Resync: a second operator lists everything and reconciles every Application once more.
    let resync = Arc::new(Metrics::default());
    start_operator(config.clone(), resync.clone());
    let started = Instant::now();
    while resync.reconciles("application") < n as u64
        && started.elapsed() < Duration::from_secs(600)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "resync of {n} unchanged Applications: {} reconciles in {:.1}s, {} write requests",
        resync.reconciles("application"),
        started.elapsed().as_secs_f64(),
        resync.api_writes()
    );
    for line in resync
        .encode()
        .lines()
        .filter(|l| l.starts_with("oam_trust_api_requests_total"))
    {
        println!("  {line}");
    }
    for ns in [plain, ns] {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(ns, &DeleteParams::default())
            .await;
    }
    std::process::exit(0);
}
