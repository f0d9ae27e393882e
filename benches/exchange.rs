//! The exchange's pure hot path (no API calls): verify the ID token (RS256), read its claims, match it
//! against the grants of 50 Applications and decide, beside raw signature verification of the same
//! token with the same crate (`jsonwebtoken::crypto::verify`). The ratio says what the exchange adds to
//! the signature check.
//!
//!   cargo bench --bench exchange
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey};
use oam_trust::access::{GitLabClaims, GrantInput, GrantSet, derive_grants, match_token};
use oam_trust::api::oam::Application;
use oam_trust::api::trust::GitLabTrust;
use oam_trust::dev_issuer::{DevIssuer, DevIssuerOptions, MintRequest};
use oam_trust::federation::decision;
use oam_trust::oidc::{KeySet, verify};
use oam_trust::render::{Definitions, render_application};
use serde_json::{Value, json};

const AUD: &str = "https://oam-trust.bench";

struct Fixture {
    token: String,
    trust: GitLabTrust,
    keys: KeySet,
    grants: GrantSet,
    raw_key: DecodingKey,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (token, jwks) = rt.block_on(async {
        let issuer = DevIssuer::start(DevIssuerOptions {
            audience: AUD.into(),
            issuer_url: Some("https://gitlab.bench".into()),
            lifetime: Duration::from_secs(3600),
            ..DevIssuerOptions::default()
        })
        .await
        .unwrap();
        (
            issuer.mint(&MintRequest::new()).unwrap(),
            issuer.jwks_json(),
        )
    });
    let trust: GitLabTrust = serde_json::from_value(json!({
        "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust", "metadata": {"name": "bench"},
        "spec": {"issuer": "https://gitlab.bench", "audiences": [AUD], "jwks": {"static": jwks},
                 "namespaceSelector": {"matchLabels": {"team": "bench"}},
                 "allow": [{"namespaceId": "72"}], "require": {"refProtected": true},
                 "ceiling": {"clusterRoleRef": "ceiling"}}
    }))
    .unwrap();
    let keys = KeySet::from_jwks_json(jwks.as_bytes()).unwrap();
    let trusts = BTreeMap::from([("bench".to_string(), trust.clone())]);
    let labels = BTreeMap::from([("team".to_string(), "bench".to_string())]);
    let ceiling: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "ceiling"},
        "rules": [{"apiGroups": ["core.oam.dev"], "resources": ["applications"], "verbs": ["get", "list", "watch", "patch", "update"]},
                  {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
                  {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]}]
    }))
    .unwrap();
    let ceilings = BTreeMap::from([("ceiling".to_string(), ceiling)]);
    // 50 Applications, each with a deploy policy for another project and a read trait; one matches.
    let mut sets = Vec::new();
    for i in 0..50 {
        let project = if i == 37 {
            "1450".to_string()
        } else {
            format!("{}", 5000 + i)
        };
        let app: Application = serde_json::from_value(json!({
            "apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
            "metadata": {"name": format!("app-{i}"), "namespace": "bench", "uid": format!("uid-{i}")},
            "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx"},
                "traits": [{"type": "gitlab-access", "properties": {"trust": "bench",
                    "subjects": [{"projectId": format!("{}", 9000 + i)}], "access": "read"}}]}],
              "policies": [{"name": "deploy", "type": "gitlab-access", "properties": {"trust": "bench",
                "subjects": [{"projectId": project, "ref": "main", "environment": "production"}],
                "access": "deploy"}}]}
        }))
        .unwrap();
        let rendered = render_application(&app, &Definitions::default()).unwrap();
        sets.push(derive_grants(&GrantInput {
            application: &app,
            namespace_labels: Some(&labels),
            trusts: &trusts,
            ceilings: &ceilings,
            rendered: &rendered,
        }));
    }
    let grants = GrantSet::merge(sets);
    assert_eq!(grants.grants.len(), 100, "{:?}", grants.refusals.first());
    let jwk: Value = serde_json::from_str::<Value>(&jwks).unwrap()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "RSA")
        .unwrap()
        .clone();
    let raw_key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    Fixture {
        token,
        trust,
        keys,
        grants,
        raw_key,
    }
}

/// What the exchange does per request before any API call.
fn verify_and_match(f: &Fixture, now: SystemTime) -> String {
    let verified = verify(&f.token, &f.trust, &f.keys, now).unwrap();
    let claims = GitLabClaims::from_json(Value::Object(verified.claims)).unwrap();
    let outcome = match_token(&claims, &f.trust, &f.grants, None);
    decision::decide(outcome, "bench", &f.grants, None)
        .unwrap()
        .name
        .clone()
}

fn raw_signature(f: &Fixture) -> bool {
    let (message, signature) = f.token.rsplit_once('.').unwrap();
    jsonwebtoken::crypto::verify(signature, message.as_bytes(), &f.raw_key, Algorithm::RS256)
        .unwrap()
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    let now = SystemTime::now();
    assert!(raw_signature(&f));
    assert!(verify_and_match(&f, now).contains("app-37"));
    // Sanity: the payload is GitLab-shaped.
    let claims = oam_trust::oidc::peek(&f.token).unwrap().claims;
    assert!(claims.contains_key("project_id"), "{claims:?}");
    let mut group = c.benchmark_group("exchange");
    group.bench_function("raw_rs256_signature", |b| {
        b.iter(|| black_box(raw_signature(&f)))
    });
    group.bench_function("verify_match_decide_100_grants", |b| {
        b.iter(|| black_box(verify_and_match(&f, now)))
    });
    group.finish();
}

criterion_group!(exchange, benches);
criterion_main!(exchange);
