//! Token exchange end to end: the real API server, the operator (grant RBAC), a dev issuer over HTTPS and
//! the exchange service over TLS on 127.0.0.1. A job token for the declared project, ref and
//! environment gets a token that does exactly the grant's job; each refusal class gets its own error and
//! audit record and issues nothing; tokens expire with the grant's TTL and are revoked with their binding
//! Secret or their Application.
mod federation_support;
mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use federation_support::{AUD, Declarations, World, jti, refusal, world};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use oam_trust::api::oam::Application;
use oam_trust::dev_issuer::{DevIssuer, DevIssuerOptions, KeyKind, MintAlgorithm, MintRequest};
use oam_trust::federation::binding::secret_name;
use oam_trust::federation::decision::UNAUTHENTICATED_DESCRIPTION;
use oam_trust::federation::{MemoryAuditSink, Outcome};
use serde_json::{Value, json};
use support::Access;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn can(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    ns: &str,
    name: Option<&str>,
) -> bool {
    support::can_i(
        client,
        Access {
            verb,
            group,
            resource,
            namespace: Some(ns),
            name,
        },
    )
    .await
}

/// Whether the API server still accepts `token` (SelfSubjectReview).
async fn token_works(token: &str) -> bool {
    support::whoami(&support::client_with_token(token).await)
        .await
        .is_ok()
}

#[tokio::test]
async fn a_deploy_job_gets_a_token_that_does_exactly_the_grants_job() {
    let w = world("exchange-ok", Declarations::default()).await;
    let token = w.issuer.mint(&MintRequest::new()).unwrap();
    let minted_exp = now() + 300;
    let answer = w
        .exchange(&token, None)
        .await
        .expect("the deploy job gets a token");

    assert_eq!(answer.token_type, "Bearer");
    assert_eq!(
        answer.issued_token_type,
        "urn:ietf:params:oauth:token-type:access_token"
    );
    // Grant TTL 10m, but the ID token lives 5 minutes: never beyond its exp.
    assert!(
        answer.expires_in <= 300 && answer.expires_in >= 290,
        "{}",
        answer.expires_in
    );
    assert!(now() + answer.expires_in as i64 <= minted_exp + 1);
    assert_eq!(answer.grant.application, "shop");
    assert_eq!(answer.grant.namespace, w.ns);
    assert_eq!(answer.grant.grant, "policy/deploy");
    assert!(answer.kubeconfig.contains(&answer.access_token));
    assert!(answer.kubeconfig.contains(&format!("namespace: {}", w.ns)));

    // The binding Secret exists, labelled with the job, and holds nothing.
    let secret = Api::<Secret>::namespaced(w.admin.clone(), &w.ns)
        .get(&secret_name(w.issuer.url(), &jti(&token).unwrap()))
        .await
        .expect("binding Secret");
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["oam-trust.dev/gitlab-project-id"], "1450");
    assert!(labels.contains_key("oam-trust.dev/gitlab-job-id"));
    assert!(labels.contains_key("oam-trust.dev/gitlab-pipeline-id"));
    assert!(secret.data.is_none() && secret.string_data.is_none());

    // Exactly the grant's job: the grant's ServiceAccount, patch this Application, nothing else.
    let job = support::client_with_token(&answer.access_token).await;
    let (user, _) = support::whoami(&job).await.unwrap();
    assert_eq!(
        user,
        format!(
            "system:serviceaccount:{}:{}",
            w.ns, answer.grant.service_account
        )
    );
    let ns = w.ns.as_str();
    assert!(
        can(
            &job,
            "patch",
            "core.oam.dev",
            "applications",
            ns,
            Some("shop")
        )
        .await
    );
    assert!(can(&job, "get", "apps", "deployments", ns, Some("web")).await);
    assert!(
        !can(
            &job,
            "patch",
            "core.oam.dev",
            "applications",
            ns,
            Some("other")
        )
        .await
    );
    assert!(
        !can(
            &job,
            "delete",
            "core.oam.dev",
            "applications",
            ns,
            Some("shop")
        )
        .await
    );
    assert!(!can(&job, "get", "", "secrets", ns, None).await);
    assert!(!can(&job, "delete", "apps", "deployments", ns, Some("web")).await);
    assert!(!can(&job, "create", "", "serviceaccounts/token", ns, None).await);
    assert!(
        !can(
            &job,
            "get",
            "core.oam.dev",
            "applications",
            "default",
            Some("shop")
        )
        .await
    );
    let apps: Api<Application> = Api::namespaced(job.clone(), ns);
    let current = apps
        .get("shop")
        .await
        .expect("the deploy grant reads its Application");
    let patched = oam_trust::set_image::patch_images(
        &job,
        &current,
        &[("web".to_string(), "nginx:1.28".to_string())],
    )
    .await
    .expect("the deploy grant sets an image");
    assert_eq!(
        patched.spec.components[0].properties.as_ref().unwrap()["image"],
        "nginx:1.28"
    );
    assert!(
        apps.patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"deployed-by": "job"}}})),
        )
        .await
        .is_err(),
        "the deploy grant changes images only"
    );
    let other = support::client_with_token(&answer.access_token).await;
    assert!(
        Api::<Secret>::namespaced(other, ns)
            .list(&Default::default())
            .await
            .is_err(),
        "the deploy token must not list Secrets"
    );

    // Audited, without the token.
    let record = w.sink.find(&answer.correlation_id).expect("audit record");
    assert_eq!(record.outcome, Some(Outcome::Issued));
    assert_eq!(record.reason, "ok");
    assert_eq!(record.trust, w.trust);
    assert_eq!(record.application, "shop");
    assert_eq!(record.grant, "policy/deploy");
    assert_eq!(record.project_id, "1450");
    assert_eq!(record.ref_, "main");
    assert_eq!(record.environment, "production");
    assert_eq!(record.user, "alice");
    assert_eq!(record.jti, jti(&token).unwrap());
    assert!(!record.job_id.is_empty() && !record.pipeline_id.is_empty());
    let line = serde_json::to_string(&record).unwrap();
    assert!(!line.contains(&token) && !line.contains(&answer.access_token));

    // A Kubernetes Event on the Application records the issue.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(w.admin.clone(), ns);
    let recorded = support::eventually(Duration::from_secs(15), || {
        let events = events.clone();
        async move {
            events.list(&Default::default()).await.is_ok_and(|l| {
                l.items.iter().any(|e| {
                    e.reason.as_deref() == Some("TokenIssued")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("shop")
                })
            })
        }
    })
    .await;
    assert!(recorded, "a TokenIssued Event on the Application");

    // A component grant picked by resource among several that match.
    let reader = w
        .issuer
        .mint(
            &MintRequest::new()
                .claim("project_id", "1451")
                .claim("job_project_id", "1451"),
        )
        .unwrap();
    let web = w
        .exchange(&reader, Some(&format!("{ns}/shop/web")))
        .await
        .expect("resource picks the component grant");
    assert_eq!(web.grant.component.as_deref(), Some("web"));
}

struct Case {
    name: &'static str,
    token: String,
    resource: Option<String>,
    error: &'static str,
    reason: &'static str,
    /// Substring of the description; `None`: the fixed description of anonymous callers.
    says: Option<String>,
}

#[tokio::test]
async fn every_refusal_class_gets_its_own_error_and_audit_record_and_issues_nothing() {
    let w = world("exchange-deny", Declarations::default()).await;
    let ns = w.ns.clone();
    let mint = |req: MintRequest| w.issuer.mint(&req).unwrap();
    let t = now();
    let valid = mint(MintRequest::new());
    let mut bad_signature = valid.clone();
    {
        // Change one signature character in the middle (the last one may only carry padding bits).
        let cut = bad_signature.rfind('.').unwrap() + 10;
        let c = bad_signature.as_bytes()[cut];
        let replacement = if c == b'A' { "B" } else { "A" };
        bad_signature.replace_range(cut..cut + 1, replacement);
    }
    let stranger = DevIssuer::start(DevIssuerOptions {
        audience: AUD.into(),
        ..DevIssuerOptions::default()
    })
    .await
    .unwrap();

    let cases = vec![
        Case {
            name: "expired",
            token: mint(
                MintRequest::new()
                    .claim_json("iat", json!(t - 600))
                    .claim_json("nbf", json!(t - 605))
                    .claim_json("exp", json!(t - 120)),
            ),
            resource: None,
            error: "invalid_grant",
            reason: "expired",
            says: Some("expired".into()),
        },
        Case {
            name: "not yet valid",
            token: mint(
                MintRequest::new()
                    .claim_json("nbf", json!(t + 600))
                    .claim_json("exp", json!(t + 900)),
            ),
            resource: None,
            error: "invalid_grant",
            reason: "not_yet_valid",
            says: Some("not valid before".into()),
        },
        Case {
            name: "wrong audience",
            token: mint(MintRequest::new().audience("https://vault.example.com")),
            resource: None,
            error: "invalid_grant",
            reason: "wrong_audience",
            says: Some(AUD.into()),
        },
        Case {
            name: "unknown issuer",
            token: stranger.mint(&MintRequest::new()).unwrap(),
            resource: None,
            error: "invalid_grant",
            reason: "unknown_issuer",
            says: None,
        },
        Case {
            name: "bad signature",
            token: bad_signature,
            resource: None,
            error: "invalid_grant",
            reason: "bad_signature",
            says: None,
        },
        Case {
            name: "alg none",
            token: mint(MintRequest::new().alg(MintAlgorithm::None)),
            resource: None,
            error: "invalid_grant",
            reason: "unsupported_algorithm",
            says: None,
        },
        Case {
            name: "HS256 signed with the public key",
            token: mint(MintRequest::new().alg(MintAlgorithm::Hs256PublicKey)),
            resource: None,
            error: "invalid_grant",
            reason: "unsupported_algorithm",
            says: None,
        },
        Case {
            name: "unknown kid",
            token: mint(MintRequest::new().kid("not-a-published-key")),
            resource: None,
            error: "invalid_grant",
            reason: "unknown_key",
            says: None,
        },
        Case {
            name: "unprotected ref",
            token: mint(
                MintRequest::new()
                    .claim("ref", "feature/x")
                    .claim("ref_protected", "false"),
            ),
            resource: None,
            error: "access_denied",
            reason: "ref_not_protected",
            says: Some("protected ref".into()),
        },
        Case {
            name: "wrong environment",
            token: mint(MintRequest::new().claim("environment", "staging")),
            resource: None,
            error: "access_denied",
            reason: "no_matching_grant",
            says: Some("token has \"staging\"".into()),
        },
        Case {
            name: "unprotected environment",
            token: mint(MintRequest::new().claim("environment_protected", "false")),
            resource: None,
            error: "access_denied",
            reason: "no_matching_grant",
            says: Some("environmentProtected".into()),
        },
        Case {
            name: "fork pipeline",
            token: mint(
                MintRequest::new()
                    .claim("project_id", "9999")
                    .claim("project_path", "mallory/payments-api")
                    .claim("job_project_path", "platform/payments-api")
                    .claim("pipeline_source", "merge_request_event"),
            ),
            resource: None,
            error: "access_denied",
            reason: "fork_pipeline",
            says: Some("fork".into()),
        },
        Case {
            name: "oversized token",
            token: format!(
                "{}.{}.{}",
                "e".repeat(8000),
                "f".repeat(9000),
                "g".repeat(100)
            ),
            resource: None,
            error: "invalid_request",
            reason: "too_large",
            says: Some("byte limit".into()),
        },
        Case {
            name: "missing CI claims",
            token: mint(
                MintRequest::new()
                    .claim_json("job_id", Value::Null)
                    .claim_json("pipeline_id", Value::Null),
            ),
            resource: None,
            error: "invalid_grant",
            reason: "missing_ci_claims",
            says: Some("job_id".into()),
        },
        Case {
            name: "ambiguous target",
            token: mint(
                MintRequest::new()
                    .claim("project_id", "1451")
                    .claim("job_project_id", "1451"),
            ),
            resource: None,
            error: "invalid_target",
            reason: "ambiguous",
            says: Some(format!("{ns}/shop, {ns}/shop/web")),
        },
        Case {
            name: "unknown resource",
            token: mint(MintRequest::new()),
            resource: Some(format!("{ns}/nope")),
            error: "invalid_target",
            reason: "unknown_resource",
            says: Some("nope".into()),
        },
    ];

    let mut reasons = std::collections::BTreeSet::new();
    for case in &cases {
        let body = refusal(w.exchange(&case.token, case.resource.as_deref()).await);
        assert_eq!(body.error, case.error, "{}: {body:?}", case.name);
        match &case.says {
            Some(text) => assert!(
                body.error_description.contains(text.as_str()),
                "{}: description {:?} should say {text:?}",
                case.name,
                body.error_description
            ),
            None => assert_eq!(
                body.error_description, UNAUTHENTICATED_DESCRIPTION,
                "{}: an anonymous caller learns nothing specific",
                case.name
            ),
        }
        let record = w.sink.find(&body.correlation_id).unwrap_or_else(|| {
            panic!("{}: no audit record for {}", case.name, body.correlation_id)
        });
        assert_eq!(record.outcome, Some(Outcome::Denied), "{}", case.name);
        assert_eq!(record.reason, case.reason, "{}: {record:?}", case.name);
        assert!(!record.detail.is_empty(), "{}", case.name);
        let line = serde_json::to_string(&record).unwrap();
        assert!(
            !line.contains(&case.token),
            "{}: the audit record holds the token",
            case.name
        );
        if let Some(jti) = jti(&case.token) {
            let issuer = if case.name == "unknown issuer" {
                stranger.url()
            } else {
                w.issuer.url()
            };
            let found = Api::<Secret>::namespaced(w.admin.clone(), &ns)
                .get_opt(&secret_name(issuer, &jti))
                .await
                .unwrap();
            assert!(
                found.is_none(),
                "{}: a binding Secret was created",
                case.name
            );
        }
        reasons.insert(case.reason);
    }
    // Limits come first: a body over the limit is refused before it is read.
    match w.client.post_form(vec![b'a'; 80 * 1024]).await {
        Err(oam_trust::federation::client::ExchangeCallError::Refused { status, body }) => {
            assert_eq!(status, 413);
            assert_eq!(body.error, "invalid_request");
            assert_eq!(
                w.sink.find(&body.correlation_id).unwrap().reason,
                "body_too_large"
            );
            reasons.insert("body_too_large");
        }
        other => panic!("an 80 KiB body must be refused with 413: {other:?}"),
    }
    assert!(
        w.binding_secrets().await.is_empty(),
        "no refusal issues anything"
    );

    // Unknown kid, then the issuer rotates: the new key is fetched and the token accepted. Refetches
    // are rate limited (200 ms in this harness) and the refusal cases above may have just used one.
    // A refusal does not consume the ID token, so it is retried until the refetch limit allows.
    let new_kid = w.issuer.rotate_key(KeyKind::Rsa).unwrap();
    let rotated = mint(MintRequest::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let answer = loop {
        match w.exchange(&rotated, None).await {
            Ok(answer) => break answer,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("not accepted within 10 s of the rotation: {e}"),
        }
    };
    assert_eq!(answer.grant.grant, "policy/deploy");
    assert!(!new_kid.is_empty());

    // Replay: on the same instance, and on a second instance (another replica).
    let body = refusal(w.exchange(&rotated, None).await);
    assert_eq!(body.error, "invalid_grant");
    assert!(
        body.error_description.contains("already exchanged"),
        "{body:?}"
    );
    assert_eq!(
        w.sink.find(&body.correlation_id).unwrap().reason,
        "replayed"
    );
    let second_sink = Arc::new(MemoryAuditSink::default());
    let second =
        federation_support::start_exchange(&w.admin, w.tls_dir.path(), second_sink.clone()).await;
    federation_support::wait_ready(&second, &w.exchange_ca).await;
    let second_client =
        oam_trust::federation::client::ExchangeClient::new(&second.url(), Some(&w.exchange_ca))
            .unwrap();
    let body = refusal(second_client.exchange(&rotated, None, None).await);
    assert_eq!(body.error, "invalid_grant");
    assert!(
        body.error_description.contains("already exchanged"),
        "{body:?}"
    );
    assert_eq!(
        second_sink.find(&body.correlation_id).unwrap().reason,
        "replayed"
    );
    assert_eq!(
        w.binding_secrets().await.len(),
        1,
        "one exchange, one binding Secret"
    );
    reasons.insert("replayed");
    assert_eq!(
        reasons,
        std::collections::BTreeSet::from([
            "ambiguous",
            "bad_signature",
            "body_too_large",
            "expired",
            "fork_pipeline",
            "missing_ci_claims",
            "no_matching_grant",
            "not_yet_valid",
            "ref_not_protected",
            "replayed",
            "too_large",
            "unknown_issuer",
            "unknown_key",
            "unknown_resource",
            "unsupported_algorithm",
            "wrong_audience",
        ]),
        "every refusal class is tried"
    );
}

#[tokio::test]
async fn a_two_minute_grant_is_revoked_after_two_minutes_and_never_outlives_the_id_token() {
    let w = world("exchange-ttl", Declarations { deploy_ttl: "2m" }).await;

    // The ID token lives 60 s: the answer never goes beyond it.
    let short = w
        .issuer
        .mint(&MintRequest::new().lifetime(Duration::from_secs(60)))
        .unwrap();
    let answer = w.exchange(&short, None).await.unwrap();
    assert!(answer.expires_in <= 60, "{}", answer.expires_in);

    let token = w
        .issuer
        .mint(&MintRequest::new().lifetime(Duration::from_secs(900)))
        .unwrap();
    let issued_at = std::time::Instant::now();
    let answer = w.exchange(&token, None).await.unwrap();
    assert!(
        (115..=120).contains(&answer.expires_in),
        "grant TTL 2m: expires_in {}",
        answer.expires_in
    );
    // Valid throughout its TTL: checked every few seconds up to 100 s after issue.
    while issued_at.elapsed() < Duration::from_secs(100) {
        assert!(
            token_works(&answer.access_token).await,
            "still valid before its TTL ({:?} after issue)",
            issued_at.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    // Revoked at ~120 s by deleting the binding Secret; allow the API server's 10 s token cache.
    let revoked = support::eventually(Duration::from_secs(45), || async {
        !token_works(&answer.access_token).await
    })
    .await;
    let took = issued_at.elapsed();
    assert!(revoked, "the token still works {took:?} after issue");
    assert!(
        took >= Duration::from_secs(118) && took <= Duration::from_secs(150),
        "revoked after {took:?}"
    );
    let secrets = Api::<Secret>::namespaced(w.admin.clone(), &w.ns);
    let bound =
        oam_trust::federation::binding::token_secret_name(w.issuer.url(), &jti(&token).unwrap());
    assert!(
        secrets.get_opt(&bound).await.unwrap().is_none(),
        "the reaper deleted the Secret the token was bound to"
    );
    // The ID token still lives (15 min): its replay guard outlives the token, so it cannot be
    // exchanged again.
    let guard = secret_name(w.issuer.url(), &jti(&token).unwrap());
    assert!(
        secrets.get_opt(&guard).await.unwrap().is_some(),
        "the replay guard stays until the ID token's exp"
    );
    let body = refusal(w.exchange(&token, None).await);
    assert_eq!(body.error, "invalid_grant");
    assert!(
        body.error_description.contains("already exchanged"),
        "{body:?}"
    );
}

#[tokio::test]
async fn deleting_the_binding_secret_or_the_application_revokes_the_token() {
    let w: World = world("exchange-revoke", Declarations::default()).await;
    let first = w.issuer.mint(&MintRequest::new()).unwrap();
    let second = w.issuer.mint(&MintRequest::new()).unwrap();
    let a = w.exchange(&first, None).await.unwrap();
    let b = w.exchange(&second, None).await.unwrap();
    assert!(token_works(&a.access_token).await && token_works(&b.access_token).await);

    Api::<Secret>::namespaced(w.admin.clone(), &w.ns)
        .delete(
            &secret_name(w.issuer.url(), &jti(&first).unwrap()),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    let revoked = support::eventually(Duration::from_secs(30), || async {
        !token_works(&a.access_token).await
    })
    .await;
    assert!(revoked, "deleting the binding Secret revokes the token");
    assert!(
        token_works(&b.access_token).await,
        "the other token is unaffected"
    );

    Api::<Application>::namespaced(w.admin.clone(), &w.ns)
        .delete("shop", &DeleteParams::foreground())
        .await
        .unwrap();
    let revoked = support::eventually(Duration::from_secs(60), || async {
        !token_works(&b.access_token).await
    })
    .await;
    assert!(revoked, "deleting the Application revokes its tokens");
}
