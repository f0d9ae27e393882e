//! The issue step of an exchange: the TokenIssuance record, the binding Secret it owns and the bound
//! TokenRequest (`binding::issue`) for the decided grant, the refusal when the cluster will not issue,
//! and revocation at the TTL (deleting the record that owns the Secret).
use std::time::{Duration, SystemTime};

use kube::Client;

use super::audit::AuditRecord;
use super::binding::{self, BindingRecord, IssueError, Issued};
use super::context::Context;
use super::decision::{Denial, ErrorCode};
use super::ttl::Lifetime;
use super::verify::VerifiedJob;
use crate::access::Grant;

/// Issues a token of `grant` to `job` for `life` and records where it lives.
pub async fn issue(
    cx: &Context,
    job: &VerifiedJob,
    grant: &Grant,
    life: Lifetime,
    record: &mut AuditRecord,
) -> Result<Issued, Denial> {
    let application = cx.index.application(&grant.namespace, &grant.application);
    let binding_record = BindingRecord {
        issuer: &job.issuer,
        jti: &job.token.jti,
        trust: &job.trust_name,
        grant,
        application: application.as_deref(),
        project_id: &record.project_id,
        project_path: &record.project_path,
        pipeline_id: &record.pipeline_id,
        job_id: &record.job_id,
        user: &record.user,
        ref_: &record.ref_,
        environment: &record.environment,
        issued_at: SystemTime::now(),
        expires_at: life.expires_at,
        id_token_expires_at: job.token.expires_at,
        correlation_id: &record.correlation_id,
    };
    let issued = binding::issue(&cx.client, &binding_record, life.ttl)
        .await
        .map_err(refusal)?;
    record.service_account = issued.service_account.clone();
    record.binding_secret = issued.secret.clone();
    record.issuance = issued.record.clone();
    revoke_at(cx.client.clone(), &issued, life.ttl);
    Ok(issued)
}

/// Told when the API server did not answer: the request was fine, no token left the exchange.
pub const API_UNAVAILABLE_DESCRIPTION: &str =
    "the cluster's API server is not answering; no token was issued, retry shortly";

/// What the caller is told when issuing failed.
fn refusal(e: IssueError) -> Denial {
    let code = match &e {
        IssueError::Replayed { .. } => ErrorCode::InvalidGrant,
        IssueError::ServiceAccountMissing { .. } => ErrorCode::TemporarilyUnavailable,
        e if e.api_unavailable() => ErrorCode::TemporarilyUnavailable,
        _ => ErrorCode::ServerError,
    };
    let denial = Denial::new(code, e.category(), e.to_string());
    if e.api_unavailable() {
        // The kube error may name internals (addresses, object names): the audit detail keeps it.
        Denial {
            description: API_UNAVAILABLE_DESCRIPTION.into(),
            ..denial
        }
    } else if code == ErrorCode::ServerError {
        // API errors may name internals; the caller gets the correlation id instead.
        Denial {
            description: "the cluster refused to issue the token; quote the correlation id to the cluster operators".into(),
            ..denial
        }
    } else {
        denial
    }
}

/// Revokes at the TTL precisely; the reaper is the backstop across restarts and replicas.
///
/// One task sleeps per live token (36,000 at 120 exchanges/s and 5-minute ID tokens): the delete,
/// whose future holds a whole API request, is boxed when it starts, so a sleeping task holds only
/// the client, the name and the uid rather than room for that request.
fn revoke_at(client: Client, issued: &Issued, ttl: Duration) {
    let (name, uid) = (
        issued.binding_record.clone(),
        issued.binding_record_uid.clone(),
    );
    tokio::spawn(revocation(client, name, uid, ttl));
}

async fn revocation(client: Client, name: String, uid: Option<String>, ttl: Duration) {
    tokio::time::sleep(ttl).await;
    Box::pin(binding::delete_issuance(&client, &name, uid)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sleeping_revocation_holds_no_room_for_its_api_request() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let delete = binding::delete_issuance(&client, "r", None);
        let inline = std::mem::size_of_val(&delete);
        drop(delete);
        let sleeping = std::mem::size_of_val(&revocation(
            client,
            "r".into(),
            None,
            Duration::from_secs(1),
        ));
        eprintln!("delete future {inline} bytes; sleeping revocation {sleeping} bytes");
        assert!(
            sleeping < inline && sleeping <= 512,
            "{sleeping} bytes (the delete alone is {inline})"
        );
    }

    #[test]
    fn the_caller_learns_what_it_can_act_on_and_no_api_internals() {
        let replayed = refusal(IssueError::Replayed {
            record: "oam-trust-issuance-x".into(),
        });
        assert_eq!(
            (replayed.code, replayed.category),
            (ErrorCode::InvalidGrant, "replayed")
        );
        assert!(replayed.description.contains("already exchanged"));
        let missing = refusal(IssueError::ServiceAccountMissing {
            namespace: "team".into(),
            service_account: "sa".into(),
        });
        assert_eq!(missing.code, ErrorCode::TemporarilyUnavailable);
        assert_eq!(missing.description, missing.detail);
        let empty = refusal(IssueError::EmptyToken {
            namespace: "team".into(),
            service_account: "internal-sa".into(),
        });
        assert_eq!(
            (empty.code, empty.category),
            (ErrorCode::ServerError, "token_request_failed")
        );
        assert!(!empty.description.contains("internal-sa"), "{empty:?}");
        assert!(
            empty.detail.contains("internal-sa"),
            "the audit detail keeps it"
        );
    }

    fn api_error(code: u16) -> Box<kube::Error> {
        Box::new(kube::Error::Api(Box::new(
            kube::core::Status::failure("apiserver says no", "Reason").with_code(code),
        )))
    }

    #[test]
    fn an_api_server_that_does_not_answer_is_temporarily_unavailable_a_refusal_is_not() {
        let refused = || kube::Error::Service("tcp connect error: Connection refused".into());
        let cases = [
            (
                IssueError::CreateRecord {
                    record: "r".into(),
                    source: Box::new(refused()),
                },
                ErrorCode::TemporarilyUnavailable,
            ),
            (
                IssueError::CreateSecret {
                    namespace: "team".into(),
                    secret: "s".into(),
                    source: api_error(503),
                },
                ErrorCode::TemporarilyUnavailable,
            ),
            (
                IssueError::TokenRequest {
                    namespace: "team".into(),
                    service_account: "sa".into(),
                    source: api_error(429),
                },
                ErrorCode::TemporarilyUnavailable,
            ),
            (
                IssueError::CreateRecord {
                    record: "r".into(),
                    source: api_error(500),
                },
                ErrorCode::TemporarilyUnavailable,
            ),
            (
                IssueError::CreateSecret {
                    namespace: "team".into(),
                    secret: "s".into(),
                    source: api_error(403),
                },
                ErrorCode::ServerError,
            ),
            (
                IssueError::CreateRecord {
                    record: "r".into(),
                    source: api_error(422),
                },
                ErrorCode::ServerError,
            ),
        ];
        for (error, want) in cases {
            let shown = format!("{error}");
            let denial = refusal(error);
            assert_eq!(denial.code, want, "{shown}");
            assert!(
                !denial.description.contains("apiserver says no"),
                "{denial:?}"
            );
            assert!(
                !denial.description.contains("Connection refused"),
                "{denial:?}"
            );
            assert_eq!(denial.detail, shown, "the audit detail keeps the cause");
        }
    }
}
