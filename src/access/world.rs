//! The world a grant derivation sees besides the Application: GitLabTrusts, their ceiling
//! ClusterRoles, namespace labels and the definitions an Application renders with. Pure data.
//!
//! There are exactly two constructors: `runtime::world::WorldStores::snapshot` (the cluster's
//! reflector stores; the controller and the exchange) and `manifest::Manifests::world` (offline files;
//! `render` and `explain`). Both feed the one derivation, [`World::derive`].
//!
//! A namespace the world has no object for means different things in the two: in the cluster it has
//! no labels (it does not exist, so no trust selects it); offline, the files simply did not include it,
//! so it is *assumed selected* by every trust's `namespaceSelector` and each declaration that relied on
//! that assumption carries a warning saying so ([`MissingNamespace`]).
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::ResourceExt;

use super::grant::{GrantInput, GrantSet, derive_grants};
use crate::api::oam::{
    Application, ComponentDefinition, PolicyDefinition, TraitDefinition, WorkloadDefinition,
};
use crate::api::trust::GitLabTrust;
use crate::render::{self, Definitions, RenderError, RenderedObject};

/// What a namespace without an object in the world means for the trusts' `namespaceSelector`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingNamespace {
    /// It has no labels (the cluster: a namespace without an object does not exist).
    #[default]
    NoLabels,
    /// It is assumed selected, with a warning on each declaration (offline files that omit it).
    AssumedSelected,
}

/// Everything derivation reads besides the Application.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// GitLabTrusts by name.
    pub trusts: BTreeMap<String, GitLabTrust>,
    /// Ceiling ClusterRoles by name (those the trusts name; others may be present).
    pub ceilings: BTreeMap<String, ClusterRole>,
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Arc<Namespace>>,
    pub missing_namespace: MissingNamespace,
    pub definitions: DefinitionCatalog,
    /// Guard admission policies (`names::GUARD_BINDINGS`) that are not installed: while any is, grants
    /// that write are not usable (no token is issued for them). Offline, none is missing.
    pub missing_guards: Vec<String>,
    /// The objects the Application's `ref-objects` components name, read by the controller for the
    /// one Application it is deriving; `None` (offline, and in the exchange) renders them as nothing.
    pub referenced: Option<render::Referenced>,
}

/// What one Application derives to: its rendered objects, what rendering warned about (properties a
/// definition does not declare, traits outside their `appliesToWorkloads`), and its grants.
#[derive(Clone, Debug)]
pub struct Derived {
    pub rendered: Vec<RenderedObject>,
    pub warnings: Vec<render::RenderWarning>,
    pub grants: GrantSet,
    /// The resource policies the applier honours (`garbage-collect`, `apply-once`, …).
    pub policies: render::ResourcePolicies,
    /// Component name -> type (what `componentTypes` selectors of those policies match).
    pub component_types: BTreeMap<String, String>,
    /// The workflow, and per rendered object the steps that apply it (`render::Rendering`).
    pub workflow: Option<render::workflow::Workflow>,
    pub object_steps: Vec<Option<String>>,
}

impl World {
    /// The labels of `namespace`, or `None` when the world has no object for it and
    /// `missing_namespace` says to assume it selected.
    pub fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        match (self.namespaces.get(namespace), self.missing_namespace) {
            (Some(ns), _) => Some(ns.labels().clone()),
            (None, MissingNamespace::NoLabels) => Some(BTreeMap::new()),
            (None, MissingNamespace::AssumedSelected) => None,
        }
    }

    /// Renders `app` with the definitions visible in its namespace.
    pub fn render(&self, app: &Application) -> Result<Vec<RenderedObject>, RenderError> {
        let namespace = crate::names::namespace_of(app);
        render::render_application(app, &self.definitions.visible_in(namespace))
    }

    /// The grants of `app`, given what it renders to.
    pub fn grants(&self, app: &Application, rendered: &[RenderedObject]) -> GrantSet {
        let labels = self.namespace_labels(crate::names::namespace_of(app));
        derive_grants(&GrantInput {
            application: app,
            namespace_labels: labels.as_ref(),
            trusts: &self.trusts,
            ceilings: &self.ceilings,
            rendered,
        })
    }

    /// THE derivation: what `app` renders to and the grants its declarations get. The controller
    /// applies both, the exchange picks among the grants, `render` prints both and `explain` judges
    /// a token against the grants.
    pub fn derive(&self, app: &Application) -> Result<Derived, RenderError> {
        let namespace = crate::names::namespace_of(app);
        let defs = self
            .definitions
            .visible_in(namespace)
            .with_referenced(self.referenced.clone());
        let rendering = render::render(app, &defs)?;
        let grants = self.grants(app, &rendering.objects);
        Ok(Derived {
            rendered: rendering.objects,
            warnings: rendering.warnings,
            grants,
            policies: rendering.policies,
            component_types: rendering.component_types,
            workflow: rendering.workflow,
            object_steps: rendering.object_steps,
        })
    }
}

/// Every definition object the world holds, with the namespace it lives in.
///
/// Definitions resolve as in KubeVela: an Application sees the definitions of its own namespace and
/// of the system definitions namespace (`--definitions-namespace`, default `vela-system`), its own
/// namespace's winning on a name clash, and never another tenant's. Offline, a definition that names
/// no namespace counts as a system one.
#[derive(Clone, Debug, Default)]
pub struct DefinitionCatalog {
    pub components: Vec<Arc<ComponentDefinition>>,
    pub traits: Vec<Arc<TraitDefinition>>,
    pub policies: Vec<Arc<PolicyDefinition>>,
    pub workloads: Vec<Arc<WorkloadDefinition>>,
    /// The system definitions namespace (empty: only definitions without a namespace are system ones).
    pub system_namespace: String,
}

impl DefinitionCatalog {
    /// An empty catalog whose system definitions live in `system_namespace`.
    pub fn new(system_namespace: impl Into<String>) -> Self {
        DefinitionCatalog {
            system_namespace: system_namespace.into(),
            ..Default::default()
        }
    }

    /// Whether a definition living in `home` is visible to Applications of `namespace`.
    pub fn visible(&self, home: Option<&str>, namespace: &str) -> bool {
        match home {
            None | Some("") => true,
            Some(h) => h == namespace || h == self.system_namespace,
        }
    }

    /// What renders a component of `type_` in `namespace`: `ComponentDefinition <ns>/<name>` when a
    /// visible definition has that name (the namespace's own first), else `built-in <type>`.
    pub fn component_origin(&self, type_: &str, namespace: &str) -> String {
        let visible: Vec<&Arc<ComponentDefinition>> = self
            .components
            .iter()
            .filter(|d| d.metadata.name.as_deref() == Some(type_))
            .filter(|d| self.visible(d.metadata.namespace.as_deref(), namespace))
            .collect();
        let own = visible
            .iter()
            .find(|d| d.metadata.namespace.as_deref() == Some(namespace));
        match own.or(visible.first()) {
            Some(d) => format!(
                "ComponentDefinition {}/{type_}",
                d.metadata
                    .namespace
                    .as_deref()
                    .unwrap_or(&self.system_namespace)
            ),
            None => format!("built-in {type_}"),
        }
    }

    /// Definitions named like a type `app` uses that live in a namespace it cannot see: what
    /// `render` notes on stderr, since a user who wrote them probably meant them to apply.
    pub fn invisible_to(&self, app: &Application) -> Vec<String> {
        let namespace = crate::names::namespace_of(app);
        let components: Vec<&str> = app
            .spec
            .components
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        let traits: Vec<&str> = app
            .spec
            .components
            .iter()
            .flat_map(|c| c.traits.iter().map(|t| t.type_.as_str()))
            .collect();
        let policies: Vec<&str> = app.spec.policies.iter().map(|p| p.type_.as_str()).collect();
        let mut out = Vec::new();
        let mut check = |kind: &str,
                         meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                         used: &[&str]| {
            let name = meta.name.as_deref().unwrap_or_default();
            if used.contains(&name) && !self.visible(meta.namespace.as_deref(), namespace) {
                out.push(format!(
                    "{kind} {}/{name} is ignored: an Application in namespace {namespace:?} sees definitions \
                     of its own namespace and of {:?} only",
                    meta.namespace.as_deref().unwrap_or_default(),
                    self.system_namespace
                ));
            }
        };
        for d in &self.components {
            check("ComponentDefinition", &d.metadata, &components);
        }
        for d in &self.traits {
            check("TraitDefinition", &d.metadata, &traits);
        }
        for d in &self.policies {
            check("PolicyDefinition", &d.metadata, &policies);
        }
        out
    }

    /// The definitions an Application of `namespace` renders with.
    pub fn visible_in(&self, namespace: &str) -> Definitions {
        let mut defs = Definitions::default();
        // Others first, so the Application's own namespace wins on a name clash.
        for own in [false, true] {
            let pick = |home: Option<String>| {
                (home.as_deref() == Some(namespace)) == own
                    && self.visible(home.as_deref(), namespace)
            };
            for d in &self.components {
                if pick(d.namespace()) {
                    defs.insert_component((**d).clone());
                }
            }
            for d in &self.traits {
                if pick(d.namespace()) {
                    defs.insert_trait((**d).clone());
                }
            }
            for d in &self.policies {
                if pick(d.namespace()) {
                    defs.insert_policy((**d).clone());
                }
            }
            for d in &self.workloads {
                if pick(d.namespace()) {
                    defs.insert_workload((**d).clone());
                }
            }
        }
        defs
    }

    /// A key that changes whenever a definition visible in `namespace` changes (uid and
    /// resourceVersion of each), for caches of derived grants.
    pub fn version_key(&self, namespace: &str) -> String {
        let mut key = String::new();
        let mut add =
            |home: Option<String>,
             meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
                if self.visible(home.as_deref(), namespace) {
                    key.push_str(meta.uid.as_deref().unwrap_or_default());
                    key.push('@');
                    key.push_str(meta.resource_version.as_deref().unwrap_or_default());
                    key.push(';');
                }
            };
        for d in &self.components {
            add(d.namespace(), &d.metadata);
        }
        for d in &self.traits {
            add(d.namespace(), &d.metadata);
        }
        for d in &self.policies {
            add(d.namespace(), &d.metadata);
        }
        for d in &self.workloads {
            add(d.namespace(), &d.metadata);
        }
        key
    }

    /// Adds a definition document (`core.oam.dev` ComponentDefinition, TraitDefinition,
    /// PolicyDefinition or WorkloadDefinition); returns whether it was one.
    pub fn insert_document(&mut self, doc: &serde_json::Value) -> Result<bool, RenderError> {
        fn parse<T: serde::de::DeserializeOwned>(
            doc: &serde_json::Value,
        ) -> Result<Arc<T>, RenderError> {
            serde_json::from_value(doc.clone())
                .map(Arc::new)
                .map_err(|e| RenderError::InvalidDefinition {
                    kind: doc["kind"].as_str().unwrap_or_default().to_string(),
                    name: doc["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    message: e.to_string(),
                })
        }
        if crate::kinds::group_of_manifest(doc) != crate::names::OAM_GROUP {
            return Ok(false);
        }
        match doc["kind"].as_str().unwrap_or_default() {
            "ComponentDefinition" => self.components.push(parse(doc)?),
            "TraitDefinition" => self.traits.push(parse(doc)?),
            "PolicyDefinition" => self.policies.push(parse(doc)?),
            "WorkloadDefinition" => self.workloads.push(parse(doc)?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}
