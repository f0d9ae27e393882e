//! Any JSON as an Application (alone, or first in a list whose other documents are definitions)
//! through `render::render`. Rendering is deterministic, and every object it returns is a named
//! Kubernetes object carrying the Application's `app.oam.dev/name` label.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oam_trust::api::oam::Application;
use oam_trust::render::{self, Definitions};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let (app, defs) = match doc {
        Value::Array(mut docs) if !docs.is_empty() => {
            let app = docs.remove(0);
            let Ok(defs) = Definitions::from_documents(docs.iter()) else {
                return;
            };
            (app, defs)
        }
        app => (app, Definitions::default()),
    };
    let Ok(app) = serde_json::from_value::<Application>(app) else {
        return;
    };
    let first = render::render(&app, &defs);
    let again = render::render(&app, &defs);
    match (&first, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "rendering is not deterministic"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("one render failed and the other did not"),
    }
    let Ok(rendering) = first else {
        return;
    };
    let name = app.metadata.name.clone().unwrap_or_default();
    for o in &rendering.objects {
        let object = &o.object;
        assert!(
            object["kind"].is_string() && object["apiVersion"].is_string(),
            "{object}"
        );
        assert!(object["metadata"]["name"].is_string(), "{object}");
        assert_eq!(
            object["metadata"]["labels"]["app.oam.dev/name"].as_str(),
            Some(name.as_str()),
            "{object}"
        );
    }
    for w in &rendering.warnings {
        let _ = w.to_string();
    }
});
