//! `render` and `explain` derive grants offline from the same files through the same world
//! (`Manifests::world`): they must agree on every declaration, with and without the Namespace among
//! the files. (They once disagreed: `render` refused a namespace it had no manifest for, `explain`
//! granted it.)
use std::collections::BTreeSet;

use oam_trust::api::trust::GitLabTrust;
use oam_trust::manifest::{Manifests, render_all};
use serde_json::{Value, json};

fn manifests(namespace: Option<Value>) -> Manifests {
    let mut m = Manifests::default();
    let docs = [
        json!({"apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust", "metadata": {"name": "gitlab"},
               "spec": {"issuer": "https://gitlab.example.com", "audiences": ["https://oam-trust.test"],
                        "namespaceSelector": {"matchLabels": {"oam-trust.dev/gitlab": "enabled"}},
                        "allow": [{"namespaceId": "72"}], "ceiling": {"clusterRoleRef": "ceiling"}}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "ceiling"},
               "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch", "patch", "update"]}]}),
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
               "metadata": {"name": "shop", "namespace": "shop"},
               "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx"},
                        "traits": [{"type": "gitlab-access", "properties": {"trust": "gitlab",
                            "subjects": [{"projectId": "1450", "namespaceId": "72"}], "access": "read"}}]}],
                        "policies": [{"name": "deploy", "type": "gitlab-access", "properties": {"trust": "gitlab",
                            "subjects": [{"projectId": "1450", "ref": "main"}], "access": "deploy"}}]}}),
    ];
    for (i, doc) in docs.into_iter().chain(namespace).enumerate() {
        m.add(&format!("doc{i}"), doc).unwrap();
    }
    m
}

fn trust(m: &Manifests) -> GitLabTrust {
    let doc = m
        .others
        .iter()
        .find(|d| d.value["kind"] == "GitLabTrust")
        .unwrap();
    serde_json::from_value(doc.value.clone()).unwrap()
}

/// The grant ids `render` prints RoleBindings for, and its notes.
fn rendered(m: &Manifests) -> (BTreeSet<String>, Vec<String>) {
    let (objects, notes) = render_all(m).unwrap();
    let ids = objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding")
        .map(|o| {
            o["metadata"]["annotations"]["oam-trust.dev/grant-id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    (ids, notes)
}

/// The grant ids `explain` judges tokens against.
fn explained(m: &Manifests) -> BTreeSet<String> {
    oam_trust::explain::offline_grants(m, &trust(m))
        .grants
        .into_iter()
        .map(|g| g.id)
        .collect()
}

fn namespace(labels: Value) -> Option<Value> {
    Some(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": labels}}),
    )
}

#[test]
fn without_the_namespace_both_assume_it_selected_and_say_so() {
    let m = manifests(None);
    let (ids, notes) = rendered(&m);
    assert_eq!(ids, explained(&m));
    assert_eq!(
        ids,
        BTreeSet::from([
            "component/web/trait/0".to_string(),
            "policy/deploy".to_string()
        ])
    );
    assert_eq!(notes.len(), 2, "{notes:?}");
    for note in &notes {
        assert!(
            note.starts_with("warning: application \"shop\" ")
                && note.contains("namespace \"shop\" is not among the manifests: assumed selected"),
            "{note}"
        );
    }
}

#[test]
fn with_a_selected_namespace_both_grant_without_warnings() {
    let m = manifests(namespace(json!({"oam-trust.dev/gitlab": "enabled"})));
    let (ids, notes) = rendered(&m);
    assert_eq!(ids, explained(&m));
    assert_eq!(ids.len(), 2);
    assert_eq!(notes, Vec::<String>::new());
}

#[test]
fn with_an_unselected_namespace_both_refuse() {
    let m = manifests(namespace(json!({"team": "shop"})));
    let (ids, notes) = rendered(&m);
    assert_eq!(ids, explained(&m));
    assert!(ids.is_empty());
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes
            .iter()
            .all(|n| n.starts_with("refused: ") && n.ends_with("namespace \"shop\" is not selected by GitLabTrust \"gitlab\"'s namespaceSelector")),
        "{notes:?}"
    );
}
