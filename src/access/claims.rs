//! GitLab CI ID-token claims, typed the way GitLab sends them.
//!
//! GitLab sends ids and booleans as JSON **strings** (`"project_id": "1450"`, `"ref_protected": "true"`)
//! and `runner_id` as a number. Parsing is tolerant: ids may also arrive as numbers and booleans as
//! JSON booleans, an unrecognised boolean string reads as "not true" (so it can never satisfy a
//! `refProtected: true`), and every claim, known or not, stays in `raw` for CEL conditions, which see
//! the token exactly as GitLab wrote it. Verification (signature, `iss`, `aud`, times) is `oidc/`'s job.
use serde_json::{Map, Value};

/// Why a claims object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("ID token claims must be a JSON object")]
    NotAnObject,
    #[error("claim {claim:?} has the wrong type: expected {expected}")]
    WrongType {
        claim: &'static str,
        expected: &'static str,
    },
}

/// Every claim GitLab puts in a CI ID token (GitLab 18.x), plus everything else in `raw`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GitLabClaims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    /// `aud` as a list whether GitLab sent a string or an array.
    pub aud: Vec<String>,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
    pub jti: Option<String>,
    /// Namespace of the *source* project (the fork, for fork merge-request pipelines since 18.2.2).
    pub namespace_id: Option<String>,
    pub namespace_path: Option<String>,
    /// The *source* project: whose code runs.
    pub project_id: Option<String>,
    pub project_path: Option<String>,
    /// The project the job runs in; differs from `project_*` only for fork MR pipelines run in the
    /// parent. Absent before GitLab 18.2.2/18.3.
    pub job_project_id: Option<String>,
    pub job_project_path: Option<String>,
    pub job_namespace_id: Option<String>,
    pub job_namespace_path: Option<String>,
    pub source_project_id: Option<String>,
    pub source_project_path: Option<String>,
    pub source_namespace_id: Option<String>,
    pub source_namespace_path: Option<String>,
    pub user_id: Option<String>,
    pub user_login: Option<String>,
    pub user_email: Option<String>,
    pub user_access_level: Option<String>,
    pub user_identities: Vec<Value>,
    pub groups_direct: Vec<String>,
    pub pipeline_id: Option<String>,
    pub pipeline_source: Option<String>,
    pub job_id: Option<String>,
    pub ref_: Option<String>,
    pub ref_type: Option<String>,
    pub ref_path: Option<String>,
    pub ref_protected: Option<bool>,
    pub environment: Option<String>,
    pub environment_protected: Option<bool>,
    pub deployment_tier: Option<String>,
    pub environment_action: Option<String>,
    pub runner_id: Option<i64>,
    pub runner_environment: Option<String>,
    pub sha: Option<String>,
    pub project_visibility: Option<String>,
    /// Null when the CI config comes from another project; never trusted as present.
    pub ci_config_ref_uri: Option<String>,
    pub ci_config_sha: Option<String>,
    pub target_audience: Option<String>,
    /// The whole claims object as received, for CEL conditions and audit.
    pub raw: Map<String, Value>,
}

/// The value of a string claim: strings as-is, numbers in decimal (ids some tools re-encode).
fn string(raw: &Map<String, Value>, claim: &'static str) -> Result<Option<String>, ClaimsError> {
    match raw.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ClaimsError::WrongType {
            claim,
            expected: "a string",
        }),
    }
}

/// `"true"` / `"false"` as GitLab sends them (JSON booleans tolerated); anything else is "not true".
fn boolean(raw: &Map<String, Value>, claim: &'static str) -> Option<bool> {
    match raw.get(claim)? {
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

fn integer(raw: &Map<String, Value>, claim: &'static str) -> Result<Option<i64>, ClaimsError> {
    let wrong = ClaimsError::WrongType {
        claim,
        expected: "an integer",
    };
    match raw.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or(wrong),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| wrong),
        Some(_) => Err(wrong),
    }
}

fn strings(raw: &Map<String, Value>, claim: &'static str) -> Result<Vec<String>, ClaimsError> {
    match raw.get(claim) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or(ClaimsError::WrongType {
                claim,
                expected: "a string or a list of strings",
            }),
        Some(_) => Err(ClaimsError::WrongType {
            claim,
            expected: "a string or a list of strings",
        }),
    }
}

impl GitLabClaims {
    /// Reads a decoded JWT payload.
    pub fn from_json(value: Value) -> Result<Self, ClaimsError> {
        let Value::Object(raw) = value else {
            return Err(ClaimsError::NotAnObject);
        };
        let r = &raw;
        Ok(GitLabClaims {
            iss: string(r, "iss")?,
            sub: string(r, "sub")?,
            aud: strings(r, "aud")?,
            exp: integer(r, "exp")?,
            nbf: integer(r, "nbf")?,
            iat: integer(r, "iat")?,
            jti: string(r, "jti")?,
            namespace_id: string(r, "namespace_id")?,
            namespace_path: string(r, "namespace_path")?,
            project_id: string(r, "project_id")?,
            project_path: string(r, "project_path")?,
            job_project_id: string(r, "job_project_id")?,
            job_project_path: string(r, "job_project_path")?,
            job_namespace_id: string(r, "job_namespace_id")?,
            job_namespace_path: string(r, "job_namespace_path")?,
            source_project_id: string(r, "source_project_id")?,
            source_project_path: string(r, "source_project_path")?,
            source_namespace_id: string(r, "source_namespace_id")?,
            source_namespace_path: string(r, "source_namespace_path")?,
            user_id: string(r, "user_id")?,
            user_login: string(r, "user_login")?,
            user_email: string(r, "user_email")?,
            user_access_level: string(r, "user_access_level")?,
            user_identities: match r.get("user_identities") {
                Some(Value::Array(items)) => items.clone(),
                _ => Vec::new(),
            },
            groups_direct: strings(r, "groups_direct")?,
            pipeline_id: string(r, "pipeline_id")?,
            pipeline_source: string(r, "pipeline_source")?,
            job_id: string(r, "job_id")?,
            ref_: string(r, "ref")?,
            ref_type: string(r, "ref_type")?,
            ref_path: string(r, "ref_path")?,
            ref_protected: boolean(r, "ref_protected"),
            environment: string(r, "environment")?,
            environment_protected: boolean(r, "environment_protected"),
            deployment_tier: string(r, "deployment_tier")?,
            environment_action: string(r, "environment_action")?,
            runner_id: integer(r, "runner_id")?,
            runner_environment: string(r, "runner_environment")?,
            sha: string(r, "sha")?,
            project_visibility: string(r, "project_visibility")?,
            ci_config_ref_uri: string(r, "ci_config_ref_uri")?,
            ci_config_sha: string(r, "ci_config_sha")?,
            target_audience: string(r, "target_audience")?,
            raw,
        })
    }
}

impl<'de> serde::Deserialize<'de> for GitLabClaims {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        GitLabClaims::from_json(Value::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for GitLabClaims {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_string_typed_ids_and_booleans() {
        let c = GitLabClaims::from_json(json!({
            "project_id": "1450", "ref_protected": "true", "environment_protected": "false",
            "runner_id": 55, "aud": "https://k8s", "namespace_id": 72, "future_claim": {"x": 1}
        }))
        .unwrap();
        assert_eq!(c.project_id.as_deref(), Some("1450"));
        assert_eq!(c.namespace_id.as_deref(), Some("72"));
        assert_eq!(c.ref_protected, Some(true));
        assert_eq!(c.environment_protected, Some(false));
        assert_eq!(c.runner_id, Some(55));
        assert_eq!(c.aud, vec!["https://k8s".to_string()]);
        assert_eq!(c.raw["future_claim"], json!({"x": 1}));
    }

    #[test]
    fn unknown_boolean_strings_are_not_true() {
        let c = GitLabClaims::from_json(json!({"ref_protected": "yes"})).unwrap();
        assert_eq!(c.ref_protected, None);
    }

    #[test]
    fn wrong_types_are_errors() {
        assert_eq!(
            GitLabClaims::from_json(json!({"project_id": ["1"]})).unwrap_err(),
            ClaimsError::WrongType {
                claim: "project_id",
                expected: "a string"
            }
        );
        assert_eq!(
            GitLabClaims::from_json(json!("x")).unwrap_err(),
            ClaimsError::NotAnObject
        );
    }
}
