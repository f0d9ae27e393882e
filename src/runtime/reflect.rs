//! Reflector stores that survive malformed objects.
//!
//! Every store the operator keeps is filled through [`reflect`]: the watch decodes each object inside
//! kube's `DeserializeGuard`, so one object that does not decode (a hand-written CRD object the
//! schema let through, an old version) is reported and skipped instead of failing the whole list and
//! stalling every consumer of the store.
use futures::{Stream, StreamExt};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// What a reflected kind must be.
pub trait Reflected:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
}
impl<K> Reflected for K where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// A store of every `K` in the cluster and the future that keeps it filled.
pub fn reflect<K: Reflected>(
    client: &Client,
) -> (Store<K>, impl Future<Output = ()> + Send + use<K>) {
    reflect_with(client, watcher::Config::default())
}

/// As [`reflect`], with a watch configuration (for example a label selector).
pub fn reflect_with<K: Reflected>(
    client: &Client,
    config: watcher::Config,
) -> (Store<K>, impl Future<Output = ()> + Send + use<K>) {
    let (store, writer) = reflector::store();
    let watch = guarded::<K>(client, config)
        .reflect(writer)
        .for_each(|ev| async move {
            if let Err(e) = ev {
                tracing::warn!(kind = %K::kind(&()), error = %e, "watch error; retrying");
            }
        });
    (store, watch)
}

/// The watch events of `K` with every object that does not decode dropped (and logged once per event).
pub fn guarded<K: Reflected>(
    client: &Client,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + use<K> {
    watch(Api::<DeserializeGuard<K>>::all(client.clone()), config)
        .default_backoff()
        .filter_map(|ev| async move {
            match ev {
                Ok(ev) => valid(ev).map(Ok),
                Err(e) => Some(Err(e)),
            }
        })
}

/// The event with its object when it decoded; `None` (after a warning) when it did not.
pub fn valid<K: Resource<DynamicType = ()>>(ev: Event<DeserializeGuard<K>>) -> Option<Event<K>> {
    let keep = |g: DeserializeGuard<K>| match g.0 {
        Ok(k) => Some(k),
        Err(invalid) => {
            report_invalid::<K>(&invalid);
            None
        }
    };
    Some(match ev {
        Event::Apply(g) => Event::Apply(keep(g)?),
        Event::Delete(g) => Event::Delete(keep(g)?),
        Event::InitApply(g) => Event::InitApply(keep(g)?),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    })
}

/// Logs an object that does not decode, naming it and the decoding error.
pub fn report_invalid<K: Resource<DynamicType = ()>>(
    invalid: &kube::core::error_boundary::InvalidObject,
) {
    let name = invalid.metadata.name.as_deref().unwrap_or_default();
    let namespace = invalid.metadata.namespace.as_deref().unwrap_or_default();
    tracing::warn!(
        kind = %K::kind(&()),
        namespace,
        name,
        error = %invalid.error,
        "skipping an object that does not decode; fix or delete it"
    );
}

/// The decoded object of a guarded one, or `None` (after reporting it).
pub fn decoded<K: Resource<DynamicType = ()>>(guard: &DeserializeGuard<K>) -> Option<&K> {
    match &guard.0 {
        Ok(k) => Some(k),
        Err(invalid) => {
            report_invalid::<K>(invalid);
            None
        }
    }
}

/// The labels of a guarded object, whether or not it decoded.
pub fn labels_of<K: Resource<DynamicType = ()>>(
    guard: &DeserializeGuard<K>,
) -> &std::collections::BTreeMap<String, String> {
    guard.labels()
}
