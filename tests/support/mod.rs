//! Test harness for integration tests against the real local control plane (`hack/cluster.sh`).
//!
//! One control plane per test run: `hack/test.sh` starts it and exports `OAM_TRUST_TEST_KUBECONFIG`.
//! When a test binary runs without it (plain `cargo test`), the harness starts the same cluster itself
//! (`hack/cluster.sh up` is idempotent) rather than skipping. Every test gets its own namespace.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config};
use tokio::sync::OnceCell;

pub mod cluster;
pub mod helm;
pub mod replica;

static KUBECONFIG: OnceCell<PathBuf> = OnceCell::const_new();
static CRDS: OnceCell<()> = OnceCell::const_new();

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Points this test binary at the control plane of `kubeconfig` (one it started for itself, see
/// `cluster`) instead of the shared one; call before anything else talks to a cluster.
pub fn use_kubeconfig(kubeconfig: PathBuf) {
    if let Err(e) = KUBECONFIG.set(kubeconfig.clone()) {
        assert_eq!(
            KUBECONFIG.get(),
            Some(&kubeconfig),
            "the harness already uses another cluster ({e})"
        );
    }
}

/// Path of the admin kubeconfig of the local control plane, starting it if needed.
pub async fn kubeconfig_path() -> PathBuf {
    KUBECONFIG
        .get_or_init(|| async {
            if let Ok(p) = std::env::var("OAM_TRUST_TEST_KUBECONFIG") {
                return PathBuf::from(p);
            }
            let script = repo_root().join("hack/cluster.sh");
            let out = tokio::process::Command::new("bash")
                .arg(&script)
                .arg("up")
                .stderr(std::process::Stdio::inherit())
                .output()
                .await
                .expect("running hack/cluster.sh up");
            assert!(
                out.status.success(),
                "hack/cluster.sh up failed; see its output above (hack/cluster.sh logs)"
            );
            let dir = std::env::var("OAM_TRUST_CLUSTER_DIR")
                .map(PathBuf::from)
                .unwrap_or(repo_root().join(".cluster"));
            dir.join("kubeconfig")
        })
        .await
        .clone()
}

/// The admin (`system:masters`) client config.
pub async fn admin_config() -> Config {
    let kc = Kubeconfig::read_from(kubeconfig_path().await).expect("reading the test kubeconfig");
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("building a config from the test kubeconfig")
}

pub async fn admin() -> Client {
    Client::try_from(admin_config().await).expect("admin client")
}

/// A client that authenticates with a bearer token only (no client certificate).
pub async fn client_with_token(token: &str) -> Client {
    let mut cfg = admin_config().await;
    cfg.auth_info = Default::default();
    cfg.auth_info.token = Some(token.to_string().into());
    Client::try_from(cfg).expect("token client")
}

/// A client that impersonates `user` with `groups`, through the admin identity.
pub async fn impersonating(user: &str, groups: &[&str]) -> Client {
    let mut cfg = admin_config().await;
    cfg.auth_info.impersonate = Some(user.to_string());
    cfg.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    Client::try_from(cfg).expect("impersonating client")
}

/// Installs the project's CRDs (from the Rust types) once per test binary and waits for Established.
pub async fn install_crds(client: &Client) {
    CRDS.get_or_init(|| async {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in oam_trust::api::all_crds() {
            let name = crd.metadata.name.clone().unwrap();
            api.patch(
                &name,
                &PatchParams::apply("oam-trust-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("the API server refused CRD {name}: {e}"));
            let established = await_condition(api.clone(), &name, conditions::is_crd_established());
            tokio::time::timeout(Duration::from_secs(30), established)
                .await
                .unwrap_or_else(|_| panic!("CRD {name} not Established within 30s"))
                .unwrap();
        }
    })
    .await;
}

/// A fresh namespace for one test, labelled so it can be found and selected.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let suffix: u32 = rand_suffix();
    let name = format!("{prefix}-{suffix:08x}");
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"oam-trust.dev/test": "true"}}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("creating the test namespace");
    name
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

/// Creates a ServiceAccount (if absent) and returns a TokenRequest token for it.
pub async fn service_account_token(client: &Client, ns: &str, name: &str, seconds: i64) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    if sas.get_opt(name).await.unwrap().is_none() {
        let sa: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        sas.create(&PostParams::default(), &sa)
            .await
            .expect("creating the ServiceAccount");
    }
    token_for(client, ns, name, seconds).await
}

/// A TokenRequest token for an existing ServiceAccount.
pub async fn token_for(client: &Client, ns: &str, name: &str, seconds: i64) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(seconds),
            ..Default::default()
        },
        ..Default::default()
    };
    sas.create_token_request(name, &PostParams::default(), &tr)
        .await
        .expect("TokenRequest")
        .status
        .expect("TokenRequest status")
        .token
}

/// Who the API server says the client is: (username, groups).
pub async fn whoami(client: &Client) -> kube::Result<(String, Vec<String>)> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
    Ok((
        user.username.unwrap_or_default(),
        user.groups.unwrap_or_default(),
    ))
}

/// What the client may do, asked of the API server (SelfSubjectAccessReview).
pub struct Access<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

pub async fn can_i(client: &Client, a: Access<'_>) -> bool {
    let (resource, subresource) = match a.resource.split_once('/') {
        Some((r, s)) => (r.to_string(), Some(s.to_string())),
        None => (a.resource.to_string(), None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(a.verb.into()),
                group: Some(a.group.into()),
                resource: Some(resource),
                subresource,
                namespace: a.namespace.map(Into::into),
                name: a.name.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectAccessReview")
        .status
        .map(|s| s.allowed)
        .unwrap_or(false)
}

/// Polls `f` until it returns true or `timeout` passes; returns whether it became true.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

static OPERATOR: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// Starts one operator (`oam-trust run` in-process, admin credentials) for this test binary, on a
/// thread with its own runtime so it outlives each test's runtime. Installs the CRDs first.
pub async fn operator() {
    let client = admin().await;
    install_crds(&client).await;
    let config = admin_config().await;
    OPERATOR.get_or_init(move || {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let args = oam_trust::runtime::RunArgs {
                    health_addr: "127.0.0.1:0".parse().unwrap(),
                    concurrency: 16,
                    instance: Some("tests".into()),
                    // The real election path, on a Lease of this test binary alone (a previous binary's
                    // operator died without releasing its own).
                    leader_elect: true,
                    lease_namespace: "default".into(),
                    definitions_namespace: oam_trust::names::DEFAULT_DEFINITIONS_NAMESPACE.into(),
                    role: Default::default(),
                    rights: Default::default(),
                    authn: Default::default(),
                    lease_name: format!("oam-trust-tests-{}", std::process::id()),
                    exchange: Default::default(),
                    revision_limit: oam_trust::names::DEFAULT_REVISION_LIMIT,
                };
                if let Err(e) = oam_trust::runtime::run_with_config(config, args).await {
                    eprintln!("the operator under test stopped: {e:#}");
                }
            });
        });
    });
}

/// `RunArgs` of an operator one test runs for itself: no Lease (its renewals would be writes of
/// their own), four Applications at once, an ephemeral health port.
pub fn own_operator_args(instance: &str) -> oam_trust::runtime::RunArgs {
    oam_trust::runtime::RunArgs {
        health_addr: "127.0.0.1:0".parse().unwrap(),
        concurrency: 4,
        instance: Some(instance.into()),
        leader_elect: false,
        lease_namespace: "default".into(),
        definitions_namespace: oam_trust::names::DEFAULT_DEFINITIONS_NAMESPACE.into(),
        role: Default::default(),
        rights: Default::default(),
        authn: Default::default(),
        lease_name: "unused".into(),
        exchange: Default::default(),
        revision_limit: oam_trust::names::DEFAULT_REVISION_LIMIT,
    }
}

/// Runs an operator with `args` as the admin on this test's runtime, recording into `metrics`;
/// abort the handle to stop it.
pub async fn start_own_operator(
    args: oam_trust::runtime::RunArgs,
    metrics: std::sync::Arc<oam_trust::runtime::metrics::Metrics>,
) -> tokio::task::JoinHandle<()> {
    let config = admin_config().await;
    tokio::spawn(async move {
        if let Err(e) = oam_trust::runtime::run_with_metrics(config, args, metrics).await {
            panic!("the operator under test stopped: {e:#}");
        }
    })
}

/// A namespace with an applier ServiceAccount bound to the given ClusterRole (`admin` when the test
/// does not care): what a namespace admin sets up once for oam-trust.
pub async fn app_namespace(client: &Client, prefix: &str, applier_role: &str) -> String {
    let ns = namespace(client, prefix).await;
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "oam-trust-applier"}}))
            .unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let rb: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "oam-trust-applier"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": applier_role},
        "subjects": [{"kind": "ServiceAccount", "name": "oam-trust-applier", "namespace": ns}]
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();
    ns
}

/// Polls `api.get(name)` until `pred` holds and returns the object; panics after `timeout` with `what`
/// and the object's last `status`, so a failing test says where it stood.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&K) -> bool,
) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let obj = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("reading {name}: {e}"));
        if pred(&obj) {
            return obj;
        }
        if tokio::time::Instant::now() > deadline {
            let status = serde_json::to_value(&obj)
                .map(|v| v["status"].clone())
                .unwrap_or_default();
            panic!(
                "{name}: {what} not reached within {timeout:?}; status: {}",
                serde_json::to_string_pretty(&status).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the `oam-trust` binary as a person does, with `kubeconfig` and no `OAM_TRUST_APP`; returns
/// (exit code, stdout, stderr).
pub async fn oam_trust(kubeconfig: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_oam-trust"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("OAM_TRUST_APP")
        .output()
        .await
        .expect("running oam-trust");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An Application's phase (`status.status`), empty before the first status write.
pub fn app_phase(a: &oam_trust::api::oam::Application) -> &str {
    a.status
        .as_ref()
        .and_then(|s| s.status.as_deref())
        .unwrap_or("")
}

/// Running, and the status describes the current generation (not an older spec).
pub fn app_running(a: &oam_trust::api::oam::Application) -> bool {
    app_phase(a) == "running"
        && a.status.as_ref().and_then(|s| s.observed_generation) == a.metadata.generation
}

/// The default wait for an Application to reach a state.
pub const APP_WAIT: Duration = Duration::from_secs(60);

/// Server-side applies an Application as a user would (`kubectl apply --server-side`).
pub async fn apply_app(client: &Client, ns: &str, app: serde_json::Value) {
    let app: oam_trust::api::oam::Application =
        serde_json::from_value(app).expect("test Application deserializes");
    let name = app
        .metadata
        .name
        .clone()
        .expect("test Application has a name");
    Api::<oam_trust::api::oam::Application>::namespaced(client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply("test-user").force(),
            &Patch::Apply(&app),
        )
        .await
        .expect("the API server accepts the Application");
}

/// Waits (up to [`APP_WAIT`]) until the Application satisfies `pred`; panics with its last status.
pub async fn wait_app(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&oam_trust::api::oam::Application) -> bool,
) -> oam_trust::api::oam::Application {
    let api = Api::<oam_trust::api::oam::Application>::namespaced(client.clone(), ns);
    wait_for(&api, name, &format!("{ns}: {what}"), APP_WAIT, pred).await
}

static GUARD: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Installs the guard admission policies exactly as shipped (config/admission/*.yaml), once, and
/// waits until the deploy guard judges requests. (Without every guard, the exchange issues no token
/// for a grant that writes.) Bindings are never deleted: the API server's shared ConfigMap parameter
/// informer stops when the last binding using it goes.
pub async fn install_deploy_guard(client: &Client) {
    GUARD
        .get_or_init(|| async {
            let pp = PatchParams::apply("oam-trust-tests").force();
            let mut docs = Vec::new();
            for file in ["deploy-guard.yaml", "grant-guard.yaml"] {
                let path = format!("{}/config/admission/{file}", env!("CARGO_MANIFEST_DIR"));
                let text = std::fs::read_to_string(path).unwrap();
                docs.extend(oam_trust::manifest::parse_documents(&text).unwrap());
            }
            for doc in docs {
                let name = doc["metadata"]["name"].as_str().unwrap().to_string();
                match doc["kind"].as_str().unwrap() {
                    "ValidatingAdmissionPolicy" => {
                        Api::<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy>::all(client.clone())
                            .patch(&name, &pp, &Patch::Apply(&doc))
                            .await
                            .expect("the API server accepts the deploy guard policy");
                    }
                    "ValidatingAdmissionPolicyBinding" => {
                        Api::<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding>::all(client.clone())
                            .patch(&name, &pp, &Patch::Apply(&doc))
                            .await
                            .expect("the API server accepts the deploy guard binding");
                    }
                    other => panic!("unexpected kind {other} in config/admission/"),
                }
            }
            // The policy reaches the admission plugin asynchronously: probe until it refuses.
            await_deploy_guard(client).await;
        })
        .await;
}

/// Polls until the deploy guard judges requests: a guarded identity's label edit of a probe
/// Application is refused (a dry run, so nothing changes).
async fn await_deploy_guard(client: &Client) {
    install_crds(client).await;
    let ns = namespace(client, "guard-probe").await;
    let params: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "oam-trust.deploy-guard.probe",
                     "labels": {"oam-trust.dev/deploy-guard": "params"}},
        "data": {"application": "probe", "g.principals": "user:gitlab:ci_job:probe", "g.components": "web"}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &params)
        .await
        .unwrap();
    apply_app(
        client,
        &ns,
        serde_json::json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "probe"},
               "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx"}},
                                       {"name": "api", "type": "webservice", "properties": {"image": "nginx"}}]}}),
    )
    .await;
    let probe = impersonating("gitlab:ci_job:probe", &["system:masters"]).await;
    let apps = Api::<oam_trust::api::oam::Application>::namespaced(probe, &ns);
    let dry = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let refused = eventually(Duration::from_secs(30), || {
        let apps = apps.clone();
        let dry = dry.clone();
        async move {
            // Both bindings: a label edit is refused by the one without parameters (or both), the
            // image of a component the grant does not cover only by the one with parameters.
            let label =
                Patch::Merge(serde_json::json!({"metadata": {"labels": {"probe": "edited"}}}));
            let other = Patch::Merge(serde_json::json!({"spec": {"components": [
                {"name": "web", "type": "webservice", "properties": {"image": "nginx"}},
                {"name": "api", "type": "webservice", "properties": {"image": "nginx:2"}}]}}));
            let base = matches!(apps.patch("probe", &dry, &label).await,
                Err(kube::Error::Api(s)) if s.message.contains("may change only"));
            let params = matches!(apps.patch("probe", &dry, &other).await,
                Err(kube::Error::Api(s)) if s.message.contains("other components cannot change"));
            base && params
        }
    })
    .await;
    assert!(
        refused,
        "the deploy guard did not start judging requests within 30 s"
    );
}

/// Labels namespace `ns` so a trust can select it, and applies GitLabTrust `trust-<ns>` (static, empty
/// keys; group 72 allowed; `ceiling` as its ceiling ClusterRole, if any) that selects exactly it.
/// Returns the trust's name.
pub async fn selecting_trust(client: &Client, ns: &str, ceiling: Option<&str>) -> String {
    let label = "oam-trust.dev/selected-by";
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {label: ns}}})),
        )
        .await
        .unwrap();
    let trust = format!("trust-{ns}");
    let mut spec = serde_json::json!({
        "issuer": "https://gitlab.example.com", "audiences": ["https://oam-trust.test"],
        "jwks": {"static": r#"{"keys":[]}"#},
        "namespaceSelector": {"matchLabels": {label: ns}},
        "allow": [{"namespaceId": "72"}]
    });
    if let Some(ceiling) = ceiling {
        spec["ceiling"] = serde_json::json!({"clusterRoleRef": ceiling});
    }
    Api::<oam_trust::api::trust::GitLabTrust>::all(client.clone())
        .patch(
            &trust,
            &PatchParams::apply("oam-trust-tests").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust",
                "metadata": {"name": trust}, "spec": spec
            })),
        )
        .await
        .expect("the API server accepts the GitLabTrust");
    trust
}

/// A GitLabTrust selecting `ns` ([`selecting_trust`]) whose ceiling, `ceiling-<ns>`, allows get,
/// list, watch, update and patch of everything: presets are never cut by it. Returns the trust's name.
pub async fn trust_with_wide_ceiling(client: &Client, ns: &str) -> String {
    let ceiling = format!("ceiling-{ns}");
    let role: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": {"name": ceiling},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch", "update", "patch"]}]
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(client.clone())
        .patch(
            &ceiling,
            &PatchParams::apply("oam-trust-tests").force(),
            &Patch::Apply(&role),
        )
        .await
        .expect("the API server accepts the ceiling ClusterRole");
    selecting_trust(client, ns, Some(&ceiling)).await
}

/// The ServiceAccount of the one grant of Application `app`, once the operator created it.
pub async fn grant_account(client: &Client, ns: &str, app: &str) -> String {
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    let selector = format!("oam-trust.dev/grant,app.oam.dev/name={app}");
    let list = || async {
        sas.list(&kube::api::ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
    };
    let found = eventually(APP_WAIT, || async { list().await.len() == 1 }).await;
    assert!(found, "{ns}: the grant ServiceAccount of {app} is created");
    kube::ResourceExt::name_any(&list().await[0])
}
