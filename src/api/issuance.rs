//! `TokenIssuance` (`oam-trust.dev/v1alpha1`, cluster-scoped): the record of one token exchange. Its
//! name comes from the ID token's `iss` + `jti`, so creating it is the replay guard across every
//! namespace and replica; it owns the binding Secret the token is bound to, so deleting it revokes the
//! token; and it carries the audit fields, so `kubectl get tokenissuances` is the in-cluster audit
//! trail. Written once by the exchange, deleted by the reaper at `spec.expiresAt`.
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// What one exchange issued, to whom, and until when. Immutable once created.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "oam-trust.dev",
    version = "v1alpha1",
    kind = "TokenIssuance",
    shortname = "tki",
    category = "oam-trust",
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".spec.namespace"}"#,
    printcolumn = r#"{"name":"Application","type":"string","jsonPath":".spec.application"}"#,
    printcolumn = r#"{"name":"ServiceAccount","type":"string","jsonPath":".spec.serviceAccount"}"#,
    printcolumn = r#"{"name":"Project","type":"string","jsonPath":".spec.projectId"}"#,
    printcolumn = r#"{"name":"Job","type":"string","jsonPath":".spec.jobId"}"#,
    printcolumn = r#"{"name":"User","type":"string","jsonPath":".spec.user"}"#,
    printcolumn = r#"{"name":"Ref","type":"string","jsonPath":".spec.ref"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.role","priority":1}"#,
    printcolumn = r#"{"name":"Trust","type":"string","jsonPath":".spec.trust","priority":1}"#,
    printcolumn = r#"{"name":"Grant","type":"string","jsonPath":".spec.grantId","priority":1}"#,
    printcolumn = r#"{"name":"Pipeline","type":"string","jsonPath":".spec.pipelineId","priority":1}"#,
    printcolumn = r#"{"name":"Environment","type":"string","jsonPath":".spec.environment","priority":1}"#,
    printcolumn = r#"{"name":"Correlation","type":"string","jsonPath":".spec.correlationId","priority":1}"#,
    printcolumn = r#"{"name":"Issued","type":"string","jsonPath":".spec.issuedAt"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".spec.expiresAt"}"#
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("a TokenIssuance is an audit record: it cannot be edited, only deleted (which revokes its token)"))]
#[serde(rename_all = "camelCase")]
pub struct TokenIssuanceSpec {
    /// `replay-guard,token-binding` (the usual case), `replay-guard` (the ID token outlives the token:
    /// this record stays until the ID token's `exp`) or `token-binding` (owned by that guard, deleted
    /// at the token's TTL).
    pub role: String,
    /// When the reaper deletes this record (RFC 3339); deleting it revokes the token it binds.
    pub expires_at: String,
    /// When the issued Kubernetes token stops working (RFC 3339).
    pub token_expires_at: String,
    /// When the token was issued (RFC 3339).
    pub issued_at: String,
    pub issuer: String,
    pub jti: String,
    pub trust: String,
    /// Namespace of the Application, the grant and its ServiceAccount.
    pub namespace: String,
    pub application: String,
    /// uid of the Application when the token was issued: a record outliving it is reaped.
    #[serde(default)]
    pub application_uid: String,
    /// The grant's object name.
    pub grant: String,
    /// The grant id (`policy/<name>`, `component/<c>/trait/<i>`).
    pub grant_id: String,
    pub service_account: String,
    /// The Secret in `namespace` the token is bound to (owned by a TokenIssuance).
    #[serde(default)]
    pub binding_secret: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub project_path: String,
    #[serde(default)]
    pub pipeline_id: String,
    #[serde(default)]
    pub job_id: String,
    #[serde(default)]
    pub user: String,
    #[serde(default, rename = "ref")]
    pub ref_: String,
    #[serde(default)]
    pub environment: String,
    /// Correlation id of the exchange: the same in the audit log, the Event and the caller's answer.
    pub correlation_id: String,
}
