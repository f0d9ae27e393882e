//! The access layer from YAML fixtures (`tests/fixtures/access/`), no cluster: presets, refusals,
//! ceiling coverage, claim matching, GitLab agent groups, label selectors and globs.
use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use oam_trust::access::matcher::MatchOutcome;
use oam_trust::access::{GitLabClaims, GrantInput, GrantSet, derive_grants, glob, match_token};
use oam_trust::api::oam::Application;
use oam_trust::api::trust::GitLabTrust;
use oam_trust::render::RenderedObject;
use serde::Deserialize;
use serde_json::Value;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/access")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Fixture {
    #[serde(default)]
    namespace_labels: BTreeMap<String, String>,
    trusts: Vec<GitLabTrust>,
    #[serde(default)]
    ceilings: Vec<ClusterRole>,
    application: Application,
    #[serde(default)]
    rendered: Vec<Rendered>,
    expect: Expect,
    #[serde(default)]
    base_claims: serde_json::Map<String, Value>,
    #[serde(default)]
    tokens: Vec<TokenCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rendered {
    #[serde(default)]
    component: Option<String>,
    object: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    grants: Vec<ExpectGrant>,
    refusals: Vec<ExpectRefusal>,
    warnings: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExpectGrant {
    id: String,
    name_prefix: Option<String>,
    ttl: Option<String>,
    rules: Option<Vec<PolicyRule>>,
    agent_groups: Option<Vec<String>>,
    /// `Kind:name`; `ServiceAccount:self` is the grant's own ServiceAccount.
    binding_subjects: Option<Vec<String>>,
    /// `<subject index or *>:<field>`.
    unenforceable: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExpectRefusal {
    declaration: String,
    reason: String,
    message: Option<String>,
    message_contains: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenCase {
    name: String,
    trust: String,
    #[serde(default)]
    claims: serde_json::Map<String, Value>,
    resource: Option<String>,
    expect: ExpectMatch,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExpectMatch {
    matched: Option<String>,
    subject: Option<usize>,
    refused: Option<String>,
    message: Option<String>,
    ambiguous: Option<Vec<String>>,
    no_match: Option<Vec<String>>,
}

/// The variant name of an enum value, from its Debug form.
fn variant<T: std::fmt::Debug>(value: &T) -> String {
    let debug = format!("{value:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

struct Loaded {
    fixture: Fixture,
    trusts: BTreeMap<String, GitLabTrust>,
    set: GrantSet,
}

fn load(name: &str) -> Loaded {
    let fixture: Fixture = serde_yaml_ng::from_str(&fixture(name)).expect("fixture parses");
    let trusts: BTreeMap<String, GitLabTrust> = fixture
        .trusts
        .iter()
        .map(|t| (t.metadata.name.clone().unwrap(), t.clone()))
        .collect();
    let ceilings: BTreeMap<String, ClusterRole> = fixture
        .ceilings
        .iter()
        .map(|c| (c.metadata.name.clone().unwrap(), c.clone()))
        .collect();
    let rendered: Vec<RenderedObject> = fixture
        .rendered
        .iter()
        .map(|r| RenderedObject {
            component: r.component.clone(),
            object: r.object.clone(),
        })
        .collect();
    let set = derive_grants(&GrantInput {
        application: &fixture.application,
        namespace_labels: Some(&fixture.namespace_labels),
        trusts: &trusts,
        ceilings: &ceilings,
        rendered: &rendered,
    });
    Loaded {
        fixture,
        trusts,
        set,
    }
}

fn check_derivation(name: &str) -> Loaded {
    let loaded = load(name);
    let (set, expect) = (&loaded.set, &loaded.fixture.expect);
    let got_ids: Vec<&str> = set.grants.iter().map(|g| g.id.as_str()).collect();
    let want_ids: Vec<&str> = expect.grants.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(got_ids, want_ids, "{name}: granted declarations");
    for (grant, want) in set.grants.iter().zip(&expect.grants) {
        let ctx = format!("{name}: {}", grant.id);
        // The three objects share one name and the binding points at the Role.
        assert!(
            grant.name.len() <= 63,
            "{ctx}: name {} too long",
            grant.name
        );
        for meta_name in [
            &grant.service_account.metadata.name,
            &grant.role.metadata.name,
            &grant.role_binding.metadata.name,
        ] {
            assert_eq!(meta_name.as_deref(), Some(grant.name.as_str()), "{ctx}");
        }
        assert_eq!(grant.role_binding.role_ref.kind, "Role", "{ctx}");
        assert_eq!(grant.role_binding.role_ref.name, grant.name, "{ctx}");
        let labels = grant.role.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("oam-trust.dev/grant"),
            Some(&grant.name),
            "{ctx}"
        );
        assert_eq!(
            grant
                .role
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("oam-trust.dev/grant-id")),
            Some(&grant.id),
            "{ctx}"
        );
        if let Some(prefix) = &want.name_prefix {
            assert!(grant.name.starts_with(prefix), "{ctx}: name {}", grant.name);
            assert_eq!(
                grant.name.len(),
                prefix.len() + oam_trust::access::objects::NAME_HASH_HEX,
                "{ctx}: {} hex digits of hash",
                oam_trust::access::objects::NAME_HASH_HEX
            );
        }
        if let Some(ttl) = &want.ttl {
            assert_eq!(oam_trust::duration::format(grant.ttl), *ttl, "{ctx}: ttl");
        }
        if let Some(rules) = &want.rules {
            assert_eq!(grant.role.rules.as_ref(), Some(rules), "{ctx}: rules");
        }
        if let Some(groups) = &want.agent_groups {
            assert_eq!(&grant.agent_groups, groups, "{ctx}: agent groups");
        }
        if let Some(subjects) = &want.binding_subjects {
            let got: Vec<String> = grant
                .role_binding
                .subjects
                .iter()
                .flatten()
                .map(|s| {
                    if s.kind == "ServiceAccount" && s.name == grant.name {
                        assert_eq!(s.namespace.as_ref(), Some(&grant.namespace));
                        "ServiceAccount:self".to_string()
                    } else {
                        format!("{}:{}", s.kind, s.name)
                    }
                })
                .collect();
            assert_eq!(&got, subjects, "{ctx}: binding subjects");
        }
        if let Some(unenforceable) = &want.unenforceable {
            let got: Vec<String> = grant
                .unenforceable
                .iter()
                .map(|u| {
                    let at = u.subject.map_or("*".to_string(), |i| i.to_string());
                    format!("{at}:{}", u.field)
                })
                .collect();
            assert_eq!(&got, unenforceable, "{ctx}: unenforceable");
        }
        if let Some(want_labels) = &want.labels {
            for (k, v) in want_labels {
                assert_eq!(labels.get(k), Some(v), "{ctx}: label {k}");
            }
        }
    }
    let got_refusals: Vec<&str> = set
        .refusals
        .iter()
        .map(|r| r.declaration.as_str())
        .collect();
    let want_refusals: Vec<&str> = expect
        .refusals
        .iter()
        .map(|r| r.declaration.as_str())
        .collect();
    assert_eq!(got_refusals, want_refusals, "{name}: refused declarations");
    for (refusal, want) in set.refusals.iter().zip(&expect.refusals) {
        let ctx = format!("{name}: {}", refusal.declaration);
        assert_eq!(
            variant(&refusal.reason),
            want.reason,
            "{ctx}: {}",
            refusal.message()
        );
        if let Some(message) = &want.message {
            assert_eq!(&refusal.message(), message, "{ctx}");
        }
        if let Some(part) = &want.message_contains {
            assert!(
                refusal.message().contains(part.as_str()),
                "{ctx}: {}",
                refusal.message()
            );
        }
    }
    let warnings: Vec<String> = set.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings, expect.warnings, "{name}: warnings");
    loaded
}

fn check_tokens(loaded: &Loaded) {
    assert!(!loaded.fixture.tokens.is_empty());
    for case in &loaded.fixture.tokens {
        let mut claims = loaded.fixture.base_claims.clone();
        for (k, v) in &case.claims {
            if v.is_null() {
                claims.remove(k);
            } else {
                claims.insert(k.clone(), v.clone());
            }
        }
        let claims = GitLabClaims::from_json(Value::Object(claims)).expect("claims parse");
        let trust = &loaded.trusts[&case.trust];
        let outcome = match_token(&claims, trust, &loaded.set, case.resource.as_deref());
        let ctx = &case.name;
        let want = &case.expect;
        match outcome {
            MatchOutcome::Matched { grant, subject } => {
                assert_eq!(Some(&grant.id), want.matched.as_ref(), "{ctx}");
                assert_eq!(Some(subject), want.subject, "{ctx}: subject");
            }
            MatchOutcome::TokenRefused(refusal) => {
                assert_eq!(Some(variant(&refusal)), want.refused, "{ctx}: {refusal}");
                if let Some(message) = &want.message {
                    assert_eq!(&refusal.to_string(), message, "{ctx}");
                }
            }
            MatchOutcome::Ambiguous(grants) => {
                let ids: Vec<String> = grants.iter().map(|g| g.id.clone()).collect();
                assert_eq!(Some(ids), want.ambiguous, "{ctx}");
            }
            MatchOutcome::NoMatch(mismatches) => {
                let lines: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
                assert_eq!(Some(lines), want.no_match, "{ctx}");
            }
        }
    }
}

#[test]
fn presets_are_scoped_to_rendered_objects() {
    let loaded = check_derivation("presets.yaml");
    // Owner reference to the Application, so deleting it collects the RBAC objects.
    let owner = &loaded.set.grants[0]
        .service_account
        .metadata
        .owner_references
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Application", "shop", Some(true))
    );
    assert_eq!(
        loaded.set.grants[0]
            .service_account
            .automount_service_account_token,
        Some(false)
    );
}

#[test]
fn each_refusal_reason_and_no_objects_for_refused_declarations() {
    check_derivation("refusals.yaml");
}

#[test]
fn explicit_rules_are_checked_against_the_ceiling() {
    check_derivation("ceiling.yaml");
}

#[test]
fn claim_matching() {
    let loaded = check_derivation("matching.yaml");
    check_tokens(&loaded);
}

#[test]
fn gitlab_agent_groups_and_unenforceable_conditions() {
    check_derivation("agent.yaml");
}

#[test]
fn grant_names_are_deterministic_and_unique_per_namespace() {
    let a = load("presets.yaml");
    let b = load("presets.yaml");
    assert_eq!(a.set, b.set);
    let mut other = load("presets.yaml").fixture;
    other.application.metadata.namespace = Some("team-b".into());
    let trusts = a.trusts.clone();
    let ceilings: BTreeMap<String, ClusterRole> = other
        .ceilings
        .iter()
        .map(|c| (c.metadata.name.clone().unwrap(), c.clone()))
        .collect();
    let moved = derive_grants(&GrantInput {
        application: &other.application,
        namespace_labels: Some(&other.namespace_labels),
        trusts: &trusts,
        ceilings: &ceilings,
        rendered: &[],
    });
    assert_eq!(moved.grants.len(), a.set.grants.len());
    for (x, y) in a.set.grants.iter().zip(&moved.grants) {
        assert_eq!(x.id, y.id);
        assert_ne!(x.name, y.name, "hash covers the namespace");
        assert_eq!(y.role.metadata.namespace.as_deref(), Some("team-b"));
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectorCase {
    selector: Option<LabelSelector>,
    labels: BTreeMap<String, String>,
    selects: Option<bool>,
    error: Option<String>,
}

#[test]
fn namespace_selectors() {
    let cases: Vec<SelectorCase> = serde_yaml_ng::from_str(&fixture("selectors.yaml")).unwrap();
    assert!(cases.len() > 10);
    for (i, case) in cases.iter().enumerate() {
        let got = oam_trust::access::selector::selects(case.selector.as_ref(), &case.labels);
        match (&case.selects, &case.error, got) {
            (Some(want), None, Ok(got)) => assert_eq!(got, *want, "case {i}"),
            (None, Some(want), Err(e)) => assert_eq!(&e.to_string(), want, "case {i}"),
            (_, _, got) => panic!("case {i}: unexpected {got:?}"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GlobCase {
    pattern: String,
    value: String,
    matches: bool,
}

#[test]
fn anchored_globs() {
    let cases: Vec<GlobCase> = serde_yaml_ng::from_str(&fixture("globs.yaml")).unwrap();
    assert!(cases.len() > 20);
    for case in cases {
        assert_eq!(
            glob::matches(&case.pattern, &case.value),
            case.matches,
            "{:?} against {:?}",
            case.pattern,
            case.value
        );
    }
}

#[test]
fn access_properties_reject_unknown_fields() {
    let err = serde_json::from_value::<oam_trust::api::access::GitLabAccess>(serde_json::json!({
        "trust": "t", "subjects": [{"projectId": "1"}], "access": "read", "tll": "5m"
    }))
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `tll`"), "{err}");
    let err = serde_json::from_value::<oam_trust::api::access::GitLabAccess>(serde_json::json!({
        "trust": "t", "subjects": [{"projectId": "1"}],
        "access": {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "nonResourceURLs": ["/x"]}]}
    }))
    .unwrap_err();
    assert!(err.to_string().contains("nonResourceURLs"), "{err}");
}

#[test]
fn gitlab_access_definitions_are_discoverable() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/definitions/gitlab-access.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<(&str, &str, &str)> = docs
        .iter()
        .map(|d| {
            (
                d["apiVersion"].as_str().unwrap(),
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (
                "core.oam.dev/v1beta1",
                "PolicyDefinition",
                oam_trust::names::GITLAB_ACCESS
            ),
            (
                "core.oam.dev/v1beta1",
                "TraitDefinition",
                oam_trust::names::GITLAB_ACCESS
            ),
        ]
    );
    assert_eq!(
        docs[1]["spec"]["appliesToWorkloads"],
        serde_json::json!(["*"])
    );
}

#[test]
fn guard_parameters_name_every_grant_and_the_rendered_service_accounts() {
    let loaded = load("presets.yaml");
    let object = |component: &str, v: Value| RenderedObject {
        component: Some(component.into()),
        object: v,
    };
    let rendered = vec![
        object(
            "web",
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "team-a"},
                "spec": {"template": {"spec": {"serviceAccountName": "web-sa", "containers": []}}}}),
        ),
        object(
            "worker",
            serde_json::json!({"apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": {"name": "nightly", "namespace": "team-a"},
                "spec": {"jobTemplate": {"spec": {"template": {"spec": {"serviceAccount": "batch-sa"}}}}}}),
        ),
        object(
            "worker",
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"serviceAccountName": "default"}}),
        ),
        // Another namespace's pod and a non-pod kind say nothing about this namespace's pods.
        object(
            "worker",
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "q", "namespace": "elsewhere"},
                "spec": {"serviceAccountName": "far-sa"}}),
        ),
        object(
            "worker",
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                "spec": {"serviceAccountName": "not-a-pod"}}),
        ),
    ];
    let cm = oam_trust::access::objects::guard_params(
        &loaded.fixture.application,
        &loaded.set,
        &rendered,
    )
    .expect("an Application with grants has guard parameters");
    let sa = |id: &str| loaded.set.grant(id).unwrap().name.clone();
    let user = |id: &str| format!("user:system:serviceaccount:team-a:{}", sa(id));
    let deploy = sa("policy/ci-deploy");
    let mut everyone: Vec<String> = [
        "policy/ci-deploy",
        "policy/2",
        "component/web/trait/1",
        "component/worker/trait/0",
    ]
    .iter()
    .map(|id| user(id))
    .collect();
    everyone.sort();
    let want: BTreeMap<String, String> = [
        ("application".to_string(), "shop".to_string()),
        (format!("{deploy}.principals"), user("policy/ci-deploy")),
        (format!("{deploy}.components"), "*".to_string()),
        ("grant-principals".to_string(), everyone.join(",")),
        ("serviceAccounts.web".to_string(), "web-sa".to_string()),
        ("serviceAccounts.worker".to_string(), "batch-sa".to_string()),
    ]
    .into_iter()
    .collect();
    assert_eq!(cm.data.unwrap(), want);
    assert_eq!(
        cm.metadata
            .labels
            .unwrap()
            .get("oam-trust.dev/deploy-guard")
            .map(String::as_str),
        Some("params")
    );
}
