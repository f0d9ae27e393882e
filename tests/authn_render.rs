//! The API server's own authenticator (`access::authn`, `oam-trust authn-config`), no cluster: the
//! golden document for the fixtures in `tests/fixtures/authn/`, trusts left out and why, the size
//! bound, and a differential test: for hundreds of claim sets, what the generated CEL gives (evaluated
//! with cel-rust, `matches` backed by the `regex` crate as RE2 stands in for cel-go's) must be what
//! the token exchange's `match_token` decides for the same grants.
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;

use cel::extractors::This;
use oam_trust::access::{
    AuthnConfig, GitLabClaims, GrantSet, MatchOutcome, World, authentication_config, match_token,
};
use oam_trust::api::trust::GitLabTrust;
use oam_trust::manifest::Manifests;
use oam_trust::oidc::KeySet;
use serde_json::{Map, Value, json};

fn fixtures() -> Manifests {
    let mut m = Manifests::default();
    m.add_path(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/authn"))
        .expect("fixtures load");
    m
}

fn config(m: &Manifests) -> (World, AuthnConfig) {
    let (world, notes) = m.world();
    assert!(notes.is_empty(), "{notes:?}");
    let config = authentication_config(&world, &m.applications);
    (world, config)
}

/// Evaluates `expression` over `claims` as kube-apiserver would: the claims as they are (no cut),
/// `matches` an RE2-compatible regex match.
fn eval(expression: &str, claims: &Value) -> Result<cel::Value, String> {
    let program = cel::Program::compile(expression).map_err(|e| format!("{expression}: {e}"))?;
    let mut context = cel::Context::default();
    context
        .add_function(
            "matches",
            |This(this): This<Arc<String>>, re: Arc<String>| -> cel::ResolveResult {
                let re = regex::Regex::new(&re)
                    .map_err(|e| cel::ExecutionError::function_error("matches", e))?;
                Ok(cel::Value::Bool(re.is_match(&this)))
            },
        )
        .unwrap();
    context
        .add_variable("claims", claims.clone())
        .map_err(|e| e.to_string())?;
    program.execute(&context).map_err(|e| e.to_string())
}

/// What the API server makes of a token with `claims` under `authenticator`: `None` when it refuses
/// the token (a validation rule false or failing, a mapping failing), else the groups.
fn api_server(authenticator: &Value, claims: &Value) -> Option<BTreeSet<String>> {
    for rule in authenticator["claimValidationRules"].as_array().unwrap() {
        match eval(rule["expression"].as_str().unwrap(), claims) {
            Ok(cel::Value::Bool(true)) => {}
            _ => return None,
        }
    }
    let mappings = &authenticator["claimMappings"];
    match eval(mappings["username"]["expression"].as_str().unwrap(), claims) {
        Ok(cel::Value::String(s)) if s.starts_with("gitlab:ci_job:") && s.len() > 14 => {}
        other => panic!("username: {other:?} for {claims}"),
    }
    for extra in mappings["extra"].as_array().unwrap() {
        match eval(extra["valueExpression"].as_str().unwrap(), claims) {
            Ok(cel::Value::String(_)) => {}
            _ => return None,
        }
    }
    match eval(mappings["groups"]["expression"].as_str().unwrap(), claims) {
        Ok(cel::Value::List(items)) => Some(
            items
                .iter()
                .map(|g| match g {
                    cel::Value::String(s) => s.to_string(),
                    other => panic!("group {other:?}"),
                })
                .collect(),
        ),
        Ok(other) => panic!("groups: {other:?}"),
        Err(_) => None,
    }
}

/// Signs claim sets as GitLab would, for the exchange's own verification.
struct Signer {
    key: EncodingKey,
    keys: KeySet,
}

fn signer() -> Signer {
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let pem = key.to_pkcs1_pem(LineEnding::LF).unwrap();
    let public = key.to_public_key();
    let jwks = json!({"keys": [{
        "kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
    }]});
    Signer {
        key: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        keys: KeySet::from_jwks_json(jwks.to_string().as_bytes()).unwrap(),
    }
}

/// What the token exchange decides for a GitLab-signed token with `claims`, a second after it was
/// issued: its verification (`oidc::verify`), then `match_token`. `None` when it refuses the token,
/// else the groups of every grant it matches (ignoring ambiguity: no `resource` narrows).
fn exchange(
    signer: &Signer,
    claims: &Value,
    trust: &GitLabTrust,
    grants: &GrantSet,
) -> Option<BTreeSet<String>> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    let token = jsonwebtoken::encode(&header, claims, &signer.key).unwrap();
    let iat = claims["iat"].as_u64().unwrap_or(1_735_689_600);
    let now = UNIX_EPOCH + Duration::from_secs(iat + 1);
    let verified = oam_trust::oidc::verify(&token, trust, &signer.keys, now).ok()?;
    let claims = GitLabClaims::from_json(Value::Object(verified.claims)).ok()?;
    let group = |g: &oam_trust::access::Grant| g.api_server_group.clone().expect("grant group");
    match match_token(&claims, trust, grants, None) {
        MatchOutcome::TokenRefused(_) => None,
        MatchOutcome::NoMatch(_) => Some(BTreeSet::new()),
        MatchOutcome::Matched { grant, .. } => Some(BTreeSet::from([group(grant)])),
        MatchOutcome::Ambiguous(all) => Some(all.into_iter().map(group).collect()),
    }
}

fn authenticator<'a>(config: &'a AuthnConfig, issuer: &str) -> &'a Value {
    config.document["jwt"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["issuer"]["url"] == issuer)
        .unwrap_or_else(|| panic!("no authenticator for {issuer}"))
}

fn grants(world: &World, m: &Manifests) -> GrantSet {
    GrantSet::merge(
        m.applications
            .iter()
            .map(|app| world.derive(app).expect("renders").grants),
    )
}

#[test]
fn golden_document_and_warnings() {
    let m = fixtures();
    let (_, config) = config(&m);
    insta::assert_yaml_snapshot!("authn_config", config.document);
    insta::assert_yaml_snapshot!("authn_warnings", config.warnings);
}

#[test]
fn the_output_does_not_depend_on_the_order_of_applications() {
    let mut m = fixtures();
    let (_, before) = config(&m);
    m.applications.reverse();
    let doubled: Vec<_> = m
        .applications
        .iter()
        .chain(&m.applications)
        .cloned()
        .collect();
    m.applications = doubled;
    let (_, after) = config(&m);
    assert_eq!(before, after);
}

#[test]
fn no_trust_in_api_server_mode_is_an_empty_list() {
    let mut m = fixtures();
    m.others.retain(|d| {
        d.value["kind"] != "GitLabTrust" || d.value["metadata"]["name"] == "gitlab-exchange"
    });
    let (_, config) = config(&m);
    assert_eq!(
        config.document,
        json!({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "AuthenticationConfiguration", "jwt": []})
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn trusts_whose_keys_do_not_come_from_discovery_are_left_out() {
    let (_, config) = config(&fixtures());
    let issuers: Vec<&str> = config.document["jwt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["issuer"]["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        issuers,
        [
            "https://gitlab.example.com",
            "https://gitlab.internal.example"
        ]
    );
    let warning = |trust: &str| {
        config
            .warnings
            .iter()
            .find(|w| w.starts_with(&format!("GitLabTrust {trust:?} is left out")))
            .unwrap_or_else(|| panic!("no warning for {trust}: {:?}", config.warnings))
            .clone()
    };
    assert!(warning("gitlab-static").contains("jwks.static"));
    assert!(warning("gitlab-uri").contains("jwks.uri"));
    assert!(warning("gitlab-uri").contains("discoveryURL"));
    // The served ones say what the API server cannot do.
    let served = config
        .warnings
        .iter()
        .find(|w| w.starts_with("GitLabTrust \"gitlab\" is served"))
        .unwrap();
    for limit in [
        "no replay protection",
        "lives as long as the ID token",
        "no per-request audit record",
        "no TTL shortening",
    ] {
        assert!(served.contains(limit), "{served}");
    }
}

#[test]
fn grants_bind_their_group_and_the_guards_know_it() {
    let m = fixtures();
    let (world, _) = config(&m);
    let app = m
        .applications
        .iter()
        .find(|a| a.metadata.name.as_deref() == Some("payments"))
        .unwrap();
    let derived = world.derive(app).unwrap();
    let ci = derived.grants.grant("policy/ci").unwrap();
    let group = format!("oam-trust:grant:shop:{}", ci.name);
    assert_eq!(ci.api_server_group.as_deref(), Some(group.as_str()));
    let subjects = ci.role_binding.subjects.as_ref().unwrap();
    assert!(subjects.iter().any(|s| s.kind == "Group"
        && s.name == group
        && s.api_group.as_deref() == Some("rbac.authorization.k8s.io")));
    let params =
        oam_trust::access::objects::guard_params(app, &derived.grants, &derived.rendered).unwrap();
    let data = params.data.unwrap();
    let principals = &data[&format!("{}.principals", ci.name)];
    assert!(
        principals.split(',').any(|p| p == format!("group:{group}")),
        "{principals}"
    );
    assert!(
        data["grant-principals"]
            .split(',')
            .any(|p| p == format!("group:{group}"))
    );
    // The Application is told what the API server cannot do, and which subject it cannot carry.
    let warnings: Vec<String> = derived
        .grants
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("policy/ci: ") && w.contains("no replay protection")),
        "{warnings:?}"
    );
    // A trust without the mode binds no such group.
    let tooling = m
        .applications
        .iter()
        .find(|a| a.metadata.name.as_deref() == Some("tooling"))
        .unwrap();
    let derived = world.derive(tooling).unwrap();
    let exchange_only = derived.grants.grant("policy/exchange").unwrap();
    assert_eq!(exchange_only.api_server_group, None);
    assert!(
        exchange_only
            .role_binding
            .subjects
            .as_ref()
            .unwrap()
            .iter()
            .all(|s| s.kind == "ServiceAccount")
    );
    let warnings: Vec<String> = derived
        .grants
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect();
    assert!(
        warnings.iter().any(|w| w.starts_with("policy/review: ")
            && w.contains("never matches subject 2: its condition")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("policy/static: ") && w.contains("cannot serve it")),
        "{warnings:?}"
    );
}

#[test]
fn an_expression_over_the_size_bound_leaves_its_trust_out() {
    let mut m = fixtures();
    let policies: Vec<Value> = (0..300)
        .map(|i| {
            json!({"name": format!("p{i}"), "type": "gitlab-access", "properties": {
                "trust": "gitlab", "access": "read",
                "subjects": [{"projectId": "1450", "ref": format!("release-{i}-*"), "environment": "prod-*"}]}})
        })
        .collect();
    m.add(
        "inline",
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
               "metadata": {"name": "big", "namespace": "shop"},
               "spec": {"components": [{"name": "w", "type": "worker", "properties": {"image": "x"}}],
                        "policies": policies}}),
    )
    .unwrap();
    let (_, config) = config(&m);
    let issuers: Vec<&Value> = config.document["jwt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["issuer"]["url"])
        .collect();
    assert_eq!(issuers, [&json!("https://gitlab.internal.example")]);
    let warning = config
        .warnings
        .iter()
        .find(|w| w.starts_with("GitLabTrust \"gitlab\" is left out"))
        .expect("a warning naming the trust");
    assert!(
        warning.contains("claimMappings.groups expression is")
            && warning.contains(&oam_trust::access::authn::MAX_EXPRESSION_BYTES.to_string()),
        "{warning}"
    );
}

/// A small deterministic generator (no seed to remember, no dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() as usize) % items.len()]
    }
}

/// Claim sets around the fixtures' subjects: every field the rules and subjects read, present or
/// not, matching or not, plus fork claims and token lifetimes. All GitLab-shaped: string claims,
/// lists and the claims map within the exchange's evaluation bound (`condition::MAX_RANGE`).
fn claim_sets() -> Vec<Value> {
    const ABSENT: &str = "<absent>";
    let mut rng = Lcg(0x5eed);
    let mut out = Vec::new();
    for i in 0..1500 {
        let mut c = Map::new();
        let set = |c: &mut Map<String, Value>, k: &str, v: &str| {
            if v != ABSENT {
                c.insert(k.into(), Value::String(v.into()));
            }
        };
        let project = rng.pick(&["1450", "1451", "1452", "999", "1450", "1452"]);
        let (ns_id, ns_path) = rng.pick(&[
            ("72", "platform"),
            ("72", "platform/team"),
            ("73", "ext"),
            ("74", "other"),
            ("72", "platform"),
        ]);
        let project_path = match rng.pick(&[0, 1, 2, 3]) {
            0 => format!("{ns_path}/api"),
            1 => format!("{ns_path}/team/api"),
            2 => "ext/tool".to_string(),
            _ => format!("{ns_path}/x"),
        };
        set(
            &mut c,
            "project_id",
            if i % 97 == 5 { ABSENT } else { project },
        );
        set(&mut c, "namespace_id", if i % 89 == 7 { "" } else { ns_id });
        set(&mut c, "project_path", &project_path);
        set(&mut c, "namespace_path", ns_path);
        set(
            &mut c,
            "job_id",
            if i % 101 == 3 { ABSENT } else { "771234" },
        );
        set(
            &mut c,
            "pipeline_id",
            if i % 103 == 4 { "" } else { "98012" },
        );
        set(
            &mut c,
            "ref",
            rng.pick(&[
                "main",
                "main2",
                "v1.2.3",
                "v1x2.3",
                "v1.2/x",
                "feature/ax",
                "feature/a/x",
                "hotfix",
                ABSENT,
            ]),
        );
        set(
            &mut c,
            "ref_type",
            rng.pick(&["branch", "tag", "branch", ABSENT]),
        );
        set(
            &mut c,
            "ref_protected",
            rng.pick(&["true", "false", "yes", ABSENT, "true"]),
        );
        set(
            &mut c,
            "environment",
            rng.pick(&[
                "production",
                "prod-eu",
                "review/x",
                "staging",
                ABSENT,
                ABSENT,
            ]),
        );
        set(
            &mut c,
            "environment_protected",
            rng.pick(&["true", "false", ABSENT, "true"]),
        );
        set(
            &mut c,
            "deployment_tier",
            rng.pick(&["production", "staging", ABSENT]),
        );
        set(
            &mut c,
            "pipeline_source",
            rng.pick(&["push", "web", "schedule", "merge_request_event", ABSENT]),
        );
        set(&mut c, "user_login", rng.pick(&["alice", "bob", ABSENT]));
        set(
            &mut c,
            "user_access_level",
            rng.pick(&["maintainer", "owner", "developer", ABSENT]),
        );
        match rng.pick(&[0, 1, 1, 1, 1, 2, 3]) {
            0 => {}
            1 => {
                set(&mut c, "job_project_id", project);
                set(&mut c, "job_namespace_id", ns_id);
            }
            2 => {
                set(&mut c, "job_project_id", "9999");
                set(&mut c, "job_namespace_id", ns_id);
            }
            _ => {
                set(&mut c, "job_project_id", project);
                set(&mut c, "job_namespace_id", "7");
            }
        }
        match rng.pick(&[0, 1, 2, 3, 3]) {
            0 => {}
            1 => {
                c.insert("groups_direct".into(), json!(["x"]));
            }
            2 => {
                c.insert(
                    "groups_direct".into(),
                    json!(["platform/dev", "x", "platform/sre"]),
                );
            }
            _ => {
                c.insert("groups_direct".into(), json!(["platform", "platform/sre"]));
            }
        }
        let iat = 1_735_689_600_i64;
        c.insert("iat".into(), json!(iat));
        c.insert(
            "exp".into(),
            json!(iat + rng.pick(&[300_i64, 300, 600, 3600, 3601, 7200, -5])),
        );
        if i % 113 == 9 {
            c.remove("iat");
        }
        c.insert("iss".into(), json!("https://gitlab.example.com"));
        match i % 131 {
            11 => {}
            12 => {
                c.insert("jti".into(), json!(""));
            }
            _ => {
                c.insert("jti".into(), json!(format!("jti-{i}")));
            }
        }
        c.insert("aud".into(), json!("https://k8s.example.com"));
        c.insert("runner_id".into(), json!(55));
        out.push(Value::Object(c));
    }
    out
}

#[test]
fn differential_the_api_server_decides_as_the_exchange() {
    let m = fixtures();
    let (world, config) = config(&m);
    let grants = grants(&world, &m);
    let signer = signer();
    let mut compared = 0;
    let mut refused = 0;
    let mut matched: BTreeSet<String> = BTreeSet::new();
    let mut with_groups = 0;
    for trust_name in ["gitlab", "gitlab-protected"] {
        let trust = &world.trusts[trust_name];
        let authenticator = authenticator(&config, &trust.spec.issuer);
        for mut claims in claim_sets() {
            claims["iss"] = trust.spec.issuer.clone().into();
            let want = exchange(&signer, &claims, trust, &grants);
            let got = api_server(authenticator, &claims);
            assert_eq!(
                got, want,
                "trust {trust_name}: the API server and the exchange disagree on {claims:#}"
            );
            compared += 1;
            match got {
                None => refused += 1,
                Some(groups) => {
                    with_groups += usize::from(!groups.is_empty());
                    matched.extend(groups);
                }
            }
        }
    }
    eprintln!(
        "{compared} claim sets compared: {refused} refused by both, {with_groups} given groups by both"
    );
    // The claim sets exercise both refusals and matches, and every expressible grant matches some.
    assert_eq!(compared, 3000);
    assert!(
        refused > 300 && compared - refused > 300,
        "{refused} of {compared} refused"
    );
    assert!(with_groups > 100, "{with_groups} with groups");
    let expressible: BTreeSet<String> = grants
        .grants
        .iter()
        .filter(|g| ["gitlab", "gitlab-protected"].contains(&g.trust.as_str()))
        .filter_map(|g| g.api_server_group.clone())
        .collect();
    assert_eq!(
        matched, expressible,
        "grants never matched by any claim set"
    );
}

#[test]
fn where_claims_are_not_gitlab_shaped_the_api_server_is_narrower() {
    let m = fixtures();
    let (world, config) = config(&m);
    let grants = grants(&world, &m);
    let signer = signer();
    let trust = &world.trusts["gitlab"];
    let authenticator = authenticator(&config, &trust.spec.issuer);
    let base = json!({
        "iss": "https://gitlab.example.com", "aud": "https://k8s.example.com", "jti": "j",
        "project_id": "1450", "namespace_id": "72", "project_path": "platform/api",
        "namespace_path": "platform", "job_id": "1", "pipeline_id": "2", "ref": "main",
        "ref_type": "branch", "ref_protected": "true", "iat": 100, "exp": 400,
    });
    let matched = exchange(&signer, &base, trust, &grants).unwrap();
    assert!(!matched.is_empty(), "the base token matches a grant");
    assert_eq!(api_server(authenticator, &base), Some(matched));
    // Claims of another JSON type than GitLab's: the exchange reads some leniently, the API server
    // refuses them all.
    let mut lenient = Vec::new();
    for (claim, value) in [
        ("project_id", json!(1450)),
        ("namespace_id", json!(72)),
        ("ref_protected", json!(true)),
        ("job_id", json!(1)),
        ("environment", Value::Null),
        ("jti", json!(7)),
    ] {
        let mut claims = base.clone();
        claims[claim] = value;
        assert_eq!(api_server(authenticator, &claims), None, "{claim}: refused");
        if exchange(&signer, &claims, trust, &grants).is_some() {
            lenient.push(claim);
        }
    }
    assert_eq!(lenient, ["namespace_id", "ref_protected", "environment"]);
    // Beyond the exchange's evaluation bound (its conditions see at most 64 list elements and
    // claims), the API server never gives a group the exchange would not.
    let ext = json!({
        "iss": "https://gitlab.example.com", "aud": "https://k8s.example.com", "jti": "j",
        "project_id": "1460", "namespace_id": "73", "project_path": "ext/tool",
        "namespace_path": "ext", "job_id": "1", "pipeline_id": "2", "iat": 100, "exp": 400,
    });
    let readers = |claims: &Value| {
        api_server(authenticator, claims)
            .unwrap()
            .iter()
            .any(|g| g.contains("readers"))
    };
    let mut listed = ext.clone();
    listed["groups_direct"] = json!(["platform/sre"]);
    assert!(readers(&listed), "the groups_direct subject matches");
    let mut long: Vec<String> = (0..69).map(|i| format!("g{i}")).collect();
    long.push("platform/sre".into());
    listed["groups_direct"] = json!(long);
    assert!(!readers(&listed), "70 groups: past the bound");
    assert!(
        exchange(&signer, &listed, trust, &grants)
            .unwrap()
            .is_empty()
    );
    let mut wide = ext.clone();
    wide["groups_direct"] = json!(["platform/sre"]);
    for i in 0..70 {
        wide[format!("x{i}")] = json!("1");
    }
    // Many claims: kube's `claims` has no `size()`, so the API server does not count them; the
    // exchange matches this subject too.
    assert!(readers(&wide), "71 claims");
    assert!(!exchange(&signer, &wide, trust, &grants).unwrap().is_empty());
}

#[test]
fn cli_prints_the_document_and_warns_on_stderr() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/authn");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oam-trust"))
        .args(["authn-config", "-f"])
        .arg(&dir)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (_, config) = config(&fixtures());
    assert_eq!(printed, config.document);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("warning: GitLabTrust \"gitlab-static\" is left out"),
        "{stderr}"
    );
    let yaml = std::process::Command::new(env!("CARGO_BIN_EXE_oam-trust"))
        .args(["authn-config", "-f"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(yaml.status.success());
    let parsed: Value = serde_yaml_ng::from_slice(&yaml.stdout).unwrap();
    assert_eq!(parsed, config.document);
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_oam-trust"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("authn-config"));
}
