//! Runtime wiring: the pod and group watches, their caches and routing, and the two queues
//! (routine and urgent) that run the reconciler.

use std::sync::{Arc, Mutex};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use podium_api::{Guarded, MANAGED_BY_LABEL, MANAGER, SLICE_MANAGED_BY_LABEL, SLICE_MANAGER};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::cache::PodCache;
use crate::claims::Claims;
use crate::context::Context;
use crate::events::Publisher;
use crate::leadership::Fence;
use crate::lists;
use crate::metrics::Metrics;
use crate::nodes::NodeLeases;
use crate::overlay::Overlay;
use crate::owned::store::{OwnedObjects, group_of};
use crate::reconcile::{error_policy, reconcile_routine, reconcile_urgent};
use crate::routing::{GroupLocks, UrgentSince, route};
use crate::slots::WriteSlots;
use crate::writer::Writer;

/// Urgent reconciles run at once per failover slot: one moves leadership while the others
/// write their status (each waits up to 1 s behind promotions, then for a routine slot).
const URGENT_RECONCILES_PER_SLOT: u16 = 8;

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
    /// How the caches fill; `None` asks the API server whether it streams lists.
    pub list_mode: Option<lists::ListMode>,
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
    // A streaming list where the server serves one; otherwise paged lists (500 pods a page,
    // kube's default): a list at any resourceVersion is served from the API server's cache,
    // which ignores the page size, and 50,000 pods in one response would be held whole in
    // memory before the cache reduces them.
    lists::check_version(&client).await;
    let lists = match opts.list_mode {
        Some(mode) => {
            info!(?mode, "list mode set by --list-mode");
            mode
        }
        None => lists::probe(&pods_api).await,
    };
    let mut pod_config = watcher::Config::default();
    if let Some(sel) = &opts.pod_selector {
        pod_config = pod_config.labels(sel);
    }
    let pod_triggers = lists::watch(pods_api, pod_config, lists)
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
    // Like the pods: 10,000 groups in one response would be held whole, then parsed whole.
    let group_events = lists::watch(groups_api, watcher::Config::default(), lists)
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

    let owned = Arc::new(OwnedObjects::default());
    let owned_triggers = futures::stream::select(
        owned_watch(
            &client,
            opts.namespace.as_deref(),
            &format!("{MANAGED_BY_LABEL}={MANAGER}"),
            owned.clone(),
            OwnedObjects::apply_service,
        ),
        owned_watch(
            &client,
            opts.namespace.as_deref(),
            &format!("{SLICE_MANAGED_BY_LABEL}={SLICE_MANAGER}"),
            owned.clone(),
            OwnedObjects::apply_slice,
        ),
    );

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
        writer: Writer {
            client: client.clone(),
            overlay,
            fence: opts.fence.clone(),
            slots: slots.clone(),
            metrics: metrics.clone(),
            urgent_since,
        },
        pods,
        groups: groups.clone(),
        owned,
        claims,
        locks: GroupLocks::default(),
        synced: (pods_synced.clone(), groups_synced.clone()),
        recorder: Publisher::start(client, reporter, metrics, slots, opts.fence.clone()),
        active: opts.active.clone(),
        failures: Mutex::default(),
        promotions: Default::default(),
        nodes,
        handed_back,
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
        .reconcile_on(owned_triggers)
        .reconcile_on(handed_back_rx)
        .reconcile_all_on(became_active)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_routine, error_policy, ctx.clone())
        .for_each(|res| log_result(res, "routine"));
    // A lost node under a leader is a failover too.
    let queued = ctx.writer.urgent_since.clone();
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

/// Watches podium's Services or EndpointSlices (those carrying its `managed-by` label) into
/// `owned`, and yields the group of each one that changed, to be reconciled: a change or a
/// deletion by someone else is undone.
fn owned_watch<K>(
    client: &Client,
    namespace: Option<&str>,
    labels: &str,
    owned: Arc<OwnedObjects>,
    apply: fn(&OwnedObjects, watcher::Event<K>),
) -> impl futures::Stream<Item = ObjectRef<Guarded>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    watcher(api, watcher::Config::default().labels(labels))
        .default_backoff()
        .modify(|o: &mut K| o.meta_mut().managed_fields = None)
        .flat_map(move |ev| {
            let groups: Vec<ObjectRef<Guarded>> = match ev {
                Ok(ev) => {
                    let groups = match &ev {
                        watcher::Event::Apply(o)
                        | watcher::Event::Delete(o)
                        | watcher::Event::InitApply(o) => group_of(o).into_iter().collect(),
                        watcher::Event::Init | watcher::Event::InitDone => vec![],
                    };
                    apply(&owned, ev);
                    groups
                }
                Err(e) => {
                    warn!(error = %e, kind = %K::kind(&()), "watch of podium's own objects failed; retrying");
                    vec![]
                }
            };
            futures::stream::iter(groups)
        })
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
