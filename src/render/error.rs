//! Why an Application could not be rendered. Every variant names where the problem is (`scope`:
//! `component "api": trait "scaler"`) and, for properties, the field path inside `properties`.
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    #[error("{scope}: unknown component type \"{type_}\"")]
    UnknownComponentType { scope: String, type_: String },
    #[error("{scope}: unknown trait type \"{type_}\"")]
    UnknownTraitType { scope: String, type_: String },
    #[error("{scope}: unknown policy type \"{type_}\" (supported: {supported})")]
    UnknownPolicyType {
        scope: String,
        type_: String,
        supported: String,
    },
    #[error("{scope}: field \"{field}\": unsupported parameter, not declared by the definition")]
    UndeclaredParameter { scope: String, field: String },
    #[error("{scope}: field \"{field}\": expected {expected}, got {got}")]
    InvalidType {
        scope: String,
        field: String,
        expected: String,
        got: String,
    },
    #[error("{scope}: field \"{field}\": required parameter is missing")]
    MissingParameter { scope: String, field: String },
    #[error("{scope}: field \"{field}\": {message}")]
    InvalidValue {
        scope: String,
        field: String,
        message: String,
    },
    #[error("{scope}: does not apply to workload \"{workload}\" (applies to: {applies_to})")]
    TraitNotApplicable {
        scope: String,
        workload: String,
        applies_to: String,
    },
    #[error("{scope}: {kind} \"{name}\" cannot be rendered: {reason}")]
    UnsupportedDefinition {
        scope: String,
        kind: String,
        name: String,
        reason: String,
    },
    #[error("{kind} \"{name}\": invalid definition: {message}")]
    InvalidDefinition {
        kind: String,
        name: String,
        message: String,
    },
    #[error("{scope}: {message}")]
    InvalidApplication { scope: String, message: String },
    /// A workflow step of a type oam-trust does not run: the whole workflow is refused, never run
    /// in part.
    #[error(
        "workflow step \"{step}\": step type \"{type_}\" is not supported (supported: {supported}); nothing of the Application is applied until the workflow is changed"
    )]
    UnsupportedStep {
        step: String,
        type_: String,
        supported: String,
    },
    /// A `ref-objects` reference that could not be read (retried: the object may appear).
    #[error("{scope}: ref-objects: {message}")]
    Reference { scope: String, message: String },
    #[error("{scope}: {kind} \"{name}\" in namespace \"{namespace}\" is also rendered by {other}")]
    DuplicateObject {
        scope: String,
        kind: String,
        name: String,
        namespace: String,
        other: String,
    },
}

impl RenderError {
    /// A bounded category, for metrics labels and condition reasons (never the message).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownComponentType { .. } => "UnknownComponentType",
            Self::UnknownTraitType { .. } => "UnknownTraitType",
            Self::UnknownPolicyType { .. } => "UnknownPolicyType",
            Self::UndeclaredParameter { .. } => "UndeclaredParameter",
            Self::InvalidType { .. } => "InvalidParameterType",
            Self::MissingParameter { .. } => "MissingParameter",
            Self::InvalidValue { .. } => "InvalidParameterValue",
            Self::TraitNotApplicable { .. } => "TraitNotApplicable",
            Self::UnsupportedDefinition { .. } => "UnsupportedDefinition",
            Self::InvalidDefinition { .. } => "InvalidDefinition",
            Self::InvalidApplication { .. } => "InvalidApplication",
            Self::UnsupportedStep { .. } => "UnsupportedWorkflowStep",
            Self::DuplicateObject { .. } => "DuplicateObject",
            Self::Reference { .. } => "ReferenceUnreadable",
        }
    }
}

/// `string "three"`, `integer 3`, `object` …: how a value is named in a type error.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) if n.is_i64() || n.is_u64() => format!("integer {n}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => {
            let shown: String = s.chars().take(64).collect();
            if shown.len() < s.len() {
                format!("string {:?}…", shown)
            } else {
                format!("string {s:?}")
            }
        }
        Value::Array(_) => "array".to_string(),
        Value::Object(_) => "object".to_string(),
    }
}
