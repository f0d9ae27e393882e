//! The Kubernetes objects of a grant: the ServiceAccount, Role and RoleBinding sharing one name, with
//! the labels, annotations and ownerReference that tie them to their Application; and the guards'
//! parameter ConfigMap, which the admission policies (`config/admission/`) read to know who holds
//! which grant and which ServiceAccounts the Application's pods run as.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject as RbacSubject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::Value;

use super::declaration::Declaration;
use super::grant::{Grant, GrantSet};
use super::kinds;
use crate::api::access::{Access, Preset};
use crate::api::oam::Application;
use crate::names::{
    self, ANNOTATION_GRANT_ID, ANNOTATION_TRUST, GUARD_KEY_APPLICATION, LABEL_DEPLOY_GUARD,
    LABEL_GRANT,
};
use crate::render::RenderedObject;

/// The three objects of one grant.
pub(super) struct GrantObjects {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
}

/// Builds the grant's objects named `name`: the Role holds `rules`, the RoleBinding binds the
/// ServiceAccount and `groups` (the GitLab agent's, and the API-server-mode grant group).
pub(super) fn grant_objects(
    app: &Application,
    name: &str,
    decl: &Declaration,
    trust: &str,
    rules: Vec<PolicyRule>,
    groups: &[String],
) -> GrantObjects {
    let namespace = names::namespace_of(app);
    let meta = object_meta(app, name, decl, trust);
    let mut subjects = vec![RbacSubject {
        kind: "ServiceAccount".into(),
        name: name.to_string(),
        namespace: Some(namespace.to_string()),
        api_group: None,
    }];
    subjects.extend(groups.iter().map(|group| RbacSubject {
        kind: "Group".into(),
        name: group.clone(),
        namespace: None,
        api_group: Some("rbac.authorization.k8s.io".into()),
    }));
    GrantObjects {
        service_account: ServiceAccount {
            metadata: meta.clone(),
            automount_service_account_token: Some(false),
            ..Default::default()
        },
        role: Role {
            metadata: meta.clone(),
            rules: Some(rules),
        },
        role_binding: RoleBinding {
            metadata: meta,
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: name.to_string(),
            },
            subjects: Some(subjects),
        },
    }
}

/// Hex digits of the hash in a grant's object name: 80 bits, so no one can search for a declaration
/// of their own whose name equals another Application's grant (a second preimage).
pub const NAME_HASH_HEX: usize = 20;

/// `oam-<app>-<slug>-<hash>`: readable, unique per declaration, and a valid label value (≤ 63). The
/// hash covers the exact namespace, Application and declaration id (none of the first two can
/// contain `/`), so distinct declarations never share a name; the readable part may be shortened.
pub fn object_name(app: &str, namespace: &str, slug: &str, id: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{app}/{id}").as_bytes());
    let hash: String = digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..NAME_HASH_HEX]
        .to_string();
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect()
    };
    let mut base = format!("oam-{}-{}", clean(app), clean(slug));
    base.truncate(63 - hash.len() - 1);
    let base = base.trim_end_matches('-');
    format!("{base}-{hash}")
}

fn object_meta(app: &Application, name: &str, decl: &Declaration, trust: &str) -> ObjectMeta {
    let app_name = super::grant::app_name(app);
    let namespace = names::namespace_of(app).to_string();
    let mut labels = BTreeMap::from([
        (
            names::LABEL_MANAGED_BY.to_string(),
            names::MANAGED_BY.to_string(),
        ),
        (names::LABEL_APP_NAME.to_string(), app_name),
        (names::LABEL_APP_NAMESPACE.to_string(), namespace.clone()),
        (LABEL_GRANT.to_string(), name.to_string()),
    ]);
    if let Some(component) = decl.component {
        labels.insert(names::LABEL_APP_COMPONENT.into(), component.to_string());
    }
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([
            (ANNOTATION_GRANT_ID.to_string(), decl.id.clone()),
            (ANNOTATION_TRUST.to_string(), trust.to_string()),
        ])),
        owner_references: app.controller_reference().map(|o| vec![o]),
        ..Default::default()
    }
}

/// The grant objects of `set` in apply order: the guards' parameters first, so no grant binding
/// exists without them, then each grant's ServiceAccount, Role and RoleBinding. `rendered` is what
/// the Application renders to (the ServiceAccounts its pods run as). Pure.
pub fn objects_of(app: &Application, set: &GrantSet, rendered: &[RenderedObject]) -> Vec<Value> {
    let mut out = Vec::new();
    out.extend(guard_params(app, set, rendered).map(|cm| typed(&cm)));
    for grant in &set.grants {
        out.push(typed(&grant.service_account));
        out.push(typed(&grant.role));
        out.push(typed(&grant.role_binding));
    }
    out
}

/// A typed object as a manifest: with apiVersion and kind, without the `null`s of unset options.
pub fn typed<K: Resource<DynamicType = ()> + Serialize>(object: &K) -> Value {
    let mut value = strip_nulls(&serde_json::to_value(object).unwrap_or_default());
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    value
}

/// Serialized typed objects carry `null` for unset options; they say nothing about the live object.
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Name of an Application's guard parameter ConfigMap.
pub fn guard_config_map_name(app: &str) -> String {
    format!("oam-trust.deploy-guard.{app}")
}

/// Key of the guard parameters listing every grant's principals (the grant guard's "who is a grant
/// identity of this Application"). Deliberately not ending in `.principals`: that suffix is the
/// deploy guard's, for `deploy` grants only.
pub const GUARD_KEY_GRANT_PRINCIPALS: &str = "grant-principals";
/// Prefix of the guard parameter keys naming the ServiceAccounts a component's pods run as.
pub const GUARD_KEY_SERVICE_ACCOUNTS: &str = "serviceAccounts.";

/// The guards' parameters for one Application (`config/admission/deploy-guard.yaml` documents the
/// keys):
/// - for every `deploy` grant, who holds it (`<grant>.principals`: `user:<name>` and
///   `group:<name>` — the GitLab agent's groups and the API-server-mode grant group — comma-separated) and which components it covers (`<grant>.components`: names,
///   or `*` for the whole Application) — the deploy guard;
/// - every grant's principals, whatever its access (`grant-principals`), and per component the
///   non-default ServiceAccounts its rendered pods and pod templates run as
///   (`serviceAccounts.<component>`, comma-separated) — the grant guard.
///
/// Written whenever the Application has a grant, so a namespace with grants always has parameters.
pub fn guard_params(
    app: &Application,
    set: &GrantSet,
    rendered: &[RenderedObject],
) -> Option<ConfigMap> {
    if set.grants.is_empty() {
        return None;
    }
    let ns = names::namespace_of(app).to_string();
    let mut data = BTreeMap::from([(GUARD_KEY_APPLICATION.to_string(), app.name_any())]);
    let mut everyone = BTreeSet::new();
    for grant in &set.grants {
        let mut principals = vec![format!(
            "user:system:serviceaccount:{ns}:{}",
            grant
                .service_account
                .metadata
                .name
                .as_deref()
                .unwrap_or(&grant.name)
        )];
        principals.extend(
            grant
                .agent_groups
                .iter()
                .chain(&grant.api_server_group)
                .map(|g| format!("group:{g}")),
        );
        everyone.extend(principals.iter().cloned());
        if is_deploy(grant) {
            data.insert(format!("{}.principals", grant.name), principals.join(","));
            data.insert(
                format!("{}.components", grant.name),
                grant.component.clone().unwrap_or_else(|| "*".into()),
            );
        }
    }
    data.insert(
        GUARD_KEY_GRANT_PRINCIPALS.to_string(),
        everyone.into_iter().collect::<Vec<_>>().join(","),
    );
    for (component, accounts) in service_accounts(&ns, rendered) {
        data.insert(
            format!("{GUARD_KEY_SERVICE_ACCOUNTS}{component}"),
            accounts.into_iter().collect::<Vec<_>>().join(","),
        );
    }
    Some(ConfigMap {
        metadata: ObjectMeta {
            name: Some(guard_config_map_name(&app.name_any())),
            namespace: Some(ns.clone()),
            labels: Some(BTreeMap::from([
                (LABEL_DEPLOY_GUARD.to_string(), "params".to_string()),
                (
                    names::LABEL_MANAGED_BY.to_string(),
                    names::MANAGED_BY.to_string(),
                ),
                (names::LABEL_APP_NAME.to_string(), app.name_any()),
                (names::LABEL_APP_NAMESPACE.to_string(), ns),
            ])),
            owner_references: app.controller_reference().map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    })
}

/// Per component, the ServiceAccounts other than `default` that its rendered Pods and pod templates
/// (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob) in `namespace` run as. Components
/// whose names are no ConfigMap key are left out: the grant guard then allows only `default`.
fn service_accounts(
    namespace: &str,
    rendered: &[RenderedObject],
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for object in rendered {
        let Some(component) = object.component.as_deref() else {
            continue;
        };
        if object.namespace().is_some_and(|n| n != namespace) || !is_config_map_key(component) {
            continue;
        }
        let spec = &object.object["spec"];
        let pod_spec = match (kinds::group_of(object.api_version()), object.kind()) {
            ("", "Pod") => spec,
            ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
            | ("batch", "Job") => &spec["template"]["spec"],
            ("batch", "CronJob") => &spec["jobTemplate"]["spec"]["template"]["spec"],
            _ => continue,
        };
        let account = ["serviceAccountName", "serviceAccount"]
            .iter()
            .filter_map(|k| pod_spec[k].as_str())
            .find(|s| !s.is_empty())
            .unwrap_or("default");
        if account != "default" {
            out.entry(component.to_string())
                .or_default()
                .insert(account.to_string());
        }
    }
    out
}

/// `[-._a-zA-Z0-9]+`, what the API server accepts as a ConfigMap key (with the prefix, ≤ 253).
fn is_config_map_key(component: &str) -> bool {
    !component.is_empty()
        && component.len() + GUARD_KEY_SERVICE_ACCOUNTS.len() <= 253
        && component
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_deploy(grant: &Grant) -> bool {
    grant.access == Access::Preset(Preset::Deploy)
}
