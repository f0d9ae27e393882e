//! Generated files are in step with the code: `crds/` holds exactly what `oam-trust crd --out-dir crds`
//! writes today. Fix a failure with `cargo run -- crd --out-dir crds`.
use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn crds_directory_is_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let expected = oam_trust::api::crd_files();
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    let wanted: BTreeSet<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        on_disk, wanted,
        "crds/ has other files than the code generates; run `cargo run -- crd --out-dir crds`"
    );
    for (name, yaml) in expected {
        let current = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(
            current == yaml,
            "crds/{name} is stale; run `cargo run -- crd --out-dir crds`"
        );
    }
}
