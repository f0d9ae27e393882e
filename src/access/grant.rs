//! Grant derivation: the ONE source of truth for "who may get what". The controller applies the
//! ServiceAccount, Role and RoleBinding of every `Grant`; the exchange service and `explain` pick a
//! grant with `matcher::match_token` over the same `GrantSet`.
//!
//! Each `gitlab-access` policy (whole Application) or trait (one component) is one declaration. A
//! declaration becomes a `Grant` only if every check passes, otherwise a `Refusal` with the first
//! reason and no RBAC objects at all. Presets (`kinds`, `preset_rules`):
//! - `read`: get/list/watch on exactly the rendered objects (resourceNames) and on the Application.
//!   With resourceNames, list/watch work only for single-name field selectors
//!   (`kubectl get deploy web`, `kubectl rollout status`, `--field-selector metadata.name=web`);
//!   an unrestricted list of the namespace is deliberately not granted.
//! - `deploy`: read + patch/update of the Application itself (the admission policy elsewhere limits
//!   the patch to component images).
//! - `manage`: read + update/patch/delete of the rendered objects (resourceNames) + create of their
//!   kinds. RBAC cannot restrict create by name, so create is namespace-wide for those kinds;
//!   deletecollection is never granted (it cannot be restricted by name either). Manage is trimmed to
//!   the ceiling: verbs the ceiling does not cover are dropped with a warning.
//!
//! Presets never grant Secrets, ServiceAccount tokens, RBAC/admission/CRD kinds or cluster-scoped
//! objects, and cover a component trait's own component only. Explicit `rules` are all-or-nothing:
//! every atom must be within the trust's ceiling, and a trust without a ceiling refuses `manage` and
//! `rules`.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, PolicyRule, Role, RoleBinding, RoleRef, Subject as RbacSubject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ceiling::{self, RuleAtom};
use super::condition::ClaimCondition;
use super::{glob, kinds, selector};
use crate::api::access::{Access, AccessRule, GITLAB_ACCESS, GitLabAccess, Preset, Subject};
use crate::api::oam::Application;
use crate::api::trust::{AllowedIdentity, GitLabTrust};
use crate::names;
use crate::render::RenderedObject;

/// Label on every object of a grant; its value is the grant's object name.
pub const LABEL_GRANT: &str = "oam-trust.dev/grant";
/// Annotation carrying the grant id (`policy/<name>`, `component/<c>/trait/<i>`).
pub const ANNOTATION_GRANT_ID: &str = "oam-trust.dev/grant-id";
/// Annotation carrying the GitLabTrust name.
pub const ANNOTATION_TRUST: &str = "oam-trust.dev/trust";
/// TTL when neither the declaration nor the trust names one.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// TTL cap when the trust names none.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(60 * 60);

const READ_VERBS: &[&str] = &["get", "list", "watch"];
const APPLICATIONS: &str = "applications";

/// Everything grant derivation looks at, for one Application.
#[derive(Clone, Copy, Debug)]
pub struct GrantInput<'a> {
    pub application: &'a Application,
    /// Labels of the Application's namespace (for the trusts' `namespaceSelector`).
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// GitLabTrusts by name.
    pub trusts: &'a BTreeMap<String, GitLabTrust>,
    /// Ceiling ClusterRoles by name.
    pub ceilings: &'a BTreeMap<String, ClusterRole>,
    /// What the Application renders to (`render::`'s output).
    pub rendered: &'a [RenderedObject],
}

/// The outcome for one Application (or several, `GrantSet::merge`d for the exchange service).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GrantSet {
    pub grants: Vec<Grant>,
    pub refusals: Vec<Refusal>,
    pub warnings: Vec<GrantWarning>,
}

/// One granted declaration and the objects that carry it.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    /// `policy/<name>` (`policy/<index>` if unnamed) or `component/<component>/trait/<index>`.
    pub id: String,
    pub namespace: String,
    pub application: String,
    /// The component a trait grant covers; `None` for a policy (the whole Application).
    pub component: Option<String>,
    pub trust: String,
    pub subjects: Vec<Subject>,
    pub access: Access,
    /// Token lifetime, within the trust's maxTTL.
    pub ttl: Duration,
    /// Name shared by the ServiceAccount, Role and RoleBinding.
    pub name: String,
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    /// GitLab agent `ci_job` groups bound by the RoleBinding (empty unless the trust enables the agent).
    pub agent_groups: Vec<String>,
    /// Conditions the GitLab agent cannot enforce for this grant (agent mode only).
    pub unenforceable: Vec<Unenforceable>,
}

/// A condition that holds for token exchange but not for jobs coming through the GitLab agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unenforceable {
    /// Index of the subject, or `None` for a trust-wide requirement.
    pub subject: Option<usize>,
    /// Field name as written (`ref`, `refProtected`, `condition`, `require.refProtected` …).
    pub field: String,
    pub reason: String,
}

/// A declaration that produced no grant.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub declaration: String,
    pub reason: RefusalReason,
}

impl Refusal {
    /// The human message (`reason`'s Display).
    pub fn message(&self) -> String {
        self.reason.to_string()
    }
}

/// Why a declaration was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RefusalReason {
    #[error("invalid gitlab-access properties: {error}")]
    InvalidProperties { error: String },
    #[error("GitLabTrust {trust:?} not found")]
    TrustNotFound { trust: String },
    #[error("GitLabTrust {trust:?} is invalid: {error}")]
    InvalidTrust { trust: String, error: String },
    #[error("namespace {namespace:?} is not selected by GitLabTrust {trust:?}'s namespaceSelector")]
    NamespaceNotSelected { trust: String, namespace: String },
    #[error(
        "subject {subject} names no project or namespace: set projectId, namespaceId, projectPath or namespacePath"
    )]
    SubjectWithoutProjectOrNamespace { subject: usize },
    #[error("subject {subject}: {error}")]
    InvalidSubject { subject: usize, error: String },
    #[error("subject {subject} can never match GitLabTrust {trust:?}'s allow list")]
    SubjectOutsideAllow { subject: usize, trust: String },
    #[error("invalid ttl: {error}")]
    InvalidTtl { error: String },
    #[error(
        "ttl {} is above GitLabTrust {trust:?}'s maxTTL {}",
        crate::duration::format(*ttl),
        crate::duration::format(*max)
    )]
    TtlAboveMax {
        trust: String,
        ttl: Duration,
        max: Duration,
    },
    #[error("GitLabTrust {trust:?} sets no ceiling; {access} needs one")]
    NoCeiling { trust: String, access: String },
    #[error("ceiling ClusterRole {cluster_role:?} of GitLabTrust {trust:?} not found")]
    CeilingNotFound { trust: String, cluster_role: String },
    #[error("beyond ceiling ClusterRole {cluster_role:?}: {}", list(uncovered))]
    BeyondCeiling {
        cluster_role: String,
        uncovered: Vec<RuleAtom>,
    },
    #[error(
        "rule {rule} names cluster-scoped {resource:?}; a grant is a namespaced Role and cannot carry it"
    )]
    ClusterScopedRule { rule: usize, resource: String },
    #[error("duplicate declaration id {id:?}")]
    DuplicateDeclaration { id: String },
}

fn list(atoms: &[RuleAtom]) -> String {
    atoms
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Something a user should fix, that does not refuse the declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantWarning {
    pub declaration: String,
    pub message: String,
}

impl fmt::Display for GrantWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.declaration, self.message)
    }
}

impl GrantSet {
    /// Several Applications' sets as one, for the exchange service.
    pub fn merge(sets: impl IntoIterator<Item = GrantSet>) -> GrantSet {
        let mut out = GrantSet::default();
        for set in sets {
            out.grants.extend(set.grants);
            out.refusals.extend(set.refusals);
            out.warnings.extend(set.warnings);
        }
        out
    }

    pub fn grant(&self, id: &str) -> Option<&Grant> {
        self.grants.iter().find(|g| g.id == id)
    }

    pub fn refusal(&self, declaration: &str) -> Option<&Refusal> {
        self.refusals.iter().find(|r| r.declaration == declaration)
    }
}

struct Declaration<'a> {
    id: String,
    slug: String,
    component: Option<&'a str>,
    properties: Option<&'a Value>,
}

fn declarations(app: &Application) -> Vec<Declaration<'_>> {
    let mut out = Vec::new();
    for (i, policy) in app.spec.policies.iter().enumerate() {
        if policy.type_ != GITLAB_ACCESS {
            continue;
        }
        let (id, slug) = match &policy.name {
            Some(name) => (format!("policy/{name}"), name.clone()),
            None => (format!("policy/{i}"), format!("policy-{i}")),
        };
        out.push(Declaration {
            id,
            slug,
            component: None,
            properties: policy.properties.as_ref(),
        });
    }
    for component in &app.spec.components {
        for (i, t) in component.traits.iter().enumerate() {
            if t.type_ != GITLAB_ACCESS {
                continue;
            }
            out.push(Declaration {
                id: format!("component/{}/trait/{i}", component.name),
                slug: format!("{}-{i}", component.name),
                component: Some(&component.name),
                properties: t.properties.as_ref(),
            });
        }
    }
    out
}

/// Derives every grant, refusal and warning of one Application. Pure and deterministic.
pub fn derive_grants(input: &GrantInput) -> GrantSet {
    let mut set = GrantSet::default();
    let mut seen = BTreeSet::new();
    for decl in declarations(input.application) {
        if !seen.insert(decl.id.clone()) {
            set.refusals.push(Refusal {
                reason: RefusalReason::DuplicateDeclaration {
                    id: decl.id.clone(),
                },
                declaration: decl.id,
            });
            continue;
        }
        let mut warnings = Vec::new();
        match derive_one(input, &decl, &mut warnings) {
            Ok(grant) => set.grants.push(grant),
            Err(reason) => set.refusals.push(Refusal {
                declaration: decl.id.clone(),
                reason,
            }),
        }
        set.warnings
            .extend(warnings.into_iter().map(|message| GrantWarning {
                declaration: decl.id.clone(),
                message,
            }));
    }
    set
}

fn app_namespace(app: &Application) -> &str {
    app.metadata.namespace.as_deref().unwrap_or("default")
}

fn derive_one(
    input: &GrantInput,
    decl: &Declaration,
    warnings: &mut Vec<String>,
) -> Result<Grant, RefusalReason> {
    let app = input.application;
    let namespace = app_namespace(app);
    let props: GitLabAccess = match decl.properties {
        None => {
            return Err(RefusalReason::InvalidProperties {
                error: "properties are required (trust, subjects, access)".into(),
            });
        }
        Some(value) => {
            serde_json::from_value(value.clone()).map_err(|e| RefusalReason::InvalidProperties {
                error: e.to_string(),
            })?
        }
    };
    let trust_name = props.trust.clone();
    let trust = input
        .trusts
        .get(&trust_name)
        .ok_or_else(|| RefusalReason::TrustNotFound {
            trust: trust_name.clone(),
        })?;
    let selected = selector::selects(
        trust.spec.namespace_selector.as_ref(),
        input.namespace_labels,
    )
    .map_err(|e| RefusalReason::InvalidTrust {
        trust: trust_name.clone(),
        error: format!("namespaceSelector: {e}"),
    })?;
    if !selected {
        return Err(RefusalReason::NamespaceNotSelected {
            trust: trust_name,
            namespace: namespace.to_string(),
        });
    }
    if props.subjects.is_empty() {
        return Err(RefusalReason::InvalidProperties {
            error: "subjects must list at least one GitLab identity".into(),
        });
    }
    for (i, subject) in props.subjects.iter().enumerate() {
        check_subject(i, subject)?;
        if !trust
            .spec
            .allow
            .iter()
            .any(|entry| allow_may_contain(entry, subject))
        {
            return Err(RefusalReason::SubjectOutsideAllow {
                subject: i,
                trust: trust_name,
            });
        }
        if subject.is_path_only() {
            warnings.push(format!(
                "subject {i} names its project or namespace by path only: paths can be renamed and \
                 re-registered by someone else; add projectId or namespaceId"
            ));
        }
    }
    let ttl = grant_ttl(&trust_name, trust, props.ttl.as_deref())?;
    let objects = scoped_objects(input, decl.component, warnings);
    let rules = granted_rules(&trust_name, trust, input, &props.access, &objects, warnings)?;

    let name = object_name(&app_name(app), namespace, &decl.slug, &decl.id);
    let federation = trust.spec.federation();
    let (agent_groups, unenforceable) = if federation.gitlab_agent {
        agent_identity(&props.subjects, trust)
    } else {
        (Vec::new(), Vec::new())
    };
    let meta = object_meta(app, &name, decl, &trust_name);
    let mut binding_subjects = vec![RbacSubject {
        kind: "ServiceAccount".into(),
        name: name.clone(),
        namespace: Some(namespace.to_string()),
        api_group: None,
    }];
    binding_subjects.extend(agent_groups.iter().map(|group| RbacSubject {
        kind: "Group".into(),
        name: group.clone(),
        namespace: None,
        api_group: Some("rbac.authorization.k8s.io".into()),
    }));
    Ok(Grant {
        id: decl.id.clone(),
        namespace: namespace.to_string(),
        application: app_name(app),
        component: decl.component.map(str::to_string),
        trust: trust_name,
        subjects: props.subjects,
        access: props.access,
        ttl,
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
                name: name.clone(),
            },
            subjects: Some(binding_subjects),
        },
        name,
        agent_groups,
        unenforceable,
    })
}

fn app_name(app: &Application) -> String {
    app.metadata.name.clone().unwrap_or_default()
}

fn is_numeric_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn check_subject(i: usize, s: &Subject) -> Result<(), RefusalReason> {
    let invalid = |error: String| RefusalReason::InvalidSubject { subject: i, error };
    if !s.names_project_or_namespace() {
        return Err(RefusalReason::SubjectWithoutProjectOrNamespace { subject: i });
    }
    for (field, id) in [
        ("projectId", &s.project_id),
        ("namespaceId", &s.namespace_id),
    ] {
        if let Some(id) = id
            && !is_numeric_id(id)
        {
            return Err(invalid(format!(
                "{field} must be the numeric id, e.g. \"1450\", not {id:?}"
            )));
        }
    }
    for (field, value) in [
        ("projectPath", &s.project_path),
        ("namespacePath", &s.namespace_path),
        ("ref", &s.ref_),
        ("environment", &s.environment),
        ("deploymentTier", &s.deployment_tier),
        ("userLogin", &s.user_login),
    ] {
        if value.as_deref() == Some("") {
            return Err(invalid(format!("{field} must not be empty")));
        }
    }
    if s.pipeline_source.iter().any(String::is_empty) {
        return Err(invalid("pipelineSource entries must not be empty".into()));
    }
    if let Some(condition) = &s.condition {
        ClaimCondition::compile(condition).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(())
}

/// Whether some token could satisfy both the allow entry and the subject. Entries and subjects are
/// compared field by field where both constrain the same claim, and a namespace path against a
/// project path (`<namespace>/<project>`). This refuses declarations that can never work; the allow
/// list itself is enforced again on every token by `match_token`.
fn allow_may_contain(entry: &AllowedIdentity, s: &Subject) -> bool {
    fn both<'a>(a: &'a Option<String>, b: &'a Option<String>) -> Option<(&'a str, &'a str)> {
        Some((a.as_deref()?, b.as_deref()?))
    }
    let ids_agree = |a: &Option<String>, b: &Option<String>| both(a, b).is_none_or(|(x, y)| x == y);
    let paths_overlap = |a: &Option<String>, b: &Option<String>| {
        both(a, b).is_none_or(|(x, y)| glob::overlap(x, y))
    };
    let ns_vs_project = |ns: &Option<String>, project: &Option<String>| {
        both(ns, project).is_none_or(|(n, p)| glob::overlap(&format!("{n}/*"), p))
    };
    ids_agree(&entry.namespace_id, &s.namespace_id)
        && ids_agree(&entry.project_id, &s.project_id)
        && paths_overlap(&entry.namespace_path, &s.namespace_path)
        && paths_overlap(&entry.project_path, &s.project_path)
        && ns_vs_project(&entry.namespace_path, &s.project_path)
        && ns_vs_project(&s.namespace_path, &entry.project_path)
}

fn grant_ttl(
    trust_name: &str,
    trust: &GitLabTrust,
    declared: Option<&str>,
) -> Result<Duration, RefusalReason> {
    let invalid_trust = |e: crate::duration::DurationError| RefusalReason::InvalidTrust {
        trust: trust_name.to_string(),
        error: e.to_string(),
    };
    let tokens = trust.spec.tokens.clone().unwrap_or_default();
    let max = match tokens.max_ttl.as_deref() {
        Some(s) => crate::duration::parse(s).map_err(invalid_trust)?,
        None => DEFAULT_MAX_TTL,
    };
    let ttl = match declared {
        Some(s) => crate::duration::parse(s).map_err(|e| RefusalReason::InvalidTtl {
            error: e.to_string(),
        })?,
        None => match tokens.default_ttl.as_deref() {
            Some(s) => crate::duration::parse(s).map_err(invalid_trust)?,
            None => DEFAULT_TTL.min(max),
        },
    };
    if ttl.is_zero() {
        return Err(RefusalReason::InvalidTtl {
            error: "ttl must be longer than 0s".into(),
        });
    }
    if ttl > max {
        return Err(RefusalReason::TtlAboveMax {
            trust: trust_name.to_string(),
            ttl,
            max,
        });
    }
    Ok(ttl)
}

/// (group, resource) -> names of the objects a preset may cover.
type ObjectNames = BTreeMap<(String, String), BTreeSet<String>>;

/// The rendered objects in this declaration's scope that a preset may name.
fn scoped_objects(
    input: &GrantInput,
    component: Option<&str>,
    warnings: &mut Vec<String>,
) -> ObjectNames {
    let namespace = app_namespace(input.application);
    let mut out = ObjectNames::new();
    for object in input.rendered {
        if component.is_some() && object.component.as_deref() != component {
            continue;
        }
        let rk = kinds::resource_kind(object.api_version(), object.kind());
        let what = format!("{} {:?}", object.kind(), object.name());
        if !rk.namespaced {
            warnings.push(format!(
                "{what} is cluster-scoped; presets never grant cluster-scoped objects"
            ));
            continue;
        }
        if let Some(reason) = kinds::preset_forbidden(&rk.group, &rk.resource) {
            warnings.push(format!("{what} is not granted: {reason}"));
            continue;
        }
        if object.namespace().is_some_and(|ns| ns != namespace) {
            warnings.push(format!(
                "{what} is in another namespace than the Application; a Role cannot reach it"
            ));
            continue;
        }
        if object.name().is_empty() {
            continue;
        }
        out.entry((rk.group, rk.resource))
            .or_default()
            .insert(object.name().to_string());
    }
    out
}

fn rule(group: &str, resource: &str, verbs: &[&str], names: Option<Vec<String>>) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(vec![resource.to_string()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        resource_names: names,
        non_resource_urls: None,
    }
}

/// The rules of a preset, before any ceiling.
pub fn preset_rules(preset: Preset, application: &str, objects: &ObjectNames) -> Vec<PolicyRule> {
    let names = |set: &BTreeSet<String>| Some(set.iter().cloned().collect::<Vec<_>>());
    let mut rules = Vec::new();
    for ((group, resource), set) in objects {
        rules.push(rule(group, resource, READ_VERBS, names(set)));
        if preset == Preset::Manage {
            rules.push(rule(
                group,
                resource,
                &["update", "patch", "delete"],
                names(set),
            ));
            rules.push(rule(group, resource, &["create"], None));
        }
    }
    let app_verbs: &[&str] = match preset {
        Preset::Read => READ_VERBS,
        Preset::Deploy | Preset::Manage => &["get", "list", "watch", "patch", "update"],
    };
    rules.push(rule(
        names::OAM_GROUP,
        APPLICATIONS,
        app_verbs,
        Some(vec![application.to_string()]),
    ));
    rules
}

fn explicit_rules(rules: &[AccessRule]) -> Result<Vec<PolicyRule>, RefusalReason> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let invalid = |what: &str| RefusalReason::InvalidProperties {
            error: format!("access.rules[{i}]: {what} must not be empty"),
        };
        if r.api_groups.is_empty() {
            return Err(invalid("apiGroups (use [\"\"] for the core group)"));
        }
        if r.resources.is_empty() || r.resources.iter().any(String::is_empty) {
            return Err(invalid("resources"));
        }
        if r.verbs.is_empty() || r.verbs.iter().any(String::is_empty) {
            return Err(invalid("verbs"));
        }
        for group in &r.api_groups {
            for resource in &r.resources {
                if kinds::is_cluster_scoped(group, resource) {
                    return Err(RefusalReason::ClusterScopedRule {
                        rule: i,
                        resource: resource.clone(),
                    });
                }
            }
        }
        out.push(PolicyRule {
            api_groups: Some(r.api_groups.clone()),
            resources: Some(r.resources.clone()),
            verbs: r.verbs.clone(),
            resource_names: (!r.resource_names.is_empty()).then(|| r.resource_names.clone()),
            non_resource_urls: None,
        });
    }
    if out.is_empty() {
        return Err(RefusalReason::InvalidProperties {
            error: "access.rules must list at least one rule".into(),
        });
    }
    Ok(out)
}

fn granted_rules(
    trust_name: &str,
    trust: &GitLabTrust,
    input: &GrantInput,
    access: &Access,
    objects: &ObjectNames,
    warnings: &mut Vec<String>,
) -> Result<Vec<PolicyRule>, RefusalReason> {
    let application = app_name(input.application);
    let (requested, trim) = match access {
        Access::Preset(preset) => (
            preset_rules(*preset, &application, objects),
            *preset == Preset::Manage,
        ),
        Access::Rules(explicit) => (explicit_rules(&explicit.rules)?, false),
    };
    let needs_ceiling = matches!(access, Access::Rules(_) | Access::Preset(Preset::Manage));
    let Some(ceiling_ref) = trust.spec.ceiling.as_ref() else {
        if needs_ceiling {
            return Err(RefusalReason::NoCeiling {
                trust: trust_name.to_string(),
                access: match access {
                    Access::Rules(_) => "explicit rules".into(),
                    _ => "manage".into(),
                },
            });
        }
        return Ok(requested);
    };
    let cluster_role = ceiling_ref.cluster_role_ref.clone();
    let ceiling_rules = input
        .ceilings
        .get(&cluster_role)
        .ok_or_else(|| RefusalReason::CeilingNotFound {
            trust: trust_name.to_string(),
            cluster_role: cluster_role.clone(),
        })?
        .rules
        .clone()
        .unwrap_or_default();
    if !trim {
        let uncovered = ceiling::uncovered(&requested, &ceiling_rules);
        if !uncovered.is_empty() {
            return Err(RefusalReason::BeyondCeiling {
                cluster_role,
                uncovered,
            });
        }
        return Ok(requested);
    }
    // manage: keep each (rule, verb) whose every atom the ceiling covers.
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for r in requested {
        let (inside, outside): (Vec<String>, Vec<String>) =
            r.verbs.iter().cloned().partition(|verb| {
                let one = PolicyRule {
                    verbs: vec![verb.clone()],
                    ..r.clone()
                };
                ceiling::uncovered(&[one], &ceiling_rules).is_empty()
            });
        for verb in outside {
            let one = PolicyRule {
                verbs: vec![verb],
                ..r.clone()
            };
            dropped.extend(ceiling::uncovered(&[one], &ceiling_rules));
        }
        if !inside.is_empty() {
            kept.push(PolicyRule { verbs: inside, ..r });
        }
    }
    if kept.is_empty() {
        return Err(RefusalReason::BeyondCeiling {
            cluster_role,
            uncovered: dropped,
        });
    }
    if !dropped.is_empty() {
        warnings.push(format!(
            "manage trimmed to ceiling ClusterRole {cluster_role:?}; not granted: {}",
            list(&dropped)
        ));
    }
    Ok(kept)
}

/// `oam-<app>-<slug>-<hash>`: readable, unique per declaration, and a valid label value (≤ 63).
fn object_name(app: &str, namespace: &str, slug: &str, id: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{app}/{id}").as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
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
    let app_name = app_name(app);
    let mut labels = BTreeMap::from([
        (
            names::LABEL_MANAGED_BY.to_string(),
            names::MANAGED_BY.to_string(),
        ),
        (names::LABEL_APP_NAME.to_string(), app_name.clone()),
        (
            names::LABEL_APP_NAMESPACE.to_string(),
            app_namespace(app).to_string(),
        ),
        (LABEL_GRANT.to_string(), name.to_string()),
    ]);
    if let Some(component) = decl.component {
        labels.insert(names::LABEL_APP_COMPONENT.into(), component.to_string());
    }
    let owner = app.metadata.uid.as_ref().map(|uid| OwnerReference {
        api_version: format!("{}/{}", names::OAM_GROUP, names::OAM_VERSION),
        kind: "Application".into(),
        name: app_name.clone(),
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    });
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(app_namespace(app).to_string()),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([
            (ANNOTATION_GRANT_ID.to_string(), decl.id.clone()),
            (ANNOTATION_TRUST.to_string(), trust.to_string()),
        ])),
        owner_references: owner.map(|o| vec![o]),
        ..Default::default()
    }
}

/// Whether an environment name is its own GitLab slug (lower-case alphanumerics and single `-`,
/// starting with a letter, at most 24 characters). Other names get a slug with a random suffix that
/// cannot be derived from the name, so no `project_env` group can be written for them.
fn is_own_slug(env: &str) -> bool {
    env.len() <= 24
        && env.starts_with(|c: char| c.is_ascii_lowercase())
        && !env.ends_with('-')
        && !env.contains("--")
        && env
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Groups the GitLab agent impersonates in `access_as: ci_job` mode that carry these subjects, and
/// what it cannot check. Only project ids are bound: `gitlab:group:<id>` also covers every subgroup,
/// which a `namespaceId` subject does not, so namespace-only subjects get no agent group.
fn agent_identity(subjects: &[Subject], trust: &GitLabTrust) -> (Vec<String>, Vec<Unenforceable>) {
    let mut groups = BTreeSet::new();
    let mut out = Vec::new();
    let mut note = |subject: Option<usize>, field: &str, reason: &str| {
        out.push(Unenforceable {
            subject,
            field: field.to_string(),
            reason: reason.to_string(),
        })
    };
    if let Some(require) = &trust.spec.require {
        if require.ref_protected == Some(true) {
            note(
                None,
                "require.refProtected",
                "the agent does not see whether the ref is protected",
            );
        }
        if require.environment_protected == Some(true) {
            note(
                None,
                "require.environmentProtected",
                "the agent does not see whether the environment is protected",
            );
        }
    }
    for (i, s) in subjects.iter().enumerate() {
        let at = Some(i);
        match (&s.project_id, &s.environment, &s.deployment_tier) {
            (None, _, _) => note(
                at,
                "projectId",
                "the agent identifies jobs only by numeric project id; this subject gets no agent group",
            ),
            (Some(project), Some(env), tier) if glob::is_literal(env) && is_own_slug(env) => {
                groups.insert(format!("gitlab:project_env:{project}:{env}"));
                if tier.is_some() {
                    note(
                        at,
                        "deploymentTier",
                        "bound by environment; the tier is not checked separately",
                    );
                }
            }
            // Binding the tier instead would admit every environment of that tier: broader than declared.
            (Some(_), Some(_), _) => note(
                at,
                "environment",
                "not a literal GitLab environment slug; this subject gets no agent group",
            ),
            (Some(project), None, Some(tier)) => {
                groups.insert(format!("gitlab:project_env_tier:{project}:{tier}"));
            }
            (Some(project), None, None) => {
                groups.insert(format!("gitlab:project:{project}"));
            }
        }
        for (set, field, reason) in [
            (
                s.project_path.is_some(),
                "projectPath",
                "the agent binds by project id only",
            ),
            (
                s.namespace_id.is_some(),
                "namespaceId",
                "the agent binds by project id only",
            ),
            (
                s.namespace_path.is_some(),
                "namespacePath",
                "the agent binds by project id only",
            ),
            (s.ref_.is_some(), "ref", "the agent does not carry the ref"),
            (
                s.ref_type.is_some(),
                "refType",
                "the agent does not carry the ref type",
            ),
            (
                s.ref_protected.is_some(),
                "refProtected",
                "the agent does not carry whether the ref is protected",
            ),
            (
                s.environment_protected.is_some(),
                "environmentProtected",
                "the agent does not carry whether the environment is protected",
            ),
            (
                !s.pipeline_source.is_empty(),
                "pipelineSource",
                "the agent does not carry the pipeline source",
            ),
            (
                s.user_login.is_some(),
                "userLogin",
                "ci_job impersonation does not carry the user",
            ),
            (
                s.condition.is_some(),
                "condition",
                "the agent has no ID-token claims to evaluate CEL on",
            ),
        ] {
            if set {
                note(at, field, reason);
            }
        }
    }
    (groups.into_iter().collect(), out)
}
