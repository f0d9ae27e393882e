//! The Helm chart (charts/oam-trust): `helm lint --strict`, `helm template` with every CI values file,
//! the schema against typos, the RBAC of each identity against what its part of the code uses, then
//! `helm install` onto the local control plane and the operator running in-process as the chart's two
//! identities: `--role controller` with a TokenRequest token of the controller's ServiceAccount and
//! `--role exchange` with one of the exchange's (not the admin credentials), so the end-to-end flow
//! proves each identity's RBAC is sufficient.
//!
//! Helm never touches the network here: the chart has no dependencies and no remote schema `$ref`s.
mod support;

use support::helm::{chart, helm, helm_ok, parse_docs, render, run_helm};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use oam_trust::api::oam::Application;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const WAIT: Duration = Duration::from_secs(90);
/// `--instance` of the controller under the chart's RBAC: its Events say it was this one.
const INSTANCE: &str = "chart-rbac";
/// `--instance` of the exchange under the chart's RBAC.
const EXCHANGE_INSTANCE: &str = "chart-rbac-exchange";

/// One (apiGroup, resource, verb) a part of the operator uses, and which code does.
type Use = (&'static str, &'static str, &'static str, &'static str);

/// Every (apiGroup, resource, verb) the controller (`run --role controller`) uses. The ClusterRoles and
/// Roles the chart binds to the controller's ServiceAccount must grant exactly this set: an extra
/// permission fails `rbac_grants_exactly_what_the_operator_uses`, and a missing one fails it too (and
/// the end-to-end tests). Ceiling ClusterRoles are not the operator's own rules: the controller holds
/// them only per namespace, through the RoleBindings it creates (`access::rights`).
#[rustfmt::skip]
const CONTROLLER_USES: &[Use] = &[
    ("apiextensions.k8s.io", "customresourcedefinitions", "get", "runtime::check_crds_installed (resourceNames: the project's CRDs)"),
    ("core.oam.dev", "applications", "list", "Application controller"),
    ("core.oam.dev", "applications", "watch", "Application controller"),
    ("core.oam.dev", "applications", "patch", "application.rs: cleanup finalizer add/remove"),
    ("core.oam.dev", "applications/status", "patch", "application::write_status (SSA)"),
    ("core.oam.dev", "applicationrevisions", "get", "revision::pin_definitions (a rollback's recorded definitions)"),
    ("core.oam.dev", "applicationrevisions", "list", "revision::record (numbering, retention)"),
    ("core.oam.dev", "applicationrevisions", "create", "revision::record"),
    ("core.oam.dev", "applicationrevisions", "delete", "revision::record (retention)"),
    ("core.oam.dev", "componentdefinitions", "list", "runtime::world stores; definition watches"),
    ("core.oam.dev", "componentdefinitions", "watch", "runtime::world stores; definition watches"),
    ("core.oam.dev", "traitdefinitions", "list", "runtime::world stores; definition watches"),
    ("core.oam.dev", "traitdefinitions", "watch", "runtime::world stores; definition watches"),
    ("core.oam.dev", "policydefinitions", "list", "runtime::world stores; definition watches"),
    ("core.oam.dev", "policydefinitions", "watch", "runtime::world stores; definition watches"),
    ("oam-trust.dev", "gitlabtrusts", "list", "trust controller; runtime::world stores"),
    ("oam-trust.dev", "gitlabtrusts", "watch", "trust controller; runtime::world stores"),
    ("oam-trust.dev", "gitlabtrusts/status", "patch", "trust.rs: key status"),
    ("", "namespaces", "list", "runtime::world stores (namespace labels for a trust's namespaceSelector)"),
    ("", "namespaces", "watch", "runtime::world stores (namespace labels for a trust's namespaceSelector)"),
    ("rbac.authorization.k8s.io", "clusterroles", "list", "runtime::world stores (ceilings); rendered-object watch"),
    ("rbac.authorization.k8s.io", "clusterroles", "watch", "runtime::world stores (ceilings); rendered-object watch"),
    ("rbac.authorization.k8s.io", "clusterroles", "bind", "access::rights: RoleBindings to the ceilings and the exchange's namespace role (resourceNames)"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies", "list", "runtime::world stores: guard policies installed"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies", "watch", "runtime::world stores: guard policies installed"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings", "list", "runtime::world stores: guard policies installed"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings", "watch", "runtime::world stores: guard policies installed"),
    ("rbac.authorization.k8s.io", "clusterrolebindings", "list", "rendered-object watch"),
    ("rbac.authorization.k8s.io", "clusterrolebindings", "watch", "rendered-object watch"),
    ("apps", "deployments", "get", "workload health (Applier::get)"),
    ("apps", "deployments", "list", "rendered-object watch"),
    ("apps", "deployments", "watch", "rendered-object watch"),
    ("apps", "statefulsets", "get", "workload health (Applier::get)"),
    ("apps", "statefulsets", "list", "rendered-object watch"),
    ("apps", "statefulsets", "watch", "rendered-object watch"),
    ("apps", "daemonsets", "get", "workload health (Applier::get)"),
    ("apps", "daemonsets", "list", "rendered-object watch"),
    ("apps", "daemonsets", "watch", "rendered-object watch"),
    ("batch", "jobs", "get", "workload health (Applier::get)"),
    ("batch", "jobs", "list", "rendered-object watch"),
    ("batch", "jobs", "watch", "rendered-object watch"),
    ("batch", "cronjobs", "get", "workload health (Applier::get)"),
    ("batch", "cronjobs", "list", "rendered-object watch"),
    ("batch", "cronjobs", "watch", "rendered-object watch"),
    ("", "services", "get", "workload health of k8s-objects components (Applier::get)"),
    ("", "services", "list", "rendered-object watch"),
    ("", "services", "watch", "rendered-object watch"),
    ("", "configmaps", "get", "workload health of k8s-objects components (Applier::get); access.rs apply (read before SSA)"),
    ("", "configmaps", "list", "rendered-object watch; access.rs deploy-guard prune"),
    ("", "configmaps", "watch", "rendered-object watch"),
    ("", "configmaps", "create", "access.rs: deploy-guard parameters (SSA)"),
    ("", "configmaps", "patch", "access.rs: deploy-guard parameters (SSA)"),
    ("", "configmaps", "delete", "access.rs: deploy-guard prune"),
    ("", "serviceaccounts", "get", "workload health (Applier::get); access.rs apply (read before SSA)"),
    ("", "serviceaccounts", "list", "rendered-object watch; access.rs prune"),
    ("", "serviceaccounts", "watch", "rendered-object watch"),
    ("", "serviceaccounts", "create", "access.rs: grant ServiceAccount (SSA)"),
    ("", "serviceaccounts", "patch", "access.rs: grant ServiceAccount (SSA)"),
    ("", "serviceaccounts", "delete", "access.rs: prune"),
    ("", "serviceaccounts", "impersonate", "apply::Applier::client_as (resourceNames from values)"),
    ("", "persistentvolumeclaims", "get", "workload health of k8s-objects components (Applier::get)"),
    ("", "persistentvolumeclaims", "list", "rendered-object watch"),
    ("", "persistentvolumeclaims", "watch", "rendered-object watch"),
    ("networking.k8s.io", "ingresses", "get", "workload health of k8s-objects components (Applier::get)"),
    ("networking.k8s.io", "ingresses", "list", "rendered-object watch"),
    ("networking.k8s.io", "ingresses", "watch", "rendered-object watch"),
    ("autoscaling", "horizontalpodautoscalers", "get", "workload health of k8s-objects components (Applier::get)"),
    ("autoscaling", "horizontalpodautoscalers", "list", "rendered-object watch"),
    ("autoscaling", "horizontalpodautoscalers", "watch", "rendered-object watch"),
    ("rbac.authorization.k8s.io", "roles", "get", "access.rs apply: read before SSA, unchanged grant Roles are not rewritten"),
    ("rbac.authorization.k8s.io", "roles", "list", "grant-object watch; access.rs prune"),
    ("rbac.authorization.k8s.io", "roles", "watch", "grant-object watch"),
    ("rbac.authorization.k8s.io", "roles", "create", "access.rs: grant Role (SSA)"),
    ("rbac.authorization.k8s.io", "roles", "patch", "access.rs: grant Role (SSA)"),
    ("rbac.authorization.k8s.io", "roles", "delete", "access.rs: prune"),
    ("rbac.authorization.k8s.io", "rolebindings", "get", "access.rs apply: read before SSA, unchanged grant and rights RoleBindings are not rewritten"),
    ("rbac.authorization.k8s.io", "rolebindings", "list", "grant-object watch; access.rs prune; trust.rs sweep_rights"),
    ("rbac.authorization.k8s.io", "rolebindings", "watch", "grant-object watch"),
    ("rbac.authorization.k8s.io", "rolebindings", "create", "access.rs: grant RoleBinding, namespace rights (SSA)"),
    ("rbac.authorization.k8s.io", "rolebindings", "patch", "access.rs: grant RoleBinding, namespace rights (SSA)"),
    ("rbac.authorization.k8s.io", "rolebindings", "delete", "access.rs: prune; trust.rs sweep_rights"),
    ("", "pods", "list", "application::pending_reason (scheduler message)"),
    ("events.k8s.io", "events", "create", "kube::runtime::events::Recorder (controllers)"),
    ("events.k8s.io", "events", "patch", "kube::runtime::events::Recorder (event series)"),
    ("coordination.k8s.io", "leases", "create", "leader.rs: the first replica creates the Lease"),
    ("coordination.k8s.io", "leases", "get", "leader.rs (resourceNames: the release's Lease)"),
    ("coordination.k8s.io", "leases", "update", "leader.rs: acquire and renew (replace)"),
];

/// Every (apiGroup, resource, verb) the exchange (`run --role exchange`) uses cluster-wide: what the
/// chart binds to the exchange's ServiceAccount must be exactly this.
#[rustfmt::skip]
const EXCHANGE_USES: &[Use] = &[
    ("apiextensions.k8s.io", "customresourcedefinitions", "get", "runtime::check_crds_installed (resourceNames: the project's CRDs)"),
    ("core.oam.dev", "applications", "list", "federation::grants reflector"),
    ("core.oam.dev", "applications", "watch", "federation::grants reflector"),
    ("core.oam.dev", "componentdefinitions", "list", "runtime::world stores (grant derivation renders)"),
    ("core.oam.dev", "componentdefinitions", "watch", "runtime::world stores (grant derivation renders)"),
    ("core.oam.dev", "traitdefinitions", "list", "runtime::world stores (grant derivation renders)"),
    ("core.oam.dev", "traitdefinitions", "watch", "runtime::world stores (grant derivation renders)"),
    ("core.oam.dev", "policydefinitions", "list", "runtime::world stores (grant derivation renders)"),
    ("core.oam.dev", "policydefinitions", "watch", "runtime::world stores (grant derivation renders)"),
    ("oam-trust.dev", "gitlabtrusts", "list", "runtime::world stores (trusts_for_issuer)"),
    ("oam-trust.dev", "gitlabtrusts", "watch", "runtime::world stores (trusts_for_issuer)"),
    ("", "namespaces", "list", "runtime::world stores (namespace labels for a trust's namespaceSelector)"),
    ("", "namespaces", "watch", "runtime::world stores (namespace labels for a trust's namespaceSelector)"),
    ("rbac.authorization.k8s.io", "clusterroles", "list", "runtime::world stores (ceilings)"),
    ("rbac.authorization.k8s.io", "clusterroles", "watch", "runtime::world stores (ceilings)"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies", "list", "runtime::world stores: guard policies installed"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies", "watch", "runtime::world stores: guard policies installed"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings", "list", "runtime::world stores: guard policies installed"),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings", "watch", "runtime::world stores: guard policies installed"),
    ("oam-trust.dev", "tokenissuances", "create", "federation/binding.rs: the record of an exchange (create-if-absent replay guard)"),
    ("oam-trust.dev", "tokenissuances", "delete", "federation/binding.rs: revocation at the grant's TTL (the collector deletes the Secret)"),
    ("oam-trust.dev", "tokenissuances", "list", "federation/reaper.rs: expired records, all of them"),
    ("events.k8s.io", "events", "create", "federation::events (TokenIssued, TokenDenied)"),
    ("events.k8s.io", "events", "patch", "federation::events (event series)"),
];

/// What the exchange uses in one namespace where grants live: its namespace role, which the chart binds
/// nowhere and the controller binds per namespace (`access::rights`).
#[rustfmt::skip]
const EXCHANGE_NAMESPACE_USES: &[Use] = &[
    ("", "secrets", "create", "federation/binding.rs: binding Secret, owned by its TokenIssuance"),
    ("", "serviceaccounts/token", "create", "federation/binding.rs: TokenRequest bound to the binding Secret"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn values_file(name: &str) -> String {
    chart().join("ci").join(name).to_string_lossy().into_owned()
}

fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objs, kind);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, got {}",
        found.len()
    );
    found[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn is_ceiling(role: &Value) -> bool {
    role["metadata"]["labels"]["oam-trust.dev/ceiling"] == "true"
}

#[test]
fn lint_is_clean_with_every_ci_values_file() {
    let chart = chart().to_string_lossy().into_owned();
    let mut files: Vec<_> = std::fs::read_dir(chart_path("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "default-values.yaml",
            "ingress-cert-manager-values.yaml",
            "networkpolicy-servicemonitor-values.yaml"
        ],
        "charts/oam-trust/ci holds the CI values files"
    );
    for f in files {
        let f = f.to_string_lossy().into_owned();
        let out = helm_ok(&["lint", "--strict", &chart, "-f", &f]);
        assert!(out.contains("0 chart(s) failed"), "{f}: {out}");
    }
}

fn chart_path(p: &str) -> PathBuf {
    chart().join(p)
}

#[test]
fn the_schema_rejects_typos_and_bad_values() {
    let chart = chart().to_string_lossy().into_owned();
    for (set, expect) in [
        ("image.tagg=v1", "additional properties 'tagg' not allowed"),
        (
            "controller.replicaCont=3",
            "additional properties 'replicaCont' not allowed",
        ),
        // The single Deployment's settings are gone: each part has its own.
        (
            "replicaCount=3",
            "additional properties 'replicaCount' not allowed",
        ),
        (
            "serviceAccount.name=operator",
            "additional properties 'name' not allowed",
        ),
        (
            "exchange.ingres.enabled=true",
            "additional properties 'ingres' not allowed",
        ),
        (
            "networkPolicy.egress.dnsPort=53",
            "additional properties 'dnsPort' not allowed",
        ),
        ("controller.replicaCount=0", "minimum"),
        ("exchange.replicaCount=0", "minimum"),
        ("podAntiAffinity=sometimes", "podAntiAffinity"),
        (
            "rbac.applierServiceAccounts={Not_A_Name}",
            "applierServiceAccounts",
        ),
    ] {
        let out = run_helm(&["template", "r", &chart, "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            stderr.contains(expect),
            "--set {set}: expected {expect:?} in:\n{stderr}"
        );
    }
    // The same values without the typo render.
    helm_ok(&[
        "template",
        "r",
        &chart,
        "--set",
        "image.tag=v1",
        "--set",
        "controller.replicaCount=3",
        "--set",
        "exchange.replicaCount=4",
    ]);
    let schema = std::fs::read_to_string(chart_path("values.schema.json")).unwrap();
    assert!(
        !schema.contains("\"$ref\""),
        "no $refs: helm would fetch remote ones"
    );
}

/// The Deployment of one part (`controller` or `exchange`) of release `prod`.
fn deployment<'a>(objs: &'a [Value], component: &str) -> &'a Value {
    deployment_of(objs, "prod", component)
}

/// The Deployment of one part (`controller` or `exchange`) of `release`.
fn deployment_of<'a>(objs: &'a [Value], release: &str, component: &str) -> &'a Value {
    let name = format!("{release}-oam-trust-{component}");
    let found: Vec<_> = of_kind(objs, "Deployment")
        .into_iter()
        .filter(|d| d["metadata"]["name"] == name.as_str())
        .collect();
    assert_eq!(found.len(), 1, "one Deployment {name}");
    found[0]
}

fn container(d: &Value) -> &Value {
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

/// A container's environment, by name (the whole entry: `value` or `valueFrom`).
fn env_of(c: &Value) -> BTreeMap<String, Value> {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().into(), e.clone()))
        .collect()
}

/// Whether a label selector's `matchLabels` select an object with `labels`.
fn selects(match_labels: &Value, labels: &Value) -> bool {
    match_labels
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| &labels[k] == v)
}

/// `oam-trust run` parsed as a container runs it: its `args` after `run`, then each variable of `env`
/// that `run` reads as its flag (clap reads the same definitions from the environment in a pod).
fn parse_run(args: &[String], env: &BTreeMap<String, String>) -> oam_trust::runtime::RunArgs {
    use clap::CommandFactory;
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    let run = RunCli::command();
    let mut argv = vec!["oam-trust".to_string()];
    argv.extend(args[1..].iter().cloned());
    for (name, value) in env {
        let Some(arg) = run
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
        else {
            continue;
        };
        let flag = format!("--{}", arg.get_long().expect("every run flag is long"));
        if arg.get_action().takes_values() {
            argv.extend([flag, value.clone()]);
        } else if value == "true" {
            argv.push(flag);
        }
    }
    RunCli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("oam-trust run refuses the chart's settings {argv:?}: {e}"))
        .run
}

/// The literal `value`s of an environment (entries with `valueFrom` left out).
fn env_values(env: &BTreeMap<String, Value>) -> BTreeMap<String, String> {
    env.iter()
        .filter_map(|(k, e)| e["value"].as_str().map(|v| (k.clone(), v.to_string())))
        .collect()
}

#[test]
fn the_operator_deployments_are_hardened_and_highly_available() {
    let objs = render(
        "prod",
        "oam-system",
        &["-f", &values_file("default-values.yaml")],
    );
    assert_eq!(of_kind(&objs, "Deployment").len(), 2);
    let known = run_env_vars();
    for component in ["controller", "exchange"] {
        let d = deployment(&objs, component);
        assert_eq!(d["spec"]["replicas"], 2, "{component}");
        let selector = &d["spec"]["selector"]["matchLabels"];
        assert_eq!(selector["app.kubernetes.io/component"], component);
        assert!(selects(
            selector,
            &d["spec"]["template"]["metadata"]["labels"]
        ));
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(
            pod["serviceAccountName"],
            format!("prod-oam-trust-{component}"),
            "each part runs as its own ServiceAccount"
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let anti = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0];
        assert_eq!(
            anti["podAffinityTerm"]["topologyKey"],
            "kubernetes.io/hostname"
        );
        assert_eq!(
            &anti["podAffinityTerm"]["labelSelector"]["matchLabels"], selector,
            "{component}: replicas spread from each other"
        );

        let c = container(d);
        assert_eq!(c["args"], json!(["run", "--role", component]));
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(
            c["livenessProbe"]["httpGet"],
            json!({"path": "/livez", "port": "health"})
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"],
            json!({"path": "/readyz", "port": "health"})
        );
        assert!(c["resources"]["requests"]["cpu"].is_string());
        assert!(c["resources"]["limits"]["memory"].is_string());

        let env = env_of(c);
        assert_eq!(
            env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(env["OAM_TRUST_LOG_FORMAT"]["value"], "json");
        assert_eq!(env["OAM_TRUST_HEALTH_ADDR"]["value"], "0.0.0.0:8081");
        // Every OAM_TRUST_* variable the chart sets is one `oam-trust run` reads (a misspelt name
        // would be silently ignored).
        for name in env.keys().filter(|n| n.starts_with("OAM_TRUST_")) {
            assert!(
                known.contains(name) || PENDING_ENV.contains(&name.as_str()),
                "the chart sets {name}, which `oam-trust run` does not read; it reads {known:?}"
            );
        }
        // The clap definitions of `oam-trust run` accept what the chart sets.
        let parsed = parse_run(&strings(&c["args"]), &env_values(&env));
        assert_eq!(parsed.health_addr.port(), 8081);

        let ports: BTreeMap<String, i64> = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().into(),
                    p["containerPort"].as_i64().unwrap(),
                )
            })
            .collect();
        let volumes: BTreeSet<String> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        let exchange_env: Vec<&String> = env
            .keys()
            .filter(|n| n.starts_with("OAM_TRUST_EXCHANGE_") && !n.ends_with("_IDENTITY"))
            .filter(|n| n.as_str() != "OAM_TRUST_EXCHANGE_NAMESPACE_ROLE")
            .collect();
        match component {
            "controller" => {
                assert_eq!(parsed.role, oam_trust::runtime::Role::Controller);
                assert_eq!(ports, BTreeMap::from([("health".into(), 8081)]));
                assert_eq!(
                    volumes,
                    BTreeSet::from(["tmp".to_string()]),
                    "no TLS Secret"
                );
                assert!(
                    exchange_env.is_empty(),
                    "no exchange settings: {exchange_env:?}"
                );
                assert!(!parsed.exchange.is_configured());
                // Leader election on the Lease the chart's Role names.
                assert!(parsed.leader_elect);
                assert_eq!(
                    (parsed.lease_namespace.as_str(), parsed.lease_name.as_str()),
                    ("oam-system", "prod-oam-trust")
                );
                // The rights it binds where grants live: itself to the ceilings, the exchange to
                // its namespace role, under the names the chart gives them.
                let sa = |name: &str| {
                    format!("system:serviceaccount:oam-system:{name}")
                        .parse::<oam_trust::access::rights::ServiceAccountRef>()
                        .unwrap()
                };
                assert_eq!(
                    parsed.rights.rights(),
                    oam_trust::access::rights::Rights {
                        controller: Some(sa("prod-oam-trust-controller")),
                        exchange: Some((
                            sa("prod-oam-trust-exchange"),
                            "prod-oam-trust-exchange-namespace".into()
                        )),
                    }
                );
            }
            _ => {
                assert_eq!(parsed.role, oam_trust::runtime::Role::Exchange);
                assert_eq!(
                    ports,
                    BTreeMap::from([("health".into(), 8081), ("exchange".into(), 8443)])
                );
                assert!(parsed.exchange.is_configured());
                assert_eq!(parsed.exchange.exchange_listen.port(), 8443);
                assert!(!parsed.exchange.exchange_insecure_http, "TLS in the pod");
                assert_eq!(
                    parsed.rights.rights(),
                    oam_trust::access::rights::Rights::default(),
                    "the exchange binds nothing"
                );
                for name in env.keys() {
                    assert!(
                        !name.starts_with("OAM_TRUST_LEASE_") && !name.ends_with("_IDENTITY"),
                        "the exchange elects no leader and binds nothing: {name}"
                    );
                }
                // TLS comes from a Secret mounted read-only where the env points.
                let tls = pod["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == "tls")
                    .expect("a tls volume");
                assert_eq!(tls["secret"]["secretName"], "prod-oam-trust-exchange-tls");
                let mount = c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["name"] == "tls")
                    .unwrap();
                assert_eq!(mount["readOnly"], true);
                let cert = env["OAM_TRUST_EXCHANGE_TLS_CERT"]["value"]
                    .as_str()
                    .unwrap();
                assert!(cert.starts_with(mount["mountPath"].as_str().unwrap()));
            }
        }
    }
    let (controller, exchange) = (
        deployment(&objs, "controller"),
        deployment(&objs, "exchange"),
    );
    let pod_labels = |d: &Value| d["spec"]["template"]["metadata"]["labels"].clone();
    assert!(
        !selects(
            &controller["spec"]["selector"]["matchLabels"],
            &pod_labels(exchange)
        ) && !selects(
            &exchange["spec"]["selector"]["matchLabels"],
            &pod_labels(controller)
        ),
        "each Deployment selects its own pods only"
    );

    // One PodDisruptionBudget per Deployment.
    let pdbs = of_kind(&objs, "PodDisruptionBudget");
    assert_eq!(pdbs.len(), 2);
    for d in [controller, exchange] {
        let pdb = pdbs
            .iter()
            .find(|p| p["metadata"]["name"] == d["metadata"]["name"])
            .expect("a PodDisruptionBudget named after the Deployment");
        assert_eq!(pdb["spec"]["minAvailable"], 1);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            d["spec"]["selector"]["matchLabels"]
        );
    }

    let services = of_kind(&objs, "Service");
    let exchange_service = services
        .iter()
        .find(|s| s["metadata"]["name"] == "prod-oam-trust-exchange")
        .expect("the exchange Service");
    assert_eq!(
        exchange_service["spec"]["ports"],
        json!([{"name": "https", "port": 443, "targetPort": "exchange", "protocol": "TCP"}])
    );
    assert_eq!(
        exchange_service["spec"]["selector"], exchange["spec"]["selector"]["matchLabels"],
        "the exchange Service reaches the exchange's pods only"
    );
    // Metrics of both parts.
    let metrics = services
        .iter()
        .find(|s| s["metadata"]["name"] == "prod-oam-trust-metrics")
        .expect("the metrics Service");
    for d in [controller, exchange] {
        assert!(
            selects(&metrics["spec"]["selector"], &pod_labels(d)),
            "the metrics Service selects {}",
            d["metadata"]["name"]
        );
    }

    // Optional parts stay off by default.
    for kind in ["Ingress", "Certificate", "NetworkPolicy", "ServiceMonitor"] {
        assert!(
            of_kind(&objs, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
    // The ceiling example is there, under the name GitLabTrusts reference.
    let ceiling: Vec<_> = of_kind(&objs, "ClusterRole")
        .into_iter()
        .filter(|r| is_ceiling(r))
        .collect();
    assert_eq!(ceiling.len(), 1);
    assert_eq!(ceiling[0]["metadata"]["name"], "oam-trust-ceiling");
}

/// Environment the chart may set ahead of the runtime reading it (none today).
const PENDING_ENV: &[&str] = &[];

/// The environment variables `oam-trust run` reads, from its clap definition.
fn run_env_vars() -> BTreeSet<String> {
    use clap::CommandFactory;
    let cli = oam_trust::cli::Cli::command();
    let run = cli
        .get_subcommands()
        .find(|c| c.get_name() == "run")
        .expect("a run subcommand")
        .clone();
    cli.get_arguments()
        .chain(run.get_arguments())
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

#[derive(clap::Parser)]
struct RunCli {
    #[command(flatten)]
    run: oam_trust::runtime::RunArgs,
}

#[test]
fn ingress_and_cert_manager_render_when_enabled() {
    let f = values_file("ingress-cert-manager-values.yaml");
    let objs = render(
        "edge",
        "oam-system",
        &["-f", &f, "--api-versions", "cert-manager.io/v1/Certificate"],
    );
    let ing = one(&objs, "Ingress");
    let rule = &ing["spec"]["rules"][0];
    assert_eq!(rule["host"], "oam-trust.example.com");
    assert_eq!(
        rule["http"]["paths"][0]["backend"]["service"],
        json!({"name": "edge-oam-trust-exchange", "port": {"name": "https"}})
    );
    assert_eq!(
        ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"],
        "HTTPS"
    );
    let cert = one(&objs, "Certificate");
    let d = deployment_of(&objs, "edge", "exchange");
    let tls = d["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .unwrap();
    assert_eq!(cert["spec"]["secretName"], tls["secret"]["secretName"]);
    assert_eq!(
        ing["spec"]["tls"][0]["secretName"],
        tls["secret"]["secretName"]
    );
    let dns = strings(&cert["spec"]["dnsNames"]);
    for name in [
        "edge-oam-trust-exchange.oam-system.svc",
        "oam-trust.example.com",
        "oam-trust.internal.example.com",
    ] {
        assert!(dns.iter().any(|d| d == name), "{name} missing from {dns:?}");
    }
    assert_eq!(cert["spec"]["issuerRef"]["name"], "letsencrypt");

    // Without cert-manager in the cluster the install fails and says why, instead of waiting forever
    // for a Secret nobody creates.
    let chart = chart().to_string_lossy().into_owned();
    let out = run_helm(&["template", "edge", &chart, "-f", &f]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("install cert-manager first"));
}

#[test]
fn network_policy_and_service_monitor_render_when_enabled() {
    let f = values_file("networkpolicy-servicemonitor-values.yaml");
    let objs = render(
        "mon",
        "oam-system",
        &[
            "-f",
            &f,
            "--api-versions",
            "monitoring.coreos.com/v1/ServiceMonitor",
        ],
    );
    // One NetworkPolicy per Deployment, selecting exactly its pods; only the exchange's take the
    // token-exchange port.
    let policies = of_kind(&objs, "NetworkPolicy");
    assert_eq!(policies.len(), 2);
    let policy = |component: &str| -> &Value {
        let name = format!("mon-oam-trust-{component}");
        let np = policies
            .iter()
            .find(|p| p["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("NetworkPolicy {name}"));
        assert_eq!(
            np["spec"]["podSelector"]["matchLabels"],
            deployment_of(&objs, "mon", component)["spec"]["selector"]["matchLabels"],
            "{name} selects the {component}'s pods"
        );
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        let egress_cidrs: Vec<&str> = np["spec"]["egress"][1]["to"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["ipBlock"]["cidr"].as_str().unwrap())
            .collect();
        assert_eq!(egress_cidrs, ["10.0.0.1/32", "203.0.113.0/24"]);
        np
    };
    let np = policy("exchange");
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], "exchange");
    assert_eq!(
        np["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "ingress-nginx"
    );
    assert_eq!(np["spec"]["ingress"][1]["ports"][0]["port"], "health");
    let np = policy("controller");
    assert_eq!(
        np["spec"]["ingress"],
        json!([{"ports": [{"port": "health", "protocol": "TCP"}],
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}]),
        "the controller takes metrics scrapes only"
    );

    let sm = one(&objs, "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    let metrics = of_kind(&objs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "mon-oam-trust-metrics")
        .expect("the metrics Service");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &metrics["metadata"]["labels"][k], v,
            "ServiceMonitor selects the metrics Service"
        );
    }
    assert_eq!(metrics["spec"]["ports"][0]["name"], "metrics");
    for component in ["controller", "exchange"] {
        let d = deployment_of(&objs, "mon", component);
        let term = &d["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            [0];
        assert_eq!(
            term["labelSelector"]["matchLabels"], d["spec"]["selector"]["matchLabels"],
            "podAntiAffinity: hard, among the {component}'s replicas"
        );
    }

    // Without the Prometheus Operator's API the ServiceMonitor is left out.
    let objs = render("mon", "oam-system", &["-f", &f]);
    assert!(of_kind(&objs, "ServiceMonitor").is_empty());
    assert_eq!(of_kind(&objs, "NetworkPolicy").len(), 2);

    // Without metrics peers nothing reaches the controller's pods.
    let objs = render(
        "mon",
        "oam-system",
        &["--set", "networkPolicy.enabled=true"],
    );
    let controller = of_kind(&objs, "NetworkPolicy")
        .into_iter()
        .find(|p| p["metadata"]["name"] == "mon-oam-trust-controller")
        .unwrap();
    assert_eq!(controller["spec"]["ingress"], json!([]));
}

type Atom = (String, String, String);

/// Atoms (group, resource, verb) of one Role or ClusterRole.
fn role_atoms(role: &Value) -> BTreeSet<Atom> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    out.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

fn uses(list: &[Use]) -> BTreeSet<Atom> {
    list.iter()
        .map(|(g, r, v, _)| (g.to_string(), r.to_string(), v.to_string()))
        .collect()
}

/// The Role or ClusterRole of a rendering that a binding's `roleRef` names.
fn role_of<'a>(objs: &'a [Value], binding: &Value) -> &'a Value {
    let kind = binding["roleRef"]["kind"].as_str().unwrap();
    let name = binding["roleRef"]["name"].as_str().unwrap();
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "{} binds {kind} {name}, which the chart does not define",
                binding["metadata"]["name"]
            )
        })
}

/// The bindings of a rendering (ClusterRoleBindings and RoleBindings) naming ServiceAccount `sa` of
/// namespace `ns` as a subject.
fn bindings_of<'a>(objs: &'a [Value], ns: &str, sa: &str) -> Vec<&'a Value> {
    let me = json!({"kind": "ServiceAccount", "name": sa, "namespace": ns});
    objs.iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
        .filter(|b| b["subjects"].as_array().is_some_and(|s| s.contains(&me)))
        .collect()
}

/// Every atom the chart grants `sa` through its own bindings.
fn identity_atoms(objs: &[Value], ns: &str, sa: &str) -> BTreeSet<Atom> {
    bindings_of(objs, ns, sa)
        .into_iter()
        .flat_map(|b| role_atoms(role_of(objs, b)))
        .collect()
}

/// Fails on any atom `granted` holds beyond `used`, or `used` beyond `granted`.
fn assert_exactly(who: &str, granted: &BTreeSet<Atom>, used: &[Use]) {
    let used = uses(used);
    let extra: Vec<_> = granted.difference(&used).collect();
    assert!(
        extra.is_empty(),
        "the chart grants the {who} what its code never uses: {extra:?}"
    );
    let missing: Vec<_> = used.difference(granted).collect();
    assert!(
        missing.is_empty(),
        "the {who}'s code uses what the chart does not grant it: {missing:?}"
    );
}

fn rules_of(role: &Value) -> Vec<Value> {
    role["rules"].as_array().unwrap().clone()
}

#[test]
fn rbac_grants_exactly_what_the_operator_uses() {
    let objs = render("prod", "oam-system", &[]);
    let (ns, controller, exchange) = (
        "oam-system",
        "prod-oam-trust-controller",
        "prod-oam-trust-exchange",
    );
    let namespace_role = "prod-oam-trust-exchange-namespace";
    // No wildcard anywhere, ceiling included, no non-resource URLs, no `escalate`; `bind` only in the
    // one rule checked below.
    for role in objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        let name = role["metadata"]["name"].as_str().unwrap();
        for rule in rules_of(role) {
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                assert!(
                    !strings(&rule[field]).iter().any(|s| s.contains('*')),
                    "{name}: `*` in {field}: {rule}"
                );
            }
            assert!(
                rule["nonResourceURLs"].is_null(),
                "{name}: nonResourceURLs: {rule}"
            );
            let verbs = strings(&rule["verbs"]);
            assert!(
                !verbs.iter().any(|v| v == "escalate"),
                "{name}: `escalate`; grants must stay within the ceiling"
            );
            if verbs.iter().any(|v| v == "bind") {
                assert_eq!(
                    (name, &rule["apiGroups"], &rule["resources"], &rule["verbs"]),
                    (
                        "prod-oam-trust-grants",
                        &json!(["rbac.authorization.k8s.io"]),
                        &json!(["clusterroles"]),
                        &json!(["bind"])
                    ),
                    "`bind` only on ClusterRoles, in its own rule of the controller's grants role: {rule}"
                );
            }
        }
    }

    // Each identity holds, through the chart's bindings, exactly what its part of the code uses.
    assert_exactly(
        "controller",
        &identity_atoms(&objs, ns, controller),
        CONTROLLER_USES,
    );
    assert_exactly(
        "exchange",
        &identity_atoms(&objs, ns, exchange),
        EXCHANGE_USES,
    );
    // The exchange's rights in a namespace where grants live: a ClusterRole nobody is bound to in the
    // chart (the controller binds it per namespace).
    let namespace_role_obj = of_kind(&objs, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == namespace_role)
        .expect("the exchange's namespace role");
    assert_exactly(
        "exchange (per namespace)",
        &role_atoms(namespace_role_obj),
        EXCHANGE_NAMESPACE_USES,
    );
    // Every binding of the chart names one of the two identities; every Role and ClusterRole but the
    // ceilings and the exchange's namespace role is bound, and none of those two is.
    let bindings: Vec<&Value> = objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
        .collect();
    let mut bound = BTreeSet::new();
    for b in &bindings {
        let subjects = b["subjects"].as_array().unwrap();
        assert_eq!(subjects.len(), 1, "{}", b["metadata"]["name"]);
        assert!(
            [controller, exchange]
                .iter()
                .any(|sa| subjects[0]
                    == json!({"kind": "ServiceAccount", "name": sa, "namespace": ns})),
            "{} binds {}",
            b["metadata"]["name"],
            subjects[0]
        );
        let role = role_of(&objs, b);
        assert!(
            !is_ceiling(role) && role["metadata"]["name"] != namespace_role,
            "{} binds {} in the chart: the controller binds it per namespace",
            b["metadata"]["name"],
            role["metadata"]["name"]
        );
        bound.insert(format!(
            "{}/{}",
            role["kind"].as_str().unwrap(),
            role["metadata"]["name"].as_str().unwrap()
        ));
    }
    let own: BTreeSet<String> = objs
        .iter()
        .filter(|o| (o["kind"] == "ClusterRole" || o["kind"] == "Role") && !is_ceiling(o))
        .filter(|o| o["metadata"]["name"] != namespace_role)
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        bound, own,
        "every Role and ClusterRole of the operator is bound"
    );
    let cluster_roles_of = |sa: &str| -> BTreeSet<String> {
        bindings_of(&objs, ns, sa)
            .iter()
            .filter(|b| b["kind"] == "ClusterRoleBinding")
            .map(|b| b["roleRef"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        cluster_roles_of(controller),
        BTreeSet::from(
            [
                "prod-oam-trust-applier",
                "prod-oam-trust-controller",
                "prod-oam-trust-grants"
            ]
            .map(String::from)
        )
    );
    assert_eq!(
        cluster_roles_of(exchange),
        BTreeSet::from(["prod-oam-trust-exchange".to_string()])
    );
    // No identity may read or delete a Secret, anywhere.
    for sa in [controller, exchange] {
        for verb in ["get", "list", "watch", "delete"] {
            let atom = (String::new(), "secrets".to_string(), verb.to_string());
            assert!(
                !identity_atoms(&objs, ns, sa).contains(&atom),
                "{sa} may {verb} secrets"
            );
        }
    }
    assert!(
        !role_atoms(namespace_role_obj)
            .iter()
            .any(|(_, r, v)| r == "secrets" && v != "create")
    );

    // Impersonation is limited by name to the applier ServiceAccounts in values.
    let rule_for = |objs: &[Value], verb: &str| -> Vec<Value> {
        objs.iter()
            .filter(|o| o["kind"] == "ClusterRole" && !is_ceiling(o))
            .flat_map(rules_of)
            .filter(|r| strings(&r["verbs"]).iter().any(|v| v == verb))
            .collect()
    };
    let imp = rule_for(&objs, "impersonate");
    assert_eq!(imp.len(), 1);
    assert_eq!(imp[0]["resources"], json!(["serviceaccounts"]));
    assert_eq!(imp[0]["resourceNames"], json!(["oam-trust-applier"]));
    let custom = render(
        "prod",
        "oam-system",
        &[
            "--set",
            "rbac.applierServiceAccounts={oam-trust-applier,deployer}",
        ],
    );
    assert_eq!(
        rule_for(&custom, "impersonate")[0]["resourceNames"],
        json!(["oam-trust-applier", "deployer"])
    );

    // The CRD check reads exactly the project's CRDs, for both identities.
    let crds: BTreeSet<String> = oam_trust::api::all_crds()
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    let crd_rules: Vec<Value> = objs
        .iter()
        .filter(|o| o["kind"] == "ClusterRole")
        .flat_map(rules_of)
        .filter(|r| strings(&r["resources"]) == ["customresourcedefinitions"])
        .collect();
    assert_eq!(crd_rules.len(), 2, "one CRD rule per identity");
    for rule in crd_rules {
        let names: BTreeSet<String> = strings(&rule["resourceNames"]).into_iter().collect();
        assert_eq!(names, crds);
    }

    // Leases: create is namespace-wide (RBAC cannot name what does not exist yet); the rest only
    // the release's own Lease. The controller's alone: the exchange elects no leader.
    let role = one(&objs, "Role");
    assert_eq!(role["metadata"]["namespace"], "oam-system");
    for rule in rules_of(role) {
        if strings(&rule["verbs"]) != ["create"] {
            assert_eq!(rule["resourceNames"], json!(["prod-oam-trust"]));
        }
    }

    // `bind`: exactly the ceilings and the exchange's namespace role, whatever the values name.
    let bind_names = |objs: &[Value]| -> Value {
        let rules = rule_for(objs, "bind");
        assert_eq!(rules.len(), 1);
        rules[0]["resourceNames"].clone()
    };
    assert_eq!(
        bind_names(&objs),
        json!(["oam-trust-ceiling", namespace_role])
    );
    let extra_ceiling = render(
        "prod",
        "oam-system",
        &[
            "--set",
            "ceiling.create=false",
            "--set",
            "ceiling.extraClusterRoles={team-ceiling,other-ceiling}",
        ],
    );
    assert_eq!(
        bind_names(&extra_ceiling),
        json!(["team-ceiling", "other-ceiling", namespace_role])
    );
    // No ceiling is bound cluster-wide.
    for b in of_kind(&extra_ceiling, "ClusterRoleBinding") {
        let role = b["roleRef"]["name"].as_str().unwrap();
        assert!(
            role.starts_with("prod-oam-trust-"),
            "{role} bound cluster-wide"
        );
    }
}

#[test]
fn cluster_scoped_names_include_the_release() {
    let a = render("one", "ns-a", &[]);
    let b = render("two", "ns-b", &[]);
    let names = |objs: &[Value]| -> BTreeSet<String> {
        objs.iter()
            .filter(|o| o["metadata"]["namespace"].is_null() && !is_ceiling(o))
            .filter(|o| {
                o["kind"] != "ValidatingAdmissionPolicy"
                    && o["kind"] != "ValidatingAdmissionPolicyBinding"
            })
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    let (na, nb) = (names(&a), names(&b));
    let mut expected: BTreeSet<String> = ["applier", "controller", "exchange", "grants"]
        .iter()
        .flat_map(|r| {
            [
                format!("ClusterRole/one-oam-trust-{r}"),
                format!("ClusterRoleBinding/one-oam-trust-{r}"),
            ]
        })
        .collect();
    // The exchange's namespace role: bound per namespace by the controller, not by the chart.
    expected.insert("ClusterRole/one-oam-trust-exchange-namespace".into());
    assert_eq!(na, expected);
    assert!(
        na.is_disjoint(&nb),
        "releases clash on {:?}",
        na.intersection(&nb).collect::<Vec<_>>()
    );
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let read = |dir: PathBuf| -> BTreeMap<String, String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect()
    };
    let chart_crds = read(chart_path("crds"));
    assert_eq!(
        chart_crds,
        read(root().join("crds")),
        "charts/oam-trust/crds differs from crds/: run `oam-trust crd --out-dir charts/oam-trust/crds`"
    );
    assert_eq!(chart_crds.len(), oam_trust::api::all_crds().len());
}

#[test]
fn the_deploy_admission_policy_is_config_verbatim() {
    // Both admission policies ship as config/admission/<name>.yaml, copied byte for byte.
    let rendered = render("prod", "oam-system", &[]);
    let off = render(
        "prod",
        "oam-system",
        &["--set", "admissionPolicy.enabled=false"],
    );
    for name in ["deploy-guard.yaml", "grant-guard.yaml"] {
        let source = root().join("config/admission").join(name);
        let copy = chart_path(&format!("files/{name}"));
        let text = std::fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("config/admission/{name} ships: {e}"));
        assert_eq!(
            std::fs::read_to_string(&copy).ok().as_deref(),
            Some(text.as_str()),
            "cp config/admission/{name} charts/oam-trust/files/{name}"
        );
        let expected = parse_docs(&text);
        assert!(!expected.is_empty(), "{name} holds objects");
        for obj in &expected {
            assert!(
                rendered.contains(obj),
                "{name}: not rendered verbatim: {}",
                obj["metadata"]["name"]
            );
        }
        assert!(expected.iter().all(|o| !off.contains(o)), "{name}");
    }
    let policies: Vec<&str> = of_kind(&rendered, "ValidatingAdmissionPolicy")
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    // The tenant guards (fixed names, verbatim), and the release's own operator guard.
    assert_eq!(
        policies,
        [
            "oam-trust-deploy-guard",
            "oam-trust-approve-guard",
            "oam-trust-grant-guard",
            "prod-oam-trust-operator-guard"
        ]
    );
}

/// One install of the chart and the operator running as its two identities, per test binary: the
/// controller and the exchange, each in-process with a token of its own chart ServiceAccount. The proof
/// that the chart's RBAC suffices relies on these being the only operators alive, as in `hack/test.sh`
/// (cargo runs test binaries one after another); Events carry `INSTANCE` (controller) or
/// `EXCHANGE_INSTANCE` so the assertions can tell which identity did the work.
struct Installed {
    namespace: String,
    /// The chart's example ceiling ClusterRole, named after the release here.
    ceiling: String,
    /// The controller's client configuration: its ServiceAccount's token, no client certificate.
    controller: kube::Config,
    /// The exchange's client configuration: its ServiceAccount's token, no client certificate.
    exchange_identity: kube::Config,
    /// ServiceAccount names of the controller and the exchange, in `namespace`.
    controller_sa: String,
    exchange_sa: String,
    /// The ClusterRole the controller binds the exchange to where grants live.
    exchange_namespace_role: String,
    /// The release's full name (prefix of its ClusterRoles).
    fullname: String,
    /// `host:port` of the exchange (plain HTTP on 127.0.0.1: a test only; the chart serves it over
    /// TLS).
    exchange: String,
}

static INSTALLED: OnceCell<Installed> = OnceCell::const_new();

async fn installed() -> &'static Installed {
    INSTALLED.get_or_init(install_and_run).await
}

/// A client configuration of the test cluster that authenticates with a TokenRequest token of
/// ServiceAccount `ns/sa` alone (no client certificate), checked with a SelfSubjectReview.
async fn identity_of(admin: &Client, ns: &str, sa: &str) -> kube::Config {
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .get(sa)
        .await
        .unwrap_or_else(|e| panic!("the chart's ServiceAccount {sa} exists: {e}"));
    let token = support::token_for(admin, ns, sa, 3600).await;
    let mut config = support::admin_config().await;
    config.auth_info = Default::default();
    config.auth_info.token = Some(token.into());
    let (user, _) = support::whoami(&Client::try_from(config.clone()).unwrap())
        .await
        .unwrap();
    assert_eq!(user, format!("system:serviceaccount:{ns}:{sa}"));
    config
}

/// The args and literal env of the installed Deployment `name`'s container, as the API server holds it.
async fn installed_container(
    admin: &Client,
    ns: &str,
    name: &str,
) -> (Vec<String>, BTreeMap<String, String>) {
    let d = Api::<Deployment>::namespaced(admin.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("the chart's Deployment {name} exists: {e}"));
    let d = serde_json::to_value(d).unwrap();
    let c = container(&d);
    (strings(&c["args"]), env_values(&env_of(c)))
}

/// Runs `oam-trust run` with `config` on a thread with its own runtime, so it outlives each test's.
fn spawn_operator(what: &'static str, config: kube::Config, args: oam_trust::runtime::RunArgs) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            if let Err(e) = oam_trust::runtime::run_with_config(config, args).await {
                eprintln!("the {what} under the chart's RBAC stopped: {e:#}");
            }
        });
    });
}

async fn install_and_run() -> Installed {
    let admin = support::admin().await;
    support::install_crds(&admin).await;
    // The guard policies, as other test binaries apply them (the chart's copy is disabled below):
    // without them no grant that writes gets a token, and AccessReady stays False. Applied here too, so
    // this binary passes alone on a fresh control plane, not only after one that installed them.
    support::install_deploy_guard(&admin).await;
    let namespace = support::namespace(&admin, "chart").await;
    let release = format!("t{}", namespace.rsplit('-').next().unwrap());
    let ceiling = format!("{release}-ceiling");
    let kubeconfig = support::kubeconfig_path()
        .await
        .to_string_lossy()
        .into_owned();
    let chart = chart().to_string_lossy().into_owned();
    let out = helm_ok(&[
        "install",
        &release,
        &chart,
        "--kubeconfig",
        &kubeconfig,
        "-n",
        &namespace,
        "--skip-crds",
        "--set",
        &format!("ceiling.name={ceiling}"),
        // Cluster-wide and fixed-name: other test binaries apply it from config/ (the dry run in
        // `the_full_default_rendering_is_accepted_by_the_api_server` covers the chart's copy).
        "--set",
        "admissionPolicy.enabled=false",
    ]);
    assert!(
        out.contains("Next step"),
        "NOTES.txt tells the next step:\n{out}"
    );
    let fullname = format!("{release}-oam-trust");
    let controller_sa = format!("{fullname}-controller");
    let exchange_sa = format!("{fullname}-exchange");
    let exchange_namespace_role = format!("{fullname}-exchange-namespace");

    // Each identity's credentials: a TokenRequest token of its chart ServiceAccount, nothing else.
    let controller = identity_of(&admin, &namespace, &controller_sa).await;
    let exchange_identity = identity_of(&admin, &namespace, &exchange_sa).await;

    // Each runs as its installed Deployment says (args and env, so the Lease and the rights it binds are
    // the chart's), but for what only a pod has: its health and exchange addresses, its name, TLS.
    let (args, mut env) = installed_container(&admin, &namespace, &controller_sa).await;
    assert_eq!(
        env.get("OAM_TRUST_CONTROLLER_IDENTITY"),
        Some(&format!(
            "system:serviceaccount:{namespace}:{controller_sa}"
        ))
    );
    assert_eq!(
        env.get("OAM_TRUST_EXCHANGE_IDENTITY"),
        Some(&format!("system:serviceaccount:{namespace}:{exchange_sa}"))
    );
    assert_eq!(
        env.get("OAM_TRUST_EXCHANGE_NAMESPACE_ROLE"),
        Some(&exchange_namespace_role)
    );
    env.insert("OAM_TRUST_HEALTH_ADDR".into(), "127.0.0.1:0".into());
    env.insert("POD_NAME".into(), INSTANCE.into());
    let controller_args = parse_run(&args, &env);
    assert_eq!(controller_args.role, oam_trust::runtime::Role::Controller);
    assert!(controller_args.rights.controller_identity.is_some());
    spawn_operator("controller", controller.clone(), controller_args);

    // The exchange: plain HTTP on a free loopback port, acceptable in a test only (the chart serves it
    // over TLS from a Secret).
    let exchange = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let (args, mut env) = installed_container(&admin, &namespace, &exchange_sa).await;
    for tls in ["OAM_TRUST_EXCHANGE_TLS_CERT", "OAM_TRUST_EXCHANGE_TLS_KEY"] {
        assert!(env.remove(tls).is_some(), "the chart sets {tls}");
    }
    env.insert("OAM_TRUST_EXCHANGE_INSECURE_HTTP".into(), "true".into());
    env.insert("OAM_TRUST_EXCHANGE_LISTEN".into(), exchange.clone());
    env.insert("OAM_TRUST_HEALTH_ADDR".into(), "127.0.0.1:0".into());
    env.insert("POD_NAME".into(), EXCHANGE_INSTANCE.into());
    let exchange_args = parse_run(&args, &env);
    assert_eq!(exchange_args.role, oam_trust::runtime::Role::Exchange);
    spawn_operator("exchange", exchange_identity.clone(), exchange_args);

    Installed {
        namespace,
        ceiling,
        controller,
        exchange_identity,
        controller_sa,
        exchange_sa,
        exchange_namespace_role,
        fullname,
        exchange,
    }
}

async fn events_with_reason(client: &Client, ns: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

#[tokio::test]
async fn under_the_charts_rbac_applications_run_status_is_written_and_events_recorded() {
    installed().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "chart-app", "admin").await;
    let web = |expose: bool| {
        json!({"name": "web", "type": "webservice",
            "properties": {"image": "oamdev/hello-world:v1", "ports": [{"port": 8000, "expose": expose}]},
            "traits": [{"type": "scaler", "properties": {"replicas": 2}}]})
    };
    let app = |components: Value| {
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "shop"}, "spec": {"components": components}})
    };
    support::apply_app(&admin, &ns, app(json!([web(true)]))).await;
    let a = support::wait_app(&admin, &ns, "shop", "running", support::app_running).await;
    let status = a.status.unwrap();
    assert_eq!(status.services[0].message.as_deref(), Some("Ready:2/2"));
    let kinds: Vec<&str> = status
        .applied_resources
        .iter()
        .map(|r| r.kind.as_str())
        .collect();
    assert_eq!(kinds, ["Deployment", "Service"]);
    let managed_fields = Api::<Deployment>::namespaced(admin.clone(), &ns)
        .get("web")
        .await
        .unwrap()
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect::<Vec<_>>();
    assert!(managed_fields.contains(&"oam-trust".to_string()));

    // Pruning deletes as the applier and records an Event.
    support::apply_app(&admin, &ns, app(json!([web(false)]))).await;
    let services = Api::<Service>::namespaced(admin.clone(), &ns);
    assert!(
        support::eventually(WAIT, || {
            let services = services.clone();
            async move { services.get_opt("web").await.unwrap().is_none() }
        })
        .await,
        "the unexposed port's Service was pruned"
    );
    support::wait_app(
        &admin,
        &ns,
        "shop",
        "running after prune",
        support::app_running,
    )
    .await;
    let pruned = events_with_reason(&admin, &ns, "Pruned").await;
    assert!(!pruned.is_empty(), "a Pruned Event was recorded");
    assert_eq!(
        pruned[0].reporting_component.as_deref(),
        Some("oam-trust"),
        "recorded by the operator"
    );

    // A render failure: status condition and a Warning Event, nothing applied.
    support::apply_app(
        &admin,
        &ns,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "broken"},
            "spec": {"components": [{"name": "x", "type": "no-such-type"}]}}),
    )
    .await;
    let a = support::wait_app(&admin, &ns, "broken", "render error", |a| {
        a.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Parsed" && c.status == "False")
        })
    })
    .await;
    assert_eq!(support::app_phase(&a), "rendering");
    assert!(
        events_with_reason(&admin, &ns, "RenderFailed")
            .await
            .iter()
            .any(|e| e.reporting_instance.as_deref() == Some(INSTANCE)),
        "a RenderFailed Event from the controller under the chart's RBAC"
    );
}

#[tokio::test]
async fn the_operator_impersonates_only_the_listed_appliers() {
    let chart = installed().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "chart-imp", "admin").await;
    // `deployer` exists and may do anything in the namespace, but it is not in
    // rbac.applierServiceAccounts: the API server refuses the controller's impersonation.
    support::service_account_token(&admin, &ns, "deployer", 600).await;
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "deployer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": ns}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &rb)
        .await
        .unwrap();
    support::apply_app(
        &admin,
        &ns,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "other", "annotations": {"app.oam.dev/service-account-name": "deployer"}},
            "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx"}}]}}),
    )
    .await;
    let a = support::wait_app(&admin, &ns, "other", "apply refused", |a| {
        a.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Applied" && c.status == "False" && c.reason == "Forbidden")
        })
    })
    .await;
    let status = a.status.unwrap();
    let message = &status
        .conditions
        .iter()
        .find(|c| c.type_ == "Applied")
        .unwrap()
        .message;
    assert!(message.contains("impersonate"), "{message}");
    // Recorded by the controller under the chart's RBAC (its instance name), not by another one.
    assert!(
        events_with_reason(&admin, &ns, "ApplyFailed")
            .await
            .iter()
            .any(|e| e.reporting_instance.as_deref() == Some(INSTANCE)),
        "an ApplyFailed Event from the controller under the chart's RBAC"
    );

    // Asked of the API server directly, with each identity's own token: the controller may
    // impersonate the listed applier only, the exchange nobody.
    let can = |who: &kube::Config, verb: &'static str, name: Option<&'static str>| {
        let ns = ns.clone();
        let op = Client::try_from(who.clone()).unwrap();
        async move {
            support::can_i(
                &op,
                support::Access {
                    verb,
                    group: "",
                    resource: "serviceaccounts",
                    namespace: Some(&ns),
                    name,
                },
            )
            .await
        }
    };
    let (controller, exchange) = (&chart.controller, &chart.exchange_identity);
    assert!(can(controller, "impersonate", Some("oam-trust-applier")).await);
    assert!(!can(controller, "impersonate", Some("deployer")).await);
    assert!(!can(controller, "impersonate", Some("default")).await);
    assert!(!can(exchange, "impersonate", Some("oam-trust-applier")).await);
    assert!(!can(exchange, "impersonate", None).await);
}

/// Whether `client` may `verb` `resource` (`name`, when given) of `group` in namespace `ns`.
async fn may(
    client: &Client,
    ns: &str,
    (verb, group, resource, name): (&str, &str, &str, Option<&str>),
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

const RBAC: &str = "rbac.authorization.k8s.io";

#[tokio::test]
async fn neither_identity_holds_write_access_of_its_own_and_grants_stay_within_the_ceiling() {
    let chart = installed().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "chart-grant", "admin").await;
    let controller = &Client::try_from(chart.controller.clone()).unwrap();
    let exchange = &Client::try_from(chart.exchange_identity.clone()).unwrap();
    // Reads (or deletes) of Secrets, RBAC verbs that would let it escalate, cluster-scoped writes:
    // refused to both identities.
    let refused_to_both: &[(&str, &str, &str, Option<&str>)] = &[
        ("get", "", "secrets", None),
        ("list", "", "secrets", None),
        ("watch", "", "secrets", None),
        ("delete", "", "secrets", None),
        ("update", "oam-trust.dev", "tokenissuances", None),
        ("patch", "oam-trust.dev", "tokenissuances", None),
        ("create", "", "pods/portforward", None),
        ("create", "", "pods/exec", None),
        ("escalate", RBAC, "roles", None),
        ("escalate", RBAC, "clusterroles", None),
        ("bind", RBAC, "roles", None),
        ("bind", RBAC, "clusterroles", Some("admin")),
        ("bind", RBAC, "clusterroles", Some("cluster-admin")),
        ("create", RBAC, "clusterroles", None),
        ("create", RBAC, "clusterrolebindings", None),
        (
            "create",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
        ),
        ("create", "core.oam.dev", "applications", None),
        ("delete", "core.oam.dev", "applications", None),
    ];
    // The exchange writes no grant, status, Lease or RBAC, and binds nothing.
    let refused_to_the_exchange: &[(&str, &str, &str, Option<&str>)] = &[
        ("create", RBAC, "roles", None),
        ("create", RBAC, "rolebindings", None),
        ("bind", RBAC, "clusterroles", Some(chart.ceiling.as_str())),
        ("create", "", "serviceaccounts", None),
        ("create", "", "configmaps", None),
        ("patch", "core.oam.dev", "applications", None),
        ("patch", "core.oam.dev", "applications/status", None),
        ("patch", "oam-trust.dev", "gitlabtrusts/status", None),
        ("create", "coordination.k8s.io", "leases", None),
    ];
    // The controller mints no token and creates no Secret, here or anywhere.
    let refused_to_the_controller: &[(&str, &str, &str, Option<&str>)] = &[
        ("create", "", "secrets", None),
        ("create", "", "serviceaccounts/token", None),
    ];
    let check_refusals = |phase: &'static str| {
        let ns = ns.clone();
        async move {
            for &a in refused_to_both {
                assert!(
                    !may(controller, &ns, a).await,
                    "{phase}: the controller may {a:?}"
                );
                assert!(
                    !may(exchange, &ns, a).await,
                    "{phase}: the exchange may {a:?}"
                );
            }
            for &a in refused_to_the_exchange {
                assert!(
                    !may(exchange, &ns, a).await,
                    "{phase}: the exchange may {a:?}"
                );
            }
            for &a in refused_to_the_controller {
                assert!(
                    !may(controller, &ns, a).await,
                    "{phase}: the controller may {a:?}"
                );
            }
        }
    };
    check_refusals("before any grant").await;

    // No ceiling cluster-wide: before a grant lives in the namespace, the controller cannot write a
    // Role even within the ceiling, and the exchange cannot mint a token here.
    let roles = Api::<Role>::namespaced(controller.clone(), &ns);
    let within: Role = serde_json::from_value(json!({
        "metadata": {"name": "oam-shop-within-0123456789abcdef0123", "labels": {"oam-trust.dev/grant": "true"}},
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"], "resourceNames": ["web"]},
            {"apiGroups": ["core.oam.dev"], "resources": ["applications"], "verbs": ["get", "patch"], "resourceNames": ["shop"]}
        ]
    }))
    .unwrap();
    let err = roles
        .create(&PostParams::default(), &within)
        .await
        .expect_err("a Role in a namespace where no grant lives");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
    for resource in ["secrets", "serviceaccounts/token"] {
        assert!(
            !may(exchange, &ns, ("create", "", resource, None)).await,
            "the exchange may create {resource} where no grant lives"
        );
    }

    // A grant makes the namespace one where grants live: the controller binds itself the ceiling and
    // the exchange its namespace role here, then writes the grant.
    let trust = support::selecting_trust(&admin, &ns, Some(&chart.ceiling)).await;
    support::apply_app(
        &admin,
        &ns,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "shop"},
            "spec": {
                "components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx:1"}}],
                "policies": [{"name": "ci", "type": "gitlab-access", "properties": {
                    "trust": trust, "subjects": [{"projectId": "1450", "namespaceId": "72"}],
                    "access": "deploy", "ttl": "10m"}}]
            }}),
    )
    .await;
    support::wait_app(&admin, &ns, "shop", "access granted", |a| {
        a.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "AccessReady"
                    && c.status == "True"
                    && c.observed_generation == a.metadata.generation
            })
        })
    })
    .await;
    check_refusals("where grants live").await;

    // A grant within the ceiling: the API server's escalation check lets the controller write it.
    roles
        .create(&PostParams::default(), &within)
        .await
        .expect("a Role within the ceiling is created by the controller");
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "oam-shop-within-0123456789abcdef0123", "labels": {"oam-trust.dev/grant": "true"}}})).unwrap();
    Api::<ServiceAccount>::namespaced(controller.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("the controller creates grant ServiceAccounts");
    let binding = |name: &str, kind: &str, role: &str| -> RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"oam-trust.dev/grant": "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
        }))
        .unwrap()
    };
    let bindings = Api::<RoleBinding>::namespaced(controller.clone(), &ns);
    bindings
        .create(
            &PostParams::default(),
            &binding(
                "oam-shop-within-0123456789abcdef0123",
                "Role",
                "oam-shop-within-0123456789abcdef0123",
            ),
        )
        .await
        .expect("a RoleBinding to a Role within the ceiling is created by the controller");

    // Beyond the ceiling: refused by the API server, not by our code.
    let beyond: Role = serde_json::from_value(json!({
        "metadata": {"name": "oam-shop-beyond-0123456789abcdef0123", "labels": {"oam-trust.dev/grant": "true"}},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    }))
    .unwrap();
    let err = roles
        .create(&PostParams::default(), &beyond)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403 && s.message.contains("not currently held")),
        "{err}"
    );
    for (kind, role) in [("ClusterRole", "cluster-admin"), ("ClusterRole", "admin")] {
        let err = bindings
            .create(
                &PostParams::default(),
                &binding("oam-shop-admin-0123456789abcdef01234", kind, role),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 403),
            "binding {role}: {err}"
        );
    }

    // The exchange mints tokens here now, and still nowhere without grants.
    for resource in ["secrets", "serviceaccounts/token"] {
        assert!(
            may(exchange, &ns, ("create", "", resource, None)).await,
            "the exchange may not create {resource} where grants live"
        );
        assert!(
            !may(exchange, &chart.namespace, ("create", "", resource, None)).await,
            "the exchange may create {resource} in {}, where no grant lives",
            chart.namespace
        );
    }
    // Even here, a grant token that is not bound to a binding Secret (so could not be revoked) is
    // refused by the operator guard the chart installs: the exchange's real tokens are bound.
    let unbound = Api::<ServiceAccount>::namespaced(exchange.clone(), &ns)
        .create_token_request(
            "oam-shop-within-0123456789abcdef0123",
            &PostParams::default(),
            &k8s_openapi::api::authentication::v1::TokenRequest::default(),
        )
        .await
        .expect_err("an unbound grant token");
    assert!(
        matches!(&unbound, kube::Error::Api(s) if s.code == 403 && s.message.contains("operator-guard")),
        "{unbound}"
    );

    let _ = Api::<oam_trust::api::trust::GitLabTrust>::all(admin.clone())
        .delete(&trust, &Default::default())
        .await;
}

#[tokio::test]
async fn the_full_default_rendering_is_accepted_by_the_api_server() {
    let chart = installed().await;
    let kubeconfig = support::kubeconfig_path()
        .await
        .to_string_lossy()
        .into_owned();
    let dir = chart_path("").to_string_lossy().into_owned();
    // Everything the default values render, including the fixed-name ceiling ClusterRole and the
    // admission policy, through a server-side dry run (validation, admission, RBAC object checks).
    let manifest = helm_ok(&["template", "dry", &dir, "-n", &chart.namespace]);
    let kubectl = Path::new(&helm()).with_file_name("kubectl");
    let mut child = tokio::process::Command::new(kubectl)
        .args([
            "--kubeconfig",
            &kubeconfig,
            "apply",
            "--dry-run=server",
            "-f",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let created = String::from_utf8_lossy(&out.stdout);
    for component in ["controller", "exchange"] {
        assert!(
            created.contains(&format!(
                "deployment.apps/dry-oam-trust-{component} created (server dry run)"
            )),
            "{created}"
        );
    }
    assert!(
        created.contains("clusterrole.rbac.authorization.k8s.io/oam-trust-ceiling"),
        "{created}"
    );
}

#[tokio::test]
async fn under_the_charts_rbac_access_declarations_become_grants_within_the_charts_ceiling() {
    let chart = installed().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "chart-access", "admin").await;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"oam-trust.dev/chart-test": ns}}})),
        )
        .await
        .unwrap();
    // A trust whose ceiling is the chart's example ceiling, which the controller may bind itself to.
    let trust = format!("chart-{ns}");
    let glt: oam_trust::api::trust::GitLabTrust = serde_json::from_value(json!({
        "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust", "metadata": {"name": trust},
        "spec": {
            "issuer": "https://gitlab.example.com",
            "audiences": ["https://oam-trust.test"],
            "jwks": {"static": r#"{"keys":[]}"#},
            "namespaceSelector": {"matchLabels": {"oam-trust.dev/chart-test": ns}},
            "allow": [{"namespaceId": "72"}],
            "tokens": {"defaultTTL": "10m", "maxTTL": "1h"},
            "ceiling": {"clusterRoleRef": chart.ceiling},
            "federation": {"tokenExchange": true}
        }
    }))
    .unwrap();
    Api::<oam_trust::api::trust::GitLabTrust>::all(admin.clone())
        .patch(
            &trust,
            &PatchParams::apply("chart-test").force(),
            &Patch::Apply(&glt),
        )
        .await
        .expect("the API server accepts the GitLabTrust");
    let declaration = |name: &str, preset: &str| {
        json!({"name": name, "type": "gitlab-access", "properties": {
            "trust": trust, "subjects": [{"projectId": "1450", "namespaceId": "72"}],
            "access": preset, "ttl": "10m"}})
    };
    support::apply_app(
        &admin,
        &ns,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "shop"},
            "spec": {
                "components": [{"name": "web", "type": "webservice",
                    "properties": {"image": "nginx:1", "ports": [{"port": 8000, "expose": true}]}}],
                "policies": [declaration("ci-deploy", "deploy"), declaration("ci-manage", "manage")]
            }}),
    )
    .await;
    let a = support::wait_app(&admin, &ns, "shop", "access granted", |a| {
        a.status.as_ref().is_some_and(|s| {
            s.observed_generation == a.metadata.generation
                && s.conditions.iter().any(|c| {
                    c.type_ == "AccessReady"
                        && c.status == "True"
                        && c.observed_generation == a.metadata.generation
                })
        })
    })
    .await;
    let denied = a
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "AccessDenied")
        .map(|c| (c.status.clone(), c.message.clone()));
    assert_eq!(
        denied.as_ref().map(|d| d.0.as_str()),
        Some("False"),
        "every declaration granted: {denied:?}"
    );

    // The grant objects were written by the controller under the chart's RBAC, within the ceiling.
    let lp = ListParams::default().labels("oam-trust.dev/grant,app.oam.dev/name=shop");
    let sas = Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .list(&lp)
        .await
        .unwrap()
        .items;
    let roles = Api::<Role>::namespaced(admin.clone(), &ns)
        .list(&lp)
        .await
        .unwrap()
        .items;
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .list(&lp)
        .await
        .unwrap()
        .items;
    assert_eq!((sas.len(), roles.len(), bindings.len()), (2, 2, 2));
    let verbs: BTreeSet<String> = roles
        .iter()
        .flat_map(|r| r.rules.clone().unwrap_or_default())
        .filter(|r| r.resources.as_deref() == Some(&["deployments".to_string()][..]))
        .flat_map(|r| r.verbs)
        .collect();
    assert!(
        verbs.contains("delete") && verbs.contains("create"),
        "manage grants write access to the Deployment: {verbs:?}"
    );
    // The deploy guard's parameters (a ConfigMap) are written too.
    let guards = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default().labels("oam-trust.dev/deploy-guard=params"))
        .await
        .unwrap()
        .items;
    assert_eq!(guards.len(), 1);

    // The namespace's rights, bound by the controller before it wrote the grants: itself to the
    // ceiling, the exchange to its namespace role.
    let rights = Api::<RoleBinding>::namespaced(admin.clone(), &ns);
    let ceilings = rights
        .list(&ListParams::default().labels(&format!(
            "{}=ceiling",
            oam_trust::names::LABEL_NAMESPACE_RIGHTS
        )))
        .await
        .unwrap()
        .items;
    let subject =
        |sa: &str| json!([{"kind": "ServiceAccount", "name": sa, "namespace": chart.namespace}]);
    assert_eq!(ceilings.len(), 1, "one ceiling binding: {ceilings:?}");
    assert_eq!(
        ceilings[0].name_any(),
        oam_trust::access::rights::ceiling_binding_name(&chart.ceiling)
    );
    assert_eq!(
        (
            ceilings[0].role_ref.kind.as_str(),
            ceilings[0].role_ref.name.as_str()
        ),
        ("ClusterRole", chart.ceiling.as_str())
    );
    assert_eq!(
        serde_json::to_value(&ceilings[0].subjects).unwrap(),
        subject(&chart.controller_sa)
    );
    let exchange = rights
        .get(oam_trust::names::EXCHANGE_RIGHTS_BINDING)
        .await
        .expect("the exchange's RoleBinding where grants live");
    assert_eq!(
        exchange.labels()[oam_trust::names::LABEL_NAMESPACE_RIGHTS],
        "exchange"
    );
    assert_eq!(
        (
            exchange.role_ref.kind.as_str(),
            exchange.role_ref.name.as_str()
        ),
        ("ClusterRole", chart.exchange_namespace_role.as_str())
    );
    assert_eq!(
        serde_json::to_value(&exchange.subjects).unwrap(),
        subject(&chart.exchange_sa)
    );

    // Cluster-wide, neither identity is bound to anything but its own ClusterRoles; anywhere else,
    // only to its Lease (the controller) and to the namespace rights above.
    let names = |sa: &str| {
        let me = (chart.namespace.clone(), sa.to_string());
        move |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
            subjects.iter().flatten().any(|s| {
                s.kind == "ServiceAccount"
                    && (s.namespace.clone().unwrap_or_default(), s.name.clone()) == me
            })
        }
    };
    let crbs = Api::<ClusterRoleBinding>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let rbs = Api::<RoleBinding>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    for (sa, own) in [
        (
            &chart.controller_sa,
            vec!["applier", "controller", "grants"],
        ),
        (&chart.exchange_sa, vec!["exchange"]),
    ] {
        let bound = names(sa);
        let cluster_roles: BTreeSet<String> = crbs
            .iter()
            .filter(|b| bound(&b.subjects))
            .map(|b| b.role_ref.name.clone())
            .collect();
        let expected: BTreeSet<String> = own
            .iter()
            .map(|r| format!("{}-{r}", chart.fullname))
            .collect();
        assert_eq!(cluster_roles, expected, "ClusterRoleBindings of {sa}");
        for rb in rbs.iter().filter(|b| bound(&b.subjects)) {
            let where_ = format!("{}/{}", rb.namespace().unwrap(), rb.name_any());
            let kind = rb
                .labels()
                .get(oam_trust::names::LABEL_NAMESPACE_RIGHTS)
                .map(String::as_str);
            let role = (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str());
            let allowed = if *sa == chart.controller_sa {
                (role == ("Role", &format!("{}-leader-election", chart.fullname))
                    && rb.namespace().as_deref() == Some(&chart.namespace))
                    || (kind == Some("ceiling") && role == ("ClusterRole", &chart.ceiling))
            } else {
                kind == Some("exchange")
                    && rb.name_any() == oam_trust::names::EXCHANGE_RIGHTS_BINDING
                    && role == ("ClusterRole", &chart.exchange_namespace_role)
            };
            assert!(allowed, "{sa} is bound by {where_} to {role:?}");
        }
    }

    let _ = Api::<oam_trust::api::trust::GitLabTrust>::all(admin.clone())
        .delete(&trust, &Default::default())
        .await;
}

/// Whether `GET /healthz` of the exchange at `addr` (plain HTTP) answers 200: its caches are synced.
async fn exchange_ready(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    answer.starts_with(b"HTTP/1.1 200")
}

/// The `jti` claim of a compact JWT (unverified).
fn jti(token: &str) -> String {
    let claims = oam_trust::oidc::peek(token).expect("a compact JWT").claims;
    claims["jti"].as_str().expect("a jti claim").to_string()
}

#[tokio::test]
async fn under_the_charts_rbac_a_deploy_job_exchanges_its_id_token_once() {
    use oam_trust::dev_issuer::{DevIssuer, DevIssuerOptions, MintRequest};
    use oam_trust::federation::client::{ExchangeCallError, ExchangeClient};
    use oam_trust::federation::decision::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_JWT};

    let chart = installed().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "chart-exchange", "admin").await;
    const AUD: &str = "https://oam-trust.test/chart-exchange";
    let issuer = DevIssuer::start(DevIssuerOptions {
        audience: AUD.into(),
        ..DevIssuerOptions::default()
    })
    .await
    .expect("dev issuer starts");
    let select_label = "oam-trust.dev/chart-exchange-test";
    Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {select_label: ns}}})),
        )
        .await
        .unwrap();
    // A trust for the dev issuer whose ceiling is the chart's example ceiling.
    let trust = format!("chart-{ns}");
    let glt: oam_trust::api::trust::GitLabTrust = serde_json::from_value(json!({
        "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust", "metadata": {"name": trust},
        "spec": {
            "issuer": issuer.url(),
            "audiences": [AUD],
            "jwks": {"caBundle": issuer.ca_pem()},
            "namespaceSelector": {"matchLabels": {select_label: ns}},
            "allow": [{"namespaceId": "72"}],
            "require": {"refProtected": true, "maxTokenAge": "2h"},
            "tokens": {"defaultTTL": "10m", "maxTTL": "1h"},
            "ceiling": {"clusterRoleRef": chart.ceiling},
            "federation": {"tokenExchange": true}
        }
    }))
    .unwrap();
    let trusts = Api::<oam_trust::api::trust::GitLabTrust>::all(admin.clone());
    trusts
        .patch(
            &trust,
            &PatchParams::apply("chart-test").force(),
            &Patch::Apply(&glt),
        )
        .await
        .expect("the API server accepts the GitLabTrust");
    // A deploy declaration for the dev issuer's default job: project 1450, ref main (protected).
    support::apply_app(
        &admin,
        &ns,
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": "shop"},
            "spec": {
                "components": [{"name": "web", "type": "webservice",
                    "properties": {"image": "nginx:1", "ports": [{"port": 8000, "expose": true}]}}],
                "policies": [{"name": "deploy", "type": "gitlab-access", "properties": {
                    "trust": trust, "subjects": [{"projectId": "1450", "ref": "main"}],
                    "access": "deploy", "ttl": "10m"}}]
            }}),
    )
    .await;
    support::wait_app(&admin, &ns, "shop", "access granted", |a| {
        a.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "AccessReady"
                    && c.status == "True"
                    && c.observed_generation == a.metadata.generation
            })
        })
    })
    .await;
    assert!(
        support::eventually(WAIT, || exchange_ready(&chart.exchange)).await,
        "the exchange under the chart's RBAC did not become ready at {}",
        chart.exchange
    );

    // POST /v1/token with the RFC 8693 form, as a GitLab job would.
    let client = ExchangeClient::new(&format!("http://{}", chart.exchange), None).unwrap();
    let resource = format!("{ns}/shop");
    let post = |token: String| {
        let (client, resource) = (client.clone(), resource.clone());
        async move {
            let form = serde_urlencoded::to_string([
                ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
                ("subject_token", token.as_str()),
                ("subject_token_type", TOKEN_TYPE_JWT),
                ("resource", resource.as_str()),
            ])
            .unwrap();
            client.post_form(form.into_bytes()).await
        }
    };
    // The exchange's own view of the grant may trail AccessReady by a moment: a refused attempt is
    // retried with a fresh ID token (a refusal consumes nothing), and the last refusal is reported.
    let issue = || async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let id_token = issuer.mint(&MintRequest::new()).unwrap();
            match post(id_token.clone()).await {
                Ok(answer) => break (id_token, answer),
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the exchange under the chart's RBAC did not issue a token: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    };
    let (id_token, answer) = issue().await;
    assert!(!answer.access_token.is_empty(), "200 with an access_token");
    assert_eq!(answer.grant.namespace, ns);
    assert_eq!(answer.grant.application, "shop");
    assert_eq!(answer.grant.grant, "policy/deploy");

    // The token does the grant's job and nothing more.
    let job = support::client_with_token(&answer.access_token).await;
    Api::<Application>::namespaced(job.clone(), &ns)
        .get("shop")
        .await
        .expect("the deploy token reads its Application");
    let err = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(job, &ns)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "the deploy token must not list Secrets: {err}"
    );

    // The TokenIssuance and the binding Secret it owns were written by the exchange under the
    // chart's RBAC (which cannot read the Secret back), and the issue recorded by it.
    let record_name = oam_trust::federation::binding::issuance_name(issuer.url(), &jti(&id_token));
    let record = Api::<oam_trust::api::issuance::TokenIssuance>::all(admin.clone())
        .get(&record_name)
        .await
        .expect("the TokenIssuance exists");
    assert_eq!(
        (
            record.spec.namespace.as_str(),
            record.spec.application.as_str()
        ),
        (ns.as_str(), "shop")
    );
    let binding = oam_trust::federation::binding::secret_name(issuer.url(), &jti(&id_token));
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), &ns)
        .get(&binding)
        .await
        .expect("the binding Secret exists");
    assert_eq!(secret.labels()[oam_trust::names::LABEL_BINDING], "true");
    let owners: Vec<(String, String)> = secret
        .owner_references()
        .iter()
        .map(|o| (o.kind.clone(), o.uid.clone()))
        .collect();
    assert_eq!(
        owners,
        vec![("TokenIssuance".to_string(), record.uid().unwrap())],
        "the Secret is owned by its record alone"
    );
    assert!(
        support::eventually(WAIT, || {
            let (admin, ns) = (admin.clone(), ns.clone());
            async move {
                events_with_reason(&admin, &ns, "TokenIssued")
                    .await
                    .iter()
                    .any(|e| e.reporting_instance.as_deref() == Some(EXCHANGE_INSTANCE))
            }
        })
        .await,
        "a TokenIssued Event from the exchange under the chart's RBAC"
    );

    // The same ID token again: refused, nothing issued.
    match post(id_token).await {
        Err(ExchangeCallError::Refused { body, .. }) => {
            assert_eq!(body.error, "invalid_grant", "{body:?}");
            assert!(
                body.error_description.contains("already exchanged"),
                "{body:?}"
            );
        }
        Ok(r) => panic!("a replayed ID token got a token for {:?}", r.grant),
        Err(e) => panic!("a replayed ID token: expected invalid_grant, got {e}"),
    }

    // Revocation by deleting the record: the garbage collector deletes the Secret the exchange
    // bound the token to, and the API server stops accepting the token.
    let unauthorized = |token: String| async move {
        let client = support::client_with_token(&token).await;
        matches!(support::whoami(&client).await, Err(kube::Error::Api(s)) if s.code == 401)
    };
    Api::<oam_trust::api::issuance::TokenIssuance>::all(admin.clone())
        .delete(&record_name, &Default::default())
        .await
        .unwrap();
    assert!(
        support::eventually(WAIT, || unauthorized(answer.access_token.clone())).await,
        "a token whose TokenIssuance is deleted is refused"
    );

    // The reaper, run by the exchange under its own identity: the Application goes, so do its
    // records, and the token with them.
    let (_, second) = issue().await;
    Api::<Application>::namespaced(admin.clone(), &ns)
        .delete("shop", &Default::default())
        .await
        .unwrap();
    assert!(
        support::eventually(Duration::from_secs(120), || unauthorized(
            second.access_token.clone()
        ))
        .await,
        "the token of a deleted Application is revoked"
    );

    let _ = trusts.delete(&trust, &Default::default()).await;
}
