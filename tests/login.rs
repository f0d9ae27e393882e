//! `oam-trust login` + `kubectl` + `oam-trust set-image` in a bash script that plays a GitLab deploy job:
//! the allowed actions succeed, the forbidden ones fail, and a job the grant does not cover gets the
//! exchange's own description.
mod federation_support;
mod support;

use std::path::PathBuf;
use std::process::Command;

use federation_support::{Declarations, world};
use oam_trust::dev_issuer::MintRequest;

/// A directory holding kubectl: `$OAM_TRUST_BIN` of `.cluster/env` (the control plane's binaries) or PATH.
fn kubectl_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("OAM_TRUST_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("kubectl").is_file() {
            return dir;
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("kubectl").is_file() {
            return dir;
        }
    }
    panic!(
        "kubectl not found: `source .cluster/env` (it puts the control plane's kubectl on PATH)"
    );
}

const JOB: &str = r#"
set -euo pipefail
# The deploy job: exchange the ID token, then act with the kubeconfig.
oam-trust login --url "$OAM_TRUST_URL" --ca-file "$CA_FILE" --kubeconfig-out "$WORK/kubeconfig" | tee "$WORK/login.log"
export KUBECONFIG="$WORK/kubeconfig"
kubectl get application shop -o jsonpath='{.metadata.name}{"\n"}'
kubectl get deployment web -o name
if kubectl get secrets >"$WORK/secrets.out" 2>&1; then echo "FORBIDDEN ACTION SUCCEEDED: list secrets"; exit 1; fi
grep -qi forbidden "$WORK/secrets.out"
if kubectl delete deployment web >"$WORK/delete.out" 2>&1; then echo "FORBIDDEN ACTION SUCCEEDED: delete deployment"; exit 1; fi
grep -qi forbidden "$WORK/delete.out"
if kubectl -n default get applications >"$WORK/other-ns.out" 2>&1; then echo "FORBIDDEN ACTION SUCCEEDED: other namespace"; exit 1; fi
oam-trust set-image web=nginx:1.28 --app shop --wait --timeout 3m
test "$(kubectl get application shop -o jsonpath='{.spec.components[0].properties.image}')" = nginx:1.28
echo JOB-SUCCEEDED
"#;

fn run_job(script: &str, env: &[(&str, &str)], bin_dir: &std::path::Path) -> std::process::Output {
    let path = format!(
        "{}:{}:{}",
        bin_dir.display(),
        kubectl_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", path)
        .env("HOME", "/tmp");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running bash")
}

#[tokio::test]
async fn a_gitlab_deploy_job_logs_in_deploys_and_is_refused_everything_else() {
    let w = world("login", Declarations::default()).await;
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("exchange-ca.pem");
    std::fs::write(&ca_file, &w.exchange_ca).unwrap();
    // The job sees `oam-trust` on PATH, as in the CI image.
    let bin_dir = work.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_oam-trust"), bin_dir.join("oam-trust")).unwrap();

    let id_token = w.issuer.mint(&MintRequest::new()).unwrap();
    let url = w.server.url();
    let work_dir = work.path().display().to_string();
    let ca = ca_file.display().to_string();
    let out = tokio::task::spawn_blocking({
        let bin_dir = bin_dir.clone();
        let (url, work_dir, ca, id_token) =
            (url.clone(), work_dir.clone(), ca.clone(), id_token.clone());
        move || {
            run_job(
                JOB,
                &[
                    ("ID_TOKEN", &id_token),
                    ("OAM_TRUST_URL", &url),
                    ("CA_FILE", &ca),
                    ("WORK", &work_dir),
                ],
                &bin_dir,
            )
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("JOB-SUCCEEDED"),
        "the deploy job failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let log = std::fs::read_to_string(work.path().join("login.log")).unwrap();
    assert!(
        log.contains("policy/deploy") && log.contains("Application"),
        "{log}"
    );
    assert!(
        log.contains("ServiceAccount:") && log.contains("expires:"),
        "{log}"
    );
    assert!(log.contains("patch"), "the job log shows the verbs: {log}");
    assert!(
        !log.contains(&id_token),
        "the job log must not show the ID token"
    );
    let kubeconfig = work.path().join("kubeconfig");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&kubeconfig).unwrap().permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the kubeconfig is private");

    // A job for another environment: login fails with the exchange's description.
    let staging = w
        .issuer
        .mint(&MintRequest::new().claim("environment", "staging"))
        .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        run_job(
            r#"oam-trust login --url "$OAM_TRUST_URL" --ca-file "$CA_FILE" --kubeconfig-out "$WORK/staging.kubeconfig""#,
            &[
                ("ID_TOKEN", &staging),
                ("OAM_TRUST_URL", &url),
                ("CA_FILE", &ca),
                ("WORK", &work_dir),
            ],
            &bin_dir,
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("access_denied") && stderr.contains("staging"),
        "{stderr}"
    );
    assert!(!work.path().join("staging.kubeconfig").exists());
}
