//! The pod cache: every pod in scope reduced to what the election reads, indexed by namespace,
//! by label and by the group podium labelled it for. Finding a group's pods, or the groups a pod
//! event concerns, then costs what those pods cost, not what the cluster holds (a group whose
//! selector requires no label value still looks at its whole namespace); and a pod costs its
//! names, labels, podium's annotations, addresses and named ports instead of the kilobytes of a
//! full `Pod`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use jiff::Timestamp;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;

use podium_api::{GROUP_ANNOTATION, Protocol, TERM_ANNOTATION};

/// Annotations podium reads are its own; every other annotation is dropped from the cache.
const OWN_PREFIX: &str = "podium.dev/";

/// A pod's few podium annotations, sorted by key, in one allocation. A `BTreeMap` would spend a
/// node of eleven entries (over 500 bytes) on every pod podium labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnAnnotations(Box<[(String, String)]>);

impl OwnAnnotations {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&String> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }
}

impl FromIterator<(String, String)> for OwnAnnotations {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let mut v: Vec<(String, String)> = pairs.into_iter().collect();
        // Stable: of a repeated key (a map never has one), the first value stays.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|later, first| later.0 == first.0);
        Self(v.into_boxed_slice())
    }
}

/// A named container port: what a Service's named `targetPort` resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    /// The port's name.
    pub name: String,
    /// The container port.
    pub port: i32,
    /// Its protocol.
    pub protocol: Protocol,
}

/// A pod reduced to what the election reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID; a same-named replacement is a different pod.
    pub uid: String,
    /// The version this copy shows.
    pub resource_version: Option<String>,
    /// All labels: selectors match on them.
    pub labels: BTreeMap<String, String>,
    /// podium's own annotations (`podium.dev/…`) only.
    pub annotations: OwnAnnotations,
    /// Creation time.
    pub created: Option<Timestamp>,
    /// The Ready condition: its status, and when it last changed.
    pub ready: Option<(bool, Option<Timestamp>)>,
    /// A deletionTimestamp is set.
    pub terminating: bool,
    /// The node it runs on.
    pub node: Option<String>,
    /// Its addresses (`status.podIPs`), for the owned route's EndpointSlices.
    pub ips: Box<[IpAddr]>,
    /// Its containers' named ports only (a numeric target port needs none of them).
    pub ports: Box<[NamedPort]>,
    /// Gone from a watch scoped by a pod label selector while carrying podium's annotation: it
    /// may only have stopped matching that selector. Kept, as no member of any group, until
    /// podium has taken its keys off (or learned it is gone).
    pub out_of_scope: bool,
}

impl CachedPod {
    /// Reduces a pod as the API server sent it.
    pub fn from_pod(pod: Pod) -> Self {
        let ips = addresses(pod.status.as_ref());
        let ready = pod
            .status
            .and_then(|s| s.conditions)
            .and_then(|cs| cs.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| (c.status == "True", c.last_transition_time.map(|t| t.0)));
        let ports = pod.spec.as_ref().map(named_ports).unwrap_or_default();
        let node = pod.spec.and_then(|s| s.node_name);
        let mut cached = Self {
            namespace: String::new(),
            name: String::new(),
            uid: String::new(),
            resource_version: None,
            labels: BTreeMap::new(),
            annotations: OwnAnnotations::default(),
            created: None,
            ready,
            terminating: false,
            node,
            ips,
            ports,
            out_of_scope: false,
        };
        cached.set_metadata(pod.metadata);
        cached
    }

    /// This pod with the metadata a write returned (status and node unchanged).
    pub fn with_metadata(&self, meta: ObjectMeta) -> Self {
        let mut p = self.clone();
        p.set_metadata(meta);
        p
    }

    fn set_metadata(&mut self, meta: ObjectMeta) {
        self.namespace = meta.namespace.unwrap_or_default();
        self.name = meta.name.unwrap_or_default();
        self.uid = meta.uid.unwrap_or_default();
        self.resource_version = meta.resource_version;
        self.labels = meta.labels.unwrap_or_default();
        self.annotations = meta
            .annotations
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k.starts_with(OWN_PREFIX))
            .collect();
        self.created = meta.creation_timestamp.map(|t| t.0);
        self.terminating = meta.deletion_timestamp.is_some();
    }

    /// The group this pod leads by podium's own annotations: the term is written on the leader only.
    pub fn leads(&self) -> Option<&str> {
        self.annotations
            .contains_key(TERM_ANNOTATION)
            .then(|| self.annotations.get(GROUP_ANNOTATION).map(String::as_str))
            .flatten()
    }

    /// Whether the Ready condition is True.
    pub fn is_ready(&self) -> bool {
        self.ready.is_some_and(|(r, _)| r)
    }
}

/// The pod's addresses: `status.podIPs`, or `status.podIP` from an API server that sends only
/// that; an address that does not parse is left out.
fn addresses(status: Option<&PodStatus>) -> Box<[IpAddr]> {
    let Some(status) = status else {
        return Box::default();
    };
    let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
    let mut ips: Vec<IpAddr> = listed
        .chain(status.pod_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let mut seen = Vec::with_capacity(ips.len());
    ips.retain(|ip| {
        let new = !seen.contains(ip);
        seen.push(*ip);
        new
    });
    ips.into_boxed_slice()
}

/// The named ports of the containers (and of sidecars: init containers that keep running), as
/// the EndpointSlice controller looks a named target port up.
fn named_ports(spec: &PodSpec) -> Box<[NamedPort]> {
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let protocol = match p.protocol.as_deref() {
                None | Some("TCP") => Protocol::TCP,
                Some("UDP") => Protocol::UDP,
                Some("SCTP") => Protocol::SCTP,
                Some(_) => return None,
            };
            Some(NamedPort {
                name: p.name.clone()?,
                port: p.container_port,
                protocol,
            })
        })
        .collect()
}

/// Which of a namespace's pods a selector can match at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anchor {
    /// Pods with this label and value.
    Equal(String, String),
    /// Pods with this label and one of these values.
    In(String, Vec<String>),
    /// Any pod: the selector requires no particular label value.
    Scan,
}

/// Names by label key, then value: looked up without building a key.
type LabelIndex = HashMap<String, HashMap<String, HashSet<String>>>;

fn index_add(index: &mut LabelIndex, key: &str, value: &str, name: &str) {
    index
        .entry(key.to_string())
        .or_default()
        .entry(value.to_string())
        .or_default()
        .insert(name.to_string());
}

fn index_remove(index: &mut LabelIndex, key: &str, value: &str, name: &str) {
    let Some(values) = index.get_mut(key) else {
        return;
    };
    if let Some(names) = values.get_mut(value) {
        names.remove(name);
        if names.is_empty() {
            values.remove(value);
        }
    }
    if values.is_empty() {
        index.remove(key);
    }
}

fn index_get<'a>(index: &'a LabelIndex, key: &str, value: &str) -> Option<&'a HashSet<String>> {
    index.get(key).and_then(|v| v.get(value))
}

/// The pods of one namespace and their indexes.
#[derive(Default)]
struct Namespace {
    pods: HashMap<String, Arc<CachedPod>>,
    by_label: LabelIndex,
    /// Names by the value of `podium.dev/group`.
    by_group: HashMap<String, HashSet<String>>,
}

impl Namespace {
    fn insert(&mut self, pod: Arc<CachedPod>) -> Option<Arc<CachedPod>> {
        let old = self.remove(&pod.name);
        for (k, v) in &pod.labels {
            index_add(&mut self.by_label, k, v, &pod.name);
        }
        if let Some(g) = pod.annotations.get(GROUP_ANNOTATION) {
            self.by_group
                .entry(g.clone())
                .or_default()
                .insert(pod.name.clone());
        }
        self.pods.insert(pod.name.clone(), pod);
        old
    }

    fn remove(&mut self, name: &str) -> Option<Arc<CachedPod>> {
        let old = self.pods.remove(name)?;
        for (k, v) in &old.labels {
            index_remove(&mut self.by_label, k, v, name);
        }
        if let Some(g) = old.annotations.get(GROUP_ANNOTATION)
            && let Some(names) = self.by_group.get_mut(g)
        {
            names.remove(name);
            if names.is_empty() {
                self.by_group.remove(g);
            }
        }
        Some(old)
    }

    fn named<'a>(&'a self, names: impl IntoIterator<Item = &'a String>) -> Vec<Arc<CachedPod>> {
        names
            .into_iter()
            .filter_map(|n| self.pods.get(n).cloned())
            .collect()
    }
}

/// What the cache saw change: a pod before and after (`None` where it was or is absent).
#[derive(Debug, Clone)]
pub struct Change {
    /// The cached copy before the event.
    pub before: Option<Arc<CachedPod>>,
    /// The cached copy after it.
    pub after: Option<Arc<CachedPod>>,
}

#[derive(Default)]
struct State {
    /// Keep pods podium labelled when the watch says they are gone (see `out_of_scope`).
    keep_unselected: bool,
    namespaces: HashMap<String, Namespace>,
    /// A relist in progress: the pods listed so far. The old state is served until it completes.
    relisting: Option<Vec<CachedPod>>,
    len: usize,
}

impl State {
    fn upsert(&mut self, pod: CachedPod) -> Change {
        let ns = self.namespaces.entry(pod.namespace.clone()).or_default();
        let after = Arc::new(pod);
        let before = ns.insert(after.clone());
        if before.is_none() {
            self.len += 1;
        }
        Change {
            before,
            after: Some(after),
        }
    }

    /// A pod the watch no longer shows: deleted, or (under a pod selector) out of scope.
    fn vanished(&mut self, pod: CachedPod) -> Change {
        if self.keep_unselected && pod.annotations.contains_key(GROUP_ANNOTATION) {
            return self.upsert(CachedPod {
                out_of_scope: true,
                ..pod
            });
        }
        self.delete(&pod.namespace, &pod.name)
    }

    fn delete(&mut self, namespace: &str, name: &str) -> Change {
        let before = self
            .namespaces
            .get_mut(namespace)
            .and_then(|ns| ns.remove(name));
        if before.is_some() {
            self.len -= 1;
            if self
                .namespaces
                .get(namespace)
                .is_some_and(|ns| ns.pods.is_empty())
            {
                self.namespaces.remove(namespace);
            }
        }
        Change {
            before,
            after: None,
        }
    }

    /// Replaces everything with a completed relist, and says what differs from before.
    fn replace(&mut self, listed: Vec<CachedPod>) -> Vec<Change> {
        let mut old = std::mem::take(&mut self.namespaces);
        self.len = 0;
        let mut changes = vec![];
        for pod in listed {
            let before = old
                .get_mut(&pod.namespace)
                .and_then(|ns| ns.remove(&pod.name));
            let unchanged = before
                .as_ref()
                .is_some_and(|b| b.uid == pod.uid && b.resource_version == pod.resource_version);
            // An unchanged pod keeps its shared copy.
            let pod = match before.clone() {
                Some(b) if unchanged => b,
                _ => Arc::new(pod),
            };
            self.namespaces
                .entry(pod.namespace.clone())
                .or_default()
                .insert(pod.clone());
            self.len += 1;
            if !unchanged {
                changes.push(Change {
                    before,
                    after: Some(pod),
                });
            }
        }
        // What the relist no longer shows was deleted (or left the pod selector) while the
        // watch was down.
        let vanished: Vec<Arc<CachedPod>> = old
            .into_values()
            .flat_map(|ns| ns.pods.into_values())
            .collect();
        for before in vanished {
            let mut change = self.vanished(before.as_ref().clone());
            change.before = Some(before);
            changes.push(change);
        }
        changes
    }
}

/// Every pod in scope, reduced and indexed; filled from a pod watch by [`PodCache::apply`].
#[derive(Default)]
pub struct PodCache {
    state: RwLock<State>,
}

impl PodCache {
    /// A cache for a watch scoped by a pod label selector: a pod podium labelled that the watch
    /// drops is kept out of scope, not forgotten (it may still carry a leader's label).
    pub fn scoped_by_selector() -> Self {
        Self {
            state: RwLock::new(State {
                keep_unselected: true,
                ..State::default()
            }),
        }
    }

    /// Forgets a pod kept out of scope once podium's keys are off it or it is gone.
    pub fn forget_out_of_scope(&self, namespace: &str, name: &str, uid: &str) {
        let mut state = self.write();
        let kept = state
            .namespaces
            .get(namespace)
            .and_then(|ns| ns.pods.get(name))
            .is_some_and(|p| p.out_of_scope && p.uid == uid);
        if kept {
            state.delete(namespace, name);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one watch event and returns what changed (nothing while a relist is in progress:
    /// its changes come when it completes).
    pub fn apply(&self, event: watcher::Event<Pod>) -> Vec<Change> {
        let mut state = self.write();
        match event {
            watcher::Event::Apply(pod) => vec![state.upsert(CachedPod::from_pod(pod))],
            watcher::Event::Delete(pod) => vec![state.vanished(CachedPod::from_pod(pod))],
            watcher::Event::Init => {
                state.relisting = Some(vec![]);
                vec![]
            }
            watcher::Event::InitApply(pod) => {
                let p = CachedPod::from_pod(pod);
                match state.relisting.as_mut() {
                    Some(listed) => {
                        listed.push(p);
                        vec![]
                    }
                    None => vec![state.upsert(p)],
                }
            }
            watcher::Event::InitDone => match state.relisting.take() {
                Some(listed) => state.replace(listed),
                None => vec![],
            },
        }
    }

    /// The cached pod of that name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<CachedPod>> {
        self.read()
            .namespaces
            .get(namespace)
            .and_then(|ns| ns.pods.get(name).cloned())
    }

    /// The pods of a namespace a selector with this anchor can match (a superset: the caller
    /// still matches the whole selector).
    pub fn candidates(&self, namespace: &str, anchor: &Anchor) -> Vec<Arc<CachedPod>> {
        let state = self.read();
        let Some(ns) = state.namespaces.get(namespace) else {
            return vec![];
        };
        match anchor {
            Anchor::Equal(k, v) => index_get(&ns.by_label, k, v)
                .map(|names| ns.named(names))
                .unwrap_or_default(),
            Anchor::In(k, values) => values
                .iter()
                .filter_map(|v| index_get(&ns.by_label, k, v))
                .flat_map(|names| ns.named(names))
                .collect(),
            Anchor::Scan => ns.pods.values().cloned().collect(),
        }
    }

    /// The pods carrying `podium.dev/group: <group>`.
    pub fn labelled_for(&self, namespace: &str, group: &str) -> Vec<Arc<CachedPod>> {
        let state = self.read();
        state
            .namespaces
            .get(namespace)
            .and_then(|ns| ns.by_group.get(group).map(|names| ns.named(names)))
            .unwrap_or_default()
    }

    /// How many pods the cache holds.
    pub fn len(&self) -> usize {
        self.read().len
    }

    /// The cache holds no pod.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
