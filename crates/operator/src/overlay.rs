//! What podium wrote or re-read that its caches may not show yet.
//!
//! A reconcile triggered by podium's own write can run before the watch delivers that write,
//! and a write that conflicts is followed by a fresh read the watch has not delivered either.
//! Deciding on the stale copy would repeat writes (or repeat a handoff) or conflict again. Each
//! write or fresh read is kept here with its resourceVersion; the cache is believed again once
//! it shows that version or a later one. resourceVersions are compared as the etcd revisions
//! the API server gives them (as kube's own watch cache does); a version that is not a number
//! never overrides the cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::cache::CachedPod;
use podium_api::ElectionGroup;

type Key = (String, String);

struct Echo<T> {
    latest: T,
    revision: u64,
    at: Instant,
}

/// Recent writes and fresh reads of pods and groups, keyed by namespace and name.
#[derive(Default)]
pub struct Overlay {
    pods: Mutex<HashMap<Key, Echo<Arc<CachedPod>>>>,
    groups: Mutex<HashMap<Key, Echo<ElectionGroup>>>,
    /// Pods (by UID) the API server says are gone while the cache may still show them.
    gone: Mutex<HashMap<String, Instant>>,
}

/// Entries the cache never caught up with (the object was deleted) are dropped after this.
const KEEP: Duration = Duration::from_secs(120);

fn key<K: ResourceExt>(o: &K) -> Key {
    (o.namespace().unwrap_or_default(), o.name_any())
}

fn pod_key(p: &CachedPod) -> Key {
    (p.namespace.clone(), p.name.clone())
}

/// The revision a resourceVersion names, if it is one.
fn revision(rv: Option<&String>) -> Option<u64> {
    rv.and_then(|v| v.parse().ok())
}

fn remember<T>(map: &Mutex<HashMap<Key, Echo<T>>>, k: Key, latest: T, rv: Option<&String>) {
    let Some(revision) = revision(rv) else {
        return;
    };
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    if m.len() > 4096 {
        m.retain(|_, e| e.at.elapsed() < KEEP);
    }
    // Writes of one object can finish out of order; the newest revision wins.
    if m.get(&k).is_some_and(|e| e.revision > revision) {
        return;
    }
    m.insert(
        k,
        Echo {
            latest,
            revision,
            at: Instant::now(),
        },
    );
}

fn recall<T: Clone>(
    map: &Mutex<HashMap<Key, Echo<T>>>,
    k: &Key,
    cached_rv: Option<&String>,
) -> Option<T> {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    let newer = m.get(k).is_some_and(|e| match revision(cached_rv) {
        Some(cached) => e.revision > cached,
        None => false,
    });
    if newer {
        m.get(k).map(|e| e.latest.clone())
    } else {
        m.remove(k);
        None
    }
}

/// Drops the echo under `k` once the watch shows its revision or a later one (`None`: the
/// object is gone): it has served its purpose, and keeping it would keep every write of the
/// last [`KEEP`] in memory.
fn caught_up<T>(
    map: &Mutex<HashMap<Key, Echo<T>>>,
    ns: &str,
    name: &str,
    seen_rv: Option<&String>,
) {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    // Every watch event passes here; most find nothing to drop, and need no key built.
    if m.is_empty() {
        return;
    }
    let k = &(ns.to_string(), name.to_string());
    let done = m.get(k).is_some_and(|e| match seen_rv {
        None => true,
        Some(rv) => revision(Some(rv)).is_some_and(|seen| seen >= e.revision),
    });
    if done {
        m.remove(k);
    }
}

impl Overlay {
    /// The pod watch delivered this version of a pod (`None`: its deletion).
    pub fn pod_seen(&self, namespace: &str, name: &str, rv: Option<&String>) {
        caught_up(&self.pods, namespace, name, rv);
    }

    /// The group watch delivered this version of a group (`None`: its deletion).
    pub fn group_seen(&self, namespace: &str, name: &str, rv: Option<&String>) {
        caught_up(&self.groups, namespace, name, rv);
    }

    /// Records a pod metadata write made against `cached`: the pod as it now is.
    pub fn pod_written(&self, cached: &CachedPod, meta: ObjectMeta) {
        self.pod_read(cached.with_metadata(meta));
    }

    /// Records a pod read straight from the API server.
    pub fn pod_read(&self, pod: CachedPod) {
        let k = pod_key(&pod);
        let rv = pod.resource_version.clone();
        remember(&self.pods, k, Arc::new(pod), rv.as_ref());
    }

    /// The newest copy of a pod: the cached one, or podium's newer write or read.
    pub fn pod(&self, cached: &Arc<CachedPod>) -> Arc<CachedPod> {
        recall(
            &self.pods,
            &pod_key(cached),
            cached.resource_version.as_ref(),
        )
        .unwrap_or_else(|| cached.clone())
    }

    /// Records that the API server no longer has the pod with this UID.
    pub fn pod_deleted(&self, uid: &str) {
        let mut g = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() > 4096 {
            g.retain(|_, at| at.elapsed() < KEEP);
        }
        g.insert(uid.to_string(), Instant::now());
    }

    /// The cached pod is known to be gone.
    pub fn pod_gone(&self, cached: &CachedPod) -> bool {
        !cached.uid.is_empty() && self.uid_gone(&cached.uid)
    }

    /// The pod with this UID is known to be gone.
    pub fn uid_gone(&self, uid: &str) -> bool {
        self.gone
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .is_some_and(|at| at.elapsed() < KEEP)
    }

    /// Records a group as a write returned it or a fresh read found it.
    pub fn group_written(&self, group: ElectionGroup) {
        let rv = group.metadata.resource_version.clone();
        remember(&self.groups, key(&group), group, rv.as_ref());
    }

    /// The group as podium last wrote or read it, if the cached copy is older.
    pub fn group(&self, cached: &ElectionGroup) -> Option<ElectionGroup> {
        recall(
            &self.groups,
            &key(cached),
            cached.metadata.resource_version.as_ref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(rv: &str, role: &str) -> Arc<CachedPod> {
        Arc::new(CachedPod::from_pod(
            serde_json::from_value(serde_json::json!({"metadata": {
                "name": "p", "namespace": "ns", "resourceVersion": rv, "labels": {"podium.dev/role": role}}}))
            .unwrap(),
        ))
    }

    fn meta(rv: &str, role: &str) -> ObjectMeta {
        serde_json::from_value(serde_json::json!({
            "name": "p", "namespace": "ns", "resourceVersion": rv, "labels": {"podium.dev/role": role}}))
        .unwrap()
    }

    #[test]
    fn stale_cache_shows_the_write_until_it_catches_up() {
        let o = Overlay::default();
        let cached = pod("1", "follower");
        o.pod_written(&cached, meta("2", "leader"));
        assert_eq!(o.pod(&cached).labels["podium.dev/role"], "leader");
        // Caught up: the cache is believed, and the entry is gone.
        assert_eq!(
            o.pod(&pod("2", "leader")).labels["podium.dev/role"],
            "leader"
        );
        assert_eq!(
            o.pod(&pod("1", "follower")).labels["podium.dev/role"],
            "follower"
        );
    }

    #[test]
    fn a_later_version_in_the_cache_wins() {
        let o = Overlay::default();
        o.pod_written(&pod("1", "follower"), meta("2", "leader"));
        assert_eq!(o.pod(&pod("3", "other")).labels["podium.dev/role"], "other");
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_write() {
        let o = Overlay::default();
        o.pod_written(&pod("4", "follower"), meta("9", "leader"));
        o.pod_written(&pod("4", "follower"), meta("7", "follower"));
        // A cache at a version between the two writes is older than the newest one.
        assert_eq!(
            o.pod(&pod("8", "other")).labels["podium.dev/role"],
            "leader"
        );
    }

    #[test]
    fn versions_that_are_not_numbers_never_override_the_cache() {
        let o = Overlay::default();
        o.pod_written(&pod("1", "follower"), meta("x", "leader"));
        assert_eq!(
            o.pod(&pod("1", "follower")).labels["podium.dev/role"],
            "follower"
        );
    }

    #[test]
    fn an_echo_goes_once_the_watch_shows_its_version_or_the_deletion() {
        let o = Overlay::default();
        let cached = pod("5", "follower");
        o.pod_written(&cached, meta("7", "leader"));
        // An older version from the watch leaves the echo.
        o.pod_seen("ns", "p", Some(&"6".to_string()));
        assert_eq!(o.pods.lock().unwrap().len(), 1);
        assert_eq!(o.pod(&cached).labels["podium.dev/role"], "leader");
        o.pod_seen("ns", "p", Some(&"7".to_string()));
        assert!(o.pods.lock().unwrap().is_empty());
        o.pod_written(&cached, meta("9", "leader"));
        o.pod_seen("ns", "p", None);
        assert!(o.pods.lock().unwrap().is_empty(), "a deletion drops it too");
        // Another pod's version leaves it alone.
        o.pod_written(&cached, meta("11", "leader"));
        o.pod_seen("ns", "q", Some(&"12".to_string()));
        assert_eq!(o.pods.lock().unwrap().len(), 1);
    }
}
