//! The owned route: the leader (and followers) Service podium creates for a group with
//! `spec.service`, and the EndpointSlices it writes for them, so that a change of leader is one
//! slice write from the old address to the new.
//!
//! Every write goes through `Writer::slot` and is conditional: a create fails if the name is
//! taken, an update or a delete names the version (and UID) it was decided from. A name taken by
//! an object this group does not control is reported (`Conflict`, `ForeignService`) and never
//! written. On a conflict the object is read afresh and the reconciler decides again.

pub mod objects;
pub mod store;

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use podium_api::{ElectionGroup, MANAGER};
use podium_election::validation::Route;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::debug;

use crate::apply::{Outcome, is_conflict};
use crate::cache::CachedPod;
use crate::error::Error;
use crate::lane::Lane;
use crate::writer::Writer;
use objects::Family;
use store::OwnedObjects;

/// A kind of object the owned route writes.
trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The kind, in messages and in `foreign` names.
    const KIND: &'static str;
    /// The `kind` label of the write metric.
    const METRIC: &'static str;
    fn cached(o: &OwnedObjects, ns: &str, name: &str) -> Option<Arc<Self>>;
    fn written(o: &OwnedObjects, obj: Self);
    fn gone(o: &OwnedObjects, ns: &str, name: &str);
}

impl Kind for Service {
    const KIND: &'static str = "Service";
    const METRIC: &'static str = "service";
    fn cached(o: &OwnedObjects, ns: &str, name: &str) -> Option<Arc<Self>> {
        o.service(ns, name)
    }
    fn written(o: &OwnedObjects, obj: Self) {
        o.service_written(obj);
    }
    fn gone(o: &OwnedObjects, ns: &str, name: &str) {
        o.service_gone(ns, name);
    }
}

impl Kind for EndpointSlice {
    const KIND: &'static str = "EndpointSlice";
    const METRIC: &'static str = "endpointslice";
    fn cached(o: &OwnedObjects, ns: &str, name: &str) -> Option<Arc<Self>> {
        o.slice(ns, name)
    }
    fn written(o: &OwnedObjects, obj: Self) {
        o.slice_written(obj);
    }
    fn gone(o: &OwnedObjects, ns: &str, name: &str) {
        o.slice_gone(ns, name);
    }
}

fn what<K: Kind>(name: &str) -> String {
    format!("{} {name}", K::KIND)
}

/// Who holds a name the owned route uses.
enum Holder<K> {
    /// Nobody, as far as podium's watch and its own writes show.
    Nobody,
    /// This group.
    Us(Arc<K>),
    /// Someone else: never written.
    Foreign,
}

/// The names of the group's owned route that someone else holds, as `Service <name>` or
/// `EndpointSlice <name>`: the decision reports them as a `Conflict`.
pub fn foreign(owned: &OwnedObjects, group: &ElectionGroup, route: Option<&Route>) -> Vec<String> {
    let (Some(route), Some(ns)) = (route, group.namespace()) else {
        return Vec::new();
    };
    let uid = group.uid().unwrap_or_default();
    let mut out = Vec::new();
    for service in services(route) {
        if matches!(
            holder::<Service>(owned, &ns, service, &uid),
            Holder::Foreign
        ) {
            out.push(what::<Service>(service));
            continue;
        }
        for family in Family::ALL {
            let name = family.slice_name(service);
            if matches!(
                holder::<EndpointSlice>(owned, &ns, &name, &uid),
                Holder::Foreign
            ) {
                out.push(what::<EndpointSlice>(&name));
            }
        }
    }
    out
}

fn services(route: &Route) -> impl Iterator<Item = &String> {
    std::iter::once(&route.leader).chain(route.followers.as_ref())
}

fn holder<K: Kind>(owned: &OwnedObjects, ns: &str, name: &str, uid: &str) -> Holder<K> {
    match K::cached(owned, ns, name) {
        Some(o) if objects::owned_by(o.as_ref(), uid) => Holder::Us(o),
        Some(_) => Holder::Foreign,
        None if owned.known_foreign(ns, &what::<K>(name)) => Holder::Foreign,
        None => Holder::Nobody,
    }
}

/// How an object of the owned route is brought to what podium wants.
enum Change<K> {
    /// A merge patch, carrying its own preconditions.
    Patch(serde_json::Value),
    /// The whole object, on the version it was read at.
    Replace(K),
}

/// The owned route's writes for one group in one reconcile.
pub struct Writes<'a> {
    /// The writer every write goes through.
    pub writer: &'a Writer,
    /// podium's Services and EndpointSlices.
    pub owned: &'a OwnedObjects,
    /// The lane of this reconcile.
    pub lane: &'a Lane,
    /// The group.
    pub group: &'a ElectionGroup,
    /// Its namespace.
    pub ns: &'a str,
    /// Its validated route, if it has one.
    pub route: Option<&'a Route>,
}

impl Writes<'_> {
    fn uid(&self) -> String {
        self.group.uid().unwrap_or_default()
    }

    fn err<K: Kind>(&self, name: &str, source: kube::Error) -> Error {
        Error::Route {
            kind: K::KIND,
            namespace: self.ns.to_string(),
            name: name.to_string(),
            source,
        }
    }

    /// The leader Service and its slices: the leader (`None`: no endpoint, the slice empties).
    pub async fn leader(&self, leader: Option<&CachedPod>) -> Result<Outcome, Error> {
        let Some(route) = self.route else {
            return Ok(Outcome::Done);
        };
        let pods: Vec<&CachedPod> = leader.into_iter().collect();
        self.service_and_slices(&route.leader, route, &pods).await
    }

    /// The followers Service and its slices, listing `followers`.
    pub async fn followers(&self, followers: &[&CachedPod]) -> Result<Outcome, Error> {
        let Some((route, name)) = self
            .route
            .and_then(|r| r.followers.as_ref().map(|f| (r, f)))
        else {
            return Ok(Outcome::Done);
        };
        self.service_and_slices(name, route, followers).await
    }

    async fn service_and_slices(
        &self,
        service: &str,
        route: &Route,
        pods: &[&CachedPod],
    ) -> Result<Outcome, Error> {
        let want = objects::service(self.group, service, &route.spec);
        let outcome = match holder::<Service>(self.owned, self.ns, service, &self.uid()) {
            // Its slices would route someone else's Service: none is written.
            Holder::Foreign => return self.recheck::<Service>(service).await,
            Holder::Nobody => self.create(want).await?,
            Holder::Us(have) => match objects::service_patch(&have, &want) {
                Some(patch) => self.update(have.as_ref(), Change::Patch(patch)).await?,
                None => Outcome::Done,
            },
        };
        if outcome != Outcome::Done {
            return Ok(outcome);
        }
        for family in Family::ALL {
            let name = family.slice_name(service);
            let have = holder::<EndpointSlice>(self.owned, self.ns, &name, &self.uid());
            // A family's slice exists once one of its pods had an address of it, then stays.
            if family == Family::V6
                && matches!(have, Holder::Nobody)
                && !objects::has_family(pods, family)
            {
                continue;
            }
            let mut want = objects::slice(self.group, service, family, &route.spec, pods);
            let now = jiff::Timestamp::now();
            let outcome = match have {
                Holder::Foreign => self.recheck::<EndpointSlice>(&name).await?,
                Holder::Nobody => {
                    objects::stamp(&mut want, now);
                    self.create(want).await?
                }
                Holder::Us(have) => match objects::slice_update(&have, &want) {
                    Some(mut next) => {
                        objects::stamp(&mut next, now);
                        self.update(have.as_ref(), Change::Replace(next)).await?
                    }
                    None => Outcome::Done,
                },
            };
            if outcome != Outcome::Done {
                return Ok(outcome);
            }
        }
        Ok(Outcome::Done)
    }

    /// Deletes what the group owns and its route no longer names (all of it, when the spec
    /// has no `service` any more): the Services first, then their slices.
    pub async fn prune(&self) -> Result<Outcome, Error> {
        let uid = self.uid();
        let name = self.group.name_any();
        let wanted: Vec<String> = self
            .route
            .map(|r| {
                services(r)
                    .flat_map(|s| Family::ALL.map(|f| f.slice_name(s)))
                    .collect()
            })
            .unwrap_or_default();
        let stale = |n: &String| !wanted.contains(n);
        for s in self.owned.services_of(self.ns, &name) {
            if objects::owned_by(s.as_ref(), &uid) && stale(&s.name_any()) {
                let outcome = self.delete(s.as_ref()).await?;
                if outcome != Outcome::Done {
                    return Ok(outcome);
                }
            }
        }
        for s in self.owned.slices_of(self.ns, &name) {
            if objects::owned_by(s.as_ref(), &uid) && stale(&s.name_any()) {
                let outcome = self.delete(s.as_ref()).await?;
                if outcome != Outcome::Done {
                    return Ok(outcome);
                }
            }
        }
        Ok(Outcome::Done)
    }

    /// Empties every slice the group owns, so that none routes to a pod once the group's
    /// finalizer is gone (the garbage collector deletes them after the group).
    pub async fn empty(&self) -> Result<Outcome, Error> {
        let uid = self.uid();
        for s in self.owned.slices_of(self.ns, &self.group.name_any()) {
            if !objects::owned_by(s.as_ref(), &uid) || s.endpoints.is_empty() {
                continue;
            }
            let mut next = s.as_ref().clone();
            next.metadata.managed_fields = None;
            next.endpoints = Vec::new();
            let outcome = self.update(s.as_ref(), Change::Replace(next)).await?;
            if outcome != Outcome::Done {
                return Ok(outcome);
            }
        }
        Ok(Outcome::Done)
    }

    fn api<K: Kind>(&self) -> Api<K> {
        Api::namespaced(self.writer.client.clone(), self.ns)
    }

    async fn create<K: Kind>(&self, want: K) -> Result<Outcome, Error> {
        let name = want.name_any();
        let params = PostParams {
            field_manager: Some(MANAGER.into()),
            ..PostParams::default()
        };
        let slot = self.writer.slot(self.lane).await?;
        let created = self.api::<K>().create(&params, &want).await;
        drop(slot);
        match created {
            Ok(o) => {
                self.writer.metrics.route_written(K::METRIC, "create");
                debug!(kind = K::KIND, name = %name, "created");
                K::written(self.owned, o);
                Ok(Outcome::Done)
            }
            Err(e) if is_conflict(&e) => self.reread::<K>(&name).await,
            Err(source) => Err(self.err::<K>(&name, source)),
        }
    }

    async fn update<K: Kind>(&self, have: &K, change: Change<K>) -> Result<Outcome, Error> {
        let name = have.name_any();
        let api = self.api::<K>();
        let slot = self.writer.slot(self.lane).await?;
        let written = match change {
            Change::Patch(p) => {
                let params = PatchParams {
                    field_manager: Some(MANAGER.into()),
                    ..PatchParams::default()
                };
                api.patch(&name, &params, &Patch::Merge(p)).await
            }
            Change::Replace(next) => {
                let params = PostParams {
                    field_manager: Some(MANAGER.into()),
                    ..PostParams::default()
                };
                api.replace(&name, &params, &next).await
            }
        };
        drop(slot);
        match written {
            Ok(o) => {
                self.writer.metrics.route_written(K::METRIC, "update");
                debug!(kind = K::KIND, name = %name, "updated");
                K::written(self.owned, o);
                Ok(Outcome::Done)
            }
            Err(e) if is_conflict(&e) || is_not_found(&e) => self.reread::<K>(&name).await,
            Err(source) => Err(self.err::<K>(&name, source)),
        }
    }

    async fn delete<K: Kind>(&self, have: &K) -> Result<Outcome, Error> {
        let name = have.name_any();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: have.uid(),
                resource_version: have.resource_version(),
            }),
            ..DeleteParams::default()
        };
        let slot = self.writer.slot(self.lane).await?;
        let deleted = self.api::<K>().delete(&name, &params).await;
        drop(slot);
        match deleted {
            Ok(_) => {
                self.writer.metrics.route_written(K::METRIC, "delete");
                debug!(kind = K::KIND, name = %name, "deleted");
                K::gone(self.owned, self.ns, &name);
                Ok(Outcome::Done)
            }
            Err(e) if is_not_found(&e) => {
                K::gone(self.owned, self.ns, &name);
                Ok(Outcome::Done)
            }
            Err(e) if is_conflict(&e) => self.reread::<K>(&name).await,
            Err(source) => Err(self.err::<K>(&name, source)),
        }
    }

    /// Reads `name` afresh after a conflict: this group's, someone else's, or gone; then the
    /// reconciler decides again.
    async fn reread<K: Kind>(&self, name: &str) -> Result<Outcome, Error> {
        let read = self
            .api::<K>()
            .get_opt(name)
            .await
            .map_err(|source| self.err::<K>(name, source))?;
        let label = what::<K>(name);
        match read {
            Some(o) if objects::owned_by(&o, &self.uid()) => {
                self.owned.not_foreign(self.ns, &label);
                K::written(self.owned, o);
            }
            Some(_) => {
                debug!(kind = K::KIND, name = %name, "held by someone else; left alone");
                self.owned.found_foreign(self.ns, label);
            }
            None => {
                self.owned.not_foreign(self.ns, &label);
                K::gone(self.owned, self.ns, name);
            }
        }
        Ok(Outcome::Stale)
    }
}

impl Writes<'_> {
    /// Reads a name found held by someone else again once that is [`store::FOREIGN_FOR`] old
    /// (it is not watched): decides again if it changed hands.
    async fn recheck<K: Kind>(&self, name: &str) -> Result<Outcome, Error> {
        if !self.owned.foreign_due(self.ns, &what::<K>(name)) {
            return Ok(Outcome::Done);
        }
        let outcome = self.reread::<K>(name).await?;
        Ok(if self.owned.known_foreign(self.ns, &what::<K>(name)) {
            Outcome::Done
        } else {
            outcome
        })
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}
