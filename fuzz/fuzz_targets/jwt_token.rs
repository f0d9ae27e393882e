//! Any bytes as an ID token, through `oidc::peek` and `oidc::verify` against the fixed test key set
//! and trust, then `federation::decision` (what the caller is told). Nothing the fuzzer writes can
//! carry a valid signature, so no token may verify, and every refusal before the signature check
//! gets the constant anonymous answer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oam_trust::federation::decision::{self, UNAUTHENTICATED_DESCRIPTION};
use oam_trust::oidc::{self, VerifyError};
use oam_trust_fuzz::{issuer, now};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(jwt) = oidc::peek(token) {
        let _ = jwt.issuer();
    }
    let test = issuer();
    match oidc::verify(token, &test.trust, &test.keys, now()) {
        Ok(verified) => panic!("a token without the key's signature verified: {verified:?}"),
        Err(err) => {
            assert!(
                decision::before_signature(&err),
                "refused after the signature check, so the signature verified: {err:?}"
            );
            if let VerifyError::TooLarge { size, limit } = err {
                assert!(size > limit);
            }
            let denial = decision::verify_denial(&err);
            assert_eq!(denial.description, UNAUTHENTICATED_DESCRIPTION);
            // The audit detail never quotes the token (a JWT-shaped one: the short text of a
            // garbage token can occur in the fixed messages, e.g. "three dot-separated").
            let jwt_shaped = token.trim().len() >= 16 && token.matches('.').count() == 2;
            assert!(
                !jwt_shaped || !denial.detail.contains(token.trim()),
                "{}",
                denial.detail
            );
        }
    }
});
