//! Reading a compact JWT's header and payload **without verifying anything**.
//!
//! What comes out of here is whatever the sender wrote: use it only to route a token (which trust's keys
//! should verify it) or to explain it offline, never to decide access. `verify` is the one place a
//! token's claims become trustworthy. Pure: no keys, no clock, no IO.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Why a token could not be peeked at. The messages are the `reason` of `VerifyError::Malformed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeekError {
    #[error("expected three dot-separated parts")]
    NotCompact,
    #[error("{part} is not base64url")]
    NotBase64Url { part: &'static str },
    #[error("{part} is not a JSON object")]
    NotJsonObject { part: &'static str },
}

/// The three base64url parts of a compact JWT (surrounding whitespace trimmed), not yet decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwtParts<'t> {
    token: &'t str,
    pub header: &'t str,
    pub payload: &'t str,
    pub signature: &'t str,
}

impl<'t> JwtParts<'t> {
    /// Splits `token` into exactly three dot-separated parts.
    pub fn split(token: &'t str) -> Result<JwtParts<'t>, PeekError> {
        let token = token.trim();
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PeekError::NotCompact);
        };
        Ok(JwtParts {
            token,
            header,
            payload,
            signature,
        })
    }

    /// `header.payload`: the bytes the signature covers.
    pub fn signing_input(&self) -> &'t str {
        &self.token[..self.header.len() + 1 + self.payload.len()]
    }

    /// The decoded header, unverified.
    pub fn header(&self) -> Result<Map<String, Value>, PeekError> {
        decode_json_object(self.header, "header")
    }

    /// The decoded payload claims, unverified.
    pub fn claims(&self) -> Result<Map<String, Value>, PeekError> {
        decode_json_object(self.payload, "payload")
    }
}

/// A token's header and claims as the sender wrote them. **Unverified**: for routing and `explain` only.
#[derive(Debug, Clone, PartialEq)]
pub struct UnverifiedJwt {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
}

impl UnverifiedJwt {
    /// The `iss` claim, if it is a string: which trust should verify the token.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// Decodes a compact JWT's header and payload **without checking its signature, issuer, audience or
/// times**. For routing a token to the trust that will verify it, and for offline explanations only.
pub fn peek(token: &str) -> Result<UnverifiedJwt, PeekError> {
    let parts = JwtParts::split(token)?;
    Ok(UnverifiedJwt {
        header: parts.header()?,
        claims: parts.claims()?,
    })
}

fn decode_json_object(part: &str, what: &'static str) -> Result<Map<String, Value>, PeekError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| PeekError::NotBase64Url { part: what })?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(PeekError::NotJsonObject { part: what }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn reads_header_and_claims_of_an_unsigned_token() {
        let token = format!(
            " {}.{}.sig\n",
            b64(r#"{"alg":"RS256","kid":"k1"}"#),
            b64(r#"{"iss":"https://gitlab.example.com","project_id":"1450"}"#)
        );
        let jwt = peek(&token).unwrap();
        assert_eq!(jwt.issuer(), Some("https://gitlab.example.com"));
        assert_eq!(jwt.header.get("kid"), Some(&Value::from("k1")));
        assert_eq!(jwt.claims.get("project_id"), Some(&Value::from("1450")));
    }

    #[test]
    fn signing_input_is_header_dot_payload_of_the_trimmed_token() {
        let parts = JwtParts::split("  aaa.bbb.ccc ").unwrap();
        assert_eq!(parts.signing_input(), "aaa.bbb");
        assert_eq!(parts.signature, "ccc");
    }

    #[test]
    fn refuses_what_is_not_a_compact_jwt() {
        let obj = b64("{}");
        assert_eq!(peek("garbage"), Err(PeekError::NotCompact));
        assert_eq!(peek(&format!("{obj}.{obj}")), Err(PeekError::NotCompact));
        assert_eq!(
            peek(&format!("{obj}.{obj}.s.extra")),
            Err(PeekError::NotCompact)
        );
        assert_eq!(
            peek(&format!("{obj}.!!.s")),
            Err(PeekError::NotBase64Url { part: "payload" })
        );
        // Padding is not base64url as JWS writes it.
        assert_eq!(
            peek(&format!("{}.{obj}.s", URL_SAFE_NO_PAD.encode("{}") + "=")),
            Err(PeekError::NotBase64Url { part: "header" })
        );
        assert_eq!(
            peek(&format!("{}.{obj}.s", b64("[1]"))),
            Err(PeekError::NotJsonObject { part: "header" })
        );
        assert_eq!(
            PeekError::NotJsonObject { part: "payload" }.to_string(),
            "payload is not a JSON object"
        );
    }

    #[test]
    fn an_issuer_that_is_not_a_string_is_none() {
        let token = format!("{}.{}.", b64("{}"), b64(r#"{"iss":42}"#));
        assert_eq!(peek(&token).unwrap().issuer(), None);
    }
}
