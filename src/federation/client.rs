//! The job side: `oam-trust login` (exchange the job's ID token, write a kubeconfig, print what was
//! granted), `oam-trust set-image` (patch one component's image, wait for the rollout) and
//! `oam-trust explain` (offline: which grant a token gets and why every other grant refused it, by the
//! same decision code as the exchange service).
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::http;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::{Api, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};

use super::decision::{self, Denial};
use super::server::ExchangeResponse;
use crate::access::{GitLabClaims, GrantInput, GrantSet, MatchOutcome, derive_grants, match_token};
use crate::api::oam::Application;
use crate::api::trust::GitLabTrust;
use crate::manifest::Manifests;
use crate::oidc::KeySet;

/// An RFC 6749 error answer, as the exchange sent it.
#[derive(Debug, Clone, serde::Deserialize, PartialEq, Eq)]
pub struct ExchangeErrorBody {
    pub error: String,
    #[serde(default)]
    pub error_description: String,
    #[serde(default)]
    pub correlation_id: String,
}

/// Why an exchange call failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeCallError {
    #[error("the token exchange refused ({}, HTTP {status}): {} (correlation id {})", body.error, body.error_description, body.correlation_id)]
    Refused {
        status: u16,
        body: ExchangeErrorBody,
    },
    #[error("calling the token exchange at {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("the token exchange at {url} answered HTTP {status} with an unreadable body")]
    Unreadable { url: String, status: u16 },
}

/// A client of `POST /v1/token`. Cheap to clone.
#[derive(Clone)]
pub struct ExchangeClient {
    url: String,
    client: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl ExchangeClient {
    /// A client for the exchange at `url` (`https://…`; `http://` only for a local or proxied service),
    /// trusting `ca_pem` when given, else the system roots.
    pub fn new(url: &str, ca_pem: Option<&str>) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_pem {
            Some(pem) => {
                for cert in crate::oidc::https::parse_ca_bundle(pem)? {
                    roots.add(cert).context("unusable CA certificate")?;
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(ExchangeClient {
            url: url.trim_end_matches('/').to_string(),
            client: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Exchanges `id_token`; `resource` and `requested_ttl` are optional.
    pub async fn exchange(
        &self,
        id_token: &str,
        resource: Option<&str>,
        requested_ttl: Option<Duration>,
    ) -> Result<ExchangeResponse, ExchangeCallError> {
        let ttl = requested_ttl.map(|t| t.as_secs().max(1).to_string());
        let mut form = vec![
            ("grant_type", decision::GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", id_token),
            ("subject_token_type", decision::TOKEN_TYPE_JWT),
        ];
        if let Some(r) = resource {
            form.push(("resource", r));
        }
        if let Some(t) = &ttl {
            form.push(("requested_ttl", t));
        }
        let body = serde_urlencoded::to_string(&form).map_err(|e| self.transport(e))?;
        self.post_form(body.into_bytes()).await
    }

    /// Posts a raw form body (tests send malformed ones).
    pub async fn post_form(&self, body: Vec<u8>) -> Result<ExchangeResponse, ExchangeCallError> {
        let url = format!("{}/v1/token", self.url);
        let request = hyper::Request::post(&url)
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.transport(e))?;
        let call = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| self.transport(e))?;
            let status = response.status().as_u16();
            let bytes = Limited::new(response.into_body(), 1024 * 1024)
                .collect()
                .await
                .map_err(|e| self.transport(e))?
                .to_bytes();
            Ok::<_, ExchangeCallError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .map_err(|_| self.transport("no answer within 60s"))??;
        if status == 200 {
            return serde_json::from_slice(&bytes).map_err(|_| ExchangeCallError::Unreadable {
                url: url.clone(),
                status,
            });
        }
        match serde_json::from_slice::<ExchangeErrorBody>(&bytes) {
            Ok(body) => Err(ExchangeCallError::Refused { status, body }),
            Err(_) => Err(ExchangeCallError::Unreadable { url, status }),
        }
    }

    fn transport(&self, e: impl std::fmt::Display) -> ExchangeCallError {
        ExchangeCallError::Transport {
            url: self.url.clone(),
            reason: e.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// login

/// `oam-trust login`: inside a GitLab job, exchange the ID token for a kubeconfig.
#[derive(clap::Args, Debug, Clone)]
pub struct LoginArgs {
    /// Base URL of the token exchange (e.g. https://oam-trust.example.com).
    #[arg(long, env = "OAM_TRUST_URL")]
    pub url: String,
    /// Environment variable holding the ID token (the name under the job's `id_tokens:`).
    #[arg(long, default_value = "ID_TOKEN")]
    pub token_env: String,
    /// `<namespace>/<application>[/<component>]`, when the job matches several grants.
    #[arg(long, env = "OAM_TRUST_RESOURCE")]
    pub resource: Option<String>,
    /// Requested lifetime (e.g. 10m); the grant's TTL and the ID token's own expiry cap it.
    #[arg(long, value_parser = crate::duration::parse)]
    pub ttl: Option<Duration>,
    /// Where to write the kubeconfig (mode 0600).
    #[arg(
        long,
        env = "OAM_TRUST_KUBECONFIG_OUT",
        default_value = "oam-trust.kubeconfig"
    )]
    pub kubeconfig_out: PathBuf,
    /// PEM CA bundle of the exchange's certificate (default: system roots).
    #[arg(long, env = "OAM_TRUST_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

fn describe_rules(rules: &[PolicyRule]) -> Vec<String> {
    rules
        .iter()
        .map(|r| {
            let groups: Vec<String> = r
                .api_groups
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|g| if g.is_empty() { "core".into() } else { g })
                .collect();
            let mut line = format!(
                "{} on {} ({})",
                r.verbs.join(","),
                r.resources.clone().unwrap_or_default().join(","),
                groups.join(",")
            );
            if let Some(names) = r.resource_names.as_ref().filter(|n| !n.is_empty()) {
                line.push_str(&format!(" named {}", names.join(",")));
            }
            line
        })
        .collect()
}

/// Runs `oam-trust login`.
pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let token = std::env::var(&args.token_env).map_err(|_| {
        anyhow::anyhow!(
            "environment variable {} is not set: declare it under the job's id_tokens: (with aud: set to the GitLabTrust's audience) or pass --token-env",
            args.token_env
        )
    })?;
    let ca = match &args.ca_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading --ca-file {}", p.display()))?,
        ),
        None => None,
    };
    if args.url.starts_with("http://") {
        eprintln!(
            "warning: {} is plain HTTP; the ID token and the issued token travel unencrypted",
            args.url
        );
    }
    let client = ExchangeClient::new(&args.url, ca.as_deref())?;
    let answer = client
        .exchange(token.trim(), args.resource.as_deref(), args.ttl)
        .await?;
    write_private(&args.kubeconfig_out, answer.kubeconfig.as_bytes())?;
    let g = &answer.grant;
    println!(
        "oam-trust: granted {} on Application {}/{}{}",
        g.grant,
        g.namespace,
        g.application,
        g.component
            .as_deref()
            .map(|c| format!(" (component {c})"))
            .unwrap_or_default()
    );
    println!("  ServiceAccount: {}/{}", g.namespace, g.service_account);
    for line in describe_rules(&g.rules) {
        println!("  may: {line}");
    }
    println!("  expires: {} (in {}s)", g.expires_at, answer.expires_in);
    println!(
        "  kubeconfig: {} (export KUBECONFIG={})",
        args.kubeconfig_out.display(),
        args.kubeconfig_out.display()
    );
    println!("  correlation id: {}", answer.correlation_id);
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing the kubeconfig to {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing the kubeconfig to {}", path.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// set-image

/// `oam-trust set-image`: change one component's image (what a deploy grant allows) and wait.
#[derive(clap::Args, Debug, Clone)]
pub struct SetImageArgs {
    /// `<component>=<image>`, one or more.
    #[arg(required = true, value_parser = parse_assignment)]
    pub images: Vec<(String, String)>,
    /// Application name (default: the kubeconfig's grant, from OAM_TRUST_APP).
    #[arg(long, env = "OAM_TRUST_APP")]
    pub app: String,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Wait until the Application runs the new generation.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits.
    #[arg(long, value_parser = crate::duration::parse, default_value = "5m")]
    pub timeout: Duration,
}

fn parse_assignment(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((c, i)) if !c.is_empty() && !i.is_empty() => Ok((c.to_string(), i.to_string())),
        _ => Err(format!("{s:?} is not <component>=<image>")),
    }
}

/// The JSON Patch that sets each component's `properties.image`, guarded by `test` ops on the
/// component names so a concurrent reorder cannot hit another component.
pub fn image_patch(app: &Application, images: &[(String, String)]) -> anyhow::Result<Value> {
    let mut ops = Vec::new();
    for (component, image) in images {
        let Some(i) = app
            .spec
            .components
            .iter()
            .position(|c| &c.name == component)
        else {
            let known: Vec<&str> = app
                .spec
                .components
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            bail!(
                "Application {} has no component {component:?} (components: {})",
                app.name_any(),
                known.join(", ")
            );
        };
        ops.push(
            json!({"op": "test", "path": format!("/spec/components/{i}/name"), "value": component}),
        );
        match &app.spec.components[i].properties {
            Some(Value::Object(_)) => ops.push(json!({
                "op": "add", "path": format!("/spec/components/{i}/properties/image"), "value": image
            })),
            _ => ops.push(json!({
                "op": "add", "path": format!("/spec/components/{i}/properties"), "value": {"image": image}
            })),
        }
    }
    Ok(Value::Array(ops))
}

/// Sets the images of `app`'s components with an RFC 6902 JSON Patch (a `test` of each component's
/// name, then its image alone): the only change a deploy grant's admission guard lets through.
pub async fn patch_images(
    client: &kube::Client,
    app: &Application,
    images: &[(String, String)],
) -> anyhow::Result<Application> {
    let namespace = app.namespace().unwrap_or_else(|| "default".into());
    let patch = image_patch(app, images)?;
    let url = format!(
        "/apis/{}/{}/namespaces/{namespace}/applications/{}",
        crate::names::OAM_GROUP,
        crate::names::OAM_VERSION,
        app.name_any()
    );
    let request = http::Request::patch(&url)
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(serde_json::to_vec(&patch)?)?;
    client
        .request(request)
        .await
        .with_context(|| format!("patching Application {namespace}/{}", app.name_any()))
}

/// Runs `oam-trust set-image`.
pub async fn set_image(args: SetImageArgs) -> anyhow::Result<()> {
    let config = kube::Config::infer().await.context(
        "finding Kubernetes credentials (run oam-trust login first and export KUBECONFIG)",
    )?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config)?;
    let apps: Api<Application> = Api::namespaced(client.clone(), &namespace);
    let app = apps
        .get(&args.app)
        .await
        .with_context(|| format!("reading Application {namespace}/{}", args.app))?;
    let patched = patch_images(&client, &app, &args.images).await?;
    let generation = patched.metadata.generation.unwrap_or_default();
    for (c, i) in &args.images {
        println!(
            "Application {namespace}/{}: component {c} image set to {i} (generation {generation})",
            args.app
        );
    }
    if !args.wait {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut last = String::new();
    loop {
        let app = apps
            .get(&args.app)
            .await
            .with_context(|| format!("reading Application {namespace}/{}", args.app))?;
        let status = app.status.clone().unwrap_or_default();
        let phase = status.status.clone().unwrap_or_else(|| "-".into());
        let observed = status.observed_generation.unwrap_or_default();
        let services: Vec<String> = status
            .services
            .iter()
            .map(|s| {
                format!(
                    "{}={}{}",
                    s.name,
                    if s.healthy { "healthy" } else { "unhealthy" },
                    s.message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let line = format!(
            "phase {phase}, observed generation {observed}/{generation}, {}",
            services.join(", ")
        );
        if line != last {
            println!("  {line}");
            last = line;
        }
        if observed >= generation && phase == "running" {
            println!(
                "Application {namespace}/{} is running generation {generation}",
                args.app
            );
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "Application {namespace}/{} did not reach phase running at generation {generation} within {}: {last}",
                args.app,
                crate::duration::format(args.timeout)
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

// ---------------------------------------------------------------------------------------------------
// explain

/// `oam-trust explain`: offline, which grant a token gets and why every other grant refused it.
#[derive(clap::Args, Debug, Clone)]
pub struct ExplainArgs {
    /// The ID token (compact JWT), or `-` to read it from stdin.
    #[arg(long)]
    pub token: String,
    /// The GitLabTrust manifest (may also hold the ceiling ClusterRole).
    #[arg(long)]
    pub trust: PathBuf,
    /// Applications (files or directories); Namespaces, ClusterRoles and definitions found here are used too.
    #[arg(short = 'f', long = "file", required = true)]
    pub files: Vec<PathBuf>,
    /// JWKS file to verify the signature with (default: the trust's static JWKS).
    #[arg(long, conflicts_with = "no_verify")]
    pub jwks: Option<PathBuf>,
    /// Judge the claims alone, without checking the signature or the token's times.
    #[arg(long)]
    pub no_verify: bool,
    /// `<namespace>/<application>[/<component>]`, as `login --resource`.
    #[arg(long)]
    pub resource: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: ExplainFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExplainFormat {
    Text,
    Json,
}

/// What `explain` found.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Explanation {
    pub trust: String,
    /// `verified`, `not verified (--no-verify)`, or the refusal.
    pub verification: String,
    pub granted: Option<ExplainedGrant>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// Every grant under the trust, and whether it matched or the first condition that refused it.
    pub grants: Vec<ExplainedGrant>,
    /// Declarations that produced no grant at all.
    pub refused_declarations: Vec<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ExplainedGrant {
    pub resource: String,
    pub grant: String,
    pub service_account: String,
    pub ttl: String,
    pub matched: bool,
    pub reason: Option<String>,
    pub rules: Vec<String>,
}

fn explained(
    grant: &crate::access::Grant,
    matched: bool,
    reason: Option<String>,
) -> ExplainedGrant {
    ExplainedGrant {
        resource: decision::resource_of(grant),
        grant: grant.id.clone(),
        service_account: grant.name.clone(),
        ttl: crate::duration::format(grant.ttl),
        matched,
        reason,
        rules: describe_rules(grant.role.rules.as_deref().unwrap_or_default()),
    }
}

/// The offline decision: the same `verify`, `match_token` and `decision::decide` as the exchange.
/// `keys = None` judges the claims alone.
pub fn explain_token(
    token: &str,
    trust: &GitLabTrust,
    keys: Option<&KeySet>,
    grants: &GrantSet,
    resource: Option<&str>,
    now: SystemTime,
) -> Explanation {
    let trust_name = trust.name_any();
    let mut out = Explanation {
        trust: trust_name.clone(),
        verification: String::new(),
        granted: None,
        error: None,
        error_description: None,
        grants: Vec::new(),
        refused_declarations: grants
            .refusals
            .iter()
            .map(|r| format!("{}: {}", r.declaration, r.message()))
            .collect(),
    };
    let deny = |out: &mut Explanation, d: Denial| {
        out.error = Some(d.code.as_str().to_string());
        // Offline, the operator of explain sees the precise reason.
        out.error_description = Some(d.detail);
    };
    let claims = match keys {
        Some(keys) => match crate::oidc::verify(token, trust, keys, now) {
            Ok(v) => {
                out.verification = format!(
                    "verified ({}, kid {})",
                    v.alg.as_str(),
                    v.header_kid.as_deref().unwrap_or("-")
                );
                Value::Object(v.claims)
            }
            Err(e) => {
                out.verification = format!("refused: {e}");
                deny(&mut out, decision::verify_denial(&e));
                return out;
            }
        },
        None => {
            out.verification = "not verified (--no-verify): signature, issuer, audience and times were not checked".into();
            match token
                .trim()
                .split('.')
                .nth(1)
                .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            {
                Some(v) => v,
                None => {
                    deny(
                        &mut out,
                        Denial::new(
                            decision::ErrorCode::InvalidRequest,
                            "malformed",
                            "the token is not a compact JWT with a JSON payload",
                        ),
                    );
                    return out;
                }
            }
        }
    };
    let claims = match GitLabClaims::from_json(claims) {
        Ok(c) => c,
        Err(e) => {
            deny(
                &mut out,
                Denial::new(
                    decision::ErrorCode::InvalidGrant,
                    "invalid_claim",
                    format!("the ID token's claims are not GitLab-shaped: {e}"),
                ),
            );
            return out;
        }
    };
    for grant in grants.grants.iter().filter(|g| g.trust == trust_name) {
        let single = GrantSet {
            grants: vec![grant.clone()],
            ..Default::default()
        };
        let entry = match match_token(&claims, trust, &single, resource) {
            MatchOutcome::Matched { .. } => explained(grant, true, None),
            MatchOutcome::NoMatch(m) => explained(grant, false, m.first().map(ToString::to_string)),
            MatchOutcome::TokenRefused(r) => explained(grant, false, Some(r.to_string())),
            MatchOutcome::Ambiguous(_) => explained(grant, true, None),
        };
        out.grants.push(entry);
    }
    let outcome = match_token(&claims, trust, grants, resource);
    match decision::decide(outcome, &trust_name, grants, resource) {
        Ok(grant) => out.granted = Some(explained(grant, true, None)),
        Err(d) => deny(&mut out, d),
    }
    out
}

/// Derives the grants of every Application in `manifests` under the trusts given. Namespaces without
/// a manifest are assumed to carry the labels the trusts' namespaceSelectors ask for.
pub fn offline_grants(manifests: &Manifests, trusts: &BTreeMap<String, GitLabTrust>) -> GrantSet {
    let mut ceilings = BTreeMap::new();
    let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for doc in &manifests.others {
        match doc.value["kind"].as_str() {
            Some("ClusterRole") => {
                if let Ok(cr) = serde_json::from_value::<ClusterRole>(doc.value.clone()) {
                    ceilings.insert(cr.name_any(), cr);
                }
            }
            Some("Namespace") => {
                if let Ok(ns) = serde_json::from_value::<Namespace>(doc.value.clone()) {
                    namespaces.insert(ns.name_any(), ns.labels().clone());
                }
            }
            _ => {}
        }
    }
    let assumed: BTreeMap<String, String> = trusts
        .values()
        .filter_map(|t| t.spec.namespace_selector.as_ref())
        .filter_map(|s| s.match_labels.clone())
        .flatten()
        .collect();
    let mut sets = Vec::new();
    for app in &manifests.applications {
        let ns = app.namespace().unwrap_or_else(|| "default".into());
        let labels = namespaces
            .get(&ns)
            .cloned()
            .unwrap_or_else(|| assumed.clone());
        let rendered =
            crate::render::render_application(app, &manifests.definitions).unwrap_or_default();
        sets.push(derive_grants(&GrantInput {
            application: app,
            namespace_labels: &labels,
            trusts,
            ceilings: &ceilings,
            rendered: &rendered,
        }));
    }
    GrantSet::merge(sets)
}

/// Runs `oam-trust explain`; fails (exit 1) when the token gets no grant.
pub fn explain_command(args: ExplainArgs) -> anyhow::Result<()> {
    let token = if args.token == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the token from stdin")?;
        s.trim().to_string()
    } else {
        args.token.trim().to_string()
    };
    let mut trust_docs = Manifests::default();
    trust_docs.add_path(&args.trust)?;
    let trust: GitLabTrust = trust_docs
        .others
        .iter()
        .find(|d| d.value["kind"] == "GitLabTrust")
        .map(|d| serde_json::from_value(d.value.clone()))
        .transpose()
        .with_context(|| format!("{}: invalid GitLabTrust", args.trust.display()))?
        .with_context(|| format!("{}: no GitLabTrust found", args.trust.display()))?;
    let mut manifests = Manifests::default();
    for path in &args.files {
        manifests.add_path(path)?;
    }
    manifests.others.extend(trust_docs.others.iter().cloned());
    let keys = if args.no_verify {
        None
    } else if let Some(path) = &args.jwks {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Some(
            KeySet::from_jwks_json(&bytes)
                .with_context(|| format!("{}: invalid JWKS", path.display()))?,
        )
    } else if let Some(jwks) = trust
        .spec
        .jwks
        .as_ref()
        .and_then(|j| j.static_jwks.as_deref())
    {
        Some(
            KeySet::from_jwks_json(jwks.as_bytes())
                .context("the trust's static JWKS is invalid")?,
        )
    } else {
        bail!(
            "explain is offline and trust {} fetches its keys: pass --jwks <file> (e.g. curl {}/oauth/discovery/keys) or --no-verify",
            trust.name_any(),
            trust.spec.issuer
        );
    };
    let trusts = BTreeMap::from([(trust.name_any(), trust.clone())]);
    let grants = offline_grants(&manifests, &trusts);
    let explanation = explain_token(
        &token,
        &trust,
        keys.as_ref(),
        &grants,
        args.resource.as_deref(),
        SystemTime::now(),
    );
    match args.output {
        ExplainFormat::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
        ExplainFormat::Text => print!("{}", explanation_text(&explanation)),
    }
    if explanation.granted.is_none() {
        bail!(
            "no grant: {}",
            explanation
                .error_description
                .as_deref()
                .unwrap_or("refused")
        );
    }
    Ok(())
}

fn explanation_text(e: &Explanation) -> String {
    let mut out = format!("trust {}: token {}\n", e.trust, e.verification);
    match (&e.granted, &e.error) {
        (Some(g), _) => {
            out.push_str(&format!(
                "GRANTED {} {} -> ServiceAccount {} for {}\n",
                g.resource, g.grant, g.service_account, g.ttl
            ));
            for r in &g.rules {
                out.push_str(&format!("  may: {r}\n"));
            }
        }
        (None, Some(code)) => out.push_str(&format!(
            "DENIED {code}: {}\n",
            e.error_description.as_deref().unwrap_or_default()
        )),
        (None, None) => {}
    }
    if !e.grants.is_empty() {
        out.push_str("grants:\n");
        for g in &e.grants {
            match &g.reason {
                None => out.push_str(&format!("  {} {}: matches\n", g.resource, g.grant)),
                Some(r) => out.push_str(&format!("  {} {}: refused: {r}\n", g.resource, g.grant)),
            }
        }
    }
    for r in &e.refused_declarations {
        out.push_str(&format!("declaration without grant: {r}\n"));
    }
    out
}
