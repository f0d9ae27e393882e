//! IO for an Application's grants: writes the grant objects `build` derived (as the operator, through
//! the one applier), prunes grant objects no longer derived, and says which conditions to report.
//!
//! Invariants: a refused declaration has no RBAC objects; the guard's parameters are written before
//! any grant's RBAC; revocation deletes the RoleBinding first; every object written is owned by the
//! Application and labelled with `names::LABEL_GRANT`.
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::application::{Built, Context};
use super::apply::{ApplyError, Identity};
use super::conditions::Desired;
use crate::access::declaration::has_declarations;
use crate::access::objects::guard_config_map_name;
use crate::access::{GrantSet, RefusalReason};
use crate::api::access::{Access, Preset};
use crate::api::oam::Application;
use crate::names::{self, LABEL_DEPLOY_GUARD, LABEL_GRANT};

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
    #[error(transparent)]
    Apply(#[from] super::apply::ApplyError),
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

/// Whether an earlier reconcile reported access conditions (so grant objects may exist).
fn had_access(app: &Application) -> bool {
    app.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == ACCESS_READY))
}

/// Writes and prunes the grants `built` derived, and says what to report.
pub async fn apply(ctx: &Context, app: &Application, built: &Built) -> AccessReport {
    if !has_declarations(app) {
        let mut report = AccessReport {
            cleared: CONDITION_TYPES.to_vec(),
            ..Default::default()
        };
        if had_access(app)
            && let Err(e) = sync(ctx, app, built).await
        {
            tracing::warn!(app = %app.name_any(), error = %e, "pruning grants failed");
            report.failed = true;
        }
        return report;
    }
    match sync(ctx, app, built).await {
        // A grant's name is taken by another Application's object: refused, never adopted.
        Err(AccessError::Apply(e @ ApplyError::NameConflict { .. })) => {
            let mut report = report_of(&built.grants, Some(e.to_string()));
            report.conditions = vec![
                Desired::new(ACCESS_READY, false, "NameConflict", e.to_string()),
                Desired::new(ACCESS_DENIED, true, "NameConflict", e.to_string()),
            ];
            report.cleared = vec![ACCESS_WARNING, ACCESS_UNENFORCEABLE];
            report
        }
        applied => {
            let mut report = report_of(&built.grants, applied.err().map(|e| e.to_string()));
            guard_check(&mut report, built);
            report
        }
    }
}

/// While a guard admission policy is missing, grants that write are not usable: the exchange
/// refuses their tokens, and `AccessReady` says so.
fn guard_check(report: &mut AccessReport, built: &Built) {
    let writers: Vec<&str> = built
        .grants
        .grants
        .iter()
        .filter(|g| g.writes())
        .map(|g| g.id.as_str())
        .collect();
    if built.missing_guards.is_empty() || writers.is_empty() {
        return;
    }
    let message = format!(
        "no token is issued for {} while the admission {} {} not installed: install the Helm chart's \
         policies (or config/admission/)",
        writers.join(", "),
        if built.missing_guards.len() == 1 {
            "policy"
        } else {
            "policies"
        },
        built.missing_guards.join(", ")
            + if built.missing_guards.len() == 1 {
                " is"
            } else {
                " are"
            }
    );
    tracing::warn!(%message, "guard admission policy missing");
    report.conditions.retain(|c| c.type_ != ACCESS_READY);
    report.conditions.insert(
        0,
        Desired::new(ACCESS_READY, false, "AdmissionPolicyMissing", message),
    );
}

/// Applies every grant object (all or nothing), then deletes what is no longer derived.
async fn sync(ctx: &Context, app: &Application, built: &Built) -> Result<(), AccessError> {
    let ns = names::namespace_of(app);
    let client = &ctx.client;
    if !built.grants.grants.is_empty() {
        // The operator's own rights where grants live: the ceiling first (the API server admits a
        // Role only within what its writer holds), and the exchange's right to mint tokens here.
        let rights: Vec<serde_json::Value> = ctx
            .rights
            .bindings(ns, &built.ceilings)
            .into_iter()
            .map(|rb| crate::access::objects::typed(&rb))
            .collect();
        ctx.applier
            .apply_all(Identity::Operator, &rights, None)
            .await?;
    }
    ctx.applier
        .apply_all(Identity::Operator, &built.grant_objects, None)
        .await?;
    let keep: BTreeSet<&str> = built
        .grants
        .grants
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    let selector = format!(
        "{LABEL_GRANT},{}={},{}={}",
        names::LABEL_APP_NAME,
        app.name_any(),
        names::LABEL_APP_NAMESPACE,
        ns
    );
    // The binding goes first: once it is gone, tokens of the ServiceAccount can do nothing.
    prune(
        &Api::<RoleBinding>::namespaced(client.clone(), ns),
        &selector,
        &keep,
    )
    .await?;
    prune(
        &Api::<Role>::namespaced(client.clone(), ns),
        &selector,
        &keep,
    )
    .await?;
    prune(
        &Api::<ServiceAccount>::namespaced(client.clone(), ns),
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
    let guard_name = guard_config_map_name(&app.name_any());
    let keep_guard: BTreeSet<&str> = (!built.grants.grants.is_empty())
        .then_some(guard_name.as_str())
        .into_iter()
        .collect();
    prune(
        &Api::<ConfigMap>::namespaced(client.clone(), ns),
        &guard_selector,
        &keep_guard,
    )
    .await
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

fn access_name(access: &Access) -> &'static str {
    match access {
        Access::Preset(Preset::Read) => "read",
        Access::Preset(Preset::Deploy) => "deploy",
        Access::Preset(Preset::Manage) => "manage",
        Access::Preset(Preset::Approve) => "approve",
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
        RefusalReason::ApplicationWrite { .. } => "ApplicationWrite",
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
    use crate::access::objects::guard_params;
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
    fn a_declaration_writing_the_application_is_denied_with_its_reason() {
        let set = GrantSet {
            refusals: vec![Refusal {
                declaration: "policy/ci".into(),
                reason: RefusalReason::ApplicationWrite {
                    rule: 0,
                    verb: "patch".into(),
                    resource: "applications".into(),
                },
            }],
            ..Default::default()
        };
        let report = report_of(&set, None);
        let denied = &report.conditions[1];
        assert_eq!(
            (denied.type_, denied.status, denied.reason.as_str()),
            (ACCESS_DENIED, true, "ApplicationWrite")
        );
        assert_eq!(
            denied.message,
            "policy/ci: rule 0 grants \"patch\" on \"applications\" of core.oam.dev: explicit rules \
             never write Applications (that would let a job rewrite its own grants); use access: \
             deploy, which may change only component images"
        );
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

    /// A world with one trust (static keys, selecting namespace `shop`) and an Application in `shop`
    /// that declares a `read` and a `deploy` grant.
    fn declaring() -> (Application, crate::access::World) {
        let trust: crate::api::trust::GitLabTrust = serde_json::from_value(serde_json::json!({
            "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust", "metadata": {"name": "t"},
            "spec": {"issuer": "https://gitlab.example.com", "audiences": ["https://k8s.example.com"],
                     "jwks": {"static": r#"{"keys":[]}"#}, "allow": [{"namespaceId": "72"}]}
        }))
        .unwrap();
        let app: Application = serde_json::from_value(serde_json::json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "a", "namespace": "shop", "uid": "u"},
            "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx"}}],
                     "policies": [
                        {"name": "read", "type": "gitlab-access", "properties": {"trust": "t",
                            "subjects": [{"namespaceId": "72"}], "access": "read"}},
                        {"name": "deploy", "type": "gitlab-access", "properties": {"trust": "t",
                            "subjects": [{"projectId": "1450", "namespaceId": "72"}], "access": "deploy"}}]}
        }))
        .unwrap();
        let world = crate::access::World {
            trusts: [("t".to_string(), trust)].into(),
            missing_namespace: crate::access::MissingNamespace::AssumedSelected,
            ..Default::default()
        };
        (app, world)
    }

    #[test]
    fn a_missing_guard_makes_access_not_ready_when_a_grant_writes() {
        let (app, mut world) = declaring();
        let built = super::super::application::build(&app, &world);
        assert_eq!(built.grants.grants.len(), 2, "{:?}", built.grants.refusals);
        let mut report = report_of(&built.grants, None);
        guard_check(&mut report, &built);
        assert_eq!(
            (report.conditions[0].type_, report.conditions[0].status),
            (ACCESS_READY, true),
            "every guard installed"
        );

        world.missing_guards = vec!["oam-trust-grant-guard".into()];
        let built = super::super::application::build(&app, &world);
        let mut report = report_of(&built.grants, None);
        guard_check(&mut report, &built);
        let ready = &report.conditions[0];
        assert_eq!(
            (ready.type_, ready.status, ready.reason.as_str()),
            (ACCESS_READY, false, "AdmissionPolicyMissing")
        );
        assert_eq!(
            ready.message,
            "no token is issued for policy/deploy while the admission policy oam-trust-grant-guard is \
             not installed: install the Helm chart's policies (or config/admission/)"
        );
        assert_eq!(
            report
                .conditions
                .iter()
                .filter(|c| c.type_ == ACCESS_READY)
                .count(),
            1
        );
    }

    #[test]
    fn a_missing_guard_unbinds_the_groups_of_grants_that_write() {
        let (app, mut world) = declaring();
        let trust = world.trusts.get_mut("t").unwrap();
        // OIDC discovery: a static JWKS is something the API server cannot serve.
        trust.spec.jwks = None;
        trust.spec.federation = Some(
            serde_json::from_value(serde_json::json!({"apiServer": true, "gitlabAgent": true}))
                .unwrap(),
        );
        let groups = |world: &crate::access::World, grant: &str| -> usize {
            let built = super::super::application::build(&app, world);
            let name = &built
                .grants
                .grants
                .iter()
                .find(|g| g.id == grant)
                .unwrap()
                .name;
            built
                .grant_objects
                .iter()
                .filter(|o| o["kind"] == "RoleBinding" && o["metadata"]["name"] == name.as_str())
                .flat_map(|o| o["subjects"].as_array().cloned().unwrap_or_default())
                .filter(|s| s["kind"] == "Group")
                .count()
        };
        assert!(
            groups(&world, "policy/deploy") >= 2,
            "agent and API-server groups bound"
        );
        world.missing_guards = vec!["oam-trust-deploy-guard".into()];
        assert_eq!(
            groups(&world, "policy/deploy"),
            0,
            "fail closed, as the exchange does"
        );
        assert!(
            groups(&world, "policy/read") >= 1,
            "a grant that only reads keeps its groups"
        );
    }

    #[test]
    fn no_guard_parameters_without_grants() {
        let app: Application = serde_json::from_value(serde_json::json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": "a", "namespace": "ns"}, "spec": {"components": []}
        }))
        .unwrap();
        assert!(guard_params(&app, &refused(), &[]).is_none());
        assert!(!has_declarations(&app));
    }
}
