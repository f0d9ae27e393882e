//! PURE: Application + definitions -> desired Kubernetes objects. No client, no async.
//!
//! The output contract (`RenderedObject`) is shared with `access/` (grants are scoped to these
//! objects' names) and `controller/` (which applies and prunes them).
use serde_json::Value;

/// One desired object, with the component (if any) it was rendered for.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedObject {
    /// Component name; `None` for objects a policy produced for the whole Application.
    pub component: Option<String>,
    /// The full object (apiVersion, kind, metadata, spec …), labels already set.
    pub object: Value,
}

impl RenderedObject {
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or_default()
    }
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }
}
