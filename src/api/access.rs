//! The typed `properties` of a `gitlab-access` policy (whole Application) or trait (one component).
//!
//! Unknown fields are errors, so a typo (`refProtect: true`) is refused instead of silently widening
//! a grant. Validation beyond the shape (a subject must name a project or namespace, TTL syntax) lives
//! in `access::grant`, which reports it as a refusal of that declaration.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Properties of one `gitlab-access` declaration.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitLabAccess {
    /// Name of the cluster-scoped GitLabTrust this declaration relies on.
    pub trust: String,
    /// Which GitLab jobs may use the grant: any subject may match; all fields inside one must match.
    pub subjects: Vec<Subject>,
    /// What the grant allows.
    pub access: Access,
    /// Lifetime of issued tokens (Go duration); the trust's `tokens.defaultTTL` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// One GitLab identity pattern. Path, ref and environment fields are anchored globs (`access::glob`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subject {
    /// `project_id` claim, exact (numeric string, e.g. "1450").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// `project_path` claim glob, e.g. `platform/payments-api`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_path: Option<String>,
    /// `namespace_id` claim, exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_id: Option<String>,
    /// `namespace_path` claim glob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_path: Option<String>,
    /// `ref` claim glob (branch or tag name without `refs/heads/`).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub ref_: Option<String>,
    /// `ref_type` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_type: Option<RefType>,
    /// `ref_protected` claim (GitLab sends `"true"`/`"false"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_protected: Option<bool>,
    /// `environment` claim glob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// `environment_protected` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_protected: Option<bool>,
    /// `deployment_tier` claim, exact (`production`, `staging`, `testing`, `development`, `other`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_tier: Option<String>,
    /// `pipeline_source` must be one of these (e.g. `push`, `web`, `schedule`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipeline_source: Vec<String>,
    /// `user_login` claim, exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_login: Option<String>,
    /// CEL expression over `claims` (the raw ID-token claims, strings as GitLab sends them) that must
    /// evaluate to `true`, e.g. `claims.user_access_level in ["maintainer", "owner"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// `ref_type` values.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RefType {
    Branch,
    Tag,
}

impl RefType {
    pub fn as_claim(self) -> &'static str {
        match self {
            RefType::Branch => "branch",
            RefType::Tag => "tag",
        }
    }
}

/// A preset (`read`, `deploy`, `manage`, `approve`) or explicit `{rules: [...]}`.
#[derive(JsonSchema, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum Access {
    Preset(Preset),
    Rules(ExplicitRules),
}

/// Presets, scoped to the Application's own objects (see `access::grant`).
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Read,
    Deploy,
    Manage,
    /// Resumes a suspended workflow step of its Application, and nothing else: read the
    /// Application, and patch its status only to set `status.workflow.suspend` to false (the
    /// approve guard in `config/admission/deploy-guard.yaml` refuses every other change).
    Approve,
}

/// `access: {rules: [...]}`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExplicitRules {
    pub rules: Vec<AccessRule>,
}

/// An RBAC PolicyRule without `nonResourceURLs` (a namespaced Role cannot carry those).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessRule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
}

impl Subject {
    /// Whether the subject names a project or namespace (by id or path), as every subject must.
    pub fn names_project_or_namespace(&self) -> bool {
        self.project_id.is_some()
            || self.project_path.is_some()
            || self.namespace_id.is_some()
            || self.namespace_path.is_some()
    }

    /// Path-only subjects match mutable, re-registrable names; a numeric id is safer.
    pub fn is_path_only(&self) -> bool {
        self.project_id.is_none()
            && self.namespace_id.is_none()
            && self.names_project_or_namespace()
    }
}

/// Hand-written so a typo gets a message naming the choices, not serde's "did not match any variant".
impl<'de> Deserialize<'de> for Access {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) => match s.as_str() {
                "read" => Ok(Access::Preset(Preset::Read)),
                "deploy" => Ok(Access::Preset(Preset::Deploy)),
                "manage" => Ok(Access::Preset(Preset::Manage)),
                "approve" => Ok(Access::Preset(Preset::Approve)),
                other => Err(D::Error::custom(format!(
                    "unknown access {other:?}: use read, deploy, manage, approve or {{rules: [...]}}"
                ))),
            },
            v @ serde_json::Value::Object(_) => serde_json::from_value::<ExplicitRules>(v)
                .map(Access::Rules)
                .map_err(|e| D::Error::custom(format!("access.rules: {e}"))),
            _ => Err(D::Error::custom(
                "access must be read, deploy, manage, approve or {rules: [...]}",
            )),
        }
    }
}
