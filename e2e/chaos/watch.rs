//! The checker's watches of pods, ElectionGroups and EndpointSlices. A watch that ends or fails
//! is resumed from the last resourceVersion it saw, so no event is lost; only when the API
//! server no longer has that version (410 Gone) does it relist, and then the time between the
//! break and the relist is recorded as a [`Gap`](super::history::Gap). A watch that cannot be
//! restored for [`BLIND_LIMIT`] makes the run fail.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::history::{Gap, History};

/// How long a watch may stay broken before the checker gives up.
pub const BLIND_LIMIT: Duration = Duration::from_secs(120);

/// The history and a notification for every change to it.
pub struct Shared {
    /// Everything the watches saw.
    pub history: Mutex<History>,
    /// Woken after every applied event.
    pub changed: tokio::sync::Notify,
}

impl Shared {
    /// Locks the history (a panic elsewhere must not hide the record).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A kind the checker watches, and how its events change the history.
pub trait Watched: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static {
    /// Name of the stream in gaps and logs.
    const STREAM: &'static str;
    /// An object was added or modified.
    fn apply(h: &mut History, obj: Self);
    /// An object was deleted.
    fn delete(h: &mut History, name: &str);
    /// Names of the objects of this kind in the history.
    fn known(h: &History) -> Vec<String>;
    /// Makes the history's objects of this kind the listed ones: object by object, unless a
    /// kind's invariants need the relist judged as the one state it is.
    fn replace(h: &mut History, listed: Vec<Self>) {
        let names: Vec<String> = listed.iter().map(|o| o.name_any()).collect();
        for name in Self::known(h) {
            if !names.contains(&name) {
                Self::delete(h, &name);
            }
        }
        for o in listed {
            Self::apply(h, o);
        }
    }
}

impl Watched for Pod {
    const STREAM: &'static str = "pods";
    fn apply(h: &mut History, obj: Self) {
        h.apply_pod(obj)
    }
    fn delete(h: &mut History, name: &str) {
        h.delete_pod(name)
    }
    fn known(h: &History) -> Vec<String> {
        h.pod_names()
    }
}

impl Watched for DynamicObject {
    const STREAM: &'static str = "groups";
    fn apply(h: &mut History, obj: Self) {
        h.apply_group(obj)
    }
    fn delete(h: &mut History, name: &str) {
        h.delete_group(name)
    }
    fn known(h: &History) -> Vec<String> {
        h.group_names()
    }
}

impl Watched for EndpointSlice {
    const STREAM: &'static str = "slices";
    fn apply(h: &mut History, obj: Self) {
        h.apply_slice(obj)
    }
    fn delete(h: &mut History, name: &str) {
        h.delete_slice(name)
    }
    fn known(h: &History) -> Vec<String> {
        h.routes.names()
    }
    fn replace(h: &mut History, listed: Vec<Self>) {
        h.replace_slices(listed)
    }
}

/// Follows one kind for as long as the task runs.
pub async fn follow<K: Watched>(api: Api<K>, shared: Arc<Shared>) {
    let mut rv = match relist(&api, &shared, None).await {
        Some(rv) => rv,
        None => return,
    };
    let mut broken_since: Option<Instant> = None;
    loop {
        let end = watch_from(&api, &shared, &mut rv, &mut broken_since).await;
        let since = *broken_since.get_or_insert_with(Instant::now);
        match end {
            WatchEnd::Gone(reason) => {
                let from = shared.lock().now_ms() - since.elapsed().as_millis() as u64;
                match relist(&api, &shared, Some((from, reason))).await {
                    Some(new_rv) => {
                        rv = new_rv;
                        broken_since = None;
                    }
                    None => return,
                }
            }
            WatchEnd::Closed => shared.lock().resumes += 1,
            WatchEnd::Failed(e) => {
                shared.lock().resumes += 1;
                if since.elapsed() > BLIND_LIMIT {
                    let msg = format!("{} watch broken for {BLIND_LIMIT:?}: {e}", K::STREAM);
                    shared.lock().fatal.get_or_insert(msg);
                    shared.changed.notify_waiters();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// How a watch call ended.
enum WatchEnd {
    /// The server closed it (its timeout): resume.
    Closed,
    /// It failed (connection refused or reset, server error): resume after a pause.
    Failed(String),
    /// The resourceVersion is gone: only a relist can restore a complete state.
    Gone(String),
}

/// One watch call from `rv`, applying its events; `rv` advances with every event and
/// bookmark, and `broken_since` is cleared once events flow again.
async fn watch_from<K: Watched>(
    api: &Api<K>,
    shared: &Shared,
    rv: &mut String,
    broken_since: &mut Option<Instant>,
) -> WatchEnd {
    let wp = WatchParams::default().timeout(240);
    let stream = match api.watch(&wp, rv).await {
        Ok(s) => s,
        Err(kube::Error::Api(s)) if s.code == 410 => return WatchEnd::Gone(s.message),
        Err(e) => return WatchEnd::Failed(e.to_string()),
    };
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => return WatchEnd::Failed(e.to_string()),
        };
        match ev {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                *rv = o.resource_version().unwrap_or_default();
                K::apply(&mut shared.lock(), o);
            }
            WatchEvent::Deleted(o) => {
                *rv = o.resource_version().unwrap_or_default();
                K::delete(&mut shared.lock(), &o.name_any());
            }
            WatchEvent::Bookmark(b) => *rv = b.metadata.resource_version,
            WatchEvent::Error(s) if s.code == 410 => return WatchEnd::Gone(s.message),
            WatchEvent::Error(s) => return WatchEnd::Failed(format!("{} {}", s.code, s.message)),
        }
        *broken_since = None;
        shared.changed.notify_waiters();
    }
    WatchEnd::Closed
}

/// Lists the kind and makes the history match the list; with `gap`, records it. Returns the
/// list's resourceVersion, or None when the API server stayed unreachable (run fails).
async fn relist<K: Watched>(
    api: &Api<K>,
    shared: &Shared,
    gap: Option<(u64, String)>,
) -> Option<String> {
    let started = Instant::now();
    let list = loop {
        match api.list(&ListParams::default()).await {
            Ok(l) => break l,
            Err(e) if started.elapsed() > BLIND_LIMIT => {
                let msg = format!("cannot list {}: {e}", K::STREAM);
                shared.lock().fatal.get_or_insert(msg);
                shared.changed.notify_waiters();
                return None;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let mut h = shared.lock();
    K::replace(&mut h, list.items);
    if let Some((from, reason)) = gap {
        let g = Gap {
            stream: K::STREAM,
            from,
            to: h.now_ms(),
            reason,
            fault: h.fault.clone(),
        };
        println!("chaos: {} watch relisted after a gap: {g:?}", K::STREAM);
        h.gaps.push(g);
    }
    drop(h);
    shared.changed.notify_waiters();
    list.metadata.resource_version
}
