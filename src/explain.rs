//! `oam-trust explain`: offline, which grant an ID token gets and why every other grant refused it.
//! Derives grants from the offline world (`Manifests::world`) and decides with the exchange's own
//! code (`oidc::verify`, `access::match_token`, `federation::decision::decide`).
use std::io::Read as _;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use kube::ResourceExt;
use serde::Serialize;
use serde_json::Value;

use crate::access::{GitLabClaims, GrantSet, MatchOutcome, match_token};
use crate::api::trust::GitLabTrust;
use crate::federation::decision::{self, Denial};
use crate::manifest::Manifests;
use crate::oidc::KeySet;

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
    /// The system definitions namespace (as `render --definitions-namespace`).
    #[arg(long, default_value = crate::names::DEFAULT_DEFINITIONS_NAMESPACE)]
    pub definitions_namespace: String,
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
        rules: crate::access::rules::describe(grant.role.rules.as_deref().unwrap_or_default()),
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
            match crate::oidc::JwtParts::split(token).and_then(|parts| parts.claims()) {
                Ok(claims) => Value::Object(claims),
                Err(_) => {
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

/// The grants of every Application in `manifests`, derived from the offline world
/// (`Manifests::world`, the same one `render` uses), with `trust` taking the place of any trust of
/// its name among the manifests.
pub fn offline_grants(manifests: &Manifests, trust: &GitLabTrust) -> GrantSet {
    let (mut world, _) = manifests.world();
    world.trusts.insert(trust.name_any(), trust.clone());
    GrantSet::merge(
        manifests
            .applications
            .iter()
            .map(|app| world.derive(app).map(|d| d.grants).unwrap_or_default()),
    )
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
    manifests.catalog.system_namespace = args.definitions_namespace.clone();
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
    let grants = offline_grants(&manifests, &trust);
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
