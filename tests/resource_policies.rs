//! KubeVela's resource policies, acting on the real control plane: `garbage-collect`
//! (keepLegacyResource, `never`, `onAppDelete`), `apply-once` (an HPA-style owner of
//! `spec.replicas` is never fought), `take-over` (an unmanaged object is adopted only with it),
//! `shared-resource` (two Applications share one object; the last one deletes it), `read-only` (never
//! written) and `resource-update` (`op: replace`, `recreateFields`).
mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use oam_trust::api::oam::Application;
use serde_json::{Value, json};

fn cm(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

fn app(name: &str, components: Value, policies: Value) -> Value {
    json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": name},
           "spec": {"components": components, "policies": policies}})
}

fn objects(name: &str, objects: Value) -> Value {
    json!({"name": name, "type": "k8s-objects", "properties": {"objects": objects}})
}

fn condition<'a>(
    a: &'a Application,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    a.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

async fn running(admin: &Client, ns: &str, name: &str) -> Application {
    support::wait_app(admin, ns, name, "running", support::app_running).await
}

async fn applied_false(admin: &Client, ns: &str, name: &str, reason: &str) -> Application {
    support::wait_app(admin, ns, name, &format!("Applied=False {reason}"), |a| {
        condition(a, "Applied").is_some_and(|c| c.status == "False" && c.reason == reason)
    })
    .await
}

async fn gone<K>(api: &Api<K>, name: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    support::eventually(Duration::from_secs(60), || async {
        matches!(api.get_opt(name).await, Ok(None))
    })
    .await
}

async fn delete_app(admin: &Client, ns: &str, name: &str) {
    Api::<Application>::namespaced(admin.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    let apps = Api::<Application>::namespaced(admin.clone(), ns);
    assert!(
        gone(&apps, name).await,
        "Application {name} was not deleted"
    );
}

#[tokio::test]
async fn garbage_collect_keeps_what_its_rules_say() {
    support::operator().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "pol-gc", "admin").await;
    let cms = Api::<ConfigMap>::namespaced(admin.clone(), &ns);
    let gc = json!([{"name": "gc", "type": "garbage-collect", "properties": {"rules": [
        {"selector": {"resourceNames": ["forever"]}, "strategy": "never"},
        {"selector": {"resourceNames": ["until-delete"]}, "strategy": "onAppDelete"}]}}]);
    let all = json!([objects(
        "cfg",
        json!([
            cm("forever", json!({"k": "v"})),
            cm("until-delete", json!({"k": "v"})),
            cm("ordinary", json!({"k": "v"}))
        ])
    )]);
    support::apply_app(&admin, &ns, app("gc", all, gc.clone())).await;
    running(&admin, &ns, "gc").await;

    // Drop all three from the Application: only the ordinary one is pruned.
    let one = json!([objects("cfg", json!([cm("other", json!({"k": "v"}))]))]);
    support::apply_app(&admin, &ns, app("gc", one, gc)).await;
    running(&admin, &ns, "gc").await;
    assert!(
        gone(&cms, "ordinary").await,
        "an ordinary object no longer rendered is pruned"
    );
    assert!(cms.get_opt("forever").await.unwrap().is_some());
    assert!(cms.get_opt("until-delete").await.unwrap().is_some());

    // Deleting the Application deletes the onAppDelete one; `never` outlives it.
    delete_app(&admin, &ns, "gc").await;
    assert!(
        gone(&cms, "until-delete").await,
        "onAppDelete goes with the Application"
    );
    assert!(gone(&cms, "other").await);
    let forever = cms
        .get("forever")
        .await
        .expect("never: kept after the Application is gone");
    assert!(
        forever.owner_references().is_empty(),
        "a `never` object carries no ownerReference the garbage collector would follow"
    );
}

#[tokio::test]
async fn keep_legacy_resource_prunes_nothing_until_the_application_goes() {
    support::operator().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "pol-legacy", "admin").await;
    let cms = Api::<ConfigMap>::namespaced(admin.clone(), &ns);
    let keep = json!([{"name": "gc", "type": "garbage-collect", "properties": {"keepLegacyResource": true}}]);
    support::apply_app(
        &admin,
        &ns,
        app(
            "legacy",
            json!([objects("v1", json!([cm("v1", json!({"a": "1"}))]))]),
            keep.clone(),
        ),
    )
    .await;
    running(&admin, &ns, "legacy").await;
    support::apply_app(
        &admin,
        &ns,
        app(
            "legacy",
            json!([objects("v2", json!([cm("v2", json!({"a": "2"}))]))]),
            keep,
        ),
    )
    .await;
    let a = running(&admin, &ns, "legacy").await;
    assert!(
        cms.get_opt("v1").await.unwrap().is_some(),
        "the legacy object is kept"
    );
    let tracked: Vec<String> = a
        .status
        .unwrap()
        .applied_resources
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert!(
        tracked.contains(&"v1".to_string()) && tracked.contains(&"v2".to_string()),
        "{tracked:?}"
    );
    delete_app(&admin, &ns, "legacy").await;
    assert!(
        gone(&cms, "v1").await && gone(&cms, "v2").await,
        "both go with the Application"
    );
}

#[tokio::test]
async fn apply_once_leaves_replicas_to_their_owner() {
    support::operator().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "pol-once", "admin").await;
    let deploys = Api::<Deployment>::namespaced(admin.clone(), &ns);
    let web = |image: &str| {
        json!([{"name": "web", "type": "webservice", "properties": {"image": image},
                "traits": [{"type": "scaler", "properties": {"replicas": 2}}]}])
    };
    let once = json!([{"name": "once", "type": "apply-once", "properties": {"enable": true, "rules": [
        {"selector": {"resourceTypes": ["Deployment"]}, "strategy": {"path": ["spec.replicas"]}}]}}]);
    support::apply_app(&admin, &ns, app("once", web("nginx:1"), once.clone())).await;
    running(&admin, &ns, "once").await;
    assert_eq!(
        deploys.get("web").await.unwrap().spec.unwrap().replicas,
        Some(2)
    );

    // An autoscaler (here: the admin) scales it; the Deployment's own event triggers a reconcile.
    deploys
        .patch(
            "web",
            &PatchParams::apply("hpa-controller").force(),
            &Patch::Apply(
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 5}}),
            ),
        )
        .await
        .unwrap();
    // An image change makes the operator write the Deployment: the replicas stay the autoscaler's.
    support::apply_app(&admin, &ns, app("once", web("nginx:2"), once)).await;
    running(&admin, &ns, "once").await;
    let d = deploys.get("web").await.unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(
        spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some("nginx:2")
    );
    assert_eq!(
        spec.replicas,
        Some(5),
        "apply-once: the live replicas are kept"
    );

    // Without the policy the same drift is corrected back to the Application's value.
    support::apply_app(&admin, &ns, app("once", web("nginx:2"), json!([]))).await;
    running(&admin, &ns, "once").await;
    let corrected = support::eventually(Duration::from_secs(30), || async {
        deploys.get("web").await.unwrap().spec.unwrap().replicas == Some(2)
    })
    .await;
    assert!(
        corrected,
        "without apply-once the scaler's 2 replicas are restored"
    );
}

#[tokio::test]
async fn an_unmanaged_object_is_adopted_only_with_take_over() {
    support::operator().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "pol-take", "admin").await;
    let cms = Api::<ConfigMap>::namespaced(admin.clone(), &ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(cm("legacy", json!({"owner": "ops"}))).unwrap(),
    )
    .await
    .unwrap();
    let comps = json!([objects(
        "cfg",
        json!([cm("legacy", json!({"owner": "app"}))])
    )]);
    support::apply_app(&admin, &ns, app("taker", comps.clone(), json!([]))).await;
    let refused = applied_false(&admin, &ns, "taker", "NotManaged").await;
    assert!(
        condition(&refused, "Applied")
            .unwrap()
            .message
            .contains("take-over"),
        "the message names the fix"
    );
    assert_eq!(
        cms.get("legacy").await.unwrap().data.unwrap()["owner"],
        "ops",
        "nothing was written"
    );

    let take = json!([{"name": "take", "type": "take-over", "properties": {"rules": [{"selector": {"resourceTypes": ["ConfigMap"]}}]}}]);
    support::apply_app(&admin, &ns, app("taker", comps, take)).await;
    running(&admin, &ns, "taker").await;
    let adopted = cms.get("legacy").await.unwrap();
    assert_eq!(adopted.data.clone().unwrap()["owner"], "app");
    assert_eq!(
        adopted.owner_references()[0].name,
        "taker",
        "adopted: owned by the Application now"
    );
}

#[tokio::test]
async fn two_applications_share_an_object_and_the_last_one_deletes_it() {
    support::operator().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "pol-share", "admin").await;
    let cms = Api::<ConfigMap>::namespaced(admin.clone(), &ns);
    let share = json!([{"name": "share", "type": "shared-resource", "properties": {"rules": [{"selector": {"resourceNames": ["shared"]}}]}}]);
    for (name, value) in [("first", "1"), ("second", "2")] {
        let comps = json!([objects(
            "cfg",
            json!([
                cm("shared", json!({"by": value})),
                cm(&format!("own-{name}"), json!({}))
            ])
        )]);
        support::apply_app(&admin, &ns, app(name, comps, share.clone())).await;
        running(&admin, &ns, name).await;
    }
    let shared = cms.get("shared").await.unwrap();
    let by = shared.annotations()["app.oam.dev/shared-by"].clone();
    assert_eq!(by, format!("{ns}/first,{ns}/second"));
    assert_eq!(
        shared.data.clone().unwrap()["by"],
        "1",
        "the first writer owns the content"
    );
    assert!(
        shared.owner_references().is_empty(),
        "no ownerReference: neither deletion takes it alone"
    );

    delete_app(&admin, &ns, "first").await;
    let after = cms.get("shared").await.expect("still shared by the second");
    assert_eq!(
        after.annotations()["app.oam.dev/shared-by"],
        format!("{ns}/second")
    );
    assert_eq!(
        after.labels()["app.oam.dev/name"],
        "second",
        "handed to the remaining sharer"
    );
    assert!(gone(&cms, "own-first").await);
    delete_app(&admin, &ns, "second").await;
    assert!(gone(&cms, "shared").await, "the last sharer deletes it");
}

#[tokio::test]
async fn read_only_objects_are_never_written_and_must_exist() {
    support::operator().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "pol-ro", "admin").await;
    let cms = Api::<ConfigMap>::namespaced(admin.clone(), &ns);
    let ro = json!([{"name": "ro", "type": "read-only", "properties": {"rules": [{"selector": {"resourceNames": ["platform"]}}]}}]);
    let comps = json!([objects(
        "cfg",
        json!([
            cm("platform", json!({"mine": "yes"})),
            cm("app-own", json!({}))
        ])
    )]);
    support::apply_app(&admin, &ns, app("reader", comps.clone(), ro.clone())).await;
    let missing = applied_false(&admin, &ns, "reader", "ReadOnlyMissing").await;
    assert!(
        condition(&missing, "Applied")
            .unwrap()
            .message
            .contains("read-only")
    );

    cms.create(
        &PostParams::default(),
        &serde_json::from_value(cm("platform", json!({"owner": "platform-team"}))).unwrap(),
    )
    .await
    .unwrap();
    // A change to the Application makes it reconcile again (the ConfigMap is not its own).
    let comps2 = json!([objects(
        "cfg",
        json!([
            cm("platform", json!({"mine": "yes"})),
            cm("app-own", json!({"v": "2"}))
        ])
    )]);
    support::apply_app(&admin, &ns, app("reader", comps2, ro)).await;
    running(&admin, &ns, "reader").await;
    let platform = cms.get("platform").await.unwrap();
    assert_eq!(
        platform.data.clone().unwrap().get("mine"),
        None,
        "never written"
    );
    assert!(platform.owner_references().is_empty());
    delete_app(&admin, &ns, "reader").await;
    assert!(
        cms.get_opt("platform").await.unwrap().is_some(),
        "never deleted"
    );
}

#[tokio::test]
async fn resource_update_replaces_or_recreates() {
    support::operator().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "pol-update", "admin").await;
    let cms = Api::<ConfigMap>::namespaced(admin.clone(), &ns);
    let policy = json!([{"name": "upd", "type": "resource-update", "properties": {"rules": [
        {"selector": {"resourceNames": ["replaced"]}, "strategy": {"op": "replace"}},
        {"selector": {"resourceNames": ["recreated"]}, "strategy": {"recreateFields": ["data.generation"]}}]}}]);
    let comps = |v: &str| {
        json!([objects(
            "cfg",
            json!([
                cm("replaced", json!({"v": v})),
                cm("recreated", json!({"generation": v}))
            ])
        )])
    };
    support::apply_app(&admin, &ns, app("upd", comps("1"), policy.clone())).await;
    running(&admin, &ns, "upd").await;
    // Someone else adds a field; a replace drops it, a patch would keep it.
    cms.patch(
        "replaced",
        &PatchParams::apply("someone").force(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"foreign": "x"}})),
    )
    .await
    .unwrap();
    let uid_before = cms.get("recreated").await.unwrap().uid();
    support::apply_app(&admin, &ns, app("upd", comps("2"), policy)).await;
    running(&admin, &ns, "upd").await;
    let replaced = cms.get("replaced").await.unwrap().data.unwrap();
    assert_eq!(replaced.get("v").map(String::as_str), Some("2"));
    assert_eq!(
        replaced.get("foreign"),
        None,
        "op: replace writes the whole object"
    );
    let recreated = cms.get("recreated").await.unwrap();
    assert_ne!(
        recreated.uid(),
        uid_before,
        "a changed recreateField re-creates the object"
    );
    assert_eq!(recreated.data.unwrap()["generation"], "2");
}

#[tokio::test]
async fn ref_objects_adopt_what_they_name_read_with_the_appliers_rights() {
    support::operator().await;
    let admin = support::admin().await;
    let ns = support::app_namespace(&admin, "pol-ref", "admin").await;
    let other = support::namespace(&admin, "pol-ref-other").await;
    let cms = Api::<ConfigMap>::namespaced(admin.clone(), &ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(cm("settings", json!({"k": "v"}))).unwrap(),
    )
    .await
    .unwrap();
    let mut labelled = cm("labelled", json!({"x": "1"}));
    labelled["metadata"]["labels"] = json!({"pick": "me"});
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(labelled).unwrap(),
    )
    .await
    .unwrap();
    let refs = json!([{"name": "existing", "type": "ref-objects", "properties": {"objects": [
        {"resource": "configmap", "name": "settings"},
        {"apiVersion": "v1", "kind": "ConfigMap", "labelSelector": {"pick": "me"}}]}}]);
    support::apply_app(&admin, &ns, app("refs", refs, json!([]))).await;
    let a = running(&admin, &ns, "refs").await;
    for name in ["settings", "labelled"] {
        let live = cms.get(name).await.unwrap();
        assert_eq!(
            live.owner_references()[0].name,
            "refs",
            "{name}: taken over by the Application"
        );
        assert_eq!(live.labels()["app.oam.dev/component"], "existing");
    }
    assert_eq!(
        cms.get("settings").await.unwrap().data.unwrap()["k"],
        "v",
        "content kept"
    );
    assert_eq!(a.status.unwrap().services[0].name, "existing");

    // Another namespace its applier cannot read: the Application says so and nothing changes.
    let theirs = Api::<ConfigMap>::namespaced(admin.clone(), &other);
    theirs
        .create(
            &PostParams::default(),
            &serde_json::from_value(cm("secretive", json!({"k": "v"}))).unwrap(),
        )
        .await
        .unwrap();
    let cross = json!([{"name": "stolen", "type": "ref-objects", "properties": {"objects": [
        {"resource": "configmaps", "name": "secretive", "namespace": other}]}}]);
    support::apply_app(&admin, &ns, app("thief", cross, json!([]))).await;
    let refused = support::wait_app(
        &admin,
        &ns,
        "thief",
        "Parsed=False ReferenceUnreadable",
        |a| condition(a, "Parsed").is_some_and(|c| c.status == "False"),
    )
    .await;
    let message = &condition(&refused, "Parsed").unwrap().message;
    assert!(
        message.contains("may not read") && message.contains("secretive"),
        "{message}"
    );
    assert!(
        theirs
            .get("secretive")
            .await
            .unwrap()
            .owner_references()
            .is_empty()
    );
}
