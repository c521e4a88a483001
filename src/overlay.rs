//! What podium wrote that its caches may not show yet.
//!
//! A reconcile triggered by podium's own write can run before the watch delivers that write.
//! Deciding on the stale copy would repeat writes (and, for a handoff request, repeat the
//! handoff). Each write records the resourceVersion it replaced; while the cache still shows
//! that version, the written state stands in for it. Any other version means the cache caught
//! up or someone else changed the object, and the cache is believed again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::crd::ElectionGroup;

type Key = (String, String);

struct Echo<T> {
    stale: Vec<String>,
    latest: T,
    latest_rv: Option<String>,
    at: Instant,
}

/// Recent writes of pods' metadata and of groups, keyed by namespace and name.
#[derive(Default)]
pub struct Overlay {
    pods: Mutex<HashMap<Key, Echo<ObjectMeta>>>,
    groups: Mutex<HashMap<Key, Echo<ElectionGroup>>>,
}

/// Entries the cache never caught up with (the object was deleted) are dropped after this.
const KEEP: Duration = Duration::from_secs(120);

fn key<K: ResourceExt>(o: &K) -> Key {
    (o.namespace().unwrap_or_default(), o.name_any())
}

fn remember<T>(
    map: &Mutex<HashMap<Key, Echo<T>>>,
    k: Key,
    replaced: Option<String>,
    latest: T,
    latest_rv: Option<String>,
) {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    if m.len() > 4096 {
        m.retain(|_, e| e.at.elapsed() < KEEP);
    }
    // Every version before this write is stale now, including an earlier write's result.
    let mut stale = match m.remove(&k) {
        Some(e) => e.stale.into_iter().chain(e.latest_rv).collect(),
        None => Vec::new(),
    };
    stale.extend(replaced);
    m.insert(
        k,
        Echo {
            stale,
            latest,
            latest_rv,
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
    let stale = m
        .get(k)
        .is_some_and(|e| cached_rv.is_some_and(|rv| e.stale.contains(rv)));
    if stale {
        m.get(k).map(|e| e.latest.clone())
    } else {
        m.remove(k);
        None
    }
}

impl Overlay {
    /// Records a pod metadata write: `replaced` is the version it was made against.
    pub fn pod_written(&self, namespace: &str, replaced: Option<String>, meta: ObjectMeta) {
        let k = (namespace.to_string(), meta.name.clone().unwrap_or_default());
        let rv = meta.resource_version.clone();
        remember(&self.pods, k, replaced, meta, rv);
    }

    /// The pod as podium last wrote it, if the cached copy predates that write.
    pub fn pod(&self, cached: &Arc<Pod>) -> Arc<Pod> {
        match recall(
            &self.pods,
            &key(cached.as_ref()),
            cached.metadata.resource_version.as_ref(),
        ) {
            Some(meta) => {
                let mut p = cached.as_ref().clone();
                p.metadata.labels = meta.labels;
                p.metadata.annotations = meta.annotations;
                Arc::new(p)
            }
            None => cached.clone(),
        }
    }

    /// Records a group write made against version `replaced`, with the group as it now is.
    pub fn group_written(&self, replaced: Option<String>, group: ElectionGroup) {
        let rv = group.metadata.resource_version.clone();
        remember(&self.groups, key(&group), replaced, group, rv);
    }

    /// The group as podium last wrote it, if the cached copy predates that write.
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

    fn pod(rv: &str, role: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({"metadata": {
                "name": "p", "namespace": "ns", "resourceVersion": rv, "labels": {"podium.dev/role": role}}}))
            .unwrap(),
        )
    }

    #[test]
    fn stale_cache_shows_the_write_until_it_catches_up() {
        let o = Overlay::default();
        let written = pod("2", "leader").metadata.clone();
        o.pod_written("ns", Some("1".into()), written);
        let seen = o.pod(&pod("1", "follower"));
        assert_eq!(seen.labels()["podium.dev/role"], "leader");
        // Caught up: the cache is believed, and the entry is gone.
        assert_eq!(
            o.pod(&pod("2", "leader")).labels()["podium.dev/role"],
            "leader"
        );
        assert_eq!(
            o.pod(&pod("1", "follower")).labels()["podium.dev/role"],
            "follower"
        );
    }

    #[test]
    fn someone_elses_change_wins() {
        let o = Overlay::default();
        o.pod_written("ns", Some("1".into()), pod("2", "leader").metadata.clone());
        assert_eq!(
            o.pod(&pod("3", "other")).labels()["podium.dev/role"],
            "other"
        );
    }
}
