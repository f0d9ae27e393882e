//! The exchange service's view of who may get what: watches (GitLabTrusts, Applications, Namespaces,
//! ClusterRoles, definitions) and, per Application, the `GrantSet` the shared pure function
//! `access::derive_grants` derives from them. A GrantSet is cached under the resourceVersions of its
//! inputs, so a request re-renders only Applications whose inputs changed since the last request.
use crate::controller::reflect;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::runtime::reflector::{self, Store};

use kube::{Client, Resource, ResourceExt};

use crate::access::{GrantInput, GrantSet, derive_grants};
use crate::api::access::GITLAB_ACCESS;
use crate::api::oam::{Application, ComponentDefinition, PolicyDefinition, TraitDefinition};
use crate::api::trust::GitLabTrust;
use crate::render::{self, Definitions};

/// Per Application (namespace, name): the key of its inputs and the GrantSet derived from them.
type GrantCache = HashMap<(String, String), (String, Arc<GrantSet>)>;

/// Reflector stores the exchange reads. Cheap to clone.
#[derive(Clone)]
pub struct GrantIndex {
    pub trusts: Store<GitLabTrust>,
    pub applications: Store<Application>,
    namespaces: Store<Namespace>,
    cluster_roles: Store<ClusterRole>,
    component_defs: Store<ComponentDefinition>,
    trait_defs: Store<TraitDefinition>,
    policy_defs: Store<PolicyDefinition>,
    cache: Arc<Mutex<GrantCache>>,
}

impl GrantIndex {
    /// The stores and the future that keeps them filled (run it for the life of the service).
    pub fn start(client: &Client) -> (GrantIndex, impl Future<Output = ()> + Send + use<>) {
        let (trusts, w1) = reflect::<GitLabTrust>(client);
        let (applications, w2) = reflect::<Application>(client);
        let (namespaces, w3) = reflect::<Namespace>(client);
        let (cluster_roles, w4) = reflect::<ClusterRole>(client);
        let (component_defs, w5) = reflect::<ComponentDefinition>(client);
        let (trait_defs, w6) = reflect::<TraitDefinition>(client);
        let (policy_defs, w7) = reflect::<PolicyDefinition>(client);
        let index = GrantIndex {
            trusts,
            applications,
            namespaces,
            cluster_roles,
            component_defs,
            trait_defs,
            policy_defs,
            cache: Arc::default(),
        };
        let watches = async move {
            futures::future::join(
                futures::future::join4(w1, w2, w3, w4),
                futures::future::join3(w5, w6, w7),
            )
            .await;
        };
        (index, watches)
    }

    /// Resolves once every store has listed its objects.
    pub async fn ready(&self) -> bool {
        let (a, b, c, d) = futures::future::join4(
            self.trusts.wait_until_ready(),
            self.applications.wait_until_ready(),
            self.namespaces.wait_until_ready(),
            self.cluster_roles.wait_until_ready(),
        )
        .await;
        let (e, f, g) = futures::future::join3(
            self.component_defs.wait_until_ready(),
            self.trait_defs.wait_until_ready(),
            self.policy_defs.wait_until_ready(),
        )
        .await;
        [a, b, c, d, e, f, g].iter().all(Result::is_ok)
    }

    /// Trusts whose issuer is `issuer` and that have token exchange switched on.
    pub fn trusts_for_issuer(&self, issuer: &str) -> Vec<GitLabTrust> {
        let mut found: Vec<GitLabTrust> = self
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
        let trusts: BTreeMap<String, GitLabTrust> = self
            .trusts
            .state()
            .into_iter()
            .map(|t| (t.name_any(), (*t).clone()))
            .collect();
        let ceilings: BTreeMap<String, ClusterRole> = trusts
            .values()
            .filter_map(|t| t.spec.ceiling.as_ref())
            .filter_map(|c| {
                self.cluster_roles
                    .get(&reflector::ObjectRef::new(&c.cluster_role_ref))
            })
            .map(|cr| (cr.name_any(), (*cr).clone()))
            .collect();
        let shared_key = {
            let mut key = String::new();
            for (name, t) in &trusts {
                key.push_str(&format!("t:{name}:{};", rv(t)));
            }
            for (name, c) in &ceilings {
                key.push_str(&format!("c:{name}:{};", rv(c)));
            }
            key
        };
        let mut sets = Vec::new();
        let apps = self.applications.state();
        // Forget Applications that are gone.
        let live: std::collections::HashSet<(String, String)> = apps
            .iter()
            .map(|a| {
                (
                    a.namespace().unwrap_or_else(|| "default".into()),
                    a.name_any(),
                )
            })
            .collect();
        self.lock().retain(|key, _| live.contains(key));
        for app in apps {
            if !declares_under(&app, trust) {
                continue;
            }
            let namespace = app.namespace().unwrap_or_else(|| "default".into());
            let ns = self.namespaces.get(&reflector::ObjectRef::new(&namespace));
            let defs = self.definitions_for(&namespace);
            let key = format!(
                "{}:{}:{}:{}:{}",
                app.uid().unwrap_or_default(),
                rv(&*app),
                ns.as_deref().map(rv).unwrap_or_default(),
                defs.1,
                shared_key
            );
            let cache_key = (namespace.clone(), app.name_any());
            if let Some((k, set)) = self.lock().get(&cache_key)
                && *k == key
            {
                sets.push((**set).clone());
                continue;
            }
            let labels = ns
                .as_ref()
                .and_then(|n| n.metadata.labels.clone())
                .unwrap_or_default();
            let set = match render::render_application(&app, &defs.0) {
                Ok(rendered) => derive_grants(&GrantInput {
                    application: &app,
                    namespace_labels: &labels,
                    trusts: &trusts,
                    ceilings: &ceilings,
                    rendered: &rendered,
                }),
                // The Application controller reports render errors on the Application; it has no grants.
                Err(_) => GrantSet::default(),
            };
            self.lock().insert(cache_key, (key, Arc::new(set.clone())));
            sets.push(set);
        }
        GrantSet::merge(sets)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GrantCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Definitions visible in `namespace` (its own taking precedence) and a key of their versions.
    fn definitions_for(&self, namespace: &str) -> (Definitions, String) {
        let mut defs = Definitions::default();
        let mut key = String::new();
        for own in [false, true] {
            let pick = |ns: Option<String>| (ns.as_deref() == Some(namespace)) == own;
            for d in self.component_defs.state() {
                if pick(d.namespace()) {
                    key.push_str(&rv(&*d));
                    defs.insert_component((*d).clone());
                }
            }
            for d in self.trait_defs.state() {
                if pick(d.namespace()) {
                    key.push_str(&rv(&*d));
                    defs.insert_trait((*d).clone());
                }
            }
            for d in self.policy_defs.state() {
                if pick(d.namespace()) {
                    key.push_str(&rv(&*d));
                    defs.insert_policy((*d).clone());
                }
            }
        }
        (defs, key)
    }
}

fn rv<K: Resource>(obj: &K) -> String {
    format!(
        "{}@{}",
        obj.meta().uid.as_deref().unwrap_or_default(),
        obj.meta().resource_version.as_deref().unwrap_or_default()
    )
}

/// Whether any gitlab-access policy or trait of `app` names `trust`.
pub fn declares_under(app: &Application, trust: &str) -> bool {
    let names = |props: Option<&serde_json::Value>| {
        props.and_then(|p| p.get("trust")).and_then(|t| t.as_str()) == Some(trust)
    };
    app.spec
        .policies
        .iter()
        .any(|p| p.type_ == GITLAB_ACCESS && names(p.properties.as_ref()))
        || app.spec.components.iter().any(|c| {
            c.traits
                .iter()
                .any(|t| t.type_ == GITLAB_ACCESS && names(t.properties.as_ref()))
        })
}
