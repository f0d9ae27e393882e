//! GitLab agent identities: the `ci_access` groups (`access_as: ci_job`) a grant's RoleBinding names
//! when the trust enables the agent, and the conditions the agent cannot carry.
use std::collections::BTreeSet;

use super::glob;
use super::grant::Unenforceable;
use crate::api::access::Subject;
use crate::api::trust::GitLabTrust;

/// Whether an environment name is its own GitLab slug (lower-case alphanumerics and single `-`,
/// starting with a letter, at most 24 characters). Other names get a slug with a random suffix that
/// cannot be derived from the name, so no `project_env` group can be written for them.
fn is_own_slug(env: &str) -> bool {
    env.len() <= 24
        && env.starts_with(|c: char| c.is_ascii_lowercase())
        && !env.ends_with('-')
        && !env.contains("--")
        && env
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Groups the GitLab agent impersonates in `access_as: ci_job` mode that carry these subjects, and
/// what it cannot check. Only project ids are bound: `gitlab:group:<id>` also covers every subgroup,
/// which a `namespaceId` subject does not, so namespace-only subjects get no agent group.
pub(super) fn agent_identity(
    subjects: &[Subject],
    trust: &GitLabTrust,
) -> (Vec<String>, Vec<Unenforceable>) {
    let mut groups = BTreeSet::new();
    let mut out = Vec::new();
    let mut note = |subject: Option<usize>, field: &str, reason: &str| {
        out.push(Unenforceable {
            subject,
            field: field.to_string(),
            reason: reason.to_string(),
        })
    };
    if let Some(require) = &trust.spec.require {
        if require.ref_protected == Some(true) {
            note(
                None,
                "require.refProtected",
                "the agent does not see whether the ref is protected",
            );
        }
        if require.environment_protected == Some(true) {
            note(
                None,
                "require.environmentProtected",
                "the agent does not see whether the environment is protected",
            );
        }
    }
    for (i, s) in subjects.iter().enumerate() {
        let at = Some(i);
        match (&s.project_id, &s.environment, &s.deployment_tier) {
            (None, _, _) => note(
                at,
                "projectId",
                "the agent identifies jobs only by numeric project id; this subject gets no agent group",
            ),
            (Some(project), Some(env), tier) if glob::is_literal(env) && is_own_slug(env) => {
                groups.insert(format!("gitlab:project_env:{project}:{env}"));
                if tier.is_some() {
                    note(
                        at,
                        "deploymentTier",
                        "bound by environment; the tier is not checked separately",
                    );
                }
            }
            // Binding the tier instead would admit every environment of that tier: broader than declared.
            (Some(_), Some(_), _) => note(
                at,
                "environment",
                "not a literal GitLab environment slug; this subject gets no agent group",
            ),
            (Some(project), None, Some(tier)) => {
                groups.insert(format!("gitlab:project_env_tier:{project}:{tier}"));
            }
            (Some(project), None, None) => {
                groups.insert(format!("gitlab:project:{project}"));
            }
        }
        for (set, field, reason) in [
            (
                s.project_path.is_some(),
                "projectPath",
                "the agent binds by project id only",
            ),
            (
                s.namespace_id.is_some(),
                "namespaceId",
                "the agent binds by project id only",
            ),
            (
                s.namespace_path.is_some(),
                "namespacePath",
                "the agent binds by project id only",
            ),
            (s.ref_.is_some(), "ref", "the agent does not carry the ref"),
            (
                s.ref_type.is_some(),
                "refType",
                "the agent does not carry the ref type",
            ),
            (
                s.ref_protected.is_some(),
                "refProtected",
                "the agent does not carry whether the ref is protected",
            ),
            (
                s.environment_protected.is_some(),
                "environmentProtected",
                "the agent does not carry whether the environment is protected",
            ),
            (
                !s.pipeline_source.is_empty(),
                "pipelineSource",
                "the agent does not carry the pipeline source",
            ),
            (
                s.user_login.is_some(),
                "userLogin",
                "ci_job impersonation does not carry the user",
            ),
            (
                s.condition.is_some(),
                "condition",
                "the agent has no ID-token claims to evaluate CEL on",
            ),
        ] {
            if set {
                note(at, field, reason);
            }
        }
    }
    (groups.into_iter().collect(), out)
}
