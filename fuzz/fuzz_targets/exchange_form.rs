//! `POST /v1/token` request parsing: any body, under the content types a client may send, through the
//! exchange's own reader (`federation::request::read`) with its body limit. A request is either
//! refused with a category the exchange knows, or yields fields within their documented bounds.
#![no_main]
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use oam_trust::federation::args::ExchangeArgs;
use oam_trust::federation::request;
use oam_trust::oidc::verify::MAX_TOKEN_BYTES;

const CATEGORIES: [&str; 5] = [
    "malformed_request",
    "body_too_large",
    "unsupported_grant_type",
    "unsupported_token_type",
    "too_large",
];

fuzz_target!(|data: &[u8]| {
    // The first byte picks the content type and a body limit (the default, or one the body may cross).
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = [
        "application/x-www-form-urlencoded",
        "Application/X-WWW-Form-Urlencoded; charset=utf-8",
        "application/json",
        "",
    ][usize::from(selector & 3)];
    let limit = if selector & 4 == 0 {
        ExchangeArgs::default().exchange_max_body_bytes
    } else {
        usize::from(selector >> 3) * 64
    };
    let mut headers = HeaderMap::new();
    if !content_type.is_empty() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    let result =
        futures::executor::block_on(request::read(&headers, Body::from(body.to_vec()), limit));
    match result {
        Ok(r) => {
            assert!(
                content_type
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            );
            assert!(body.len() <= limit, "a body over the limit was read");
            assert!(!r.subject_token.is_empty() && r.subject_token.len() <= MAX_TOKEN_BYTES);
            assert_eq!(r.subject_token, r.subject_token.trim());
            if let Some(resource) = &r.resource {
                let parts: Vec<&str> = resource.split('/').collect();
                assert!((2..=3).contains(&parts.len()), "{resource:?}");
                assert!(parts.iter().all(|p| !p.is_empty()), "{resource:?}");
            }
            if let Some(ttl) = r.requested_ttl {
                assert!(!ttl.is_zero());
            }
        }
        Err(denial) => {
            assert!(
                CATEGORIES.contains(&denial.category) || denial.category == "invalid_resource",
                "unexpected category {}",
                denial.category
            );
            if body.len() > limit && !content_type.is_empty() && selector & 3 < 2 {
                assert_eq!(denial.category, "body_too_large");
            }
        }
    }
});
