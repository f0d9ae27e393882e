//! The chart, rendered by the helm binary `hack/build-binaries.sh` builds, and applied object by
//! object with the admin client (server-side apply), for tests that need the chart's identities
//! without a helm release.
use std::path::{Path, PathBuf};
use std::process::Output;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart() -> PathBuf {
    root().join("charts/oam-trust")
}

/// The helm binary hack/build-binaries.sh built (on PATH via OAM_TRUST_BIN, or built on demand).
pub fn helm() -> PathBuf {
    static HELM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HELM.get_or_init(|| {
        if let Ok(dir) = std::env::var("OAM_TRUST_BIN") {
            let p = Path::new(&dir).join("helm");
            if p.is_file() {
                return p;
            }
        }
        let out = std::process::Command::new("bash")
            .arg(root().join("hack/build-binaries.sh"))
            .arg("helm")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running hack/build-binaries.sh helm");
        assert!(out.status.success(), "hack/build-binaries.sh helm failed");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let dir = stdout
            .lines()
            .last()
            .expect("build-binaries prints the bin dir");
        Path::new(dir.trim()).join("helm")
    })
    .clone()
}

/// Runs helm with a private home (no repositories, no user config) and returns its output.
pub fn run_helm(args: &[&str]) -> Output {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    std::process::Command::new(helm())
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .expect("running helm")
}

pub fn helm_ok(args: &[&str]) -> String {
    let out = run_helm(args);
    assert!(
        out.status.success(),
        "helm {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `helm template` of the chart as release `release` in namespace `ns`, parsed into objects.
pub fn render(release: &str, ns: &str, extra: &[&str]) -> Vec<Value> {
    let chart = chart().to_string_lossy().into_owned();
    let mut args = vec!["template", release, chart.as_str(), "-n", ns];
    args.extend_from_slice(extra);
    parse_docs(&helm_ok(&args))
}

pub fn parse_docs(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .filter_map(|doc| {
            let v: Value = serde::Deserialize::deserialize(doc).expect("helm renders valid YAML");
            (!v.is_null()).then_some(v)
        })
        .collect()
}

/// The API resource of a rendered object (the kinds a chart holds: plural by the English rule).
fn resource_of(object: &Value) -> ApiResource {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let lower = kind.to_ascii_lowercase();
    let plural = match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{lower}s"),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural)
}

/// Server-side applies each of `objects` as the admin (namespaced ones into their namespace).
pub async fn apply_all(admin: &Client, objects: &[&Value]) {
    let pp = PatchParams::apply("oam-trust-tests").force();
    for object in objects {
        let ar = resource_of(object);
        let name = object["metadata"]["name"].as_str().expect("name");
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(admin.clone(), ns, &ar),
            None => Api::all_with(admin.clone(), &ar),
        };
        api.patch(name, &pp, &Patch::Apply(object))
            .await
            .unwrap_or_else(|e| panic!("applying {} {name}: {e}", ar.kind));
    }
}
