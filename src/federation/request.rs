//! Request parsing of `POST /v1/token` (RFC 8693 form fields): the content type, the body limit, and
//! each field checked on its own, so the caller learns which one is wrong. No client, no clock.
use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};

use super::decision::{self, Denial, ErrorCode};

/// Request fields after parsing.
pub struct ExchangeRequest {
    pub subject_token: String,
    pub resource: Option<String>,
    pub requested_ttl: Option<Duration>,
}

impl std::fmt::Debug for ExchangeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeRequest")
            .field("resource", &self.resource)
            .field("requested_ttl", &self.requested_ttl)
            .finish_non_exhaustive()
    }
}

/// Reads and parses the request: the form content type, at most `max_body_bytes` of body, the fields.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    max_body_bytes: usize,
) -> Result<ExchangeRequest, Denial> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    {
        return Err(invalid_request(
            "malformed_request",
            "Content-Type must be application/x-www-form-urlencoded (RFC 8693 form fields)",
        ));
    }
    let bytes = axum::body::to_bytes(body, max_body_bytes)
        .await
        .map_err(|_| {
            invalid_request(
                "body_too_large",
                format!("the request body is larger than {max_body_bytes} bytes"),
            )
        })?;
    parse_request(&bytes)
}

fn invalid_request(category: &'static str, description: impl Into<String>) -> Denial {
    Denial::new(ErrorCode::InvalidRequest, category, description)
}

fn parse_request(body: &[u8]) -> Result<ExchangeRequest, Denial> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
        invalid_request(
            "malformed_request",
            "the body is not application/x-www-form-urlencoded",
        )
    })?;
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for (k, v) in &pairs {
        if fields.insert(k.as_str(), v.as_str()).is_some() {
            return Err(invalid_request(
                "malformed_request",
                format!("parameter {k} is repeated; send each parameter once"),
            ));
        }
    }
    match fields.get("grant_type") {
        Some(&decision::GRANT_TYPE_TOKEN_EXCHANGE) => {}
        Some(other) => {
            return Err(invalid_request(
                "unsupported_grant_type",
                format!(
                    "grant_type {other:?} is not supported; use {}",
                    decision::GRANT_TYPE_TOKEN_EXCHANGE
                ),
            ));
        }
        None => {
            return Err(invalid_request(
                "malformed_request",
                format!(
                    "grant_type is missing; use {}",
                    decision::GRANT_TYPE_TOKEN_EXCHANGE
                ),
            ));
        }
    }
    match fields.get("subject_token_type") {
        Some(&(decision::TOKEN_TYPE_JWT | decision::TOKEN_TYPE_ID_TOKEN)) => {}
        _ => {
            return Err(invalid_request(
                "unsupported_token_type",
                format!(
                    "subject_token_type must be {} (or {})",
                    decision::TOKEN_TYPE_JWT,
                    decision::TOKEN_TYPE_ID_TOKEN
                ),
            ));
        }
    }
    let subject_token = fields
        .get("subject_token")
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            invalid_request(
                "malformed_request",
                "subject_token is missing: pass the GitLab ID token from the job's id_tokens:",
            )
        })?;
    if subject_token.len() > crate::oidc::verify::MAX_TOKEN_BYTES {
        return Err(invalid_request(
            "too_large",
            format!(
                "subject_token is {} bytes, more than the {}-byte limit; pass the ID token itself",
                subject_token.len(),
                crate::oidc::verify::MAX_TOKEN_BYTES
            ),
        ));
    }
    let resource = match fields.get("resource") {
        None | Some(&"") => None,
        Some(r) => {
            let parts: Vec<&str> = r.split('/').collect();
            if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
                return Err(Denial::new(
                    ErrorCode::InvalidTarget,
                    "invalid_resource",
                    format!("resource {r:?} is not <namespace>/<application>[/<component>]"),
                ));
            }
            Some(r.to_string())
        }
    };
    let requested_ttl = match fields.get("requested_ttl") {
        None | Some(&"") => None,
        Some(t) => match t.parse::<u64>() {
            Ok(secs) if secs > 0 => Some(Duration::from_secs(secs)),
            _ => {
                return Err(invalid_request(
                    "malformed_request",
                    format!("requested_ttl {t:?} must be a positive number of seconds"),
                ));
            }
        },
    };
    Ok(ExchangeRequest {
        subject_token: subject_token.to_string(),
        resource,
        requested_ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        serde_urlencoded::to_string(pairs).unwrap().into_bytes()
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        let ok = form(&[
            ("grant_type", decision::GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", "a.b.c"),
            ("subject_token_type", decision::TOKEN_TYPE_ID_TOKEN),
            ("resource", "team/shop/web"),
            ("requested_ttl", "120"),
        ]);
        let r = parse_request(&ok).unwrap();
        assert_eq!(r.resource.as_deref(), Some("team/shop/web"));
        assert_eq!(r.requested_ttl, Some(Duration::from_secs(120)));

        let wrong_grant = form(&[("grant_type", "password"), ("subject_token", "x")]);
        assert_eq!(
            parse_request(&wrong_grant).unwrap_err().category,
            "unsupported_grant_type"
        );
        let repeated = form(&[
            ("grant_type", decision::GRANT_TYPE_TOKEN_EXCHANGE),
            ("grant_type", decision::GRANT_TYPE_TOKEN_EXCHANGE),
        ]);
        assert_eq!(
            parse_request(&repeated).unwrap_err().category,
            "malformed_request"
        );
        let bad_resource = form(&[
            ("grant_type", decision::GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", "a.b.c"),
            ("subject_token_type", decision::TOKEN_TYPE_JWT),
            ("resource", "only-namespace"),
        ]);
        assert_eq!(
            parse_request(&bad_resource).unwrap_err().code,
            ErrorCode::InvalidTarget
        );
        let big = "x".repeat(crate::oidc::verify::MAX_TOKEN_BYTES + 1);
        let too_large = form(&[
            ("grant_type", decision::GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", &big),
            ("subject_token_type", decision::TOKEN_TYPE_JWT),
        ]);
        assert_eq!(parse_request(&too_large).unwrap_err().category, "too_large");
    }
}
