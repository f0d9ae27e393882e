//! CEL conditions over the raw claims (`claims.<name>`), evaluated with the `cel` crate (cel-rust).
//!
//! The claims are bound exactly as GitLab sent them, so booleans are strings there too:
//! `claims.ref_protected == "true"`, the same expression that works in a Kubernetes
//! AuthenticationConfiguration. A condition is true only if it evaluates to the boolean `true`; an
//! evaluation error (for example a claim the token lacks) or any other result is "no match".
use cel::{Context, Program};
use serde_json::{Map, Value};

/// A condition that could not be compiled or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    #[error("condition {source_text:?} does not parse: {message}")]
    Parse {
        source_text: String,
        message: String,
    },
    #[error("condition failed: {0}")]
    Evaluation(String),
    #[error("condition returned {0}, not a boolean")]
    NotBoolean(String),
}

/// A compiled CEL condition.
pub struct ClaimCondition {
    program: Program,
}

impl std::fmt::Debug for ClaimCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClaimCondition")
    }
}

impl ClaimCondition {
    pub fn compile(source: &str) -> Result<Self, ConditionError> {
        Program::compile(source)
            .map(|program| ClaimCondition { program })
            .map_err(|e| ConditionError::Parse {
                source_text: source.to_string(),
                message: e.to_string(),
            })
    }

    /// Evaluates against the claims object; `Ok(true)` only for the boolean `true`.
    pub fn evaluate(&self, claims: &Map<String, Value>) -> Result<bool, ConditionError> {
        let mut context = Context::default();
        context
            .add_variable("claims", Value::Object(claims.clone()))
            .map_err(|e| ConditionError::Evaluation(e.to_string()))?;
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(ConditionError::NotBoolean(format!("{other:?}"))),
            Err(e) => Err(ConditionError::Evaluation(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn compares_string_booleans_and_lists() {
        let c = ClaimCondition::compile(
            r#"claims.ref_protected == "true" && claims.user_access_level in ["maintainer", "owner"]"#,
        )
        .unwrap();
        assert!(
            c.evaluate(&claims(
                json!({"ref_protected": "true", "user_access_level": "owner"})
            ))
            .unwrap()
        );
        assert!(
            !c.evaluate(&claims(
                json!({"ref_protected": "true", "user_access_level": "developer"})
            ))
            .unwrap()
        );
    }

    #[test]
    fn missing_claims_and_non_booleans_are_errors() {
        let c = ClaimCondition::compile("claims.environment == 'prod'").unwrap();
        assert!(matches!(
            c.evaluate(&claims(json!({}))),
            Err(ConditionError::Evaluation(_))
        ));
        let c = ClaimCondition::compile("claims.project_id").unwrap();
        assert_eq!(
            c.evaluate(&claims(json!({"project_id": "1"}))),
            Err(ConditionError::NotBoolean("String(\"1\")".into()))
        );
        assert!(ClaimCondition::compile("claims.(").is_err());
    }
}
