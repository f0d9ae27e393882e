//! TTL capping: how long an issued token lives. The grant's TTL, capped by the trust's `maxTTL`, by what
//! is left of the ID token's own life and by the caller's `requested_ttl`; whole seconds, floored, so
//! it never ends past the ID token's `exp`. Pure: the clock comes in as `now`.
use std::time::{Duration, SystemTime};

use super::decision::{Denial, ErrorCode};
use crate::api::trust::GitLabTrust;

/// The issued token's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// Whole seconds, at least one.
    pub ttl: Duration,
    /// `now + ttl`: when the token is revoked.
    pub expires_at: SystemTime,
}

/// The token's lifetime, or a refusal when the ID token has less than a second left.
pub fn cap(
    grant_ttl: Duration,
    trust: &GitLabTrust,
    id_token_expires_at: SystemTime,
    requested: Option<Duration>,
    now: SystemTime,
) -> Result<Lifetime, Denial> {
    let remaining = id_token_expires_at
        .duration_since(now)
        .unwrap_or(Duration::ZERO);
    let mut ttl = grant_ttl.min(max_ttl(trust)).min(remaining);
    if let Some(requested) = requested {
        ttl = ttl.min(requested);
    }
    // Whole seconds, never rounded up past the ID token's exp.
    let ttl = Duration::from_secs(ttl.as_secs());
    if ttl.is_zero() {
        return Err(Denial::new(
            ErrorCode::InvalidGrant,
            "expired",
            "the ID token expires in less than a second; request a fresh token",
        ));
    }
    Ok(Lifetime {
        ttl,
        expires_at: now + ttl,
    })
}

/// The trust's `tokens.maxTTL`; the default when it is unset or unreadable.
fn max_ttl(trust: &GitLabTrust) -> Duration {
    trust
        .spec
        .tokens
        .as_ref()
        .and_then(|t| t.max_ttl.as_deref())
        .and_then(|m| crate::duration::parse(m).ok())
        .unwrap_or(crate::access::grant::DEFAULT_MAX_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(max_ttl: Option<&str>) -> GitLabTrust {
        let mut spec =
            serde_json::json!({"issuer": "https://gitlab.example.com", "audiences": ["a"]});
        if let Some(m) = max_ttl {
            spec["tokens"] = serde_json::json!({"maxTTL": m});
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust",
            "metadata": {"name": "t"}, "spec": spec
        }))
        .unwrap()
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn the_smallest_bound_wins() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let exp = now + 30 * MIN;
        let ttl = |grant, trust: &GitLabTrust, requested| {
            cap(grant, trust, exp, requested, now).unwrap().ttl
        };
        assert_eq!(
            ttl(10 * MIN, &trust(None), None),
            10 * MIN,
            "the grant's TTL"
        );
        assert_eq!(
            ttl(10 * MIN, &trust(Some("5m")), None),
            5 * MIN,
            "the trust's maxTTL"
        );
        assert_eq!(
            ttl(2 * 60 * MIN, &trust(None), None),
            30 * MIN,
            "the ID token's exp"
        );
        assert_eq!(
            ttl(10 * MIN, &trust(None), Some(MIN)),
            MIN,
            "the caller's request"
        );
        assert_eq!(
            ttl(10 * MIN, &trust(None), Some(20 * MIN)),
            10 * MIN,
            "a request cannot raise it"
        );
        // Without a maxTTL the default (1h) caps the grant.
        let far = now + 10 * 60 * MIN;
        assert_eq!(
            cap(2 * 60 * MIN, &trust(None), far, None, now).unwrap().ttl,
            60 * MIN
        );
        let life = cap(10 * MIN, &trust(None), exp, None, now).unwrap();
        assert_eq!(life.expires_at, now + 10 * MIN);
    }

    #[test]
    fn ttls_are_floored_to_whole_seconds_and_never_zero() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let life = cap(
            10 * MIN,
            &trust(None),
            now + Duration::from_millis(2_900),
            None,
            now,
        )
        .unwrap();
        assert_eq!(
            life.ttl,
            Duration::from_secs(2),
            "never past the ID token's exp"
        );
        for exp in [now + Duration::from_millis(999), now, now - MIN] {
            let refusal = cap(10 * MIN, &trust(None), exp, None, now).unwrap_err();
            assert_eq!(
                (refusal.code, refusal.category),
                (ErrorCode::InvalidGrant, "expired")
            );
        }
    }
}
