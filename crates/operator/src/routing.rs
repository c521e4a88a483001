//! Which groups a pod change concerns, and which of the two queues it goes to: a failover (a pod
//! carrying podium's leader annotations deleted, terminating, NotReady, relabelled or out of the
//! pod selector) goes to the urgent queue, ahead of the
//! routine work of a cold start, a resync or a mass relabel. Both queues share one lock per
//! group, so a group is never reconciled by both at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;
use tokio::sync::{OwnedMutexGuard, watch};

use crate::cache::{CachedPod, Change};
use crate::claims::Claims;
use podium_api::Guarded;
use podium_api::{FOLLOWER, GROUP_ANNOTATION, LEADER};

/// The groups one pod change concerns, split by queue.
#[derive(Debug, Default, PartialEq)]
pub struct Routed {
    /// Groups whose leader this change may have taken away.
    pub urgent: Vec<ObjectRef<Guarded>>,
    /// Every other group that selects the pod (before or after) or that it is labelled for.
    pub routine: Vec<ObjectRef<Guarded>>,
}

/// The group a copy of a pod concerns by selection or by podium's annotation.
fn concerned(pod: &CachedPod, claims: &Claims, out: &mut Vec<String>) {
    out.extend(
        claims
            .selecting(&pod.namespace, &pod.labels)
            .iter()
            .map(|c| c.name.clone()),
    );
    out.extend(pod.annotations.get(GROUP_ANNOTATION).cloned());
}

/// A change to a leader that can end its leadership: gone, terminating, no longer Ready, or
/// relabelled (it may have left the selector). A leader deleted after it was seen terminating
/// lost its leadership then: that change was the failover (a deletion with grace 0 shows both,
/// one after the other).
fn ends_leadership(before: &CachedPod, after: Option<&CachedPod>) -> bool {
    match after {
        None => !before.terminating,
        // Podium's own demotion: the term gone, and of the labels only a `leader` value turned
        // `follower`. The reconcile that made it moved leadership and goes on to the successor.
        Some(a) if demoted(before, a) => false,
        Some(a) => {
            (a.terminating && !before.terminating)
                || (a.out_of_scope && !before.out_of_scope)
                || (before.is_ready() && !a.is_ready())
                || a.labels != before.labels
                || a.uid != before.uid
        }
    }
}

/// Whether `after` is `before` as podium's demotion leaves it (a foreign write that strips the
/// term and the role together is not, and stays urgent).
fn demoted(before: &CachedPod, after: &CachedPod) -> bool {
    let mut changed = before
        .labels
        .keys()
        .chain(after.labels.keys())
        .filter(|k| before.labels.get(*k) != after.labels.get(*k))
        .peekable();
    after.uid == before.uid
        && after.leads().is_none()
        && changed.peek().is_some()
        && changed.all(|k| {
            before.labels.get(k).map(String::as_str) == Some(LEADER)
                && after.labels.get(k).map(String::as_str) == Some(FOLLOWER)
        })
}

/// The group of a member that someone else just labelled `leader`: podium labels a leader only
/// with its term, so a `leader` value that appears on a pod podium manages without one is not
/// podium's, and is put back as fast as a failover.
fn forged(change: &Change) -> Option<&str> {
    let (before, after) = (change.before.as_deref()?, change.after.as_deref()?);
    let group = after.annotations.get(GROUP_ANNOTATION)?;
    let gained = after
        .labels
        .iter()
        .any(|(k, v)| v == LEADER && before.labels.get(k).map(String::as_str) != Some(LEADER));
    (gained && after.leads().is_none() && before.uid == after.uid).then_some(group.as_str())
}

/// Routes one change of the pod cache.
pub fn route(change: &Change, claims: &Claims) -> Routed {
    let mut names = vec![];
    let mut ns = None;
    for pod in change.before.iter().chain(change.after.iter()) {
        concerned(pod, claims, &mut names);
        ns = Some(pod.namespace.clone());
    }
    let Some(ns) = ns else {
        return Routed::default();
    };
    names.sort();
    names.dedup();
    // Only a leader's change is looked at further: most pod events are not.
    let led = change
        .before
        .as_deref()
        .and_then(|b| {
            b.leads()
                .filter(|_| ends_leadership(b, change.after.as_deref()))
        })
        .or_else(|| forged(change));
    let (urgent, routine): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|n| Some(n.as_str()) == led);
    let refs = |v: Vec<String>| {
        v.into_iter()
            .map(|n| ObjectRef::new(&n).within(&ns))
            .collect()
    };
    Routed {
        urgent: refs(urgent),
        routine: refs(routine),
    }
}

/// When each group in the urgent queue was put there, to time the queue.
pub struct UrgentSince {
    table: Mutex<SinceTable>,
    /// Bumped whenever a group is newly queued.
    queued_more: watch::Sender<()>,
}

impl Default for UrgentSince {
    fn default() -> Self {
        Self {
            table: Mutex::default(),
            queued_more: watch::Sender::new(()),
        }
    }
}

#[derive(Default)]
struct SinceTable {
    queued: HashMap<ObjectRef<Guarded>, Instant>,
    /// The size at which old entries are swept.
    prune_at: usize,
}

/// An entry this old was left by a group that went away before its failover ran.
const UNCLAIMED: Duration = Duration::from_secs(300);

impl UrgentSince {
    /// Notes that `key` went to the urgent queue now, unless it already waits there.
    pub fn queued(&self, key: &ObjectRef<Guarded>) {
        let mut t = self.table();
        if t.queued.len() >= t.prune_at {
            // Sweeping at doubling sizes keeps the sweeps at O(1) an entry.
            let now = Instant::now();
            t.queued.retain(|_, at| now.duration_since(*at) < UNCLAIMED);
            t.prune_at = (2 * t.queued.len()).max(PRUNE_FLOOR);
        }
        if !t.queued.contains_key(key) {
            t.queued.insert(key.clone(), Instant::now());
            self.queued_more.send_replace(());
        }
    }

    /// Returns once a failover of `key` waits in the urgent queue (one that has not started).
    pub async fn pending(&self, key: &ObjectRef<Guarded>) {
        let mut more = self.queued_more.subscribe();
        loop {
            if self.table().queued.contains_key(key) {
                return;
            }
            if more.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, SinceTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When `key` went to the urgent queue, forgetting it: its failover now runs.
    pub fn take(&self, key: &ObjectRef<Guarded>) -> Option<Instant> {
        self.table().queued.remove(key)
    }
}

/// One lock per group, held for a whole reconcile, shared by both queues.
#[derive(Default)]
pub struct GroupLocks {
    table: Mutex<LockTable>,
}

#[derive(Default)]
struct LockTable {
    locks: HashMap<ObjectRef<Guarded>, Arc<GroupEntry>>,
    /// The size at which entries nobody holds or awaits are swept.
    prune_at: usize,
}

/// One group's lock, and how many failovers wait for it.
struct GroupEntry {
    mutex: Arc<tokio::sync::Mutex<()>>,
    failovers_waiting: watch::Sender<usize>,
}

impl Default for GroupEntry {
    fn default() -> Self {
        Self {
            mutex: Arc::default(),
            failovers_waiting: watch::Sender::new(0),
        }
    }
}

/// Below this many entries no sweep is made.
const PRUNE_FLOOR: usize = 64;

/// A held group lock; dropping it releases the lock, and forgets it when nobody else holds or
/// awaits it.
pub struct GroupLock<'a> {
    guard: Option<OwnedMutexGuard<()>>,
    entry: Arc<GroupEntry>,
    key: ObjectRef<Guarded>,
    locks: &'a GroupLocks,
}

/// Counts a failover waiting for a group's lock, until it holds it or gives up.
struct Waiting(Arc<GroupEntry>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0
            .failovers_waiting
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl GroupLocks {
    /// Waits until no other reconcile of this group runs; a `failover` waiting is made known
    /// to the reconcile that holds the group (see [`GroupLock::failovers_waiting`]).
    pub async fn lock(&self, key: &ObjectRef<Guarded>, failover: bool) -> GroupLock<'_> {
        let entry = {
            let mut t = self.table();
            if t.locks.len() >= t.prune_at {
                // A waiter cancelled after the holder let go leaves an entry that no drop
                // forgets; sweeping at doubling sizes keeps those bounded at O(1) a lock.
                t.locks.retain(|_, l| Arc::strong_count(l) > 1);
                t.prune_at = (2 * t.locks.len()).max(PRUNE_FLOOR);
            }
            t.locks.entry(key.clone()).or_default().clone()
        };
        let waiting = failover.then(|| {
            entry
                .failovers_waiting
                .send_modify(|n| *n = n.saturating_add(1));
            Waiting(entry.clone())
        });
        let guard = entry.mutex.clone().lock_owned().await;
        drop(waiting);
        GroupLock {
            guard: Some(guard),
            entry,
            key: key.clone(),
            locks: self,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, LockTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many groups have a lock entry (held, waited for, or left by a cancelled waiter and
    /// not yet swept).
    pub fn len(&self) -> usize {
        self.table().locks.len()
    }

    /// No group lock is held or waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl GroupLock<'_> {
    /// How many failovers wait for this group while it is held: its holder's routine writes
    /// need not queue behind other groups' then, or the failover would wait behind them too.
    pub fn failovers_waiting(&self) -> watch::Receiver<usize> {
        self.entry.failovers_waiting.subscribe()
    }
}

impl Drop for GroupLock<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut t = self.locks.table();
        // Only the map's reference and this one left: nobody else holds or awaits this group's
        // lock.
        if t.locks
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 2)
        {
            t.locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cache::PodCache;
    use k8s_openapi::api::core::v1::Pod;
    use kube::core::error_boundary::DeserializeGuard;
    use kube::runtime::watcher::Event;
    use podium_api::ElectionGroup;
    use serde_json::json;

    fn claims() -> Claims {
        let c = Claims::default();
        for (name, app) in [("a", "x"), ("b", "y")] {
            let g: ElectionGroup = serde_json::from_value(json!({
                "apiVersion": "podium.dev/v1alpha1", "kind": "ElectionGroup",
                "metadata": {"name": name, "namespace": "ns", "uid": name, "generation": 1},
                "spec": {"selector": {"matchLabels": {"app": app}}}
            }))
            .unwrap();
            c.apply(&Event::Apply(DeserializeGuard(Ok(g))));
        }
        c
    }

    fn pod(rv: &str, app: &str, leader: bool, ready: bool, terminating: bool) -> Pod {
        let annotations = if leader {
            json!({"podium.dev/group": "a", "podium.dev/term": "2"})
        } else {
            json!({"podium.dev/group": "a"})
        };
        let mut p = json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "resourceVersion": rv,
                         "labels": {"app": app}, "annotations": annotations},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        });
        if terminating {
            p["metadata"]["deletionTimestamp"] = json!("2026-11-23T10:00:00Z");
        }
        serde_json::from_value(p).unwrap()
    }

    fn names(refs: &[ObjectRef<Guarded>]) -> Vec<&str> {
        refs.iter().map(|r| r.name.as_str()).collect()
    }

    /// Applies `before` then `after` (`None`: deleted) and routes the second change.
    fn routed(before: Pod, after: Option<Pod>) -> Routed {
        let (cache, claims) = (PodCache::default(), claims());
        cache.apply(Event::Apply(before.clone()));
        let change = match after {
            Some(a) => cache.apply(Event::Apply(a)),
            None => cache.apply(Event::Delete(before)),
        };
        route(&change[0], &claims)
    }

    #[test]
    fn a_leader_that_fails_is_urgent() {
        let leader = || pod("1", "x", true, true, false);
        for after in [
            None,
            Some(pod("2", "x", true, false, false)),
            Some(pod("2", "x", true, true, true)),
        ] {
            let r = routed(leader(), after);
            assert_eq!((names(&r.urgent), names(&r.routine)), (vec!["a"], vec![]));
        }
        // Relabelled out of group a into group b: a fails over at once, b looks when it can.
        let r = routed(leader(), Some(pod("2", "y", true, true, false)));
        assert_eq!(
            (names(&r.urgent), names(&r.routine)),
            (vec!["a"], vec!["b"])
        );
    }

    #[test]
    fn podiums_own_demotion_of_a_leader_is_routine() {
        let with_role = |rv: &str, role: Option<&str>, leader: bool| {
            let mut p = pod(rv, "x", leader, true, false);
            if let Some(role) = role {
                p.metadata
                    .labels
                    .get_or_insert_default()
                    .insert("role".into(), role.into());
            }
            p
        };
        let leader = || with_role("1", Some("leader"), true);
        let r = routed(leader(), Some(with_role("2", Some("follower"), false)));
        assert_eq!((names(&r.urgent), names(&r.routine)), (vec![], vec!["a"]));
        // Someone else strips the role and the term: the group may have lost its leader.
        let r = routed(leader(), Some(with_role("2", None, false)));
        assert_eq!((names(&r.urgent), names(&r.routine)), (vec!["a"], vec![]));
    }

    #[test]
    fn a_leader_label_podium_did_not_write_is_urgent() {
        let with_role = |rv: &str, role: &str, leader: bool| {
            let mut p = pod(rv, "x", leader, true, false);
            let labels = p.metadata.labels.get_or_insert_default();
            labels.insert("role".into(), role.into());
            p
        };
        // A follower labelled leader without a term: not podium's write.
        let r = routed(
            with_role("1", "follower", false),
            Some(with_role("2", "leader", false)),
        );
        assert_eq!((names(&r.urgent), names(&r.routine)), (vec!["a"], vec![]));
        // podium's own promotion writes the term with the label: routine.
        let r = routed(
            with_role("1", "follower", false),
            Some(with_role("2", "leader", true)),
        );
        assert_eq!((names(&r.urgent), names(&r.routine)), (vec![], vec!["a"]));
    }

    #[test]
    fn everything_else_is_routine() {
        // A follower deleted, a terminating leader deleted (its termination was the failover),
        // a leader that merely got a new version, a pod becoming Ready.
        for (before, after) in [
            (pod("1", "x", false, true, false), None),
            (pod("1", "x", true, true, true), None),
            (
                pod("1", "x", true, true, false),
                Some(pod("2", "x", true, true, false)),
            ),
            (
                pod("1", "x", true, false, false),
                Some(pod("2", "x", true, true, false)),
            ),
        ] {
            let r = routed(before, after);
            assert_eq!((names(&r.urgent), names(&r.routine)), (vec![], vec!["a"]));
        }
    }

    #[tokio::test]
    async fn one_reconcile_per_group_and_no_lock_left_behind() {
        let locks = GroupLocks::default();
        let (a, b) = (
            ObjectRef::<Guarded>::new("a").within("ns"),
            ObjectRef::<Guarded>::new("b").within("ns"),
        );
        let held = locks.lock(&a, false).await;
        // Another group is not held up.
        drop(locks.lock(&b, false).await);
        let second = locks.lock(&a, false);
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut second)
                .await
                .is_err()
        );
        drop(held);
        drop(second.await);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn entries_of_waiters_cancelled_after_the_holder_let_go_stay_bounded() {
        let locks = GroupLocks::default();
        let mut most = 0;
        for i in 0..10 * PRUNE_FLOOR {
            let g = ObjectRef::<Guarded>::new(&format!("g{i}")).within("ns");
            let held = locks.lock(&g, false).await;
            let mut waiter = Box::pin(locks.lock(&g, false));
            assert!(futures::poll!(waiter.as_mut()).is_pending());
            // The holder lets go while the waiter still waits, then the waiter is cancelled.
            drop(held);
            drop(waiter);
            most = most.max(locks.len());
        }
        // Each cancelled waiter leaves an entry, until a sweep takes them all: without the
        // sweep there would be 640.
        assert!((PRUNE_FLOOR - 1..=PRUNE_FLOOR).contains(&most), "{most}");
        assert!(locks.len() < PRUNE_FLOOR);
    }

    #[tokio::test]
    async fn the_holder_sees_a_failover_wait_for_its_group_until_it_stops_waiting() {
        let locks = GroupLocks::default();
        let g = ObjectRef::<Guarded>::new("g").within("ns");
        let held = locks.lock(&g, false).await;
        let waits = held.failovers_waiting();
        assert_eq!(*waits.borrow(), 0);
        // A routine reconcile waiting is not counted.
        let mut routine = Box::pin(locks.lock(&g, false));
        assert!(futures::poll!(routine.as_mut()).is_pending());
        assert_eq!(*waits.borrow(), 0);
        let mut failover = Box::pin(locks.lock(&g, true));
        assert!(futures::poll!(failover.as_mut()).is_pending());
        assert_eq!(*waits.borrow(), 1);
        // A cancelled failover stops counting.
        drop(failover);
        assert_eq!(*waits.borrow(), 0);
        let failover = locks.lock(&g, true);
        tokio::pin!(failover);
        assert!(futures::poll!(failover.as_mut()).is_pending());
        assert_eq!(*waits.borrow(), 1);
        drop(routine);
        drop(held);
        let holding = failover.await;
        assert_eq!(
            *holding.failovers_waiting().borrow(),
            0,
            "it holds the group now"
        );
        drop(holding);
        assert!(locks.is_empty());
    }

    #[test]
    fn the_urgent_queue_is_timed_from_the_first_change() {
        let since = UrgentSince::default();
        let key = ObjectRef::<Guarded>::new("a").within("ns");
        since.queued(&key);
        let first = since.table.lock().unwrap().queued[&key];
        std::thread::sleep(Duration::from_millis(2));
        since.queued(&key);
        assert_eq!(since.take(&key), Some(first));
        assert_eq!(since.take(&key), None, "taken once");
    }

    #[test]
    fn unclaimed_entries_are_swept() {
        let since = UrgentSince::default();
        let old = Instant::now() - UNCLAIMED - Duration::from_secs(1);
        for i in 0..PRUNE_FLOOR {
            let key = ObjectRef::<Guarded>::new(&format!("gone-{i}")).within("ns");
            since.table.lock().unwrap().queued.insert(key, old);
        }
        since.queued(&ObjectRef::new("a").within("ns"));
        let t = since.table.lock().unwrap();
        assert_eq!(t.queued.len(), 1);
        assert_eq!(t.prune_at, PRUNE_FLOOR);
    }

    #[tokio::test]
    async fn a_holder_learns_when_a_failover_of_its_group_is_queued() {
        let since = UrgentSince::default();
        let (a, b) = (
            ObjectRef::<Guarded>::new("a").within("ns"),
            ObjectRef::<Guarded>::new("b").within("ns"),
        );
        let pending = since.pending(&a);
        tokio::pin!(pending);
        assert!(futures::poll!(pending.as_mut()).is_pending());
        since.queued(&b);
        assert!(
            futures::poll!(pending.as_mut()).is_pending(),
            "another group"
        );
        since.queued(&a);
        pending.await;
        // Once its failover has started, nothing is pending for it any more.
        since.take(&a);
        let again = since.pending(&a);
        tokio::pin!(again);
        assert!(futures::poll!(again.as_mut()).is_pending());
    }
}
