//! Execution of a plan: its writes, in the order `Plan::phases` gives, each fenced and
//! conditional on what the decision saw.

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use podium_api::{ElectionGroup, ElectionGroupStatus, LEADER};
use podium_election::order::Phase;
use podium_election::validation::Settings;
use podium_election::{FORGED_ROLE, Plan, PodChange, PodWrite};
use std::time::Duration;
use tracing::{debug, warn};

use super::Pass;
use super::observe::Gathered;
use super::report;
use crate::apply::{self, LeaseMirror, Outcome, PodKeys, PodWriteError};
use crate::cache::CachedPod;
use crate::context::Context;
use crate::error::Error;
use crate::lane::Lane;
use crate::owned;
use crate::owned::store::FOREIGN_FOR;

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

/// One plan's execution: what it was decided from, and the lane its writes go in.
pub(super) struct Execution<'a> {
    /// The controller's state.
    pub ctx: &'a Context,
    /// The lane of this reconcile.
    pub lane: &'a Lane,
    /// The group's namespace.
    pub ns: &'a str,
    /// The group's validated spec.
    pub settings: &'a Settings,
    /// The status the decision saw.
    pub old: &'a ElectionGroupStatus,
    /// The pods the decision saw.
    pub gathered: &'a Gathered,
    /// The owned route's names someone else holds.
    pub foreign: &'a [String],
}

impl Execution<'_> {
    /// Makes the plan's writes phase by phase; Events are queued once its status is stored
    /// (whatever happens to the pods afterwards: the decision that finishes the job announces
    /// nothing new), and the metrics of a plan applied in full are recorded.
    pub(super) async fn execute(
        &self,
        current: &mut ElectionGroup,
        mut plan: Plan,
        mirror: Option<LeaseMirror>,
        failover_since: &mut Option<Timestamp>,
    ) -> Result<Pass, Error> {
        debug!(leader = ?plan.status.leader, term = plan.status.term, successor = ?plan.status.successor,
               abandoned = plan.status.abandoned.len(), labels_first = plan.labels_first,
               writes = plan.writes.len(), "decided");
        let mut status_stored = false;
        let pass = self
            .phases(
                current,
                &mut plan,
                mirror,
                failover_since,
                &mut status_stored,
            )
            .await;
        if status_stored {
            let forged = plan.notes.iter().filter(|n| n.reason == FORGED_ROLE);
            forged.for_each(|_| self.ctx.writer.metrics.forged_role());
            report::publish(current, &plan.notes, self.ctx);
        }
        if let Ok(Pass::Done(_)) = pass {
            report::record(current, self.ns, &plan, failover_since.take(), self.ctx);
        }
        pass
    }

    async fn phases(
        &self,
        current: &mut ElectionGroup,
        plan: &mut Plan,
        mut mirror: Option<LeaseMirror>,
        failover_since: &mut Option<Timestamp>,
        status_stored: &mut bool,
    ) -> Result<Pass, Error> {
        let name = current.name_any();
        let keys = PodKeys {
            group: &name,
            role_label: &self.settings.role_label,
            old_role_label: self.old.role_label.as_deref(),
        };
        // The reserved successor's early write, should it fail, is made again with the others.
        let mut again: Vec<PodWrite> = Vec::new();
        let mut route_failed = None;
        for &phase in plan.phases() {
            let pass = match phase {
                Phase::SuccessorFollower => {
                    let writes: Vec<PodWrite> =
                        plan.pod_writes(phase).into_iter().cloned().collect();
                    for w in writes {
                        match self.write_pod(&w, &keys).await {
                            Ok(Outcome::Done) => self.repin_successor(plan, &w),
                            Ok(Outcome::Stale) => return Ok(Pass::Stale),
                            Err(PodWriteError::NotLeading) => return Err(Error::NotLeading),
                            Ok(Outcome::Gone) | Err(PodWriteError::Api(_)) => again.push(w),
                        }
                    }
                    Pass::Done(Action::await_change())
                }
                Phase::Status => {
                    let pass = self.record_status(current, plan, failover_since).await?;
                    *status_stored = matches!(pass, Pass::Done(_));
                    pass
                }
                Phase::ClearHandoffRequest => {
                    if plan.clear_handoff_request
                        && apply::clear_handoff_request(current, &self.ctx.writer, self.lane)
                            .await?
                            == Outcome::Stale
                    {
                        Pass::Stale
                    } else {
                        Pass::Done(Action::await_change())
                    }
                }
                Phase::Leadership => {
                    let writes = plan.pod_writes(phase);
                    let pass = self
                        .write_pods(current, &writes, Order::InTurn, &keys)
                        .await?;
                    // A pass gone stale keeps the failover's hold: the next pass moves
                    // leadership again at once. With an owned route, leadership has moved once
                    // its slice has.
                    if matches!(pass, Pass::Done(_)) && self.settings.service.is_none() {
                        self.lane.leadership_moved(&self.ctx.writer.metrics);
                    }
                    pass
                }
                // A failing route write holds back none of the plan's other writes (status,
                // followers): it is reported once they are made, and retried with the group.
                Phase::Endpoints => match self.endpoints(current, plan).await {
                    Err(e @ Error::Route { .. }) => {
                        warn!(error = %e, "owned route not written; the rest of the plan goes on");
                        route_failed = Some(e);
                        Pass::Done(Action::await_change())
                    }
                    other => other?,
                },
                Phase::Followers => {
                    let mut writes = plan.pod_writes(phase);
                    if !again.is_empty() {
                        writes.extend(again.iter());
                        // In the plan's order, the successor's second try in its own place.
                        writes.sort_by_key(|w| plan.writes.iter().position(|p| p.uid == w.uid));
                    }
                    self.write_pods(current, &writes, Order::AnyOrder, &keys)
                        .await?
                }
                Phase::LeaseMirror => match mirror.take() {
                    Some(mirror) => {
                        let (writer, lane) = (&self.ctx.writer, self.lane);
                        match apply::publish_lease(current, mirror, &plan.status, writer, lane)
                            .await?
                        {
                            Outcome::Stale => Pass::Stale,
                            Outcome::Done | Outcome::Gone => Pass::Done(Action::await_change()),
                        }
                    }
                    None => Pass::Done(Action::await_change()),
                },
            };
            if let Pass::Stale = pass {
                return Ok(Pass::Stale);
            }
        }
        if let Some(e) = route_failed {
            return Err(e);
        }
        // A name someone else holds is not watched: it is read again after a while.
        let requeue = if self.foreign.is_empty() {
            plan.requeue_after
        } else {
            Some(
                plan.requeue_after
                    .map_or(FOREIGN_FOR, |d| d.min(FOREIGN_FOR)),
            )
        };
        Ok(Pass::Done(requeue.map_or_else(Action::await_change, |d| {
            Action::requeue(d + Duration::from_millis(5))
        })))
    }

    /// The owned route, right after the labels: the leader's slices first (the label comes
    /// first so that the new leader knows its role when its first request arrives), then the
    /// followers', then what the route no longer names. The leader's slice is replaced whole,
    /// in one write, from the old leader's address to the new one's: in `BreakBeforeMake` it
    /// never lists two leaders (it lists the one the plan chose, and the labels moved before
    /// it); in `MakeBeforeBreak` it is written once, after both label writes, so it never lists
    /// none while the old leader is alive. A leader gone with no candidate left empties it.
    /// Its desired content is computed every reconcile and written only when it differs, so a
    /// leader whose address or readiness changes is followed too.
    async fn endpoints(&self, current: &ElectionGroup, plan: &Plan) -> Result<Pass, Error> {
        let writes = owned::Writes {
            writer: &self.ctx.writer,
            owned: &self.ctx.owned,
            lane: self.lane,
            group: current,
            ns: self.ns,
            route: self.settings.service.as_ref(),
        };
        let pod = |name: &str, uid: &str| {
            self.gathered
                .pods
                .get(name)
                .filter(|p| p.uid == uid)
                .map(|p| p.as_ref())
        };
        let leader = plan
            .status
            .leader
            .as_deref()
            .zip(plan.status.leader_uid.as_deref())
            .and_then(|(name, uid)| pod(name, uid));
        if writes.leader(leader).await? == Outcome::Stale {
            return Ok(Pass::Stale);
        }
        self.lane.leadership_moved(&self.ctx.writer.metrics);
        let followers: Vec<&CachedPod> = self
            .gathered
            .members
            .iter()
            .filter(|m| m.ready && !m.terminating)
            .filter(|m| Some(m.uid.as_str()) != plan.status.leader_uid.as_deref())
            .filter_map(|m| pod(&m.name, &m.uid))
            .collect();
        if writes.followers(&followers).await? == Outcome::Stale
            || writes.prune().await? == Outcome::Stale
        {
            return Ok(Pass::Stale);
        }
        Ok(Pass::Done(Action::await_change()))
    }

    /// Pins the reserved successor to the version podium's own write `w` just gave it, as the
    /// next decision would: status is then written once instead of twice.
    fn repin_successor(&self, plan: &mut Plan, w: &PodWrite) {
        let Some(s) = plan.status.successor.as_mut() else {
            return;
        };
        if s.uid.as_ref() != Some(&w.uid) || s.resource_version != w.resource_version {
            return;
        }
        // The write just acknowledged is in the overlay: the version it produced.
        let written = self
            .gathered
            .pods
            .get(&w.pod)
            .map(|p| self.ctx.writer.overlay.pod(p))
            .filter(|p| p.uid == w.uid && p.resource_version != w.resource_version);
        if let Some(p) = written {
            s.resource_version = p.resource_version.clone();
        }
    }

    /// One pod write of a plan, recorded against the cached copy it was decided from.
    async fn write_pod(&self, w: &PodWrite, keys: &PodKeys<'_>) -> Result<Outcome, PodWriteError> {
        let cached = self.gathered.pods.get(&w.pod).cloned();
        apply::pod(self.ns, w, keys, cached, &self.ctx.writer, self.lane).await
    }

    /// Makes pod writes, each only while the controller Lease is held; a failure is reported
    /// and ends the batch, a conflict makes the decision stale.
    async fn write_pods(
        &self,
        current: &mut ElectionGroup,
        writes: &[&PodWrite],
        order: Order,
        keys: &PodKeys<'_>,
    ) -> Result<Pass, Error> {
        let at_once = match order {
            Order::InTurn => 1,
            Order::AnyOrder => WRITES_AT_ONCE,
        };
        let mut pass = Pass::Done(Action::await_change());
        for batch in writes.chunks(at_once) {
            // Each write checks the Lease once it has its slot (see `Writer::slot`).
            let results =
                futures::future::join_all(batch.iter().map(|w| self.write_pod(w, keys))).await;
            for (w, result) in batch.iter().zip(results) {
                if let Pass::Stale = self.settle_pod_write(current, w, result).await? {
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
        &self,
        current: &mut ElectionGroup,
        plan: &Plan,
        failover_since: &mut Option<Timestamp>,
    ) -> Result<Pass, Error> {
        if (&plan.status != self.old || current.status.is_none())
            && apply::status(current, &plan.status, &self.ctx.writer, self.lane).await?
                == Outcome::Stale
        {
            return Ok(Pass::Stale);
        }
        report::transition(current, self.ns, plan, self.ctx);
        if plan.unfit_since.is_some() {
            *failover_since = plan.unfit_since;
        }
        Ok(Pass::Done(Action::await_change()))
    }

    /// Handles how one pod write of a plan ended; a failure is reported on the group and
    /// counted against the candidate when it was a promotion the pod itself refused.
    async fn settle_pod_write(
        &self,
        current: &mut ElectionGroup,
        w: &PodWrite,
        result: Result<Outcome, PodWriteError>,
    ) -> Result<Pass, Error> {
        let (ns, ctx) = (self.ns, self.ctx);
        let promotion = matches!(w.change, PodChange::Label { role: LEADER, .. });
        match result {
            Ok(Outcome::Done) => {
                if promotion {
                    ctx.promotions.succeeded(&w.uid);
                }
                if matches!(w.change, PodChange::Release { .. }) {
                    ctx.pods.forget_out_of_scope(ns, &w.pod, &w.uid);
                }
                debug!(pod = %w.pod, change = ?w.change, "pod written");
                Ok(Pass::Done(Action::await_change()))
            }
            // A pod that is gone carries no label any more: taking its labels off is done; only
            // a promotion needs a new decision. (A same-named replacement fails the UID
            // precondition with a conflict instead.)
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
                if promotion && refused_for_the_pod(&e) && ctx.promotions.failed(&w.uid) {
                    report::passed_over(current, &w.pod, &e, ctx);
                }
                report::write_failure(current, &e, ctx, self.lane).await;
                Err(e)
            }
        }
    }
}

/// A failed write that says something about the pod itself (an admission webhook, a missing
/// permission, an invalid object), as opposed to a conflict, a timeout or an unavailable server.
fn refused_for_the_pod(e: &Error) -> bool {
    matches!(e, Error::PodWrite { source: kube::Error::Api(s), .. } if matches!(s.code, 400 | 403 | 422))
}
