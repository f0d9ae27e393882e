//! PURE: federation mode 3, the API server's own authenticator for GitLab CI ID tokens. For every
//! GitLabTrust with `federation.apiServer: true`, one `jwt` authenticator of kube-apiserver's
//! structured authentication config (`--authentication-config`, `apiserver.config.k8s.io/v1`
//! `AuthenticationConfiguration`) whose CEL carries the rules the token exchange enforces, so a job
//! that sends its ID token straight to the API server lands in exactly the grant groups
//! (`names::grant_group`) whose declarations it satisfies, and the grants' RoleBindings do the rest.
//!
//! What the exchange checks, and where it is here:
//! - `matcher::check_token` (the token as a whole) → `claimValidationRules`: the CI claims
//!   (`project_id`, `namespace_id`, `job_id`, `pipeline_id`, non-empty), the fork-pipeline refusals,
//!   the trust's `allow` list, `require.refProtected`, `require.environmentProtected` and
//!   token lifetime (`claims.exp - claims.iat` within `require.maxTokenAge`, else `oidc::verify`'s
//!   default, with `iat` and `jti` present as `oidc::verify` requires). One more rule, which the
//!   exchange does not have: every claim these rules read must be a JSON string when present, as
//!   GitLab sends them. The exchange also reads some numbers (and JSON booleans for `ref_protected`)
//!   leniently; the API server refuses such a token instead, so it is never wider than the exchange.
//!   What `oidc::verify` checks against the clock (`nbf`, `iat` not in the future) and the signing
//!   algorithm (RS256/ES256 only) has no place in the config: kube-apiserver checks `exp` itself and
//!   accepts every algorithm the issuer's keys support.
//! - `matcher::subject_mismatch` (one subject) → one conjunction per subject in the groups
//!   expression; a grant's group is given when ANY of its subjects holds. Globs become anchored RE2
//!   patterns ([`glob_regex`]) with exactly `glob::matches`' semantics; literal globs become `==`.
//! - A subject's own CEL `condition` is used as written, wrapped so a claim it reads and does not
//!   test with `has()` must be present, the claims (and GitLab's list claims it reads) are no longer
//!   than the exchange's evaluation bound (`condition::MAX_RANGE`), and only `true` counts. Only a
//!   conservative subset of CEL is translated (see [`condition_expression`]): a condition outside it
//!   could mean something else to the API server's cel-go than to the exchange's cel-rust, or fail to
//!   compile there and so invalidate the whole file; its subject is then never matched by the API
//!   server (fail closed) and a warning says so.
//!
//! Whenever the API server and the exchange could disagree, the API server is the narrower one:
//! a token it would map differently is refused (an evaluation error fails the whole token).
//!
//! What the API server cannot do that the exchange does ([`API_SERVER_LIMITS`]): there is no replay
//! protection, the credential lives as long as the ID token (no TTL shortening), and the operator keeps
//! no per-request audit record.
use std::collections::{BTreeMap, BTreeSet};

use cel::common::ast::{Expr, IdedExpr, LiteralValue};
use serde_json::{Value, json};

use super::condition;
use super::glob;
use super::grant::Grant;
use super::world::World;
use crate::api::access::{RefType, Subject};
use crate::api::oam::Application;
use crate::api::trust::{AllowedIdentity, GitLabTrust};
use crate::names;

/// `apiVersion` of the document (`v1` since Kubernetes 1.34).
pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
/// `kind` of the document.
pub const KIND: &str = "AuthenticationConfiguration";
/// Most `jwt` authenticators kube-apiserver accepts in one file (its validation refuses more:
/// `ValidateAuthenticationConfiguration`, "jwt: Too many").
pub const MAX_AUTHENTICATORS: usize = 64;
/// Longest CEL expression written. kube-apiserver compiles every expression of the file with cel-go
/// (whose parser refuses sources over 100,000 code points) and runs each under the Kubernetes CEL
/// per-call cost limit (`celconfig.PerCallLimit`, 1,000,000, set in the base environment every
/// Kubernetes CEL environment extends); a token whose evaluation exceeds it is refused. 32 KiB keeps
/// even a worst case of every byte being a glob over a 255-character claim (cel-go prices `matches`
/// at about string length × pattern length / 40) near a fifth of that budget, and far from the
/// parser's bound. An authenticator with a longer expression is left out, with a warning.
pub const MAX_EXPRESSION_BYTES: usize = 32 * 1024;
/// What a job authenticated by the API server does not get, compared with the token exchange.
pub const API_SERVER_LIMITS: &str = "a job authenticating to the API server with its ID token \
     (federation.apiServer) is not protected as an exchanged one: no replay protection (the same ID \
     token works until it expires), the credential lives as long as the ID token (no TTL shortening \
     to the grant's ttl), and no per-request audit record by the operator (only the API server's \
     audit log)";

/// The CI claims every token must carry (as `matcher::check_token` requires).
const CI_CLAIMS: [&str; 4] = ["project_id", "namespace_id", "job_id", "pipeline_id"];
/// Claims the rules and subject fields read, all strings in a GitLab CI ID token.
const STRING_CLAIMS: [&str; 17] = [
    "jti",
    "project_id",
    "namespace_id",
    "job_id",
    "pipeline_id",
    "job_project_id",
    "job_namespace_id",
    "project_path",
    "namespace_path",
    "ref",
    "ref_type",
    "ref_protected",
    "environment",
    "environment_protected",
    "deployment_tier",
    "pipeline_source",
    "user_login",
];
/// Claims GitLab sends as lists: the exchange's conditions see at most `condition::MAX_RANGE` of
/// their elements.
const LIST_CLAIMS: [&str; 3] = ["aud", "groups_direct", "user_identities"];

/// The rendered document and what to tell the platform team about it.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthnConfig {
    /// `apiVersion`, `kind` and `jwt` (empty when no trust enables the mode).
    pub document: Value,
    /// One line per trust: left out and why, or served, with what the API server cannot do.
    pub warnings: Vec<String>,
}

/// The authentication config for every GitLabTrust of `world` with `federation.apiServer: true`,
/// with the grants `World::derive` gives `apps` under those trusts. Deterministic: trusts by name,
/// grants by group name, whatever the order of `apps`.
pub fn authentication_config(world: &World, apps: &[Application]) -> AuthnConfig {
    let mut warnings = Vec::new();
    let enabled: Vec<(&String, &GitLabTrust)> = world
        .trusts
        .iter()
        .filter(|(_, t)| t.spec.federation().api_server)
        .collect();
    let mut grants: BTreeMap<&str, BTreeMap<String, Grant>> = BTreeMap::new();
    if !enabled.is_empty() {
        let mut failed = BTreeSet::new();
        for app in apps {
            match world.derive(app) {
                Ok(derived) => {
                    for grant in derived.grants.grants {
                        if let Some((name, _)) = enabled.iter().find(|(n, _)| **n == grant.trust) {
                            grants
                                .entry(name.as_str())
                                .or_default()
                                .insert(names::grant_group(&grant.namespace, &grant.name), grant);
                        }
                    }
                }
                Err(e) => {
                    failed.insert(format!(
                        "Application {}/{} does not render ({e}): none of its grants is in the API \
                         server's authenticators",
                        names::namespace_of(app),
                        app.metadata.name.as_deref().unwrap_or_default()
                    ));
                }
            }
        }
        warnings.extend(failed);
    }
    let mut jwt = Vec::new();
    let mut issuers = BTreeMap::new();
    for (name, trust) in enabled {
        let empty = BTreeMap::new();
        let under: Vec<&Grant> = grants
            .get(name.as_str())
            .unwrap_or(&empty)
            .values()
            .collect();
        let built = match authenticator(trust, &under) {
            Ok(built) => built,
            Err(reason) => {
                warnings.push(format!(
                    "GitLabTrust {name:?} is left out of the API server's authentication config: {reason}"
                ));
                continue;
            }
        };
        if let Some(first) = issuers.get(&trust.spec.issuer) {
            warnings.push(format!(
                "GitLabTrust {name:?} is left out of the API server's authentication config: its \
                 issuer {} is already served for GitLabTrust {first:?}, and the API server accepts \
                 one authenticator per issuer",
                trust.spec.issuer
            ));
            continue;
        }
        if jwt.len() == MAX_AUTHENTICATORS {
            warnings.push(format!(
                "GitLabTrust {name:?} is left out of the API server's authentication config: the API \
                 server accepts at most {MAX_AUTHENTICATORS} JWT authenticators"
            ));
            continue;
        }
        issuers.insert(trust.spec.issuer.clone(), name.clone());
        let mut message = format!(
            "GitLabTrust {name:?} is served by the API server ({} grant{}): {API_SERVER_LIMITS}",
            under.len(),
            if under.len() == 1 { "" } else { "s" }
        );
        if !built.gaps.is_empty() {
            message.push_str("; never matched by the API server: ");
            message.push_str(&built.gaps.join("; "));
        }
        warnings.push(message);
        jwt.push(built.authenticator);
    }
    AuthnConfig {
        document: json!({"apiVersion": API_VERSION, "kind": KIND, "jwt": jwt}),
        warnings,
    }
}

/// What the API server cannot carry of these subjects: each subject it will never match, and why.
/// Empty when it carries them all. The grant derivation reports these on the Application.
pub fn subject_gaps(subjects: &[Subject]) -> Vec<String> {
    subjects
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            subject_expression(s)
                .err()
                .map(|reason| format!("subject {i}: {reason}"))
        })
        .collect()
}

/// Why the API server cannot serve `trust` whatever its grants: its keys do not come from OIDC
/// discovery at the issuer, the only way kube-apiserver gets keys. `None` when it can.
pub fn unservable(trust: &GitLabTrust) -> Option<String> {
    let jwks = trust.spec.jwks.as_ref()?;
    if jwks.static_jwks.is_some() {
        return Some(
            "its keys are a static JWKS (jwks.static), and the API server gets keys only through \
             OIDC discovery at the issuer"
                .into(),
        );
    }
    jwks.uri.as_ref().map(|uri| {
        format!(
            "its keys come from jwks.uri {uri}, and the API server gets keys only from the jwks_uri \
             of the issuer's discovery document (issuer.discoveryURL names another discovery \
             document, not a JWKS), so it could trust other keys than the exchange"
        )
    })
}

struct Built {
    authenticator: Value,
    /// Subjects the API server never matches: `<ns>/<app> <grant id> subject <i>: <why>`.
    gaps: Vec<String>,
}

fn authenticator(trust: &GitLabTrust, grants: &[&Grant]) -> Result<Built, String> {
    let spec = &trust.spec;
    if let Some(reason) = unservable(trust) {
        return Err(reason);
    }
    check_issuer(&spec.issuer)?;
    let mut audiences: Vec<&str> = Vec::new();
    for aud in &spec.audiences {
        if aud.is_empty() {
            return Err("it names an empty audience".into());
        }
        if !audiences.contains(&aud.as_str()) {
            audiences.push(aud);
        }
    }
    if audiences.is_empty() {
        return Err("it names no audience".into());
    }
    let mut issuer = json!({"url": spec.issuer, "audiences": audiences});
    if audiences.len() > 1 {
        issuer["audienceMatchPolicy"] = "MatchAny".into();
    }
    if let Some(ca) = spec.jwks.as_ref().and_then(|j| j.ca_bundle.as_deref()) {
        check_ca_bundle(ca).map_err(|e| format!("jwks.caBundle {e}"))?;
        issuer["certificateAuthority"] = ca.into();
    }

    let mut rules = validation_rules(trust)?;
    let mut gaps = Vec::new();
    let mut terms = Vec::new();
    for grant in grants {
        let mut matches = Vec::new();
        for (i, subject) in grant.subjects.iter().enumerate() {
            match subject_expression(subject) {
                Ok(e) => matches.push(format!("({e})")),
                Err(reason) => gaps.push(format!(
                    "{}/{} {} subject {i}: {reason}",
                    grant.namespace, grant.application, grant.id
                )),
            }
        }
        if matches.is_empty() {
            continue;
        }
        terms.push(format!(
            "({} ? [{}] : [])",
            matches.join(" || "),
            cel_string(&names::grant_group(&grant.namespace, &grant.name))
        ));
    }
    let groups = concat(&terms);
    let username = format!(
        "{} + claims.job_id",
        cel_string(names::CI_JOB_USERNAME_PREFIX)
    );
    let extra: Vec<Value> = [
        (names::EXTRA_PROJECT_PATH, "project_path"),
        (names::EXTRA_PROJECT_ID, "project_id"),
        (names::EXTRA_PIPELINE_ID, "pipeline_id"),
        (names::EXTRA_REF, "ref"),
    ]
    .iter()
    .map(|(key, claim)| {
        json!({
            "key": key,
            "valueExpression": format!("has(claims.{claim}) ? claims.{claim} : \"\""),
        })
    })
    .collect();

    let mut expressions: Vec<(&str, &str)> = vec![
        ("claimMappings.username", &username),
        ("claimMappings.groups", &groups),
    ];
    for rule in &rules {
        expressions.push(("a claimValidationRule", rule.0.as_str()));
    }
    for (what, expression) in expressions {
        if expression.len() > MAX_EXPRESSION_BYTES {
            return Err(format!(
                "its {what} expression is {} bytes, over the limit of {MAX_EXPRESSION_BYTES} \
                 (authn::MAX_EXPRESSION_BYTES) for what the API server evaluates per token ({} \
                 grants under this trust); split the Applications over several trusts or use the \
                 token exchange",
                expression.len(),
                grants.len()
            ));
        }
    }
    let rules: Vec<Value> = rules
        .drain(..)
        .map(|(expression, message)| json!({"expression": expression, "message": message}))
        .collect();
    Ok(Built {
        authenticator: json!({
            "issuer": issuer,
            "claimValidationRules": rules,
            "claimMappings": {
                "username": {"expression": username},
                "groups": {"expression": groups},
                "extra": extra,
            },
        }),
        gaps,
    })
}

/// What kube-apiserver checks of `issuer.url` beyond the GitLabTrust's own rules: https, and no
/// user info, query or fragment (one such URL would make it refuse the whole file).
fn check_issuer(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("its issuer {url:?} is not an https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || url.contains(['?', '#']) {
        return Err(format!(
            "its issuer {url:?} has no host, or has user info, a query or a fragment, which the API \
             server refuses"
        ));
    }
    Ok(())
}

/// What kube-apiserver checks of `certificateAuthority`: PEM certificates, at least one.
fn check_ca_bundle(pem: &str) -> Result<(), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("contains no PEM CERTIFICATE block".into());
    }
    Ok(())
}

/// The token-wide checks of `matcher::check_token`, as `(expression, message)`.
fn validation_rules(trust: &GitLabTrust) -> Result<Vec<(String, String)>, String> {
    let spec = &trust.spec;
    let name = trust.metadata.name.as_deref().unwrap_or_default();
    // One `has()` test per claim: kube-apiserver v1.37 refused every token lacking one of these
    // claims under the equivalent `[..].all(c, !(c in claims) || type(claims[c]) == string)`
    // (seen in tests/authn.rs, the differential against the real API server).
    let mut rules = vec![(
        STRING_CLAIMS
            .map(|c| format!("(!has(claims.{c}) || type(claims.{c}) == string)"))
            .join(" && "),
        format!(
            "claims {} must be strings, as GitLab sends them",
            STRING_CLAIMS.join(", ")
        ),
    )];
    for claim in CI_CLAIMS {
        rules.push((
            format!("has(claims.{claim}) && claims.{claim} != \"\""),
            format!("not a GitLab CI ID token: claim {claim} is missing"),
        ));
    }
    rules.push((
        "!has(claims.job_project_id) || (claims.job_project_id == claims.project_id && \
         (!has(claims.job_namespace_id) || claims.job_namespace_id == claims.namespace_id))"
            .into(),
        "fork merge-request pipeline: code of one project running in another; refused".into(),
    ));
    rules.push((
        "has(claims.job_project_id) || !has(claims.pipeline_source) || \
         claims.pipeline_source != \"merge_request_event\""
            .into(),
        "merge-request pipeline without job_project_id (GitLab before 18.2.2): a fork pipeline \
         cannot be told apart; refused"
            .into(),
    ));
    let allowed: Vec<String> = spec.allow.iter().map(allow_expression).collect();
    rules.push((
        if allowed.is_empty() {
            "false".into()
        } else {
            allowed.join(" || ")
        },
        format!("the project is not in GitLabTrust {name}'s allow list"),
    ));
    if let Some(require) = &spec.require {
        if require.ref_protected == Some(true) {
            rules.push((
                claim_equals("ref_protected", "true"),
                format!("GitLabTrust {name} requires a protected ref"),
            ));
        }
        if require.environment_protected == Some(true) {
            rules.push((
                claim_equals("environment_protected", "true"),
                format!("GitLabTrust {name} requires a protected environment"),
            ));
        }
    }
    // `oidc::verify` (every exchange): `iat` present, `exp` after it, `exp - iat` within the trust's
    // maxTokenAge or the default; `check_token` asks no more. A `jti` too, though the API server has
    // no use for it: a token without one is not GitLab's.
    let max_token_age = spec
        .require
        .as_ref()
        .and_then(|r| r.max_token_age.as_deref());
    let (max, whose) = match max_token_age {
        Some(max) => (
            crate::duration::parse(max)
                .map_err(|e| format!("its require.maxTokenAge is invalid: {e}"))?,
            format!("GitLabTrust {name}'s maxTokenAge"),
        ),
        None => (
            crate::oidc::verify::DEFAULT_MAX_TOKEN_AGE,
            format!("the default maximum token age (GitLabTrust {name} sets no maxTokenAge)"),
        ),
    };
    let max = max.as_secs();
    rules.push((
        format!(
            "has(claims.exp) && has(claims.iat) && claims.exp > claims.iat && \
             claims.exp - claims.iat <= {max}"
        ),
        format!("the ID token must carry iat and live (exp - iat) at most {whose}, {max}s"),
    ));
    rules.push((
        "has(claims.jti) && claims.jti != \"\"".into(),
        "not a GitLab ID token: claim jti is missing".into(),
    ));
    Ok(rules)
}

/// One `allow` entry (`matcher::allows`): every field it names matches; one naming nothing never does.
fn allow_expression(entry: &AllowedIdentity) -> String {
    let mut parts = Vec::new();
    for (claim, want) in [
        ("namespace_id", &entry.namespace_id),
        ("project_id", &entry.project_id),
    ] {
        if let Some(want) = want {
            parts.push(claim_equals(claim, want));
        }
    }
    for (claim, want) in [
        ("namespace_path", &entry.namespace_path),
        ("project_path", &entry.project_path),
    ] {
        if let Some(want) = want {
            parts.push(claim_glob(claim, want));
        }
    }
    if parts.is_empty() {
        return "false".into();
    }
    format!("({})", parts.join(" && "))
}

/// One subject (`matcher::subject_mismatch`): all its fields, or why the API server cannot carry it.
pub fn subject_expression(s: &Subject) -> Result<String, String> {
    let mut parts = Vec::new();
    for (claim, want) in [
        ("project_id", &s.project_id),
        ("namespace_id", &s.namespace_id),
    ] {
        if let Some(want) = want {
            parts.push(claim_equals(claim, want));
        }
    }
    for (claim, want) in [
        ("project_path", &s.project_path),
        ("namespace_path", &s.namespace_path),
        ("ref", &s.ref_),
    ] {
        if let Some(want) = want {
            parts.push(claim_glob(claim, want));
        }
    }
    // As the matcher: a `ref` without `refType` means a branch.
    if let Some(ref_type) = s.ref_type.or(s.ref_.as_ref().map(|_| RefType::Branch)) {
        parts.push(claim_equals("ref_type", ref_type.as_claim()));
    }
    if let Some(want) = s.ref_protected {
        parts.push(claim_equals("ref_protected", &want.to_string()));
    }
    if let Some(want) = &s.environment {
        parts.push(claim_glob("environment", want));
    }
    if let Some(want) = s.environment_protected {
        parts.push(claim_equals("environment_protected", &want.to_string()));
    }
    if let Some(want) = &s.deployment_tier {
        parts.push(claim_equals("deployment_tier", want));
    }
    match s.pipeline_source.as_slice() {
        [] => {}
        [one] => parts.push(claim_equals("pipeline_source", one)),
        many => parts.push(format!(
            "has(claims.pipeline_source) && claims.pipeline_source in [{}]",
            many.iter()
                .map(|s| cel_string(s))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    if let Some(want) = &s.user_login {
        parts.push(claim_equals("user_login", want));
    }
    if let Some(source) = &s.condition {
        parts.push(condition_expression(source)?);
    }
    if parts.is_empty() {
        return Ok("true".into());
    }
    Ok(parts.join(" && "))
}

/// `has(claims.<claim>) && claims.<claim> == "<value>"`.
fn claim_equals(claim: &str, value: &str) -> String {
    format!(
        "has(claims.{claim}) && claims.{claim} == {}",
        cel_string(value)
    )
}

/// An anchored glob on a claim: `==` for a literal, else `matches` with [`glob_regex`].
fn claim_glob(claim: &str, pattern: &str) -> String {
    if glob::is_literal(pattern) {
        return claim_equals(claim, pattern);
    }
    format!(
        "has(claims.{claim}) && claims.{claim}.matches({})",
        cel_string(&glob_regex(pattern))
    )
}

/// The RE2 pattern (as cel-go's `matches` reads it) accepting exactly the strings `glob::matches`
/// accepts: anchored at both ends; `?` is one character other than `/`, `*` a run of them, `**` (any
/// run of `*` longer than one) any run at all, newlines included; every other character stands for
/// itself, regex metacharacters escaped.
pub fn glob_regex(pattern: &str) -> String {
    let mut out = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '?' => out.push_str("[^/]"),
            '*' if chars.peek() == Some(&'*') => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                out.push_str("(?s:.*)");
            }
            '*' => out.push_str("[^/]*"),
            c => {
                if "\\.+*?()|[]{}^$".contains(c) {
                    out.push('\\');
                }
                out.push(c);
            }
        }
    }
    out.push('$');
    out
}

/// A CEL string literal (double-quoted) holding exactly `s`.
pub fn cel_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `a + b + …` of lists, as a balanced tree so the nesting stays shallow for the API server's
/// parser however many grants there are; `[]` when there are none.
fn concat(terms: &[String]) -> String {
    match terms {
        [] => "[]".into(),
        [one] => one.clone(),
        _ => {
            let (left, right) = terms.split_at(terms.len() / 2);
            let wrap = |part: &[String]| {
                if part.len() > 1 {
                    format!("({})", concat(part))
                } else {
                    concat(part)
                }
            };
            format!("{} + {}", wrap(left), wrap(right))
        }
    }
}

/// A subject's CEL condition as the API server should evaluate it: true exactly where the
/// exchange's evaluation gives `true` (an error or any other value is "no match" there, while an
/// error fails the whole token in the API server). The condition is rewritten, not copied:
/// - each `||`, `&&`, `!`, ternary and boolean literal is kept as logic, and every other boolean
///   part (an "atom": a comparison, a call, `in`, a comprehension, a claim) becomes
///   `(<claims it reads are present> && <atom> == true)` (or `== false` under a `!`): the exchange's
///   cel-rust and cel-go absorb errors in `||` and `&&` alike, so this is true exactly when the
///   exchange's result is, for any set of present and missing claims, and it never errors on a
///   missing claim;
/// - at most `condition::MAX_RANGE` claims, and of GitLab's list claims it reads, at most that many
///   elements (the exchange cuts the claims to that bound; the API server is narrower beyond it);
/// - it is printed back from the syntax tree, fully parenthesized, so nothing but standard CEL
///   syntax reaches cel-go.
///
/// Only a subset of CEL is translated, one that means the same to cel-rust (the exchange) and to
/// cel-go in kube-apiserver's environment and that cel-go's type checker accepts: literals (no
/// doubles, no bytes), `claims` and comprehension variables, field selection and indexing, `has()`,
/// `all`/`exists`/`exists_one`/`map`/`filter`, list literals of one element type, the logical,
/// comparison, `+`, `-` and `in` operators, the ternary, `size`, `startsWith`, `endsWith`,
/// `contains`, `int()` and `string()`; types are inferred, and an operation cel-go's checker could
/// refuse (say, `size(x) == "1"`) is refused here. Anything else is an error: the subject is then
/// not matched by the API server (fail closed). Within an atom, a claim read on a path that is not
/// taken (`(has(claims.a) ? claims.a : "x") == "y"`) is still required, and a claim of an
/// unexpected type fails the token: there the API server is narrower than the exchange.
pub fn condition_expression(source: &str) -> Result<String, String> {
    let refused = |why: String| format!("its condition cannot be given to the API server: {why}");
    condition::ClaimCondition::compile(source).map_err(|e| refused(e.to_string()))?;
    let program = cel::Program::compile(source).map_err(|e| refused(e.to_string()))?;
    let mut scan = Scan::default();
    let ty = infer(program.expression(), &BTreeMap::new(), &mut scan).map_err(refused)?;
    if !compatible(&ty, &Ty::Bool) {
        return Err(refused("it does not evaluate to a boolean".into()));
    }
    let body = truth(program.expression(), true).map_err(refused)?;
    // No bound on the number of claims (the exchange's conditions see at most MAX_RANGE of them):
    // in kube-apiserver v1.37 `claims` supports neither `size()` nor `in` ("no such overload: size",
    // seen in tests/authn.rs), and a GitLab ID token carries about 35.
    let mut guards = Vec::new();
    for claim in LIST_CLAIMS {
        if scan.used.contains(claim) {
            guards.push(format!(
                "(!has(claims.{claim}) || size(claims.{claim}) <= {})",
                condition::MAX_RANGE
            ));
        }
    }
    guards.push(body);
    Ok(guards.join(" && "))
}

/// Longest translation of one condition (the rewriting repeats a ternary's condition).
const MAX_CONDITION_BYTES: usize = 8 * condition::MAX_SOURCE_BYTES;

/// CEL that is true exactly when `e` evaluates to `want` without error in the exchange.
fn truth(e: &IdedExpr, want: bool) -> Result<String, String> {
    let out = match &e.expr {
        Expr::Literal(LiteralValue::Boolean(b)) => (*b.inner() == want).to_string(),
        Expr::Call(call) if call.target.is_none() => {
            match (call.func_name.as_str(), &call.args[..]) {
                ("_||_", [a, b]) | ("_&&_", [a, b]) => {
                    // true || : either true; false ||: both false; and dually for &&.
                    let either = (call.func_name == "_||_") == want;
                    let op = if either { "||" } else { "&&" };
                    format!("({} {op} {})", truth(a, want)?, truth(b, want)?)
                }
                ("!_", [a]) => truth(a, !want)?,
                ("_?_:_", [c, x, y]) => format!(
                    "(({} && {}) || ({} && {}))",
                    truth(c, true)?,
                    truth(x, want)?,
                    truth(c, false)?,
                    truth(y, want)?
                ),
                _ => atom(e, want)?,
            }
        }
        _ => atom(e, want)?,
    };
    if out.len() > MAX_CONDITION_BYTES {
        return Err(format!(
            "it is longer than {MAX_CONDITION_BYTES} bytes once translated"
        ));
    }
    Ok(out)
}

/// `(<the claims e reads are present> && e == want)`.
fn atom(e: &IdedExpr, want: bool) -> Result<String, String> {
    let mut read = BTreeSet::new();
    referenced(e, &mut read);
    let mut parts: Vec<String> = read.iter().map(|c| format!("has(claims.{c})")).collect();
    parts.push(format!("{} == {want}", print(e)?));
    Ok(format!("({})", parts.join(" && ")))
}

/// Claims `e` reads (`claims.x`, `claims["x"]`, also under `has(claims.x.y)`), not those it only tests.
fn referenced(e: &IdedExpr, out: &mut BTreeSet<String>) {
    let is_claims = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if n == "claims");
    match &e.expr {
        Expr::Select(s) if is_claims(&s.operand) && !s.test => {
            out.insert(s.field.clone());
        }
        Expr::Select(s) if is_claims(&s.operand) => {}
        Expr::Select(s) => referenced(&s.operand, out),
        Expr::Call(c) => {
            if c.func_name == "_[_]"
                && let [target, key] = c.args.as_slice()
                && is_claims(target)
                && let Expr::Literal(LiteralValue::String(k)) = &key.expr
            {
                out.insert(k.inner().to_string());
            }
            c.target
                .iter()
                .map(|t| &**t)
                .chain(&c.args)
                .for_each(|a| referenced(a, out));
        }
        Expr::List(l) => l.elements.iter().for_each(|a| referenced(a, out)),
        Expr::Comprehension(c) => {
            for part in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                referenced(part, out);
            }
        }
        _ => {}
    }
}

/// Standard CEL source for a (type-checked) expression: every operation parenthesized, macros
/// written back as the calls they expand from.
fn print(e: &IdedExpr) -> Result<String, String> {
    // An operand that needs no parentheses before `.field`, `[index]` or `.method()`.
    let operand = |e: &IdedExpr| -> Result<String, String> {
        let text = print(e)?;
        Ok(match &e.expr {
            Expr::Ident(_) | Expr::List(_) => text,
            Expr::Select(s) if !s.test => text,
            _ => format!("({text})"),
        })
    };
    Ok(match &e.expr {
        Expr::Literal(literal) => match literal {
            LiteralValue::Boolean(b) => b.inner().to_string(),
            LiteralValue::Int(i) => i.inner().to_string(),
            LiteralValue::UInt(u) => format!("{}u", u.inner()),
            LiteralValue::String(s) => cel_string(s.inner()),
            LiteralValue::Null => "null".into(),
            LiteralValue::Double(_) | LiteralValue::Bytes(_) => {
                return Err("double and bytes literals are not translated".into());
            }
        },
        Expr::Ident(name) => name.clone(),
        Expr::Select(s) if s.test => format!("has({}.{})", operand(&s.operand)?, s.field),
        Expr::Select(s) => format!("{}.{}", operand(&s.operand)?, s.field),
        Expr::List(l) => format!(
            "[{}]",
            l.elements
                .iter()
                .map(print)
                .collect::<Result<Vec<_>, _>>()?
                .join(", ")
        ),
        Expr::Call(c) => {
            let args = c.args.iter().map(print).collect::<Result<Vec<_>, _>>()?;
            let binary = |op: &str| format!("({} {op} {})", args[0], args[1]);
            match (c.func_name.as_str(), &c.target, args.len()) {
                ("_==_", None, 2) => binary("=="),
                ("_!=_", None, 2) => binary("!="),
                ("_<_", None, 2) => binary("<"),
                ("_<=_", None, 2) => binary("<="),
                ("_>_", None, 2) => binary(">"),
                ("_>=_", None, 2) => binary(">="),
                ("_&&_", None, 2) => binary("&&"),
                ("_||_", None, 2) => binary("||"),
                ("_+_", None, 2) => binary("+"),
                ("_-_", None, 2) => binary("-"),
                ("@in", None, 2) => binary("in"),
                ("!_", None, 1) => format!("!({})", args[0]),
                ("-_", None, 1) => format!("-({})", args[0]),
                ("_?_:_", None, 3) => format!("({} ? {} : {})", args[0], args[1], args[2]),
                ("_[_]", None, 2) => format!("{}[{}]", operand(&c.args[0])?, args[1]),
                (name, Some(target), _) => {
                    format!("{}.{name}({})", operand(target)?, args.join(", "))
                }
                (name, None, _) => format!("{name}({})", args.join(", ")),
            }
        }
        Expr::Comprehension(c) => print_macro(c)?,
        _ => return Err("an expression that cannot be printed".into()),
    })
}

/// The macro call a comprehension expanded from (cel-rust's expansions of `all`, `exists`,
/// `exists_one`, `map` and `filter`).
fn print_macro(c: &cel::common::ast::ComprehensionExpr) -> Result<String, String> {
    let accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if *n == c.accu_var);
    fn call(e: &IdedExpr) -> Option<(&str, &[IdedExpr])> {
        match &e.expr {
            Expr::Call(call) if call.target.is_none() => {
                Some((call.func_name.as_str(), &call.args[..]))
            }
            _ => None,
        }
    }
    // `@result + [x]`: the appended element.
    fn appended<'e>(e: &'e IdedExpr, accu_var: &str) -> Option<&'e IdedExpr> {
        match call(e) {
            Some(("_+_", [a, b])) if matches!(&a.expr, Expr::Ident(n) if n == accu_var) => {
                match &b.expr {
                    Expr::List(l) if l.elements.len() == 1 => Some(&l.elements[0]),
                    _ => None,
                }
            }
            _ => None,
        }
    }
    let range = match &c.iter_range.expr {
        Expr::Ident(_) | Expr::List(_) => print(&c.iter_range)?,
        Expr::Select(s) if !s.test => print(&c.iter_range)?,
        _ => format!("({})", print(&c.iter_range)?),
    };
    let v = &c.iter_var;
    fn literal(e: &IdedExpr) -> Option<&LiteralValue> {
        match &e.expr {
            Expr::Literal(l) => Some(l),
            _ => None,
        }
    }
    let unknown = || Err("a comprehension that is no standard macro".to_string());
    if c.accu_var != "@result" || c.iter_var2.is_some() {
        return unknown();
    }
    Ok(match (literal(&c.accu_init), call(&c.loop_step)) {
        (Some(LiteralValue::Boolean(b)), Some((op, [a, pred])))
            if accu(a)
                && accu(&c.result)
                && ((op == "_&&_" && *b.inner()) || (op == "_||_" && !*b.inner())) =>
        {
            let name = if op == "_&&_" { "all" } else { "exists" };
            format!("{range}.{name}({v}, {})", print(pred)?)
        }
        (Some(LiteralValue::Int(zero)), Some(("_?_:_", [pred, plus, keep])))
            if *zero.inner() == 0
                && accu(keep)
                && matches!(call(plus), Some(("_+_", [a, _])) if accu(a)) =>
        {
            format!("{range}.exists_one({v}, {})", print(pred)?)
        }
        (None, Some(("_+_", _)))
            if matches!(&c.accu_init.expr, Expr::List(l) if l.elements.is_empty())
                && accu(&c.result) =>
        {
            match appended(&c.loop_step, &c.accu_var) {
                Some(f) => format!("{range}.map({v}, {})", print(f)?),
                None => return unknown(),
            }
        }
        (None, Some(("_?_:_", [pred, step, keep])))
            if matches!(&c.accu_init.expr, Expr::List(l) if l.elements.is_empty())
                && accu(keep)
                && accu(&c.result) =>
        {
            match appended(step, &c.accu_var) {
                Some(f) if matches!(&f.expr, Expr::Ident(n) if n == v) => {
                    format!("{range}.filter({v}, {})", print(pred)?)
                }
                Some(f) => format!("{range}.map({v}, {}, {})", print(pred)?, print(f)?),
                None => return unknown(),
            }
        }
        _ => return unknown(),
    })
}

/// Claims a condition reads (`claims.x`, `claims["x"]`) and tests (`has(claims.x)`).
#[derive(Default)]
struct Scan {
    used: BTreeSet<String>,
    tested: BTreeSet<String>,
}

/// The static types the translation tracks; `Dyn` is anything read from the claims.
#[derive(Clone, Debug, PartialEq)]
enum Ty {
    Dyn,
    Bool,
    Int,
    UInt,
    String,
    Null,
    List(Box<Ty>),
    /// `claims` itself: a map of strings to anything.
    Claims,
}

/// Words cel-go's parser reserves; as identifiers or fields they fail there.
const RESERVED: [&str; 21] = [
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
    "in",
    "null",
    "true",
    "false",
];

fn identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok || RESERVED.contains(&name) {
        return Err(format!("{name:?} is not a plain identifier"));
    }
    Ok(())
}

/// Both types may meet in `==`, `in` or a ternary without cel-go's checker refusing it.
fn compatible(a: &Ty, b: &Ty) -> bool {
    match (a, b) {
        (Ty::Dyn, _) | (_, Ty::Dyn) => true,
        (Ty::List(x), Ty::List(y)) => compatible(x, y),
        (Ty::Null, Ty::Null) => true,
        _ => a == b,
    }
}

/// The more specific of two compatible types (refusing more downstream is the safe side).
fn specific(a: Ty, b: Ty) -> Ty {
    match (a, b) {
        (Ty::Dyn, b) => b,
        (a, _) => a,
    }
}

fn one_of(t: &Ty, allowed: &[Ty]) -> bool {
    *t == Ty::Dyn || allowed.contains(t)
}

fn infer(e: &IdedExpr, vars: &BTreeMap<String, Ty>, scan: &mut Scan) -> Result<Ty, String> {
    match &e.expr {
        Expr::Literal(literal) => match literal {
            LiteralValue::Boolean(_) => Ok(Ty::Bool),
            LiteralValue::Int(_) => Ok(Ty::Int),
            LiteralValue::UInt(_) => Ok(Ty::UInt),
            LiteralValue::String(_) => Ok(Ty::String),
            LiteralValue::Null => Ok(Ty::Null),
            LiteralValue::Double(_) => Err("double literals are not translated".into()),
            LiteralValue::Bytes(_) => Err("bytes literals are not translated".into()),
        },
        Expr::Ident(name) => match vars.get(name) {
            Some(t) => Ok(t.clone()),
            None if name == "claims" => Ok(Ty::Claims),
            None => Err(format!("unknown identifier {name:?}")),
        },
        Expr::Select(select) => {
            identifier(&select.field)?;
            let is_claims = matches!(&select.operand.expr, Expr::Ident(n) if n == "claims" && !vars.contains_key(n));
            if is_claims {
                let set = if select.test {
                    &mut scan.tested
                } else {
                    &mut scan.used
                };
                set.insert(select.field.clone());
            } else {
                let operand = infer(&select.operand, vars, scan)?;
                if !one_of(&operand, &[Ty::Claims]) {
                    return Err(format!("field .{} of a {operand:?}", select.field));
                }
            }
            Ok(if select.test { Ty::Bool } else { Ty::Dyn })
        }
        Expr::Call(call) => infer_call(call, vars, scan),
        Expr::List(list) => {
            let mut element = None;
            for item in &list.elements {
                let t = infer(item, vars, scan)?;
                match &element {
                    None => element = Some(t),
                    Some(first) if *first == t => {}
                    Some(first) => {
                        return Err(format!("a list literal mixes {first:?} and {t:?}"));
                    }
                }
            }
            Ok(Ty::List(Box::new(element.unwrap_or(Ty::Dyn))))
        }
        Expr::Comprehension(c) => {
            if c.iter_var2.is_some() {
                return Err("two-variable comprehensions are not translated".into());
            }
            for var in [&c.iter_var, &c.accu_var] {
                if var == "claims" {
                    return Err("a comprehension variable named claims".into());
                }
                if var != "@result" {
                    identifier(var)?;
                }
            }
            let item = match infer(&c.iter_range, vars, scan)? {
                Ty::List(t) => *t,
                Ty::Claims => Ty::String,
                Ty::Dyn => Ty::Dyn,
                other => return Err(format!("a comprehension over a {other:?}")),
            };
            let accu = infer(&c.accu_init, vars, scan)?;
            let mut inner = vars.clone();
            inner.insert(c.iter_var.clone(), item);
            inner.insert(c.accu_var.clone(), accu.clone());
            let cond = infer(&c.loop_cond, &inner, scan)?;
            if !compatible(&cond, &Ty::Bool) {
                return Err("a comprehension condition that is not a boolean".into());
            }
            let step = infer(&c.loop_step, &inner, scan)?;
            if !compatible(&step, &accu) {
                return Err("a comprehension step of another type than its start".into());
            }
            infer(&c.result, &inner, scan)
        }
        Expr::Map(_) | Expr::Struct(_) => Err("map and message literals are not translated".into()),
        Expr::Unspecified => Err("an unspecified expression".into()),
    }
}

fn infer_call(
    call: &cel::common::ast::CallExpr,
    vars: &BTreeMap<String, Ty>,
    scan: &mut Scan,
) -> Result<Ty, String> {
    let name = call.func_name.as_str();
    let mut args = Vec::new();
    if let Some(target) = &call.target {
        args.push(infer(target, vars, scan)?);
    }
    for a in &call.args {
        args.push(infer(a, vars, scan)?);
    }
    // `claims["x"]` reads claim x as `claims.x` does.
    if name == "_[_]"
        && let [target, key] = call.args.as_slice()
        && matches!(&target.expr, Expr::Ident(n) if n == "claims" && !vars.contains_key(n))
    {
        match &key.expr {
            Expr::Literal(LiteralValue::String(s)) => {
                let s = s.inner().to_string();
                identifier(&s)?;
                scan.used.insert(s);
            }
            _ => return Err("claims indexed by a computed key".into()),
        }
    }
    let member = call.target.is_some();
    let bad = || {
        Err(format!(
            "{name}({}) is outside the CEL both engines read alike",
            args.iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    let numeric_or_string = [Ty::Int, Ty::UInt, Ty::String];
    match (name, member, args.as_slice()) {
        ("_&&_" | "_||_", false, [a, b]) if one_of(a, &[Ty::Bool]) && one_of(b, &[Ty::Bool]) => {
            Ok(Ty::Bool)
        }
        ("!_" | "@not_strictly_false", false, [a]) if one_of(a, &[Ty::Bool]) => Ok(Ty::Bool),
        ("_==_" | "_!=_", false, [a, b]) if compatible(a, b) => Ok(Ty::Bool),
        ("_<_" | "_<=_" | "_>_" | "_>=_", false, [a, b])
            if one_of(a, &numeric_or_string)
                && one_of(b, &numeric_or_string)
                && compatible(a, b) =>
        {
            Ok(Ty::Bool)
        }
        ("_+_", false, [a, b]) if compatible(a, b) => match specific(a.clone(), b.clone()) {
            t @ (Ty::Dyn | Ty::Int | Ty::UInt | Ty::String | Ty::List(_)) => Ok(t),
            _ => bad(),
        },
        ("_-_", false, [a, b]) if compatible(a, b) => match specific(a.clone(), b.clone()) {
            t @ (Ty::Dyn | Ty::Int | Ty::UInt) => Ok(t),
            _ => bad(),
        },
        ("-_", false, [a]) if one_of(a, &[Ty::Int]) => Ok(a.clone()),
        ("_?_:_", false, [c, a, b]) if one_of(c, &[Ty::Bool]) && compatible(a, b) => {
            Ok(specific(a.clone(), b.clone()))
        }
        ("@in", false, [x, range]) => match range {
            Ty::List(t) if compatible(x, t) => Ok(Ty::Bool),
            Ty::Claims if one_of(x, &[Ty::String]) => Ok(Ty::Bool),
            Ty::Dyn => Ok(Ty::Bool),
            _ => bad(),
        },
        ("_[_]", false, [target, key]) => match target {
            Ty::List(t) if one_of(key, &[Ty::Int]) => Ok((**t).clone()),
            Ty::Claims if one_of(key, &[Ty::String]) => Ok(Ty::Dyn),
            Ty::Dyn if one_of(key, &[Ty::Int, Ty::String]) => Ok(Ty::Dyn),
            _ => bad(),
        },
        ("size", _, [Ty::Dyn | Ty::String | Ty::List(_) | Ty::Claims]) => Ok(Ty::Int),
        ("startsWith" | "endsWith" | "contains", true, [a, b])
            if one_of(a, &[Ty::String]) && one_of(b, &[Ty::String]) =>
        {
            Ok(Ty::Bool)
        }
        ("int", false, [a]) if one_of(a, &numeric_or_string) => Ok(Ty::Int),
        ("string", false, [a]) if one_of(a, &[Ty::Int, Ty::UInt, Ty::String, Ty::Bool]) => {
            Ok(Ty::String)
        }
        _ => bad(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patterns × values: the RE2 pattern must accept exactly what `glob::matches` accepts.
    const PATTERNS: [&str; 26] = [
        "main",
        "release-*",
        "release-?",
        "platform/*",
        "platform/**",
        "*/api",
        "**/api",
        "**",
        "*",
        "?",
        "",
        "v1.?.*",
        "v1.2",
        "a+b",
        "(x)",
        "[a]",
        "{1}",
        "a|b",
        "^x$",
        "a\\b",
        "a\"b",
        "feature/?x",
        "*-*",
        "***",
        "a*?b",
        "ünï*",
    ];
    const VALUES: [&str; 34] = [
        "",
        "main",
        "main2",
        "xmain",
        "release-",
        "release-1",
        "release-12",
        "release-1/x",
        "platform/api",
        "platform/team/api",
        "platform",
        "team/api",
        "a/b/api",
        "api",
        "v1.2.3",
        "v1x2.3",
        "v1.2",
        "v1x2",
        "a+b",
        "aab",
        "(x)",
        "x",
        "[a]",
        "a",
        "{1}",
        "a|b",
        "b",
        "^x$",
        "a\\b",
        "a\"b",
        "feature/ax",
        "feature/a/x",
        "line\nbreak-x",
        "ünïcode",
    ];

    #[test]
    fn glob_regex_agrees_with_glob_on_every_case() {
        let mut agreed = 0;
        for pattern in PATTERNS {
            let regex = glob_regex(pattern);
            let re = regex::Regex::new(&regex).unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
            for value in VALUES {
                assert_eq!(
                    re.is_match(value),
                    glob::matches(pattern, value),
                    "glob {pattern:?} as {regex:?} on {value:?}"
                );
                agreed += 1;
            }
        }
        assert_eq!(agreed, PATTERNS.len() * VALUES.len());
    }

    #[test]
    fn glob_regex_examples() {
        assert_eq!(glob_regex("release-*"), "^release-[^/]*$");
        assert_eq!(glob_regex("platform/**"), "^platform/(?s:.*)$");
        assert_eq!(glob_regex("v1.?"), r"^v1\.[^/]$");
        assert_eq!(glob_regex("***"), "^(?s:.*)$");
        assert_eq!(
            glob_regex("(a|b)[c]{d}^$+\\"),
            r"^\(a\|b\)\[c\]\{d\}\^\$\+\\$"
        );
    }

    #[test]
    fn cel_strings_round_trip() {
        for s in [
            "plain",
            "quo\"te",
            "back\\slash",
            "new\nline\ttab\r",
            "\u{7}bell",
            "ünï",
            "'",
        ] {
            let lit = cel_string(s);
            let value = cel::Program::compile(&lit)
                .unwrap_or_else(|e| panic!("{lit}: {e}"))
                .execute(&cel::Context::default())
                .unwrap();
            assert_eq!(
                value,
                cel::Value::String(std::sync::Arc::new(s.to_string())),
                "{lit}"
            );
        }
    }

    #[test]
    fn lists_concatenate_as_a_shallow_tree() {
        let terms: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
        assert_eq!(concat(&[]), "[]");
        assert_eq!(concat(&terms[..1]), "t0");
        assert_eq!(concat(&terms[..2]), "t0 + t1");
        assert_eq!(concat(&terms), "(t0 + t1) + (t2 + (t3 + t4))");
        let many: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
        let depth = concat(&many)
            .chars()
            .scan(0i32, |d, c| {
                *d += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                Some(*d)
            })
            .max();
        assert!(depth <= Some(10), "{depth:?}");
    }

    #[test]
    fn conditions_become_error_free_logic_over_guarded_atoms() {
        assert_eq!(
            condition_expression(r#"claims.user_access_level in ["maintainer", "owner"]"#).unwrap(),
            r#"(has(claims.user_access_level) && (claims.user_access_level in ["maintainer", "owner"]) == true)"#
        );
        // A claim the condition only tests is not required; `!` flips what an atom must be.
        assert_eq!(
            condition_expression(r#"!has(claims.environment) || claims.environment == "x""#)
                .unwrap(),
            r#"((has(claims.environment) == false) || (has(claims.environment) && (claims.environment == "x") == true))"#
        );
        // A ternary keeps which branch is taken.
        assert_eq!(
            condition_expression(
                r#"has(claims.environment) ? claims.environment != "prod" : false"#
            )
            .unwrap(),
            r#"(((has(claims.environment) == true) && (has(claims.environment) && (claims.environment != "prod") == true)) || ((has(claims.environment) == false) && false))"#
        );
        // GitLab's list claims: no longer than the exchange sees them; macros written back.
        assert_eq!(
            condition_expression(r#"claims.groups_direct.exists(g, g.startsWith("platform/"))"#)
                .unwrap(),
            r#"(!has(claims.groups_direct) || size(claims.groups_direct) <= 64) && (has(claims.groups_direct) && claims.groups_direct.exists(g, g.startsWith("platform/")) == true)"#
        );
        // Comments and layout do not survive; the syntax tree does.
        assert_eq!(
            condition_expression(
                "claims.ref == 'main' // deploys\n  && claims.exp - claims.iat < 600"
            )
            .unwrap(),
            r#"((has(claims.ref) && (claims.ref == "main") == true) && (has(claims.exp) && has(claims.iat) && ((claims.exp - claims.iat) < 600) == true))"#
        );
        for (source, printed) in [
            (r#"claims["ref"] == "main""#, r#"(claims["ref"] == "main")"#),
            (
                "size(claims.ref) > 3 || int(claims.project_id) > -100 || claims.runner_id == 5u",
                "(int(claims.project_id) > -100)",
            ),
            (
                r#"string(claims.runner_id) == "55""#,
                r#"(string(claims.runner_id) == "55")"#,
            ),
            (
                r#"claims.user_identities.exists(i, i.provider == "github")"#,
                r#"claims.user_identities.exists(i, (i.provider == "github"))"#,
            ),
            (
                r#"claims.groups_direct.filter(g, g.endsWith("/sre")).size() == 1"#,
                r#"((claims.groups_direct.filter(g, g.endsWith("/sre"))).size() == 1)"#,
            ),
            (
                r#"claims.groups_direct.map(g, g + "!").exists_one(g, g == "a!")"#,
                r#"(claims.groups_direct.map(g, (g + "!"))).exists_one(g, (g == "a!"))"#,
            ),
            (
                r#"[1, 2].map(x, x > 1, x - 1).all(y, y == 1)"#,
                "([1, 2].map(x, (x > 1), (x - 1))).all(y, (y == 1))",
            ),
            (
                r#""environment" in claims && claims.all(k, k != "evil")"#,
                r#"claims.all(k, (k != "evil"))"#,
            ),
            ("claims.ref == null", "(claims.ref == null)"),
            ("claims.ref_protected", "claims.ref_protected == true"),
        ] {
            let got = condition_expression(source).unwrap_or_else(|e| panic!("{source}: {e}"));
            assert!(got.contains(printed), "{source}: {got}");
            cel::Program::compile(&got).unwrap_or_else(|e| panic!("{got}: {e}"));
        }
    }

    #[test]
    fn conditions_outside_the_common_subset_are_refused() {
        for (source, why) in [
            (r#"claims.ref.matches("^m")"#, "matches("),
            (r#"claims.ref + "x""#, "boolean"),
            (r#"size(claims.ref) == "3""#, "_==_"),
            ("1.5 < claims.exp", "double"),
            (r#"b"x" == claims.ref"#, "bytes"),
            (r#"{"a": 1}.a == 1"#, "map"),
            (r#"claims.ref in ["a", 1]"#, "mixes"),
            ("other.ref == \"x\"", "unknown identifier"),
            ("claims[claims.ref] == \"x\"", "computed key"),
            (r#"has(claims.ref) + 1 == 2"#, "_+_"),
            (r#"true ? 1 : "a""#, "_?_:_"),
            (r#"claims.ref.lowerAscii() == "x""#, "lowerAscii"),
            ("claims.exp * 2 > 10", "_*_"),
            (r#"type(claims.ref) == string"#, "type"),
            (r#"[1].all(claims, claims == 1)"#, "named claims"),
            ("claims.(", "parse"),
        ] {
            let err = condition_expression(source).unwrap_err();
            assert!(err.contains(why), "{source}: {err}");
        }
    }

    #[test]
    fn issuers_the_api_server_refuses_are_caught() {
        assert!(check_issuer("https://gitlab.example.com").is_ok());
        assert!(check_issuer("https://gitlab.example.com/sub").is_ok());
        for bad in [
            "http://gitlab.example.com",
            "https://user@gitlab.example.com",
            "https://gitlab.example.com?x=1",
            "https://gitlab.example.com#f",
            "https:///path",
        ] {
            assert!(check_issuer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subjects_follow_the_matcher_field_by_field() {
        let subject = Subject {
            project_id: Some("1450".into()),
            ref_: Some("release-*".into()),
            ref_protected: Some(true),
            pipeline_source: vec!["push".into(), "web".into()],
            ..Default::default()
        };
        assert_eq!(
            subject_expression(&subject).unwrap(),
            r#"has(claims.project_id) && claims.project_id == "1450" && has(claims.ref) && claims.ref.matches("^release-[^/]*$") && has(claims.ref_type) && claims.ref_type == "branch" && has(claims.ref_protected) && claims.ref_protected == "true" && has(claims.pipeline_source) && claims.pipeline_source in ["push", "web"]"#
        );
        let tag = Subject {
            namespace_id: Some("72".into()),
            ref_type: Some(RefType::Tag),
            ..Default::default()
        };
        assert_eq!(
            subject_expression(&tag).unwrap(),
            r#"has(claims.namespace_id) && claims.namespace_id == "72" && has(claims.ref_type) && claims.ref_type == "tag""#
        );
        let gaps = subject_gaps(&[
            tag,
            Subject {
                project_id: Some("1".into()),
                condition: Some("claims.ref.matches('x')".into()),
                ..Default::default()
            },
        ]);
        assert_eq!(gaps.len(), 1);
        assert!(gaps[0].starts_with("subject 1: its condition"), "{gaps:?}");
    }
}
