//! The cluster's constructor of `access::World`: reflector stores of every input a derivation reads
//! (GitLabTrusts, ClusterRoles, Namespaces, definitions), and `snapshot`, which assembles a World from
//! them. The controller and the exchange each keep one; neither reads these objects another way.
use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::BoxStream;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use super::reflect::{Reflected, guarded};
use crate::access::{DefinitionCatalog, MissingNamespace, World};
use crate::api::oam::{ComponentDefinition, PolicyDefinition, TraitDefinition};
use crate::api::trust::GitLabTrust;

/// Stores of every derivation input. Cheap to clone.
#[derive(Clone)]
pub struct WorldStores {
    pub trusts: Store<GitLabTrust>,
    pub cluster_roles: Store<ClusterRole>,
    pub namespaces: Store<Namespace>,
    pub component_defs: Store<ComponentDefinition>,
    pub trait_defs: Store<TraitDefinition>,
    pub policy_defs: Store<PolicyDefinition>,
    /// The admission policies that bound grant identities (`names::GUARD_BINDINGS`), and their bindings.
    pub guards: Store<ValidatingAdmissionPolicy>,
    pub guard_bindings: Store<ValidatingAdmissionPolicyBinding>,
    /// The system definitions namespace: its definitions are visible to every namespace.
    pub definitions_namespace: String,
    /// The guard policies that must be installed (`names::GUARD_BINDINGS`; tests name others).
    pub required_guards: Vec<String>,
    /// Whether every store has listed: one future every waiter shares (see `ready`).
    synced: Shared<BoxFuture<'static, bool>>,
}

/// The watch streams that fill the stores, one per kind. Each yields an object only after the store
/// holds it, so a consumer triggered by an item reads stores that already reflect it. Drive them with
/// [`WorldStreams::drive`] or hand them to a controller as triggers.
pub struct WorldStreams {
    pub trusts: BoxStream<'static, Result<GitLabTrust, watcher::Error>>,
    pub cluster_roles: BoxStream<'static, Result<ClusterRole, watcher::Error>>,
    pub namespaces: BoxStream<'static, Result<Namespace, watcher::Error>>,
    pub component_defs: BoxStream<'static, Result<ComponentDefinition, watcher::Error>>,
    pub trait_defs: BoxStream<'static, Result<TraitDefinition, watcher::Error>>,
    pub policy_defs: BoxStream<'static, Result<PolicyDefinition, watcher::Error>>,
    pub guards: BoxStream<'static, Result<ValidatingAdmissionPolicy, watcher::Error>>,
    pub guard_bindings:
        BoxStream<'static, Result<ValidatingAdmissionPolicyBinding, watcher::Error>>,
}

/// Whether `store` has listed (false if its writer was dropped first).
fn listed<K: Reflected>(store: &Store<K>) -> BoxFuture<'static, bool> {
    let store = store.clone();
    async move { store.wait_until_ready().await.is_ok() }.boxed()
}

fn reflected<K: Reflected>(
    client: &Client,
) -> (Store<K>, BoxStream<'static, Result<K, watcher::Error>>) {
    let (store, writer) = reflector::store();
    let stream = guarded::<K>(client, watcher::Config::default())
        .reflect(writer)
        .touched_objects()
        .boxed();
    (store, stream)
}

impl WorldStreams {
    /// Runs every stream for the life of the process (errors are logged and retried).
    pub async fn drive(self) {
        async fn run<K: Resource<DynamicType = ()>>(
            s: BoxStream<'static, Result<K, watcher::Error>>,
        ) {
            s.for_each(|ev| async move {
                if let Err(e) = ev {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch error; retrying");
                }
            })
            .await
        }
        futures::future::join3(
            futures::future::join3(
                run(self.trusts),
                run(self.cluster_roles),
                run(self.namespaces),
            ),
            futures::future::join3(
                run(self.component_defs),
                run(self.trait_defs),
                run(self.policy_defs),
            ),
            futures::future::join(run(self.guards), run(self.guard_bindings)),
        )
        .await;
    }
}

impl WorldStores {
    /// The stores and the streams that fill them.
    pub fn start(client: &Client, definitions_namespace: &str) -> (WorldStores, WorldStreams) {
        let (trusts, t) = reflected::<GitLabTrust>(client);
        let (cluster_roles, r) = reflected::<ClusterRole>(client);
        let (namespaces, n) = reflected::<Namespace>(client);
        let (component_defs, c) = reflected::<ComponentDefinition>(client);
        let (trait_defs, tr) = reflected::<TraitDefinition>(client);
        let (policy_defs, p) = reflected::<PolicyDefinition>(client);
        let (guards, g) = reflected::<ValidatingAdmissionPolicy>(client);
        let (guard_bindings, gb) = reflected::<ValidatingAdmissionPolicyBinding>(client);
        let synced = futures::future::join_all([
            listed(&trusts),
            listed(&cluster_roles),
            listed(&namespaces),
            listed(&component_defs),
            listed(&trait_defs),
            listed(&policy_defs),
            listed(&guards),
            listed(&guard_bindings),
        ])
        .map(|all| all.into_iter().all(|listed| listed))
        .boxed()
        .shared();
        let stores = WorldStores {
            trusts,
            cluster_roles,
            namespaces,
            component_defs,
            trait_defs,
            policy_defs,
            guards,
            guard_bindings,
            definitions_namespace: definitions_namespace.to_string(),
            required_guards: crate::names::GUARD_BINDINGS
                .iter()
                .map(|g| g.to_string())
                .collect(),
            synced,
        };
        let streams = WorldStreams {
            trusts: t,
            cluster_roles: r,
            namespaces: n,
            component_defs: c,
            trait_defs: tr,
            policy_defs: p,
            guards: g,
            guard_bindings: gb,
        };
        (stores, streams)
    }

    /// Resolves once every store has listed its objects; false if a store was dropped first.
    ///
    /// Every caller awaits one shared future: kube's `Store::wait_until_ready` wakes only the last
    /// of several concurrent waiters (a oneshot receiver holds one waker), so the others, e.g. the
    /// first reconcile of every Application after a start, slept until their own timeout (30 s).
    pub async fn ready(&self) -> bool {
        self.synced.clone().await
    }

    /// The world as the stores hold it now. A namespace without an object has no labels.
    pub fn snapshot(&self) -> World {
        let trusts: std::collections::BTreeMap<String, GitLabTrust> = self
            .trusts
            .state()
            .into_iter()
            .map(|t| (t.name_any(), (*t).clone()))
            .collect();
        let ceilings = trusts
            .values()
            .filter_map(|t| t.spec.ceiling.as_ref())
            .filter_map(|c| self.cluster_roles.get(&ObjectRef::new(&c.cluster_role_ref)))
            .map(|cr| (cr.name_any(), (*cr).clone()))
            .collect();
        World {
            trusts,
            ceilings,
            namespaces: self
                .namespaces
                .state()
                .into_iter()
                .map(|n| (n.name_any(), n))
                .collect(),
            missing_namespace: MissingNamespace::NoLabels,
            missing_guards: self.missing_guards(),
            referenced: None,
            definitions: DefinitionCatalog {
                components: self.component_defs.state(),
                traits: self.trait_defs.state(),
                policies: self.policy_defs.state(),
                // WorkloadDefinitions are not watched: built-in types name their workloads.
                workloads: Vec::new(),
                system_namespace: self.definitions_namespace.clone(),
            },
        }
    }

    /// The guard policies (`names::GUARD_BINDINGS`) without their policy or binding in the cluster.
    pub fn missing_guards(&self) -> Vec<String> {
        self.required_guards
            .iter()
            .filter(|name| {
                let binding = self.guard_bindings.get(&ObjectRef::new(name));
                let policy = binding
                    .as_ref()
                    .and_then(|b| b.spec.as_ref()?.policy_name.clone());
                policy.is_none_or(|p| self.guards.get(&ObjectRef::new(&p)).is_none())
            })
            .cloned()
            .collect()
    }

    /// A key that changes whenever a trust or ceiling changes (uid and resourceVersion of each).
    pub fn trust_key(world: &World) -> String {
        let mut key = String::new();
        for (name, t) in &world.trusts {
            key.push_str(&format!("t:{name}:{};", version(t)));
        }
        for (name, c) in &world.ceilings {
            key.push_str(&format!("c:{name}:{};", version(c)));
        }
        key
    }
}

/// `uid@resourceVersion` of an object: changes whenever the object does.
pub fn version<K: Resource>(obj: &K) -> String {
    format!(
        "{}@{}",
        obj.meta().uid.as_deref().unwrap_or_default(),
        obj.meta().resource_version.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::mock_api::{self, Reply};
    use std::time::Duration;

    /// An API server with no objects: every list is empty, every watch waits forever.
    fn empty_cluster() -> Client {
        mock_api::client(|req| {
            if req.uri().query().is_some_and(|q| q.contains("watch=true")) {
                return Reply::Hang;
            }
            Reply::Json(
                200,
                r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":"1"},"items":[]}"#,
            )
        })
    }

    #[tokio::test]
    async fn every_waiter_learns_that_the_stores_listed() {
        let (stores, streams) = WorldStores::start(&empty_cluster(), "vela-system");
        // Several tasks wait before the stores have listed, as reconciles do after a start.
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let stores = stores.clone();
                tokio::spawn(async move { stores.ready().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let drive = tokio::spawn(streams.drive());
        for waiter in waiters {
            let ready = tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("a waiter was never woken though the stores listed")
                .unwrap();
            assert!(ready);
        }
        drive.abort();
    }
}
