//! `oam-trust dev-issuer`: serve an issuer (the default), or ask a running one to mint or rotate over
//! HTTPS, trusting only its CA.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::error::io_err;
use super::keys::KeyKind;
use super::mint::{MintAlgorithm, MintRequest};
use super::server::{DevIssuer, DevIssuerOptions};
use crate::oidc::https::HttpsClient;

/// `oam-trust dev-issuer`: serve (default), or talk to a running one.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DevIssuerArgs {
    #[command(subcommand)]
    pub command: Option<DevIssuerCommand>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum DevIssuerCommand {
    /// Serve the issuer (the default).
    Serve(ServeArgs),
    /// Ask a running dev-issuer for a token and print it.
    Mint(MintArgs),
    /// Ask a running dev-issuer to replace a signing key; prints the new kid.
    Rotate(RotateArgs),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks one. The URL is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Issuer URL (`iss`), when it is reached under another name than the listen address.
    #[arg(long)]
    pub issuer_url: Option<String>,
    /// Write the CA certificate (PEM) here, for the trust's jwks.caBundle or curl --cacert.
    #[arg(long)]
    pub ca_out: Option<PathBuf>,
    /// Keep keys and CA here so a restart serves the same ones.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Default audience of minted tokens.
    #[arg(long, default_value = "https://oam-trust.example")]
    pub audience: String,
    /// Default lifetime of minted tokens.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub lifetime: Duration,
    /// Extra DNS name or IP for the serving certificate (repeatable).
    #[arg(long = "san")]
    pub extra_sans: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// URL of the running dev-issuer.
    #[arg(long, env = "OAM_TRUST_DEV_ISSUER_URL")]
    pub url: String,
    /// CA certificate of the dev-issuer (its --ca-out file).
    #[arg(long, env = "OAM_TRUST_DEV_ISSUER_CA")]
    pub ca: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct MintArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Claim override as a string, GitLab-style (`project_id=42`, `ref_protected=false`); repeatable.
    #[arg(long = "claim", value_parser = parse_pair)]
    pub claims: Vec<(String, String)>,
    /// Claim override as raw JSON (`runner_id=55`, `environment=null` removes it); repeatable.
    #[arg(long = "claim-json", value_parser = parse_pair)]
    pub json_claims: Vec<(String, String)>,
    /// Audience (repeat for an array).
    #[arg(long = "aud")]
    pub audiences: Vec<String>,
    #[arg(long, value_parser = parse_duration)]
    pub lifetime: Option<Duration>,
    #[arg(long, value_enum, default_value = "rsa")]
    pub key: KeyKind,
    #[arg(long, value_enum)]
    pub alg: Option<MintAlgorithm>,
}

#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long, value_enum, default_value = "rsa")]
    pub key: KeyKind,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text).map_err(|e| e.to_string())
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected name=value, got {text:?}"))
}

/// Runs the `dev-issuer` subcommand.
pub async fn run(args: DevIssuerArgs) -> anyhow::Result<()> {
    match args.command {
        None => serve_cli(args.serve).await,
        Some(DevIssuerCommand::Serve(serve)) => serve_cli(serve).await,
        Some(DevIssuerCommand::Mint(mint)) => mint_cli(mint).await,
        Some(DevIssuerCommand::Rotate(rotate)) => rotate_cli(rotate).await,
    }
}

async fn serve_cli(args: ServeArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "dev-issuer listens beyond loopback: anyone who reaches /mint gets a token");
    }
    let issuer = DevIssuer::start(DevIssuerOptions {
        listen: args.listen,
        issuer_url: args.issuer_url,
        state_dir: args.state_dir,
        audience: args.audience,
        lifetime: args.lifetime,
        extra_sans: args.extra_sans,
    })
    .await?;
    if let Some(path) = &args.ca_out {
        std::fs::write(path, issuer.ca_pem()).map_err(io_err(path))?;
    }
    println!("{}", issuer.url());
    tracing::info!(url = issuer.url(), rsa_kid = %issuer.kid(KeyKind::Rsa), ec_kid = %issuer.kid(KeyKind::Ec), "dev-issuer serving");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

fn client_for(args: &ClientArgs) -> anyhow::Result<HttpsClient> {
    let ca = std::fs::read_to_string(&args.ca).map_err(io_err(&args.ca))?;
    Ok(HttpsClient::new(
        Some(&ca),
        Duration::from_secs(30),
        64 * 1024,
    )?)
}

async fn mint_cli(args: MintArgs) -> anyhow::Result<()> {
    let mut req = MintRequest::new().key(args.key);
    req.alg = args.alg;
    req.lifetime_seconds = args.lifetime.map(|d| d.as_secs());
    req.aud = match args.audiences.len() {
        0 => None,
        1 => Some(Value::String(args.audiences[0].clone())),
        _ => Some(args.audiences.iter().cloned().collect()),
    };
    for (name, value) in args.claims {
        req = req.claim(&name, value);
    }
    for (name, value) in args.json_claims {
        let value: Value = serde_json::from_str(&value)
            .map_err(|e| anyhow::anyhow!("--claim-json {name}: not JSON: {e}"))?;
        req = req.claim_json(&name, value);
    }
    let client = client_for(&args.client)?;
    let url = format!("{}/mint", args.client.url.trim_end_matches('/'));
    let token = client.post_json(&url, serde_json::to_vec(&req)?).await?;
    println!("{}", String::from_utf8_lossy(&token).trim());
    Ok(())
}

async fn rotate_cli(args: RotateArgs) -> anyhow::Result<()> {
    let client = client_for(&args.client)?;
    let url = format!("{}/rotate", args.client.url.trim_end_matches('/'));
    let body = client
        .post_json(&url, serde_json::to_vec(&json!({ "key": args.key }))?)
        .await?;
    let reply: Value = serde_json::from_slice(&body)?;
    println!(
        "{}",
        reply.get("kid").and_then(Value::as_str).unwrap_or_default()
    );
    Ok(())
}
