//! The pure decision: from what was observed of a group and its pods, to a plan of writes.
//!
//! Nothing here reads the clock or talks to the API server; `now` is part of the observation.
//! `decide` is a short pipeline of named steps, each testable alone: who may lead
//! (`candidates`), who holds the seat now (`seat`), who leads next and why (`choose`), with
//! which term (`next_term`), the pod writes in a safe order (`plan_writes`), the transition and
//! its Events (`transition`), and the conditions (`conditions`).
//!
//! Safety rests on one rule the reconciler keeps: every term is recorded in status (conditionally
//! on the group's resourceVersion) before a pod carries it — either by the status write that
//! precedes the plan's pod writes, or ahead of need as the reserved successor's term, which a
//! failover may label first only while that pod is still at the version the reservation pinned —
//! and every pod write is conditional on the resourceVersion the decision saw. A promotion
//! recorded in status but not yet on the pod (`pending`, at its pinned version) is completed by
//! whoever decides next. When it is abandoned instead, the
//! status that forgets it lists the pod in `abandoned` with the version it had, and every decision
//! writes that pod before promoting anyone until its version has moved: a stale writer's copy of
//! the promotion then fails its precondition, or lands first and is demoted like any leader.

mod choice;
mod conditions;
mod fitness;
pub mod order;
pub mod schedule;
mod seat;
mod term;
mod transition;
pub mod validation;
mod writes;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::validation::Settings;
pub use choice::{Choice, choose};
pub use conditions::{conditions, reject};
use podium_api::{ElectionGroupStatus, LEADER, TransitionReason};
pub use seat::{Seat, candidates, foreign_members, forged, seat, trusted_term};
use term::leader_version;
use term::written_role_label;
pub use term::{Term, abandoned, next_term, passed_heir, successor, term_seen};
use transition::next_handoff;
pub use transition::{Moved, transition};
pub use writes::plan_writes;

/// Condition type: a healthy leader is labelled.
pub const READY: &str = "Ready";

/// Event reason: a member carries a `leader` label podium did not write.
pub const FORGED_ROLE: &str = "ForgedRoleLabel";
/// Condition type: the spec passed validation.
pub const SPEC_VALID: &str = "SpecValid";

/// Condition type: some selected pods belong to an older group, carry a foreign role value,
/// or the Lease to publish belongs to someone else.
pub const CONFLICT: &str = "Conflict";

/// The highest term podium issues or believes: 2^53, exact in every JSON number reader.
pub const MAX_TERM: i64 = 1 << 53;

/// What matters about one member pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// The resourceVersion this observation was made at; every write is conditional on it.
    pub resource_version: Option<String>,
    /// Creation time, for `preference: Oldest`.
    pub created: Timestamp,
    /// The pod's Ready condition is True.
    pub ready: bool,
    /// When the Ready condition last changed, if known.
    pub ready_changed: Option<Timestamp>,
    /// The pod has a deletion timestamp.
    pub terminating: bool,
    /// `podium.dev/priority`, 0 when absent or not an integer.
    pub priority: i64,
    /// Current value of the role label (the previous key's while a `roleLabel` change is under way).
    pub role: Option<String>,
    /// The pod still carries the role key podium wrote before `roleLabel` changed.
    pub stale_key: bool,
    /// Current `podium.dev/term` annotation, as parsed; trusted only through `trusted_term`.
    pub term: Option<i64>,
    /// Current `podium.dev/group` annotation.
    pub group: Option<String>,
    /// The node the pod runs on.
    pub node: Option<String>,
    /// How long podium's own watch of the node's Lease has gone without seeing it renewed;
    /// `None` when that watch is not (yet, or no longer) answering, which never counts as loss.
    pub node_silence: Option<std::time::Duration>,
}

/// Everything the decision needs, gathered by the reconciler.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// Group name, written into `podium.dev/group`.
    pub group: &'a str,
    /// `metadata.generation` of the group.
    pub generation: Option<i64>,
    /// The checked spec.
    pub settings: &'a Settings,
    /// The status as last written.
    pub status: &'a ElectionGroupStatus,
    /// Pods selected by the group (minus those an older group holds).
    pub members: &'a [Member],
    /// Pods carrying this group's annotation that are no longer members.
    pub departed: &'a [Member],
    /// Older groups that hold some of the selected pods.
    pub conflicts: &'a [String],
    /// Value of the `podium.dev/handoff-to` annotation, if set.
    pub handoff_request: Option<&'a str>,
    /// Members whose promotion kept failing; passed over for now.
    pub passed_over: &'a [String],
    /// `publishLease` is on and a Lease of that name belongs to someone else.
    pub lease_foreign: bool,
    /// Objects of the owned route (`Service <name>`, `EndpointSlice <name>`) that exist and
    /// are not this group's: never written.
    pub foreign_services: &'a [String],
    /// The current time.
    pub now: Timestamp,
}

/// A role to write on a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodChange {
    /// Set the role label, the group annotation, and the term annotation (removed when `None`).
    Label {
        /// `leader` or `follower`.
        role: &'static str,
        /// Fencing term, only for the leader.
        term: Option<i64>,
    },
    /// Remove everything podium wrote: the annotations, and the role label when its value is
    /// one podium writes.
    Release {
        /// Also remove the role label.
        role_label: bool,
    },
}

/// One pod write, in the order the plan lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodWrite {
    /// Pod name.
    pub pod: String,
    /// Pod UID the decision was made on.
    pub uid: String,
    /// resourceVersion the decision was made on: the write's precondition.
    pub resource_version: Option<String>,
    /// Also remove the role key podium wrote before `roleLabel` changed.
    pub drop_old_key: bool,
    /// What to write.
    pub change: PodChange,
}

/// What an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The ElectionGroup.
    Group,
    /// A member pod, by name.
    Pod(String),
}

/// An Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// What the Event is about.
    pub subject: Subject,
    /// Warning rather than Normal.
    pub warning: bool,
    /// CamelCase reason, e.g. `LeaderElected`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
}

/// The outcome of a decision: writes in order, the new status, Events, and when to look again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The pod writes go before the status write: a failover to the reserved successor, whose
    /// term status already records, with nothing to fence first.
    pub labels_first: bool,
    /// Pod writes; those before `neutral_from` each acknowledged before the next, after
    /// `status` is stored unless `labels_first`.
    pub writes: Vec<PodWrite>,
    /// `writes[neutral_from..]` neither give nor take leadership (new followers, released
    /// followers): they may land in any order, and the reserved successor's before status, so
    /// that status records it at the version that write leaves it (no second status write).
    pub neutral_from: usize,
    /// The status to write (only written when it differs), before the pod writes unless
    /// `labels_first`.
    pub status: ElectionGroupStatus,
    /// Events to publish.
    pub notes: Vec<Note>,
    /// Look again after this long even if nothing changes.
    pub requeue_after: Option<std::time::Duration>,
    /// Remove the `podium.dev/handoff-to` annotation.
    pub clear_handoff_request: bool,
    /// Why the leader changed, if it did.
    pub transition: Option<TransitionReason>,
    /// For a failover: when the old leader became unfit, as far as the observation tells.
    pub unfit_since: Option<Timestamp>,
}

/// Decides the plan for a group whose spec is valid.
pub fn decide(obs: &Observation<'_>) -> Plan {
    let mut notes = Vec::new();
    let mut requeue = Requeue::default();
    let foreign = foreign_members(obs);
    let candidates = candidates(obs, &foreign, &mut requeue);
    let seat = seat(obs, &foreign);
    let choice = choose(obs, &seat, &candidates, &mut notes, &mut requeue);
    let term = next_term(obs, &seat, &choice);
    let passed = passed_heir(obs, &seat, &choice, term);
    let abandoned = if obs.settings.paused {
        obs.status.abandoned.clone()
    } else {
        abandoned(obs, &seat, &choice, passed)
    };
    let (writes, neutral_from) = if obs.settings.paused {
        (Vec::new(), 0)
    } else {
        plan_writes(obs, &foreign, &choice, term.value(), &seat, &abandoned)
    };
    for m in forged(obs, &foreign) {
        notes.push(group_note(
            true,
            FORGED_ROLE,
            format!(
                "{} carries {}={LEADER} that podium did not write (no term); it is put back",
                m.name, obs.settings.role_label
            ),
        ));
    }
    let moved = transition(obs, &seat, &choice, term, &mut notes);
    let next_handoff = next_handoff(obs, &choice, &moved, &mut requeue);
    let conditions = conditions(obs, &choice, &foreign, &mut notes);
    let ready_members = obs.members.iter().filter(|m| m.ready).count();
    let status = ElectionGroupStatus {
        leader: choice.next.map(|m| m.name.clone()),
        leader_uid: choice.next.map(|m| m.uid.clone()),
        leader_resource_version: leader_version(obs, choice.next, term),
        term: term.value(),
        leader_since: moved.leader_since.map(Time),
        members: count(obs.members.len()),
        ready_members: count(ready_members),
        ready_summary: Some(format!("{}/{}", ready_members, obs.members.len())),
        next_handoff: next_handoff.map(Time),
        handoff_skipped_at: moved.skipped_at.map(Time),
        last_transition: moved.last_transition,
        observed_generation: obs.generation,
        conditions,
        role_label: written_role_label(obs),
        abandoned,
        successor: successor(obs, &choice, &candidates, term, passed),
    };
    Plan {
        labels_first: matches!(term, Term::Reserved(_))
            && choice.reason.is_some_and(TransitionReason::is_failover)
            && choice.next.is_some_and(|n| {
                n.resource_version.is_some()
                    && obs.status.successor.as_ref().map(|s| &s.resource_version)
                        == Some(&n.resource_version)
            })
            && seat.pending.is_none()
            && obs.status.abandoned.is_empty()
            && status.abandoned.is_empty(),
        writes,
        neutral_from,
        status,
        notes,
        requeue_after: requeue.after(obs.now),
        clear_handoff_request: choice.clear_request,
        transition: moved.reason,
        unfit_since: choice
            .unfit_since
            .filter(|_| moved.reason.is_some_and(TransitionReason::is_failover)),
    }
}

fn group_note(warning: bool, reason: &'static str, message: String) -> Note {
    Note {
        subject: Subject::Group,
        warning,
        reason,
        message,
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The earliest instant worth waking up for.
#[derive(Default)]
pub struct Requeue(Option<Timestamp>);

impl Requeue {
    fn at(&mut self, t: Timestamp, now: Timestamp) {
        if t > now {
            self.0 = Some(self.0.map_or(t, |c| c.min(t)));
        }
    }

    fn after(&self, now: Timestamp) -> Option<std::time::Duration> {
        self.0
            .and_then(|t| std::time::Duration::try_from(t.duration_since(now)).ok())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod model;
