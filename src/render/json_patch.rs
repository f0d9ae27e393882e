//! RFC 6902 JSON Patch (`json-patch` trait): `add`, `remove`, `replace`, `move`, `copy` and `test`
//! on a rendered object, with RFC 6901 pointers. An operation that cannot apply is an error that
//! names the operation; nothing is half-applied (the caller patches a copy).
use serde_json::Value;

/// Applies `operations` to `target`, in order; `Err` says which operation failed and why.
pub(crate) fn apply(target: &mut Value, operations: &[Value]) -> Result<(), String> {
    let mut patched = target.clone();
    for (i, op) in operations.iter().enumerate() {
        apply_one(&mut patched, op).map_err(|e| format!("operations[{i}]: {e}"))?;
    }
    *target = patched;
    Ok(())
}

fn apply_one(doc: &mut Value, op: &Value) -> Result<(), String> {
    let kind = op["op"].as_str().ok_or("\"op\" must be a string")?;
    let path = op["path"].as_str().ok_or("\"path\" must be a string")?;
    let path = parse(path)?;
    let value = || op.get("value").cloned().ok_or("\"value\" is required");
    match kind {
        "add" => add(doc, &path, value()?),
        "remove" => remove(doc, &path).map(drop),
        "replace" => {
            remove(doc, &path)?;
            add(doc, &path, value()?)
        }
        "move" | "copy" => {
            let from = op["from"].as_str().ok_or("\"from\" must be a string")?;
            let from = parse(from)?;
            let moved = if kind == "move" {
                if path.starts_with(&from) && path.len() > from.len() {
                    return Err("cannot move a value into one of its children".to_string());
                }
                remove(doc, &from)?
            } else {
                get(doc, &from)?.clone()
            };
            add(doc, &path, moved)
        }
        "test" => {
            if *get(doc, &path)? == value()? {
                Ok(())
            } else {
                Err("test failed: the value differs".to_string())
            }
        }
        other => Err(format!("unknown op {other:?}")),
    }
}

fn parse(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!("path {pointer:?} must start with \"/\""));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn index(token: &str, len: usize, allow_end: bool) -> Result<usize, String> {
    if allow_end && token == "-" {
        return Ok(len);
    }
    let i: usize = token
        .parse()
        .map_err(|_| format!("{token:?} is not an array index"))?;
    if i > len || (!allow_end && i == len) {
        return Err(format!("index {i} is out of bounds"));
    }
    Ok(i)
}

fn get<'v>(doc: &'v Value, path: &[String]) -> Result<&'v Value, String> {
    let mut cur = doc;
    for token in path {
        cur = match cur {
            Value::Object(m) => m.get(token).ok_or(format!("{token:?} does not exist"))?,
            Value::Array(a) => &a[index(token, a.len(), false)?],
            _ => return Err(format!("{token:?}: parent is not a container")),
        };
    }
    Ok(cur)
}

fn parent<'v>(doc: &'v mut Value, path: &[String]) -> Result<&'v mut Value, String> {
    let mut cur = doc;
    for token in path {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(token)
                .ok_or(format!("{token:?} does not exist"))?,
            Value::Array(a) => {
                let i = index(token, a.len(), false)?;
                &mut a[i]
            }
            _ => return Err(format!("{token:?}: parent is not a container")),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, init)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, init)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = index(last, a.len(), true)?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("{last:?}: parent is not a container")),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let Some((last, init)) = path.split_last() else {
        return Err("cannot remove the whole object".to_string());
    };
    match parent(doc, init)? {
        Value::Object(m) => m.remove(last).ok_or(format!("{last:?} does not exist")),
        Value::Array(a) => {
            let i = index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(format!("{last:?}: parent is not a container")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn follows_rfc6902() {
        let mut doc = json!({"a": {"b": [1, 2]}, "c": "x"});
        apply(
            &mut doc,
            &[
                json!({"op": "add", "path": "/a/b/1", "value": 9}),
                json!({"op": "add", "path": "/a/b/-", "value": 3}),
                json!({"op": "replace", "path": "/c", "value": "y"}),
                json!({"op": "copy", "from": "/c", "path": "/d"}),
                json!({"op": "move", "from": "/d", "path": "/a/e~1f"}),
                json!({"op": "remove", "path": "/a/b/0"}),
                json!({"op": "test", "path": "/a/b", "value": [9, 2, 3]}),
            ],
        )
        .unwrap();
        assert_eq!(doc, json!({"a": {"b": [9, 2, 3], "e/f": "y"}, "c": "y"}));
    }

    #[test]
    fn a_failed_operation_changes_nothing() {
        let mut doc = json!({"a": 1});
        let err = apply(
            &mut doc,
            &[
                json!({"op": "add", "path": "/b", "value": 2}),
                json!({"op": "remove", "path": "/missing"}),
            ],
        )
        .unwrap_err();
        assert!(err.starts_with("operations[1]"), "{err}");
        assert_eq!(doc, json!({"a": 1}));
        assert!(
            apply(
                &mut doc,
                &[json!({"op": "replace", "path": "/x", "value": 1})]
            )
            .is_err()
        );
        assert!(
            apply(
                &mut doc,
                &[json!({"op": "add", "path": "/a/b/c", "value": 1})]
            )
            .is_err()
        );
    }
}
