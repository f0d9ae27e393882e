//! Claim matching: which grant a verified GitLab ID token gets. The exchange service and `explain`
//! both call `match_token`, so what `explain` prints is what the service does.
//!
//! Order: token-wide checks first (CI claims present, fork pipelines, the trust's `allow` and
//! `require`), then every grant of the trust: ANY subject may match, ALL fields inside a subject
//! must match. Exactly one matching grant is chosen; several are ambiguous unless `resource`
//! (`<namespace>/<application>[/<component>]`) narrows them (a component's trait grant is preferred
//! over the Application-wide policy grant).
//!
//! Subjects are judged by the *source* project claims (`project_*`, `namespace_*`): the project
//! whose code runs. Fork merge-request pipelines run in the parent project with the fork's code;
//! since GitLab 18.2.2 their `project_*` name the fork and `job_project_*` the parent. A token whose
//! `job_project_id`/`job_namespace_id` differ from `project_id`/`namespace_id` is refused outright,
//! and a `merge_request_event` token without `job_project_id` (older GitLab, where `project_*`
//! named the parent for fork pipelines) is refused too, because the two cannot be told apart.
use std::fmt;

use super::claims::GitLabClaims;
use super::condition::ClaimCondition;
use super::glob;
use super::grant::{Grant, GrantSet};
use crate::api::access::{RefType, Subject};
use crate::api::trust::{AllowedIdentity, GitLabTrust};

/// What `match_token` decided.
#[derive(Debug, PartialEq)]
pub enum MatchOutcome<'a> {
    /// The grant to issue, and the index of the subject that matched.
    Matched { grant: &'a Grant, subject: usize },
    /// The token fails the trust itself; no grant was considered.
    TokenRefused(TokenRefusal),
    /// No grant matched; for every grant, why.
    NoMatch(Vec<GrantMismatch>),
    /// Several grants match and `resource` did not pick one.
    Ambiguous(Vec<&'a Grant>),
}

/// Why a token fails the trust before any grant is looked at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("not a GitLab CI ID token: claim {claim} is missing")]
    MissingCiClaim { claim: &'static str },
    #[error(
        "fork merge-request pipeline: code of project {project_id} running in project {job_project_id}; refused"
    )]
    ForkPipeline {
        project_id: String,
        job_project_id: String,
    },
    #[error(
        "merge-request pipeline without job_project_id (GitLab before 18.2.2): a fork pipeline cannot be told apart; refused"
    )]
    UnverifiableMergeRequestPipeline,
    #[error("project {project_path:?} ({project_id}) is not in the trust's allow list")]
    NotAllowed {
        project_id: String,
        project_path: String,
    },
    #[error("the trust requires a protected ref; ref {ref_:?} is not protected")]
    RefNotProtected { ref_: String },
    #[error("the trust requires a protected environment; the job's environment is not protected")]
    EnvironmentNotProtected,
    #[error("the ID token lives {age}s (exp - iat), longer than the trust's maxTokenAge {max}s")]
    TokenTooOld { age: i64, max: u64 },
    #[error("the trust's require.maxTokenAge is invalid: {0}")]
    InvalidRequirement(String),
    #[error("invalid resource {0:?}: use <namespace>/<application>[/<component>]")]
    InvalidResource(String),
}

/// Why one grant did not match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantMismatch {
    pub grant: String,
    pub namespace: String,
    pub application: String,
    pub reason: MismatchReason,
}

/// The first condition that refused a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MismatchReason {
    /// The grant is under another GitLabTrust than the one that verified the token.
    OtherTrust { trust: String },
    /// `resource` names another Application or component.
    OtherResource { resource: String },
    /// For each subject, the first field that did not match.
    Subjects(Vec<SubjectMismatch>),
}

/// The first field of a subject that did not match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectMismatch {
    pub subject: usize,
    /// Field as written in the declaration (`projectId`, `ref`, `condition` …).
    pub field: &'static str,
    pub expected: String,
    /// The claim's value, `None` if the token lacks it.
    pub actual: Option<String>,
}

impl fmt::Display for SubjectMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subject {}: {} wants {}, token has {}",
            self.subject,
            self.field,
            self.expected,
            self.actual
                .as_deref()
                .map_or("nothing".to_string(), |a| format!("{a:?}"))
        )
    }
}

impl fmt::Display for GrantMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} {}: ",
            self.namespace, self.application, self.grant
        )?;
        match &self.reason {
            MismatchReason::OtherTrust { trust } => write!(f, "granted under trust {trust:?}"),
            MismatchReason::OtherResource { resource } => {
                write!(f, "not the requested resource {resource:?}")
            }
            MismatchReason::Subjects(subjects) => {
                let parts: Vec<String> = subjects.iter().map(ToString::to_string).collect();
                f.write_str(&parts.join("; "))
            }
        }
    }
}

/// Picks the grant for a verified token. `trust` is the GitLabTrust that verified it (its name
/// selects the grants; its spec supplies `allow` and `require`).
pub fn match_token<'a>(
    claims: &GitLabClaims,
    trust: &GitLabTrust,
    grants: &'a GrantSet,
    resource: Option<&str>,
) -> MatchOutcome<'a> {
    if let Err(refusal) = check_token(claims, trust) {
        return MatchOutcome::TokenRefused(refusal);
    }
    let wanted = match resource.map(parse_resource).transpose() {
        Ok(w) => w,
        Err(()) => {
            return MatchOutcome::TokenRefused(TokenRefusal::InvalidResource(
                resource.unwrap_or_default().to_string(),
            ));
        }
    };
    let trust_name = trust.metadata.name.as_deref().unwrap_or_default();
    // The usual outcome is a match: find it without writing down why the other grants did not
    // match, and explain (a second pass) only when nothing matched.
    let (mut matched, _) = scan(claims, trust_name, grants, wanted.as_ref(), resource, false);
    if matched.is_empty() {
        let (_, mismatches) = scan(claims, trust_name, grants, wanted.as_ref(), resource, true);
        return MatchOutcome::NoMatch(mismatches);
    }
    if matched.len() > 1
        && let Some(component) = wanted.as_ref().and_then(|w| w.component)
    {
        let specific: Vec<_> = matched
            .iter()
            .copied()
            .filter(|(g, _)| g.component.as_deref() == Some(component))
            .collect();
        if !specific.is_empty() {
            matched = specific;
        }
    }
    match matched.as_slice() {
        [] => MatchOutcome::NoMatch(Vec::new()),
        [(grant, subject)] => MatchOutcome::Matched {
            grant,
            subject: *subject,
        },
        _ => MatchOutcome::Ambiguous(matched.into_iter().map(|(g, _)| g).collect()),
    }
}

/// The grants of `trust_name` (within `wanted`) a subject of which the claims match, with the
/// subject's index; with `explain`, also why each other grant did not match.
fn scan<'a>(
    claims: &GitLabClaims,
    trust_name: &str,
    grants: &'a GrantSet,
    wanted: Option<&WantedResource<'_>>,
    resource: Option<&str>,
    explain: bool,
) -> (Vec<(&'a Grant, usize)>, Vec<GrantMismatch>) {
    let mut matched = Vec::new();
    let mut mismatches = Vec::new();
    for grant in &grants.grants {
        let mismatch = |reason| GrantMismatch {
            grant: grant.id.clone(),
            namespace: grant.namespace.clone(),
            application: grant.application.clone(),
            reason,
        };
        if grant.trust != trust_name {
            if explain {
                mismatches.push(mismatch(MismatchReason::OtherTrust {
                    trust: grant.trust.clone(),
                }));
            }
            continue;
        }
        if let Some(w) = wanted
            && !w.covers(grant)
        {
            if explain {
                mismatches.push(mismatch(MismatchReason::OtherResource {
                    resource: resource.unwrap_or_default().to_string(),
                }));
            }
            continue;
        }
        let mut failures = Vec::new();
        let mut hit = None;
        for (i, subject) in grant.subjects.iter().enumerate() {
            match check_subject(i, subject, claims, explain) {
                None => {
                    hit = Some(i);
                    break;
                }
                Some(failure) if explain => failures.push(failure),
                Some(_) => {}
            }
        }
        match hit {
            Some(subject) => matched.push((grant, subject)),
            None if explain => mismatches.push(mismatch(MismatchReason::Subjects(failures))),
            None => {}
        }
    }
    (matched, mismatches)
}

struct WantedResource<'r> {
    namespace: &'r str,
    application: &'r str,
    component: Option<&'r str>,
}

impl WantedResource<'_> {
    fn covers(&self, grant: &Grant) -> bool {
        grant.namespace == self.namespace
            && grant.application == self.application
            && match (self.component, &grant.component) {
                (Some(wanted), Some(c)) => wanted == c,
                // A policy grant covers every component; no component asked covers any grant.
                _ => true,
            }
    }
}

fn parse_resource(resource: &str) -> Result<WantedResource<'_>, ()> {
    let parts: Vec<&str> = resource.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(());
    }
    match parts.as_slice() {
        [ns, app] => Ok(WantedResource {
            namespace: ns,
            application: app,
            component: None,
        }),
        [ns, app, component] => Ok(WantedResource {
            namespace: ns,
            application: app,
            component: Some(component),
        }),
        _ => Err(()),
    }
}

/// Token-wide checks: CI claims, fork pipelines, the trust's `allow` and `require`.
pub fn check_token(claims: &GitLabClaims, trust: &GitLabTrust) -> Result<(), TokenRefusal> {
    for (claim, value) in [
        ("project_id", &claims.project_id),
        ("namespace_id", &claims.namespace_id),
        ("job_id", &claims.job_id),
        ("pipeline_id", &claims.pipeline_id),
    ] {
        if value.as_deref().is_none_or(str::is_empty) {
            return Err(TokenRefusal::MissingCiClaim { claim });
        }
    }
    let project_id = claims.project_id.clone().unwrap_or_default();
    match &claims.job_project_id {
        Some(job_project_id)
            if *job_project_id != project_id
                || claims
                    .job_namespace_id
                    .as_ref()
                    .is_some_and(|ns| Some(ns) != claims.namespace_id.as_ref()) =>
        {
            return Err(TokenRefusal::ForkPipeline {
                project_id,
                job_project_id: job_project_id.clone(),
            });
        }
        None if claims.pipeline_source.as_deref() == Some("merge_request_event") => {
            return Err(TokenRefusal::UnverifiableMergeRequestPipeline);
        }
        _ => {}
    }
    if !trust.spec.allow.iter().any(|entry| allows(entry, claims)) {
        return Err(TokenRefusal::NotAllowed {
            project_id,
            project_path: claims.project_path.clone().unwrap_or_default(),
        });
    }
    if let Some(require) = &trust.spec.require {
        if require.ref_protected == Some(true) && claims.ref_protected != Some(true) {
            return Err(TokenRefusal::RefNotProtected {
                ref_: claims.ref_.clone().unwrap_or_default(),
            });
        }
        if require.environment_protected == Some(true) && claims.environment_protected != Some(true)
        {
            return Err(TokenRefusal::EnvironmentNotProtected);
        }
        if let Some(max) = &require.max_token_age {
            let max = crate::duration::parse(max)
                .map_err(|e| TokenRefusal::InvalidRequirement(e.to_string()))?
                .as_secs();
            let age = match (claims.exp, claims.iat) {
                (Some(exp), Some(iat)) => exp - iat,
                _ => i64::MAX,
            };
            if age < 0 || age as u64 > max {
                return Err(TokenRefusal::TokenTooOld { age, max });
            }
        }
    }
    Ok(())
}

fn allows(entry: &AllowedIdentity, c: &GitLabClaims) -> bool {
    let exact = |want: &Option<String>, have: &Option<String>| {
        want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
    };
    let pattern = |want: &Option<String>, have: &Option<String>| {
        want.as_ref()
            .is_none_or(|w| have.as_deref().is_some_and(|h| glob::matches(w, h)))
    };
    let names_something = entry.namespace_id.is_some()
        || entry.namespace_path.is_some()
        || entry.project_id.is_some()
        || entry.project_path.is_some();
    names_something
        && exact(&entry.namespace_id, &c.namespace_id)
        && exact(&entry.project_id, &c.project_id)
        && pattern(&entry.namespace_path, &c.namespace_path)
        && pattern(&entry.project_path, &c.project_path)
}

/// The first field of `subject` the claims fail, or `None` if the subject matches.
pub fn subject_mismatch(
    index: usize,
    subject: &Subject,
    claims: &GitLabClaims,
) -> Option<SubjectMismatch> {
    check_subject(index, subject, claims, true)
}

/// As [`subject_mismatch`]; without `explain`, a failure names the field only (`expected` empty,
/// `actual` `None`), and nothing is formatted or copied.
fn check_subject(
    index: usize,
    subject: &Subject,
    claims: &GitLabClaims,
    explain: bool,
) -> Option<SubjectMismatch> {
    // The expected and actual texts are evaluated only when explaining.
    macro_rules! fail {
        ($field:expr, $expected:expr, $actual:expr $(,)?) => {
            Some(match explain {
                true => SubjectMismatch {
                    subject: index,
                    field: $field,
                    expected: $expected,
                    actual: $actual,
                },
                false => SubjectMismatch {
                    subject: index,
                    field: $field,
                    expected: String::new(),
                    actual: None,
                },
            })
        };
    }
    let bool_str = |b: Option<bool>| b.map(|b| b.to_string());
    for (field, want, have) in [
        ("projectId", &subject.project_id, &claims.project_id),
        ("namespaceId", &subject.namespace_id, &claims.namespace_id),
    ] {
        if let Some(want) = want
            && have.as_ref() != Some(want)
        {
            return fail!(field, format!("{want:?}"), have.clone());
        }
    }
    for (field, want, have) in [
        ("projectPath", &subject.project_path, &claims.project_path),
        (
            "namespacePath",
            &subject.namespace_path,
            &claims.namespace_path,
        ),
        ("ref", &subject.ref_, &claims.ref_),
    ] {
        if let Some(want) = want
            && !have.as_deref().is_some_and(|h| glob::matches(want, h))
        {
            return fail!(field, format!("glob {want:?}"), have.clone());
        }
    }
    // A `ref` without `refType` means a branch: a tag named like the branch (anyone who may push a
    // tag can create `main`) must not match it. A tag needs `refType: tag`.
    let ref_type = subject
        .ref_type
        .or(subject.ref_.as_ref().map(|_| RefType::Branch));
    if let Some(want) = ref_type
        && claims.ref_type.as_deref() != Some(want.as_claim())
    {
        return fail!("refType", want.as_claim().into(), claims.ref_type.clone());
    }
    if let Some(want) = subject.ref_protected
        && claims.ref_protected != Some(want)
    {
        return fail!(
            "refProtected",
            want.to_string(),
            bool_str(claims.ref_protected),
        );
    }
    if let Some(want) = &subject.environment
        && !claims
            .environment
            .as_deref()
            .is_some_and(|h| glob::matches(want, h))
    {
        return fail!(
            "environment",
            format!("glob {want:?}"),
            claims.environment.clone(),
        );
    }
    if let Some(want) = subject.environment_protected
        && claims.environment_protected != Some(want)
    {
        return fail!(
            "environmentProtected",
            want.to_string(),
            bool_str(claims.environment_protected),
        );
    }
    if let Some(want) = &subject.deployment_tier
        && claims.deployment_tier.as_ref() != Some(want)
    {
        return fail!(
            "deploymentTier",
            format!("{want:?}"),
            claims.deployment_tier.clone(),
        );
    }
    if !subject.pipeline_source.is_empty()
        && !claims
            .pipeline_source
            .as_ref()
            .is_some_and(|s| subject.pipeline_source.contains(s))
    {
        return fail!(
            "pipelineSource",
            format!("one of {:?}", subject.pipeline_source),
            claims.pipeline_source.clone(),
        );
    }
    if let Some(want) = &subject.user_login
        && claims.user_login.as_ref() != Some(want)
    {
        return fail!("userLogin", format!("{want:?}"), claims.user_login.clone());
    }
    if let Some(source) = &subject.condition {
        let verdict = ClaimCondition::compile(source).and_then(|c| c.evaluate(&claims.raw));
        match verdict {
            Ok(true) => {}
            Ok(false) => return fail!("condition", source.clone(), Some("false".into())),
            Err(e) => return fail!("condition", source.clone(), Some(e.to_string())),
        }
    }
    None
}
