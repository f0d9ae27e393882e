//! The exchange service's view of who may get what: the world's stores (`runtime::world`), the
//! Applications, and per Application the `GrantSet` that the one derivation (`World::derive`) gives.
//! A GrantSet is cached under the versions of its inputs, so a request re-derives only Applications
//! whose inputs changed since the last request.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::{self, Store};
use kube::{Client, ResourceExt};

use crate::access::GrantSet;
use crate::access::declaration::declares_under;
use crate::api::oam::Application;
use crate::api::trust::GitLabTrust;
use crate::names;
use crate::runtime::reflect::reflect;
use crate::runtime::world::{WorldStores, version};

/// Per Application (namespace, name): the key of its inputs and the GrantSet derived from them.
type GrantCache = HashMap<(String, String), (String, Arc<GrantSet>)>;

/// Reflector stores the exchange reads. Cheap to clone.
#[derive(Clone)]
pub struct GrantIndex {
    pub world: WorldStores,
    pub applications: Store<Application>,
    cache: Arc<Mutex<GrantCache>>,
}

impl GrantIndex {
    /// The stores and the future that keeps them filled (run it for the life of the service).
    pub fn start(
        client: &Client,
        definitions_namespace: &str,
    ) -> (GrantIndex, impl Future<Output = ()> + Send + use<>) {
        let (world, streams) = WorldStores::start(client, definitions_namespace);
        let (applications, apps) = reflect::<Application>(client);
        let index = GrantIndex {
            world,
            applications,
            cache: Arc::default(),
        };
        let watches = async move {
            futures::future::join(streams.drive(), apps).await;
        };
        (index, watches)
    }

    /// Resolves once every store has listed its objects.
    pub async fn ready(&self) -> bool {
        let (world, apps) =
            futures::future::join(self.world.ready(), self.applications.wait_until_ready()).await;
        world && apps.is_ok()
    }

    /// Trusts whose issuer is `issuer` and that have token exchange switched on.
    pub fn trusts_for_issuer(&self, issuer: &str) -> Vec<GitLabTrust> {
        let mut found: Vec<GitLabTrust> = self
            .world
            .trusts
            .state()
            .into_iter()
            .filter(|t| t.spec.issuer == issuer && t.spec.federation().token_exchange)
            .map(|t| (*t).clone())
            .collect();
        found.sort_by_key(|t| t.name_any());
        found
    }

    /// The Application `namespace/name`, as last seen.
    pub fn application(&self, namespace: &str, name: &str) -> Option<Arc<Application>> {
        self.applications
            .get(&reflector::ObjectRef::new(name).within(namespace))
    }

    /// Every grant of every Application that declares gitlab-access under `trust`.
    pub fn grants_for_trust(&self, trust: &str) -> GrantSet {
        let world = self.world.snapshot();
        let shared_key = WorldStores::trust_key(&world);
        let apps = self.applications.state();
        // Forget Applications that are gone.
        let live: std::collections::HashSet<(String, String)> = apps
            .iter()
            .map(|a| (names::namespace_of(&**a).to_string(), a.name_any()))
            .collect();
        self.lock().retain(|key, _| live.contains(key));
        let mut sets = Vec::new();
        for app in apps {
            if !declares_under(&app, trust) {
                continue;
            }
            let namespace = names::namespace_of(&*app).to_string();
            let key = format!(
                "{}:{}:{}:{}",
                version(&*app),
                world
                    .namespaces
                    .get(&namespace)
                    .map(|n| version(&**n))
                    .unwrap_or_default(),
                world.definitions.version_key(&namespace),
                shared_key
            );
            let cache_key = (namespace, app.name_any());
            if let Some((k, set)) = self.lock().get(&cache_key)
                && *k == key
            {
                sets.push((**set).clone());
                continue;
            }
            // An Application that does not render has no grants (the controller reports why).
            let set = world.derive(&app).map(|d| d.grants).unwrap_or_default();
            self.lock().insert(cache_key, (key, Arc::new(set.clone())));
            sets.push(set);
        }
        GrantSet::merge(sets)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GrantCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}
