//! Kubernetes LabelSelector matching for a trust's `namespaceSelector`.
//!
//! Unlike Kubernetes' own convention, an absent or empty selector selects **no** namespace: a trust
//! must opt namespaces in explicitly (the GitLabTrust API documents this).
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A selector that cannot be evaluated; it selects nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error(
        "matchExpressions key {key:?}: unknown operator {operator:?} (use In, NotIn, Exists or DoesNotExist)"
    )]
    UnknownOperator { key: String, operator: String },
    #[error("matchExpressions key {key:?}: operator {operator} needs at least one value")]
    MissingValues { key: String, operator: String },
    #[error("matchExpressions key {key:?}: operator {operator} takes no values")]
    UnexpectedValues { key: String, operator: String },
}

/// Whether `selector` selects a namespace with `labels`.
pub fn selects(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    let Some(selector) = selector else {
        return Ok(false);
    };
    let match_labels = selector.match_labels.as_ref().filter(|m| !m.is_empty());
    let expressions = selector
        .match_expressions
        .as_deref()
        .filter(|e| !e.is_empty());
    if match_labels.is_none() && expressions.is_none() {
        return Ok(false);
    }
    let mut selected = match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    for expr in expressions.into_iter().flatten() {
        let values = expr.values.as_deref().unwrap_or_default();
        let key = expr.key.clone();
        let operator = expr.operator.clone();
        let ok = match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(SelectorError::MissingValues { key, operator });
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(SelectorError::UnexpectedValues { key, operator });
            }
            "In" => labels.get(&expr.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&expr.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&expr.key),
            "DoesNotExist" => !labels.contains_key(&expr.key),
            _ => return Err(SelectorError::UnknownOperator { key, operator }),
        };
        selected &= ok;
    }
    Ok(selected)
}
