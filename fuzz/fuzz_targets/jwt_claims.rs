//! Any payload, signed with the fixed RS256 test key, through `oidc::verify` (so every check after the
//! signature runs on arbitrary claims), the refusal the caller would get, and then, for tokens that
//! verify, `GitLabClaims` and `match_token` against the grants of `tests/fixtures/access/matching.yaml`.
//! A verified token satisfies every documented rule; a matched grant is of the verifying trust and its
//! subject's ids and ref really are the token's.
#![no_main]
use std::time::UNIX_EPOCH;

use libfuzzer_sys::fuzz_target;
use oam_trust::access::GitLabClaims;
use oam_trust::federation::decision;
use oam_trust::oidc::verify::{CLOCK_LEEWAY, MAX_TOKEN_BYTES, REQUIRED_CI_CLAIMS};
use oam_trust::oidc::{self, VerifyError};
use oam_trust_fuzz::{
    AUDIENCE, ISSUER, NOW_SECS, gitlab_header, issuer, matching_grants, now, sign,
};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // The resource a job may name comes after a NUL.
    let (payload, resource) = oam_trust_fuzz::split_nul(data);
    let resource = resource.and_then(|r| std::str::from_utf8(r).ok());
    let token = sign(&gitlab_header(), payload);
    let test = issuer();
    let verified = match oidc::verify(&token, &test.trust, &test.keys, now()) {
        Ok(v) => v,
        Err(err) => {
            if token.len() > MAX_TOKEN_BYTES {
                assert!(matches!(err, VerifyError::TooLarge { .. }), "{err:?}");
            } else {
                assert!(
                    !matches!(
                        err,
                        VerifyError::BadSignature { .. } | VerifyError::UnknownKey { .. }
                    ),
                    "a correctly signed token was refused: {err:?}"
                );
            }
            let _ = decision::verify_denial(&err);
            return;
        }
    };
    let claims = &verified.claims;
    assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER));
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    assert!(aud_ok, "audience {:?}", claims.get("aud"));
    let exp = verified
        .expires_at
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = verified
        .issued_at
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let leeway = CLOCK_LEEWAY.as_secs();
    assert!(exp + leeway > NOW_SECS, "expired");
    assert!(iat <= NOW_SECS + leeway, "issued in the future");
    assert!(
        exp > iat && exp - iat <= 3600,
        "lifetime {}",
        exp.saturating_sub(iat)
    );
    assert!(!verified.jti.is_empty());
    for claim in REQUIRED_CI_CLAIMS {
        assert!(
            claims
                .get(claim)
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty()),
            "{claim}"
        );
    }

    let Ok(gitlab) = GitLabClaims::from_json(Value::Object(claims.clone())) else {
        return;
    };
    let (world, grants) = matching_grants();
    oam_trust_fuzz::check_matching(world, grants, &gitlab, resource);
});
