//! The Services and EndpointSlices podium created, as their watches and podium's own writes
//! show them, indexed by the group they belong to; and the names found taken by someone else.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use podium_api::{GROUP_LABEL, Guarded};

/// How long a name found taken is believed taken without another look: a Service nobody
/// labelled for podium is not watched, so its deletion is only seen by reading it again.
pub const FOREIGN_FOR: Duration = Duration::from_secs(60);

/// A name not looked at again for this long belongs to a group that went away.
const FORGET_FOREIGN: Duration = Duration::from_secs(600);

type Key = (String, String);

/// The group an object of podium's belongs to: its label, else its controlling owner.
pub fn group_of<K: Resource>(obj: &K) -> Option<ObjectRef<Guarded>> {
    let ns = obj.meta().namespace.clone()?;
    let name = obj
        .meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(GROUP_LABEL).cloned())
        .or_else(|| {
            obj.meta()
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true) && o.kind == "ElectionGroup")
                .map(|o| o.name.clone())
        })?;
    Some(ObjectRef::new(&name).within(&ns))
}

fn revision<K: Resource>(obj: &K) -> Option<u64> {
    obj.meta().resource_version.as_ref()?.parse().ok()
}

/// Objects of one kind, by namespace and name and by group.
struct Objects<K> {
    by_name: HashMap<Key, Arc<K>>,
    by_group: HashMap<Key, BTreeSet<String>>,
    relisting: Option<Vec<K>>,
}

impl<K> Default for Objects<K> {
    fn default() -> Self {
        Self {
            by_name: HashMap::new(),
            by_group: HashMap::new(),
            relisting: None,
        }
    }
}

impl<K: Resource + Clone> Objects<K> {
    /// Keeps `obj` unless a newer revision of it is held (podium's own write may be ahead of
    /// its watch).
    fn upsert(&mut self, obj: K) {
        let key = (obj.namespace().unwrap_or_default(), obj.name_any());
        if let Some(old) = self.by_name.get(&key) {
            if let (Some(o), Some(n)) = (revision(old.as_ref()), revision(&obj))
                && o > n
                && old.uid() == obj.uid()
            {
                return;
            }
            self.unindex(&key);
        }
        if let Some(g) = group_of(&obj) {
            self.by_group
                .entry((key.0.clone(), g.name))
                .or_default()
                .insert(key.1.clone());
        }
        self.by_name.insert(key, Arc::new(obj));
    }

    fn unindex(&mut self, key: &Key) {
        let Some(old) = self.by_name.remove(key) else {
            return;
        };
        if let Some(g) = group_of(old.as_ref()) {
            let gk = (key.0.clone(), g.name);
            if let Some(names) = self.by_group.get_mut(&gk) {
                names.remove(&key.1);
                if names.is_empty() {
                    self.by_group.remove(&gk);
                }
            }
        }
    }

    fn apply(&mut self, event: watcher::Event<K>) {
        match event {
            watcher::Event::Apply(o) => self.upsert(o),
            watcher::Event::Delete(o) => {
                self.unindex(&(o.namespace().unwrap_or_default(), o.name_any()));
            }
            watcher::Event::Init => self.relisting = Some(Vec::new()),
            watcher::Event::InitApply(o) => match self.relisting.as_mut() {
                Some(listed) => listed.push(o),
                None => self.upsert(o),
            },
            watcher::Event::InitDone => {
                if let Some(listed) = self.relisting.take() {
                    self.by_name.clear();
                    self.by_group.clear();
                    for o in listed {
                        self.upsert(o);
                    }
                }
            }
        }
    }

    fn of_group(&self, ns: &str, group: &str) -> Vec<Arc<K>> {
        self.by_group
            .get(&(ns.to_string(), group.to_string()))
            .into_iter()
            .flatten()
            .filter_map(|n| self.by_name.get(&(ns.to_string(), n.clone())).cloned())
            .collect()
    }
}

/// podium's Services and EndpointSlices, and the names someone else holds.
#[derive(Default)]
pub struct OwnedObjects {
    services: RwLock<Objects<Service>>,
    slices: RwLock<Objects<EndpointSlice>>,
    /// `(namespace, "Service <name>")` found taken by an object not podium's, and when.
    foreign: Mutex<HashMap<Key, Instant>>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl OwnedObjects {
    /// Applies one event of the Service watch.
    pub fn apply_service(&self, event: watcher::Event<Service>) {
        write(&self.services).apply(event);
    }

    /// Applies one event of the EndpointSlice watch.
    pub fn apply_slice(&self, event: watcher::Event<EndpointSlice>) {
        write(&self.slices).apply(event);
    }

    /// The Service of that name, as last seen or written.
    pub fn service(&self, ns: &str, name: &str) -> Option<Arc<Service>> {
        read(&self.services)
            .by_name
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// The EndpointSlice of that name, as last seen or written.
    pub fn slice(&self, ns: &str, name: &str) -> Option<Arc<EndpointSlice>> {
        read(&self.slices)
            .by_name
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// The Services labelled for the group.
    pub fn services_of(&self, ns: &str, group: &str) -> Vec<Arc<Service>> {
        read(&self.services).of_group(ns, group)
    }

    /// The EndpointSlices labelled for the group.
    pub fn slices_of(&self, ns: &str, group: &str) -> Vec<Arc<EndpointSlice>> {
        read(&self.slices).of_group(ns, group)
    }

    /// Records a Service podium wrote or read afresh.
    pub fn service_written(&self, s: Service) {
        write(&self.services).upsert(s);
    }

    /// Records an EndpointSlice podium wrote or read afresh.
    pub fn slice_written(&self, s: EndpointSlice) {
        write(&self.slices).upsert(s);
    }

    /// Forgets a Service podium deleted or found gone.
    pub fn service_gone(&self, ns: &str, name: &str) {
        write(&self.services).unindex(&(ns.to_string(), name.to_string()));
    }

    /// Forgets an EndpointSlice podium deleted or found gone.
    pub fn slice_gone(&self, ns: &str, name: &str) {
        write(&self.slices).unindex(&(ns.to_string(), name.to_string()));
    }

    /// Notes that `what` (e.g. `Service api-leader`) is held by someone else, as just read.
    pub fn found_foreign(&self, ns: &str, what: String) {
        let mut f = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
        f.retain(|_, at| at.elapsed() < FORGET_FOREIGN);
        f.insert((ns.to_string(), what), Instant::now());
    }

    /// Whether `what` was last found held by someone else.
    pub fn known_foreign(&self, ns: &str, what: &str) -> bool {
        self.foreign_since(ns, what).is_some()
    }

    /// Whether `what` was found held by someone else [`FOREIGN_FOR`] ago or longer: time to
    /// read it again.
    pub fn foreign_due(&self, ns: &str, what: &str) -> bool {
        self.foreign_since(ns, what)
            .is_some_and(|at| at.elapsed() >= FOREIGN_FOR)
    }

    fn foreign_since(&self, ns: &str, what: &str) -> Option<Instant> {
        let f = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
        f.get(&(ns.to_string(), what.to_string())).copied()
    }

    /// Forgets that `what` was held by someone else (podium now holds it, or it is gone).
    pub fn not_foreign(&self, ns: &str, what: &str) {
        let mut f = self.foreign.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(&(ns.to_string(), what.to_string()));
    }
}
