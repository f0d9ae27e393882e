//! ApplicationRevisions and `oam-trust rollback` on the real control plane: one revision per change
//! (and none for an unchanged resync), retention by `--revision-limit`, a rollback restoring the live
//! objects of a revision, a rollback rendering with the definitions its revision recorded, and a
//! deploy identity (a grant ServiceAccount's token, the deploy guard installed as shipped) whose image
//! rollback is admitted and whose rollback across a trait change is refused by the guard.
//!
//! Each test runs its own operator and they run one at a time: retention needs a small limit, and
//! two operators recording revisions of the same Application would race for its next number.
mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use oam_trust::api::oam::{Application, ComponentDefinition};
use oam_trust::api::revision::ApplicationRevision;
use oam_trust::rollback::{RollbackArgs, rollback_with};
use oam_trust::runtime::metrics::Metrics;
use serde_json::{Value, json};
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());
const WAIT: Duration = Duration::from_secs(60);

/// A test's namespace (with an applier), held alone: no other test of this file runs meanwhile.
struct Scene {
    admin: Client,
    ns: String,
    _one: tokio::sync::MutexGuard<'static, ()>,
}

async fn scene(prefix: &str) -> Scene {
    let one = ONE_AT_A_TIME.lock().await;
    let admin = support::admin().await;
    support::install_crds(&admin).await;
    let ns = support::app_namespace(&admin, prefix, "admin").await;
    Scene {
        admin,
        ns,
        _one: one,
    }
}

/// This test's operator (admin credentials, no Lease), recording into `metrics`.
async fn operator(name: &str, limit: usize, metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
    let mut args = support::own_operator_args(name);
    args.revision_limit = limit;
    support::start_own_operator(args, metrics).await
}

fn web(image: &str, replicas: i64) -> Value {
    json!({"name": "web", "type": "webservice",
           "properties": {"image": image, "ports": [{"port": 80, "expose": true}]},
           "traits": [{"type": "scaler", "properties": {"replicas": replicas}}]})
}

fn application(name: &str, components: Value, policies: Value) -> Value {
    json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": name},
           "spec": {"components": components, "policies": policies}})
}

/// The revisions of Application `app`, by number.
async fn revisions(admin: &Client, ns: &str, app: &str) -> Vec<ApplicationRevision> {
    let mut found = Api::<ApplicationRevision>::namespaced(admin.clone(), ns)
        .list(&ListParams::default().labels(&format!("app.oam.dev/name={app}")))
        .await
        .unwrap()
        .items;
    found.sort_by_key(|r| r.spec.revision);
    found
}

async fn names(admin: &Client, ns: &str, app: &str) -> Vec<String> {
    revisions(admin, ns, app)
        .await
        .iter()
        .map(|r| r.name_any())
        .collect()
}

/// Waits until the Application runs its current generation recorded as revision `n`.
async fn at_revision(admin: &Client, ns: &str, app: &str, n: i64) -> Application {
    support::wait_app(admin, ns, app, &format!("running at revision {n}"), |a| {
        support::app_running(a)
            && a.status
                .as_ref()
                .and_then(|s| s.latest_revision.as_ref())
                .is_some_and(|r| r.revision == n && r.name == format!("{app}-v{n}"))
    })
    .await
}

/// Polls until Deployment `name` satisfies `pred`; returns it.
async fn deployment(admin: &Client, ns: &str, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let api = Api::<Deployment>::namespaced(admin.clone(), ns);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let live = api
            .get_opt(name)
            .await
            .unwrap()
            .map(|d| serde_json::to_value(d).unwrap());
        if let Some(live) = live.as_ref().filter(|d| pred(d)) {
            return live.clone();
        }
        let spec = live.map(|d| d["spec"].clone());
        assert!(
            tokio::time::Instant::now() < deadline,
            "Deployment {name} not as expected: {spec:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn image_of(d: &Value) -> &str {
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
}

fn args(app: &str, to: Option<i64>) -> RollbackArgs {
    RollbackArgs {
        app: app.to_string(),
        namespace: None,
        to_revision: to,
        wait: true,
        timeout: WAIT,
    }
}

#[tokio::test]
async fn five_spec_changes_make_five_revisions_and_a_resync_makes_none() {
    let Scene { admin, ns, _one } = scene("rev-five").await;
    let first = operator("rev-five", 10, Arc::new(Metrics::default())).await;
    for i in 1..=5 {
        let app = application("shop", json!([web(&format!("nginx:1.{i}"), 1)]), json!([]));
        support::apply_app(&admin, &ns, app).await;
        at_revision(&admin, &ns, "shop", i).await;
    }
    let live = Api::<Application>::namespaced(admin.clone(), &ns)
        .get("shop")
        .await
        .unwrap();
    let recorded = revisions(&admin, &ns, "shop").await;
    let got: Vec<(String, i64, String)> = recorded
        .iter()
        .map(|r| {
            let spec = serde_json::to_value(&r.spec.application.spec).unwrap();
            let image = spec["components"][0]["properties"]["image"]
                .as_str()
                .unwrap();
            (r.name_any(), r.spec.revision, image.to_string())
        })
        .collect();
    let want: Vec<(String, i64, String)> = (1..=5)
        .map(|i| (format!("shop-v{i}"), i, format!("nginx:1.{i}")))
        .collect();
    assert_eq!(got, want, "one revision per change, each holding its spec");
    for r in &recorded {
        let owner = &r.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), Some(&owner.uid), owner.controller),
            ("Application", live.metadata.uid.as_ref(), Some(true))
        );
        assert_eq!(
            r.labels().get("app.oam.dev/app-revision-hash"),
            Some(&r.spec.revision_hash)
        );
    }
    assert_eq!(recorded.last().unwrap().spec.application.spec, live.spec);
    let latest = live.status.unwrap().latest_revision.unwrap();
    assert_eq!(
        latest.revision_hash.as_deref(),
        Some(recorded[4].spec.revision_hash.as_str())
    );
    // The first operator may still have a status write in flight (the rollout's last health
    // change): stop it only once the status has held still for a while, or the second operator
    // would make that write and the "no writes" check would see it.
    let apps = Api::<Application>::namespaced(admin.clone(), &ns);
    let mut settled = false;
    for _ in 0..20 {
        let before = serde_json::to_value(apps.get("shop").await.unwrap().status).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = serde_json::to_value(apps.get("shop").await.unwrap().status).unwrap();
        if before == after && after["status"] == "running" {
            settled = true;
            break;
        }
    }
    assert!(settled, "the status never held still");
    first.abort();
    let _ = first.await;

    // A restarted operator reconciles the unchanged Application and writes no revision.
    let metrics = Arc::new(Metrics::recording_writes());
    let second = operator("rev-five-resync", 10, metrics.clone()).await;
    let reconciled = support::eventually(WAIT, || {
        let m = metrics.clone();
        async move { m.reconciles("application") >= 1 }
    })
    .await;
    assert!(reconciled, "the restarted operator reconciled nothing");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ours: Vec<String> = metrics
        .written()
        .into_iter()
        .filter(|w| w.contains(&format!("/namespaces/{ns}/")))
        .collect();
    assert_eq!(ours, Vec::<String>::new(), "an unchanged resync wrote");
    assert_eq!(names(&admin, &ns, "shop").await.len(), 5);
    second.abort();
}

#[tokio::test]
async fn rollback_to_v2_restores_v2s_objects() {
    let Scene { admin, ns, _one } = scene("rev-back").await;
    let op = operator("rev-back", 10, Arc::new(Metrics::default())).await;
    for (i, (image, replicas)) in [("nginx:1", 1), ("nginx:2", 2), ("nginx:3", 3)]
        .into_iter()
        .enumerate()
    {
        let app = application("shop", json!([web(image, replicas)]), json!([]));
        support::apply_app(&admin, &ns, app).await;
        at_revision(&admin, &ns, "shop", i as i64 + 1).await;
    }
    deployment(&admin, &ns, "web", |d| image_of(d) == "nginx:3").await;

    rollback_with(&admin, &ns, &args("shop", Some(2)))
        .await
        .expect("the admin rolls back to v2");
    // The restored spec is recorded as a new revision with v2's content.
    let app = at_revision(&admin, &ns, "shop", 4).await;
    let recorded = revisions(&admin, &ns, "shop").await;
    assert_eq!(recorded.len(), 4);
    assert_eq!(
        recorded[3].spec.revision_hash,
        recorded[1].spec.revision_hash
    );
    assert_eq!(app.spec, recorded[1].spec.application.spec);
    assert_eq!(
        app.annotations().get("oam-trust.dev/rollback-revision"),
        Some(&"2".to_string())
    );
    let live = deployment(&admin, &ns, "web", |d| image_of(d) == "nginx:2").await;
    assert_eq!(live["spec"]["replicas"], 2, "v2's scaler");

    // Rolling back to where it is changes nothing; to a revision that does not exist says which do.
    rollback_with(&admin, &ns, &args("shop", Some(2)))
        .await
        .expect("already at v2: a no-op");
    assert_eq!(names(&admin, &ns, "shop").await.len(), 4);
    let missing = rollback_with(&admin, &ns, &args("shop", Some(9)))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        missing,
        format!(
            "ApplicationRevision {ns}/shop-v9 not found; Application {ns}/shop has shop-v1, shop-v2, shop-v3, shop-v4"
        )
    );
    // Without --to-revision: the newest revision before the current one (v3).
    rollback_with(&admin, &ns, &args("shop", None))
        .await
        .expect("the admin rolls back to the previous revision");
    at_revision(&admin, &ns, "shop", 5).await;
    deployment(&admin, &ns, "web", |d| {
        image_of(d) == "nginx:3" && d["spec"]["replicas"] == 3
    })
    .await;
    op.abort();
}

#[tokio::test]
async fn retention_keeps_the_newest_revisions_up_to_the_limit() {
    let Scene { admin, ns, _one } = scene("rev-limit").await;
    let op = operator("rev-limit", 2, Arc::new(Metrics::default())).await;
    for i in 1..=4 {
        let app = application("shop", json!([web(&format!("nginx:{i}"), 1)]), json!([]));
        support::apply_app(&admin, &ns, app).await;
        at_revision(&admin, &ns, "shop", i).await;
    }
    let kept = support::eventually(WAIT, || async {
        names(&admin, &ns, "shop").await == ["shop-v3", "shop-v4"]
    })
    .await;
    assert!(kept, "kept {:?}", names(&admin, &ns, "shop").await);
    // Rolling back to the oldest one kept: its content lives on as v5, and v3 goes.
    rollback_with(&admin, &ns, &args("shop", Some(3)))
        .await
        .expect("rollback to v3");
    at_revision(&admin, &ns, "shop", 5).await;
    let kept = support::eventually(WAIT, || async {
        names(&admin, &ns, "shop").await == ["shop-v4", "shop-v5"]
    })
    .await;
    assert!(kept, "kept {:?}", names(&admin, &ns, "shop").await);
    deployment(&admin, &ns, "web", |d| image_of(d) == "nginx:3").await;
    op.abort();
}

#[tokio::test]
async fn a_rollback_renders_with_the_definitions_its_revision_recorded() {
    let Scene { admin, ns, _one } = scene("rev-defs").await;
    let op = operator("rev-defs", 10, Arc::new(Metrics::default())).await;
    let definition = |greeting: &str| {
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "ComponentDefinition",
               "metadata": {"name": "greeting", "namespace": ns},
               "spec": {"workload": {"definition": {"apiVersion": "v1", "kind": "ConfigMap"}},
                        "schematic": {"kube": {
                            "template": {"apiVersion": "v1", "kind": "ConfigMap", "data": {"greeting": greeting, "name": "x"}},
                            "parameters": [{"name": "who", "type": "string", "required": true, "fieldPaths": ["data.name"]}]}}}})
    };
    let defs = Api::<ComponentDefinition>::namespaced(admin.clone(), &ns);
    let pp = PatchParams::apply("test-user").force();
    let card = |who: &str| {
        application(
            "hi",
            json!([{"name": "card", "type": "greeting", "properties": {"who": who}}]),
            json!([]),
        )
    };
    let cms = Api::<ConfigMap>::namespaced(admin.clone(), &ns);
    let rendered = |greeting: &'static str, who: &'static str| {
        let cms = cms.clone();
        async move {
            let ok = support::eventually(WAIT, || async {
                cms.get_opt("card")
                    .await
                    .unwrap()
                    .and_then(|c| c.data)
                    .is_some_and(|d| {
                        d.get("greeting").map(String::as_str) == Some(greeting)
                            && d.get("name").map(String::as_str) == Some(who)
                    })
            })
            .await;
            let data = cms.get_opt("card").await.unwrap().and_then(|c| c.data);
            assert!(ok, "ConfigMap card is not ({greeting}, {who}): {data:?}");
        }
    };
    defs.patch("greeting", &pp, &Patch::Apply(definition("hello")))
        .await
        .unwrap();
    support::apply_app(&admin, &ns, card("world")).await;
    at_revision(&admin, &ns, "hi", 1).await;
    rendered("hello", "world").await;
    // The definition changes: the same spec renders anew, recorded as v2.
    defs.patch("greeting", &pp, &Patch::Apply(definition("bye")))
        .await
        .unwrap();
    at_revision(&admin, &ns, "hi", 2).await;
    rendered("bye", "world").await;
    support::apply_app(&admin, &ns, card("moon")).await;
    at_revision(&admin, &ns, "hi", 3).await;
    rendered("bye", "moon").await;
    let v1 = &revisions(&admin, &ns, "hi").await[0];
    assert_eq!(
        v1.spec.component_definitions["greeting"]["spec"]["schematic"]["kube"]["template"]["data"]
            ["greeting"],
        "hello",
        "v1 recorded the definition it rendered with"
    );

    // Back to v1: its spec, rendered with the definition v1 recorded, not the cluster's.
    rollback_with(&admin, &ns, &args("hi", Some(1)))
        .await
        .expect("rollback to v1");
    at_revision(&admin, &ns, "hi", 4).await;
    rendered("hello", "world").await;
    let recorded = revisions(&admin, &ns, "hi").await;
    assert_eq!(
        recorded[3].spec.revision_hash,
        recorded[0].spec.revision_hash
    );
    // The next change of the spec renders with the cluster's definitions again.
    support::apply_app(&admin, &ns, card("sun")).await;
    at_revision(&admin, &ns, "hi", 5).await;
    rendered("bye", "sun").await;
    op.abort();
}

/// Waits until `client` may read revision `name` (the grant's Role follows the latest revision).
async fn may_read(client: &Client, ns: &str, name: &str) {
    let can = support::eventually(WAIT, || async {
        support::can_i(
            client,
            support::Access {
                verb: "get",
                group: "core.oam.dev",
                resource: "applicationrevisions",
                namespace: Some(ns),
                name: Some(name),
            },
        )
        .await
    })
    .await;
    assert!(can, "the grant may get ApplicationRevision {name}");
}

#[tokio::test]
async fn a_deploy_identity_rolls_back_an_image_and_is_refused_a_trait_change() {
    let Scene { admin, ns, _one } = scene("rev-deploy").await;
    support::install_deploy_guard(&admin).await;
    // Its ceiling allows deploy's reads, and reading revisions.
    let trust = support::trust_with_wide_ceiling(&admin, &ns).await;
    let op = operator("rev-deploy", 10, Arc::new(Metrics::default())).await;
    let deploy = json!([{"name": "ci", "type": "gitlab-access", "properties": {"trust": trust,
        "subjects": [{"projectId": "1450", "namespaceId": "72"}], "access": "deploy", "ttl": "10m"}}]);
    let versions = [
        ("nginx:1", 1),
        ("nginx:2", 1),
        ("nginx:2", 2),
        ("nginx:3", 2),
    ];
    for (i, (image, replicas)) in versions.into_iter().enumerate() {
        let app = application("shop", json!([web(image, replicas)]), deploy.clone());
        support::apply_app(&admin, &ns, app).await;
        at_revision(&admin, &ns, "shop", i as i64 + 1).await;
    }
    let sa = support::grant_account(&admin, &ns, "shop").await;
    let job = support::client_with_token(&support::token_for(&admin, &ns, &sa, 600).await).await;
    may_read(&job, &ns, "shop-v4").await;

    // v3 differs from v4 in the image only: admitted, and running.
    rollback_with(&job, &ns, &args("shop", Some(3)))
        .await
        .expect("a deploy job rolls back an image");
    at_revision(&admin, &ns, "shop", 5).await;
    deployment(&admin, &ns, "web", |d| {
        image_of(d) == "nginx:2" && d["spec"]["replicas"] == 2
    })
    .await;

    // v1 differs in the scaler trait too: the guard refuses, and nothing changes.
    may_read(&job, &ns, "shop-v5").await;
    let before = Api::<Application>::namespaced(admin.clone(), &ns)
        .get("shop")
        .await
        .unwrap();
    let refused = rollback_with(&job, &ns, &args("shop", Some(1)))
        .await
        .unwrap_err()
        .to_string();
    // Either binding of the guard may answer first (with or without its parameters); both name the rule.
    assert!(
        refused.starts_with(&format!(
            "the API server refused to roll Application {ns}/shop back to shop-v1: "
        )) && refused.contains("ValidatingAdmissionPolicy 'oam-trust-deploy-guard' with binding")
            && refused.contains("; traits cannot change\n")
            && refused.ends_with(
                "A deploy identity may roll back only component images: shop-v1 differs from the \
                 current spec in more than the images of the components it covers"
            ),
        "{refused}"
    );
    let after = Api::<Application>::namespaced(admin.clone(), &ns)
        .get("shop")
        .await
        .unwrap();
    assert_eq!(after.resource_version(), before.resource_version());

    // The annotation is the one a deploy job may set, and only to a revision number; no other.
    let apps = Api::<Application>::namespaced(job.clone(), &ns);
    for (key, value) in [
        ("oam-trust.dev/rollback-revision", "v1"),
        ("oam-trust.dev/other", "1"),
    ] {
        let patch = Patch::Merge(json!({"metadata": {"annotations": {key: value}}}));
        match apps.patch("shop", &PatchParams::default(), &patch).await {
            Err(kube::Error::Api(s)) => assert!(
                s.code == 403
                    && s.message
                        .contains("annotations, finalizers and ownerReferences cannot change"),
                "{key}={value}: {s:?}"
            ),
            other => panic!("{key}={value} was not refused: {other:?}"),
        }
    }
    op.abort();
}
