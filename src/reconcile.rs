//! The controller: gathers an observation from its caches, asks `election::decide`, applies the plan.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Reporter};

use crate::cache::{CachedPod, PodCache};
use crate::claims::Claims;
use crate::events::{Publisher, Unpublished};
use crate::routing::{GroupLocks, UrgentSince, route};
use crate::slots::{Counted, WriteSlots};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::apply::{self, LeaseMirror, Outcome, PodKeys, PodWriteError};
use crate::crd::{
    ElectionGroup, FINALIZER, FOLLOWER, GROUP_ANNOTATION, HANDOFF_ANNOTATION, LEADER,
};
use crate::election::{self, Note, Observation, Plan, PodChange, Subject};
use crate::leadership::Fence;
use crate::membership::{Claim, RoleKeys, anchor, membership};
use crate::metrics::{FailoverStage, Metrics};
use crate::nodes::NodeLeases;
use crate::overlay::Overlay;
use crate::validation::{Settings, validate};

/// Field manager for every write podium makes.
pub const MANAGER: &str = "podium";

/// An ElectionGroup as the cache holds it: parsed, or the reason it could not be.
pub type Guarded = DeserializeGuard<ElectionGroup>;

/// What can go wrong while applying a plan; each is retried by the error policy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pod label or annotation write failed.
    #[error("writing role {role} on pod {namespace}/{pod}: {}", brief(source))]
    PodWrite {
        namespace: String,
        pod: String,
        role: &'static str,
        #[source]
        source: kube::Error,
    },
    /// The status write failed.
    #[error("writing status of {namespace}/{group}: {}", brief(source))]
    Status {
        namespace: String,
        group: String,
        #[source]
        source: kube::Error,
    },
    /// Adding or removing the finalizer, or clearing the handoff annotation, failed.
    #[error("updating metadata of {namespace}/{group}: {}", brief(source))]
    Metadata {
        namespace: String,
        group: String,
        #[source]
        source: kube::Error,
    },
    /// Publishing the Lease mirror failed.
    #[error("publishing lease {namespace}/{group}: {}", brief(source))]
    Lease {
        namespace: String,
        group: String,
        #[source]
        source: kube::Error,
    },
    /// Reading a pod the cache does not show failed.
    #[error("reading pod {namespace}/{pod}: {}", brief(source))]
    PodRead {
        namespace: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    /// The pod or group cache never became ready.
    #[error("waiting for the {0} cache: {1}")]
    Cache(&'static str, String),
    /// The object has no namespace; ElectionGroups are namespaced, so the API server sent something odd.
    #[error("ElectionGroup {0} has no namespace")]
    NoNamespace(String),
    /// This replica does not hold the controller Lease by its own clock; it writes nothing.
    #[error("not the active replica: the controller lease is not held")]
    NotLeading,
    /// Every attempt conflicted with a concurrent change.
    #[error("{namespace}/{group} kept changing while being reconciled; retrying")]
    Contended { namespace: String, group: String },
}

/// The API server's own message, without the Debug dump kube's Display adds.
fn brief(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.reason),
        other => other.to_string(),
    }
}

impl Error {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::PodWrite { source, .. }
            | Error::Status { source, .. }
            | Error::Metadata { source, .. }
            | Error::PodRead { source, .. }
            | Error::Lease { source, .. } => match source {
                kube::Error::Api(s) if s.code == 403 => "forbidden",
                kube::Error::Api(s) if s.code == 409 => "conflict",
                kube::Error::Api(s) if s.code == 404 => "not_found",
                kube::Error::Api(_) => "api",
                _ => "transport",
            },
            Error::Cache(..) => "cache",
            Error::NoNamespace(_) => "no_namespace",
            Error::NotLeading => "not_leading",
            Error::Contended { .. } => "contended",
        }
    }
}

/// Shared state of the controller.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Every pod in scope, reduced to what the election reads and indexed.
    pub pods: Arc<PodCache>,
    /// Every ElectionGroup in scope.
    pub groups: Store<Guarded>,
    /// Every group's parsed selector, indexed.
    pub claims: Arc<Claims>,
    /// One reconcile per group at a time, across the routine and the urgent queue.
    locks: GroupLocks,
    /// Whether the pod and group caches have been filled once.
    synced: (watch::Receiver<bool>, watch::Receiver<bool>),
    /// Publishes Events.
    pub recorder: Publisher,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Writes the caches may not show yet.
    pub overlay: Arc<Overlay>,
    /// Whether this replica is the active controller; a standby computes nothing and writes nothing.
    pub active: watch::Receiver<bool>,
    /// Consecutive failures per group, for the error policy's backoff.
    failures: Mutex<HashMap<ObjectRef<Guarded>, u32>>,
    /// Whether this replica may write at this instant (the controller Lease, by its own clock).
    pub fence: Arc<Fence>,
    /// Failed promotions per pod UID: how many in a row, and when the last one failed.
    promotion_failures: Mutex<HashMap<String, (u32, std::time::Instant)>>,
    /// The node Leases of the nodes hosting leaders and reserved successors.
    pub nodes: NodeLeases,
    /// Groups the urgent queue hands back to the routine one, to keep their timers there.
    handed_back: futures::channel::mpsc::UnboundedSender<ObjectRef<Guarded>>,
    /// Who writes first: failovers, then routine writes and Events, which share the slots.
    pub slots: Arc<WriteSlots>,
    /// When each group in the urgent queue was put there.
    urgent_since: Arc<UrgentSince>,
}

tokio::task_local! {
    /// Set while a reconcile of the urgent queue runs: until its leadership writes are
    /// acknowledged they take no routine write slot, and routine writes are held back.
    static URGENT: RefCell<Failover>;
    /// Set while a reconcile holds its group.
    static HELD: Held;
}

/// The group a reconcile holds, and how many failovers wait for its lock.
#[derive(Clone)]
struct Held {
    failovers_waiting: watch::Receiver<usize>,
    key: ObjectRef<Guarded>,
}

/// A failover's reconcile: when it was queued, and its hold while it moves leadership.
#[derive(Default)]
struct Failover {
    queued: Option<std::time::Instant>,
    hold: Option<Counted>,
    moving_since: Option<std::time::Instant>,
}

/// Lets routine writes go again: the failover's leadership writes are acknowledged, and what
/// it writes next (status, the other followers, Events) waits for routine slots like them.
fn leadership_moved(ctx: &Context) {
    let _ = URGENT.try_with(|u| {
        let mut u = u.borrow_mut();
        u.hold = None;
        if let Some(since) = u.moving_since.take() {
            ctx.metrics
                .failover_stage(FailoverStage::Moving, since.elapsed());
        }
    });
}

/// Holds routine writes back while a failover's pass may move leadership, and takes one of the
/// failover slots; taken again by every pass, since one that went stale after moving it may
/// have to move it again. Dropped with the urgent scope at the latest.
async fn hold_for_failover(ctx: &Context) {
    let Ok(Some(queued)) = URGENT.try_with(|u| {
        let mut u = u.borrow_mut();
        u.hold.is_none().then(|| u.queued.take())
    }) else {
        return;
    };
    let start = std::time::Instant::now();
    if let Some(queued) = queued {
        ctx.metrics
            .failover_stage(FailoverStage::Queued, start.duration_since(queued));
    }
    let hold = ctx.slots.failover().await;
    ctx.metrics
        .failover_stage(FailoverStage::Slot, start.elapsed());
    let _ = URGENT.try_with(|u| {
        let mut u = u.borrow_mut();
        u.hold = Some(hold);
        u.moving_since = Some(std::time::Instant::now());
    });
}

/// Urgent reconciles run at once per failover slot: one moves leadership while the others
/// write their status (each waits up to 1 s behind promotions, then for a routine slot).
const URGENT_RECONCILES_PER_SLOT: u16 = 8;

/// A candidate whose promotion failed this many times in a row is passed over…
const PROMOTION_TRIES: u32 = 3;
/// …for this long, then tried again.
const PASSED_OVER_FOR: Duration = Duration::from_secs(300);

impl Context {
    /// Waits for a routine write slot, unless this is a failover's reconcile still moving
    /// leadership or a reconcile a failover waits for; hold it for the length of one request.
    /// The controller Lease is checked once the slot is held, with nothing of podium's own to
    /// wait for between that check and the request.
    pub async fn write_slot(
        &self,
    ) -> Result<Option<tokio::sync::SemaphorePermit<'_>>, apply::NotLeading> {
        let slot = self.slot_unless_failover_waits().await;
        apply::fenced(self)?;
        Ok(slot)
    }

    async fn slot_unless_failover_waits(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        if URGENT.try_with(|u| u.borrow().hold.is_some()) == Ok(true) {
            return None;
        }
        let Ok(held) = HELD.try_with(Held::clone) else {
            return self.slots.routine().await;
        };
        // A failover waiting for this group waits for these writes: they go without a slot,
        // as its own would, rather than behind other groups' routine writes.
        let Held {
            mut failovers_waiting,
            key,
        } = held;
        let waiting_for_lock = async move {
            if failovers_waiting.wait_for(|n| *n > 0).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            biased;
            () = waiting_for_lock => None,
            () = self.urgent_since.pending(&key) => None,
            slot = self.slots.routine() => slot,
        }
    }

    /// Members whose promotion keeps failing, to be passed over for now.
    fn passed_over(&self, members: &[election::Member]) -> Vec<String> {
        let failures = self
            .promotion_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        members
            .iter()
            .filter(|m| {
                failures
                    .get(&m.uid)
                    .is_some_and(|(n, at)| *n >= PROMOTION_TRIES && at.elapsed() < PASSED_OVER_FOR)
            })
            .map(|m| m.name.clone())
            .collect()
    }

    fn promotion_succeeded(&self, uid: &str) {
        self.promotion_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }

    /// Counts a failed promotion; at the limit, says that the pod is passed over.
    fn promotion_failed(&self, group: &ElectionGroup, pod: &str, uid: &str, err: &Error) {
        let n = {
            let mut failures = self
                .promotion_failures
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if failures.len() > 4096 {
                failures.retain(|_, (_, at)| at.elapsed() < PASSED_OVER_FOR);
            }
            let entry = failures
                .entry(uid.to_string())
                .or_insert((0, std::time::Instant::now()));
            entry.0 = entry.0.saturating_add(1);
            entry.1 = std::time::Instant::now();
            entry.0
        };
        if n == PROMOTION_TRIES {
            let note = Note {
                subject: Subject::Group,
                warning: true,
                reason: "PromotionFailed",
                message: format!(
                    "promoting {pod} failed {n} times ({err}); passing it over for {}s",
                    PASSED_OVER_FOR.as_secs()
                ),
            };
            publish(group, &[note], self);
        }
    }
}

/// How the controller is scoped and identified.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    /// Consider only pods matching this label selector.
    pub pod_selector: Option<String>,
    /// Reporting instance for Events (e.g. the pod name).
    pub instance: Option<String>,
    /// Whether this replica may write; every group is reconciled again when it turns true.
    pub active: watch::Receiver<bool>,
    /// How many groups are reconciled at once.
    pub concurrency: u16,
    /// How many failovers move leadership at once, besides.
    pub failover_concurrency: u16,
    /// Whether this replica may write at this instant.
    pub fence: Arc<Fence>,
}

/// Runs the controller until `shutdown` resolves; `on_ready` fires once both caches are filled.
pub async fn run(
    client: Client,
    opts: Options,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_ready: impl FnOnce() + Send + 'static,
) {
    let (groups_api, pods_api): (Api<Guarded>, Api<Pod>) = match &opts.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };

    // Readiness is tracked from the streams themselves: kube-runtime's Store::wait_until_ready
    // wakes only one of several concurrent waiters, and the Controller already waits on its store.
    let (pods_synced_tx, pods_synced) = watch::channel(false);
    let (groups_synced_tx, groups_synced) = watch::channel(false);

    let pods = Arc::new(match opts.pod_selector {
        Some(_) => PodCache::scoped_by_selector(),
        None => PodCache::default(),
    });
    let claims = Arc::new(Claims::default());
    let (urgent_tx, urgent_rx) = futures::channel::mpsc::unbounded();
    let urgent_since = Arc::new(UrgentSince::default());
    let queued = urgent_since.clone();
    let (handed_back, handed_back_rx) = futures::channel::mpsc::unbounded();
    let overlay = Arc::new(Overlay::default());
    let (cache, index, echoes) = (pods.clone(), claims.clone(), overlay.clone());
    // The pod watch feeds the cache and routes each change; the mapping looks up indexes only,
    // so the watch keeps up however many groups a namespace holds.
    // Paged lists (500 pods a page, kube's default): a list at any resourceVersion is served
    // from the API server's cache, which ignores the page size, and 50,000 pods in one response
    // would be held whole in memory before the cache reduces them.
    let mut pod_config = watcher::Config::default();
    if let Some(sel) = &opts.pod_selector {
        pod_config = pod_config.labels(sel);
    }
    let pod_triggers = watcher(pods_api, pod_config)
        .default_backoff()
        .flat_map(move |ev| {
            let listed = matches!(ev, Ok(watcher::Event::InitDone));
            let changes = match ev {
                Ok(ev) => cache.apply(ev),
                Err(e) => {
                    warn!(error = %e, "pod watch failed; retrying");
                    vec![]
                }
            };
            let mut routine = vec![];
            for change in &changes {
                // What podium wrote and the watch now shows needs no echo any more.
                match (&change.before, &change.after) {
                    (_, Some(p)) => {
                        echoes.pod_seen(&p.namespace, &p.name, p.resource_version.as_ref())
                    }
                    (Some(p), None) => echoes.pod_seen(&p.namespace, &p.name, None),
                    (None, None) => {}
                }
                let routed = route(change, &index);
                for group in routed.urgent {
                    debug!(group = %group, pod = ?change.before.as_ref().map(|p| &p.name),
                           gone = change.after.is_none(),
                           ready = ?change.after.as_ref().map(|p| p.ready),
                           terminating = ?change.after.as_ref().map(|p| p.terminating),
                           "failover queued");
                    queued.queued(&group);
                    // The receiver lives as long as the controller; a closed one means shutdown.
                    let _ = urgent_tx.unbounded_send(group);
                }
                routine.extend(routed.routine);
            }
            // Only once the cache holds the whole list may a reconcile trust it.
            if listed {
                pods_synced_tx.send_replace(true);
            }
            futures::stream::iter(routine)
        });
    let (groups, group_writer) = reflector::store();
    let (index, echoes) = (claims.clone(), overlay.clone());
    // Paged like the pods: 10,000 groups in one response would be held whole, then parsed whole.
    let group_events = watcher(groups_api, watcher::Config::default())
        .default_backoff()
        .modify(|g: &mut Guarded| {
            // Neither is read; kubectl's copy of the last applied spec can be as big as the spec.
            let meta = g.meta_mut();
            meta.managed_fields = None;
            if let Some(a) = meta.annotations.as_mut() {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
        })
        .inspect(move |ev| {
            if let Ok(ev) = ev {
                index.apply(ev);
            }
        })
        .reflect(group_writer)
        .inspect(move |ev| {
            // Once the store holds it: a reconcile in between would see neither. (A relist's
            // objects reach the store only at its end; their echoes go when next recalled.)
            if let Ok(ev) = ev {
                match ev {
                    watcher::Event::Apply(g) => {
                        let ns = g.namespace().unwrap_or_default();
                        echoes.group_seen(&ns, &g.name_any(), g.resource_version().as_ref());
                    }
                    watcher::Event::Delete(g) => {
                        echoes.group_seen(&g.namespace().unwrap_or_default(), &g.name_any(), None);
                    }
                    watcher::Event::Init
                    | watcher::Event::InitApply(_)
                    | watcher::Event::InitDone => {}
                }
            }
            mark_synced(ev, &groups_synced_tx);
        })
        .touched_objects();

    let config = |n| kube::runtime::controller::Config::default().concurrency(n);
    // Twice as many routine reconciles as routine write slots, so that one deciding leaves no
    // slot idle.
    let routine = Controller::for_stream(group_events, groups.clone())
        .with_config(config(opts.concurrency.saturating_mul(2)));
    // The urgent queue has no stream of its own: it runs only what failovers put in it, with
    // slots of its own, so a failover never waits behind routine work. The failover slots bound
    // those moving leadership; the reconciles run are a multiple of them, so that those whose
    // status write waits for a routine slot do not keep the next failovers from starting, while
    // what a storm keeps in memory stays bounded.
    let urgent =
        Controller::for_stream(futures::stream::pending(), groups.clone()).with_config(config(
            opts.failover_concurrency
                .saturating_mul(URGENT_RECONCILES_PER_SLOT),
        ));
    let (nodes, node_wakes) = NodeLeases::new(client.clone());
    let slots = Arc::new(WriteSlots::new(
        usize::from(opts.concurrency),
        usize::from(opts.failover_concurrency),
        metrics.failover_priority(),
    ));
    let reporter = Reporter {
        controller: "podium".into(),
        instance: opts.instance.clone(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods,
        groups: groups.clone(),
        claims,
        locks: GroupLocks::default(),
        synced: (pods_synced.clone(), groups_synced.clone()),
        recorder: Publisher::start(
            client,
            reporter,
            metrics.clone(),
            slots.clone(),
            opts.fence.clone(),
        ),
        slots,
        metrics,
        active: opts.active.clone(),
        overlay,
        failures: Mutex::default(),
        fence: opts.fence.clone(),
        promotion_failures: Mutex::default(),
        nodes,
        handed_back,
        urgent_since,
    });
    // Becoming active re-examines every group: a standby's caches are warm but it acted on nothing.
    let became_active = futures::stream::unfold(opts.active.clone(), |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            if *rx.borrow_and_update() {
                return Some(((), rx));
            }
        }
    });

    let (mut p, mut g) = (pods_synced, groups_synced);
    tokio::spawn(async move {
        if p.wait_for(|s| *s).await.is_ok() && g.wait_for(|s| *s).await.is_ok() {
            info!("caches synced");
            on_ready();
        }
    });

    let shutdown = shutdown.shared();
    let routine = routine
        .reconcile_on(pod_triggers)
        .reconcile_on(handed_back_rx)
        .reconcile_all_on(became_active)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| log_result(res, "routine"));
    // A lost node under a leader is a failover too.
    let queued = ctx.urgent_since.clone();
    let node_wakes = node_wakes.inspect(move |group| queued.queued(group));
    let urgent = urgent
        .reconcile_on(urgent_rx)
        .reconcile_on(node_wakes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile_urgent, error_policy, ctx)
        .for_each(|res| log_result(res, "urgent"));
    // Both in this one task: the two controllers wait for the same store, whose readiness
    // wakes only one waiter; here the other is polled again on the same wake-up.
    futures::join!(routine, urgent);
}

/// Logs how one reconcile ended (failures are logged by the error policy).
async fn log_result<E: std::fmt::Display>(
    res: Result<(ObjectRef<Guarded>, Action), E>,
    queue: &'static str,
) {
    match res {
        Ok((obj, _)) => debug!(group = %obj, queue, "reconciled"),
        Err(e) => debug!(error = %e, queue, "reconcile failed"),
    }
}

/// Flags a cache as filled once its watcher finishes the initial list.
fn mark_synced<K>(ev: &Result<watcher::Event<K>, watcher::Error>, synced: &watch::Sender<bool>) {
    if matches!(ev, Ok(watcher::Event::InitDone)) {
        synced.send_replace(true);
    }
}

/// A failover's reconcile. Its timers (the next handoff, maxTerm) belong to the routine queue:
/// the group is handed back there, which decides again and schedules them, so that scheduled
/// work never takes a failover's slot.
async fn reconcile_urgent(obj: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(obj.as_ref());
    let failover = Failover {
        queued: ctx.urgent_since.take(&key),
        ..Failover::default()
    };
    let action = URGENT
        .scope(RefCell::new(failover), reconcile(obj, ctx.clone()))
        .await?;
    if action != Action::await_change() {
        // Closed only at shutdown.
        let _ = ctx.handed_back.unbounded_send(key);
    }
    Ok(Action::await_change())
}

async fn reconcile(obj: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !*ctx.active.borrow() {
        return Ok(Action::await_change());
    }
    let key = ObjectRef::from_obj(obj.as_ref());
    let failover = URGENT.try_with(|_| ()).is_ok();
    let serial = ctx.locks.lock(&key, failover).await;
    let held = Held {
        failovers_waiting: serial.failovers_waiting(),
        key: key.clone(),
    };
    HELD.scope(held, reconcile_held(obj, key, &ctx)).await
}

/// A reconcile that holds its group.
async fn reconcile_held(
    obj: Arc<Guarded>,
    key: ObjectRef<Guarded>,
    ctx: &Context,
) -> Result<Action, Error> {
    let (mut pods_synced, mut groups_synced) = ctx.synced.clone();
    pods_synced
        .wait_for(|s| *s)
        .await
        .map_err(|e| Error::Cache("pod", e.to_string()))?;
    groups_synced
        .wait_for(|s| *s)
        .await
        .map_err(|e| Error::Cache("ElectionGroup", e.to_string()))?;
    let result = match &obj.0 {
        Ok(group) => reconcile_group(group, ctx).await,
        Err(invalid) => report_unreadable(obj.as_ref(), &invalid.error, ctx).await,
    };
    ctx.metrics
        .reconciled(result.as_ref().err().map(Error::kind));
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }
    result
}

/// Retries with a per-group exponential backoff: 0.5 s, 1 s, 2 s … up to 5 minutes.
fn error_policy(obj: Arc<Guarded>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(obj.as_ref());
    if matches!(err, Error::NotLeading) {
        // Not a failure of this group: look again once the Lease may be held again.
        debug!(group = %key, "not writing: the controller lease is not held");
        return Action::requeue(Duration::from_secs(1));
    }
    let n = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = Duration::from_millis(500u64.saturating_mul(1 << (n - 1).min(10)))
        .min(Duration::from_secs(300));
    warn!(group = %key, error = %err, attempt = n, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// How many times one reconcile decides again after a conflict before it backs off.
const ATTEMPTS: usize = 8;

/// How one decide-and-apply pass ended.
enum Pass {
    /// Applied; what the controller should do next.
    Done(Action),
    /// Something changed under the decision and was re-read: decide again now.
    Stale,
}

async fn reconcile_group(cached: &ElectionGroup, ctx: &Context) -> Result<Action, Error> {
    let name = cached.name_any();
    let ns = cached
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let key = ObjectRef::<Guarded>::new(&name).within(&ns);
    // A failover whose status was recorded by one pass but whose labels a later pass finished.
    let mut failover_since = None;
    for _ in 0..ATTEMPTS {
        // Only once it holds the group: a failover waiting for a routine reconcile of the same
        // group must not hold that one's writes back.
        hold_for_failover(ctx).await;
        // The newest copy: the store may have moved on since this reconcile was queued, and our
        // own writes or re-reads may be newer still.
        let stored = match ctx.groups.get(&key) {
            Some(g) => match &g.0 {
                Ok(group) => group.clone(),
                Err(_) => return Ok(Action::await_change()),
            },
            // Gone from the store: deleted, and its finalizer already removed.
            None => return Ok(Action::await_change()),
        };
        let mut current = ctx.overlay.group(&stored).unwrap_or(stored);
        let pass = if current.metadata.deletion_timestamp.is_some() {
            cleanup(&mut current, &ns, ctx).await?
        } else {
            decide_and_apply(&mut current, &ns, ctx, &mut failover_since).await?
        };
        match pass {
            Pass::Done(action) => return Ok(action),
            Pass::Stale => ctx.metrics.conflict(),
        }
    }
    Err(Error::Contended {
        namespace: ns,
        group: name,
    })
}

/// What the caches show of a group's pods.
struct Gathered {
    members: Vec<election::Member>,
    departed: Vec<election::Member>,
    conflicts: Vec<String>,
    pods: HashMap<String, Arc<CachedPod>>,
}

/// The reserved successor when the pod cache does not show it (yet), read from the API server:
/// a failover may label that pod before writing status, so a decision that moves the
/// reservation elsewhere must see the pod to fence it first.
async fn unseen_successor(
    current: &ElectionGroup,
    ns: &str,
    ctx: &Context,
) -> Result<Option<Arc<CachedPod>>, Error> {
    let Some(s) = current.status.as_ref().and_then(|s| s.successor.as_ref()) else {
        return Ok(None);
    };
    let (Some(name), Some(uid)) = (s.pod.as_deref(), s.uid.as_deref()) else {
        return Ok(None);
    };
    let cached = ctx.pods.get(ns, name);
    if cached.is_some_and(|p| p.uid == uid) || ctx.overlay.uid_gone(uid) {
        return Ok(None);
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let read = api.get_opt(name).await.map_err(|source| Error::PodRead {
        namespace: ns.to_string(),
        pod: name.to_string(),
        source,
    })?;
    match read {
        Some(p) if p.uid().as_deref() == Some(uid) => Ok(Some(Arc::new(CachedPod::from_pod(p)))),
        _ => {
            ctx.overlay.pod_deleted(uid);
            Ok(None)
        }
    }
}

/// Collects the group's members from the pod cache, with podium's newer writes and reads.
fn gather(
    current: &ElectionGroup,
    ns: &str,
    settings: &Settings,
    unseen: Option<Arc<CachedPod>>,
    ctx: &Context,
) -> Gathered {
    let name = current.name_any();
    // The pods the selector can match, by its anchor label, and those podium labelled for the
    // group (they may have left the selector).
    // Also the pods status names: a leader whose cached copy predates podium's own write (so
    // neither its labels nor its annotation index it here yet) must still be seen.
    let status = current.status.as_ref();
    let named = status
        .map(|s| {
            let successor = s.successor.as_ref().and_then(|x| x.pod.as_deref());
            [s.leader.as_deref(), successor]
        })
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .filter_map(|n| ctx.pods.get(ns, n));
    let pods: HashMap<String, Arc<CachedPod>> = ctx
        .pods
        .candidates(ns, &anchor(&settings.selector))
        .into_iter()
        .chain(ctx.pods.labelled_for(ns, &name))
        .chain(named)
        .filter(|p| !ctx.overlay.pod_gone(p))
        .map(|p| ctx.overlay.pod(&p))
        .chain(unseen)
        .map(|p| (p.name.clone(), p))
        .collect();
    // Only groups that select one of these pods can hold one of them.
    let mut others: Vec<Arc<Claim>> = pods
        .values()
        .flat_map(|p| ctx.claims.selecting(ns, &p.labels))
        .collect();
    others.sort_by(|a, b| a.name.cmp(&b.name));
    others.dedup_by(|a, b| a.name == b.name);
    let keys = RoleKeys {
        current: &settings.role_label,
        previous: current
            .status
            .as_ref()
            .and_then(|s| s.role_label.as_deref()),
    };
    let m = membership(
        &Claim::of(current),
        &settings.selector,
        keys,
        &others,
        pods.values().map(|p| p.as_ref()),
    );
    Gathered {
        members: m.members,
        departed: m.departed,
        conflicts: m.conflicts,
        pods,
    }
}

/// Watches the node Leases of the group's leader(s) and reserved successor, and tells each
/// member on those nodes how long its node has gone unrenewed. A node that looks lost is
/// confirmed with a read of its Lease first.
async fn node_silences(
    group: &ElectionGroup,
    settings: &Settings,
    members: &mut [election::Member],
    ctx: &Context,
) {
    let name = group.name_any();
    let status = group.status.as_ref();
    let leader = status.and_then(|s| s.leader.as_deref());
    let successor = status
        .and_then(|s| s.successor.as_ref())
        .and_then(|s| s.pod.as_deref());
    let mut nodes: Vec<(String, Duration)> = members
        .iter()
        .filter(|m| {
            // Only pods podium labelled for this group: a foreign pod's labels and node name
            // must not decide what podium watches.
            (m.role.as_deref() == Some(LEADER) && m.group.as_deref() == Some(name.as_str()))
                || Some(m.name.as_str()) == leader
                || Some(m.name.as_str()) == successor
        })
        .filter_map(|m| m.node.clone())
        .map(|n| (n, settings.node_loss))
        .collect();
    nodes.sort();
    nodes.dedup();
    let key = ObjectRef::<Guarded>::new(&name).within(&group.namespace().unwrap_or_default());
    let mut silences = ctx.nodes.observe(&key, &nodes);
    let (watched, failing) = ctx.nodes.watched();
    ctx.metrics.node_lease_watches(watched, failing);
    let lost: Vec<String> = silences
        .iter()
        .filter(|(_, s)| **s >= settings.node_loss)
        .map(|(n, _)| n.clone())
        .collect();
    for node in lost {
        if !ctx.nodes.confirm_lost(&node).await {
            silences.remove(&node);
        }
    }
    for m in members {
        m.node_silence = m.node.as_ref().and_then(|n| silences.get(n).copied());
    }
}

/// One pass: make sure of the finalizer, validate, observe, decide and apply.
async fn decide_and_apply(
    current: &mut ElectionGroup,
    ns: &str,
    ctx: &Context,
    failover_since: &mut Option<Timestamp>,
) -> Result<Pass, Error> {
    let name = current.name_any();
    if !current.finalizers().iter().any(|f| f == FINALIZER)
        && apply::add_finalizer(current, ctx).await? == Outcome::Stale
    {
        return Ok(Pass::Stale);
    }
    let status = current.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let settings = match validate(&current.spec) {
        Ok(s) => s,
        Err(problems) => {
            // No decision is made on an invalid spec: nothing to watch nodes for.
            ctx.nodes
                .forget(&ObjectRef::<Guarded>::new(&name).within(ns));
            let plan = election::reject(&status, current.metadata.generation, &problems, now);
            if (plan.status != status || current.status.is_none())
                && apply::status(current, &plan.status, ctx).await? == Outcome::Stale
            {
                return Ok(Pass::Stale);
            }
            publish(current, &plan.notes, ctx);
            return Ok(Pass::Done(Action::await_change()));
        }
    };
    let mirror = if settings.publish_lease {
        Some(apply::lease_mirror(current, ctx).await?)
    } else {
        None
    };
    let unseen = unseen_successor(current, ns, ctx).await?;
    let mut g = gather(current, ns, &settings, unseen, ctx);
    node_silences(current, &settings, &mut g.members, ctx).await;
    // Stable order, so that Events and writes do not depend on the cache's hash order.
    g.members.sort_by(|a, b| a.name.cmp(&b.name));
    g.departed.sort_by(|a, b| a.name.cmp(&b.name));
    let passed_over = ctx.passed_over(&g.members);
    let request = current
        .annotations()
        .get(HANDOFF_ANNOTATION)
        .map(String::as_str);
    let plan = election::decide(&Observation {
        group: &name,
        generation: current.metadata.generation,
        settings: &settings,
        status: &status,
        members: &g.members,
        departed: &g.departed,
        conflicts: &g.conflicts,
        handoff_request: request,
        passed_over: &passed_over,
        lease_foreign: matches!(mirror, Some(LeaseMirror::Foreign)),
        now,
    });
    apply_plan(
        current,
        ns,
        &settings,
        &status,
        plan,
        &g,
        mirror,
        ctx,
        failover_since,
    )
    .await
}

/// Applies a plan: the reserved successor's follower write, then status (it records any new
/// term), then the handoff request, then the writes that move leadership one by one in the
/// plan's order, then the other followers a few at a time, then the Lease mirror; a failover to
/// the reserved successor labels it first and writes status last. Events are queued last.
#[allow(clippy::too_many_arguments)]
async fn apply_plan(
    current: &mut ElectionGroup,
    ns: &str,
    settings: &Settings,
    old: &crate::crd::ElectionGroupStatus,
    mut plan: Plan,
    g: &Gathered,
    mirror: Option<LeaseMirror>,
    ctx: &Context,
    failover_since: &mut Option<Timestamp>,
) -> Result<Pass, Error> {
    debug!(leader = ?plan.status.leader, term = plan.status.term, successor = ?plan.status.successor,
           abandoned = plan.status.abandoned.len(), labels_first = plan.labels_first,
           writes = plan.writes.len(), "decided");
    let name = current.name_any();
    let keys = PodKeys {
        group: &name,
        role_label: &settings.role_label,
        old_role_label: old.role_label.as_deref(),
    };
    let writes = std::mem::take(&mut plan.writes);
    let (ordered, neutral) = writes.split_at(plan.neutral_from);
    let mut rest: Vec<&election::PodWrite> = neutral.iter().collect();
    if plan.labels_first {
        // A failover to the reserved successor labels it first: status already records its term.
        if let Pass::Stale = write_pods(current, ns, ordered, Order::InTurn, &keys, g, ctx).await? {
            return Ok(Pass::Stale);
        }
        leadership_moved(ctx);
        if let Pass::Stale =
            write_pods(current, ns, neutral, Order::AnyOrder, &keys, g, ctx).await?
        {
            return Ok(Pass::Stale);
        }
        rest.clear();
    } else if let Some(w) = successor_write(&plan, neutral) {
        // Only the reserved successor's own follower write goes before status, so that status
        // pins it at the version that write leaves it (one status write for a new group, not
        // two). Should it fail, it is made again with the others after the leader, where a
        // failure is reported.
        match write_pod(ns, w, &keys, g, ctx).await {
            Ok(Outcome::Done) => {
                repin_successor(&mut plan, w, g, ctx);
                rest.retain(|r| r.uid != w.uid);
            }
            Ok(Outcome::Stale) => return Ok(Pass::Stale),
            Err(PodWriteError::NotLeading) => return Err(Error::NotLeading),
            Ok(Outcome::Gone) | Err(PodWriteError::Api(_)) => {}
        }
    }
    if let Pass::Stale = record_status(current, ns, old, &plan, ctx, failover_since).await? {
        return Ok(Pass::Stale);
    }
    let ordered = if plan.labels_first { &[][..] } else { ordered };
    let rest: Vec<election::PodWrite> = rest.into_iter().cloned().collect();
    let after_status = (ordered, rest.as_slice());
    let pass = apply_recorded(current, ns, &plan, after_status, &keys, g, mirror, ctx).await;
    // Announced once the status that records it is stored, whatever happens to the pods: the
    // decision that finishes the job announces nothing new.
    publish(current, &plan.notes, ctx);
    if let Ok(Pass::Done(_)) = pass {
        record(current, ns, &plan, failover_since.take(), ctx);
    }
    pass
}

/// The follower write of the reserved successor, if the plan makes one.
fn successor_write<'a>(
    plan: &Plan,
    neutral: &'a [election::PodWrite],
) -> Option<&'a election::PodWrite> {
    let uid = plan.status.successor.as_ref()?.uid.as_ref()?;
    neutral.iter().find(|w| &w.uid == uid)
}

/// Pins the reserved successor to the version podium's own write `w` just gave it, as the next
/// decision would: status is then written once instead of twice.
fn repin_successor(plan: &mut Plan, w: &election::PodWrite, g: &Gathered, ctx: &Context) {
    let Some(s) = plan.status.successor.as_mut() else {
        return;
    };
    if s.uid.as_ref() != Some(&w.uid) || s.resource_version != w.resource_version {
        return;
    }
    // The write just acknowledged is in the overlay: the version it produced.
    let written = g
        .pods
        .get(&w.pod)
        .map(|p| ctx.overlay.pod(p))
        .filter(|p| p.uid == w.uid && p.resource_version != w.resource_version);
    if let Some(p) = written {
        s.resource_version = p.resource_version.clone();
    }
}

/// The writes that follow a stored status: the handoff request, the pods, the Lease mirror.
#[allow(clippy::too_many_arguments)]
async fn apply_recorded(
    current: &mut ElectionGroup,
    ns: &str,
    plan: &Plan,
    (ordered, rest): (&[election::PodWrite], &[election::PodWrite]),
    keys: &PodKeys<'_>,
    g: &Gathered,
    mirror: Option<LeaseMirror>,
    ctx: &Context,
) -> Result<Pass, Error> {
    if plan.clear_handoff_request
        && apply::clear_handoff_request(current, ctx).await? == Outcome::Stale
    {
        return Ok(Pass::Stale);
    }
    if let Pass::Stale = write_pods(current, ns, ordered, Order::InTurn, keys, g, ctx).await? {
        return Ok(Pass::Stale);
    }
    leadership_moved(ctx);
    if let Pass::Stale = write_pods(current, ns, rest, Order::AnyOrder, keys, g, ctx).await? {
        return Ok(Pass::Stale);
    }
    if let Some(mirror) = mirror
        && apply::publish_lease(current, mirror, &plan.status, ctx).await? == Outcome::Stale
    {
        return Ok(Pass::Stale);
    }
    Ok(Pass::Done(
        plan.requeue_after.map_or_else(Action::await_change, |d| {
            Action::requeue(d + Duration::from_millis(5))
        }),
    ))
}

/// How a batch of pod writes is made.
#[derive(Clone, Copy, PartialEq)]
enum Order {
    /// Each acknowledged before the next: they move leadership.
    InTurn,
    /// A few at a time, in any order: they move no leadership.
    AnyOrder,
}

/// Pod writes in flight at once for one group, when their order does not matter.
const WRITES_AT_ONCE: usize = 8;

/// One pod write of a plan, recorded against the cached copy it was decided from.
fn write_pod<'a>(
    ns: &'a str,
    w: &'a election::PodWrite,
    keys: &'a PodKeys<'_>,
    g: &'a Gathered,
    ctx: &'a Context,
) -> impl Future<Output = Result<Outcome, PodWriteError>> + 'a {
    apply::pod(ns, w, keys, g.pods.get(&w.pod).cloned(), ctx)
}

/// Makes pod writes, each only while the controller Lease is held; a failure is reported and
/// ends the batch, a conflict makes the decision stale.
async fn write_pods(
    current: &mut ElectionGroup,
    ns: &str,
    writes: &[election::PodWrite],
    order: Order,
    keys: &PodKeys<'_>,
    g: &Gathered,
    ctx: &Context,
) -> Result<Pass, Error> {
    let at_once = match order {
        Order::InTurn => 1,
        Order::AnyOrder => WRITES_AT_ONCE,
    };
    let mut pass = Pass::Done(Action::await_change());
    for batch in writes.chunks(at_once) {
        // Each write checks the Lease once it has its slot (see `Context::write_slot`).
        let results =
            futures::future::join_all(batch.iter().map(|w| write_pod(ns, w, keys, g, ctx))).await;
        for (w, result) in batch.iter().zip(results) {
            if let Pass::Stale = settle_pod_write(current, ns, w, result, ctx).await? {
                pass = Pass::Stale;
            }
        }
        // The rest was decided on what just changed.
        if let Pass::Stale = pass {
            break;
        }
    }
    Ok(pass)
}

/// Writes the plan's status and counts the transition it records (once, whatever happens to
/// the pods afterwards).
async fn record_status(
    current: &mut ElectionGroup,
    ns: &str,
    old: &crate::crd::ElectionGroupStatus,
    plan: &Plan,
    ctx: &Context,
    failover_since: &mut Option<Timestamp>,
) -> Result<Pass, Error> {
    if (&plan.status != old || current.status.is_none())
        && apply::status(current, &plan.status, ctx).await? == Outcome::Stale
    {
        return Ok(Pass::Stale);
    }
    record_transition(current, ns, plan, ctx);
    if plan.unfit_since.is_some() {
        *failover_since = plan.unfit_since;
    }
    Ok(Pass::Done(Action::await_change()))
}

/// Handles how one pod write of a plan ended; a failure is reported on the group and counted
/// against the candidate when it was a promotion the pod itself refused.
async fn settle_pod_write(
    current: &mut ElectionGroup,
    ns: &str,
    w: &election::PodWrite,
    result: Result<Outcome, PodWriteError>,
    ctx: &Context,
) -> Result<Pass, Error> {
    let promotion = matches!(w.change, PodChange::Label { role: LEADER, .. });
    match result {
        Ok(Outcome::Done) => {
            if promotion {
                ctx.promotion_succeeded(&w.uid);
            }
            if matches!(w.change, PodChange::Release { .. }) {
                ctx.pods.forget_out_of_scope(ns, &w.pod, &w.uid);
            }
            debug!(pod = %w.pod, change = ?w.change, "pod written");
            Ok(Pass::Done(Action::await_change()))
        }
        // A pod that is gone carries no label any more: taking its labels off is done; only a
        // promotion needs a new decision. (A same-named replacement fails the UID precondition
        // with a conflict instead.)
        Ok(Outcome::Gone) if !promotion => {
            debug!(pod = %w.pod, change = ?w.change, "pod already gone");
            ctx.pods.forget_out_of_scope(ns, &w.pod, &w.uid);
            Ok(Pass::Done(Action::await_change()))
        }
        Ok(outcome @ (Outcome::Stale | Outcome::Gone)) => {
            debug!(pod = %w.pod, change = ?w.change, gone = matches!(outcome, Outcome::Gone),
                   "pod changed since the decision; deciding again");
            Ok(Pass::Stale)
        }
        Err(PodWriteError::NotLeading) => Err(Error::NotLeading),
        Err(PodWriteError::Api(source)) => {
            let role = match &w.change {
                PodChange::Label { role, .. } => *role,
                PodChange::Release { .. } => "none",
            };
            let e = Error::PodWrite {
                namespace: ns.to_string(),
                pod: w.pod.clone(),
                role,
                source,
            };
            if promotion && refused_for_the_pod(&e) {
                ctx.promotion_failed(current, &w.pod, &w.uid, &e);
            }
            report_write_failure(current, &e, ctx).await;
            Err(e)
        }
    }
}

/// A failed write that says something about the pod itself (an admission webhook, a missing
/// permission, an invalid object), as opposed to a conflict, a timeout or an unavailable server.
fn refused_for_the_pod(e: &Error) -> bool {
    matches!(e, Error::PodWrite { source: kube::Error::Api(s), .. } if matches!(s.code, 400 | 403 | 422))
}

/// The metric and log line of a change of leader, once its term is recorded in status.
fn record_transition(group: &ElectionGroup, ns: &str, plan: &Plan, ctx: &Context) {
    if let Some(reason) = plan.transition {
        ctx.metrics.leader_changed(reason);
        info!(group = %group.name_any(), namespace = %ns, leader = ?plan.status.leader, term = plan.status.term,
              reason = reason.as_str(), "leader changed");
    }
}

/// Metrics of a plan applied in full; `failover_since` is when the leader it replaced became unfit.
fn record(
    group: &ElectionGroup,
    ns: &str,
    plan: &Plan,
    failover_since: Option<Timestamp>,
    ctx: &Context,
) {
    let name = group.name_any();
    if let Some(since) = failover_since {
        ctx.metrics
            .failover_took(Timestamp::now().duration_since(since).as_secs_f64());
    }
    let ready = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == election::READY);
    ctx.metrics
        .group_ready(&format!("{ns}/{name}"), ready.map(|c| c.status.as_str()));
}

/// Marks the group not Ready because a pod write failed, and says why, so that a missing
/// permission is visible in `kubectl describe eg` and not only in the operator's log.
async fn report_write_failure(group: &mut ElectionGroup, err: &Error, ctx: &Context) {
    let message = err.to_string();
    let now = Timestamp::now();
    let old = group.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = group.metadata.generation;
    let ready = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: election::READY.into(),
        status: "False".into(),
        reason: "PodWriteFailed".into(),
        message: message.clone(),
        observed_generation: group.metadata.generation,
        last_transition_time: old
            .conditions
            .iter()
            .find(|c| c.type_ == election::READY && c.status == "False")
            .map_or(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
                |c| c.last_transition_time.clone(),
            ),
    };
    status.conditions.retain(|c| c.type_ != election::READY);
    status.conditions.insert(0, ready);
    if status != old
        && let Err(e) = apply::status(group, &status, ctx).await
    {
        warn!(error = %e, "cannot report the failed pod write in status either");
    }
    let note = Note {
        subject: Subject::Group,
        warning: true,
        reason: "PodWriteFailed",
        message,
    };
    publish(group, &[note], ctx);
}

/// Removes what podium wrote on the group's pods, then the finalizer (keeping everyone else's).
async fn cleanup(group: &mut ElectionGroup, ns: &str, ctx: &Context) -> Result<Pass, Error> {
    let name = group.name_any();
    ctx.nodes
        .forget(&ObjectRef::<Guarded>::new(&name).within(ns));
    if !group.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Pass::Done(Action::await_change()));
    }
    let keys = PodKeys {
        group: &name,
        role_label: &group.spec.role_label,
        old_role_label: group.status.as_ref().and_then(|s| s.role_label.as_deref()),
    };
    // Those the cache shows labelled for the group, and those its selector picks, whose label
    // podium may have just written without the cache showing it yet.
    let selected = Claim::of(group).selector.map(|s| anchor(&s));
    let mut pods = ctx.pods.labelled_for(ns, &name);
    pods.extend(
        selected
            .map(|a| ctx.pods.candidates(ns, &a))
            .unwrap_or_default(),
    );
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    pods.dedup_by(|a, b| a.name == b.name);
    let released: Vec<Arc<CachedPod>> = pods
        .iter()
        .map(|p| ctx.overlay.pod(p))
        .filter(|p| p.annotations.get(GROUP_ANNOTATION) == Some(&name))
        .filter(|p| !ctx.overlay.pod_gone(p))
        .collect();
    for pod in &released {
        let podium_value = |key: &str| {
            pod.labels
                .get(key)
                .is_some_and(|v| v == LEADER || v == FOLLOWER)
        };
        let w = election::PodWrite {
            pod: pod.name.clone(),
            uid: pod.uid.clone(),
            resource_version: pod.resource_version.clone(),
            drop_old_key: keys.old_role_label.is_some_and(podium_value),
            change: PodChange::Release {
                role_label: podium_value(keys.role_label),
            },
        };
        match apply::pod(ns, &w, &keys, Some(pod.clone()), ctx).await {
            Ok(Outcome::Done | Outcome::Gone) => ctx.pods.forget_out_of_scope(ns, &w.pod, &w.uid),
            Ok(Outcome::Stale) => return Ok(Pass::Stale),
            Err(PodWriteError::NotLeading) => return Err(Error::NotLeading),
            Err(PodWriteError::Api(source)) => {
                return Err(Error::PodWrite {
                    namespace: ns.to_string(),
                    pod: w.pod,
                    role: "none",
                    source,
                });
            }
        }
    }
    if apply::remove_finalizer(group, ctx).await? == Outcome::Stale {
        return Ok(Pass::Stale);
    }
    ctx.metrics.group_ready(&format!("{ns}/{name}"), None);
    info!(group = %name, namespace = %ns, pods = released.len(), "group deleted; labels removed");
    Ok(Pass::Done(Action::await_change()))
}

/// Reports a group the controller cannot even read (its spec does not match the schema it knows).
async fn report_unreadable(obj: &Guarded, error: &str, ctx: &Context) -> Result<Action, Error> {
    let name = obj.name_any();
    let ns = obj
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let message = format!("cannot read spec: {error}");
    let api: Api<ElectionGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let condition = json!({
        "type": election::SPEC_VALID, "status": "False", "reason": "InvalidSpec", "message": message,
        "observedGeneration": obj.meta().generation, "lastTransitionTime": Timestamp::now(),
    });
    let patch = json!({
        "metadata": {"resourceVersion": obj.meta().resource_version},
        "status": {"conditions": [condition], "observedGeneration": obj.meta().generation},
    });
    let _slot = ctx.write_slot().await?;
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|source| Error::Status {
            namespace: ns.clone(),
            group: name.clone(),
            source,
        })?;
    let ev = Event {
        type_: EventType::Warning,
        reason: "InvalidSpec".into(),
        note: Some(message),
        action: "Validate".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        match e {
            Unpublished::Api(e) => warn!(error = %brief(&e), "cannot publish event"),
            Unpublished::NotLeading => return Err(Error::NotLeading),
        }
    }
    Ok(Action::await_change())
}

/// Publishes Events in the background: an Event is never worth delaying a failover, and a
/// failure to publish one is logged, never fatal.
fn publish(group: &ElectionGroup, notes: &[Note], ctx: &Context) {
    if notes.is_empty() {
        return;
    }
    let group_ref = group.object_ref(&());
    let events: Vec<(Event, k8s_openapi::api::core::v1::ObjectReference)> = notes
        .iter()
        .map(|n| {
            let reference = match &n.subject {
                Subject::Group => group_ref.clone(),
                Subject::Pod(pod) => k8s_openapi::api::core::v1::ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.clone()),
                    namespace: group.namespace(),
                    ..Default::default()
                },
            };
            let ev = Event {
                type_: if n.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: n.reason.into(),
                // The API server refuses an Event whose message exceeds 1024 characters.
                note: Some(n.message.chars().take(1000).collect()),
                action: match n.reason {
                    "LeaderElected" | "BecameLeader" | "LostLeadership" => "Elect",
                    "HandoffSkipped" | "HandoffRejected" => "Handoff",
                    _ => "Reconcile",
                }
                .into(),
                secondary: matches!(n.subject, Subject::Pod(_)).then(|| group_ref.clone()),
            };
            (ev, reference)
        })
        .collect();
    ctx.recorder.publish_later(events);
}
