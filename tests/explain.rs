//! `oam-trust explain`, offline, as a user runs it: which grant a token gets and, for every other grant,
//! the first condition that refused it; the same verification and decision code as the exchange.
use std::io::Write as _;
use std::process::{Command, Stdio};

use oam_trust::dev_issuer::{DevIssuer, DevIssuerOptions, MintAlgorithm, MintRequest};
use serde_json::{Value, json};

const AUD: &str = "https://oam-trust.explain";

fn explain(dir: &std::path::Path, token: &str, extra: &[&str]) -> (i32, Value, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oam-trust"))
        .args(["explain", "--token", "-", "--trust"])
        .arg(dir.join("trust.yaml"))
        .arg("-f")
        .arg(dir.join("apps"))
        .args(["-o", "json"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn explain_names_the_grant_and_why_every_other_grant_refused() {
    let issuer = DevIssuer::start(DevIssuerOptions {
        audience: AUD.into(),
        ..DevIssuerOptions::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trust = json!({
        "apiVersion": "oam-trust.dev/v1alpha1", "kind": "GitLabTrust", "metadata": {"name": "gitlab"},
        "spec": {"issuer": issuer.url(), "audiences": [AUD], "jwks": {"static": issuer.jwks_json()},
                 "namespaceSelector": {"matchLabels": {"ci": "on"}},
                 "allow": [{"namespaceId": "72"}], "require": {"refProtected": true},
                 "ceiling": {"clusterRoleRef": "ceiling"}}
    });
    std::fs::write(
        dir.path().join("trust.yaml"),
        serde_yaml_ng::to_string(&trust).unwrap(),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    let docs = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team", "labels": {"ci": "on"}}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "ceiling"},
               "rules": [{"apiGroups": ["core.oam.dev"], "resources": ["applications"], "verbs": ["get", "list", "watch", "patch", "update"]},
                         {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
                         {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "core.oam.dev/v1beta1", "kind": "Application",
               "metadata": {"name": "shop", "namespace": "team", "uid": "u1"},
               "spec": {"components": [{"name": "web", "type": "webservice", "properties": {"image": "nginx"},
                    "traits": [{"type": "gitlab-access", "properties": {"trust": "gitlab",
                        "subjects": [{"projectId": "1450", "ref": "release/*"}], "access": "read"}}]}],
                 "policies": [{"name": "deploy", "type": "gitlab-access", "properties": {"trust": "gitlab",
                    "subjects": [{"projectId": "1450", "ref": "main", "environment": "production"}], "access": "deploy"}}]}}),
    ];
    let text: String = docs
        .iter()
        .map(|d| format!("---\n{}", serde_yaml_ng::to_string(d).unwrap()))
        .collect();
    std::fs::write(dir.path().join("apps/shop.yaml"), text).unwrap();

    // The deploy job gets the deploy policy; the trait refused it on ref.
    let token = issuer.mint(&MintRequest::new()).unwrap();
    let (code, out, stderr) = explain(dir.path(), &token, &[]);
    assert_eq!(code, 0, "{stderr} {out}");
    assert_eq!(out["granted"]["grant"], "policy/deploy");
    assert_eq!(out["granted"]["resource"], "team/shop");
    assert!(
        out["verification"]
            .as_str()
            .unwrap()
            .starts_with("verified")
    );
    let trait_grant = out["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["grant"] == "component/web/trait/0")
        .unwrap();
    assert_eq!(trait_grant["matched"], false);
    assert!(
        trait_grant["reason"].as_str().unwrap().contains("ref"),
        "{trait_grant}"
    );

    // A staging job: no grant, exit 1, every grant says why.
    let staging = issuer
        .mint(&MintRequest::new().claim("environment", "staging"))
        .unwrap();
    let (code, out, _) = explain(dir.path(), &staging, &[]);
    assert_eq!(code, 1);
    assert_eq!(out["error"], "access_denied");
    assert!(out["granted"].is_null());
    let deploy = out["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["grant"] == "policy/deploy")
        .unwrap();
    assert!(deploy["reason"].as_str().unwrap().contains("staging"));

    // alg none is refused by verification, and judged on claims alone with --no-verify.
    let unsigned = issuer
        .mint(&MintRequest::new().alg(MintAlgorithm::None))
        .unwrap();
    let (code, out, _) = explain(dir.path(), &unsigned, &[]);
    assert_eq!(code, 1);
    assert_eq!(out["error"], "invalid_grant");
    assert!(out["error_description"].as_str().unwrap().contains("RS256"));
    let (code, out, _) = explain(dir.path(), &unsigned, &["--no-verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out["verification"]
            .as_str()
            .unwrap()
            .starts_with("not verified")
    );
}
