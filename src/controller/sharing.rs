//! Pure pieces of the resource policies' runtime effects: who manages a live object, the
//! `app.oam.dev/shared-by` list of `shared-resource`, and the field paths of `apply-once` and
//! `resource-update` (`spec.template.spec.containers[0].image`).
use serde_json::Value;

use crate::names::{LABEL_APP_NAME, LABEL_APP_NAMESPACE};

/// KubeVela's annotation listing the Applications sharing an object: `ns/app,ns/app`.
pub const ANNOTATION_SHARED_BY: &str = "app.oam.dev/shared-by";

/// Who manages a live object, as seen by one Application.
#[derive(Debug, PartialEq, Eq)]
pub enum Managed {
    /// This Application (its controller ownerReference, or its labels where no ownerReference can
    /// reach: other namespaces, cluster scope, shared objects).
    Us,
    /// Another owner: `Application shop/web`, `ReplicaSet x` …
    Other(String),
    /// Nobody: created by hand or by another tool.
    Nobody,
}

/// `ns/name` of an Application, as in `app.oam.dev/shared-by`.
pub fn app_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The controller ownerReference of an object: (uid, kind, name).
pub fn controller_of(obj: &Value) -> Option<(&str, &str, &str)> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
        .map(|r| {
            (
                r["uid"].as_str().unwrap_or_default(),
                r["kind"].as_str().unwrap_or_default(),
                r["name"].as_str().unwrap_or_default(),
            )
        })
}

/// Who manages `live`, for the Application `(namespace, name, uid)`.
pub fn managed_by(live: &Value, namespace: &str, name: &str, uid: &str) -> Managed {
    if let Some((their_uid, kind, their_name)) = controller_of(live) {
        return if their_uid == uid {
            Managed::Us
        } else {
            Managed::Other(format!("{kind} {their_name}"))
        };
    }
    let labels = &live["metadata"]["labels"];
    match (
        labels[LABEL_APP_NAME].as_str(),
        labels[LABEL_APP_NAMESPACE].as_str(),
    ) {
        (Some(n), Some(ns)) if n == name && ns == namespace => Managed::Us,
        (Some(n), Some(ns)) => Managed::Other(format!("Application {ns}/{n}")),
        _ => Managed::Nobody,
    }
}

/// The sharers an object lists.
pub fn sharers(live: &Value) -> Vec<String> {
    live["metadata"]["annotations"][ANNOTATION_SHARED_BY]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The list with `me` added (once, at the end).
pub fn with_sharer(list: &[String], me: &str) -> String {
    let mut out: Vec<&str> = list.iter().map(String::as_str).collect();
    if !out.contains(&me) {
        out.push(me);
    }
    out.join(",")
}

/// The list without `me`.
pub fn without_sharer(list: &[String], me: &str) -> Vec<String> {
    list.iter().filter(|s| *s != me).cloned().collect()
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[0].c` -> [a, b, 0, c]; `None` when the path does not parse.
fn segments(path: &str) -> Option<Vec<Segment<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(tail) = rest.strip_prefix('[') {
            let end = tail.find(']')?;
            out.push(Segment::Index(tail[..end].parse().ok()?));
            rest = &tail[end + 1..];
        }
        if !rest.is_empty() || (key.is_empty() && out.is_empty()) {
            return None;
        }
    }
    Some(out)
}

/// The value at `path`, if any.
pub fn get_path<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = value;
    for seg in segments(path)? {
        cur = match seg {
            Segment::Key(k) => cur.get(k)?,
            Segment::Index(i) => cur.get(i)?,
        };
    }
    Some(cur)
}

/// Makes `path` of `desired` what it is in `live`: copied when live has it, removed when not.
/// A path through a list element `desired` lacks is left alone.
pub fn keep_live(desired: &mut Value, live: &Value, path: &str) {
    let Some(segs) = segments(path) else { return };
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    let live_value = get_path(live, path).cloned();
    let mut cur = desired;
    for seg in parents {
        cur = match seg {
            Segment::Key(k) => {
                if !cur.is_object() {
                    return;
                }
                if cur.get(*k).is_none() {
                    if live_value.is_none() {
                        return;
                    }
                    cur[*k] = Value::Object(Default::default());
                }
                &mut cur[*k]
            }
            Segment::Index(i) => match cur.get_mut(*i) {
                Some(v) => v,
                None => return,
            },
        };
    }
    match (last, live_value) {
        (Segment::Key(k), Some(v)) if cur.is_object() => cur[*k] = v,
        (Segment::Key(k), None) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(*k);
            }
        }
        (Segment::Index(i), Some(v)) => {
            if let Some(slot) = cur.get_mut(*i) {
                *slot = v;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ownership_by_owner_reference_then_by_labels() {
        let ours = json!({"metadata": {"ownerReferences": [{"controller": true, "uid": "u1", "kind": "Application", "name": "web"}]}});
        assert_eq!(managed_by(&ours, "shop", "web", "u1"), Managed::Us);
        assert_eq!(
            managed_by(&ours, "shop", "api", "u2"),
            Managed::Other("Application web".into())
        );
        let labelled =
            json!({"metadata": {"labels": {LABEL_APP_NAME: "web", LABEL_APP_NAMESPACE: "shop"}}});
        assert_eq!(managed_by(&labelled, "shop", "web", "u1"), Managed::Us);
        assert_eq!(
            managed_by(&labelled, "other", "web", "u3"),
            Managed::Other("Application shop/web".into())
        );
        assert_eq!(
            managed_by(&json!({"metadata": {}}), "shop", "web", "u1"),
            Managed::Nobody
        );
    }

    #[test]
    fn sharers_are_added_once_and_removed() {
        let live = json!({"metadata": {"annotations": {ANNOTATION_SHARED_BY: "a/x, b/y"}}});
        let list = sharers(&live);
        assert_eq!(list, ["a/x", "b/y"]);
        assert_eq!(with_sharer(&list, "b/y"), "a/x,b/y");
        assert_eq!(with_sharer(&list, "c/z"), "a/x,b/y,c/z");
        assert_eq!(without_sharer(&list, "a/x"), ["b/y"]);
        assert!(sharers(&json!({})).is_empty());
    }

    #[test]
    fn live_values_are_kept_at_paths() {
        let live = json!({"spec": {"replicas": 5, "template": {"spec": {"containers": [{"image": "live:2"}]}}}});
        let mut desired = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": "mine:1", "name": "c"}]}}}});
        keep_live(&mut desired, &live, "spec.replicas");
        keep_live(
            &mut desired,
            &live,
            "spec.template.spec.containers[0].image",
        );
        assert_eq!(desired["spec"]["replicas"], 5);
        assert_eq!(
            desired["spec"]["template"]["spec"]["containers"][0],
            json!({"image": "live:2", "name": "c"})
        );
        // Absent live: the field is left to whoever sets it.
        let mut d = json!({"spec": {"paused": true}});
        keep_live(&mut d, &json!({"spec": {}}), "spec.paused");
        assert_eq!(d, json!({"spec": {}}));
        // Unparsable and out-of-range paths change nothing.
        let mut d = json!({"a": [1]});
        keep_live(&mut d, &json!({"a": [1, 2]}), "a[1]");
        keep_live(&mut d, &json!({}), "a[x");
        assert_eq!(d, json!({"a": [1]}));
        assert_eq!(
            get_path(&live, "spec.template.spec.containers[0].image"),
            Some(&json!("live:2"))
        );
        assert_eq!(get_path(&live, "spec.missing"), None);
    }
}
