//! Render throughput on a realistic Application (webservice with scaler, expose, env, sidecar and
//! labels; a worker; a k8s-objects component): the work every reconcile and every token exchange
//! that derives grants repeats.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use oam_trust::manifest::Manifests;
use oam_trust::render::render_application;

fn render_realistic(c: &mut Criterion) {
    let text = include_str!("../tests/fixtures/oam/examples/realistic.yaml");
    let mut manifests = Manifests::default();
    manifests
        .add_text("realistic.yaml", text)
        .expect("fixture parses");
    let app = manifests
        .applications
        .pop()
        .expect("fixture has an Application");
    let defs = manifests.definitions;
    assert_eq!(render_application(&app, &defs).expect("renders").len(), 5);

    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(1));
    group.bench_function("realistic_application", |b| {
        b.iter(|| render_application(std::hint::black_box(&app), &defs).expect("renders"))
    });
    group.finish();
}

criterion_group!(benches, render_realistic);
criterion_main!(benches);
