//! The exchange's wire types, shared by the service and its client (`login`): the RFC 8693 success
//! answer with its kubeconfig and grant summary, and the RFC 6749 §5.2 error answer. Plain data.
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde::{Deserialize, Serialize};

/// The grant summary in the answer (and printed by `oam-trust login`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrantSummary {
    pub application: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    pub grant: String,
    pub service_account: String,
    pub trust: String,
    pub rules: Vec<PolicyRule>,
    /// RFC 3339 time at which the token is revoked.
    pub expires_at: String,
}

/// The success answer: RFC 8693 fields plus a kubeconfig and the grant summary.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
pub struct ExchangeResponse {
    pub access_token: String,
    pub issued_token_type: String,
    pub token_type: String,
    pub expires_in: u64,
    pub kubeconfig: String,
    pub grant: GrantSummary,
    #[serde(default)]
    pub correlation_id: String,
}

impl std::fmt::Debug for ExchangeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeResponse")
            .field("expires_in", &self.expires_in)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

/// An RFC 6749 §5.2 error answer: what the service sends and the client reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExchangeErrorBody {
    pub error: String,
    #[serde(default)]
    pub error_description: String,
    #[serde(default)]
    pub correlation_id: String,
}
