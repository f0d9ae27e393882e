//! dev-issuer: a local OIDC issuer that mints GitLab-shaped CI ID tokens, for tests, demos and trying a
//! GitLabTrust before going live. It serves HTTPS with its own CA (written out for the trust's
//! `jwks.caBundle`), GitLab's discovery and JWKS paths, and `POST /mint` / `POST /rotate`.
//!
//! Never for production: anyone who reaches `/mint` gets a token. It listens on loopback by default.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use rand::RngCore;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Why the dev issuer could not start or mint.
#[derive(Debug, thiserror::Error)]
pub enum DevIssuerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("key: {0}")]
    Key(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("mint request: {0}")]
    BadRequest(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DevIssuerError + '_ {
    move |source| DevIssuerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Kind of signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// RSA 2048, RS256 (what GitLab uses).
    #[default]
    Rsa,
    /// EC P-256, ES256.
    Ec,
}

/// Signature algorithm of a minted token, including deliberately bad ones for negative tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum MintAlgorithm {
    RS256,
    ES256,
    /// Unsigned (`alg: none`, empty signature).
    #[serde(rename = "none")]
    #[value(name = "none")]
    None,
    /// HS256 keyed with the chosen key's public key PEM: the classic key-confusion attack.
    #[serde(rename = "HS256-public-key")]
    #[value(name = "HS256-public-key")]
    Hs256PublicKey,
}

/// What to mint. Claims override the GitLab-shaped defaults; a `null` claim removes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MintRequest {
    pub claims: Map<String, Value>,
    /// `exp - iat`; default the issuer's lifetime (5 minutes, GitLab's default).
    pub lifetime_seconds: Option<u64>,
    /// `aud`: a string or an array of strings; default the issuer's audience.
    pub aud: Option<Value>,
    pub key: KeyKind,
    /// Default: RS256 for an RSA key, ES256 for an EC key.
    pub alg: Option<MintAlgorithm>,
    /// Header `kid` instead of the signing key's own.
    pub kid: Option<String>,
    /// Leave `kid` out of the header.
    pub omit_kid: bool,
}

impl MintRequest {
    pub fn new() -> Self {
        MintRequest::default()
    }

    /// Sets a claim to a string, the way GitLab types ids and booleans.
    pub fn claim(mut self, name: &str, value: impl Into<String>) -> Self {
        self.claims.insert(name.into(), Value::String(value.into()));
        self
    }

    /// Sets a claim to any JSON value (`Value::Null` removes the claim).
    pub fn claim_json(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.aud = Some(Value::String(aud.into()));
        self
    }

    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime_seconds = Some(lifetime.as_secs());
        self
    }

    pub fn key(mut self, key: KeyKind) -> Self {
        self.key = key;
        self
    }

    pub fn alg(mut self, alg: MintAlgorithm) -> Self {
        self.alg = Some(alg);
        self
    }

    pub fn kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    pub fn omit_kid(mut self) -> Self {
        self.omit_kid = true;
        self
    }
}

/// How to run a dev issuer.
#[derive(Debug, Clone)]
pub struct DevIssuerOptions {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// `iss` and base URL; default `https://<listen address>`.
    pub issuer_url: Option<String>,
    /// Keys and CA are kept here so a restart keeps them.
    pub state_dir: Option<PathBuf>,
    /// Default `aud`.
    pub audience: String,
    /// Default `exp - iat`.
    pub lifetime: Duration,
    /// Extra DNS names or IPs for the serving certificate.
    pub extra_sans: Vec<String>,
}

impl Default for DevIssuerOptions {
    fn default() -> Self {
        DevIssuerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            issuer_url: None,
            state_dir: None,
            audience: "https://oam-trust.example".into(),
            lifetime: Duration::from_secs(300),
            extra_sans: Vec::new(),
        }
    }
}

struct SigningKey {
    kind: KeyKind,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
    public_pem: String,
    private_pem: String,
}

impl SigningKey {
    fn generate(kind: KeyKind) -> Result<SigningKey, DevIssuerError> {
        match kind {
            KeyKind::Rsa => {
                let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                    .map_err(|e| DevIssuerError::Key(e.to_string()))?;
                let pem = key
                    .to_pkcs1_pem(LineEnding::LF)
                    .map_err(|e| DevIssuerError::Key(e.to_string()))?;
                SigningKey::from_pem(kind, &pem)
            }
            KeyKind::Ec => {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| DevIssuerError::Key(e.to_string()))?;
                SigningKey::from_pem(kind, &key.serialize_pem())
            }
        }
    }

    fn from_pem(kind: KeyKind, private_pem: &str) -> Result<SigningKey, DevIssuerError> {
        let key_err = |e: &dyn std::fmt::Display| DevIssuerError::Key(format!("{kind:?} key: {e}"));
        let (encoding, mut jwk, public_pem) = match kind {
            KeyKind::Rsa => {
                let key =
                    rsa::RsaPrivateKey::from_pkcs1_pem(private_pem).map_err(|e| key_err(&e))?;
                let public = key.to_public_key();
                let jwk = json!({
                    "kty": "RSA",
                    "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
                    "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                });
                let public_pem = public
                    .to_public_key_pem(LineEnding::LF)
                    .map_err(|e| key_err(&e))?;
                let encoding =
                    EncodingKey::from_rsa_pem(private_pem.as_bytes()).map_err(|e| key_err(&e))?;
                (encoding, jwk, public_pem)
            }
            KeyKind::Ec => {
                let key = rcgen::KeyPair::from_pem(private_pem).map_err(|e| key_err(&e))?;
                let raw = key.public_key_raw();
                if raw.len() != 65 || raw[0] != 4 {
                    return Err(DevIssuerError::Key(
                        "EC key is not an uncompressed P-256 point".into(),
                    ));
                }
                let jwk = json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&raw[33..]),
                });
                let encoding =
                    EncodingKey::from_ec_pem(private_pem.as_bytes()).map_err(|e| key_err(&e))?;
                (encoding, jwk, key.public_key_pem())
            }
        };
        // RFC 7638 thumbprint: SHA-256 of the required members in lexicographic order (serde_json sorts).
        let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(jwk.to_string().as_bytes()));
        let alg = match kind {
            KeyKind::Rsa => "RS256",
            KeyKind::Ec => "ES256",
        };
        if let Value::Object(members) = &mut jwk {
            members.insert("kid".into(), thumbprint.clone().into());
            members.insert("use".into(), "sig".into());
            members.insert("alg".into(), alg.into());
        }
        Ok(SigningKey {
            kind,
            kid: thumbprint,
            encoding,
            jwk,
            public_pem,
            private_pem: private_pem.to_string(),
        })
    }
}

struct Shared {
    issuer: String,
    audience: String,
    lifetime: Duration,
    state_dir: Option<PathBuf>,
    keys: Mutex<BTreeMap<&'static str, SigningKey>>,
    jwks_available: AtomicBool,
    jwks_requests: AtomicU64,
    discovery_requests: AtomicU64,
    minted: AtomicU64,
}

fn key_slot(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Rsa => "rsa",
        KeyKind::Ec => "ec",
    }
}

impl Shared {
    fn lock_keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, SigningKey>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn jwks(&self) -> Value {
        let keys: Vec<Value> = self.lock_keys().values().map(|k| k.jwk.clone()).collect();
        json!({ "keys": keys })
    }

    fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/oauth/discovery/keys", self.issuer),
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public", "pairwise"],
            "scopes_supported": ["openid"],
            "claims_supported": GITLAB_CLAIMS,
        })
    }

    fn rotate(&self, kind: KeyKind) -> Result<String, DevIssuerError> {
        let key = SigningKey::generate(kind)?;
        if let Some(dir) = &self.state_dir {
            write_private(&dir.join(key_file(kind)), &key.private_pem)?;
        }
        let kid = key.kid.clone();
        self.lock_keys().insert(key_slot(kind), key);
        Ok(kid)
    }

    fn mint(&self, req: &MintRequest) -> Result<String, DevIssuerError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let lifetime = req.lifetime_seconds.unwrap_or(self.lifetime.as_secs());
        let serial = self.minted.fetch_add(1, Ordering::Relaxed);
        let mut claims = gitlab_claims(&self.issuer, serial);
        claims.insert(
            "aud".into(),
            req.aud
                .clone()
                .unwrap_or_else(|| self.audience.clone().into()),
        );
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.saturating_sub(5).into());
        claims.insert("exp".into(), (now + lifetime).into());
        let overridden = |name: &str| req.claims.contains_key(name);
        // Keep derived claims consistent with overridden ones, as GitLab would.
        if !overridden("namespace_path")
            && let Some(Value::String(path)) = req.claims.get("project_path")
        {
            let ns = path.rsplit_once('/').map_or("", |(ns, _)| ns).to_string();
            claims.insert("namespace_path".into(), ns.clone().into());
            claims.insert("job_namespace_path".into(), ns.into());
            claims.insert("job_project_path".into(), path.clone().into());
        }
        for (name, value) in &req.claims {
            if value.is_null() {
                claims.remove(name);
            } else {
                claims.insert(name.clone(), value.clone());
            }
        }
        let text = |claims: &Map<String, Value>, name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        if !overridden("ref_path") && claims.contains_key("ref_path") {
            let prefix = if text(&claims, "ref_type") == "tag" {
                "refs/tags/"
            } else {
                "refs/heads/"
            };
            let ref_path = format!("{prefix}{}", text(&claims, "ref"));
            claims.insert("ref_path".into(), ref_path.into());
        }
        if !overridden("sub") {
            let sub = format!(
                "project_path:{}:ref_type:{}:ref:{}",
                text(&claims, "project_path"),
                text(&claims, "ref_type"),
                text(&claims, "ref")
            );
            claims.insert("sub".into(), sub.into());
        }

        let keys = self.lock_keys();
        let key = keys
            .get(key_slot(req.key))
            .ok_or_else(|| DevIssuerError::Key(format!("no {:?} key", req.key)))?;
        let alg = req.alg.unwrap_or(match key.kind {
            KeyKind::Rsa => MintAlgorithm::RS256,
            KeyKind::Ec => MintAlgorithm::ES256,
        });
        let alg_name = match alg {
            MintAlgorithm::RS256 => "RS256",
            MintAlgorithm::ES256 => "ES256",
            MintAlgorithm::None => "none",
            MintAlgorithm::Hs256PublicKey => "HS256",
        };
        let mut header = Map::new();
        header.insert("alg".into(), alg_name.into());
        header.insert("typ".into(), "JWT".into());
        if !req.omit_kid {
            header.insert(
                "kid".into(),
                req.kid.clone().unwrap_or_else(|| key.kid.clone()).into(),
            );
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let signature = match alg {
            MintAlgorithm::None => String::new(),
            MintAlgorithm::Hs256PublicKey => jsonwebtoken::crypto::sign(
                signing_input.as_bytes(),
                &EncodingKey::from_secret(key.public_pem.as_bytes()),
                Algorithm::HS256,
            )
            .map_err(|e| DevIssuerError::Key(e.to_string()))?,
            MintAlgorithm::RS256 | MintAlgorithm::ES256 => {
                let jwt_alg = if alg == MintAlgorithm::RS256 {
                    Algorithm::RS256
                } else {
                    Algorithm::ES256
                };
                jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key.encoding, jwt_alg)
                    .map_err(|e| {
                        DevIssuerError::BadRequest(format!(
                            "cannot sign {alg_name} with the {:?} key: {e}",
                            key.kind
                        ))
                    })?
            }
        };
        Ok(format!("{signing_input}.{signature}"))
    }
}

/// Every claim GitLab puts in a CI ID token (reference §1.3), for discovery's `claims_supported`.
const GITLAB_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "namespace_id",
    "namespace_path",
    "project_id",
    "project_path",
    "job_namespace_id",
    "job_namespace_path",
    "job_project_id",
    "job_project_path",
    "user_id",
    "user_login",
    "user_email",
    "user_access_level",
    "pipeline_id",
    "pipeline_source",
    "job_id",
    "ref",
    "ref_type",
    "ref_path",
    "ref_protected",
    "environment",
    "environment_protected",
    "deployment_tier",
    "environment_action",
    "runner_id",
    "runner_environment",
    "sha",
    "project_visibility",
    "ci_config_ref_uri",
    "ci_config_sha",
];

/// Default claims of a protected deploy job, typed as GitLab types them (ids and booleans as strings,
/// `runner_id` a number). `serial` makes job and pipeline ids differ between tokens.
fn gitlab_claims(issuer: &str, serial: u64) -> Map<String, Value> {
    let host = issuer.trim_start_matches("https://");
    let sha = "714a629c0b401fdce83e847fc9589983fc6f46bc";
    let claims = json!({
        "iss": issuer,
        "jti": uuid_v4(),
        "namespace_id": "72",
        "namespace_path": "platform",
        "project_id": "1450",
        "project_path": "platform/payments-api",
        "job_namespace_id": "72",
        "job_namespace_path": "platform",
        "job_project_id": "1450",
        "job_project_path": "platform/payments-api",
        "user_id": "311",
        "user_login": "alice",
        "user_email": "alice@example.com",
        "user_access_level": "maintainer",
        "pipeline_id": (98012 + serial).to_string(),
        "pipeline_source": "push",
        "job_id": (771234 + serial).to_string(),
        "ref": "main",
        "ref_type": "branch",
        "ref_path": "refs/heads/main",
        "ref_protected": "true",
        "environment": "production",
        "environment_protected": "true",
        "deployment_tier": "production",
        "environment_action": "start",
        "runner_id": 55,
        "runner_environment": "self-hosted",
        "sha": sha,
        "project_visibility": "private",
        "ci_config_ref_uri": format!("{host}/platform/payments-api//.gitlab-ci.yml@refs/heads/main"),
        "ci_config_sha": sha,
    });
    match claims {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn key_file(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Rsa => "signing-rsa.pem",
        KeyKind::Ec => "signing-ec.pem",
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), DevIssuerError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn load_or_generate_key(dir: Option<&Path>, kind: KeyKind) -> Result<SigningKey, DevIssuerError> {
    if let Some(dir) = dir {
        let path = dir.join(key_file(kind));
        match std::fs::read_to_string(&path) {
            Ok(pem) => return SigningKey::from_pem(kind, &pem),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        let key = SigningKey::generate(kind)?;
        write_private(&path, &key.private_pem)?;
        return Ok(key);
    }
    SigningKey::generate(kind)
}

fn ca_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "oam-trust dev-issuer CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params
}

struct TlsMaterial {
    ca_pem: String,
    server: rustls::ServerConfig,
}

/// The CA (kept in the state dir when given) and a fresh serving certificate for `sans`.
fn tls_material(dir: Option<&Path>, sans: Vec<String>) -> Result<TlsMaterial, DevIssuerError> {
    let tls = |e: &dyn std::fmt::Display| DevIssuerError::Tls(e.to_string());
    let stored = |name: &str| -> Result<Option<String>, DevIssuerError> {
        let Some(dir) = dir else { return Ok(None) };
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    };
    let (ca_key, ca_pem) = match (stored("ca.key.pem")?, stored("ca.pem")?) {
        (Some(key), Some(cert)) => (rcgen::KeyPair::from_pem(&key).map_err(|e| tls(&e))?, cert),
        _ => {
            let key = rcgen::KeyPair::generate().map_err(|e| tls(&e))?;
            let cert = ca_params().self_signed(&key).map_err(|e| tls(&e))?.pem();
            if let Some(dir) = dir {
                write_private(&dir.join("ca.key.pem"), &key.serialize_pem())?;
                std::fs::write(dir.join("ca.pem"), &cert).map_err(io_err(&dir.join("ca.pem")))?;
            }
            (key, cert)
        }
    };
    let issuer = rcgen::Issuer::new(ca_params(), ca_key);
    let mut params = rcgen::CertificateParams::new(sans).map_err(|e| tls(&e))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "oam-trust dev-issuer");
    params.use_authority_key_identifier_extension = true;
    params
        .extended_key_usages
        .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let leaf_key = rcgen::KeyPair::generate().map_err(|e| tls(&e))?;
    let leaf = params.signed_by(&leaf_key, &issuer).map_err(|e| tls(&e))?;
    let key_der = rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der());
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls(&e))?
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key_der.into())
    .map_err(|e| tls(&e))?;
    Ok(TlsMaterial { ca_pem, server })
}

/// A running dev issuer. Dropping it stops the server.
pub struct DevIssuer {
    shared: Arc<Shared>,
    ca_pem: String,
    local_addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("url", &self.shared.issuer)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl DevIssuer {
    /// Loads or creates keys and CA, binds, and serves in the background on the current tokio runtime.
    pub async fn start(opts: DevIssuerOptions) -> Result<DevIssuer, DevIssuerError> {
        if let Some(dir) = &opts.state_dir {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| DevIssuerError::Bind {
                addr: opts.listen,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| DevIssuerError::Bind {
                addr: opts.listen,
                source,
            })?;
        let issuer = opts
            .issuer_url
            .clone()
            .unwrap_or_else(|| format!("https://{local_addr}"))
            .trim_end_matches('/')
            .to_string();
        let mut sans = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        if let Some(host) = url_host(&issuer) {
            sans.push(host);
        }
        sans.extend(opts.extra_sans.iter().cloned());
        sans.sort();
        sans.dedup();

        let dir = opts.state_dir.clone();
        let (tls, keys) = tokio::task::spawn_blocking(move || {
            let tls = tls_material(dir.as_deref(), sans)?;
            let mut keys = BTreeMap::new();
            for kind in [KeyKind::Rsa, KeyKind::Ec] {
                keys.insert(key_slot(kind), load_or_generate_key(dir.as_deref(), kind)?);
            }
            Ok::<_, DevIssuerError>((tls, keys))
        })
        .await
        .map_err(|e| DevIssuerError::Key(e.to_string()))??;

        let shared = Arc::new(Shared {
            issuer,
            audience: opts.audience,
            lifetime: opts.lifetime,
            state_dir: opts.state_dir,
            keys: Mutex::new(keys),
            jwks_available: AtomicBool::new(true),
            jwks_requests: AtomicU64::new(0),
            discovery_requests: AtomicU64::new(0),
            minted: AtomicU64::new(0),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls.server));
        let server = tokio::spawn(serve(listener, acceptor, router(shared.clone())));
        Ok(DevIssuer {
            shared,
            ca_pem: tls.ca_pem,
            local_addr,
            server,
        })
    }

    /// The issuer URL (`iss` of minted tokens), e.g. `https://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.shared.issuer
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// PEM of the CA that signed the serving certificate: the trust's `jwks.caBundle`.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Mints a compact JWT.
    pub fn mint(&self, req: &MintRequest) -> Result<String, DevIssuerError> {
        self.shared.mint(req)
    }

    /// Replaces the key of `kind` with a new one (no overlap, as GitLab does); returns the new `kid`.
    pub fn rotate_key(&self, kind: KeyKind) -> Result<String, DevIssuerError> {
        self.shared.rotate(kind)
    }

    /// The `kid` of the current key of `kind`.
    pub fn kid(&self, kind: KeyKind) -> String {
        self.shared
            .lock_keys()
            .get(key_slot(kind))
            .map(|k| k.kid.clone())
            .unwrap_or_default()
    }

    /// The published JWKS document.
    pub fn jwks_json(&self) -> String {
        self.shared.jwks().to_string()
    }

    /// While false, the JWKS endpoint answers 503 (to test fetch failures).
    pub fn set_jwks_available(&self, available: bool) {
        self.shared
            .jwks_available
            .store(available, Ordering::SeqCst);
    }

    /// Requests served on the JWKS endpoint so far.
    pub fn jwks_requests(&self) -> u64 {
        self.shared.jwks_requests.load(Ordering::SeqCst)
    }

    /// Requests served on the discovery endpoint so far.
    pub fn discovery_requests(&self) -> u64 {
        self.shared.discovery_requests.load(Ordering::SeqCst)
    }
}

fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_string())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oauth/discovery/keys", get(jwks))
        .route("/-/jwks", get(jwks))
        .route("/mint", post(mint))
        .route("/rotate", post(rotate))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared)
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    shared.discovery_requests.fetch_add(1, Ordering::SeqCst);
    axum::Json(shared.discovery()).into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_requests.fetch_add(1, Ordering::SeqCst);
    if !shared.jwks_available.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "JWKS switched off\n").into_response();
    }
    (
        [(
            header::CACHE_CONTROL,
            "max-age=86400, public, must-revalidate",
        )],
        axum::Json(shared.jwks()),
    )
        .into_response()
}

async fn mint(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let req: MintRequest = if body.iter().all(u8::is_ascii_whitespace) {
        MintRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(req) => req,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("mint request: {e}\n")).into_response();
            }
        }
    };
    match shared.mint(&req) {
        Ok(token) => ([(header::CONTENT_TYPE, "application/jwt")], token).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RotateRequest {
    key: KeyKind,
}

async fn rotate(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let req: RotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RotateRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(req) => req,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("rotate request: {e}\n")).into_response();
            }
        }
    };
    let outcome = tokio::task::spawn_blocking(move || shared.rotate(req.key)).await;
    match outcome {
        Ok(Ok(kid)) => axum::Json(json!({ "kid": kid })).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
) {
    // Connections live in this set, so aborting the server task ends them too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "dev-issuer: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

// ---------------------------------------------------------------------------------------------------
// CLI

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

fn client_for(args: &ClientArgs) -> anyhow::Result<crate::oidc::https::HttpsClient> {
    let ca = std::fs::read_to_string(&args.ca).map_err(io_err(&args.ca))?;
    Ok(crate::oidc::https::HttpsClient::new(
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
