//! Reading manifests from files for the offline commands (`render`, `explain`): multi-document YAML or
//! JSON, files or directories, and the offline constructor of `access::World` from them. The only IO
//! around `render/` and `access/`, which stay pure.
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use crate::access::{DefinitionCatalog, MissingNamespace, World};
use crate::api::oam::Application;
use crate::render::Definitions;

/// Everything found in a set of manifests, by role.
#[derive(Debug)]
pub struct Manifests {
    /// Applications, in file and document order.
    pub applications: Vec<Application>,
    /// ComponentDefinitions, TraitDefinitions, PolicyDefinitions, WorkloadDefinitions, by name.
    pub definitions: Definitions,
    /// The same definitions with the namespaces they name (what `world` renders with). Its system
    /// namespace is `vela-system` unless set (`--definitions-namespace`).
    pub catalog: DefinitionCatalog,
    /// Every other document (GitLabTrust, ClusterRole …), kept for the commands that need them.
    pub others: Vec<Document>,
}

/// A document of a kind this module does not interpret, with where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    pub source: String,
    pub value: Value,
}

impl Default for Manifests {
    fn default() -> Self {
        Manifests {
            applications: Vec::new(),
            definitions: Definitions::default(),
            catalog: DefinitionCatalog::new(crate::names::DEFAULT_DEFINITIONS_NAMESPACE),
            others: Vec::new(),
        }
    }
}

impl Manifests {
    /// Sorts one document into applications, definitions or others.
    pub fn add(&mut self, source: &str, doc: Value) -> anyhow::Result<()> {
        if crate::kinds::group_of_manifest(&doc) == crate::names::OAM_GROUP
            && doc["kind"] == "Application"
        {
            let app: Application = serde_json::from_value(doc)
                .with_context(|| format!("{source}: invalid Application"))?;
            self.applications.push(app);
            return Ok(());
        }
        if self
            .definitions
            .insert_document(&doc)
            .with_context(|| format!("{source}: invalid definition"))?
        {
            self.catalog
                .insert_document(&doc)
                .with_context(|| format!("{source}: invalid definition"))?;
            return Ok(());
        }
        self.others.push(Document {
            source: source.to_string(),
            value: doc,
        });
        Ok(())
    }

    /// Adds every document of a YAML or JSON stream (`---`-separated; a JSON or YAML list of
    /// objects, or a `kind: List`, is flattened).
    pub fn add_text(&mut self, source: &str, text: &str) -> anyhow::Result<()> {
        for doc in parse_documents(text).with_context(|| format!("{source}: cannot parse"))? {
            self.add(source, doc)?;
        }
        Ok(())
    }

    /// Adds a file, or every `.yaml`/`.yml`/`.json` file under a directory (recursively, sorted).
    pub fn add_path(&mut self, path: &Path) -> anyhow::Result<()> {
        for file in manifest_files(path)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            self.add_text(&file.display().to_string(), &text)?;
        }
        Ok(())
    }
}

impl Manifests {
    /// The offline world: the GitLabTrusts, ClusterRoles, Namespaces and definitions among the
    /// manifests. A namespace without a manifest is assumed selected by the trusts (each declaration
    /// that relies on it gets a warning); see `access::world`. Also returns notes on documents that
    /// could not be used.
    pub fn world(&self) -> (World, Vec<String>) {
        let mut world = World {
            missing_namespace: MissingNamespace::AssumedSelected,
            definitions: self.catalog.clone(),
            ..World::default()
        };
        let mut notes = Vec::new();
        for doc in &self.others {
            let name = doc.value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let kind = doc.value["kind"].as_str().unwrap_or_default();
            let unusable = |e: serde_json::Error| {
                format!(
                    "note: {}: {kind} {name:?} is invalid and not used: {e}",
                    doc.source
                )
            };
            match kind {
                "GitLabTrust" => match serde_json::from_value(doc.value.clone()) {
                    Ok(trust) => {
                        world.trusts.insert(name, trust);
                    }
                    Err(e) => notes.push(unusable(e)),
                },
                "ClusterRole" => match serde_json::from_value(doc.value.clone()) {
                    Ok(role) => {
                        world.ceilings.insert(name, role);
                    }
                    Err(e) => notes.push(unusable(e)),
                },
                "Namespace" => match serde_json::from_value(doc.value.clone()) {
                    Ok(ns) => {
                        world.namespaces.insert(name, std::sync::Arc::new(ns));
                    }
                    Err(e) => notes.push(unusable(e)),
                },
                _ => {}
            }
        }
        (world, notes)
    }
}

/// The documents of a multi-document YAML (or JSON) text; empty documents are skipped.
pub fn parse_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(de)?;
        flatten(value, &mut out);
    }
    Ok(out)
}

fn flatten(value: Value, out: &mut Vec<Value>) {
    match value {
        Value::Null => {}
        Value::Array(items) => items.into_iter().for_each(|v| flatten(v, out)),
        Value::Object(mut map)
            if map.get("kind").and_then(Value::as_str) == Some("List")
                && map.get("items").is_some_and(Value::is_array) =>
        {
            if let Some(Value::Array(items)) = map.remove("items") {
                items.into_iter().for_each(|v| flatten(v, out));
            }
        }
        other => out.push(other),
    }
}

fn manifest_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !meta.is_dir() {
        bail!("{} is neither a file nor a directory", path.display());
    }
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list {}", path.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            files.extend(manifest_files(&entry)?);
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            files.push(entry);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_documents_by_role() {
        let mut m = Manifests::default();
        m.add_text(
            "test",
            r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {name: a}
spec: {components: []}
---
---
apiVersion: core.oam.dev/v1beta1
kind: TraitDefinition
metadata: {name: t}
spec: {}
---
apiVersion: oam-trust.dev/v1alpha1
kind: GitLabTrust
metadata: {name: g}
---
apiVersion: v1
kind: List
items:
  - {apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRole, metadata: {name: c}}
"#,
        )
        .unwrap();
        assert_eq!(m.applications.len(), 1);
        assert!(m.definitions.trait_("t").is_some());
        let kinds: Vec<_> = m.others.iter().map(|d| d.value["kind"].clone()).collect();
        assert_eq!(kinds, ["GitLabTrust", "ClusterRole"]);
    }

    #[test]
    fn reports_the_source_of_a_bad_application() {
        let mut m = Manifests::default();
        let err = m
            .add_text("app.yaml", "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata: {name: a}\nspec: {components: 3}\n")
            .unwrap_err();
        assert!(
            format!("{err:#}").starts_with("app.yaml: invalid Application"),
            "{err:#}"
        );
    }
}

/// `oam-trust render`: what `vela dry-run` does, offline.
#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// Application manifests (files or directories; multi-document YAML or JSON). Definitions found
    /// here are used too.
    #[arg(short = 'f', long = "file", required = true)]
    pub files: Vec<PathBuf>,
    /// Definition manifests (files or directories): ComponentDefinitions with a `kube` schematic, …
    #[arg(short = 'd', long = "definitions")]
    pub definitions: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
    pub output: OutputFormat,
    /// The system definitions namespace: definitions there (or naming no namespace) apply to every
    /// Application; definitions in another namespace only to that namespace's.
    #[arg(long, default_value = crate::names::DEFAULT_DEFINITIONS_NAMESPACE)]
    pub definitions_namespace: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Yaml,
    Json,
}

/// Renders every Application in `args.files` and prints the objects to stdout.
pub fn render_command(args: RenderArgs) -> anyhow::Result<()> {
    let mut manifests = Manifests::default();
    manifests.catalog.system_namespace = args.definitions_namespace.clone();
    for path in args.files.iter().chain(&args.definitions) {
        manifests.add_path(path)?;
    }
    if manifests.applications.is_empty() {
        bail!("no Application found in the files given with -f");
    }
    let (objects, notes) = render_all(&manifests)?;
    for note in notes {
        eprintln!("{note}");
    }
    print!("{}", format_objects(&objects, args.output)?);
    Ok(())
}

/// Every Application's rendered objects followed by its grant objects (the deploy guard's parameters,
/// then ServiceAccount, Role, RoleBinding per granted `gitlab-access` declaration), and notes for
/// stderr: refusals, warnings. Derived from the offline world (`Manifests::world`) by the same
/// function the operator derives with from the cluster.
pub fn render_all(manifests: &Manifests) -> anyhow::Result<(Vec<Value>, Vec<String>)> {
    let (world, mut notes) = manifests.world();
    let mut objects = Vec::new();
    for app in &manifests.applications {
        let name = app.metadata.name.as_deref().unwrap_or_default();
        notes.extend(
            world
                .definitions
                .invisible_to(app)
                .into_iter()
                .map(|n| format!("note: application {name:?}: {n}")),
        );
        let derived = world
            .derive(app)
            .with_context(|| format!("application {name:?}"))?;
        notes.extend(
            derived
                .warnings
                .iter()
                .map(|w| format!("warning: application {name:?} {w}")),
        );
        let set = &derived.grants;
        let grant_objects = crate::access::objects::objects_of(app, set, &derived.rendered);
        objects.extend(derived.rendered.into_iter().map(|o| o.object));
        objects.extend(grant_objects);
        for refusal in &set.refusals {
            notes.push(format!(
                "refused: application {name:?} {}: {}",
                refusal.declaration,
                refusal.message()
            ));
        }
        for warning in &set.warnings {
            notes.push(format!("warning: application {name:?} {warning}"));
        }
    }
    Ok((objects, notes))
}

/// A multi-document YAML stream, or a JSON list.
pub fn format_objects(objects: &[Value], format: OutputFormat) -> anyhow::Result<String> {
    match format {
        OutputFormat::Yaml => {
            let mut out = String::new();
            for object in objects {
                out.push_str("---\n");
                out.push_str(&serde_yaml_ng::to_string(object)?);
            }
            Ok(out)
        }
        OutputFormat::Json => Ok(serde_json::to_string_pretty(objects)? + "\n"),
    }
}
