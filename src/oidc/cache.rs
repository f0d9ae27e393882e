//! The fetching cache of one trust's verification keys: where they come from (`KeySource`: static JWKS,
//! explicit JWKS URI, or OIDC discovery at the issuer), when they are fetched, and verification against
//! whatever is held.
//!
//! The cache refetches when a token names an unknown `kid` (GitLab rotates with no overlap), with one fetch
//! in flight at a time (concurrent callers share it) and at most one refetch per `refetch_interval`.
//! A failed fetch keeps the keys already held. Keys that are merely due for a refresh (old, or the last
//! fetch failed) keep verifying while the refresh runs in the background: a slow or failing issuer never
//! holds up a verification the held keys can do. With `https` it is the only IO in `oidc/`, over HTTPS
//! only.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::https::{FetchError, HttpsClient};
use super::keys::{KeySet, KeySetError};
use super::verify::{VerifiedToken, VerifyError, verify};
use crate::api::trust::{GitLabTrust, GitLabTrustSpec};

/// Where a trust's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS document given inline (`jwks.static`).
    Static { jwks: String },
    /// An explicit JWKS URL (`jwks.uri`).
    JwksUri {
        uri: String,
        ca_bundle: Option<String>,
    },
    /// OIDC discovery at `<issuer>/.well-known/openid-configuration`.
    Discovery {
        issuer: String,
        ca_bundle: Option<String>,
    },
}

impl KeySource {
    /// The source a trust's spec names; discovery at the issuer unless `jwks` says otherwise.
    pub fn from_spec(spec: &GitLabTrustSpec) -> KeySource {
        let jwks = spec.jwks.clone().unwrap_or_default();
        if let Some(doc) = jwks.static_jwks {
            KeySource::Static { jwks: doc }
        } else if let Some(uri) = jwks.uri {
            KeySource::JwksUri {
                uri,
                ca_bundle: jwks.ca_bundle,
            }
        } else {
            KeySource::Discovery {
                issuer: spec.issuer.clone(),
                ca_bundle: jwks.ca_bundle,
            }
        }
    }

    fn ca_bundle(&self) -> Option<&str> {
        match self {
            KeySource::Static { .. } => None,
            KeySource::JwksUri { ca_bundle, .. } | KeySource::Discovery { ca_bundle, .. } => {
                ca_bundle.as_deref()
            }
        }
    }
}

/// Tuning of a `KeyCache`.
#[derive(Debug, Clone)]
pub struct KeyCacheConfig {
    /// Least time between two fetches triggered by unknown key ids.
    pub refetch_interval: Duration,
    /// Keys older than this are refetched before the next verification.
    pub max_key_age: Duration,
    /// Total time for one HTTPS request.
    pub timeout: Duration,
    /// Largest discovery or JWKS response accepted.
    pub max_response_bytes: usize,
}

impl Default for KeyCacheConfig {
    fn default() -> Self {
        KeyCacheConfig {
            refetch_interval: Duration::from_secs(10),
            max_key_age: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            max_response_bytes: 256 * 1024,
        }
    }
}

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyCacheError {
    #[error("fetching keys: {0}")]
    Fetch(#[from] FetchError),
    #[error("{url}: discovery document is not valid JSON: {reason}")]
    DiscoveryJson { url: String, reason: String },
    #[error(
        "{url}: discovery issuer {found:?} differs from the trust's issuer {expected:?}; set spec.issuer to exactly {found:?} (or fix GitLab's ci_id_tokens issuer_url)"
    )]
    DiscoveryIssuerMismatch {
        url: String,
        found: String,
        expected: String,
    },
    #[error("{url}: discovery document has no https jwks_uri (found {found:?})")]
    DiscoveryJwksUri { url: String, found: Option<String> },
    #[error("{url}: {source}")]
    Jwks {
        url: String,
        #[source]
        source: KeySetError,
    },
    #[error("static JWKS: {0}")]
    StaticJwks(KeySetError),
}

impl KeyCacheError {
    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            KeyCacheError::Fetch(FetchError::Timeout { .. }) => "timeout",
            KeyCacheError::Fetch(FetchError::Status { .. }) => "http_status",
            KeyCacheError::Fetch(FetchError::CaBundle { .. } | FetchError::NoSystemRoots) => {
                "tls_config"
            }
            KeyCacheError::Fetch(_) => "transport",
            KeyCacheError::DiscoveryJson { .. }
            | KeyCacheError::DiscoveryIssuerMismatch { .. }
            | KeyCacheError::DiscoveryJwksUri { .. } => "discovery",
            KeyCacheError::Jwks { .. } | KeyCacheError::StaticJwks(_) => "jwks",
        }
    }
}

/// What the trust controller reports in status.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyCacheStatus {
    pub key_ids: Vec<String>,
    /// Time of the last successful fetch (None for a static JWKS or before the first success).
    pub last_fetch: Option<SystemTime>,
    /// The error of the last fetch, cleared by a successful one.
    pub last_error: Option<String>,
    /// Notes on keys in the JWKS that were skipped.
    pub skipped: Vec<String>,
}

#[derive(Default)]
struct CacheState {
    keys: Arc<KeySet>,
    last_fetch: Option<SystemTime>,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
    /// Completed fetch attempts; lets a waiter see that a fetch happened while it queued.
    attempts: u64,
}

struct CacheInner {
    source: KeySource,
    client: Option<HttpsClient>,
    config: KeyCacheConfig,
    state: RwLock<CacheState>,
    fetch_lock: tokio::sync::Mutex<()>,
    /// A background refresh (`ensure_fresh`) is running: at most one at a time.
    refreshing: AtomicBool,
}

/// Keys of one trust, shared by every request verifying against it. Cheap to clone.
#[derive(Clone)]
pub struct KeyCache {
    inner: Arc<CacheInner>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("source", &self.inner.source)
            .field("status", &self.status())
            .finish()
    }
}

impl KeyCache {
    /// A cache for the trust's key source with default tuning.
    pub fn for_trust(spec: &GitLabTrustSpec) -> Result<KeyCache, KeyCacheError> {
        KeyCache::new(KeySource::from_spec(spec), KeyCacheConfig::default())
    }

    /// A cache for `source`. A static JWKS is parsed now; a bad CA bundle is refused now. Nothing is fetched.
    pub fn new(source: KeySource, config: KeyCacheConfig) -> Result<KeyCache, KeyCacheError> {
        let mut state = CacheState::default();
        let client = match &source {
            KeySource::Static { jwks } => {
                let set =
                    KeySet::from_jwks_json(jwks.as_bytes()).map_err(KeyCacheError::StaticJwks)?;
                state.keys = Arc::new(set);
                None
            }
            other => Some(HttpsClient::new(
                other.ca_bundle(),
                config.timeout,
                config.max_response_bytes,
            )?),
        };
        Ok(KeyCache {
            inner: Arc::new(CacheInner {
                source,
                client,
                config,
                state: RwLock::new(state),
                fetch_lock: tokio::sync::Mutex::new(()),
                refreshing: AtomicBool::new(false),
            }),
        })
    }

    pub fn source(&self) -> &KeySource {
        &self.inner.source
    }

    /// The keys held now.
    pub fn keys(&self) -> Arc<KeySet> {
        self.read().keys.clone()
    }

    pub fn key_ids(&self) -> Vec<String> {
        self.read().keys.key_ids()
    }

    pub fn last_fetch(&self) -> Option<SystemTime> {
        self.read().last_fetch
    }

    pub fn last_error(&self) -> Option<String> {
        self.read().last_error.clone()
    }

    pub fn status(&self) -> KeyCacheStatus {
        let state = self.read();
        KeyCacheStatus {
            key_ids: state.keys.key_ids(),
            last_fetch: state.last_fetch,
            last_error: state.last_error.clone(),
            skipped: state.keys.skipped().to_vec(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, CacheState> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, CacheState> {
        self.inner.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetches now (after any fetch in flight) and returns the outcome; the trust controller calls this on
    /// reconcile. On failure the keys already held stay in use. A static JWKS returns its keys.
    pub async fn refresh(&self) -> Result<Arc<KeySet>, KeyCacheError> {
        let _guard = self.inner.fetch_lock.lock().await;
        self.fetch_locked().await
    }

    fn describe_source(&self) -> String {
        match &self.inner.source {
            KeySource::Static { .. } => "static JWKS".into(),
            KeySource::JwksUri { uri, .. } => uri.clone(),
            KeySource::Discovery { issuer, .. } => discovery_url(issuer),
        }
    }

    /// Refetches because a token named `kid`, which the held keys lack. Concurrent callers share one fetch,
    /// and at most one such fetch runs per `refetch_interval`; returns the keys held afterwards.
    pub async fn refetch_for_unknown_kid(&self, kid: Option<&str>) -> Arc<KeySet> {
        let interval = self.inner.config.refetch_interval;
        self.fetch_unless(|state| {
            kid.is_some_and(|k| state.keys.find(k).is_some())
                || state.last_attempt.is_some_and(|t| t.elapsed() < interval)
        })
        .await;
        self.keys()
    }

    /// Fetches if nothing was fetched yet, the keys are older than `max_key_age`, or the last fetch failed
    /// more than `refetch_interval` ago. Concurrent callers share one fetch. With keys held, the fetch runs
    /// in the background and this returns at once: the held keys verify meanwhile (and keep verifying if
    /// it fails, as after any failed fetch).
    pub async fn ensure_fresh(&self) {
        if self.is_fresh(&self.read()) {
            return;
        }
        if self.read().keys.is_empty() {
            return self.fetch_unless(|state| self.is_fresh(state)).await;
        }
        if self.inner.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let cache = self.clone();
        tokio::spawn(async move {
            cache.fetch_unless(|state| cache.is_fresh(state)).await;
            cache.inner.refreshing.store(false, Ordering::Release);
        });
    }

    fn is_fresh(&self, state: &CacheState) -> bool {
        let config = &self.inner.config;
        match state.last_attempt {
            None => false,
            Some(t) if state.last_error.is_some() => t.elapsed() < config.refetch_interval,
            Some(t) => t.elapsed() < config.max_key_age,
        }
    }

    /// Single flight: waits for any fetch in flight and fetches only if none completed meanwhile and
    /// `skip` does not hold for the state then.
    async fn fetch_unless(&self, skip: impl Fn(&CacheState) -> bool) {
        if self.inner.client.is_none() {
            return;
        }
        let seen = self.read().attempts;
        let _guard = self.inner.fetch_lock.lock().await;
        {
            let state = self.read();
            if state.attempts != seen || skip(&state) {
                return;
            }
        }
        // The outcome is recorded in the state (keys kept, last_error set).
        let _ = self.fetch_locked().await;
    }

    /// Verifies `token` against this cache's keys, refetching once when it names a key not held.
    pub async fn verify(
        &self,
        token: &str,
        trust: &GitLabTrust,
        now: SystemTime,
    ) -> Result<VerifiedToken, VerifyError> {
        self.ensure_fresh().await;
        let keys = self.keys();
        match verify(token, trust, &keys, now) {
            Err(VerifyError::UnknownKey { kid, .. }) => {
                let keys = self.refetch_for_unknown_kid(Some(&kid)).await;
                verify(token, trust, &keys, now)
            }
            Err(VerifyError::NoKeys { .. }) => {
                let keys = self.refetch_for_unknown_kid(None).await;
                verify(token, trust, &keys, now)
            }
            other => other,
        }
    }

    // Caller holds `fetch_lock`.
    async fn fetch_locked(&self) -> Result<Arc<KeySet>, KeyCacheError> {
        let Some(client) = &self.inner.client else {
            return Ok(self.keys());
        };
        let outcome = fetch_key_set(client, &self.inner.source).await;
        let mut state = self.write();
        state.attempts += 1;
        state.last_attempt = Some(Instant::now());
        match outcome {
            Ok(set) => {
                let set = Arc::new(set);
                state.keys = set.clone();
                state.last_fetch = Some(SystemTime::now());
                state.last_error = None;
                tracing::debug!(source = %self.describe_source(), keys = ?set.key_ids(), "fetched verification keys");
                Ok(set)
            }
            Err(err) => {
                tracing::warn!(source = %self.describe_source(), error = %err, kept = state.keys.len(), "fetching verification keys failed; keeping the keys held");
                state.last_error = Some(err.to_string());
                Err(err)
            }
        }
    }
}

async fn fetch_key_set(client: &HttpsClient, source: &KeySource) -> Result<KeySet, KeyCacheError> {
    let jwks_uri = match source {
        KeySource::Static { jwks } => {
            return KeySet::from_jwks_json(jwks.as_bytes()).map_err(KeyCacheError::StaticJwks);
        }
        KeySource::JwksUri { uri, .. } => uri.clone(),
        KeySource::Discovery { issuer, .. } => discover_jwks_uri(client, issuer).await?,
    };
    let body = client.get(&jwks_uri).await?;
    KeySet::from_jwks_json(&body).map_err(|source| KeyCacheError::Jwks {
        url: jwks_uri,
        source,
    })
}

fn discovery_url(issuer: &str) -> String {
    format!("{issuer}/.well-known/openid-configuration")
}

/// Reads the issuer's discovery document and returns its `jwks_uri`, after checking its `issuer`.
pub async fn discover_jwks_uri(
    client: &HttpsClient,
    issuer: &str,
) -> Result<String, KeyCacheError> {
    let url = discovery_url(issuer);
    let body = client.get(&url).await?;
    let doc: Value = serde_json::from_slice(&body).map_err(|e| KeyCacheError::DiscoveryJson {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    let found = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
    if found != issuer {
        return Err(KeyCacheError::DiscoveryIssuerMismatch {
            url,
            found: found.into(),
            expected: issuer.into(),
        });
    }
    match doc.get("jwks_uri").and_then(Value::as_str) {
        Some(uri) if uri.starts_with("https://") => Ok(uri.to_string()),
        other => Err(KeyCacheError::DiscoveryJwksUri {
            url,
            found: other.map(str::to_string),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::trust::JwksSource;
    use crate::dev_issuer::{DevIssuer, DevIssuerOptions, MintRequest};

    #[tokio::test]
    async fn a_slow_issuer_never_holds_up_a_verification_the_held_keys_can_do() {
        let issuer = DevIssuer::start(DevIssuerOptions::default()).await.unwrap();
        let spec = GitLabTrustSpec {
            issuer: issuer.url().into(),
            audiences: vec![DevIssuerOptions::default().audience],
            jwks: Some(JwksSource {
                ca_bundle: Some(issuer.ca_pem().into()),
                ..JwksSource::default()
            }),
            ..GitLabTrustSpec::default()
        };
        let trust = GitLabTrust::new("slow", spec.clone());
        let timeout = Duration::from_millis(500);
        let cache = KeyCache::new(
            KeySource::from_spec(&spec),
            KeyCacheConfig {
                refetch_interval: Duration::ZERO,
                timeout,
                ..KeyCacheConfig::default()
            },
        )
        .unwrap();
        cache.refresh().await.unwrap();
        // The issuer now answers after the fetch timeout: every refresh fails, and is due again at once.
        issuer.set_jwks_delay(Duration::from_secs(30));
        let err = cache.refresh().await.unwrap_err();
        assert_eq!(err.category(), "timeout", "{err}");
        let token = issuer.mint(&MintRequest::new()).unwrap();
        for _ in 0..3 {
            let started = Instant::now();
            cache
                .verify(&token, &trust, SystemTime::now())
                .await
                .unwrap();
            assert!(
                started.elapsed() < timeout / 2,
                "a verification waited {:?} on the slow issuer",
                started.elapsed()
            );
        }
        let asked = issuer.jwks_requests();
        tokio::time::sleep(timeout + Duration::from_millis(200)).await;
        assert!(
            issuer.jwks_requests() > 2,
            "the refresh was tried in the background ({asked} requests)"
        );
        assert!(cache.last_error().is_some(), "and failed, keeping the keys");
        assert!(!cache.key_ids().is_empty());
    }
}
