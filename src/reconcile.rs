//! The controller: gathers an observation from its caches, asks `election::decide`, applies the plan.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::crd::{
    ElectionGroup, FINALIZER, GROUP_ANNOTATION, HANDOFF_ANNOTATION, LEADER, TERM_ANNOTATION,
};
use crate::election::{self, Note, Observation, Plan, PodChange, Subject};
use crate::membership::{Claim, membership};
use crate::metrics::Metrics;
use crate::overlay::Overlay;
use crate::validation::{Settings, validate};

/// Field manager for every write podium makes.
pub const MANAGER: &str = "podium";

type Guarded = DeserializeGuard<ElectionGroup>;

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
    /// The pod or group cache never became ready.
    #[error("waiting for the {0} cache: {1}")]
    Cache(&'static str, String),
    /// The object has no namespace; ElectionGroups are namespaced, so the API server sent something odd.
    #[error("ElectionGroup {0} has no namespace")]
    NoNamespace(String),
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
            | Error::Lease { source, .. } => match source {
                kube::Error::Api(s) if s.code == 403 => "forbidden",
                kube::Error::Api(s) if s.code == 409 => "conflict",
                kube::Error::Api(s) if s.code == 404 => "not_found",
                kube::Error::Api(_) => "api",
                _ => "transport",
            },
            Error::Cache(..) => "cache",
            Error::NoNamespace(_) => "no_namespace",
        }
    }
}

/// Shared state of the controller.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Every pod in scope, stripped to metadata and status.
    pub pods: Store<Pod>,
    /// Every ElectionGroup in scope.
    pub groups: Store<Guarded>,
    /// Whether the pod and group caches have been filled once.
    synced: (watch::Receiver<bool>, watch::Receiver<bool>),
    /// Publishes Events.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Writes the caches may not show yet.
    pub overlay: Overlay,
    /// Whether this replica is the active controller; a standby computes nothing and writes nothing.
    pub active: watch::Receiver<bool>,
    /// Consecutive failures per group, for the error policy's backoff.
    failures: Mutex<HashMap<ObjectRef<Guarded>, u32>>,
}

/// How the controller is scoped and identified.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    /// Reporting instance for Events (e.g. the pod name).
    pub instance: Option<String>,
    /// Whether this replica may write; every group is reconciled again when it turns true.
    pub active: watch::Receiver<bool>,
    /// How many groups are reconciled at once.
    pub concurrency: u16,
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

    let (pods, pod_writer) = reflector::store();
    let pod_events = watcher(pods_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(slim_pod)
        .reflect(pod_writer)
        .inspect(move |ev| mark_synced(ev, &pods_synced_tx))
        .touched_objects();
    let (groups, group_writer) = reflector::store();
    let group_events = watcher(groups_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(group_writer)
        .inspect(move |ev| mark_synced(ev, &groups_synced_tx))
        .touched_objects();

    let controller = Controller::for_stream(group_events, groups.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(opts.concurrency));
    let reporter = Reporter {
        controller: "podium".into(),
        instance: opts.instance.clone(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pods.clone(),
        groups: groups.clone(),
        synced: (pods_synced.clone(), groups_synced.clone()),
        recorder: Recorder::new(client, reporter),
        metrics,
        active: opts.active.clone(),
        overlay: Overlay::default(),
        failures: Mutex::default(),
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

    let mapper_groups = groups.clone();
    controller
        .watches_stream(pod_events, move |pod| groups_for_pod(&mapper_groups, &pod))
        .reconcile_all_on(became_active)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(group = %obj, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

/// Flags a cache as filled once its watcher finishes the initial list.
fn mark_synced<K>(ev: &Result<watcher::Event<K>, watcher::Error>, synced: &watch::Sender<bool>) {
    if matches!(ev, Ok(watcher::Event::InitDone)) {
        synced.send_replace(true);
    }
}

/// The groups a pod event concerns: those that select it, and the one it is labelled for.
fn groups_for_pod(groups: &Store<Guarded>, pod: &Pod) -> Vec<ObjectRef<Guarded>> {
    let ns = pod.namespace();
    let labels = pod.labels();
    let labelled_for = pod.annotations().get(GROUP_ANNOTATION);
    groups
        .state()
        .iter()
        .filter(|g| g.namespace() == ns)
        .filter(|g| match &g.0 {
            Ok(group) => {
                labelled_for == Some(&group.name_any()) || Claim::of(group).selects(labels)
            }
            Err(_) => false,
        })
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

/// Keeps only what the election reads, so that the cache of every pod stays small.
fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.spec = None;
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
}

async fn reconcile(obj: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !*ctx.active.borrow() {
        return Ok(Action::await_change());
    }
    let (mut pods_synced, mut groups_synced) = ctx.synced.clone();
    pods_synced
        .wait_for(|s| *s)
        .await
        .map_err(|e| Error::Cache("pod", e.to_string()))?;
    groups_synced
        .wait_for(|s| *s)
        .await
        .map_err(|e| Error::Cache("ElectionGroup", e.to_string()))?;
    let key = ObjectRef::from_obj(obj.as_ref());
    let result = match &obj.0 {
        Ok(group) => reconcile_group(group, &ctx).await,
        Err(invalid) => report_unreadable(obj.as_ref(), &invalid.error, &ctx).await,
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

async fn reconcile_group(cached: &ElectionGroup, ctx: &Context) -> Result<Action, Error> {
    let name = cached.name_any();
    let ns = cached
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    if cached.metadata.deletion_timestamp.is_some() {
        return cleanup(cached, &ns, ctx).await;
    }
    // Our own last write, when the cache has not caught up with it yet.
    let mut current = ctx.overlay.group(cached).unwrap_or_else(|| cached.clone());
    let status = current.status.clone().unwrap_or_default();

    if !current.finalizers().iter().any(|f| f == FINALIZER) {
        let patch = json!({"metadata": {"finalizers": [FINALIZER], "resourceVersion": current.resource_version()}});
        patch_group_metadata(&mut current, patch, ctx).await?;
    }

    let now = Timestamp::now();
    let settings = match validate(&current.spec) {
        Ok(s) => s,
        Err(problems) => {
            let plan = election::reject(&status, current.metadata.generation, &problems, now);
            apply_status(&mut current, &status, &plan, ctx).await?;
            publish(&current, &plan.notes, ctx).await;
            return Ok(Action::await_change());
        }
    };

    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .map(|p| ctx.overlay.pod(p))
        .collect();
    let others: Vec<Claim> = ctx
        .groups
        .state()
        .iter()
        .filter(|g| g.namespace().as_deref() == Some(ns.as_str()))
        .filter_map(|g| g.0.as_ref().ok().map(Claim::of))
        .collect();
    let me = Claim::of(&current);
    let m = membership(
        &me,
        &settings.selector,
        &settings.role_label,
        &others,
        pods.iter().map(|p| p.as_ref()),
    );
    let request = current
        .annotations()
        .get(HANDOFF_ANNOTATION)
        .map(String::as_str);
    let plan = election::decide(&Observation {
        group: &name,
        generation: current.metadata.generation,
        settings: &settings,
        status: &status,
        members: &m.members,
        departed: &m.departed,
        conflicts: &m.conflicts,
        handoff_request: request,
        now,
    });

    if let Err(e) = apply_pod_writes(&ns, &name, &settings, &plan, ctx).await {
        report_write_failure(&mut current, &status, &e, ctx).await;
        return Err(e);
    }
    if let Some(since) = plan.unfit_since {
        ctx.metrics
            .failover_took(Timestamp::now().duration_since(since).as_secs_f64());
    }
    if plan.clear_handoff_request {
        let patch = json!({"metadata": {"annotations": {HANDOFF_ANNOTATION: null}}});
        patch_group_metadata(&mut current, patch, ctx).await?;
    }
    if settings.publish_lease {
        publish_lease(&current, &ns, &plan, ctx).await?;
    }
    apply_status(&mut current, &status, &plan, ctx).await?;
    if let Some(reason) = plan.transition {
        ctx.metrics.leader_changed(reason);
        info!(group = %name, namespace = %ns, leader = ?plan.status.leader, term = plan.status.term,
              reason = reason.as_str(), "leader changed");
    }
    publish(&current, &plan.notes, ctx).await;
    let ready = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == election::READY);
    ctx.metrics
        .group_ready(&format!("{ns}/{name}"), ready.map(|c| c.status.as_str()));

    Ok(plan.requeue_after.map_or_else(Action::await_change, |d| {
        Action::requeue(d + Duration::from_millis(5))
    }))
}

/// Applies the plan's pod writes one by one, each acknowledged before the next.
async fn apply_pod_writes(
    ns: &str,
    group: &str,
    s: &Settings,
    plan: &Plan,
    ctx: &Context,
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    for w in &plan.writes {
        let (role, patch) = match &w.change {
            PodChange::Label { role, term } => (
                *role,
                json!({"metadata": {
                    "labels": {&s.role_label: role},
                    "annotations": {TERM_ANNOTATION: term.map(|t| t.to_string()), GROUP_ANNOTATION: group},
                }}),
            ),
            PodChange::Release => ("none", release_patch(&s.role_label)),
        };
        let replaced = ctx
            .pods
            .get(&ObjectRef::new(&w.pod).within(ns))
            .and_then(|p| p.resource_version());
        match pods
            .patch_metadata(&w.pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(written) => {
                ctx.metrics.pod_written();
                ctx.overlay.pod_written(ns, replaced, written.metadata);
            }
            // A follower or released pod that is already gone needs nothing more.
            Err(kube::Error::Api(e)) if e.code == 404 && role != LEADER => {}
            Err(source) => {
                return Err(Error::PodWrite {
                    namespace: ns.to_string(),
                    pod: w.pod.clone(),
                    role,
                    source,
                });
            }
        }
        debug!(pod = %w.pod, role, "pod written");
    }
    Ok(())
}

/// Marks the group not Ready because a pod write failed, and says why, so that a missing
/// permission is visible in `kubectl describe eg` and not only in the operator's log.
async fn report_write_failure(
    group: &mut ElectionGroup,
    old: &crate::crd::ElectionGroupStatus,
    err: &Error,
    ctx: &Context,
) {
    let message = err.to_string();
    let now = Timestamp::now();
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
    let plan = Plan {
        writes: Vec::new(),
        status,
        notes: vec![Note {
            subject: Subject::Group,
            warning: true,
            reason: "PodWriteFailed",
            message,
        }],
        requeue_after: None,
        clear_handoff_request: false,
        transition: None,
        unfit_since: None,
    };
    if let Err(e) = apply_status(group, old, &plan, ctx).await {
        warn!(error = %e, "cannot report the failed pod write in status either");
    }
    publish(group, &plan.notes, ctx).await;
}

/// The merge patch that removes everything podium writes on a pod.
fn release_patch(role_label: &str) -> serde_json::Value {
    json!({"metadata": {
        "labels": {role_label: null},
        "annotations": {TERM_ANNOTATION: null, GROUP_ANNOTATION: null},
    }})
}

/// Writes the status when it differs from what is stored.
async fn apply_status(
    current: &mut ElectionGroup,
    old: &crate::crd::ElectionGroupStatus,
    plan: &Plan,
    ctx: &Context,
) -> Result<(), Error> {
    if &plan.status == old && current.status.is_some() {
        return Ok(());
    }
    let (ns, name) = (current.namespace().unwrap_or_default(), current.name_any());
    let api: Api<ElectionGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let body = json!({
        "apiVersion": ElectionGroup::api_version(&()),
        "kind": ElectionGroup::kind(&()),
        "status": plan.status,
    });
    let replaced = current.resource_version();
    let written = api
        .patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map_err(|source| Error::Status {
            namespace: ns,
            group: name,
            source,
        })?;
    ctx.metrics.status_written();
    ctx.overlay.group_written(replaced, written.clone());
    *current = written;
    Ok(())
}

/// Patches the group's metadata and remembers the result until the cache shows it.
async fn patch_group_metadata(
    current: &mut ElectionGroup,
    patch: serde_json::Value,
    ctx: &Context,
) -> Result<(), Error> {
    let (ns, name) = (current.namespace().unwrap_or_default(), current.name_any());
    let api: Api<ElectionGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let replaced = current.resource_version();
    let meta = api
        .patch_metadata(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|source| Error::Metadata {
            namespace: ns,
            group: name,
            source,
        })?;
    current.metadata = meta.metadata;
    ctx.overlay.group_written(replaced, current.clone());
    Ok(())
}

/// Mirrors the leader into a Lease named after the group, when it differs.
async fn publish_lease(
    group: &ElectionGroup,
    ns: &str,
    plan: &Plan,
    ctx: &Context,
) -> Result<(), Error> {
    let name = group.name_any();
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), ns);
    let err = |source| Error::Lease {
        namespace: ns.to_string(),
        group: name.clone(),
        source,
    };
    let since = plan.status.leader_since.as_ref().map(|t| MicroTime(t.0));
    let want = json!({
        "holderIdentity": plan.status.leader,
        "leaseTransitions": i32::try_from(plan.status.term).unwrap_or(i32::MAX),
        "acquireTime": since,
        "renewTime": since,
    });
    let current = api.get_opt(&name).await.map_err(err)?;
    let same = current
        .as_ref()
        .and_then(|l| l.spec.as_ref())
        .is_some_and(|spec| {
            serde_json::to_value(spec).ok().is_some_and(|v| {
                [
                    "holderIdentity",
                    "leaseTransitions",
                    "acquireTime",
                    "renewTime",
                ]
                .iter()
                .all(|k| v.get(k).unwrap_or(&serde_json::Value::Null) == &want[*k])
            })
        });
    if same {
        return Ok(());
    }
    let owner = group
        .controller_owner_ref(&())
        .map(|o| vec![o])
        .unwrap_or_default();
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "ownerReferences": owner},
        "spec": want,
    });
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map_err(err)?;
    Ok(())
}

/// Removes what podium wrote on the group's pods, then the finalizer.
async fn cleanup(group: &ElectionGroup, ns: &str, ctx: &Context) -> Result<Action, Error> {
    let name = group.name_any();
    if !group.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let role_label = &group.spec.role_label;
    let released: Vec<String> = ctx
        .pods
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(ns))
        .filter(|p| p.annotations().get(GROUP_ANNOTATION) == Some(&name))
        .map(|p| p.name_any())
        .collect();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    for pod in &released {
        let patch = release_patch(role_label);
        match pods
            .patch_metadata(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(Error::PodWrite {
                    namespace: ns.to_string(),
                    pod: pod.clone(),
                    role: "none",
                    source,
                });
            }
        }
    }
    let remaining: Vec<&String> = group
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let api: Api<ElectionGroup> = Api::namespaced(ctx.client.clone(), ns);
    let patch =
        json!({"metadata": {"finalizers": remaining, "resourceVersion": group.resource_version()}});
    api.patch_metadata(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|source| Error::Metadata {
            namespace: ns.to_string(),
            group: name.clone(),
            source,
        })?;
    ctx.metrics.group_ready(&format!("{ns}/{name}"), None);
    info!(group = %name, namespace = %ns, pods = released.len(), "group deleted; labels removed");
    Ok(Action::await_change())
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
    let patch =
        json!({"status": {"conditions": [condition], "observedGeneration": obj.meta().generation}});
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
        warn!(error = %e, "cannot publish event");
    }
    Ok(Action::await_change())
}

/// Publishes the plan's Events; a failure to publish is logged, never fatal.
async fn publish(group: &ElectionGroup, notes: &[Note], ctx: &Context) {
    let group_ref = group.object_ref(&());
    for n in notes {
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
            note: Some(n.message.clone()),
            action: match n.reason {
                "LeaderElected" | "BecameLeader" | "LostLeadership" => "Elect",
                "HandoffSkipped" | "HandoffRejected" => "Handoff",
                _ => "Reconcile",
            }
            .into(),
            secondary: matches!(n.subject, Subject::Pod(_)).then(|| group_ref.clone()),
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            warn!(error = %e, reason = n.reason, "cannot publish event");
        }
    }
}
