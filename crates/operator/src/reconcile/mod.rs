//! The reconciler: one group at a time, observe → decide → execute the plan → report.
//!
//! `observe` gathers what the caches show of a group's pods, `podium_election::decide` turns it
//! into a plan, `execute` makes its writes in the plan's own order, `report` tells what happened
//! (status conditions, Events, metrics), and `cleanup` releases a deleted group's pods.

mod cleanup;
mod execute;
mod observe;
mod report;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use podium_api::{ElectionGroup, FINALIZER, Guarded, HANDOFF_ANNOTATION};
use podium_election::validation::validate;
use podium_election::{self as election, Observation};
use tracing::{debug, warn};

use crate::apply::{self, LeaseMirror, Outcome};
use crate::context::Context;
use crate::error::Error;
use crate::lane::Lane;
use crate::owned;

/// How many times one reconcile decides again after a conflict before it backs off.
const ATTEMPTS: usize = 8;

/// How one decide-and-apply pass ended.
enum Pass {
    /// Applied; what the controller should do next.
    Done(Action),
    /// Something changed under the decision and was re-read: decide again now.
    Stale,
}

/// A failover's reconcile. Its timers (the next handoff, maxTerm) belong to the routine queue:
/// the group is handed back there, which decides again and schedules them, so that scheduled
/// work never takes a failover's slot.
pub(crate) async fn reconcile_urgent(
    obj: Arc<Guarded>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(obj.as_ref());
    let queued = ctx.writer.urgent_since.take(&key);
    let action = reconcile(obj, &ctx, Some(queued)).await?;
    if action != Action::await_change() {
        // Closed only at shutdown.
        let _ = ctx.handed_back.unbounded_send(key);
    }
    Ok(Action::await_change())
}

/// A reconcile of the routine queue.
pub(crate) async fn reconcile_routine(
    obj: Arc<Guarded>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    reconcile(obj, &ctx, None).await
}

/// Takes the group's lock, then reconciles it in the lane of its queue (`failover` is when a
/// failover was queued, for the urgent queue).
async fn reconcile(
    obj: Arc<Guarded>,
    ctx: &Context,
    failover: Option<Option<std::time::Instant>>,
) -> Result<Action, Error> {
    if !*ctx.active.borrow() {
        return Ok(Action::await_change());
    }
    let key = ObjectRef::from_obj(obj.as_ref());
    let serial = ctx.locks.lock(&key, failover.is_some()).await;
    let lane = Lane::new(key.clone(), serial.failovers_waiting(), failover);
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
        Ok(group) => reconcile_group(group, ctx, &lane).await,
        Err(invalid) => report::unreadable(obj.as_ref(), &invalid.error, ctx, &lane).await,
    };
    ctx.writer
        .metrics
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
pub(crate) fn error_policy(obj: Arc<Guarded>, err: &Error, ctx: Arc<Context>) -> Action {
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

/// Decides and applies until a pass is not stale, up to [`ATTEMPTS`] passes.
async fn reconcile_group(
    cached: &ElectionGroup,
    ctx: &Context,
    lane: &Lane,
) -> Result<Action, Error> {
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
        lane.hold_for_failover(&ctx.writer.slots, &ctx.writer.metrics)
            .await;
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
        let mut current = ctx.writer.overlay.group(&stored).unwrap_or(stored);
        let pass = if current.metadata.deletion_timestamp.is_some() {
            cleanup::cleanup(&mut current, &ns, ctx, lane).await?
        } else {
            decide_and_apply(&mut current, &ns, ctx, lane, &mut failover_since).await?
        };
        match pass {
            Pass::Done(action) => return Ok(action),
            Pass::Stale => ctx.writer.metrics.conflict(),
        }
    }
    Err(Error::Contended {
        namespace: ns,
        group: name,
    })
}

/// One pass: make sure of the finalizer, validate, observe, decide and execute.
async fn decide_and_apply(
    current: &mut ElectionGroup,
    ns: &str,
    ctx: &Context,
    lane: &Lane,
    failover_since: &mut Option<Timestamp>,
) -> Result<Pass, Error> {
    let name = current.name_any();
    if !current.finalizers().iter().any(|f| f == FINALIZER)
        && apply::add_finalizer(current, &ctx.writer, lane).await? == Outcome::Stale
    {
        return Ok(Pass::Stale);
    }
    let status = current.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let settings = match validate(&name, &current.spec) {
        Ok(s) => s,
        Err(problems) => {
            // No decision is made on an invalid spec: nothing to watch nodes for.
            ctx.nodes
                .forget(&ObjectRef::<Guarded>::new(&name).within(ns));
            let plan = election::reject(&status, current.metadata.generation, &problems, now);
            if (plan.status != status || current.status.is_none())
                && apply::status(current, &plan.status, &ctx.writer, lane).await? == Outcome::Stale
            {
                return Ok(Pass::Stale);
            }
            report::publish(current, &plan.notes, ctx);
            return Ok(Pass::Done(Action::await_change()));
        }
    };
    let mirror = if settings.publish_lease {
        Some(apply::lease_mirror(current, &ctx.writer).await?)
    } else {
        None
    };
    let g = observe::observe(current, ns, &settings, ctx).await?;
    let foreign = owned::foreign(&ctx.owned, current, settings.service.as_ref());
    let passed_over = ctx.promotions.passed_over(&g.members);
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
        foreign_services: &foreign,
        now,
    });
    let run = execute::Execution {
        ctx,
        lane,
        ns,
        settings: &settings,
        old: &status,
        gathered: &g,
        foreign: &foreign,
    };
    run.execute(current, plan, mirror, failover_since).await
}
