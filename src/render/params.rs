//! Typed, path-aware reading of free-form `properties`: every read records the key, so `finish`
//! can report what the definition does not declare, and every error names the exact field.
//!
//! KubeVela ignores properties its CUE templates do not declare; so do we, but each one becomes a
//! `RenderWarning` so a typo is still visible. Warnings are gathered for the duration of one
//! `collect_warnings` call on the current thread (rendering is synchronous and never nested).
use std::cell::RefCell;

use serde_json::{Map, Value};

use super::RenderWarning;
use super::error::{RenderError, describe};

thread_local! {
    static WARNINGS: RefCell<Option<Vec<RenderWarning>>> = const { RefCell::new(None) };
}

/// Runs `f`, returning its result and every warning raised while it ran.
pub(crate) fn collect_warnings<T>(f: impl FnOnce() -> T) -> (T, Vec<RenderWarning>) {
    let outer = WARNINGS.with(|w| w.borrow_mut().replace(Vec::new()));
    let result = f();
    let warnings = WARNINGS.with(|w| {
        let mut slot = w.borrow_mut();
        let mine = slot.take().unwrap_or_default();
        *slot = outer;
        mine
    });
    (result, warnings)
}

/// Records a warning for the enclosing `collect_warnings` (dropped when there is none).
pub(crate) fn warn(warning: RenderWarning) {
    WARNINGS.with(|w| {
        if let Some(list) = w.borrow_mut().as_mut()
            && !list.contains(&warning)
        {
            list.push(warning);
        }
    });
}

static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// A view on one object of `properties` (the root, or a nested object such as `ports[0]`).
pub(crate) struct Params<'a> {
    scope: &'a str,
    prefix: String,
    map: &'a Map<String, Value>,
    seen: Vec<&'a str>,
}

impl<'a> Params<'a> {
    /// The root of `properties`; absent or `null` properties read as `{}`.
    pub fn root(scope: &'a str, properties: Option<&'a Value>) -> Result<Self, RenderError> {
        match properties {
            None | Some(Value::Null) => Ok(Self::new(scope, String::new(), &EMPTY)),
            Some(Value::Object(map)) => Ok(Self::new(scope, String::new(), map)),
            Some(other) => Err(RenderError::InvalidType {
                scope: scope.to_string(),
                field: "properties".to_string(),
                expected: "object".to_string(),
                got: describe(other),
            }),
        }
    }

    fn new(scope: &'a str, prefix: String, map: &'a Map<String, Value>) -> Self {
        Self {
            scope,
            prefix,
            map,
            seen: Vec::new(),
        }
    }

    pub fn scope(&self) -> &'a str {
        self.scope
    }

    /// The full field path of `key`: `ports[0].port`.
    pub fn field(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// All keys of this object (for map-shaped parameters such as the `labels` trait).
    pub fn entries(&mut self) -> impl Iterator<Item = (&'a String, &'a Value)> + use<'a> {
        self.seen.extend(self.map.keys().map(String::as_str));
        self.map.iter()
    }

    /// The raw value of `key`, marked as read; `null` counts as absent.
    pub fn opt(&mut self, key: &'a str) -> Option<&'a Value> {
        self.seen.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn type_error(&self, key: &str, expected: &str, got: &Value) -> RenderError {
        RenderError::InvalidType {
            scope: self.scope.to_string(),
            field: self.field(key),
            expected: expected.to_string(),
            got: describe(got),
        }
    }

    pub fn invalid(&self, key: &str, message: impl Into<String>) -> RenderError {
        RenderError::InvalidValue {
            scope: self.scope.to_string(),
            field: self.field(key),
            message: message.into(),
        }
    }

    pub fn missing(&self, key: &str) -> RenderError {
        RenderError::MissingParameter {
            scope: self.scope.to_string(),
            field: self.field(key),
        }
    }

    pub fn opt_str(&mut self, key: &'a str) -> Result<Option<&'a str>, RenderError> {
        match self.opt(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.type_error(key, "string", other)),
        }
    }

    pub fn str(&mut self, key: &'a str) -> Result<&'a str, RenderError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn str_or(&mut self, key: &'a str, default: &'a str) -> Result<&'a str, RenderError> {
        Ok(self.opt_str(key)?.unwrap_or(default))
    }

    /// A string that must be one of `allowed`.
    pub fn enum_or(
        &mut self,
        key: &'a str,
        allowed: &[&str],
        default: &'a str,
    ) -> Result<&'a str, RenderError> {
        let value = self.str_or(key, default)?;
        if allowed.contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(
                key,
                format!("{value:?} is not one of {}", allowed.join(", ")),
            ))
        }
    }

    pub fn opt_int(&mut self, key: &'a str) -> Result<Option<i64>, RenderError> {
        match self.opt(key) {
            None => Ok(None),
            Some(value) => as_int(value)
                .map(Some)
                .ok_or_else(|| self.type_error(key, "integer", value)),
        }
    }

    pub fn int_or(&mut self, key: &'a str, default: i64) -> Result<i64, RenderError> {
        Ok(self.opt_int(key)?.unwrap_or(default))
    }

    /// An integer in `min..=max` (ports, replicas, percentages).
    pub fn int_in(
        &mut self,
        key: &'a str,
        min: i64,
        max: i64,
        default: Option<i64>,
    ) -> Result<Option<i64>, RenderError> {
        let value = self.opt_int(key)?.or(default);
        match value {
            Some(v) if v < min || v > max => {
                Err(self.invalid(key, format!("{v} is out of range {min}..={max}")))
            }
            v => Ok(v),
        }
    }

    pub fn opt_bool(&mut self, key: &'a str) -> Result<Option<bool>, RenderError> {
        match self.opt(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.type_error(key, "boolean", other)),
        }
    }

    pub fn bool_or(&mut self, key: &'a str, default: bool) -> Result<bool, RenderError> {
        Ok(self.opt_bool(key)?.unwrap_or(default))
    }

    /// A Kubernetes quantity: a string (`"500m"`, `"1Gi"`) or a number (`0.5`).
    pub fn opt_quantity(&mut self, key: &'a str) -> Result<Option<Value>, RenderError> {
        match self.opt(key) {
            None => Ok(None),
            Some(v @ (Value::String(_) | Value::Number(_))) => Ok(Some(v.clone())),
            Some(other) => Err(self.type_error(key, "quantity (string or number)", other)),
        }
    }

    /// An integer or a string (a port name, an average value).
    pub fn opt_int_or_string(&mut self, key: &'a str) -> Result<Option<Value>, RenderError> {
        match self.opt(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(Value::String(s.clone()))),
            Some(v) => match as_int(v) {
                Some(i) => Ok(Some(Value::from(i))),
                None => Err(self.type_error(key, "integer or string", v)),
            },
        }
    }

    pub fn opt_str_list(&mut self, key: &'a str) -> Result<Option<Vec<String>>, RenderError> {
        match self.opt(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.type_error(&format!("{key}[{i}]"), "string", other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(self.type_error(key, "array of strings", other)),
        }
    }

    pub fn opt_int_list(&mut self, key: &'a str) -> Result<Option<Vec<i64>>, RenderError> {
        match self.opt(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    as_int(item)
                        .ok_or_else(|| self.type_error(&format!("{key}[{i}]"), "integer", item))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(self.type_error(key, "array of integers", other)),
        }
    }

    /// A `{string: string}` map, as an object value ready to be written.
    pub fn opt_str_map(&mut self, key: &'a str) -> Result<Option<Map<String, Value>>, RenderError> {
        match self.opt(key) {
            None => Ok(None),
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    if !v.is_string() {
                        return Err(self.type_error(&format!("{key}.{k}"), "string", v));
                    }
                }
                Ok(Some(map.clone()))
            }
            Some(other) => Err(self.type_error(key, "map of strings", other)),
        }
    }

    /// A free-form object kept as written (`selector`, `valueFrom` of a sidecar …).
    pub fn opt_raw_object(&mut self, key: &'a str) -> Result<Option<&'a Value>, RenderError> {
        match self.opt(key) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(v)),
            Some(other) => Err(self.type_error(key, "object", other)),
        }
    }

    /// A nested object read with the same rules; call `finish` on it.
    pub fn opt_object(&mut self, key: &'a str) -> Result<Option<Params<'a>>, RenderError> {
        match self.opt(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Params::new(self.scope, self.field(key), map))),
            Some(other) => Err(self.type_error(key, "object", other)),
        }
    }

    /// A list of nested objects (`ports`, `env` …); call `finish` on each.
    pub fn opt_list(&mut self, key: &'a str) -> Result<Option<Vec<Params<'a>>>, RenderError> {
        match self.opt(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let field = format!("{key}[{i}]");
                    match item {
                        Value::Object(map) => Ok(Params::new(self.scope, self.field(&field), map)),
                        other => Err(self.type_error(&field, "object", other)),
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(self.type_error(key, "array of objects", other)),
        }
    }

    pub fn list_or_empty(&mut self, key: &'a str) -> Result<Vec<Params<'a>>, RenderError> {
        Ok(self.opt_list(key)?.unwrap_or_default())
    }

    /// Rejects the first key that was never read. For `kube` schematics, whose undeclared
    /// parameters KubeVela refuses ("unsupported parameter"), unlike its CUE templates.
    pub fn finish_strict(self) -> Result<(), RenderError> {
        match self.map.keys().find(|k| !self.seen.contains(&k.as_str())) {
            Some(key) => Err(RenderError::UndeclaredParameter {
                scope: self.scope.to_string(),
                field: self.field(key),
            }),
            None => Ok(()),
        }
    }

    /// Reports every key that was never read: the definition does not declare it, so it is
    /// ignored (as KubeVela ignores it) and named in a warning.
    pub fn finish(self) -> Result<(), RenderError> {
        for key in self.map.keys().filter(|k| !self.seen.contains(&k.as_str())) {
            warn(RenderWarning::undeclared(self.scope, &self.field(key)));
        }
        Ok(())
    }
}

/// An integer, also from an integral float (`3.0`), as YAML tools sometimes write them.
pub(crate) fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        _ => None,
    }
}
