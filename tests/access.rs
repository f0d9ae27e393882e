//! GitLab access on the real control plane, proven with real tokens: `gitlab-access` declarations become
//! a ServiceAccount + Role + RoleBinding per grant, each preset allows exactly what it says on exactly the
//! Application's objects, the deploy guard (ValidatingAdmissionPolicy from config/admission) limits a
//! deploy identity to component images, GitLab agent identities get the same grant, revocation works,
//! refusals create nothing, and GitLabTrust key status.
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use oam_trust::api::oam::Application;
use oam_trust::api::trust::GitLabTrust;
use oam_trust::dev_issuer::{DevIssuer, DevIssuerOptions};
use oam_trust::oidc::KeySet;
use serde_json::{Value, json};
use support::Access;

const WAIT: Duration = Duration::from_secs(60);
const GRANT_LABEL: &str = "oam-trust.dev/grant";
const VERBS: [&str; 7] = [
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// Everything one access test works in: a selected namespace with an applier, a trust and its ceiling
/// (named after the namespace, so tests do not share them), and a second namespace.
struct Scene {
    client: Client,
    ns: String,
    other_ns: String,
    trust: String,
    ceiling: String,
}

async fn scene(prefix: &str, agent: bool) -> Scene {
    support::operator().await;
    let client = support::admin().await;
    support::install_deploy_guard(&client).await;
    let ns = support::app_namespace(&client, prefix, "admin").await;
    let other_ns = support::namespace(&client, &format!("{prefix}-other")).await;
    label_namespace(&client, &ns, &ns).await;
    let trust = format!("trust-{ns}");
    let ceiling = format!("ceiling-{ns}");
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": ceiling},
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
            {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
            {"apiGroups": ["core.oam.dev"], "resources": ["applications"], "verbs": ["get", "list", "watch", "update", "patch"]}
        ]
    }))
    .unwrap();
    Api::<ClusterRole>::all(client.clone())
        .patch(
            &ceiling,
            &PatchParams::apply("oam-trust-tests").force(),
            &Patch::Apply(&role),
        )
        .await
        .unwrap();
    let glt = json!({
        "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust", "metadata": {"name": trust},
        "spec": {
            "issuer": "https://gitlab.example.com",
            "audiences": ["https://oam-trust.test"],
            "jwks": {"static": r#"{"keys":[]}"#},
            "namespaceSelector": {"matchLabels": {"oam-trust.dev/access-test": ns}},
            "allow": [{"namespaceId": "72"}, {"projectPath": "platform/*"}],
            "tokens": {"defaultTTL": "10m", "maxTTL": "1h"},
            "ceiling": {"clusterRoleRef": ceiling},
            "federation": {"tokenExchange": true, "gitlabAgent": agent}
        }
    });
    Api::<GitLabTrust>::all(client.clone())
        .patch(
            &trust,
            &PatchParams::apply("oam-trust-tests").force(),
            &Patch::Apply(&glt),
        )
        .await
        .expect("the API server accepts the GitLabTrust");
    Scene {
        client,
        ns,
        other_ns,
        trust,
        ceiling,
    }
}

impl Scene {
    /// Removes the cluster-scoped objects of the scene (namespaces stay for inspection, as elsewhere).
    async fn cleanup(self) {
        let _ = Api::<GitLabTrust>::all(self.client.clone())
            .delete(&self.trust, &DeleteParams::default())
            .await;
        let _ = Api::<ClusterRole>::all(self.client.clone())
            .delete(&self.ceiling, &DeleteParams::default())
            .await;
    }
}

async fn label_namespace(client: &Client, ns: &str, value: &str) {
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"oam-trust.dev/access-test": value}}})),
        )
        .await
        .unwrap();
}

fn web(name: &str, image: &str, traits: Value) -> Value {
    json!({"name": name, "type": "webservice",
        "properties": {"image": image, "ports": [{"port": 8000, "expose": true}]},
        "traits": traits})
}

fn application(name: &str, components: Value, policies: Value) -> Value {
    json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application", "metadata": {"name": name},
        "spec": {"components": components, "policies": policies}})
}

fn access(trust: &str, subjects: Value, access: Value) -> Value {
    json!({"trust": trust, "subjects": subjects, "access": access, "ttl": "10m"})
}

/// The access conditions (type, status, reason, message), sorted by type.
fn access_conditions(a: &Application) -> Vec<(String, String, String, String)> {
    a.status
        .iter()
        .flat_map(|s| &s.conditions)
        .filter(|c| c.type_.starts_with("Access"))
        .map(|c| {
            (
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            )
        })
        .collect()
}

fn cond(t: &str, s: &str, r: &str, m: &str) -> (String, String, String, String) {
    (t.into(), s.into(), r.into(), m.into())
}

/// Waits until the Application reports access conditions for its current generation.
async fn wait_access(client: &Client, ns: &str, name: &str) -> Application {
    let api = Api::<Application>::namespaced(client.clone(), ns);
    let what = format!("{ns}: access conditions for the current generation");
    support::wait_for(&api, name, &what, WAIT, |a| {
        a.status.as_ref().is_some_and(|s| {
            s.observed_generation == a.metadata.generation
                && s.conditions.iter().any(|c| {
                    c.type_ == "AccessReady" && c.observed_generation == a.metadata.generation
                })
        })
    })
    .await
}

/// Names of the grant ServiceAccounts of an Application, by grant id.
async fn grants(client: &Client, ns: &str, app: &str) -> Vec<(String, String)> {
    let lp = ListParams::default().labels(&format!("{GRANT_LABEL},app.oam.dev/name={app}"));
    let mut out: Vec<(String, String)> = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
        .items
        .iter()
        .map(|sa| {
            (
                sa.annotations()["oam-trust.dev/grant-id"].clone(),
                sa.name_any(),
            )
        })
        .collect();
    out.sort();
    out
}

/// How many grant objects (ServiceAccounts, Roles, RoleBindings) exist in the namespace.
async fn grant_objects(client: &Client, ns: &str) -> usize {
    let lp = ListParams::default().labels(GRANT_LABEL);
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
        .items
        .len()
        + Api::<Role>::namespaced(client.clone(), ns)
            .list(&lp)
            .await
            .unwrap()
            .items
            .len()
        + Api::<RoleBinding>::namespaced(client.clone(), ns)
            .list(&lp)
            .await
            .unwrap()
            .items
            .len()
}

/// The verbs of `VERBS` the client may use on one named object (SelfSubjectAccessReview).
async fn verbs_on(
    client: &Client,
    group: &str,
    resource: &str,
    ns: &str,
    name: &str,
) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    for verb in VERBS {
        let name = (verb != "create").then_some(name);
        if support::can_i(
            client,
            Access {
                verb,
                group,
                resource,
                namespace: Some(ns),
                name,
            },
        )
        .await
        {
            out.insert(verb);
        }
    }
    out
}

fn set(verbs: &[&'static str]) -> BTreeSet<&'static str> {
    verbs.iter().copied().collect()
}

fn status_code(r: kube::Result<impl Sized>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("unexpected client error: {e}"),
    }
}

/// What every preset must deny: other Applications and their objects, other namespaces, Secrets, RBAC.
/// `creates`: the grant creates Deployments in its namespace (manage), which RBAC cannot limit by name.
async fn assert_denied_elsewhere(token: &Client, s: &Scene, app: &str, creates: bool) {
    let ns = s.ns.as_str();
    let create = if creates { set(&["create"]) } else { set(&[]) };
    assert_eq!(
        verbs_on(token, "apps", "deployments", ns, "other-web").await,
        create,
        "another Application's Deployment"
    );
    assert_eq!(
        verbs_on(token, "core.oam.dev", "applications", ns, "other").await,
        set(&[]),
        "another Application"
    );
    assert_eq!(
        verbs_on(token, "apps", "deployments", &s.other_ns, "web").await,
        set(&[]),
        "another namespace"
    );
    assert_eq!(
        verbs_on(token, "core.oam.dev", "applications", &s.other_ns, app).await,
        set(&[]),
        "another namespace's Application"
    );
    assert_eq!(
        verbs_on(token, "", "secrets", ns, "any").await,
        set(&[]),
        "Secrets"
    );
    assert_eq!(
        verbs_on(token, "rbac.authorization.k8s.io", "roles", ns, "any").await,
        set(&[]),
        "Roles"
    );
    assert_eq!(
        verbs_on(
            token,
            "rbac.authorization.k8s.io",
            "rolebindings",
            ns,
            "any"
        )
        .await,
        set(&[]),
        "RoleBindings"
    );
    // Real requests: refused by RBAC (403), not merely absent.
    let deployments = Api::<Deployment>::namespaced(token.clone(), ns);
    assert_eq!(status_code(deployments.get("other-web").await), 403);
    assert_eq!(
        status_code(
            Api::<Application>::namespaced(token.clone(), ns)
                .get("other")
                .await
        ),
        403
    );
    assert_eq!(
        status_code(
            Api::<Deployment>::namespaced(token.clone(), &s.other_ns)
                .get("web")
                .await
        ),
        403
    );
    assert_eq!(
        status_code(
            Api::<Secret>::namespaced(token.clone(), ns)
                .list(&ListParams::default())
                .await
        ),
        403
    );
    assert_eq!(
        status_code(
            Api::<Role>::namespaced(token.clone(), ns)
                .list(&ListParams::default())
                .await
        ),
        403
    );
    assert_eq!(
        status_code(
            Api::<RoleBinding>::namespaced(token.clone(), ns)
                .list(&ListParams::default())
                .await
        ),
        403
    );
    assert_eq!(
        status_code(deployments.list(&ListParams::default()).await),
        403,
        "an unrestricted list of the namespace"
    );
}

/// An Application `shop` with components web and api, a policy grant of `preset`, and a second
/// Application `other` in the same namespace. Returns the grant's ServiceAccount name.
async fn preset_scene(s: &Scene, preset: &str) -> String {
    let policy = json!([{"name": "ci", "type": "gitlab-access",
        "properties": access(&s.trust, json!([{"projectId": "1450", "namespaceId": "72"}]), json!(preset))}]);
    support::apply_app(
        &s.client,
        &s.ns,
        application(
            "shop",
            json!([
                web("web", "nginx:1", json!([])),
                web("api", "nginx:1", json!([]))
            ]),
            policy,
        ),
    )
    .await;
    support::apply_app(
        &s.client,
        &s.ns,
        application(
            "other",
            json!([web("other-web", "nginx:1", json!([]))]),
            json!([]),
        ),
    )
    .await;
    let a = wait_access(&s.client, &s.ns, "shop").await;
    let found = grants(&s.client, &s.ns, "shop").await;
    assert_eq!(found.len(), 1, "one grant: {found:?}");
    assert_eq!(found[0].0, "policy/ci");
    let sa = found[0].1.clone();
    assert_eq!(
        access_conditions(&a),
        [
            cond(
                "AccessDenied",
                "False",
                "AllGranted",
                "every gitlab-access declaration is granted"
            ),
            cond(
                "AccessReady",
                "True",
                "Granted",
                &format!("policy/ci -> ServiceAccount {sa} ({preset}, ttl 10m)")
            ),
        ]
    );
    sa
}

#[tokio::test]
async fn read_preset_reads_exactly_the_applications_objects() {
    let s = scene("acc-read", false).await;
    let sa = preset_scene(&s, "read").await;
    let token =
        support::client_with_token(&support::token_for(&s.client, &s.ns, &sa, 600).await).await;
    let (user, _) = support::whoami(&token).await.unwrap();
    assert_eq!(user, format!("system:serviceaccount:{}:{sa}", s.ns));

    let read = set(&["get", "list", "watch"]);
    assert_eq!(
        verbs_on(&token, "apps", "deployments", &s.ns, "web").await,
        read
    );
    assert_eq!(
        verbs_on(&token, "apps", "deployments", &s.ns, "api").await,
        read
    );
    assert_eq!(verbs_on(&token, "", "services", &s.ns, "web").await, read);
    assert_eq!(
        verbs_on(&token, "core.oam.dev", "applications", &s.ns, "shop").await,
        read
    );
    assert_denied_elsewhere(&token, &s, "shop", false).await;

    assert_eq!(
        status_code(
            Api::<Deployment>::namespaced(token.clone(), &s.ns)
                .get("web")
                .await
        ),
        200
    );
    let apps = Api::<Application>::namespaced(token.clone(), &s.ns);
    assert_eq!(status_code(apps.get("shop").await), 200);
    let patch = Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}));
    assert_eq!(
        status_code(apps.patch("shop", &PatchParams::default(), &patch).await),
        403,
        "read cannot patch"
    );
    // A hand edit that widens the grant is reverted at once (the operator watches its Roles).
    let roles = Api::<Role>::namespaced(s.client.clone(), &s.ns);
    let widened =
        json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]});
    roles
        .patch(&sa, &PatchParams::default(), &Patch::Merge(widened))
        .await
        .unwrap();
    let reverted = support::eventually(WAIT, || async {
        let rules = roles.get(&sa).await.unwrap().rules.unwrap_or_default();
        rules
            .iter()
            .all(|r| !r.resources.iter().flatten().any(|x| x == "secrets"))
            && !rules.is_empty()
    })
    .await;
    assert!(reverted, "the widened Role is restored");
    assert_eq!(
        status_code(
            Api::<Secret>::namespaced(token.clone(), &s.ns)
                .list(&ListParams::default())
                .await
        ),
        403
    );
    s.cleanup().await;
}

#[tokio::test]
async fn deploy_preset_patches_only_the_application() {
    let s = scene("acc-deploy", false).await;
    let sa = preset_scene(&s, "deploy").await;
    let token =
        support::client_with_token(&support::token_for(&s.client, &s.ns, &sa, 600).await).await;
    let read = set(&["get", "list", "watch"]);
    assert_eq!(
        verbs_on(&token, "apps", "deployments", &s.ns, "web").await,
        read
    );
    assert_eq!(verbs_on(&token, "", "services", &s.ns, "api").await, read);
    assert_eq!(
        verbs_on(&token, "core.oam.dev", "applications", &s.ns, "shop").await,
        set(&["get", "list", "watch", "update", "patch"])
    );
    assert_denied_elsewhere(&token, &s, "shop", false).await;
    assert_eq!(
        status_code(
            Api::<Deployment>::namespaced(token.clone(), &s.ns)
                .get("api")
                .await
        ),
        200
    );
    // A whole-Application grant may set the image of every component, and nothing else.
    let apps = Api::<Application>::namespaced(token.clone(), &s.ns);
    let live = apps.get("shop").await.unwrap();
    let mut components = serde_json::to_value(&live.spec.components).unwrap();
    components[1]["properties"]["image"] = json!("nginx:2");
    apps.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"components": components}})),
    )
    .await
    .expect("a deploy grant sets a component image");
    components[0]["properties"]["cpu"] = json!("1");
    let err = apps
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"components": components}})),
        )
        .await
        .unwrap_err();
    assert_guard_refused(
        err,
        "Application shop: this deploy job may change only properties.image of any component; other properties cannot change",
    );
    s.cleanup().await;
}

#[tokio::test]
async fn manage_preset_writes_exactly_the_applications_objects() {
    let s = scene("acc-manage", false).await;
    let sa = preset_scene(&s, "manage").await;
    let token =
        support::client_with_token(&support::token_for(&s.client, &s.ns, &sa, 600).await).await;
    // create is checked without a name (RBAC cannot restrict create by name): namespace-wide.
    let write = set(&[
        "get", "list", "watch", "create", "update", "patch", "delete",
    ]);
    assert_eq!(
        verbs_on(&token, "apps", "deployments", &s.ns, "web").await,
        write
    );
    assert_eq!(verbs_on(&token, "", "services", &s.ns, "api").await, write);
    assert!(
        support::can_i(
            &token,
            Access {
                verb: "create",
                group: "apps",
                resource: "deployments",
                namespace: Some(&s.ns),
                name: None
            }
        )
        .await,
        "manage creates the rendered kinds (RBAC cannot restrict create by name)"
    );
    // manage only reads the Application: only deploy writes it, through the deploy guard.
    assert_eq!(
        verbs_on(&token, "core.oam.dev", "applications", &s.ns, "shop").await,
        set(&["get", "list", "watch"])
    );
    assert!(
        !support::can_i(
            &token,
            Access {
                verb: "deletecollection",
                group: "apps",
                resource: "deployments",
                namespace: Some(&s.ns),
                name: None
            }
        )
        .await,
        "deletecollection is never granted"
    );
    assert_denied_elsewhere(&token, &s, "shop", true).await;
    // Real writes: the Application's own Deployment yes, the other Application's no.
    let deployments = Api::<Deployment>::namespaced(token.clone(), &s.ns);
    let annotate =
        Patch::Merge(json!({"metadata": {"annotations": {"oam-trust.test/touched": "yes"}}}));
    assert_eq!(
        status_code(
            deployments
                .patch("web", &PatchParams::default(), &annotate)
                .await
        ),
        200
    );
    assert_eq!(
        status_code(
            deployments
                .patch("other-web", &PatchParams::default(), &annotate)
                .await
        ),
        403
    );
    s.cleanup().await;
}

fn assert_guard_refused(err: kube::Error, message: &str) {
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"), "{s:?}");
            // The binding without parameters may refuse first, with its generic prefix and the
            // same rule.
            let base = message.split_once("; ").map(|(head, rule)| {
                let app = head.split(':').next().unwrap_or_default();
                format!("{app}: a grant identity may change only component images; {rule}")
            });
            assert!(
                s.message
                    .contains("ValidatingAdmissionPolicy 'oam-trust-deploy-guard'")
                    && (s.message.ends_with(message)
                        || base
                            .as_ref()
                            .is_some_and(|b| s.message.ends_with(b.as_str()))),
                "refused by the deploy guard with {message:?}; got {:?}",
                s.message
            );
        }
        other => panic!("expected a refusal by the API server, got {other}"),
    }
}

/// An edit a job makes to an Application's spec.
type SpecEdit = Box<dyn FnOnce(&mut Value)>;

/// Patches `app` as `client` after `edit` changed its spec (a read-modify-write, as a job would do).
async fn edit_app(
    client: &Client,
    ns: &str,
    app: &str,
    edit: impl FnOnce(&mut Value),
) -> kube::Result<Application> {
    let api = Api::<Application>::namespaced(client.clone(), ns);
    let live = api.get(app).await?;
    let mut spec = serde_json::to_value(&live.spec).unwrap();
    edit(&mut spec);
    let mut patch = json!({"spec": {"components": spec["components"]}});
    if let Some(p) = spec.get("policies") {
        patch["spec"]["policies"] = p.clone();
    }
    api.patch(app, &PatchParams::default(), &Patch::Merge(patch))
        .await
}

#[tokio::test]
async fn deploy_guard_allows_only_the_covered_components_image() {
    let s = scene("acc-guard", false).await;
    let grant = json!([{"type": "gitlab-access", "properties": access(&s.trust, json!([{"projectId": "1450"}]), json!("deploy"))},
        {"type": "scaler", "properties": {"replicas": 1}}]);
    let policies = json!([{"name": "topo", "type": "topology", "properties": {"namespace": s.ns}}]);
    support::apply_app(
        &s.client,
        &s.ns,
        application(
            "shop",
            json!([
                web("web", "nginx:1", grant),
                web("api", "nginx:1", json!([]))
            ]),
            policies,
        ),
    )
    .await;
    let a = wait_access(&s.client, &s.ns, "shop").await;
    let found = grants(&s.client, &s.ns, "shop").await;
    assert_eq!(
        found.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["component/web/trait/0"]
    );
    let sa = &found[0].1;
    assert_eq!(
        access_conditions(&a),
        [
            cond(
                "AccessDenied",
                "False",
                "AllGranted",
                "every gitlab-access declaration is granted"
            ),
            cond(
                "AccessReady",
                "True",
                "Granted",
                &format!("component/web/trait/0 -> ServiceAccount {sa} (deploy, ttl 10m)")
            ),
        ]
    );
    // The guard's parameters for this Application.
    let params = Api::<ConfigMap>::namespaced(s.client.clone(), &s.ns)
        .get("oam-trust.deploy-guard.shop")
        .await
        .unwrap();
    let data = params.data.unwrap();
    assert_eq!(data["application"], "shop");
    assert_eq!(
        data[&format!("{sa}.principals")],
        format!("user:system:serviceaccount:{}:{sa}", s.ns)
    );
    assert_eq!(data[&format!("{sa}.components")], "web");

    let token =
        support::client_with_token(&support::token_for(&s.client, &s.ns, sa, 600).await).await;
    // The trait grant reads only its component's objects.
    assert_eq!(
        verbs_on(&token, "apps", "deployments", &s.ns, "web").await,
        set(&["get", "list", "watch"])
    );
    assert_eq!(
        verbs_on(&token, "apps", "deployments", &s.ns, "api").await,
        set(&[])
    );

    let updated = edit_app(&token, &s.ns, "shop", |spec| {
        spec["components"][0]["properties"]["image"] = json!("nginx:2")
    })
    .await
    .expect("the deploy identity sets its component's image");
    assert_eq!(
        updated.spec.components[0].properties.as_ref().unwrap()["image"],
        "nginx:2"
    );
    assert!(
        support::eventually(WAIT, || async {
            Api::<Deployment>::namespaced(s.client.clone(), &s.ns)
                .get("web")
                .await
                .unwrap()
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .containers[0]
                .image
                .as_deref()
                == Some("nginx:2")
        })
        .await,
        "the new image is rolled out to the Deployment"
    );

    let may = "Application shop: this deploy job may change only properties.image of component web";
    let cases: Vec<(&str, SpecEdit, String)> = vec![
        (
            "a trait",
            Box::new(|s: &mut Value| {
                s["components"][0]["traits"][1]["properties"]["replicas"] = json!(5)
            }),
            format!("{may}; traits cannot change"),
        ),
        (
            "a policy",
            Box::new(|s: &mut Value| {
                s["policies"][0]["properties"]["namespace"] = json!("elsewhere")
            }),
            format!("{may}; policies cannot change"),
        ),
        (
            "another component",
            Box::new(|s: &mut Value| s["components"][1]["properties"]["image"] = json!("evil:1")),
            format!("{may}; other components cannot change"),
        ),
        (
            "another property",
            Box::new(|s: &mut Value| {
                s["components"][0]["properties"]["ports"][0]["port"] = json!(9000)
            }),
            format!("{may}; other properties cannot change"),
        ),
        (
            "the component list",
            Box::new(|s: &mut Value| {
                s["components"].as_array_mut().unwrap().pop();
            }),
            format!("{may}; components cannot be added, removed, renamed or reordered"),
        ),
        (
            "its own grant",
            Box::new(|s: &mut Value| {
                s["components"][0]["traits"][0]["properties"]["access"] = json!("manage")
            }),
            format!("{may}; traits cannot change"),
        ),
    ];
    for (what, edit, message) in cases {
        let err = edit_app(&token, &s.ns, "shop", edit).await.expect_err(what);
        assert_guard_refused(err, &message);
    }
    let labels = Patch::Merge(json!({"metadata": {"labels": {"team": "x"}}}));
    let err = Api::<Application>::namespaced(token.clone(), &s.ns)
        .patch("shop", &PatchParams::default(), &labels)
        .await
        .unwrap_err();
    assert_guard_refused(
        err,
        &format!("{may}; labels, annotations, finalizers and ownerReferences cannot change"),
    );
    // The admin is not bound by the guard.
    edit_app(&s.client, &s.ns, "shop", |s| {
        s["components"][0]["traits"][1]["properties"]["replicas"] = json!(2)
    })
    .await
    .expect("others edit traits as before");
    s.cleanup().await;
}

#[tokio::test]
async fn agent_ci_job_identity_gets_exactly_the_grant() {
    let s = scene("acc-agent", true).await;
    let grant = json!([{"type": "gitlab-access", "properties": access(&s.trust,
        json!([{"projectId": "1450", "ref": "main"}, {"namespaceId": "72"}]), json!("deploy"))}]);
    support::apply_app(
        &s.client,
        &s.ns,
        application(
            "shop",
            json!([
                web("web", "nginx:1", grant),
                web("api", "nginx:1", json!([]))
            ]),
            json!([]),
        ),
    )
    .await;
    support::apply_app(
        &s.client,
        &s.ns,
        application(
            "other",
            json!([web("other-web", "nginx:1", json!([]))]),
            json!([]),
        ),
    )
    .await;
    let a = wait_access(&s.client, &s.ns, "shop").await;
    let found = grants(&s.client, &s.ns, "shop").await;
    let sa = &found[0].1;
    assert_eq!(
        access_conditions(&a),
        [
            cond(
                "AccessDenied",
                "False",
                "AllGranted",
                "every gitlab-access declaration is granted"
            ),
            cond(
                "AccessReady",
                "True",
                "Granted",
                &format!("component/web/trait/0 -> ServiceAccount {sa} (deploy, ttl 10m)")
            ),
            cond(
                "AccessUnenforceable",
                "True",
                "AgentCannotEnforce",
                "jobs coming through the GitLab agent are not checked for: \
                 component/web/trait/0 subject 0: ref: the agent does not carry the ref; \
                 component/web/trait/0 subject 1: projectId: the agent identifies jobs only by numeric project id; this subject gets no agent group; \
                 component/web/trait/0 subject 1: namespaceId: the agent binds by project id only"
            ),
        ]
    );
    let rb = Api::<RoleBinding>::namespaced(s.client.clone(), &s.ns)
        .get(sa)
        .await
        .unwrap();
    let subjects: Vec<(String, String)> = rb
        .subjects
        .unwrap()
        .into_iter()
        .map(|x| (x.kind, x.name))
        .collect();
    assert_eq!(
        subjects,
        [
            ("ServiceAccount".to_string(), sa.clone()),
            ("Group".to_string(), "gitlab:project:1450".to_string())
        ]
    );

    // What the GitLab agent impersonates for job 1 of project 1450 (ci_access, access_as: ci_job).
    let job = support::impersonating(
        "gitlab:ci_job:1",
        &["gitlab:ci_job", "gitlab:group:72", "gitlab:project:1450"],
    )
    .await;
    assert_eq!(
        verbs_on(&job, "apps", "deployments", &s.ns, "web").await,
        set(&["get", "list", "watch"])
    );
    assert_eq!(
        verbs_on(&job, "", "services", &s.ns, "web").await,
        set(&["get", "list", "watch"])
    );
    assert_eq!(
        verbs_on(&job, "core.oam.dev", "applications", &s.ns, "shop").await,
        set(&["get", "list", "watch", "update", "patch"])
    );
    assert_eq!(
        verbs_on(&job, "apps", "deployments", &s.ns, "api").await,
        set(&[])
    );
    assert_denied_elsewhere(&job, &s, "shop", false).await;
    edit_app(&job, &s.ns, "shop", |spec| {
        spec["components"][0]["properties"]["image"] = json!("nginx:3")
    })
    .await
    .expect("the agent identity sets its component's image");
    let err = edit_app(&job, &s.ns, "shop", |spec| {
        spec["components"][1]["properties"]["image"] = json!("nginx:3")
    })
    .await
    .unwrap_err();
    assert_guard_refused(
        err,
        "Application shop: this deploy job may change only properties.image of component web; other components cannot change",
    );

    // Another project's job gets nothing.
    let stranger =
        support::impersonating("gitlab:ci_job:2", &["gitlab:ci_job", "gitlab:project:999"]).await;
    assert_eq!(
        verbs_on(&stranger, "core.oam.dev", "applications", &s.ns, "shop").await,
        set(&[])
    );
    assert_eq!(
        verbs_on(&stranger, "apps", "deployments", &s.ns, "web").await,
        set(&[])
    );
    s.cleanup().await;
}

/// Polls until requests with `token` are refused (401 or 403): the API server caches token reviews.
async fn revoked(token: &Client, ns: &str, app: &str) -> bool {
    support::eventually(Duration::from_secs(30), || async {
        matches!(
            status_code(
                Api::<Application>::namespaced(token.clone(), ns)
                    .get(app)
                    .await
            ),
            401 | 403
        )
    })
    .await
}

#[tokio::test]
async fn removing_a_declaration_or_the_application_revokes() {
    let s = scene("acc-revoke", false).await;
    let policies = |with: bool| {
        let mut p = vec![
            json!({"name": "stays", "type": "gitlab-access", "properties": access(&s.trust, json!([{"projectId": "1"}]), json!("read"))}),
        ];
        if with {
            p.push(json!({"name": "goes", "type": "gitlab-access", "properties": access(&s.trust, json!([{"projectId": "2"}]), json!("read"))}));
        }
        Value::Array(p)
    };
    support::apply_app(
        &s.client,
        &s.ns,
        application(
            "shop",
            json!([web("web", "nginx:1", json!([]))]),
            policies(true),
        ),
    )
    .await;
    wait_access(&s.client, &s.ns, "shop").await;
    let found = grants(&s.client, &s.ns, "shop").await;
    assert_eq!(
        found.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["policy/goes", "policy/stays"]
    );
    let (goes, stays) = (found[0].1.clone(), found[1].1.clone());
    let goes_token =
        support::client_with_token(&support::token_for(&s.client, &s.ns, &goes, 600).await).await;
    let stays_token =
        support::client_with_token(&support::token_for(&s.client, &s.ns, &stays, 600).await).await;
    assert_eq!(
        status_code(
            Api::<Application>::namespaced(goes_token.clone(), &s.ns)
                .get("shop")
                .await
        ),
        200
    );

    support::apply_app(
        &s.client,
        &s.ns,
        application(
            "shop",
            json!([web("web", "nginx:1", json!([]))]),
            policies(false),
        ),
    )
    .await;
    let a = wait_access(&s.client, &s.ns, "shop").await;
    assert_eq!(
        access_conditions(&a),
        [
            cond(
                "AccessDenied",
                "False",
                "AllGranted",
                "every gitlab-access declaration is granted"
            ),
            cond(
                "AccessReady",
                "True",
                "Granted",
                &format!("policy/stays -> ServiceAccount {stays} (read, ttl 10m)")
            ),
        ]
    );
    assert!(
        revoked(&goes_token, &s.ns, "shop").await,
        "a token of the removed declaration stops working"
    );
    for kind_gone in [
        Api::<ServiceAccount>::namespaced(s.client.clone(), &s.ns)
            .get_opt(&goes)
            .await
            .unwrap()
            .is_none(),
        Api::<Role>::namespaced(s.client.clone(), &s.ns)
            .get_opt(&goes)
            .await
            .unwrap()
            .is_none(),
        Api::<RoleBinding>::namespaced(s.client.clone(), &s.ns)
            .get_opt(&goes)
            .await
            .unwrap()
            .is_none(),
    ] {
        assert!(kind_gone, "the removed declaration's objects are deleted");
    }
    assert_eq!(
        status_code(
            Api::<Application>::namespaced(stays_token.clone(), &s.ns)
                .get("shop")
                .await
        ),
        200,
        "the other grant stays"
    );

    Api::<Application>::namespaced(s.client.clone(), &s.ns)
        .delete("shop", &DeleteParams::foreground())
        .await
        .unwrap();
    assert!(
        revoked(&stays_token, &s.ns, "shop").await,
        "deleting the Application revokes its grants"
    );
    assert!(
        support::eventually(WAIT, || async {
            grant_objects(&s.client, &s.ns).await == 0
        })
        .await,
        "the garbage collector removes every grant object"
    );
    s.cleanup().await;
}

#[tokio::test]
async fn refused_declarations_get_their_reason_and_no_rbac_objects() {
    let s = scene("acc-refuse", false).await;
    let t = &s.trust;
    let policies = json!([
        {"name": "outside", "type": "gitlab-access", "properties": access(t, json!([{"namespaceId": "99", "projectPath": "other/app"}]), json!("read"))},
        {"name": "nameless", "type": "gitlab-access", "properties": access(t, json!([{"ref": "main"}]), json!("read"))},
        {"name": "greedy", "type": "gitlab-access", "properties": access(t, json!([{"projectId": "1450"}]),
            json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}))}
    ]);
    support::apply_app(
        &s.client,
        &s.ns,
        application("shop", json!([web("web", "nginx:1", json!([]))]), policies),
    )
    .await;
    let a = wait_access(&s.client, &s.ns, "shop").await;
    assert_eq!(
        access_conditions(&a),
        [
            cond(
                "AccessDenied",
                "True",
                "SubjectOutsideAllow",
                &format!(
                    "policy/outside: subject 0 can never match GitLabTrust {t:?}'s allow list; \
                 policy/nameless: subject 0 names no project or namespace: set projectId, namespaceId, projectPath or namespacePath; \
                 policy/greedy: beyond ceiling ClusterRole {:?}: get secrets.core",
                    s.ceiling
                )
            ),
            cond(
                "AccessReady",
                "False",
                "DeclarationRefused",
                "3 of 3 declarations refused; granted: none"
            ),
        ]
    );
    assert_eq!(
        grant_objects(&s.client, &s.ns).await,
        0,
        "no RBAC objects for refused declarations"
    );

    // A namespace the trust does not select.
    let unselected = support::app_namespace(&s.client, "acc-unselected", "admin").await;
    let policy = json!([{"name": "ci", "type": "gitlab-access", "properties": access(t, json!([{"projectId": "1450"}]), json!("read"))}]);
    support::apply_app(
        &s.client,
        &unselected,
        application("shop", json!([web("web", "nginx:1", json!([]))]), policy),
    )
    .await;
    let a = wait_access(&s.client, &unselected, "shop").await;
    assert_eq!(
        access_conditions(&a),
        [
            cond(
                "AccessDenied",
                "True",
                "NamespaceNotSelected",
                &format!(
                    "policy/ci: namespace {unselected:?} is not selected by GitLabTrust {t:?}'s namespaceSelector"
                )
            ),
            cond(
                "AccessReady",
                "False",
                "DeclarationRefused",
                "1 of 1 declarations refused; granted: none"
            ),
        ]
    );
    assert_eq!(grant_objects(&s.client, &unselected).await, 0);
    assert!(
        Api::<ConfigMap>::namespaced(s.client.clone(), &unselected)
            .get_opt("oam-trust.deploy-guard.shop")
            .await
            .unwrap()
            .is_none()
    );

    // Selecting the namespace later grants without touching the Application.
    label_namespace(&s.client, &unselected, &s.ns).await;
    assert!(
        support::eventually(WAIT, || async {
            grant_objects(&s.client, &unselected).await == 3
        })
        .await,
        "labelling the namespace re-reconciles its Applications"
    );
    s.cleanup().await;
}

#[tokio::test]
async fn path_only_subject_is_granted_with_a_warning() {
    let s = scene("acc-path", false).await;
    let policy = json!([{"name": "ci", "type": "gitlab-access", "properties": access(&s.trust, json!([{"projectPath": "platform/web"}]), json!("read"))}]);
    support::apply_app(
        &s.client,
        &s.ns,
        application("shop", json!([web("web", "nginx:1", json!([]))]), policy),
    )
    .await;
    let a = wait_access(&s.client, &s.ns, "shop").await;
    let found = grants(&s.client, &s.ns, "shop").await;
    assert_eq!(found.len(), 1);
    let sa = &found[0].1;
    assert_eq!(
        access_conditions(&a),
        [
            cond(
                "AccessDenied",
                "False",
                "AllGranted",
                "every gitlab-access declaration is granted"
            ),
            cond(
                "AccessReady",
                "True",
                "Granted",
                &format!("policy/ci -> ServiceAccount {sa} (read, ttl 10m)")
            ),
            cond(
                "AccessWarning",
                "True",
                "GrantWarnings",
                "policy/ci: subject 0 names its project or namespace by path only: paths can be renamed and \
                 re-registered by someone else; add projectId or namespaceId"
            ),
        ]
    );
    let token =
        support::client_with_token(&support::token_for(&s.client, &s.ns, sa, 600).await).await;
    assert_eq!(
        verbs_on(&token, "core.oam.dev", "applications", &s.ns, "shop").await,
        set(&["get", "list", "watch"])
    );

    // Tightening the ceiling below the preset re-reconciles and refuses.
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": s.ceiling},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]}))
    .unwrap();
    Api::<ClusterRole>::all(s.client.clone())
        .patch(
            &s.ceiling,
            &PatchParams::apply("oam-trust-tests").force(),
            &Patch::Apply(&role),
        )
        .await
        .unwrap();
    assert!(
        support::eventually(WAIT, || async {
            grant_objects(&s.client, &s.ns).await == 0
        })
        .await,
        "a ceiling change revokes grants it no longer covers"
    );
    let apps = Api::<Application>::namespaced(s.client.clone(), &s.ns);
    let denied = support::eventually(WAIT, || async {
        let a = apps.get("shop").await.unwrap();
        access_conditions(&a).iter().any(|c| {
            (c.0.as_str(), c.1.as_str(), c.2.as_str()) == ("AccessDenied", "True", "BeyondCeiling")
        })
    })
    .await;
    assert!(
        denied,
        "AccessDenied names the ceiling: {:?}",
        access_conditions(&apps.get("shop").await.unwrap())
    );
    s.cleanup().await;
}

async fn trust_status(
    client: &Client,
    name: &str,
    what: &str,
    pred: impl Fn(&GitLabTrust) -> bool,
) -> GitLabTrust {
    let api = Api::<GitLabTrust>::all(client.clone());
    support::wait_for(&api, name, what, WAIT, pred).await
}

fn ready(t: &GitLabTrust) -> Option<(String, String, String)> {
    let c = t
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (c.observed_generation == t.metadata.generation)
        .then(|| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn create_trust(client: &Client, name: &str, issuer: &str, jwks: Value) {
    let glt = json!({"apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust", "metadata": {"name": name},
        "spec": {"issuer": issuer, "audiences": ["https://oam-trust.test"], "jwks": jwks}});
    Api::<GitLabTrust>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("oam-trust-tests").force(),
            &Patch::Apply(&glt),
        )
        .await
        .expect("the API server accepts the GitLabTrust");
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{nanos:x}")
}

#[tokio::test]
async fn trust_reports_static_keys_and_unreachable_issuers() {
    support::operator().await;
    let client = support::admin().await;
    let issuer = DevIssuer::start(DevIssuerOptions::default()).await.unwrap();
    let jwks = issuer.jwks_json();
    let kids = KeySet::from_jwks_json(jwks.as_bytes()).unwrap().key_ids();
    assert!(!kids.is_empty());

    let name = unique("static");
    create_trust(
        &client,
        &name,
        "https://gitlab.example.com",
        json!({"static": jwks}),
    )
    .await;
    let t = trust_status(&client, &name, "Ready", |t| ready(t).is_some()).await;
    assert_eq!(
        ready(&t).unwrap(),
        (
            "True".into(),
            "KeysLoaded".into(),
            format!("{} keys loaded from the static JWKS", kids.len())
        )
    );
    let status = t.status.unwrap();
    assert_eq!(status.keys, kids);
    assert_eq!(status.key_count, Some(kids.len() as i32));
    assert_eq!(status.observed_generation, t.metadata.generation);

    // Nothing listens on port 1 of the loopback address.
    let name = unique("unreachable");
    create_trust(&client, &name, "https://127.0.0.1:1", json!({})).await;
    let t = trust_status(&client, &name, "Ready", |t| ready(t).is_some()).await;
    let (status, reason, message) = ready(&t).unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "KeyFetchFailed")
    );
    assert!(
        message.starts_with(
            "OIDC discovery at https://127.0.0.1:1: fetching keys: https://127.0.0.1:1/.well-known/openid-configuration: "
        ) && message.contains("Connect"),
        "the message names the fetch error: {message}"
    );
    let st = t.status.unwrap();
    assert!(st.keys.is_empty());
    assert_eq!(st.key_count, Some(0));
    assert!(st.last_key_fetch.is_none());
}

#[tokio::test]
async fn trust_discovers_keys_and_keeps_them_when_the_issuer_fails() {
    support::operator().await;
    let client = support::admin().await;
    let issuer = DevIssuer::start(DevIssuerOptions::default()).await.unwrap();
    let kids = KeySet::from_jwks_json(issuer.jwks_json().as_bytes())
        .unwrap()
        .key_ids();
    let name = unique("discovery");
    create_trust(
        &client,
        &name,
        issuer.url(),
        json!({"caBundle": issuer.ca_pem()}),
    )
    .await;
    let t = trust_status(&client, &name, "Ready True", |t| {
        ready(t).is_some_and(|r| r.0 == "True")
    })
    .await;
    assert_eq!(
        ready(&t).unwrap(),
        (
            "True".into(),
            "KeysLoaded".into(),
            format!(
                "{} keys loaded from OIDC discovery at {}",
                kids.len(),
                issuer.url()
            )
        )
    );
    let st = t.status.unwrap();
    assert_eq!(st.keys, kids);
    assert!(st.last_key_fetch.is_some());

    // The JWKS endpoint fails; a spec change makes the controller fetch again now.
    issuer.set_jwks_available(false);
    Api::<GitLabTrust>::all(client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"audiences": ["https://oam-trust.test", "second"]}})),
        )
        .await
        .unwrap();
    let t = trust_status(&client, &name, "Ready False", |t| {
        ready(t).is_some_and(|r| r.0 == "False")
    })
    .await;
    let (_, reason, message) = ready(&t).unwrap();
    assert_eq!(reason, "KeyFetchFailed");
    assert!(
        message.ends_with(&format!(
            "; still using {} keys fetched earlier",
            kids.len()
        )),
        "the message says the cached keys stay in use: {message}"
    );
    assert_eq!(
        t.status.unwrap().keys,
        kids,
        "a failed fetch keeps the cached keys"
    );
}

fn config_manifests() -> oam_trust::manifest::Manifests {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut m = oam_trust::manifest::Manifests::default();
    for part in ["apps", "trust.yaml", "ceiling.yaml", "definitions"] {
        m.add_path(&root.join(part)).unwrap();
    }
    m
}

#[test]
fn config_examples_render_with_their_grants() {
    let (objects, notes) = oam_trust::manifest::render_all(&config_manifests()).unwrap();
    // The one warning the examples carry is true and intended: the release gate's staging deploy
    // grant does not reach the production copies.
    let expected: Vec<String> = ["Deployment", "Service"]
        .iter()
        .map(|k| format!("warning: application \"storefront\" component/web/trait/0: {k} \"web\" is in another namespace than the Application; a Role cannot reach it"))
        .collect();
    assert_eq!(
        notes, expected,
        "the examples are granted without refusals or other warnings"
    );
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    let grant = ["ServiceAccount", "Role", "RoleBinding"];
    // The deploy guard's parameters: written by the operator before any grant's RBAC.
    let payments = [
        &["Deployment", "Service", "Deployment", "ConfigMap"][..],
        &grant,
        &grant,
    ]
    .concat();
    let storefront = [
        &[
            "Deployment",
            "Deployment",
            "Service",
            "Service",
            "ConfigMap",
        ][..],
        &grant,
        &grant,
    ]
    .concat();
    assert_eq!(kinds, [payments, storefront].concat());
    let ids: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding")
        .map(|o| {
            o["metadata"]["annotations"]["oam-trust.dev/grant-id"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        [
            "policy/readers",
            "component/api/trait/1",
            "policy/approvers",
            "component/web/trait/0"
        ]
    );
}

#[tokio::test]
async fn config_examples_are_accepted_by_the_api_server() {
    let client = support::admin().await;
    support::install_crds(&client).await;
    let ns = support::namespace(&client, "acc-config").await;
    let dry = PatchParams::apply("oam-trust-tests").dry_run();
    let m = config_manifests();
    for doc in &m.others {
        let name = doc.value["metadata"]["name"].as_str().unwrap();
        match doc.value["kind"].as_str().unwrap() {
            "GitLabTrust" => {
                Api::<GitLabTrust>::all(client.clone())
                    .patch(name, &dry, &Patch::Apply(&doc.value))
                    .await
                    .expect("config/trust.yaml is valid");
            }
            "ClusterRole" => {
                Api::<ClusterRole>::all(client.clone())
                    .patch(name, &dry, &Patch::Apply(&doc.value))
                    .await
                    .expect("config/ceiling.yaml is valid");
            }
            "Namespace" => {
                Api::<Namespace>::all(client.clone())
                    .patch(name, &dry, &Patch::Apply(&doc.value))
                    .await
                    .expect("the example Namespace is valid");
            }
            other => panic!("unexpected {other} in config/"),
        }
    }
    for app in &m.applications {
        let mut app = app.clone();
        app.metadata.namespace = Some(ns.clone());
        Api::<Application>::namespaced(client.clone(), &ns)
            .patch(&app.name_any(), &dry, &Patch::Apply(&app))
            .await
            .expect("the example Application is valid");
    }
}
