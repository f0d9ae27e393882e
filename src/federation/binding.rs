//! Token issuance: the `TokenIssuance` record of one exchange (the replay guard and the audit
//! record), the binding Secret it owns, the TokenRequest bound to that Secret, and deleting the record,
//! which revokes the token (`reaper` deletes the expired ones).
//!
//! Invariants: the cluster-scoped record named from `sha256(iss + "\n" + jti)` is created
//! (create-if-absent) before anything else, so a replayed ID token gets a 409 on every replica and in
//! every namespace, and no token leaves the process without its record. The binding Secret is owned by
//! a record through an ownerReference, so deleting the record deletes the Secret (garbage collector)
//! and revokes the token (the API server checks bound objects): that is how a TTL below TokenRequest's
//! 600 s minimum is enforced, and why the operator needs no right to read or delete Secrets. When the
//! ID token outlives the token, the hash-named record is a guard kept until the ID token's `exp` and
//! the Secret is owned by a second record (`<guard>-t`, owned by the guard) deleted at the TTL; in the
//! usual case (GitLab's 5-minute ID tokens) one record is both. If issuing fails the guard is deleted,
//! and with it everything it owns (retried in the background while the API server does not answer).
//! Secrets hold no data.
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use crate::access::Grant;
use crate::api::issuance::{TokenIssuance, TokenIssuanceSpec};
use crate::api::oam::Application;
use crate::names::{
    ANNOTATION_CORRELATION, ANNOTATION_EXPIRES, ANNOTATION_GRANT, ANNOTATION_GRANT_ID,
    ANNOTATION_ISSUANCE, ANNOTATION_ISSUER, ANNOTATION_JTI, ANNOTATION_ROLE, ANNOTATION_TRUST,
    ISSUANCE_KIND, LABEL_APPLICATION, LABEL_BINDING, LABEL_JOB_ID, LABEL_PIPELINE_ID,
    LABEL_PROJECT_ID, ROLE_BINDING, ROLE_GUARD, ROLE_GUARD_AND_BINDING, SECRET_TYPE, TRUST_GROUP,
    TRUST_VERSION,
};

/// TokenRequest's minimum `expirationSeconds`.
pub const TOKEN_REQUEST_MIN_SECONDS: u64 = 600;

fn digest40(issuer: &str, jti: &str) -> String {
    let digest = Sha256::digest(format!("{issuer}\n{jti}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..40].to_string()
}

/// Name of the TokenIssuance of an ID token (the replay guard): the same on every replica and for
/// every namespace, so a replay collides.
pub fn issuance_name(issuer: &str, jti: &str) -> String {
    format!("oam-trust-issuance-{}", digest40(issuer, jti))
}

/// Name of the TokenIssuance that owns the binding Secret when the guard must outlive the token.
pub fn binding_issuance_name(issuer: &str, jti: &str) -> String {
    format!("{}-t", issuance_name(issuer, jti))
}

/// Name of the binding Secret of an ID token (in the grant's namespace).
pub fn secret_name(issuer: &str, jti: &str) -> String {
    format!("oam-trust-binding-{}", digest40(issuer, jti))
}

/// `expirationSeconds` of the TokenRequest for an effective TTL.
pub fn request_seconds(ttl: Duration) -> i64 {
    ttl.as_secs().max(TOKEN_REQUEST_MIN_SECONDS) as i64
}

/// What one exchange records: the audit fields of its TokenIssuance and its binding Secret.
#[derive(Clone, Debug)]
pub struct BindingRecord<'a> {
    pub issuer: &'a str,
    pub jti: &'a str,
    pub trust: &'a str,
    pub grant: &'a Grant,
    pub application: Option<&'a Application>,
    pub project_id: &'a str,
    pub project_path: &'a str,
    pub pipeline_id: &'a str,
    pub job_id: &'a str,
    pub user: &'a str,
    pub ref_: &'a str,
    pub environment: &'a str,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
    /// The ID token's `exp`: the replay guard lives until then.
    pub id_token_expires_at: SystemTime,
    pub correlation_id: &'a str,
}

impl BindingRecord<'_> {
    /// Whether the ID token outlives the issued token, so the replay guard must be a separate record.
    /// Within the last second of the ID token's life the exchange refuses anyway (TTLs are whole
    /// seconds, floored), so a token that ends less than a second before the ID token needs no guard.
    pub fn needs_separate_guard(&self) -> bool {
        self.id_token_expires_at > self.expires_at + Duration::from_secs(1)
    }

    fn service_account(&self) -> String {
        self.grant
            .service_account
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| self.grant.name.clone())
    }
}

/// Why issuing failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(
        "this ID token was already exchanged (TokenIssuance {record} exists); request a new ID token: GitLab mints one per job"
    )]
    Replayed { record: String },
    #[error("creating TokenIssuance {record}: {source}")]
    CreateRecord {
        record: String,
        #[source]
        source: Box<kube::Error>,
    },
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
    /// Whether the API server did not answer or was overloaded (connection refused or reset, a
    /// timeout, 429, 5xx): nothing is wrong with the request, and a retry may succeed.
    pub fn api_unavailable(&self) -> bool {
        match self {
            IssueError::CreateRecord { source, .. }
            | IssueError::CreateSecret { source, .. }
            | IssueError::TokenRequest { source, .. } => unavailable(source),
            _ => false,
        }
    }

    pub fn category(&self) -> &'static str {
        match self {
            IssueError::Replayed { .. } => "replayed",
            IssueError::CreateRecord { .. } => "issuance_record_failed",
            IssueError::CreateSecret { .. } => "binding_secret_failed",
            IssueError::ServiceAccountMissing { .. } => "service_account_missing",
            IssueError::TokenRequest { .. } | IssueError::EmptyToken { .. } => {
                "token_request_failed"
            }
        }
    }
}

/// Whether `e` says the API server is unreachable or overloaded rather than that it refused.
pub fn unavailable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// An issued token and where it lives.
pub struct Issued {
    pub token: String,
    /// The TokenIssuance of the exchange (the replay guard).
    pub record: String,
    /// The TokenIssuance deleted at the TTL (the guard itself in the usual case) and its uid.
    pub binding_record: String,
    pub binding_record_uid: Option<String>,
    pub secret: String,
    pub namespace: String,
    pub service_account: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("record", &self.record)
            .field("binding_record", &self.binding_record)
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

/// The TokenIssuance named from `iss` + `jti`: the replay guard and the audit record. In the usual
/// case it also owns the binding Secret and goes at the TTL; otherwise it stays until the ID token's
/// `exp`.
pub fn guard_record(record: &BindingRecord) -> TokenIssuance {
    let (role, expires_at) = match record.needs_separate_guard() {
        true => (ROLE_GUARD, record.id_token_expires_at),
        false => (ROLE_GUARD_AND_BINDING, record.expires_at),
    };
    issuance_object(
        record,
        issuance_name(record.issuer, record.jti),
        role,
        expires_at,
    )
}

/// The TokenIssuance owning the binding Secret when the guard outlives the token: deleted at the TTL,
/// owned by the guard (deleting the guard deletes it, and so the Secret).
pub fn binding_record(record: &BindingRecord, guard: &TokenIssuance) -> TokenIssuance {
    let mut object = issuance_object(
        record,
        binding_issuance_name(record.issuer, record.jti),
        ROLE_BINDING,
        record.expires_at,
    );
    object.metadata.owner_references = Some(vec![owned_by(guard)]);
    object
}

fn issuance_object(
    record: &BindingRecord,
    name: String,
    role: &str,
    expires_at: SystemTime,
) -> TokenIssuance {
    let grant = record.grant;
    let spec = TokenIssuanceSpec {
        role: role.into(),
        expires_at: rfc3339(expires_at),
        token_expires_at: rfc3339(record.expires_at),
        issued_at: rfc3339(record.issued_at),
        issuer: record.issuer.into(),
        jti: record.jti.into(),
        trust: record.trust.into(),
        namespace: grant.namespace.clone(),
        application: grant.application.clone(),
        application_uid: record
            .application
            .and_then(|a| a.metadata.uid.clone())
            .unwrap_or_default(),
        grant: grant.name.clone(),
        grant_id: grant.id.clone(),
        service_account: record.service_account(),
        binding_secret: secret_name(record.issuer, record.jti),
        project_id: record.project_id.into(),
        project_path: record.project_path.into(),
        pipeline_id: record.pipeline_id.into(),
        job_id: record.job_id.into(),
        user: record.user.into(),
        ref_: record.ref_.into(),
        environment: record.environment.into(),
        correlation_id: record.correlation_id.into(),
    };
    let mut object = TokenIssuance::new(&name, spec);
    object.metadata.labels = Some(record_labels(record));
    object
}

fn record_labels(record: &BindingRecord) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(LABEL_BINDING.to_string(), "true".to_string())]);
    for (key, value) in [
        (LABEL_PROJECT_ID, record.project_id),
        (LABEL_PIPELINE_ID, record.pipeline_id),
        (LABEL_JOB_ID, record.job_id),
        (LABEL_APPLICATION, record.grant.application.as_str()),
    ] {
        if let Some(v) = label_value(value) {
            labels.insert(key.to_string(), v);
        }
    }
    labels
}

/// An ownerReference to a created TokenIssuance. Not `blockOwnerDeletion`: deleting the record must
/// never wait on its Secret, and setting it would need rights on the record's finalizers.
fn owned_by(owner: &TokenIssuance) -> OwnerReference {
    OwnerReference {
        api_version: format!("{TRUST_GROUP}/{TRUST_VERSION}"),
        kind: ISSUANCE_KIND.into(),
        name: owner.metadata.name.clone().unwrap_or_default(),
        uid: owner.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// The Secret the token is bound to, owned by `owner` (a created TokenIssuance) and by nothing else:
/// a second owner would keep it, and the token, alive after the record is deleted.
pub fn binding_secret(record: &BindingRecord, owner: &TokenIssuance) -> Secret {
    let grant = record.grant;
    let owner_name = owner.metadata.name.clone().unwrap_or_default();
    let annotations = BTreeMap::from([
        (ANNOTATION_EXPIRES.to_string(), rfc3339(record.expires_at)),
        (ANNOTATION_ROLE.to_string(), ROLE_BINDING.to_string()),
        (ANNOTATION_ISSUANCE.to_string(), owner_name),
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
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(record.issuer, record.jti)),
            namespace: Some(grant.namespace.clone()),
            labels: Some(record_labels(record)),
            annotations: Some(annotations),
            owner_references: Some(vec![owned_by(owner)]),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.into()),
        immutable: Some(true),
        ..Default::default()
    }
}

/// Creates the TokenIssuance (the replay guard), the binding Secret it owns, then a TokenRequest for
/// the grant's ServiceAccount bound to that Secret.
pub async fn issue(
    client: &Client,
    record: &BindingRecord<'_>,
    ttl: Duration,
) -> Result<Issued, IssueError> {
    let grant = record.grant;
    let namespace = grant.namespace.clone();
    let service_account = record.service_account();
    let records: Api<TokenIssuance> = Api::all(client.clone());
    // The replay guard first: a second exchange of this ID token stops here, on any replica, for
    // any namespace.
    let guard = create_record(&records, &guard_record(record)).await?;
    let guard_name = guard.metadata.name.clone().unwrap_or_default();
    // Deleting the guard deletes everything it owns (binding record, Secret), so it is the one undo.
    let undo = || undo_issuance(client, &guard_name, guard.metadata.uid.clone());
    let owner = match record.needs_separate_guard() {
        false => guard.clone(),
        true => match create_record(&records, &binding_record(record, &guard)).await {
            Ok(r) => r,
            Err(e) => {
                undo().await;
                return Err(e);
            }
        },
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = binding_secret(record, &owner);
    let name = secret.metadata.name.clone().unwrap_or_default();
    let created = match secrets.create(&PostParams::default(), &secret).await {
        Ok(s) => s,
        Err(e) => {
            undo().await;
            return Err(IssueError::CreateSecret {
                namespace,
                secret: name,
                source: Box::new(e),
            });
        }
    };
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(request_seconds(ttl)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some(name.clone()),
                uid: created.metadata.uid.clone(),
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
                    record: guard_name,
                    binding_record: owner.metadata.name.clone().unwrap_or_default(),
                    binding_record_uid: owner.metadata.uid.clone(),
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
    undo().await;
    Err(failure)
}

/// Creates `object` if absent; an existing one means the ID token was already exchanged.
async fn create_record(
    records: &Api<TokenIssuance>,
    object: &TokenIssuance,
) -> Result<TokenIssuance, IssueError> {
    let name = object.metadata.name.clone().unwrap_or_default();
    match records.create(&PostParams::default(), object).await {
        Ok(r) => Ok(r),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            Err(IssueError::Replayed { record: name })
        }
        Err(e) => Err(IssueError::CreateRecord {
            record: name,
            source: Box::new(e),
        }),
    }
}

/// How long a failed issue keeps trying to delete its guard, and how often.
const UNDO_RETRY_FOR: Duration = Duration::from_secs(300);
const UNDO_RETRY_EVERY: Duration = Duration::from_secs(2);

/// Deletes the guard of an issue that failed. When the API server does not answer (the usual
/// reason the issue failed), keeps trying in the background, so the ID token can be exchanged again
/// soon after the API server is back rather than only once the guard expires (the reaper's job).
async fn undo_issuance(client: &Client, name: &str, uid: Option<String>) {
    if delete_issuance(client, name, uid.clone()).await {
        return;
    }
    let (client, name) = (client.clone(), name.to_string());
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + UNDO_RETRY_FOR;
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(UNDO_RETRY_EVERY).await;
            if delete_issuance(&client, &name, uid.clone()).await {
                return;
            }
        }
    });
}

/// Deletes a TokenIssuance (only the one with `uid` when given), and so, through the garbage
/// collector, what it owns: the binding Secret, whose deletion revokes the token. Absent is fine.
/// Returns whether it is gone (deleted, absent, or another record under that name).
pub async fn delete_issuance(client: &Client, name: &str, uid: Option<String>) -> bool {
    let records: Api<TokenIssuance> = Api::all(client.clone());
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        // Background: the record is gone at once (the replay guard with it, when it is one); the
        // collector deletes the Secret right after.
        ..DeleteParams::background()
    };
    match records.delete(name, &params).await {
        Ok(_) => {
            tracing::debug!(record = name, "TokenIssuance deleted");
            true
        }
        Err(e) if already_gone(&e, name) => true,
        Err(e) => {
            tracing::warn!(record = name, error = %e, "deleting TokenIssuance failed; retried");
            false
        }
    }
}

/// Whether a refused delete says the record is gone: 404 for this very object (an API server that
/// is still starting answers 404 for a resource it does not serve yet, naming no object), or 409
/// (the uid precondition: another record has the name now).
fn already_gone(e: &kube::Error, name: &str) -> bool {
    match e {
        kube::Error::Api(status) if status.code == 404 => {
            status.details.as_ref().is_some_and(|d| d.name == name)
        }
        kube::Error::Api(status) => status.code == 409,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_gone_when_the_api_server_says_so_of_that_record() {
        let status = |code: u16, named: Option<&str>| {
            let mut s = kube::core::Status::failure("m", "NotFound").with_code(code);
            s.details =
                named.map(|n| serde_json::from_value(serde_json::json!({"name": n})).unwrap());
            kube::Error::Api(Box::new(s))
        };
        assert!(already_gone(&status(404, Some("r")), "r"));
        assert!(already_gone(&status(409, None), "r"));
        assert!(
            !already_gone(&status(404, None), "r"),
            "404 for a resource not served yet (an API server starting up)"
        );
        assert!(!already_gone(&status(404, Some("other")), "r"));
        assert!(!already_gone(&status(503, None), "r"));
        assert!(!already_gone(&kube::Error::Service("refused".into()), "r"));
    }

    #[test]
    fn names_are_stable_per_issuer_and_jti() {
        let a = issuance_name("https://gitlab.com", "j1");
        assert_eq!(a, issuance_name("https://gitlab.com", "j1"));
        assert_ne!(a, issuance_name("https://gitlab.com", "j2"));
        assert_ne!(a, issuance_name("https://gitlab.example.com", "j1"));
        assert!(binding_issuance_name("https://gitlab.com", "j1").len() <= 63);
        assert!(secret_name("https://gitlab.com", "j1").len() <= 63);
        assert_ne!(
            secret_name("https://gitlab.com", "j1"),
            secret_name("https://gitlab.com", "j2")
        );
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
