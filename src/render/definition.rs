//! The definitions an Application is rendered against: the built-in types (always present) plus
//! ComponentDefinitions, TraitDefinitions, PolicyDefinitions and WorkloadDefinitions by name.
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::RenderError;
use crate::api::oam::{ComponentDefinition, PolicyDefinition, TraitDefinition, WorkloadDefinition};
use crate::names::OAM_GROUP;

/// Definitions by name. `Definitions::default()` holds the built-ins only (they need no object).
#[derive(Clone, Debug, Default)]
pub struct Definitions {
    components: BTreeMap<String, ComponentDefinition>,
    traits: BTreeMap<String, TraitDefinition>,
    policies: BTreeMap<String, PolicyDefinition>,
    workloads: BTreeMap<String, WorkloadDefinition>,
    /// The objects `ref-objects` components name, read from the cluster; `None` offline.
    referenced: Option<super::Referenced>,
}

impl Definitions {
    /// These definitions with the objects the Application's `ref-objects` name.
    pub fn with_referenced(mut self, referenced: Option<super::Referenced>) -> Self {
        self.referenced = referenced;
        self
    }

    pub(crate) fn referenced(&self) -> Option<&super::Referenced> {
        self.referenced.as_ref()
    }

    /// Reads every definition among `docs`; documents of other kinds are skipped.
    pub fn from_documents<'a>(
        docs: impl IntoIterator<Item = &'a Value>,
    ) -> Result<Self, RenderError> {
        let mut defs = Self::default();
        for doc in docs {
            defs.insert_document(doc)?;
        }
        Ok(defs)
    }

    /// Adds `doc` if it is a `core.oam.dev` definition; returns whether it was one.
    pub fn insert_document(&mut self, doc: &Value) -> Result<bool, RenderError> {
        if crate::kinds::group_of_manifest(doc) != OAM_GROUP {
            return Ok(false);
        }
        match doc["kind"].as_str().unwrap_or_default() {
            "ComponentDefinition" => self.insert_component(parse(doc)?),
            "TraitDefinition" => self.insert_trait(parse(doc)?),
            "PolicyDefinition" => self.insert_policy(parse(doc)?),
            "WorkloadDefinition" => self.insert_workload(parse(doc)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn insert_component(&mut self, def: ComponentDefinition) {
        self.components
            .insert(def.metadata.name.clone().unwrap_or_default(), def);
    }
    pub fn insert_trait(&mut self, def: TraitDefinition) {
        self.traits
            .insert(def.metadata.name.clone().unwrap_or_default(), def);
    }
    pub fn insert_policy(&mut self, def: PolicyDefinition) {
        self.policies
            .insert(def.metadata.name.clone().unwrap_or_default(), def);
    }
    pub fn insert_workload(&mut self, def: WorkloadDefinition) {
        self.workloads
            .insert(def.metadata.name.clone().unwrap_or_default(), def);
    }

    pub fn component(&self, name: &str) -> Option<&ComponentDefinition> {
        self.components.get(name)
    }
    pub fn trait_(&self, name: &str) -> Option<&TraitDefinition> {
        self.traits.get(name)
    }
    pub fn policy(&self, name: &str) -> Option<&PolicyDefinition> {
        self.policies.get(name)
    }
    pub fn workload(&self, name: &str) -> Option<&WorkloadDefinition> {
        self.workloads.get(name)
    }

    /// Number of definition objects held (built-ins not counted).
    pub fn len(&self) -> usize {
        self.components.len() + self.traits.len() + self.policies.len() + self.workloads.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Component types rendered natively.
pub fn builtin_component_types() -> &'static [&'static str] {
    &super::component::BUILTIN_COMPONENT_TYPES
}

/// Trait types rendered natively (plus `gitlab-access`, accepted and left to the access module).
pub fn builtin_trait_types() -> Vec<&'static str> {
    super::trait_::BUILTIN_TRAITS
        .iter()
        .map(|(name, _)| *name)
        .collect()
}

/// Policy types applied natively (plus `gitlab-access`).
pub fn builtin_policy_types() -> &'static [&'static str] {
    &super::policy::BUILTIN_POLICY_TYPES
}

fn parse<T: DeserializeOwned>(doc: &Value) -> Result<T, RenderError> {
    serde_json::from_value(doc.clone()).map_err(|e| RenderError::InvalidDefinition {
        kind: doc["kind"].as_str().unwrap_or_default().to_string(),
        name: doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        message: e.to_string(),
    })
}
