//! Token exchange end to end: the real API server, the operator (grant RBAC), a dev issuer over HTTPS and
//! the exchange service over TLS on 127.0.0.1. A job token for the declared project, ref and
//! environment gets a token that does exactly the grant's job; each refusal class gets its own error and
//! audit record and issues nothing; one ID token is one token across every namespace and replica (its
//! TokenIssuance is the replay guard); tokens expire with the grant's TTL and are revoked with their
//! TokenIssuance, their binding Secret or their Application; the audit log holds every record whatever
//! the log level.
mod federation_support;
mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use federation_support::{AUD, Declarations, World, jti, refusal, world};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use oam_trust::api::issuance::TokenIssuance;
use oam_trust::api::oam::Application;
use oam_trust::dev_issuer::{DevIssuer, DevIssuerOptions, KeyKind, MintAlgorithm, MintRequest};
use oam_trust::federation::binding::{binding_issuance_name, issuance_name, secret_name};
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

/// Runs the control plane's kubectl against the test cluster; its stdout.
async fn kubectl(args: &[&str]) -> String {
    let bin = std::env::var("OAM_TRUST_BIN")
        .map(|d| std::path::Path::new(&d).join("kubectl"))
        .ok()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "kubectl".into());
    let out = tokio::process::Command::new(bin)
        .arg("--kubeconfig")
        .arg(support::kubeconfig_path().await)
        .args(args)
        .output()
        .await
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
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

    // The TokenIssuance (cluster-scoped, named from iss + jti) is the audit record and owns the Secret.
    let jti_ = jti(&token).unwrap();
    let record = Api::<TokenIssuance>::all(w.admin.clone())
        .get(&issuance_name(w.issuer.url(), &jti_))
        .await
        .expect("the TokenIssuance of the exchange");
    let audit = w
        .sink
        .records()
        .into_iter()
        .find(|r| r.jti == jti_ && r.outcome == Some(Outcome::Issued))
        .expect("the audit record of the issue");
    let spec = &record.spec;
    let expected = [
        ("role", "replay-guard,token-binding"),
        ("trust", w.trust.as_str()),
        ("issuer", w.issuer.url()),
        ("jti", jti_.as_str()),
        ("namespace", w.ns.as_str()),
        ("application", "shop"),
        ("grantId", "policy/deploy"),
        ("serviceAccount", answer.grant.service_account.as_str()),
        ("bindingSecret", secret.metadata.name.as_deref().unwrap()),
        ("projectId", "1450"),
        ("pipelineId", audit.pipeline_id.as_str()),
        ("jobId", audit.job_id.as_str()),
        ("user", "alice"),
        ("ref", "main"),
        ("environment", "production"),
        ("correlationId", audit.correlation_id.as_str()),
    ];
    let json = serde_json::to_value(spec).unwrap();
    let got: Vec<(&str, &str)> = expected
        .iter()
        .map(|(k, _)| (*k, json[*k].as_str().unwrap_or("<absent>")))
        .collect();
    assert_eq!(got, expected.to_vec());
    assert!(!audit.pipeline_id.is_empty() && !audit.job_id.is_empty());
    assert_eq!(audit.issuance, record.metadata.name.clone().unwrap());
    let app_uid = Api::<Application>::namespaced(w.admin.clone(), &w.ns)
        .get("shop")
        .await
        .unwrap()
        .metadata
        .uid;
    assert_eq!(Some(spec.application_uid.clone()), app_uid);
    let at = |t: &str| {
        t.parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap()
            .as_second()
    };
    assert_eq!(
        spec.expires_at, spec.token_expires_at,
        "one record: it goes with the token"
    );
    let issued = at(&spec.issued_at);
    assert!((now() - 30..=now()).contains(&issued), "{}", spec.issued_at);
    assert!((at(&spec.expires_at) - issued - answer.expires_in as i64).abs() <= 2);
    let owners: Vec<(String, String, String)> = secret
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|o| (o.kind, o.name, o.uid))
        .collect();
    assert_eq!(
        owners,
        vec![(
            "TokenIssuance".to_string(),
            record.metadata.name.clone().unwrap(),
            record.metadata.uid.clone().unwrap()
        )],
        "the binding Secret is owned by its record, and by nothing else"
    );
    // `kubectl get tokenissuances` is the audit trail: the record, with its columns.
    let table = kubectl(&["get", "tokenissuances", "-o", "wide"]).await;
    let header = table.lines().next().unwrap_or_default().to_string();
    for column in [
        "NAME",
        "NAMESPACE",
        "APPLICATION",
        "SERVICEACCOUNT",
        "PROJECT",
        "JOB",
        "USER",
        "REF",
        "ROLE",
        "TRUST",
        "GRANT",
        "PIPELINE",
        "ENVIRONMENT",
        "CORRELATION",
        "ISSUED",
        "EXPIRES",
    ] {
        assert!(
            header.split_whitespace().any(|c| c == column),
            "no {column} column: {header}"
        );
    }
    let row = table
        .lines()
        .find(|l| l.starts_with(record.metadata.name.as_deref().unwrap()))
        .unwrap_or_else(|| panic!("the record is not listed:\n{table}"));
    for value in [
        w.ns.as_str(),
        "shop",
        "1450",
        "alice",
        "main",
        "policy/deploy",
        "production",
        audit.correlation_id.as_str(),
    ] {
        assert!(
            row.split_whitespace().any(|c| c == value),
            "{value} missing from {row}"
        );
    }
    // An audit record cannot be edited, not even by an administrator: only deleted (which revokes).
    let edit = Api::<TokenIssuance>::all(w.admin.clone())
        .patch(
            record.metadata.name.as_deref().unwrap(),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"user": "mallory"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&edit, kube::Error::Api(s) if s.code == 422),
        "{edit}"
    );

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
            let record = Api::<TokenIssuance>::all(w.admin.clone())
                .get_opt(&issuance_name(issuer, &jti))
                .await
                .unwrap();
            assert!(
                record.is_none(),
                "{}: a TokenIssuance was created",
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
        w.binding_secrets().await.is_empty() && w.issuances().await.is_empty(),
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
    assert_eq!(
        w.issuances().await.len(),
        1,
        "one exchange, one TokenIssuance"
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
    let w = world(
        "exchange-ttl",
        Declarations {
            deploy_ttl: "2m",
            ..Declarations::default()
        },
    )
    .await;

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
    let records = Api::<TokenIssuance>::all(w.admin.clone());
    let jti_ = jti(&token).unwrap();
    assert!(
        records
            .get_opt(&binding_issuance_name(w.issuer.url(), &jti_))
            .await
            .unwrap()
            .is_none(),
        "the record owning the Secret the token was bound to is deleted at the TTL"
    );
    let secrets = Api::<Secret>::namespaced(w.admin.clone(), &w.ns);
    let gone = support::eventually(Duration::from_secs(30), || async {
        secrets
            .get_opt(&secret_name(w.issuer.url(), &jti_))
            .await
            .unwrap()
            .is_none()
    })
    .await;
    assert!(
        gone,
        "the garbage collector deleted the binding Secret with its record"
    );
    // The ID token still lives (15 min): its replay guard outlives the token, so it cannot be
    // exchanged again.
    let guard = records
        .get_opt(&issuance_name(w.issuer.url(), &jti_))
        .await
        .unwrap()
        .expect("the replay guard stays until the ID token's exp");
    assert_eq!(guard.spec.role, "replay-guard");
    assert!(
        guard.spec.expires_at > guard.spec.token_expires_at,
        "{:?}",
        guard.spec
    );
    let body = refusal(w.exchange(&token, None).await);
    assert_eq!(body.error, "invalid_grant");
    assert!(
        body.error_description.contains("already exchanged"),
        "{body:?}"
    );
}

#[tokio::test]
async fn deleting_the_record_the_binding_secret_or_the_application_revokes_the_token() {
    let w: World = world("exchange-revoke", Declarations::default()).await;
    let first = w.issuer.mint(&MintRequest::new()).unwrap();
    let second = w.issuer.mint(&MintRequest::new()).unwrap();
    let third = w.issuer.mint(&MintRequest::new()).unwrap();
    let a = w.exchange(&first, None).await.unwrap();
    let b = w.exchange(&second, None).await.unwrap();
    let c = w.exchange(&third, None).await.unwrap();
    assert!(
        token_works(&a.access_token).await
            && token_works(&b.access_token).await
            && token_works(&c.access_token).await
    );

    // `kubectl delete tokenissuance`: the collector deletes the Secret, the API server the token.
    let records = Api::<TokenIssuance>::all(w.admin.clone());
    records
        .delete(
            &issuance_name(w.issuer.url(), &jti(&first).unwrap()),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    let revoked = support::eventually(Duration::from_secs(45), || async {
        !token_works(&a.access_token).await
    })
    .await;
    assert!(revoked, "deleting the TokenIssuance revokes the token");
    let secrets = Api::<Secret>::namespaced(w.admin.clone(), &w.ns);
    assert!(
        secrets
            .get_opt(&secret_name(w.issuer.url(), &jti(&first).unwrap()))
            .await
            .unwrap()
            .is_none(),
        "the binding Secret went with its record"
    );
    secrets
        .delete(
            &secret_name(w.issuer.url(), &jti(&third).unwrap()),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    let revoked = support::eventually(Duration::from_secs(45), || async {
        !token_works(&c.access_token).await
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
    // Its records cannot be owned by it (cluster-scoped); the reaper deletes them once it is gone.
    let cleaned = support::eventually(Duration::from_secs(30), || async {
        w.issuances().await.is_empty()
    })
    .await;
    assert!(
        cleaned,
        "records outlived their Application: {:?}",
        w.issuances().await
    );
}

#[tokio::test]
async fn one_id_token_is_one_token_across_namespaces() {
    let w = world("exchange-replay-ns", Declarations::default()).await;
    // A second namespace the same trust selects, with an Application declaring the same job.
    let other = support::app_namespace(&w.admin, "exchange-replay-ns2", "admin").await;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(w.admin.clone())
        .patch(
            &other,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"oam-trust.dev/exchange-test": w.ns}}})),
        )
        .await
        .unwrap();
    let app: Application = serde_json::from_value(json!({
        "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
        "metadata": {"name": "shop2", "namespace": other},
        "spec": {
            "components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx:1.27", "port": 80}}],
            "policies": [{"name": "deploy", "type": "gitlab-access", "properties": {
                "trust": w.trust,
                "subjects": [{"projectId": "1450", "ref": "main", "environment": "production", "environmentProtected": true}],
                "access": "deploy", "ttl": "10m"}}]
        }
    }))
    .unwrap();
    Api::<Application>::namespaced(w.admin.clone(), &other)
        .create(&Default::default(), &app)
        .await
        .unwrap();
    federation_support::wait_for_grants(&w.admin, &other, 1).await;
    let here = format!("{}/shop", w.ns);
    let there = format!("{other}/shop2");

    // The attacker's move: exchange the job's ID token once per namespace that would accept it.
    let token = w.issuer.mint(&MintRequest::new()).unwrap();
    let first = w.exchange(&token, Some(&here)).await.unwrap();
    assert_eq!(first.grant.namespace, w.ns);
    // A fresh ID token gets the other namespace's grant (once the exchange has seen it), so the
    // refusal below is the replay guard and nothing else.
    let fresh = w.issuer.mint(&MintRequest::new()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let elsewhere = loop {
        match w.exchange(&fresh, Some(&there)).await {
            Ok(a) => break a,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("a fresh ID token did not get {there}: {e}"),
        }
    };
    assert_eq!(elsewhere.grant.namespace, other);
    let body = refusal(w.exchange(&token, Some(&there)).await);
    assert_eq!(body.error, "invalid_grant", "{body:?}");
    assert!(
        body.error_description.contains("already exchanged"),
        "{body:?}"
    );
    assert_eq!(
        w.sink.find(&body.correlation_id).unwrap().reason,
        "replayed"
    );
    // Nothing was issued in the other namespace for the replayed ID token.
    let secrets = Api::<Secret>::namespaced(w.admin.clone(), &other);
    assert!(
        secrets
            .get_opt(&secret_name(w.issuer.url(), &jti(&token).unwrap()))
            .await
            .unwrap()
            .is_none()
    );
    let record = Api::<TokenIssuance>::all(w.admin.clone())
        .get(&issuance_name(w.issuer.url(), &jti(&token).unwrap()))
        .await
        .unwrap();
    assert_eq!(
        record.spec.namespace, w.ns,
        "the record still names the first grant"
    );
}

/// A `Write` into shared memory: what a subscriber printed.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_audit_log_holds_every_record_with_the_log_level_at_warn() {
    // The log level an operator might set in production; the test's runtime is single-threaded, so
    // this subscriber sees every event of the exchange service.
    let logs = Captured::default();
    let writer = logs.clone();
    let _quiet = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let w = world("exchange-audit", Declarations::default()).await;
    let issued = w
        .exchange(&w.issuer.mint(&MintRequest::new()).unwrap(), None)
        .await
        .unwrap();
    let replayable = w.issuer.mint(&MintRequest::new()).unwrap();
    w.exchange(&replayable, None).await.unwrap();
    refusal(w.exchange(&replayable, None).await);
    refusal(w.exchange("not-a-jwt", None).await);
    let stranger = w
        .issuer
        .mint(&MintRequest::new().claim("environment", "staging"))
        .unwrap();
    refusal(w.exchange(&stranger, None).await);

    // Every record the exchange made is in the audit log, with its outcome, exactly once.
    let from_sink: std::collections::BTreeSet<(String, String)> = w
        .sink
        .records()
        .iter()
        .map(|r| (r.correlation_id.clone(), r.reason.clone()))
        .collect();
    let lines = w.audit_log();
    let from_log: std::collections::BTreeSet<(String, String)> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["target"], oam_trust::federation::AUDIT_TARGET);
            (
                l["correlation_id"].as_str().unwrap().to_string(),
                l["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert_eq!(from_log, from_sink);
    let reasons: Vec<&str> = from_log.iter().map(|(_, r)| r.as_str()).collect();
    for reason in ["ok", "replayed", "malformed", "no_matching_grant"] {
        assert!(
            reasons.contains(&reason),
            "{reason} not audited: {reasons:?}"
        );
    }
    let issue_line = lines
        .iter()
        .find(|l| l["outcome"] == "issued" && l["grant"] == issued.grant.grant)
        .unwrap();
    assert!(
        issue_line["issuance"]
            .as_str()
            .is_some_and(|n| n.starts_with("oam-trust-issuance-"))
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.to_string().contains(&issued.access_token)),
        "the audit log never holds a token"
    );
    // …while the log itself, at warn, carried none of them.
    let printed = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!printed.contains("token exchange issued"), "{printed}");
}
