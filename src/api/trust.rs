//! `GitLabTrust` (`oam-trust.dev/v1alpha1`, cluster-scoped): which GitLab instance the cluster trusts,
//! which of its groups and projects, what every token must satisfy, and the ceiling of what any grant
//! may ever hold. Owned by the platform team; application teams only refer to it by name.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Spec of a GitLabTrust. CEL rules reject what can never work at admission time.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "oam-trust.dev",
    version = "v1alpha1",
    kind = "GitLabTrust",
    shortname = "glt",
    category = "oam-trust",
    status = "GitLabTrustStatus",
    printcolumn = r#"{"name":"Issuer","type":"string","jsonPath":".spec.issuer"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Keys","type":"integer","jsonPath":".status.keyCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct GitLabTrustSpec {
    /// GitLab instance URL; must equal the ID token's `iss` exactly (https only, no trailing slash).
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("issuer must be an https:// URL, e.g. https://gitlab.com"))]
    #[x_kube(validation = Rule::new("!self.endsWith('/')").message("issuer must not end with '/': GitLab's iss claim has no trailing slash"))]
    #[x_kube(validation = Rule::new("isURL(self)").message("issuer must be a valid URL"))]
    #[schemars(length(max = 2048))]
    pub issuer: String,

    /// Accepted `aud` values: an ID token's audience must contain one. Use a value unique to this
    /// cluster (e.g. its exchange URL) so tokens minted for other relying parties are refused.
    #[x_kube(validation = Rule::new("size(self) > 0").message("audiences must name at least one audience; use a value unique to this cluster"))]
    #[schemars(length(max = 16), inner(length(min = 1, max = 512)))]
    pub audiences: Vec<String>,

    /// Where the verification keys come from; default is OIDC discovery at the issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwksSource>,

    /// Which namespaces' Applications may use this trust. Empty or absent selects none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Outer bound on GitLab identities: a token must match at least one entry. Prefer numeric ids;
    /// paths can be renamed and re-registered by someone else.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub allow: Vec<AllowedIdentity>,

    /// Claims every token must satisfy, whatever an Application declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require: Option<Requirements>,

    /// Lifetime of issued Kubernetes tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenPolicy>,

    /// Grants derived under this trust must be a subset of this ClusterRole's rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<Ceiling>,

    /// Which transports carry this trust's identities into the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation: Option<Federation>,
}

/// Key source. At most one of `uri` and `static`; `caBundle` applies to discovery and `uri` fetches.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.uri) && has(self.static))").message("jwks: set either uri or static, not both"))]
pub struct JwksSource {
    /// JWKS URL, instead of the one named by discovery (https only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("jwks.uri must be an https:// URL"))]
    #[schemars(length(max = 2048))]
    pub uri: Option<String>,
    /// PEM CA bundle trusted for discovery and JWKS fetches (for self-hosted GitLab with a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,
    /// A JWKS document (JSON) used instead of fetching: air-gapped clusters and tests.
    #[serde(default, rename = "static", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub static_jwks: Option<String>,
}

/// One GitLab identity bound: a project or group (namespace) named by id or by path glob.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.namespaceId) || has(self.namespacePath) || has(self.projectId) || has(self.projectPath)").message("each allow entry must name a namespaceId, namespacePath, projectId or projectPath"))]
pub struct AllowedIdentity {
    /// GitLab group/user namespace id (`namespace_id` claim), e.g. "72".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+$')").message("namespaceId must be the numeric id, e.g. \"72\""))]
    #[schemars(length(max = 20))]
    pub namespace_id: Option<String>,
    /// Namespace path glob (`namespace_path` claim), anchored; `*` and `?` wildcards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub namespace_path: Option<String>,
    /// Project id (`project_id` claim), e.g. "1450".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]+$')").message("projectId must be the numeric id, e.g. \"1450\""))]
    #[schemars(length(max = 20))]
    pub project_id: Option<String>,
    /// Project path glob (`project_path` claim), anchored; `*` and `?` wildcards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub project_path: Option<String>,
}

/// Claims every token must satisfy under this trust.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Requirements {
    /// Only tokens from protected branches or tags (`ref_protected == "true"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_protected: Option<bool>,
    /// Only tokens from jobs deploying to a protected environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_protected: Option<bool>,
    /// Refuse ID tokens whose `exp - iat` is longer than this (GitLab's default lifetime is 5m–1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::duration")]
    pub max_token_age: Option<String>,
}

/// Issued-token lifetimes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.defaultTTL) || !has(self.maxTTL) || duration(self.defaultTTL) <= duration(self.maxTTL)").message("tokens.defaultTTL must not exceed tokens.maxTTL"))]
pub struct TokenPolicy {
    /// TTL when neither the grant nor the request names one (default 15m).
    #[serde(
        default,
        rename = "defaultTTL",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "crate::api::schema::duration")]
    pub default_ttl: Option<String>,
    /// Cap on any issued token's TTL (default 1h).
    #[serde(default, rename = "maxTTL", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::schema::duration")]
    pub max_ttl: Option<String>,
}

/// The ceiling: a ClusterRole whose rules bound every grant under the trust.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Ceiling {
    #[x_kube(validation = Rule::new("size(self) > 0").message("ceiling.clusterRoleRef must name a ClusterRole"))]
    #[schemars(length(max = 253))]
    pub cluster_role_ref: String,
}

/// Transports. Token exchange is on unless switched off; the others are opt-in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Federation {
    #[serde(default = "yes")]
    pub token_exchange: bool,
    #[serde(default)]
    pub gitlab_agent: bool,
    #[serde(default)]
    pub api_server: bool,
}

fn yes() -> bool {
    true
}

impl Default for Federation {
    fn default() -> Self {
        Federation {
            token_exchange: true,
            gitlab_agent: false,
            api_server: false,
        }
    }
}

/// Observed state: key status and conditions.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitLabTrustStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Key ids currently trusted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key_fetch: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl GitLabTrustSpec {
    /// The federation switches, with defaults applied.
    pub fn federation(&self) -> Federation {
        self.federation.clone().unwrap_or_default()
    }
}
