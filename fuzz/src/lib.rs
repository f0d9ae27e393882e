//! What the fuzz targets share: a fixed RS256 test key with its key set and trust (so a target can
//! sign what it generates and reach the checks after the signature), the world built from JSON
//! documents as `oam-trust render` builds it, and the thread's CPU clock for evaluation budgets.
//!
//! Nothing here is a secret: the key comes from a fixed seed and exists only to sign fuzz inputs.
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oam_trust::access::{GitLabClaims, GrantSet, MatchOutcome, MissingNamespace, World, glob};
use oam_trust::api::oam::Application;
use oam_trust::api::trust::GitLabTrust;
use oam_trust::manifest::Manifests;
use oam_trust::oidc::KeySet;
use rand::SeedableRng;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

/// The issuer and audience of the fuzz trust: those of `tests/fixtures/access/matching.yaml`, so its
/// claims verify and then match its grants.
pub const ISSUER: &str = "https://gitlab.example.com";
pub const AUDIENCE: &str = "https://k8s.example.com";
pub const KID: &str = "fuzz-rs256";
/// The clock of every verification: just after the fixtures' `iat` (1735689600), before their `exp`.
pub const NOW_SECS: u64 = 1_735_689_700;

pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

/// The fixed signing key, its JWKS-derived key set, and the trust that accepts its tokens. Signing
/// goes through `ring`, whose RSA arithmetic is assembly the coverage instrumentation leaves alone:
/// about five times the rate of signing with the instrumented `rsa` crate.
pub struct TestIssuer {
    pub signing: ring::signature::RsaKeyPair,
    pub keys: KeySet,
    pub trust: GitLabTrust,
}

/// Generated once per process from a fixed seed (2048-bit RSA, what GitLab uses).
pub fn issuer() -> &'static TestIssuer {
    static ISSUER_KEY: OnceLock<TestIssuer> = OnceLock::new();
    ISSUER_KEY.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0a11_7a57);
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA key");
        let der = key.to_pkcs1_der().expect("PKCS#1 DER");
        let signing =
            ring::signature::RsaKeyPair::from_der(der.as_bytes()).expect("ring reads the key");
        let public = key.to_public_key();
        let jwks = json!({"keys": [{
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": KID,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        }]});
        let keys = KeySet::from_jwks_json(jwks.to_string().as_bytes()).expect("key set");
        let trust = serde_json::from_value(json!({
            "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust",
            "metadata": {"name": "gitlab-com"},
            "spec": {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks": {"static": jwks.to_string()},
                     "namespaceSelector": {"matchLabels": {"oam-trust.dev/gitlab": "enabled"}},
                     "allow": [{"namespaceId": "72"}],
                     "require": {"refProtected": true, "maxTokenAge": "1h"}}
        }))
        .expect("trust");
        TestIssuer {
            signing,
            keys,
            trust,
        }
    })
}

/// A compact JWT of `payload` (any bytes) under `header`, RS256-signed with the fixed key.
pub fn sign(header: &Value, payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let key = &issuer().signing;
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .expect("RS256 signs");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The header GitLab writes.
pub fn gitlab_header() -> Value {
    json!({"alg": "RS256", "kid": KID, "typ": "JWT"})
}

/// The world and Applications of a list of manifests, as `oam-trust render` reads files: documents
/// that are not valid for their kind are left out. `offline` assumes namespaces without a document
/// selected (the CLI); otherwise they have no labels (the cluster).
pub fn world_of(documents: &[Value], offline: bool) -> (World, Vec<Application>) {
    let mut manifests = Manifests::default();
    for doc in documents {
        let _ = manifests.add("fuzz", doc.clone());
    }
    let (mut world, _notes) = manifests.world();
    if !offline {
        world.missing_namespace = MissingNamespace::NoLabels;
    }
    (world, manifests.applications)
}

/// An access fixture (`tests/fixtures/access/*.yaml`) as manifests: its trusts, ceilings, the
/// Application's namespace with the fixture's labels, and the Application.
pub fn fixture_documents(fixture: &Value) -> Vec<Value> {
    let mut docs: Vec<Value> = fixture["trusts"].as_array().cloned().unwrap_or_default();
    for ceiling in fixture["ceilings"].as_array().into_iter().flatten() {
        let mut c = ceiling.clone();
        c["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
        c["kind"] = json!("ClusterRole");
        docs.push(c);
    }
    let app = &fixture["application"];
    docs.push(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": app["metadata"]["namespace"].as_str().unwrap_or("default"),
                     "labels": fixture.get("namespaceLabels").cloned().unwrap_or(json!({}))}
    }));
    docs.push(app.clone());
    docs
}

/// The grants of `tests/fixtures/access/matching.yaml` (two trusts, four grants: deploy, read with a
/// CEL condition, another trust, a component trait), for matching verified claims against.
pub fn matching_grants() -> &'static (World, GrantSet) {
    static GRANTS: OnceLock<(World, GrantSet)> = OnceLock::new();
    GRANTS.get_or_init(|| {
        let fixture: Value =
            serde_yaml_ng::from_str(include_str!("../../tests/fixtures/access/matching.yaml"))
                .expect("fixture parses");
        let (world, apps) = world_of(&fixture_documents(&fixture), false);
        let set = GrantSet::merge(
            apps.iter()
                .map(|app| world.derive(app).expect("fixture renders").grants),
        );
        assert!(!set.grants.is_empty(), "the fixture has grants");
        (world, set)
    })
}

/// `match_token` for `claims` under every trust of `world`, then what the exchange answers
/// (`decision::decide`). A matched grant must be of the trust that matched, cover `resource`, and
/// the subject that matched must name the token's project and namespace (ids and path globs), its
/// ref, and the trust's protected-ref requirement must hold.
pub fn check_matching(
    world: &World,
    grants: &GrantSet,
    claims: &GitLabClaims,
    resource: Option<&str>,
) {
    use oam_trust::access::match_token;
    let glob_holds = |want: &Option<String>, have: &Option<String>| match want {
        Some(w) => have.as_deref().is_some_and(|h| glob::matches(w, h)),
        None => true,
    };
    for (name, trust) in &world.trusts {
        match match_token(claims, trust, grants, resource) {
            MatchOutcome::Matched { grant, subject } => {
                assert_eq!(&grant.trust, name);
                let s = &grant.subjects[subject];
                for (want, have) in [
                    (&s.project_id, &claims.project_id),
                    (&s.namespace_id, &claims.namespace_id),
                ] {
                    assert!(want.is_none() || want == have, "{want:?} matched {have:?}");
                }
                assert!(glob_holds(&s.project_path, &claims.project_path));
                assert!(glob_holds(&s.namespace_path, &claims.namespace_path));
                assert!(glob_holds(&s.ref_, &claims.ref_));
                if trust.spec.require.as_ref().and_then(|r| r.ref_protected) == Some(true) {
                    assert_eq!(claims.ref_protected, Some(true));
                }
                if let Some(r) = resource {
                    let parts: Vec<&str> = r.split('/').collect();
                    assert_eq!(parts.first(), Some(&grant.namespace.as_str()));
                    assert_eq!(parts.get(1), Some(&grant.application.as_str()));
                }
            }
            MatchOutcome::Ambiguous(list) => assert!(list.len() > 1),
            MatchOutcome::NoMatch(_) | MatchOutcome::TokenRefused(_) => {}
        }
        let outcome = match_token(claims, trust, grants, resource);
        if let Err(denial) =
            oam_trust::federation::decision::decide(outcome, name, grants, resource)
        {
            assert!(!denial.description.is_empty());
        }
    }
}

/// CPU time of the calling thread: what an evaluation costs, whatever else the machine runs.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is available");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Splits `data` at its first NUL byte: `(before, Some(after))`, or `(data, None)` without one.
pub fn split_nul(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}
