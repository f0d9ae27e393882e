//! Checks of a declaration that need no cluster objects beyond its trust: subjects well-formed and
//! within the trust's `allow` list, TTL within the trust's bounds.
use std::time::Duration;

use super::condition::ClaimCondition;
use super::glob;
use super::grant::{DEFAULT_MAX_TTL, DEFAULT_TTL, RefusalReason};
use crate::api::access::Subject;
use crate::api::trust::{AllowedIdentity, GitLabTrust};

fn is_numeric_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn check_subject(i: usize, s: &Subject) -> Result<(), RefusalReason> {
    let invalid = |error: String| RefusalReason::InvalidSubject { subject: i, error };
    if !s.names_project_or_namespace() {
        return Err(RefusalReason::SubjectWithoutProjectOrNamespace { subject: i });
    }
    for (field, id) in [
        ("projectId", &s.project_id),
        ("namespaceId", &s.namespace_id),
    ] {
        if let Some(id) = id
            && !is_numeric_id(id)
        {
            return Err(invalid(format!(
                "{field} must be the numeric id, e.g. \"1450\", not {id:?}"
            )));
        }
    }
    for (field, value) in [
        ("projectPath", &s.project_path),
        ("namespacePath", &s.namespace_path),
        ("ref", &s.ref_),
        ("environment", &s.environment),
        ("deploymentTier", &s.deployment_tier),
        ("userLogin", &s.user_login),
    ] {
        if value.as_deref() == Some("") {
            return Err(invalid(format!("{field} must not be empty")));
        }
    }
    if s.pipeline_source.iter().any(String::is_empty) {
        return Err(invalid("pipelineSource entries must not be empty".into()));
    }
    if let Some(condition) = &s.condition {
        ClaimCondition::compile(condition).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(())
}

/// Whether some token could satisfy both the allow entry and the subject. Entries and subjects are
/// compared field by field where both constrain the same claim, and a namespace path against a
/// project path (`<namespace>/<project>`). This refuses declarations that can never work; the allow
/// list itself is enforced again on every token by `match_token`.
pub(super) fn allow_may_contain(entry: &AllowedIdentity, s: &Subject) -> bool {
    fn both<'a>(a: &'a Option<String>, b: &'a Option<String>) -> Option<(&'a str, &'a str)> {
        Some((a.as_deref()?, b.as_deref()?))
    }
    let ids_agree = |a: &Option<String>, b: &Option<String>| both(a, b).is_none_or(|(x, y)| x == y);
    let paths_overlap = |a: &Option<String>, b: &Option<String>| {
        both(a, b).is_none_or(|(x, y)| glob::overlap(x, y))
    };
    let ns_vs_project = |ns: &Option<String>, project: &Option<String>| {
        both(ns, project).is_none_or(|(n, p)| glob::overlap(&format!("{n}/*"), p))
    };
    ids_agree(&entry.namespace_id, &s.namespace_id)
        && ids_agree(&entry.project_id, &s.project_id)
        && paths_overlap(&entry.namespace_path, &s.namespace_path)
        && paths_overlap(&entry.project_path, &s.project_path)
        && ns_vs_project(&entry.namespace_path, &s.project_path)
        && ns_vs_project(&s.namespace_path, &entry.project_path)
}

pub(super) fn grant_ttl(
    trust_name: &str,
    trust: &GitLabTrust,
    declared: Option<&str>,
) -> Result<Duration, RefusalReason> {
    let invalid_trust = |e: crate::duration::DurationError| RefusalReason::InvalidTrust {
        trust: trust_name.to_string(),
        error: e.to_string(),
    };
    let tokens = trust.spec.tokens.clone().unwrap_or_default();
    let max = match tokens.max_ttl.as_deref() {
        Some(s) => crate::duration::parse(s).map_err(invalid_trust)?,
        None => DEFAULT_MAX_TTL,
    };
    let ttl = match declared {
        Some(s) => crate::duration::parse(s).map_err(|e| RefusalReason::InvalidTtl {
            error: e.to_string(),
        })?,
        None => match tokens.default_ttl.as_deref() {
            Some(s) => crate::duration::parse(s).map_err(invalid_trust)?,
            None => DEFAULT_TTL.min(max),
        },
    };
    if ttl.is_zero() {
        return Err(RefusalReason::InvalidTtl {
            error: "ttl must be longer than 0s".into(),
        });
    }
    if ttl > max {
        return Err(RefusalReason::TtlAboveMax {
            trust: trust_name.to_string(),
            ttl,
            max,
        });
    }
    Ok(ttl)
}
