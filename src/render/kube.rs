//! ComponentDefinitions with a `kube` schematic: a full object template plus flat, typed
//! parameters written at JSON field paths (KubeVela ≤ 1.8 semantics, reference §2.6).
use serde_json::{Map, Value};

use super::ComponentContext;
use super::component::ComponentOutput;
use super::error::RenderError;
use super::params::Params;
use crate::api::oam::{KubeParameterType, KubeSchematic};

/// Arrays are padded with nulls up to a field path's index; beyond this it is a typo, not intent.
const MAX_INDEX: usize = 1024;

pub(crate) fn render(
    ctx: &ComponentContext,
    definition: &str,
    schematic: &KubeSchematic,
    properties: Option<&Value>,
) -> Result<ComponentOutput, RenderError> {
    let invalid_definition = |message: String| RenderError::InvalidDefinition {
        kind: "ComponentDefinition".to_string(),
        name: definition.to_string(),
        message,
    };
    let mut workload = schematic.template.clone();
    let is_object_with = |key: &str| {
        workload
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if !workload.is_object() || !is_object_with("apiVersion") || !is_object_with("kind") {
        return Err(invalid_definition(
            "spec.schematic.kube.template must be a Kubernetes object with apiVersion and kind"
                .to_string(),
        ));
    }
    if workload
        .get("metadata")
        .is_some_and(|m| !m.is_object() && !m.is_null())
    {
        return Err(invalid_definition(
            "spec.schematic.kube.template.metadata must be an object".to_string(),
        ));
    }
    let mut p = Params::root(&ctx.scope, properties)?;
    for (i, parameter) in schematic.parameters.iter().enumerate() {
        if schematic.parameters[..i]
            .iter()
            .any(|other| other.name == parameter.name)
        {
            return Err(invalid_definition(format!(
                "parameter \"{}\" is declared twice",
                parameter.name
            )));
        }
        let Some(value) = p.opt(parameter.name.as_str()) else {
            if parameter.required.unwrap_or(false) {
                return Err(p.missing(&parameter.name));
            }
            continue;
        };
        let ok = match parameter.type_ {
            KubeParameterType::String => value.is_string(),
            KubeParameterType::Number => value.is_number(),
            KubeParameterType::Boolean => value.is_boolean(),
        };
        if !ok {
            let expected = match parameter.type_ {
                KubeParameterType::String => "string",
                KubeParameterType::Number => "number",
                KubeParameterType::Boolean => "boolean",
            };
            return Err(p.type_error(&parameter.name, expected, value));
        }
        for path in &parameter.field_paths {
            let segments = parse_field_path(path).map_err(|e| {
                invalid_definition(format!(
                    "parameter \"{}\": field path {path:?}: {e}",
                    parameter.name
                ))
            })?;
            set_path(&mut workload, &segments, value.clone()).map_err(|e| {
                invalid_definition(format!(
                    "parameter \"{}\": field path {path:?}: {e}",
                    parameter.name
                ))
            })?;
        }
    }
    p.finish_strict()?;
    Ok(ComponentOutput {
        workload,
        auxiliaries: Vec::new(),
    })
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Segment {
    Field(String),
    Index(usize),
}

/// Parses crossplane's field path syntax: `a.b[0].c`, `a['x.y/z']`, `a[x.y]`.
pub(crate) fn parse_field_path(path: &str) -> Result<Vec<Segment>, String> {
    if path.is_empty() {
        return Err("empty path".to_string());
    }
    let chars: Vec<char> = path.chars().collect();
    let mut segments = Vec::new();
    let mut i = 0;
    let mut field = String::new();
    // Whether the previous token was a closing bracket (an empty field may then follow).
    let mut after_bracket = false;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                if field.is_empty() && !after_bracket {
                    return Err(format!("unexpected '.' at position {i}"));
                }
                if !field.is_empty() {
                    segments.push(Segment::Field(std::mem::take(&mut field)));
                }
                if i + 1 >= chars.len() || matches!(chars[i + 1], '.' | '[') {
                    return Err(format!("a field name must follow '.' at position {i}"));
                }
                after_bracket = false;
                i += 1;
            }
            '[' => {
                if field.is_empty() && !after_bracket {
                    return Err(format!("unexpected '[' at position {i}"));
                }
                if !field.is_empty() {
                    segments.push(Segment::Field(std::mem::take(&mut field)));
                }
                let close = chars[i + 1..]
                    .iter()
                    .position(|c| *c == ']')
                    .map(|p| p + i + 1)
                    .ok_or_else(|| format!("unclosed '[' at position {i}"))?;
                let inner: String = chars[i + 1..close].iter().collect();
                if inner.is_empty() {
                    return Err(format!("empty brackets at position {i}"));
                }
                let segment =
                    if inner.len() >= 2 && inner.starts_with('\'') && inner.ends_with('\'') {
                        Segment::Field(inner[1..inner.len() - 1].to_string())
                    } else if inner.chars().all(|c| c.is_ascii_digit()) {
                        Segment::Index(
                            inner
                                .parse()
                                .map_err(|_| format!("index {inner} is too large"))?,
                        )
                    } else {
                        Segment::Field(inner)
                    };
                segments.push(segment);
                i = close + 1;
                if i < chars.len() && !matches!(chars[i], '.' | '[') {
                    return Err(format!("expected '.' or '[' after ']' at position {i}"));
                }
                after_bracket = true;
            }
            ']' => return Err(format!("unexpected ']' at position {i}")),
            c => {
                field.push(c);
                after_bracket = false;
                i += 1;
            }
        }
    }
    if !field.is_empty() {
        segments.push(Segment::Field(field));
    }
    Ok(segments)
}

/// Writes `value` at `segments`, creating missing objects and arrays (padded with nulls).
pub(crate) fn set_path(root: &mut Value, segments: &[Segment], value: Value) -> Result<(), String> {
    let Some((last, parents)) = segments.split_last() else {
        return Err("empty path".to_string());
    };
    let mut current = root;
    for (depth, segment) in parents.iter().enumerate() {
        let next_is_index = matches!(segments[depth + 1], Segment::Index(_));
        current = child(current, segment)?;
        if current.is_null() {
            *current = if next_is_index {
                Value::Array(Vec::new())
            } else {
                Value::Object(Map::new())
            };
        }
    }
    *child(current, last)? = value;
    Ok(())
}

fn child<'v>(value: &'v mut Value, segment: &Segment) -> Result<&'v mut Value, String> {
    match segment {
        Segment::Field(name) => match value {
            Value::Object(map) => Ok(map.entry(name.clone()).or_insert(Value::Null)),
            other => Err(format!(
                "cannot set field {name:?} on a non-object ({other})"
            )),
        },
        Segment::Index(index) => match value {
            Value::Array(items) => {
                if *index > MAX_INDEX {
                    return Err(format!("index {index} exceeds {MAX_INDEX}"));
                }
                if items.len() <= *index {
                    items.resize(index + 1, Value::Null);
                }
                Ok(&mut items[*index])
            }
            _ => Err(format!("cannot index [{index}] into a non-array")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_crossplane_paths() {
        assert_eq!(
            parse_field_path("spec.template.spec.containers[0].image").unwrap(),
            vec![
                Segment::Field("spec".into()),
                Segment::Field("template".into()),
                Segment::Field("spec".into()),
                Segment::Field("containers".into()),
                Segment::Index(0),
                Segment::Field("image".into()),
            ]
        );
        assert_eq!(
            parse_field_path("metadata.labels['app.kubernetes.io/name']").unwrap(),
            vec![
                Segment::Field("metadata".into()),
                Segment::Field("labels".into()),
                Segment::Field("app.kubernetes.io/name".into()),
            ]
        );
        assert_eq!(
            parse_field_path("a[x.y]").unwrap(),
            vec![Segment::Field("a".into()), Segment::Field("x.y".into())]
        );
        for bad in ["", ".a", "a.", "a..b", "a[]", "a.[0]", "a[0", "a]", "[0]"] {
            assert!(parse_field_path(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn creates_intermediate_objects_and_pads_arrays() {
        let mut v = json!({"spec": {}});
        let path = parse_field_path("spec.containers[2].ports[0].containerPort").unwrap();
        set_path(&mut v, &path, json!(80)).unwrap();
        assert_eq!(
            v,
            json!({"spec": {"containers": [null, null, {"ports": [{"containerPort": 80}]}]}})
        );
        let mut s = json!({"spec": "text"});
        assert!(set_path(&mut s, &parse_field_path("spec.x").unwrap(), json!(1)).is_err());
        let mut big = json!({});
        assert!(set_path(&mut big, &parse_field_path("a[100000]").unwrap(), json!(1)).is_err());
    }
}
