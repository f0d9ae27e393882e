//! Token issuance: the binding Secret (the durable in-cluster record of one exchange, and the replay
//! guard), the TokenRequest bound to it, and deleting it, which revokes the token (`reaper` deletes the
//! expired ones).
//!
//! Invariants: the Secret named from `sha256(iss + "\n" + jti)` is created (create-if-absent) before a
//! token is requested, so a replayed ID token gets a 409 on every replica and no token leaves the process
//! without its Secret; if the TokenRequest fails the Secrets are deleted. Deleting the bound Secret
//! revokes the token (the API server checks bound objects), which is how a TTL below TokenRequest's
//! 600 s minimum is enforced. The replay guard must outlive the token when the ID token lives longer
//! than the grant's TTL: then the hash-named Secret is a guard kept until the ID token's `exp`, and the
//! token is bound to a second Secret (`<guard>-t`) deleted at the TTL. When the ID token expires with the
//! token (the usual case: GitLab's 5-minute tokens), one Secret is both. Secrets hold no data.
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use crate::access::Grant;
use crate::api::oam::Application;
use crate::names::{
    ANNOTATION_CORRELATION, ANNOTATION_EXPIRES, ANNOTATION_GRANT, ANNOTATION_GRANT_ID,
    ANNOTATION_ISSUER, ANNOTATION_JTI, ANNOTATION_ROLE, ANNOTATION_TRUST, LABEL_APPLICATION,
    LABEL_BINDING, LABEL_JOB_ID, LABEL_PIPELINE_ID, LABEL_PROJECT_ID, SECRET_TYPE,
};

/// TokenRequest's minimum `expirationSeconds`.
pub const TOKEN_REQUEST_MIN_SECONDS: u64 = 600;

/// Name of the binding Secret of an ID token: the same on every replica, so a replay collides.
pub fn secret_name(issuer: &str, jti: &str) -> String {
    let digest = Sha256::digest(format!("{issuer}\n{jti}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("oam-trust-binding-{}", &hex[..40])
}

/// Name of the Secret a token is bound to when a separate replay guard is kept.
pub fn token_secret_name(issuer: &str, jti: &str) -> String {
    format!("{}-t", secret_name(issuer, jti))
}

/// `expirationSeconds` of the TokenRequest for an effective TTL.
pub fn request_seconds(ttl: Duration) -> i64 {
    ttl.as_secs().max(TOKEN_REQUEST_MIN_SECONDS) as i64
}

/// What one exchange records in its binding Secret.
#[derive(Clone, Debug)]
pub struct BindingRecord<'a> {
    pub issuer: &'a str,
    pub jti: &'a str,
    pub trust: &'a str,
    pub grant: &'a Grant,
    pub application: Option<&'a Application>,
    pub project_id: &'a str,
    pub pipeline_id: &'a str,
    pub job_id: &'a str,
    pub expires_at: SystemTime,
    /// The ID token's `exp`: the replay guard lives until then.
    pub id_token_expires_at: SystemTime,
    pub correlation_id: &'a str,
}

impl BindingRecord<'_> {
    /// Whether the ID token outlives the issued token, so the replay guard must be a separate Secret.
    /// Within the last second of the ID token's life the exchange refuses anyway (TTLs are whole
    /// seconds, floored), so a token that ends less than a second before the ID token needs no guard.
    pub fn needs_separate_guard(&self) -> bool {
        self.id_token_expires_at > self.expires_at + Duration::from_secs(1)
    }
}

/// Why issuing failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(
        "this ID token was already exchanged (binding Secret {secret} exists); request a new ID token: GitLab mints one per job"
    )]
    Replayed { secret: String },
    #[error("creating binding Secret {namespace}/{secret}: {source}")]
    CreateSecret {
        namespace: String,
        secret: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "ServiceAccount {namespace}/{service_account} of the grant does not exist yet; the operator has not reconciled the Application's grants (retry shortly)"
    )]
    ServiceAccountMissing {
        namespace: String,
        service_account: String,
    },
    #[error("TokenRequest for ServiceAccount {namespace}/{service_account}: {source}")]
    TokenRequest {
        namespace: String,
        service_account: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("TokenRequest for ServiceAccount {namespace}/{service_account} returned no token")]
    EmptyToken {
        namespace: String,
        service_account: String,
    },
}

impl IssueError {
    pub fn category(&self) -> &'static str {
        match self {
            IssueError::Replayed { .. } => "replayed",
            IssueError::CreateSecret { .. } => "binding_secret_failed",
            IssueError::ServiceAccountMissing { .. } => "service_account_missing",
            IssueError::TokenRequest { .. } | IssueError::EmptyToken { .. } => {
                "token_request_failed"
            }
        }
    }
}

/// An issued token and where it lives.
pub struct Issued {
    pub token: String,
    pub secret: String,
    pub namespace: String,
    pub service_account: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("secret", &self.secret)
            .field("namespace", &self.namespace)
            .field("service_account", &self.service_account)
            .finish_non_exhaustive()
    }
}

fn label_value(v: &str) -> Option<String> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric();
    ok.then(|| v.to_string())
}

pub(super) fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

pub(super) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let ts: k8s_openapi::jiff::Timestamp = s.parse().ok()?;
    let secs = u64::try_from(ts.as_second()).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// The Secret the token is bound to (and, when no separate guard is needed, the replay guard).
pub fn binding_secret(record: &BindingRecord) -> Secret {
    if record.needs_separate_guard() {
        binding_object(
            record,
            token_secret_name(record.issuer, record.jti),
            record.expires_at,
            "token-binding",
        )
    } else {
        binding_object(
            record,
            secret_name(record.issuer, record.jti),
            record.expires_at,
            "replay-guard,token-binding",
        )
    }
}

/// The replay guard kept until the ID token's `exp` when the token expires before it.
pub fn guard_secret(record: &BindingRecord) -> Secret {
    binding_object(
        record,
        secret_name(record.issuer, record.jti),
        record.id_token_expires_at,
        "replay-guard",
    )
}

fn binding_object(
    record: &BindingRecord,
    name: String,
    expires_at: SystemTime,
    role: &str,
) -> Secret {
    let grant = record.grant;
    let mut labels = BTreeMap::from([(LABEL_BINDING.to_string(), "true".to_string())]);
    for (key, value) in [
        (LABEL_PROJECT_ID, record.project_id),
        (LABEL_PIPELINE_ID, record.pipeline_id),
        (LABEL_JOB_ID, record.job_id),
        (LABEL_APPLICATION, grant.application.as_str()),
    ] {
        if let Some(v) = label_value(value) {
            labels.insert(key.to_string(), v);
        }
    }
    let annotations = BTreeMap::from([
        (ANNOTATION_EXPIRES.to_string(), rfc3339(expires_at)),
        (ANNOTATION_ROLE.to_string(), role.to_string()),
        (ANNOTATION_GRANT.to_string(), grant.name.clone()),
        (ANNOTATION_GRANT_ID.to_string(), grant.id.clone()),
        (ANNOTATION_TRUST.to_string(), record.trust.to_string()),
        (ANNOTATION_ISSUER.to_string(), record.issuer.to_string()),
        (ANNOTATION_JTI.to_string(), record.jti.to_string()),
        (
            ANNOTATION_CORRELATION.to_string(),
            record.correlation_id.to_string(),
        ),
    ]);
    // Owned by the Application: deleting it deletes the Secret, which revokes the token.
    let owner_references = record
        .application
        .and_then(|app| kube::Resource::owner_ref(app, &()))
        .map(|o| vec![o]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(grant.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references,
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.into()),
        immutable: Some(true),
        ..Default::default()
    }
}

/// Creates the binding Secret, then a TokenRequest for the grant's ServiceAccount bound to it.
pub async fn issue(
    client: &Client,
    record: &BindingRecord<'_>,
    ttl: Duration,
) -> Result<Issued, IssueError> {
    let grant = record.grant;
    let namespace = grant.namespace.clone();
    let service_account = grant
        .service_account
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| grant.name.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    // The replay guard first: a second exchange of this ID token stops here, on any replica.
    let guard = match record.needs_separate_guard() {
        false => None,
        true => Some(create_once(&secrets, &guard_secret(record), &namespace).await?),
    };
    let undo_guard = |guard: Option<Secret>| async move {
        if let Some(g) = guard {
            let name = g.metadata.name.clone().unwrap_or_default();
            delete_secret(
                client,
                &g.metadata.namespace.clone().unwrap_or_default(),
                &name,
                g.metadata.uid,
            )
            .await;
        }
    };
    let created = match create_once(&secrets, &binding_secret(record), &namespace).await {
        Ok(s) => s,
        Err(e) => {
            undo_guard(guard).await;
            return Err(e);
        }
    };
    let name = created.metadata.name.clone().unwrap_or_default();
    let uid = created.metadata.uid.clone();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(request_seconds(ttl)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some(name.clone()),
                uid: uid.clone(),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let outcome = sas
        .create_token_request(&service_account, &PostParams::default(), &request)
        .await;
    let failure = match outcome {
        Ok(tr) => match tr.status.map(|s| s.token).filter(|t| !t.is_empty()) {
            Some(token) => {
                return Ok(Issued {
                    token,
                    secret: name,
                    namespace,
                    service_account,
                });
            }
            None => IssueError::EmptyToken {
                namespace: namespace.clone(),
                service_account: service_account.clone(),
            },
        },
        Err(kube::Error::Api(status)) if status.code == 404 => IssueError::ServiceAccountMissing {
            namespace: namespace.clone(),
            service_account: service_account.clone(),
        },
        Err(e) => IssueError::TokenRequest {
            namespace: namespace.clone(),
            service_account: service_account.clone(),
            source: Box::new(e),
        },
    };
    delete_secret(client, &namespace, &name, uid).await;
    undo_guard(guard).await;
    Err(failure)
}

/// Creates `secret` if absent; an existing one means the ID token was already exchanged.
async fn create_once(
    secrets: &Api<Secret>,
    secret: &Secret,
    namespace: &str,
) -> Result<Secret, IssueError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    match secrets.create(&PostParams::default(), secret).await {
        Ok(s) => Ok(s),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            Err(IssueError::Replayed { secret: name })
        }
        Err(e) => Err(IssueError::CreateSecret {
            namespace: namespace.to_string(),
            secret: name,
            source: Box::new(e),
        }),
    }
}

/// Deletes a binding Secret (only the one with `uid` when given); absent is fine.
pub async fn delete_secret(client: &Client, namespace: &str, name: &str, uid: Option<String>) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match secrets.delete(name, &params).await {
        Ok(_) => tracing::debug!(namespace, secret = name, "binding Secret deleted"),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(e) => {
            tracing::warn!(namespace, secret = name, error = %e, "deleting binding Secret failed; the reaper retries")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_per_issuer_and_jti() {
        let a = secret_name("https://gitlab.com", "j1");
        assert_eq!(a, secret_name("https://gitlab.com", "j1"));
        assert_ne!(a, secret_name("https://gitlab.com", "j2"));
        assert_ne!(a, secret_name("https://gitlab.example.com", "j1"));
        assert!(a.len() <= 63);
    }

    #[test]
    fn token_requests_ask_at_least_the_api_minimum() {
        assert_eq!(request_seconds(Duration::from_secs(120)), 600);
        assert_eq!(request_seconds(Duration::from_secs(900)), 900);
    }

    #[test]
    fn expiry_round_trips() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
    }
}
