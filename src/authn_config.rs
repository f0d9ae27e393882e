//! `oam-trust authn-config`: offline, the kube-apiserver structured authentication config
//! (`--authentication-config`) for the GitLabTrusts with `federation.apiServer: true` among the files,
//! from the grants of the Applications among them: `access::authn` over the offline world
//! (`Manifests::world`, the one `render` and `explain` use).
use std::path::PathBuf;

use crate::manifest::{Manifests, OutputFormat};

/// `oam-trust authn-config -f FILE|DIR ...`.
#[derive(clap::Args, Debug)]
pub struct AuthnConfigArgs {
    /// GitLabTrusts, Applications and definitions (files or directories; multi-document YAML or JSON).
    #[arg(short = 'f', long = "file", required = true)]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
    pub output: OutputFormat,
    /// The system definitions namespace (as `render --definitions-namespace`).
    #[arg(long, default_value = crate::names::DEFAULT_DEFINITIONS_NAMESPACE)]
    pub definitions_namespace: String,
}

/// Prints the document to stdout and the warnings to stderr.
pub fn authn_config_command(args: AuthnConfigArgs) -> anyhow::Result<()> {
    let mut manifests = Manifests::default();
    manifests.catalog.system_namespace = args.definitions_namespace.clone();
    for path in &args.files {
        manifests.add_path(path)?;
    }
    let (world, notes) = manifests.world();
    let config = crate::access::authentication_config(&world, &manifests.applications);
    for note in notes {
        eprintln!("{note}");
    }
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    let text = match args.output {
        OutputFormat::Yaml => serde_yaml_ng::to_string(&config.document)?,
        OutputFormat::Json => serde_json::to_string_pretty(&config.document)? + "\n",
    };
    print!("{text}");
    Ok(())
}
