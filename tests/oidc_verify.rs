//! ID-token verification and the key cache, against the dev issuer over real HTTPS on loopback.
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oam_trust::api::trust::{GitLabTrust, GitLabTrustSpec, JwksSource, Requirements};
use oam_trust::dev_issuer::{DevIssuer, DevIssuerOptions, KeyKind, MintAlgorithm, MintRequest};
use oam_trust::oidc::verify::{CLOCK_LEEWAY, MAX_TOKEN_BYTES};
use oam_trust::oidc::{
    KeyCache, KeyCacheConfig, KeySet, KeySource, SigningAlgorithm, VerifyError, verify,
};
use serde_json::{Value, json};

const AUD: &str = "https://k8s.test.example";

async fn issuer() -> DevIssuer {
    DevIssuer::start(DevIssuerOptions {
        audience: AUD.into(),
        ..DevIssuerOptions::default()
    })
    .await
    .expect("dev issuer starts")
}

fn spec(issuer: &DevIssuer) -> GitLabTrustSpec {
    GitLabTrustSpec {
        issuer: issuer.url().into(),
        audiences: vec![AUD.into()],
        jwks: Some(JwksSource {
            ca_bundle: Some(issuer.ca_pem().into()),
            ..JwksSource::default()
        }),
        ..GitLabTrustSpec::default()
    }
}

fn trust(issuer: &DevIssuer) -> GitLabTrust {
    GitLabTrust::new("gitlab-test", spec(issuer))
}

fn keys(issuer: &DevIssuer) -> KeySet {
    KeySet::from_jwks_json(issuer.jwks_json().as_bytes()).unwrap()
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn unix_now() -> u64 {
    now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn refuse(issuer: &DevIssuer, req: MintRequest) -> VerifyError {
    let token = issuer.mint(&req).unwrap();
    verify(&token, &trust(issuer), &keys(issuer), now()).unwrap_err()
}

fn cache_with_interval(issuer: &DevIssuer, refetch_interval: Duration) -> KeyCache {
    KeyCache::new(
        KeySource::from_spec(&spec(issuer)),
        KeyCacheConfig {
            refetch_interval,
            ..KeyCacheConfig::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn accepts_rs256_and_es256_tokens() {
    let issuer = issuer().await;
    for (kind, alg) in [
        (KeyKind::Rsa, SigningAlgorithm::RS256),
        (KeyKind::Ec, SigningAlgorithm::ES256),
    ] {
        let token = issuer.mint(&MintRequest::new().key(kind)).unwrap();
        let verified = verify(&token, &trust(&issuer), &keys(&issuer), now()).unwrap();
        assert_eq!(verified.alg, alg);
        assert_eq!(verified.header_kid, Some(issuer.kid(kind)));
        assert_eq!(verified.claims["project_id"], "1450");
        assert_eq!(verified.claims["ref_protected"], "true");
        assert_eq!(Some(verified.jti.as_str()), verified.claims["jti"].as_str());
        assert_eq!(
            verified
                .expires_at
                .duration_since(verified.issued_at)
                .unwrap(),
            Duration::from_secs(300)
        );
    }
    // aud as an array containing one accepted audience.
    let token = issuer
        .mint(&MintRequest {
            aud: Some(json!(["https://vault.example", AUD])),
            ..MintRequest::new()
        })
        .unwrap();
    verify(&token, &trust(&issuer), &keys(&issuer), now()).unwrap();
}

#[tokio::test]
async fn rejects_expired_not_yet_valid_and_future_tokens() {
    let issuer = issuer().await;
    let token = issuer.mint(&MintRequest::new()).unwrap();
    let leeway = CLOCK_LEEWAY;

    // Within leeway after exp: still accepted; beyond it: expired.
    let just_after = now() + Duration::from_secs(300) + leeway - Duration::from_secs(5);
    verify(&token, &trust(&issuer), &keys(&issuer), just_after).unwrap();
    let later = now() + Duration::from_secs(300) + leeway + Duration::from_secs(5);
    let err = verify(&token, &trust(&issuer), &keys(&issuer), later).unwrap_err();
    assert!(matches!(err, VerifyError::Expired { .. }), "{err:?}");
    assert_eq!(err.category(), "expired");
    assert!(err.to_string().contains("request a fresh token"), "{err}");

    let past = unix_now() - 1000;
    let err = refuse(
        &issuer,
        MintRequest::new()
            .claim_json("iat", json!(past))
            .claim_json("nbf", json!(past))
            .claim_json("exp", json!(past + 300)),
    );
    assert!(matches!(err, VerifyError::Expired { .. }), "{err:?}");

    let earlier = now() - Duration::from_secs(120);
    let err = verify(&token, &trust(&issuer), &keys(&issuer), earlier).unwrap_err();
    assert!(matches!(err, VerifyError::NotYetValid { .. }), "{err:?}");
    assert!(err.to_string().contains("check the clocks"), "{err}");

    let future = unix_now() + 120;
    let err = refuse(
        &issuer,
        MintRequest::new()
            .claim_json("iat", json!(future))
            .claim_json("nbf", Value::Null)
            .claim_json("exp", json!(future + 300)),
    );
    assert!(matches!(err, VerifyError::IssuedInFuture { .. }), "{err:?}");
    assert_eq!(err.category(), "issued_in_future");

    let err = refuse(&issuer, MintRequest::new().claim_json("exp", Value::Null));
    assert_eq!(err, VerifyError::MissingClaim { claim: "exp" });
}

#[tokio::test]
async fn rejects_wrong_audience_and_issuer() {
    let issuer = issuer().await;
    let err = refuse(
        &issuer,
        MintRequest::new().audience("https://vault.example"),
    );
    assert_eq!(
        err,
        VerifyError::WrongAudience {
            trust: "gitlab-test".into(),
            found: vec!["https://vault.example".into()],
            suggested: AUD.into(),
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "ID token audience [\"https://vault.example\"] does not include any audience of trust gitlab-test: set `aud:` in the job's id_tokens to {AUD}"
        )
    );
    assert_eq!(err.error_code(), "invalid_grant");

    let err = refuse(
        &issuer,
        MintRequest::new().claim("iss", "https://gitlab.com"),
    );
    assert!(
        matches!(&err, VerifyError::WrongIssuer { found, .. } if found == "https://gitlab.com"),
        "{err:?}"
    );
    assert!(err.to_string().contains(issuer.url()), "{err}");
    // A trailing slash is another issuer.
    let err = refuse(
        &issuer,
        MintRequest::new().claim("iss", format!("{}/", issuer.url())),
    );
    assert_eq!(err.category(), "wrong_issuer");
}

#[tokio::test]
async fn rejects_bad_signatures_and_algorithms() {
    let issuer = issuer().await;
    let token = issuer.mint(&MintRequest::new()).unwrap();
    let parts = oam_trust::oidc::JwtParts::split(&token).unwrap();
    let mut claims = parts.claims().unwrap();
    claims.insert("project_id".into(), "1".into());
    let forged = format!(
        "{}.{}.{}",
        parts.header,
        URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string()),
        parts.signature
    );
    let err = verify(&forged, &trust(&issuer), &keys(&issuer), now()).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature { .. }), "{err:?}");
    assert_eq!(err.error_code(), "invalid_grant");

    let err = refuse(&issuer, MintRequest::new().alg(MintAlgorithm::None));
    assert_eq!(
        err,
        VerifyError::UnsupportedAlgorithm { alg: "none".into() }
    );

    for kind in [KeyKind::Rsa, KeyKind::Ec] {
        let err = refuse(
            &issuer,
            MintRequest::new()
                .key(kind)
                .alg(MintAlgorithm::Hs256PublicKey),
        );
        assert_eq!(
            err,
            VerifyError::UnsupportedAlgorithm {
                alg: "HS256".into()
            }
        );
        assert!(err.to_string().contains("only RS256 and ES256"), "{err}");
    }

    // ES256 signature presented under the RSA key's kid: the algorithm must match the key type.
    let err = refuse(
        &issuer,
        MintRequest::new()
            .key(KeyKind::Ec)
            .kid(issuer.kid(KeyKind::Rsa)),
    );
    assert!(
        matches!(&err, VerifyError::KeyAlgorithmMismatch { alg, key_type, .. } if alg == "ES256" && *key_type == "RSA"),
        "{err:?}"
    );
    // RS256 claimed over an EC key fails the same way.
    let err = refuse(
        &issuer,
        MintRequest::new()
            .key(KeyKind::Rsa)
            .kid(issuer.kid(KeyKind::Ec)),
    );
    assert_eq!(err.category(), "key_algorithm_mismatch");

    // Two keys published: a token without kid is refused; with one key it is accepted.
    let err = refuse(&issuer, MintRequest::new().omit_kid());
    assert!(
        matches!(err, VerifyError::MissingKeyId { key_count: 2, .. }),
        "{err:?}"
    );
    let only_rsa: Value = {
        let mut jwks: Value = serde_json::from_str(&issuer.jwks_json()).unwrap();
        jwks["keys"]
            .as_array_mut()
            .unwrap()
            .retain(|k| k["kty"] == "RSA");
        jwks
    };
    let single = KeySet::from_jwks_json(only_rsa.to_string().as_bytes()).unwrap();
    let token = issuer.mint(&MintRequest::new().omit_kid()).unwrap();
    verify(&token, &trust(&issuer), &single, now()).unwrap();

    let err = verify("not-a-jwt", &trust(&issuer), &keys(&issuer), now()).unwrap_err();
    assert!(matches!(err, VerifyError::Malformed { .. }), "{err:?}");
    assert_eq!(err.error_code(), "invalid_request");
}

#[tokio::test]
async fn rejects_oversized_tokens_before_parsing() {
    let issuer = issuer().await;
    let err = refuse(
        &issuer,
        MintRequest::new().claim("padding", "x".repeat(MAX_TOKEN_BYTES)),
    );
    assert!(
        matches!(
            err,
            VerifyError::TooLarge {
                limit: MAX_TOKEN_BYTES,
                ..
            }
        ),
        "{err:?}"
    );
    // Not even a JWT, but over the limit: the size is what is reported.
    let junk = "a".repeat(MAX_TOKEN_BYTES + 1);
    let err = verify(&junk, &trust(&issuer), &keys(&issuer), now()).unwrap_err();
    assert_eq!(
        err,
        VerifyError::TooLarge {
            size: MAX_TOKEN_BYTES + 1,
            limit: MAX_TOKEN_BYTES
        }
    );
    assert_eq!(err.error_code(), "invalid_request");
}

#[tokio::test]
async fn rejects_tokens_without_ci_claims() {
    let issuer = issuer().await;
    let err = refuse(
        &issuer,
        MintRequest::new()
            .claim_json("project_id", Value::Null)
            .claim_json("job_id", Value::Null),
    );
    assert_eq!(
        err,
        VerifyError::MissingCiClaims {
            missing: vec!["project_id", "job_id"]
        }
    );
    assert!(err.to_string().contains("id_tokens:"), "{err}");

    let err = refuse(
        &issuer,
        MintRequest::new().claim_json("pipeline_id", json!(98012)),
    );
    assert!(
        matches!(
            err,
            VerifyError::InvalidClaim {
                claim: "pipeline_id",
                ..
            }
        ),
        "{err:?}"
    );
    let err = refuse(&issuer, MintRequest::new().claim_json("jti", Value::Null));
    assert_eq!(err, VerifyError::MissingClaim { claim: "jti" });
}

#[tokio::test]
async fn rejects_tokens_living_longer_than_max_token_age() {
    let issuer = issuer().await;
    let mut limited = trust(&issuer);
    limited.spec.require = Some(Requirements {
        max_token_age: Some("10m".into()),
        ..Requirements::default()
    });
    let token = issuer
        .mint(&MintRequest::new().lifetime(Duration::from_secs(3600)))
        .unwrap();
    let err = verify(&token, &limited, &keys(&issuer), now()).unwrap_err();
    assert_eq!(
        err,
        VerifyError::LifetimeTooLong {
            trust: "gitlab-test".into(),
            lifetime_secs: 3600,
            max_secs: 600
        }
    );
    assert!(err.to_string().contains("require.maxTokenAge"), "{err}");
    // The same token (1 h) is fine without the requirement...
    verify(&token, &trust(&issuer), &keys(&issuer), now()).unwrap();
    // ...but nothing beyond the 1 h default (GitLab's default job timeout) is.
    let token = issuer
        .mint(&MintRequest::new().lifetime(Duration::from_secs(25 * 3600)))
        .unwrap();
    let err = verify(&token, &trust(&issuer), &keys(&issuer), now()).unwrap_err();
    assert!(
        matches!(err, VerifyError::LifetimeTooLong { max_secs: 3600, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn unknown_kid_is_refused_then_accepted_after_rotation_and_refetch() {
    let issuer = issuer().await;
    let cache = cache_with_interval(&issuer, Duration::ZERO);
    cache.refresh().await.unwrap();
    let before = issuer.jwks_requests();
    let old_kid = issuer.kid(KeyKind::Rsa);

    let new_kid = issuer.rotate_key(KeyKind::Rsa).unwrap();
    let token = issuer.mint(&MintRequest::new()).unwrap();
    let err = verify(&token, &trust(&issuer), &cache.keys(), now()).unwrap_err();
    assert!(
        matches!(&err, VerifyError::UnknownKey { kid, known, .. } if *kid == new_kid && known.contains(&old_kid)),
        "{err:?}"
    );
    assert_eq!(err.category(), "unknown_key");

    let verified = cache.verify(&token, &trust(&issuer), now()).await.unwrap();
    assert_eq!(verified.header_kid, Some(new_kid.clone()));
    assert_eq!(issuer.jwks_requests(), before + 1);
    assert!(cache.key_ids().contains(&new_kid));
    assert!(!cache.key_ids().contains(&old_kid), "the old key is gone");

    // A kid nobody publishes: refused after one refetch.
    let token = issuer.mint(&MintRequest::new().kid("no-such-key")).unwrap();
    let err = cache
        .verify(&token, &trust(&issuer), now())
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::UnknownKey { .. }), "{err:?}");
}

#[tokio::test]
async fn discovery_works_with_only_the_issuers_ca_trusted() {
    let issuer = issuer().await;
    let cache = KeyCache::for_trust(&spec(&issuer)).unwrap();
    assert!(cache.last_fetch().is_none());
    let keys = cache.refresh().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(issuer.discovery_requests(), 1);
    let status = cache.status();
    assert!(status.last_fetch.is_some());
    assert_eq!(status.last_error, None);
    assert!(status.key_ids.contains(&issuer.kid(KeyKind::Rsa)));
    assert!(status.key_ids.contains(&issuer.kid(KeyKind::Ec)));
    // First verification loads keys by itself.
    let fresh = KeyCache::for_trust(&spec(&issuer)).unwrap();
    let token = issuer.mint(&MintRequest::new()).unwrap();
    fresh.verify(&token, &trust(&issuer), now()).await.unwrap();

    // Another CA: the TLS handshake fails and nothing is trusted.
    let stranger = DevIssuer::start(DevIssuerOptions::default()).await.unwrap();
    let mut wrong_ca = spec(&issuer);
    wrong_ca.jwks.as_mut().unwrap().ca_bundle = Some(stranger.ca_pem().into());
    let cache = KeyCache::for_trust(&wrong_ca).unwrap();
    let err = cache.refresh().await.unwrap_err();
    assert_eq!(err.category(), "transport");
    assert!(cache.keys().is_empty());
    assert!(cache.last_error().is_some());
    let err = cache
        .verify(&token, &trust(&issuer), now())
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::NoKeys { .. }), "{err:?}");

    // A discovery document naming another issuer is refused (same server, reached as localhost).
    let localhost = issuer.url().replace("127.0.0.1", "localhost");
    let err = KeyCache::new(
        KeySource::Discovery {
            issuer: localhost.clone(),
            ca_bundle: Some(issuer.ca_pem().into()),
        },
        KeyCacheConfig::default(),
    )
    .unwrap()
    .refresh()
    .await
    .unwrap_err();
    assert_eq!(err.category(), "discovery");
    assert!(err.to_string().contains(&localhost), "{err}");

    // An explicit JWKS URI skips discovery; a bad CA bundle is refused up front.
    let before = issuer.discovery_requests();
    let direct = KeyCache::new(
        KeySource::JwksUri {
            uri: format!("{}/oauth/discovery/keys", issuer.url()),
            ca_bundle: Some(issuer.ca_pem().into()),
        },
        KeyCacheConfig::default(),
    )
    .unwrap();
    assert_eq!(direct.refresh().await.unwrap().len(), 2);
    assert_eq!(issuer.discovery_requests(), before);
    let mut bad_ca = spec(&issuer);
    bad_ca.jwks.as_mut().unwrap().ca_bundle = Some("not a PEM".into());
    assert!(KeyCache::for_trust(&bad_ca).is_err());
}

#[tokio::test]
async fn static_jwks_needs_no_fetch() {
    let issuer = issuer().await;
    let mut spec = spec(&issuer);
    spec.jwks = Some(JwksSource {
        static_jwks: Some(issuer.jwks_json()),
        ..JwksSource::default()
    });
    let cache = KeyCache::for_trust(&spec).unwrap();
    let token = issuer.mint(&MintRequest::new().key(KeyKind::Ec)).unwrap();
    cache
        .verify(&token, &GitLabTrust::new("static", spec), now())
        .await
        .unwrap();
    assert_eq!(issuer.jwks_requests(), 0);
    assert_eq!(issuer.discovery_requests(), 0);
}

#[tokio::test]
async fn fetch_failure_keeps_the_cached_keys() {
    let issuer = issuer().await;
    let cache = cache_with_interval(&issuer, Duration::ZERO);
    cache.refresh().await.unwrap();
    let held = cache.key_ids();
    let fetched_at = cache.last_fetch();

    issuer.set_jwks_available(false);
    let err = cache.refresh().await.unwrap_err();
    assert_eq!(err.category(), "http_status");
    assert!(err.to_string().contains("HTTP 503"), "{err}");
    assert_eq!(cache.key_ids(), held);
    assert_eq!(cache.last_fetch(), fetched_at);
    assert!(cache.last_error().unwrap().contains("503"));

    // Tokens under the held keys still verify; an unknown kid triggers a failing refetch that keeps them.
    let token = issuer.mint(&MintRequest::new()).unwrap();
    cache.verify(&token, &trust(&issuer), now()).await.unwrap();
    issuer.rotate_key(KeyKind::Ec).unwrap();
    let token = issuer.mint(&MintRequest::new().key(KeyKind::Ec)).unwrap();
    let err = cache
        .verify(&token, &trust(&issuer), now())
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::UnknownKey { .. }), "{err:?}");
    assert_eq!(cache.key_ids(), held);

    issuer.set_jwks_available(true);
    cache.verify(&token, &trust(&issuer), now()).await.unwrap();
    assert_eq!(cache.last_error(), None);

    // An issuer that is down when the cache starts: refused with no keys, then served once it is back.
    issuer.set_jwks_available(false);
    let cold = KeyCache::for_trust(&spec(&issuer)).unwrap();
    let err = cold
        .verify(&token, &trust(&issuer), now())
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::NoKeys { .. }), "{err:?}");
    assert!(err.to_string().contains("status"), "{err}");
    assert!(cold.last_error().is_some());
    issuer.set_jwks_available(true);
    let err = cold
        .verify(&token, &trust(&issuer), now())
        .await
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::NoKeys { .. }),
        "retries wait for the refetch interval: {err:?}"
    );
    let quick = cache_with_interval(&issuer, Duration::ZERO);
    issuer.set_jwks_available(false);
    assert!(quick.verify(&token, &trust(&issuer), now()).await.is_err());
    issuer.set_jwks_available(true);
    quick.verify(&token, &trust(&issuer), now()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_unknown_kid_lookups_share_one_fetch() {
    let issuer = issuer().await;
    let cache = cache_with_interval(&issuer, Duration::ZERO);
    cache.refresh().await.unwrap();
    issuer.rotate_key(KeyKind::Ec).unwrap();
    let token = Arc::new(issuer.mint(&MintRequest::new().key(KeyKind::Ec)).unwrap());
    let trust = Arc::new(trust(&issuer));
    let before = issuer.jwks_requests();

    let lookups: Vec<_> = (0..16)
        .map(|_| {
            let (cache, token, trust) = (cache.clone(), token.clone(), trust.clone());
            tokio::spawn(async move { cache.verify(&token, &trust, SystemTime::now()).await })
        })
        .collect();
    for lookup in lookups {
        lookup.await.unwrap().unwrap();
    }
    assert_eq!(issuer.jwks_requests(), before + 1, "16 lookups, one fetch");

    // A cache that never fetched: 16 first verifications load the keys once.
    let fresh = KeyCache::for_trust(&spec(&issuer)).unwrap();
    let before = issuer.jwks_requests();
    let lookups: Vec<_> = (0..16)
        .map(|_| {
            let (cache, token, trust) = (fresh.clone(), token.clone(), trust.clone());
            tokio::spawn(async move { cache.verify(&token, &trust, SystemTime::now()).await })
        })
        .collect();
    for lookup in lookups {
        lookup.await.unwrap().unwrap();
    }
    assert_eq!(
        issuer.jwks_requests(),
        before + 1,
        "16 first lookups, one fetch"
    );
}

#[tokio::test]
async fn unknown_kid_refetches_are_rate_limited() {
    let issuer = issuer().await;
    let interval = Duration::from_secs(3);
    let cache = cache_with_interval(&issuer, interval);
    cache.refresh().await.unwrap();
    let before = issuer.jwks_requests();

    issuer.rotate_key(KeyKind::Ec).unwrap();
    let token = issuer.mint(&MintRequest::new().key(KeyKind::Ec)).unwrap();
    let err = cache
        .verify(&token, &trust(&issuer), now())
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::UnknownKey { .. }), "{err:?}");
    assert_eq!(
        issuer.jwks_requests(),
        before,
        "no refetch within the interval"
    );

    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    cache.verify(&token, &trust(&issuer), now()).await.unwrap();
    assert_eq!(issuer.jwks_requests(), before + 1);

    // A garbage kid right after cannot make it fetch again.
    let token = issuer
        .mint(&MintRequest::new().kid("attacker-chosen"))
        .unwrap();
    for _ in 0..5 {
        let err = cache
            .verify(&token, &trust(&issuer), now())
            .await
            .unwrap_err();
        assert!(matches!(err, VerifyError::UnknownKey { .. }), "{err:?}");
    }
    assert_eq!(issuer.jwks_requests(), before + 1);
}

#[test]
fn key_set_keeps_only_usable_signing_keys() {
    let jwks = json!({"keys": [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
        {"kty": "RSA", "kid": "short", "n": "AQAB", "e": "AQAB"},
    ]});
    let err = KeySet::from_jwks_json(jwks.to_string().as_bytes()).unwrap_err();
    let text = err.to_string();
    for kid in ["hmac", "enc", "p384", "short"] {
        assert!(text.contains(kid), "{text}");
    }
    assert!(KeySet::from_jwks_json(b"{}").is_err());
    assert!(KeySet::from_jwks_json(b"not json").is_err());
}
