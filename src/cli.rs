//! Command-line interface: one subcommand per user task. Each subcommand parses its arguments and
//! calls into the library; exit codes are 0 on success, 1 on failure, 2 on bad usage (clap's).
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(name = "oam-trust", version = crate::VERSION, about = "OAM Applications and GitLab CI identity federation for Kubernetes")]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "OAM_TRUST_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controllers and the token-exchange service against the cluster in KUBECONFIG (or in-cluster).
    Run(crate::runtime::RunArgs),
    /// Print every CRD of the project (generated from the Rust types), or write one file per CRD.
    Crd {
        /// Write `<plural>.<group>.yaml` files into this directory instead of printing to stdout.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Run a local OIDC issuer that mints GitLab-shaped CI ID tokens (tests, demos, trying a trust).
    DevIssuer(Box<crate::dev_issuer::DevIssuerArgs>),
    /// Offline dry-run: print the objects an Application renders to (`vela dry-run`).
    Render(crate::manifest::RenderArgs),
    /// Inside a GitLab job: exchange the job's ID token for a kubeconfig of its grant.
    Login(crate::federation::client::LoginArgs),
    /// Set component images of an Application (what a deploy grant allows) and wait for the rollout.
    SetImage(crate::set_image::SetImageArgs),
    /// Continue an Application's suspended workflow step (`vela workflow resume`): what an `approve` grant may do.
    Resume(crate::resume::ResumeArgs),
    /// An Application at a glance (`vela status`): phase, components, workflow, revision, grants, Events.
    Status(crate::status::StatusArgs),
    /// Restore the spec an ApplicationRevision recorded (a deploy grant: only images differ) and wait.
    ///
    /// Reads <app>-v<N> (--to-revision N; default: the newest revision before the current one),
    /// patches the Application's spec to it with the annotation oam-trust.dev/rollback-revision: N,
    /// under which the operator renders it with the definitions that revision recorded, and with
    /// --wait waits until the Application runs it. A deploy identity's rollback is judged by the
    /// deploy guard like any of its changes: refused unless only images differ.
    Rollback(crate::rollback::RollbackArgs),
    /// Offline: which grant an ID token gets, and why every other grant refused it.
    Explain(crate::explain::ExplainArgs),
    /// Offline: print the kube-apiserver AuthenticationConfiguration for trusts with federation.apiServer.
    ///
    /// The document (apiserver.config.k8s.io/v1, for kube-apiserver --authentication-config) lets
    /// GitLab CI jobs authenticate to the API server with their ID tokens: one JWT authenticator per
    /// GitLabTrust with federation.apiServer: true, whose CEL claim validation rules carry the trust's
    /// allow list and requirements, with username gitlab:ci_job:<job id> and the group
    /// oam-trust:grant:<namespace>:<grant> exactly when the job's claims satisfy that grant's
    /// gitlab-access declaration. Reads the same files as `render` (GitLabTrusts, Applications,
    /// definitions, Namespaces, ceiling ClusterRoles). Warnings go to stderr: trusts left out and why
    /// (static or uri JWKS, too many grants), subjects the API server cannot carry, and what it cannot
    /// do that the token exchange does (no replay protection, no TTL shorter than the ID token, no
    /// operator audit record). The exit code is 0 whenever the files parse.
    AuthnConfig(crate::authn_config::AuthnConfigArgs),
    /// Print the version and git revision.
    Version,
}

impl Cli {
    pub fn run(self) -> ExitCode {
        telemetry::init(self.log_format, "info,kube=warn,tower=warn,hyper=warn");
        let result = match self.command {
            Command::Run(args) => tokio_main(crate::runtime::run(args)),
            Command::Crd { out_dir } => print_crds(out_dir),
            Command::DevIssuer(args) => tokio_main(crate::dev_issuer::run(*args)),
            Command::Render(args) => crate::manifest::render_command(args),
            Command::Login(args) => tokio_main(crate::federation::client::login(args)),
            Command::SetImage(args) => tokio_main(crate::set_image::set_image(args)),
            Command::Resume(args) => tokio_main(crate::resume::resume(args)),
            Command::Status(args) => tokio_main(crate::status::status_command(args)),
            Command::Rollback(args) => tokio_main(crate::rollback::rollback(args)),
            Command::Explain(args) => crate::explain::explain_command(args),
            Command::AuthnConfig(args) => crate::authn_config::authn_config_command(args),
            Command::Version => {
                println!("oam-trust {}", crate::VERSION);
                Ok(())
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        }
    }
}

fn tokio_main(fut: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

fn print_crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    match out_dir {
        None => print!("{}", crate::api::crds_yaml()),
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            for (file, yaml) in crate::api::crd_files() {
                std::fs::write(dir.join(&file), yaml)?;
            }
        }
    }
    Ok(())
}
