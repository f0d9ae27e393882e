//! The README's main-job command works: `hack/demo.sh` on its own control plane plays the whole story
//! (operator, dev-issuer, GitLab deploy job, allowed and refused actions, audit trail) and exits 0.
use std::process::Command;

#[test]
fn the_demo_plays_a_deploy_job_end_to_end() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(format!("{root}/hack/demo.sh"))
        .env("DEMO_EXIT", "1")
        .env("OAM_TRUST_CLUSTER_DIR", dir.path().join("cluster"))
        .output()
        .expect("running hack/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hack/demo.sh failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for expected in [
        "Application payments/payments is running generation 2",
        "allowed  read its Application",
        "refused  read Secrets",
        "refused  change the scaler trait (deploy guard)",
        "refused  touch another namespace",
        "refused  replay the same ID token",
        "refused  exchange a token from an unprotected branch",
        "TokenIssued",
        "\"outcome\":\"issued\"",
    ] {
        assert!(
            stdout.contains(expected),
            "demo output lacks {expected:?}\n{stdout}"
        );
    }
}
