//! One `KeyCache` per GitLabTrust, shared by the trust controller (key status) and the token-exchange
//! service (verification), so a trust's keys are fetched once per process.
use std::collections::HashMap;
use std::sync::Mutex;

use kube::ResourceExt;

use super::cache::{KeyCache, KeyCacheConfig, KeyCacheError, KeySource};
use crate::api::trust::GitLabTrust;

/// Key caches by trust name; a cache is replaced when its trust's key source changes.
#[derive(Default)]
pub struct KeyCaches {
    caches: Mutex<HashMap<String, KeyCache>>,
    config: KeyCacheConfig,
}

impl KeyCaches {
    pub fn with_config(config: KeyCacheConfig) -> Self {
        KeyCaches {
            caches: Mutex::default(),
            config,
        }
    }

    /// The cache for `trust`, created (without fetching) on first use or after its source changed.
    pub fn get(&self, trust: &GitLabTrust) -> Result<KeyCache, KeyCacheError> {
        let name = trust.name_any();
        let source = KeySource::from_spec(&trust.spec);
        let mut caches = self.caches.lock().expect("key cache registry poisoned");
        if let Some(cache) = caches.get(&name)
            && *cache.source() == source
        {
            return Ok(cache.clone());
        }
        let cache = KeyCache::new(source, self.config.clone())?;
        caches.insert(name, cache.clone());
        Ok(cache)
    }

    /// Forgets a deleted trust's keys.
    pub fn remove(&self, trust_name: &str) {
        self.caches
            .lock()
            .expect("key cache registry poisoned")
            .remove(trust_name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::trust::GitLabTrustSpec;

    fn trust(jwks: serde_json::Value) -> GitLabTrust {
        let spec: GitLabTrustSpec = serde_json::from_value(serde_json::json!({
            "issuer": "https://gitlab.example.com", "audiences": ["a"], "jwks": jwks
        }))
        .unwrap();
        GitLabTrust::new("t", spec)
    }

    #[test]
    fn one_cache_per_trust_replaced_when_the_source_changes() {
        let caches = KeyCaches::default();
        let first = serde_json::json!({"uri": "https://gitlab.example.com/a/keys"});
        let a = caches.get(&trust(first.clone())).unwrap();
        let again = caches.get(&trust(first)).unwrap();
        assert_eq!(a.source(), again.source());
        let by_uri = serde_json::json!({"uri": "https://gitlab.example.com/oauth/discovery/keys"});
        let changed = caches.get(&trust(by_uri)).unwrap();
        assert_ne!(a.source(), changed.source());
        assert_eq!(
            caches
                .get(&trust(
                    serde_json::json!({"uri": "https://gitlab.example.com/oauth/discovery/keys"})
                ))
                .unwrap()
                .source(),
            changed.source()
        );
    }
}
