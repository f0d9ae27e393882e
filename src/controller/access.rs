//! IO around `access::derive_grants`: makes an Application's `gitlab-access` declarations true in RBAC.
//!
//! Called by the Application reconcile after a successful render. Gathers the inputs (the namespace's
//! labels and the ceiling ClusterRoles by GET, so a tightened ceiling or a relabelled namespace is seen at
//! once; GitLabTrusts from the shared store), derives the grants, server-side applies each grant's
//! ServiceAccount, Role and RoleBinding as the operator, writes the deploy guard's parameter ConfigMap,
//! prunes grant objects no longer derived, and returns the status conditions to report.
//!
//! Invariants: a refused declaration has no RBAC objects; revocation deletes the RoleBinding first; every
//! object written is owned by the Application and labelled with `access::grant::LABEL_GRANT`.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::application::Context;
use super::conditions::Desired;
use crate::access::grant::LABEL_GRANT;
use crate::access::{Grant, GrantInput, GrantSet, RefusalReason, derive_grants};
use crate::api::access::{Access, GITLAB_ACCESS, Preset};
use crate::api::oam::Application;
use crate::names;
use crate::render::RenderedObject;

/// True when every declaration is granted and its RBAC objects are applied.
pub const ACCESS_READY: &str = "AccessReady";
/// True when a declaration is refused; the reason names why.
pub const ACCESS_DENIED: &str = "AccessDenied";
/// Present (True) while a declaration has warnings, e.g. a subject named by path only.
pub const ACCESS_WARNING: &str = "AccessWarning";
/// Present (True) while a grant has conditions the GitLab agent cannot enforce (agent mode).
pub const ACCESS_UNENFORCEABLE: &str = "AccessUnenforceable";
/// Every condition type this module owns.
pub const CONDITION_TYPES: [&str; 4] = [
    ACCESS_READY,
    ACCESS_DENIED,
    ACCESS_WARNING,
    ACCESS_UNENFORCEABLE,
];

/// Label selecting the deploy guard's parameter ConfigMaps (`config/admission/deploy-guard.yaml`).
pub const LABEL_DEPLOY_GUARD: &str = "oam-trust.dev/deploy-guard";
/// ConfigMap key holding the Application name the parameters are about.
pub const GUARD_KEY_APPLICATION: &str = "application";

/// What the Application reconcile merges into the status.
#[derive(Debug, Default)]
pub struct AccessReport {
    pub conditions: Vec<Desired>,
    /// Access condition types that no longer apply: removed from the status.
    pub cleared: Vec<&'static str>,
    /// An API call failed: the reconcile should be retried soon.
    pub failed: bool,
}

#[derive(Debug, thiserror::Error)]
enum AccessError {
    #[error("{action} {kind} {name:?}: {source}")]
    Kube {
        action: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
}

fn kube_err<'a>(
    action: &'static str,
    kind: &'static str,
    name: &'a str,
) -> impl FnOnce(kube::Error) -> AccessError + 'a {
    move |e| AccessError::Kube {
        action,
        kind,
        name: name.to_string(),
        source: Box::new(e),
    }
}

/// Whether the Application declares any access (policy or trait of type `gitlab-access`).
pub fn has_declarations(app: &Application) -> bool {
    app.spec.policies.iter().any(|p| p.type_ == GITLAB_ACCESS)
        || app
            .spec
            .components
            .iter()
            .any(|c| c.traits.iter().any(|t| t.type_ == GITLAB_ACCESS))
}

/// Whether an earlier reconcile reported access conditions (so grant objects may exist).
fn had_access(app: &Application) -> bool {
    app.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == ACCESS_READY))
}

/// Derives, applies and prunes the grants of `app`, and says what to report.
pub async fn reconcile(
    ctx: &Context,
    app: &Application,
    rendered: &[RenderedObject],
) -> AccessReport {
    if !has_declarations(app) {
        let mut report = AccessReport {
            cleared: CONDITION_TYPES.to_vec(),
            ..Default::default()
        };
        if had_access(app)
            && let Err(e) = sync(ctx, app, &GrantSet::default()).await
        {
            tracing::warn!(app = %app.name_any(), error = %e, "pruning grants failed");
            report.failed = true;
        }
        return report;
    }
    let set = match derive(ctx, app, rendered).await {
        Ok(set) => set,
        Err(e) => {
            return AccessReport {
                conditions: vec![Desired::new(
                    ACCESS_READY,
                    false,
                    "ReadFailed",
                    e.to_string(),
                )],
                cleared: Vec::new(),
                failed: true,
            };
        }
    };
    let applied = sync(ctx, app, &set).await;
    report_of(&set, applied.err().map(|e| e.to_string()))
}

async fn derive(
    ctx: &Context,
    app: &Application,
    rendered: &[RenderedObject],
) -> Result<GrantSet, AccessError> {
    let ns = app.namespace().unwrap_or_else(|| "default".into());
    let namespace = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(&ns)
        .await
        .map_err(kube_err("reading", "Namespace", &ns))?;
    let namespace_labels = namespace.map(|n| n.labels().clone()).unwrap_or_default();
    let trusts: BTreeMap<_, _> = ctx
        .trusts
        .state()
        .iter()
        .map(|t| (t.name_any(), (**t).clone()))
        .collect();
    let wanted: BTreeSet<String> = trusts
        .values()
        .filter_map(|t| t.spec.ceiling.as_ref())
        .map(|c| c.cluster_role_ref.clone())
        .collect();
    let roles = Api::<ClusterRole>::all(ctx.client.clone());
    let mut ceilings = BTreeMap::new();
    for name in wanted {
        if let Some(role) =
            roles
                .get_opt(&name)
                .await
                .map_err(kube_err("reading", "ClusterRole", &name))?
        {
            ceilings.insert(name, role);
        }
    }
    Ok(derive_grants(&GrantInput {
        application: app,
        namespace_labels: &namespace_labels,
        trusts: &trusts,
        ceilings: &ceilings,
        rendered,
    }))
}

/// Applies every grant and the guard parameters, then deletes what is no longer derived.
async fn sync(ctx: &Context, app: &Application, set: &GrantSet) -> Result<(), AccessError> {
    let ns = app.namespace().unwrap_or_else(|| "default".into());
    let client = &ctx.client;
    let pp = PatchParams::apply(names::FIELD_MANAGER).force();
    // The guard's parameters go first, so no deploy binding exists without them.
    let guard = guard_params(app, set);
    let guards = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    if let Some(cm) = &guard {
        apply(&guards, cm, &pp).await?;
    }
    for grant in &set.grants {
        apply(
            &Api::<ServiceAccount>::namespaced(client.clone(), &ns),
            &grant.service_account,
            &pp,
        )
        .await?;
        apply(
            &Api::<Role>::namespaced(client.clone(), &ns),
            &grant.role,
            &pp,
        )
        .await?;
        apply(
            &Api::<RoleBinding>::namespaced(client.clone(), &ns),
            &grant.role_binding,
            &pp,
        )
        .await?;
    }

    let keep: BTreeSet<&str> = set.grants.iter().map(|g| g.name.as_str()).collect();
    let selector = format!(
        "{LABEL_GRANT},{}={},{}={}",
        names::LABEL_APP_NAME,
        app.name_any(),
        names::LABEL_APP_NAMESPACE,
        ns
    );
    // The binding goes first: once it is gone, tokens of the ServiceAccount can do nothing.
    prune(
        &Api::<RoleBinding>::namespaced(client.clone(), &ns),
        &selector,
        &keep,
    )
    .await?;
    prune(
        &Api::<Role>::namespaced(client.clone(), &ns),
        &selector,
        &keep,
    )
    .await?;
    prune(
        &Api::<ServiceAccount>::namespaced(client.clone(), &ns),
        &selector,
        &keep,
    )
    .await?;
    let guard_selector = format!(
        "{LABEL_DEPLOY_GUARD},{}={},{}={}",
        names::LABEL_APP_NAME,
        app.name_any(),
        names::LABEL_APP_NAMESPACE,
        ns
    );
    let keep_guard: BTreeSet<&str> = guard
        .as_ref()
        .and_then(|cm| cm.metadata.name.as_deref())
        .into_iter()
        .collect();
    prune(&guards, &guard_selector, &keep_guard).await
}

async fn apply<K>(api: &Api<K>, object: &K, pp: &PatchParams) -> Result<(), AccessError>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(object).map_err(|e| AccessError::Kube {
        action: "serializing",
        kind: "object",
        name: name.clone(),
        source: Box::new(kube::Error::SerdeError(e)),
    })?;
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    // A resync of unchanged grants sends no write: skip objects whose desired fields already hold.
    let live = api.get_opt(&name).await.map_err(|e| AccessError::Kube {
        action: "reading",
        kind: kind_name::<K>(),
        name: name.clone(),
        source: Box::new(e),
    })?;
    if let Some(live) = live
        && let Ok(live) = serde_json::to_value(&live)
        && super::apply::is_subset(&strip_nulls(&value), &live)
    {
        return Ok(());
    }
    api.patch(&name, pp, &Patch::Apply(&value))
        .await
        .map_err(|e| AccessError::Kube {
            action: "applying",
            kind: kind_name::<K>(),
            name: name.clone(),
            source: Box::new(e),
        })?;
    Ok(())
}

/// Serialized typed objects carry `null` for unset options; they say nothing about the live object.
fn strip_nulls(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.iter().map(strip_nulls).collect())
        }
        other => other.clone(),
    }
}

fn kind_name<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "ServiceAccount" => "ServiceAccount",
        "Role" => "Role",
        "RoleBinding" => "RoleBinding",
        "ConfigMap" => "ConfigMap",
        _ => "object",
    }
}

async fn prune<K>(api: &Api<K>, selector: &str, keep: &BTreeSet<&str>) -> Result<(), AccessError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let kind = kind_name::<K>();
    let list = api
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .map_err(kube_err("listing", kind, selector))?;
    for object in list.items {
        let name = object.metadata.name.clone().unwrap_or_default();
        if keep.contains(name.as_str()) {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(kind, %name, "deleted grant object no longer derived"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_err("deleting", kind, &name)(e)),
        }
    }
    Ok(())
}

/// Name of an Application's deploy guard parameter ConfigMap.
pub fn guard_config_map_name(app: &str) -> String {
    format!("oam-trust.deploy-guard.{app}")
}

/// The deploy guard's parameters for one Application: for every `deploy` grant, who holds it
/// (`<grant>.principals`: `user:<name>` and `group:<name>`, comma-separated) and which components it
/// covers (`<grant>.components`: names, or `*` for the whole Application). Written whenever the
/// Application has a grant, so a namespace with grants always has parameters for the policy.
pub fn guard_params(app: &Application, set: &GrantSet) -> Option<ConfigMap> {
    if set.grants.is_empty() {
        return None;
    }
    let ns = app.namespace().unwrap_or_else(|| "default".into());
    let mut data = BTreeMap::from([(GUARD_KEY_APPLICATION.to_string(), app.name_any())]);
    for grant in set.grants.iter().filter(|g| is_deploy(g)) {
        let mut principals = vec![format!(
            "user:system:serviceaccount:{ns}:{}",
            grant
                .service_account
                .metadata
                .name
                .as_deref()
                .unwrap_or(&grant.name)
        )];
        principals.extend(grant.agent_groups.iter().map(|g| format!("group:{g}")));
        data.insert(format!("{}.principals", grant.name), principals.join(","));
        data.insert(
            format!("{}.components", grant.name),
            grant.component.clone().unwrap_or_else(|| "*".into()),
        );
    }
    let owner = app.controller_owner_ref(&());
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
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    })
}

fn is_deploy(grant: &Grant) -> bool {
    grant.access == Access::Preset(Preset::Deploy)
}

fn access_name(access: &Access) -> &'static str {
    match access {
        Access::Preset(Preset::Read) => "read",
        Access::Preset(Preset::Deploy) => "deploy",
        Access::Preset(Preset::Manage) => "manage",
        Access::Rules(_) => "rules",
    }
}

/// A bounded, CamelCase reason per refusal kind (condition reasons must match `^[A-Za-z]…`).
pub fn refusal_reason(reason: &RefusalReason) -> &'static str {
    match reason {
        RefusalReason::InvalidProperties { .. } => "InvalidProperties",
        RefusalReason::TrustNotFound { .. } => "TrustNotFound",
        RefusalReason::InvalidTrust { .. } => "InvalidTrust",
        RefusalReason::NamespaceNotSelected { .. } => "NamespaceNotSelected",
        RefusalReason::SubjectWithoutProjectOrNamespace { .. } => {
            "SubjectWithoutProjectOrNamespace"
        }
        RefusalReason::InvalidSubject { .. } => "InvalidSubject",
        RefusalReason::SubjectOutsideAllow { .. } => "SubjectOutsideAllow",
        RefusalReason::InvalidTtl { .. } => "InvalidTtl",
        RefusalReason::TtlAboveMax { .. } => "TtlAboveMax",
        RefusalReason::NoCeiling { .. } => "NoCeiling",
        RefusalReason::CeilingNotFound { .. } => "CeilingNotFound",
        RefusalReason::BeyondCeiling { .. } => "BeyondCeiling",
        RefusalReason::ClusterScopedRule { .. } => "ClusterScopedRule",
        RefusalReason::DuplicateDeclaration { .. } => "DuplicateDeclaration",
    }
}

/// The conditions for a derived set; `apply_error` when writing its objects failed. Pure.
pub fn report_of(set: &GrantSet, apply_error: Option<String>) -> AccessReport {
    let mut conditions = Vec::new();
    let mut cleared = Vec::new();
    let granted: Vec<String> = set
        .grants
        .iter()
        .map(|g| {
            format!(
                "{} -> ServiceAccount {} ({}, ttl {})",
                g.id,
                g.name,
                access_name(&g.access),
                crate::duration::format(g.ttl)
            )
        })
        .collect();
    let refused: Vec<String> = set
        .refusals
        .iter()
        .map(|r| format!("{}: {}", r.declaration, r.message()))
        .collect();
    let failed = apply_error.is_some();
    conditions.push(match (&apply_error, set.refusals.first()) {
        (Some(e), _) => Desired::new(ACCESS_READY, false, "ApplyFailed", e.clone()),
        (None, Some(_)) => Desired::new(
            ACCESS_READY,
            false,
            "DeclarationRefused",
            format!(
                "{} of {} declarations refused; granted: {}",
                set.refusals.len(),
                set.refusals.len() + set.grants.len(),
                if granted.is_empty() {
                    "none".to_string()
                } else {
                    granted.join("; ")
                }
            ),
        ),
        (None, None) => Desired::new(ACCESS_READY, true, "Granted", granted.join("; ")),
    });
    conditions.push(match set.refusals.first() {
        Some(first) => Desired::new(
            ACCESS_DENIED,
            true,
            refusal_reason(&first.reason),
            refused.join("; "),
        ),
        None => Desired::new(
            ACCESS_DENIED,
            false,
            "AllGranted",
            "every gitlab-access declaration is granted",
        ),
    });
    if set.warnings.is_empty() {
        cleared.push(ACCESS_WARNING);
    } else {
        let warnings: Vec<String> = set.warnings.iter().map(ToString::to_string).collect();
        conditions.push(Desired::new(
            ACCESS_WARNING,
            true,
            "GrantWarnings",
            warnings.join("; "),
        ));
    }
    let unenforceable: Vec<String> = set
        .grants
        .iter()
        .flat_map(|g| {
            g.unenforceable.iter().map(move |u| {
                let at = match u.subject {
                    Some(i) => format!("{} subject {i}", g.id),
                    None => format!("{} (trust {})", g.id, g.trust),
                };
                format!("{at}: {}: {}", u.field, u.reason)
            })
        })
        .collect();
    if unenforceable.is_empty() {
        cleared.push(ACCESS_UNENFORCEABLE);
    } else {
        conditions.push(Desired::new(
            ACCESS_UNENFORCEABLE,
            true,
            "AgentCannotEnforce",
            format!(
                "jobs coming through the GitLab agent are not checked for: {}",
                unenforceable.join("; ")
            ),
        ));
    }
    AccessReport {
        conditions,
        cleared,
        failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{GrantWarning, Refusal};

    fn refused() -> GrantSet {
        GrantSet {
            grants: Vec::new(),
            refusals: vec![
                Refusal {
                    declaration: "policy/ci".into(),
                    reason: RefusalReason::NamespaceNotSelected {
                        trust: "t".into(),
                        namespace: "ns".into(),
                    },
                },
                Refusal {
                    declaration: "component/web/trait/0".into(),
                    reason: RefusalReason::SubjectWithoutProjectOrNamespace { subject: 1 },
                },
            ],
            warnings: vec![GrantWarning {
                declaration: "policy/ci".into(),
                message: "careful".into(),
            }],
        }
    }

    #[test]
    fn refusals_deny_with_the_first_reason_and_list_every_declaration() {
        let report = report_of(&refused(), None);
        assert!(!report.failed);
        assert_eq!(report.cleared, [ACCESS_UNENFORCEABLE]);
        let got: Vec<(&str, bool, &str)> = report
            .conditions
            .iter()
            .map(|c| (c.type_, c.status, c.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (ACCESS_READY, false, "DeclarationRefused"),
                (ACCESS_DENIED, true, "NamespaceNotSelected"),
                (ACCESS_WARNING, true, "GrantWarnings"),
            ]
        );
        assert_eq!(
            report.conditions[0].message,
            "2 of 2 declarations refused; granted: none"
        );
        assert_eq!(
            report.conditions[1].message,
            "policy/ci: namespace \"ns\" is not selected by GitLabTrust \"t\"'s namespaceSelector; \
             component/web/trait/0: subject 1 names no project or namespace: set projectId, \
             namespaceId, projectPath or namespacePath"
        );
        assert_eq!(report.conditions[2].message, "policy/ci: careful");
    }

    #[test]
    fn an_apply_error_is_not_ready_and_retried() {
        let report = report_of(
            &GrantSet::default(),
            Some("applying Role \"x\": boom".into()),
        );
        assert!(report.failed);
        assert_eq!(report.conditions[0].type_, ACCESS_READY);
        assert!(!report.conditions[0].status);
        assert_eq!(report.conditions[0].reason, "ApplyFailed");
        assert_eq!(report.cleared, [ACCESS_WARNING, ACCESS_UNENFORCEABLE]);
    }

    #[test]
    fn no_guard_parameters_without_grants() {
        let app: Application = serde_json::from_value(serde_json::json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "a", "namespace": "ns"}, "spec": {"components": []}
        }))
        .unwrap();
        assert!(guard_params(&app, &refused()).is_none());
        assert!(!has_declarations(&app));
    }
}
