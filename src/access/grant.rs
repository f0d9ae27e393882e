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
//!   kinds; only read on the Application (only `deploy` writes it). RBAC cannot restrict create by name, so create is namespace-wide for those kinds;
//!   deletecollection is never granted (it cannot be restricted by name either). Manage is trimmed to
//!   the ceiling: verbs the ceiling does not cover are dropped with a warning.
//!
//! `read`, `deploy` and `manage` also read (`get`, by name) the Application's most recent
//! ApplicationRevisions (`rules::revision_rule`: what `oam-trust rollback` reads), where the trust's
//! ceiling allows it.
//!
//! Presets never grant Secrets, ServiceAccount tokens, RBAC/admission/CRD kinds or cluster-scoped
//! objects, and cover a component trait's own component only. Explicit `rules` never write the
//! Application (`ApplicationWrite`: a write verb on `applications`, `*` or a subresource of them in
//! `core.oam.dev` or `*`). Explicit `rules` are all-or-nothing:
//! every atom must be within the trust's ceiling, and a trust without a ceiling refuses `manage` and
//! `rules`.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};

use super::ceiling::RuleAtom;
use super::declaration::{Declaration, declarations};
use super::{agent, authn, objects, rules, selector, validate};
use crate::api::access::{Access, GitLabAccess, Subject};
use crate::api::oam::Application;
use crate::api::trust::GitLabTrust;
use crate::names;
use crate::render::RenderedObject;

/// TTL when neither the declaration nor the trust names one.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
/// TTL cap when the trust names none.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(60 * 60);

/// The TTL a declaration without `ttl` gets under `trust` (`tokens.defaultTTL`, else
/// [`DEFAULT_TTL`] within the cap), or why it gets none.
pub fn default_ttl(trust_name: &str, trust: &GitLabTrust) -> Result<Duration, RefusalReason> {
    validate::grant_ttl(trust_name, trust, None)
}

/// Everything grant derivation looks at, for one Application.
#[derive(Clone, Copy, Debug)]
pub struct GrantInput<'a> {
    pub application: &'a Application,
    /// Labels of the Application's namespace (for the trusts' `namespaceSelector`); `None` when the
    /// namespace is not known (offline files that omit it): it is then assumed selected, with a warning.
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
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
    /// The group the API server puts a job in when its ID token satisfies this grant
    /// (`names::grant_group`), bound by the RoleBinding; `None` unless the trust enables
    /// `federation.apiServer` (`access::authn`).
    pub api_server_group: Option<String>,
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
    #[error(
        "rule {rule} grants {verb:?} on {resource:?} of core.oam.dev: explicit rules never write \
         Applications (that would let a job rewrite its own grants); use access: deploy, which may \
         change only component images"
    )]
    ApplicationWrite {
        rule: usize,
        verb: String,
        resource: String,
    },
}

pub(super) fn list(atoms: &[RuleAtom]) -> String {
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

impl Grant {
    /// Whether the grant writes anything (`deploy`, `manage`, or explicit rules with a verb beyond
    /// get/list/watch): such a grant is bounded by the guard admission policies too.
    pub fn writes(&self) -> bool {
        match &self.access {
            Access::Preset(crate::api::access::Preset::Read) => false,
            Access::Preset(_) => true,
            Access::Rules(_) => self.role.rules.iter().flatten().any(|r| {
                r.verbs
                    .iter()
                    .any(|v| !matches!(v.as_str(), "get" | "list" | "watch"))
            }),
        }
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

fn derive_one(
    input: &GrantInput,
    decl: &Declaration,
    warnings: &mut Vec<String>,
) -> Result<Grant, RefusalReason> {
    let app = input.application;
    let namespace = names::namespace_of(app);
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
    check_namespace(input, &trust_name, trust, warnings)?;
    check_subjects(&props.subjects, &trust_name, trust, warnings)?;
    let ttl = validate::grant_ttl(&trust_name, trust, props.ttl.as_deref())?;
    // `approve` names no rendered object (only its Application): nothing to scope, nothing to warn.
    let objects = if props.access == Access::Preset(crate::api::access::Preset::Approve) {
        rules::ObjectNames::new()
    } else {
        rules::scoped_objects(input, decl.component, warnings)
    };
    let rules = rules::granted_rules(&trust_name, trust, input, &props.access, &objects, warnings)?;
    let rules = rules::with_revision_rule(rules, trust, input, &props.access);

    let name = objects::object_name(&app_name(app), namespace, &decl.slug, &decl.id);
    let (agent_groups, unenforceable) = if trust.spec.federation().gitlab_agent {
        agent::agent_identity(&props.subjects, trust)
    } else {
        (Vec::new(), Vec::new())
    };
    let api_server_group = trust.spec.federation().api_server.then(|| {
        api_server_warnings(&trust_name, trust, &props.subjects, warnings);
        names::grant_group(namespace, &name)
    });
    let groups: Vec<String> = agent_groups
        .iter()
        .chain(&api_server_group)
        .cloned()
        .collect();
    let objects::GrantObjects {
        service_account,
        role,
        role_binding,
    } = objects::grant_objects(app, &name, decl, &trust_name, rules, &groups);
    Ok(Grant {
        id: decl.id.clone(),
        namespace: namespace.to_string(),
        application: app_name(app),
        component: decl.component.map(str::to_string),
        trust: trust_name,
        subjects: props.subjects,
        access: props.access,
        ttl,
        service_account,
        role,
        role_binding,
        name,
        agent_groups,
        unenforceable,
        api_server_group,
    })
}

/// What a grant under a trust in API-server mode should say on its Application: what the API server
/// cannot do that the exchange does, the subjects it cannot carry, and whether it serves the trust at all.
fn api_server_warnings(
    trust_name: &str,
    trust: &GitLabTrust,
    subjects: &[Subject],
    warnings: &mut Vec<String>,
) {
    warnings.push(format!(
        "GitLabTrust {trust_name:?} enables federation.apiServer: {}",
        authn::API_SERVER_LIMITS
    ));
    if let Some(reason) = authn::unservable(trust) {
        warnings.push(format!(
            "GitLabTrust {trust_name:?} enables federation.apiServer but the API server cannot serve \
             it: {reason}; jobs can use this grant only through the token exchange"
        ));
    }
    for gap in authn::subject_gaps(subjects) {
        warnings.push(format!(
            "federation.apiServer: the API server never matches {gap} (the token exchange still does)"
        ));
    }
}

/// The trust must select the Application's namespace (assumed, with a warning, when it is unknown).
fn check_namespace(
    input: &GrantInput,
    trust_name: &str,
    trust: &GitLabTrust,
    warnings: &mut Vec<String>,
) -> Result<(), RefusalReason> {
    let namespace = names::namespace_of(input.application);
    let Some(labels) = input.namespace_labels else {
        warnings.push(format!(
            "namespace {namespace:?} is not among the manifests: assumed selected by GitLabTrust \
             {trust_name:?}'s namespaceSelector (add its Namespace manifest to check the selector)"
        ));
        return Ok(());
    };
    let selected =
        selector::selects(trust.spec.namespace_selector.as_ref(), labels).map_err(|e| {
            RefusalReason::InvalidTrust {
                trust: trust_name.to_string(),
                error: format!("namespaceSelector: {e}"),
            }
        })?;
    if !selected {
        return Err(RefusalReason::NamespaceNotSelected {
            trust: trust_name.to_string(),
            namespace: namespace.to_string(),
        });
    }
    Ok(())
}

/// Every subject well-formed and within the trust's `allow` list; path-only subjects warned about.
fn check_subjects(
    subjects: &[Subject],
    trust_name: &str,
    trust: &GitLabTrust,
    warnings: &mut Vec<String>,
) -> Result<(), RefusalReason> {
    if subjects.is_empty() {
        return Err(RefusalReason::InvalidProperties {
            error: "subjects must list at least one GitLab identity".into(),
        });
    }
    for (i, subject) in subjects.iter().enumerate() {
        validate::check_subject(i, subject)?;
        if !trust
            .spec
            .allow
            .iter()
            .any(|entry| validate::allow_may_contain(entry, subject))
        {
            return Err(RefusalReason::SubjectOutsideAllow {
                subject: i,
                trust: trust_name.to_string(),
            });
        }
        if subject.is_path_only() {
            warnings.push(format!(
                "subject {i} names its project or namespace by path only: paths can be renamed and \
                 re-registered by someone else; add projectId or namespaceId"
            ));
        }
    }
    Ok(())
}

pub(super) fn app_name(app: &Application) -> String {
    app.metadata.name.clone().unwrap_or_default()
}
