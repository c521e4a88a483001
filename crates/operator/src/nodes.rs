//! Node loss: watches the node Leases (namespace `kube-node-lease`) of the nodes that host
//! leaders and reserved successors — only those, so the cost follows the groups, not the size
//! of the cluster — and says how long each Lease has gone without a renewal.
//!
//! Silence is measured on this process's monotonic clock from the moment its own watch saw the
//! Lease's resourceVersion change (every renewal is a write), never by comparing the
//! `renewTime` a kubelet wrote against this process's wall clock: clock skew between nodes and
//! the controller does not matter. The measure errs on the side of the node: the watch sees a
//! renewal a little after it happened. While the watch is not answering, or before it has seen
//! the Lease at all, there is no measure, and no node counts as lost.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use podium_api::Guarded;
use podium_member::watches::relisting;

/// The namespace where kubelets keep their node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// A group that asked about a node, with its `nodeLossSeconds`.
type Askers = HashMap<ObjectRef<Guarded>, Duration>;

/// What this process has seen of one node's Lease.
#[derive(Debug, Default)]
struct Seen {
    /// The Lease's last resourceVersion.
    version: Option<String>,
    /// When the watch saw that version appear.
    renewed: Option<Instant>,
    /// The watch has listed and is answering.
    healthy: bool,
    /// The groups to wake when the node may have become lost.
    askers: Askers,
    /// The last deadline whose askers were woken.
    woken: Option<Instant>,
    /// The version a read of the Lease confirmed as silent: while it is still the latest seen,
    /// the loss needs no second read (a group on a lost node is reconciled on every pod event).
    confirmed: Option<String>,
}

impl Seen {
    /// How long the Lease has gone unrenewed, if this process can tell.
    fn silence(&self, now: Instant) -> Option<Duration> {
        self.renewed
            .filter(|_| self.healthy)
            .map(|t| now.saturating_duration_since(t))
    }

    /// The groups for which the node counts as lost now: each left the node's pods out of its
    /// candidates, and must look again once it renews.
    fn lost_for(&self, now: Instant) -> Vec<ObjectRef<Guarded>> {
        let Some(silence) = self.silence(now) else {
            return vec![];
        };
        self.askers
            .iter()
            .filter(|(_, loss)| silence >= **loss)
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// The next instant at which some asker's node would count as lost, not yet woken for.
    fn next_deadline(&self) -> Option<Instant> {
        let renewed = self.renewed.filter(|_| self.healthy)?;
        self.askers
            .values()
            .map(|loss| renewed + *loss)
            .filter(|d| self.woken.is_none_or(|w| *d > w))
            .min()
    }
}

struct Watched {
    seen: Arc<Mutex<Seen>>,
    /// Wakes the watch task when a group starts asking or changes its `nodeLossSeconds`.
    askers_changed: Arc<tokio::sync::Notify>,
    task: JoinHandle<()>,
}

/// The node Leases podium watches, and the groups each matters to.
pub struct NodeLeases {
    api: Api<Lease>,
    nodes: Mutex<HashMap<String, Watched>>,
    /// Per group, the nodes it asked about last.
    wanted: Mutex<HashMap<ObjectRef<Guarded>, HashSet<String>>>,
    wake: mpsc::UnboundedSender<ObjectRef<Guarded>>,
}

impl NodeLeases {
    /// A tracker reading Leases through `client`; groups to reconcile again arrive on the
    /// returned stream.
    pub fn new(client: Client) -> (Self, mpsc::UnboundedReceiver<ObjectRef<Guarded>>) {
        let (wake, woken) = mpsc::unbounded();
        let tracker = Self {
            api: Api::namespaced(client, NODE_LEASE_NAMESPACE),
            nodes: Mutex::default(),
            wanted: Mutex::default(),
            wake,
        };
        (tracker, woken)
    }

    /// Records that `group` cares about exactly `nodes` now (each with its `nodeLossSeconds`),
    /// starts watching new ones, stops watching nodes no group cares about any more, and
    /// returns how long each node's Lease has gone unrenewed, where that is known. A node the
    /// group found lost stays watched for it until it renews, even once the group's leader
    /// has moved away: otherwise the pods on that node would look like candidates again.
    pub fn observe(
        &self,
        group: &ObjectRef<Guarded>,
        nodes: &[(String, Duration)],
    ) -> HashMap<String, Duration> {
        let now = Instant::now();
        // Lock order: wanted, nodes, then one node's `seen`.
        let mut wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
        let mut watched = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let mut asked: Vec<(String, Duration)> = nodes.to_vec();
        for node in wanted.get(group).into_iter().flatten() {
            if nodes.iter().any(|(n, _)| n == node) {
                continue;
            }
            let Some(w) = watched.get(node) else { continue };
            let mut seen = w.seen.lock().unwrap_or_else(|p| p.into_inner());
            let loss = seen.askers.get(group).copied();
            match (loss, seen.silence(now)) {
                (Some(loss), Some(silence)) if silence >= loss => asked.push((node.clone(), loss)),
                _ => {
                    seen.askers.remove(group);
                }
            }
        }
        let names: HashSet<String> = asked.iter().map(|(n, _)| n.clone()).collect();
        let before = if names.is_empty() {
            wanted.remove(group)
        } else {
            wanted.insert(group.clone(), names.clone())
        };
        for node in before.unwrap_or_default().difference(&names) {
            let unwanted = watched.get(node).is_some_and(|w| {
                w.seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .askers
                    .is_empty()
            });
            if unwanted && let Some(w) = watched.remove(node) {
                w.task.abort();
            }
        }
        let mut silences = HashMap::new();
        for (node, loss) in &asked {
            let w = watched
                .entry(node.clone())
                .or_insert_with(|| self.watch(node));
            let mut seen = w.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.askers.insert(group.clone(), *loss) != Some(*loss) {
                // A new or changed deadline: the watch task computes its next wake-up again.
                w.askers_changed.notify_one();
            }
            if let Some(s) = seen.silence(now) {
                silences.insert(node.clone(), s);
            }
        }
        silences
    }

    /// Whether a node the watch finds silent really is: a GET of its Lease, so that a watch
    /// that stalled without failing (or renewals not yet read from it) never passes for a lost
    /// node. A newer version than the watch saw counts as a renewal now; a failed GET proves
    /// nothing, and nothing counts as lost.
    pub async fn confirm_lost(&self, node: &str) -> bool {
        let seen = {
            let watched = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            match watched.get(node) {
                Some(w) => w.seen.clone(),
                None => return false,
            }
        };
        {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.confirmed.is_some() && seen.confirmed == seen.version {
                return true;
            }
        }
        let Ok(Some(lease)) = self.api.get_opt(node).await else {
            return false;
        };
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let version = lease.resource_version();
        if version.is_some() && version != seen.version {
            seen.version = version;
            seen.renewed = Some(Instant::now());
            return false;
        }
        seen.confirmed = seen.version.clone();
        true
    }

    /// Forgets a group (deleted): its nodes are unwatched unless another group needs them.
    pub fn forget(&self, group: &ObjectRef<Guarded>) {
        self.observe(group, &[]);
    }

    /// How many node Leases are watched now, and how many of those watches are not answering.
    pub fn watched(&self) -> (usize, usize) {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let failing = nodes
            .values()
            .filter(|w| !w.seen.lock().unwrap_or_else(|p| p.into_inner()).healthy)
            .count();
        (nodes.len(), failing)
    }

    fn watch(&self, node: &str) -> Watched {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
        let api = self.api.clone();
        let events = relisting(move || watcher(api.clone(), config.clone()).boxed());
        let askers_changed = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(follow(
            node.to_string(),
            events.boxed(),
            seen.clone(),
            askers_changed.clone(),
            self.wake.clone(),
        ));
        Watched {
            seen,
            askers_changed,
            task,
        }
    }
}

impl Drop for NodeLeases {
    fn drop(&mut self) {
        for w in self
            .nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            w.task.abort();
        }
    }
}

/// Folds one node's Lease events into `seen`, and wakes its groups when the watch starts to
/// answer (a reconcile that found no measure looks again), when a loss deadline passes, and when
/// a node they found lost renews (its pods are candidates again: a group left without a leader
/// because its only candidates were there must not wait for some other change).
async fn follow(
    node: String,
    mut events: futures::stream::BoxStream<'static, watcher::Result<watcher::Event<Lease>>>,
    seen: Arc<Mutex<Seen>>,
    askers_changed: Arc<tokio::sync::Notify>,
    wake: mpsc::UnboundedSender<ObjectRef<Guarded>>,
) {
    loop {
        let deadline = seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_deadline();
        let event = tokio::select! {
            e = events.next() => e,
            () = askers_changed.notified() => continue,
            () = sleep_until(deadline) => {
                let askers = {
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    s.woken = deadline;
                    s.askers.keys().cloned().collect::<Vec<_>>()
                };
                wake_all(&wake, askers);
                continue;
            }
        };
        let Some(event) = event else { return };
        let failure = event.as_ref().err().map(ToString::to_string);
        let (became_healthy, became_failing, back) = {
            let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
            let (was, now, before) = (s.healthy, Instant::now(), s.renewed);
            let lost_for = s.lost_for(now);
            apply(&mut s, event, now);
            let renewed = s.renewed != before;
            (
                !was && s.healthy,
                was && !s.healthy,
                if renewed { lost_for } else { vec![] },
            )
        };
        wake_all(&wake, back);
        if became_failing && let Some(error) = failure {
            tracing::warn!(%node, %error, "node Lease watch failing: node loss cannot be detected on this node until it answers again");
        }
        if became_healthy {
            let askers = seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .askers
                .keys()
                .cloned()
                .collect();
            wake_all(&wake, askers);
        }
    }
}

fn wake_all(wake: &mpsc::UnboundedSender<ObjectRef<Guarded>>, groups: Vec<ObjectRef<Guarded>>) {
    for g in groups {
        // The receiver lives as long as the controller; once it is gone nobody needs waking.
        let _ = wake.unbounded_send(g);
    }
}

/// One watch event: a new resourceVersion is a renewal seen now. Only a completed list makes the
/// watch count as answering: after an error the watch starts over with one, so a node that
/// died while the watch was broken is still found silent.
fn apply(seen: &mut Seen, event: watcher::Result<watcher::Event<Lease>>, now: Instant) {
    match event {
        Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease)) => {
            let version = lease.resource_version();
            if version.is_some() && version != seen.version {
                seen.version = version;
                seen.renewed = Some(now);
            }
        }
        Ok(watcher::Event::InitDone) => seen.healthy = true,
        Ok(watcher::Event::Init | watcher::Event::Delete(_)) => {}
        Err(_) => seen.healthy = false,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
