//! `oam-trust rollback`: restore the spec an ApplicationRevision recorded, with the
//! `oam-trust.dev/rollback-revision` annotation that makes the controller render it with the
//! definitions the revision recorded, and wait like `set-image --wait`.
//!
//! The patch is an RFC 6902 JSON Patch of exactly the fields that differ (plus a `test` of the
//! resourceVersion read), so the deploy guard sees only what the rollback changes: a deploy identity
//! rolls back a revision that differs in images, and is refused one that differs in anything else.
use std::time::Duration;

use anyhow::{Context as _, bail};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::access::rules::READABLE_REVISIONS;
use crate::api::oam::Application;
use crate::api::revision::ApplicationRevision;
use crate::names;

/// `oam-trust rollback`: restore a revision's spec (what a deploy grant allows: images) and wait.
#[derive(clap::Args, Debug, Clone)]
pub struct RollbackArgs {
    /// Application name (default: the kubeconfig's grant, from OAM_TRUST_APP).
    #[arg(env = "OAM_TRUST_APP")]
    pub app: String,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The revision to restore, N of `<app>-v<N>` (default: the newest one before the current).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub to_revision: Option<i64>,
    /// Wait until the Application runs the restored revision.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits.
    #[arg(long, value_parser = crate::duration::parse, default_value = "5m")]
    pub timeout: Duration,
}

/// RFC 6901 escaping of one path segment.
fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// JSON Patch ops turning `from` into `to` at `path`, touching only what differs: members of
/// objects one by one, elements of equally long arrays one by one, anything else replaced whole.
/// Applied to the stored object, which may hold empty fields `from` (read through the typed
/// Application) does not: `add` of an object member replaces such a field.
fn diff(from: &Value, to: &Value, path: &str, ops: &mut Vec<Value>) {
    if from == to {
        return;
    }
    match (from, to) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, was) in old {
                let at = format!("{path}/{}", pointer_segment(key));
                match new.get(key) {
                    Some(now) => diff(was, now, &at, ops),
                    None => ops.push(json!({"op": "remove", "path": at})),
                }
            }
            for (key, now) in new.iter().filter(|(k, _)| !old.contains_key(*k)) {
                let at = format!("{path}/{}", pointer_segment(key));
                ops.push(json!({"op": "add", "path": at, "value": now}));
            }
        }
        (Value::Array(old), Value::Array(new)) if old.len() == new.len() => {
            for (i, (was, now)) in old.iter().zip(new).enumerate() {
                diff(was, now, &format!("{path}/{i}"), ops);
            }
        }
        _ => ops.push(json!({"op": "replace", "path": path, "value": to})),
    }
}

/// The JSON Patch restoring `revision` onto `live`: a `test` of the resourceVersion read (a
/// concurrent change fails it instead of being overwritten), the spec fields that differ, and the
/// rollback annotation.
pub fn rollback_patch(live: &Application, revision: &ApplicationRevision) -> Value {
    let mut ops = vec![json!({
        "op": "test", "path": "/metadata/resourceVersion", "value": live.resource_version()
    })];
    let from = serde_json::to_value(&live.spec).unwrap_or(Value::Null);
    let to = serde_json::to_value(&revision.spec.application.spec).unwrap_or(Value::Null);
    diff(&from, &to, "/spec", &mut ops);
    let value = revision.spec.revision.to_string();
    ops.push(match &live.metadata.annotations {
        Some(_) => json!({"op": "add", "value": value, "path": format!(
            "/metadata/annotations/{}", pointer_segment(names::ANNOTATION_ROLLBACK_REVISION))}),
        None => json!({"op": "add", "path": "/metadata/annotations",
                       "value": {names::ANNOTATION_ROLLBACK_REVISION: value}}),
    });
    Value::Array(ops)
}

/// Whether `live` already runs `revision`: its spec, and either the rollback annotation naming it or
/// the latest revision recording the same content.
pub fn already_at(live: &Application, revision: &ApplicationRevision) -> bool {
    let pinned = live
        .annotations()
        .get(names::ANNOTATION_ROLLBACK_REVISION)
        .is_some_and(|n| *n == revision.spec.revision.to_string());
    let recorded = live
        .status
        .as_ref()
        .and_then(|s| s.latest_revision.as_ref()?.revision_hash.as_deref())
        == Some(revision.spec.revision_hash.as_str());
    live.spec == revision.spec.application.spec && (pinned || recorded)
}

/// The spec paths a patch changes, for the job log.
fn changed_paths(patch: &Value) -> Vec<String> {
    patch
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|op| op["path"].as_str())
        .filter(|p| p.starts_with("/spec"))
        .map(str::to_string)
        .collect()
}

/// Reads revision `name`; `None` when it does not exist. A refusal says what a grant needs.
async fn read_revision(
    revisions: &Api<ApplicationRevision>,
    name: &str,
) -> anyhow::Result<Option<ApplicationRevision>> {
    match revisions.get_opt(name).await {
        Ok(found) => Ok(found),
        Err(kube::Error::Api(s)) if s.code == 403 => bail!(
            "not allowed to read ApplicationRevision {name}: {}. A gitlab-access grant reads its \
             Application's {READABLE_REVISIONS} most recent revisions when its GitLabTrust's ceiling \
             allows get on applicationrevisions (core.oam.dev)",
            s.message
        ),
        Err(e) => Err(e).with_context(|| format!("reading ApplicationRevision {name}")),
    }
}

/// The revisions of `app` that exist, for an error message: listed, or (a grant may only get them
/// by name) probed among the readable window below `current`.
async fn existing(revisions: &Api<ApplicationRevision>, app: &str, current: i64) -> Vec<String> {
    let listed = revisions
        .list(&ListParams::default().labels(&format!("{}={app}", names::LABEL_APP_NAME)))
        .await;
    if let Ok(list) = listed {
        let mut found: Vec<(i64, String)> = list
            .items
            .iter()
            .map(|r| (r.spec.revision, r.name_any()))
            .collect();
        found.sort();
        return found.into_iter().map(|(_, n)| n).collect();
    }
    let mut found = Vec::new();
    for n in window(current) {
        let name = names::revision_name(app, n);
        if let Ok(Some(_)) = revisions.get_opt(&name).await {
            found.push(name);
        }
    }
    found
}

/// The revision numbers a grant may read when `current` is the latest, oldest first.
fn window(current: i64) -> std::ops::RangeInclusive<i64> {
    current.saturating_sub(READABLE_REVISIONS - 1).max(1)..=current
}

/// Runs `oam-trust rollback`.
pub async fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let (client, namespace) = crate::set_image::connect(args.namespace.as_deref()).await?;
    rollback_with(&client, &namespace, &args).await
}

/// Runs `oam-trust rollback` with `client`, in `namespace` (tests pass their own identities).
pub async fn rollback_with(
    client: &kube::Client,
    namespace: &str,
    args: &RollbackArgs,
) -> anyhow::Result<()> {
    let namespace = namespace.to_string();
    let apps: Api<Application> = Api::namespaced(client.clone(), &namespace);
    let revisions: Api<ApplicationRevision> = Api::namespaced(client.clone(), &namespace);
    let app = apps
        .get(&args.app)
        .await
        .with_context(|| format!("reading Application {namespace}/{}", args.app))?;
    let which = format!("Application {namespace}/{}", args.app);
    let Some(current) = app.status.as_ref().and_then(|s| s.latest_revision.clone()) else {
        bail!(
            "{which} has no revision yet: the operator records one when it renders the Application"
        );
    };
    let revision = match args.to_revision {
        Some(n) => {
            let name = names::revision_name(&args.app, n);
            match read_revision(&revisions, &name).await? {
                Some(r) => r,
                None => {
                    let found = existing(&revisions, &args.app, current.revision).await;
                    bail!(
                        "ApplicationRevision {namespace}/{name} not found; {which} has {}",
                        if found.is_empty() {
                            "no revision that this identity can read".to_string()
                        } else {
                            found.join(", ")
                        }
                    );
                }
            }
        }
        None => {
            let mut previous = None;
            for n in window(current.revision).rev().skip(1) {
                if let Some(r) =
                    read_revision(&revisions, &names::revision_name(&args.app, n)).await?
                {
                    previous = Some(r);
                    break;
                }
            }
            let Some(r) = previous else {
                bail!(
                    "{which} has no revision before the current one ({}) to roll back to",
                    current.name
                );
            };
            r
        }
    };
    let name = revision.name_any();
    if revision.spec.application.metadata.name != args.app
        || revision
            .owner_references()
            .iter()
            .all(|o| Some(&o.uid) != app.metadata.uid.as_ref())
    {
        bail!("ApplicationRevision {namespace}/{name} is not a revision of {which}");
    }
    let n = revision.spec.revision;
    if already_at(&app, &revision) {
        println!("{which} is already at revision {n} ({name}); nothing to do");
        return Ok(());
    }
    let patch = rollback_patch(&app, &revision);
    let patched = match crate::rollout::json_patch(client, &app, &patch).await {
        Ok(patched) => patched,
        Err(kube::Error::Api(s)) if s.message.contains("ValidatingAdmissionPolicy") => bail!(
            "the API server refused to roll {which} back to {name}: {}\nA deploy identity may roll \
             back only component images: {name} differs from the current spec in more than the images \
             of the components it covers",
            s.message
        ),
        Err(kube::Error::Api(s)) if s.message.contains("resourceVersion") => bail!(
            "{which} changed while rolling back ({}); run the rollback again",
            s.message
        ),
        Err(e) => return Err(e).with_context(|| format!("patching {which}")),
    };
    let generation = patched.metadata.generation.unwrap_or_default();
    let changed = changed_paths(&patch);
    println!(
        "{which}: rolled back to revision {n} ({name}), generation {generation}; {}",
        if changed.is_empty() {
            "the spec was already that revision's, its recorded definitions render it now"
                .to_string()
        } else {
            format!("changed {}", changed.join(", "))
        }
    );
    if !args.wait {
        return Ok(());
    }
    let target = crate::rollout::Target {
        generation,
        revision_hash: Some(revision.spec.revision_hash.clone()),
    };
    crate::rollout::wait_running(&apps, &namespace, &args.app, &target, args.timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(spec: Value, annotations: Option<Value>) -> Application {
        let mut metadata =
            json!({"name": "shop", "namespace": "team", "resourceVersion": "41", "uid": "u"});
        if let Some(a) = annotations {
            metadata["annotations"] = a;
        }
        serde_json::from_value(
            json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
                                      "metadata": metadata, "spec": spec}),
        )
        .unwrap()
    }

    fn revision(n: i64, spec: Value) -> ApplicationRevision {
        serde_json::from_value(json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "ApplicationRevision",
            "metadata": {"name": format!("shop-v{n}"), "namespace": "team"},
            "spec": {"application": {"metadata": {"name": "shop", "namespace": "team"}, "spec": spec},
                     "revision": n, "revisionHash": format!("h{n}")}}))
        .unwrap()
    }

    fn spec(image: &str, replicas: i64) -> Value {
        json!({"components": [
            {"name": "web", "type": "webservice", "properties": {"image": image, "port": 80},
             "traits": [{"type": "scaler", "properties": {"replicas": replicas}}]},
            {"name": "db", "type": "worker", "properties": {"image": "pg"}}]})
    }

    #[test]
    fn an_image_rollback_patches_the_image_and_the_annotation_only() {
        let live = app(spec("nginx:2", 1), None);
        assert_eq!(
            rollback_patch(&live, &revision(2, spec("nginx:1", 1))),
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "41"},
                {"op": "replace", "path": "/spec/components/0/properties/image", "value": "nginx:1"},
                {"op": "add", "path": "/metadata/annotations",
                 "value": {"oam-trust.dev/rollback-revision": "2"}}
            ])
        );
        // Other annotations stay; the key is escaped as a JSON pointer.
        let annotated = app(spec("nginx:2", 1), Some(json!({"team": "a"})));
        let patch = rollback_patch(&annotated, &revision(2, spec("nginx:1", 1)));
        assert_eq!(
            patch[2],
            json!({"op": "add", "path": "/metadata/annotations/oam-trust.dev~1rollback-revision", "value": "2"})
        );
    }

    #[test]
    fn a_rollback_across_other_changes_patches_each_of_them() {
        let live = app(spec("nginx:2", 3), None);
        let mut old = spec("nginx:1", 1);
        old["components"][1]["properties"] = json!({"image": "pg", "cpu": "1"});
        old["components"][0]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("port");
        let patch = rollback_patch(&live, &revision(1, old.clone()));
        assert_eq!(
            changed_paths(&patch),
            [
                "/spec/components/0/properties/image",
                "/spec/components/0/properties/port",
                "/spec/components/0/traits/0/properties/replicas",
                "/spec/components/1/properties/cpu",
            ]
        );
        assert_eq!(patch[2]["op"], "remove");
        assert_eq!(patch[4]["op"], "add");
        // A component list of another length is replaced whole.
        let one = json!({"components": [old["components"][0].clone()]});
        let patch = rollback_patch(&live, &revision(1, one.clone()));
        assert_eq!(
            patch[1],
            json!({"op": "replace", "path": "/spec/components", "value": one["components"]})
        );
    }

    #[test]
    fn the_patch_turns_the_live_spec_into_the_revisions() {
        // Applying the ops (as the API server does) gives exactly the recorded spec.
        let live = app(spec("nginx:2", 3), Some(json!({"team": "a"})));
        let mut old = spec("nginx:1", 1);
        old["policies"] = json!([{"type": "topology", "properties": {"namespace": "x"}}]);
        old["components"][1]["traits"] = json!([{"type": "labels", "properties": {"a/b": "c"}}]);
        let patch = rollback_patch(&live, &revision(4, old.clone()));
        let mut object = serde_json::to_value(&live).unwrap();
        for op in patch.as_array().unwrap() {
            let path = op["path"].as_str().unwrap();
            let (parent, key) = path.rsplit_once('/').unwrap();
            let key = key.replace("~1", "/").replace("~0", "~");
            match op["op"].as_str().unwrap() {
                "test" => assert_eq!(object.pointer(path).unwrap(), &op["value"]),
                "remove" => {
                    object
                        .pointer_mut(parent)
                        .unwrap()
                        .as_object_mut()
                        .unwrap()
                        .remove(&key);
                }
                _ => match object.pointer_mut(parent).unwrap() {
                    Value::Array(items) => {
                        items[key.parse::<usize>().unwrap()] = op["value"].clone()
                    }
                    Value::Object(map) => {
                        map.insert(key, op["value"].clone());
                    }
                    other => panic!("{other}"),
                },
            }
        }
        assert_eq!(object["spec"], old);
        assert_eq!(
            object["metadata"]["annotations"],
            json!({"team": "a", "oam-trust.dev/rollback-revision": "4"})
        );
    }

    #[test]
    fn already_at_a_revision_means_its_spec_and_its_definitions() {
        let rev = revision(2, spec("nginx:1", 1));
        let mut live = app(spec("nginx:1", 1), None);
        // Same spec, but rendering with other definitions than revision 2 recorded: not there yet.
        assert!(!already_at(&live, &rev));
        live.metadata.annotations = Some(
            [(
                names::ANNOTATION_ROLLBACK_REVISION.to_string(),
                "2".to_string(),
            )]
            .into(),
        );
        assert!(already_at(&live, &rev));
        let mut recorded = app(spec("nginx:1", 1), None);
        recorded.status = Some(
            serde_json::from_value(
                json!({"latestRevision": {"name": "shop-v5", "revision": 5, "revisionHash": "h2"}}),
            )
            .unwrap(),
        );
        assert!(already_at(&recorded, &rev));
        assert!(!already_at(&app(spec("nginx:2", 1), None), &rev));
    }

    #[test]
    fn a_grant_reads_a_window_of_revisions() {
        assert_eq!(window(3), 1..=3);
        assert_eq!(window(250), 151..=250);
        assert!(window(0).is_empty());
    }
}
