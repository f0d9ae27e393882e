//! The one walker of an Application's `gitlab-access` declarations: a policy covers the whole
//! Application, a component trait covers that component. Everything that asks "which declarations
//! does this Application make" (derivation, the controller's triggers, the exchange's index) asks here.
use crate::api::oam::Application;
use crate::names::GITLAB_ACCESS;

/// One declaration, where it stands in the Application.
pub struct Declaration<'a> {
    /// `policy/<name>` (`policy/<index>` if unnamed) or `component/<component>/trait/<index>`.
    pub id: String,
    /// The readable part of the grant's object name.
    pub slug: String,
    /// The component a trait covers; `None` for a policy.
    pub component: Option<&'a str>,
    pub properties: Option<&'a serde_json::Value>,
}

impl Declaration<'_> {
    /// The trust the declaration names, if its properties say one.
    pub fn trust(&self) -> Option<&str> {
        self.properties?.get("trust")?.as_str()
    }
}

/// Every declaration of `app`: policies first, then component traits, in document order.
pub fn declarations(app: &Application) -> Vec<Declaration<'_>> {
    let mut out = Vec::new();
    for (i, policy) in app.spec.policies.iter().enumerate() {
        if policy.type_ != GITLAB_ACCESS {
            continue;
        }
        let (id, slug) = match &policy.name {
            Some(name) => (format!("policy/{name}"), name.clone()),
            None => (format!("policy/{i}"), format!("policy-{i}")),
        };
        out.push(Declaration {
            id,
            slug,
            component: None,
            properties: policy.properties.as_ref(),
        });
    }
    for component in &app.spec.components {
        for (i, t) in component.traits.iter().enumerate() {
            if t.type_ != GITLAB_ACCESS {
                continue;
            }
            out.push(Declaration {
                id: format!("component/{}/trait/{i}", component.name),
                slug: format!("{}-{i}", component.name),
                component: Some(&component.name),
                properties: t.properties.as_ref(),
            });
        }
    }
    out
}

/// Whether the Application makes any declaration.
pub fn has_declarations(app: &Application) -> bool {
    !declarations(app).is_empty()
}

/// Whether a declaration of `app` names `trust`, or may (its properties name no trust readably).
pub fn may_use_trust(app: &Application, trust: &str) -> bool {
    declarations(app)
        .iter()
        .any(|d| d.trust().is_none_or(|t| t == trust))
}

/// Whether a declaration of `app` names `trust`.
pub fn declares_under(app: &Application, trust: &str) -> bool {
    declarations(app).iter().any(|d| d.trust() == Some(trust))
}
