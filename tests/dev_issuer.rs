//! The dev issuer over real HTTPS on loopback: GitLab-shaped claims, discovery/JWKS/mint/rotate endpoints
//! trusted through its own CA only, key persistence across restarts, and the CLI.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oam_trust::api::trust::{GitLabTrust, GitLabTrustSpec};
use oam_trust::dev_issuer::{DevIssuer, DevIssuerOptions, KeyKind, MintRequest};
use oam_trust::oidc::https::HttpsClient;
use oam_trust::oidc::{KeySet, verify};
use serde_json::{Map, Value, json};

const AUD: &str = "https://k8s.test.example";

async fn issuer() -> DevIssuer {
    DevIssuer::start(DevIssuerOptions {
        audience: AUD.into(),
        ..DevIssuerOptions::default()
    })
    .await
    .expect("dev issuer starts")
}

fn payload(token: &str) -> Map<String, Value> {
    oam_trust::oidc::peek(token).expect("a compact JWT").claims
}

fn header(token: &str) -> Map<String, Value> {
    oam_trust::oidc::peek(token).expect("a compact JWT").header
}

fn trust(url: &str) -> GitLabTrust {
    GitLabTrust::new(
        "dev",
        GitLabTrustSpec {
            issuer: url.into(),
            audiences: vec![AUD.into()],
            ..GitLabTrustSpec::default()
        },
    )
}

fn client(ca_pem: &str) -> HttpsClient {
    HttpsClient::new(Some(ca_pem), Duration::from_secs(10), 64 * 1024).expect("client")
}

#[tokio::test]
async fn tokens_carry_every_gitlab_claim_with_gitlab_typing() {
    let issuer = issuer().await;
    let token = issuer.mint(&MintRequest::new()).unwrap();
    let claims = payload(&token);
    let strings = [
        "namespace_id",
        "namespace_path",
        "project_id",
        "project_path",
        "user_id",
        "user_login",
        "user_email",
        "user_access_level",
        "pipeline_id",
        "pipeline_source",
        "job_id",
        "ref",
        "ref_type",
        "ref_path",
        "ref_protected",
        "environment",
        "environment_protected",
        "deployment_tier",
        "environment_action",
        "runner_environment",
        "sha",
        "project_visibility",
        "ci_config_ref_uri",
        "ci_config_sha",
        "jti",
        "sub",
        "iss",
        "aud",
    ];
    for claim in strings {
        assert!(
            claims.get(claim).is_some_and(Value::is_string),
            "{claim} must be a string, got {:?}",
            claims.get(claim)
        );
    }
    assert!(
        claims["runner_id"].is_u64(),
        "runner_id is a number in GitLab tokens"
    );
    for claim in ["iat", "nbf", "exp"] {
        assert!(claims[claim].is_u64(), "{claim} is a NumericDate");
    }
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(claims["nbf"].as_u64().unwrap(), iat - 5);
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 300);
    assert_eq!(claims["ref_protected"], "true");
    assert_eq!(claims["iss"], issuer.url());
    assert_eq!(claims["aud"], AUD);
    assert_eq!(
        claims["sub"],
        "project_path:platform/payments-api:ref_type:branch:ref:main"
    );
    let h = header(&token);
    assert_eq!(h["alg"], "RS256");
    assert_eq!(h["kid"], issuer.kid(KeyKind::Rsa));
    // Two tokens differ in jti and job id.
    let other = payload(&issuer.mint(&MintRequest::new()).unwrap());
    assert_ne!(other["jti"], claims["jti"]);
    assert_ne!(other["job_id"], claims["job_id"]);
}

#[tokio::test]
async fn overrides_keep_derived_claims_consistent() {
    let issuer = issuer().await;
    let token = issuer
        .mint(
            &MintRequest::new()
                .claim("project_path", "team-a/sub/api")
                .claim("ref", "v1.2.0")
                .claim("ref_type", "tag")
                .claim("ref_protected", "false")
                .claim_json("environment", Value::Null)
                .lifetime(Duration::from_secs(3600))
                .key(KeyKind::Ec),
        )
        .unwrap();
    let claims = payload(&token);
    assert_eq!(claims["namespace_path"], "team-a/sub");
    assert_eq!(claims["ref_path"], "refs/tags/v1.2.0");
    assert_eq!(
        claims["sub"],
        "project_path:team-a/sub/api:ref_type:tag:ref:v1.2.0"
    );
    assert_eq!(claims["ref_protected"], "false");
    assert!(!claims.contains_key("environment"));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    assert_eq!(header(&token)["alg"], "ES256");
    assert_eq!(header(&token)["kid"], issuer.kid(KeyKind::Ec));
}

#[tokio::test]
async fn http_endpoints_are_served_over_https_trusting_only_its_ca() {
    let issuer = issuer().await;
    let https = client(issuer.ca_pem());
    let discovery: Value = serde_json::from_slice(
        &https
            .get(&format!(
                "{}/.well-known/openid-configuration",
                issuer.url()
            ))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(discovery["issuer"], issuer.url());
    assert_eq!(
        discovery["jwks_uri"],
        format!("{}/oauth/discovery/keys", issuer.url())
    );

    let jwks = https
        .get(&format!("{}/oauth/discovery/keys", issuer.url()))
        .await
        .unwrap();
    let keys = KeySet::from_jwks_json(&jwks).unwrap();
    let mut ids = keys.key_ids();
    ids.sort();
    let mut expected = vec![issuer.kid(KeyKind::Rsa), issuer.kid(KeyKind::Ec)];
    expected.sort();
    assert_eq!(ids, expected);

    let body = json!({"claims": {"project_id": "42"}, "aud": ["x", AUD], "key": "ec"});
    let token = https
        .post_json(
            &format!("{}/mint", issuer.url()),
            body.to_string().into_bytes(),
        )
        .await
        .unwrap();
    let token = String::from_utf8(token.to_vec()).unwrap();
    let verified = verify(&token, &trust(issuer.url()), &keys, SystemTime::now()).unwrap();
    assert_eq!(verified.claims["project_id"], "42");
    assert_eq!(verified.claims["aud"], json!(["x", AUD]));

    let bad = https
        .post_json(
            &format!("{}/mint", issuer.url()),
            b"{\"lifetime\": 5}".to_vec(),
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("HTTP 400"), "{bad}");

    let old = issuer.kid(KeyKind::Ec);
    let rotated: Value = serde_json::from_slice(
        &https
            .post_json(
                &format!("{}/rotate", issuer.url()),
                br#"{"key":"ec"}"#.to_vec(),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(rotated["kid"], issuer.kid(KeyKind::Ec));
    assert_ne!(rotated["kid"], old);
    let after = KeySet::from_jwks_json(
        &https
            .get(&format!("{}/oauth/discovery/keys", issuer.url()))
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(
        after.find(&old).is_none(),
        "rotation leaves no overlap, like GitLab"
    );
    assert!(after.find(rotated["kid"].as_str().unwrap()).is_some());

    // Another CA does not vouch for this issuer.
    let stranger = DevIssuer::start(DevIssuerOptions::default()).await.unwrap();
    let err = client(stranger.ca_pem())
        .get(&format!("{}/oauth/discovery/keys", issuer.url()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(issuer.url()), "{err}");
}

#[tokio::test]
async fn state_dir_keeps_keys_and_ca_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DevIssuerOptions {
        audience: AUD.into(),
        state_dir: Some(dir.path().to_path_buf()),
        ..DevIssuerOptions::default()
    };
    let first = DevIssuer::start(opts.clone()).await.unwrap();
    let (rsa, ec, ca) = (
        first.kid(KeyKind::Rsa),
        first.kid(KeyKind::Ec),
        first.ca_pem().to_string(),
    );
    let token = first.mint(&MintRequest::new()).unwrap();
    let first_url = first.url().to_string();
    drop(first);

    let second = DevIssuer::start(opts).await.unwrap();
    assert_eq!(second.kid(KeyKind::Rsa), rsa);
    assert_eq!(second.kid(KeyKind::Ec), ec);
    assert_eq!(second.ca_pem(), ca);
    // The restarted issuer's JWKS, fetched trusting the CA saved by the first run, verifies old tokens.
    let jwks = client(&ca)
        .get(&format!("{}/oauth/discovery/keys", second.url()))
        .await
        .unwrap();
    let keys = KeySet::from_jwks_json(&jwks).unwrap();
    verify(&token, &trust(&first_url), &keys, SystemTime::now()).unwrap();

    // A rotation is persisted too.
    let rotated = second.rotate_key(KeyKind::Ec).unwrap();
    drop(second);
    let third = DevIssuer::start(DevIssuerOptions {
        state_dir: Some(dir.path().to_path_buf()),
        ..DevIssuerOptions::default()
    })
    .await
    .unwrap();
    assert_eq!(third.kid(KeyKind::Ec), rotated);
}

#[test]
fn cli_serves_and_mints() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_oam-trust");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let mut server = Command::new(bin)
        .args([
            "dev-issuer",
            "--listen",
            "127.0.0.1:0",
            "--audience",
            AUD,
            "--ca-out",
        ])
        .arg(&ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let url = url.trim().to_string();
    let minted = Command::new(bin)
        .args(["dev-issuer", "mint", "--url", &url, "--ca"])
        .arg(&ca)
        .args([
            "--claim",
            "project_id=42",
            "--claim-json",
            "runner_id=7",
            "--key",
            "ec",
            "--lifetime",
            "10m",
        ])
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        minted.status.success(),
        "mint failed: {}",
        String::from_utf8_lossy(&minted.stderr)
    );
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let token = String::from_utf8(minted.stdout).unwrap();
    let claims = payload(token.trim());
    assert_eq!(claims["project_id"], "42");
    assert_eq!(claims["runner_id"], 7);
    assert_eq!(claims["iss"], url.as_str());
    assert_eq!(claims["aud"], AUD);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        600
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(claims["iat"].as_u64().unwrap().abs_diff(now) < 60);
    assert_eq!(header(token.trim())["alg"], "ES256");
}
