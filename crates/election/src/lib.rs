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

pub mod order;
pub mod schedule;
pub mod validation;

use std::cmp::Ordering;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::schedule::Due;
use crate::validation::Settings;
use podium_api::{
    Abandoned, ElectionGroupStatus, FOLLOWER, HandoffMode, LEADER, Preference, Successor,
    Transition, TransitionReason,
};

/// Condition type: a healthy leader is labelled.
pub const READY: &str = "Ready";
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

/// How far above the recorded term a pod's annotation may be and still be believed: podium
/// records every term in status before writing it, so only a lost status (a recreated group)
/// explains a higher one, and no group reaches 2^32 leaderships.
const TERM_SLACK: i64 = 1 << 32;

/// A term annotation podium may believe: on a pod this group manages, at least 1, and not absurdly
/// far above the recorded term.
pub fn trusted_term(m: &Member, group: &str, recorded: i64) -> Option<i64> {
    let ceiling = recorded
        .clamp(0, MAX_TERM)
        .saturating_add(TERM_SLACK)
        .min(MAX_TERM);
    m.term
        .filter(|t| (1..=ceiling).contains(t))
        .filter(|_| m.group.as_deref() == Some(group))
}

/// The role value is one podium writes.
fn podium_value(role: &str) -> bool {
    role == LEADER || role == FOLLOWER
}

/// Members carrying the role key with a value podium did not write for this group: left alone
/// and reported. (The role key is the user's choice and may be anyone's; the `podium.dev/` keys
/// are podium's own, so a forged term is merely not believed.)
pub fn foreign_members<'m>(obs: &Observation<'m>) -> Vec<&'m Member> {
    obs.members
        .iter()
        .filter(|m| {
            let unmanaged = m.group.as_deref() != Some(obs.group);
            m.role
                .as_deref()
                .is_some_and(|r| !podium_value(r) || unmanaged)
        })
        .collect()
}

/// Who may lead, best first: Ready, not terminating, not on a lost node, Ready long enough, not
/// foreign, not passed over.
pub fn candidates<'m>(
    obs: &Observation<'m>,
    foreign: &[&Member],
    requeue: &mut Requeue,
) -> Vec<&'m Member> {
    let mut c: Vec<&Member> = obs
        .members
        .iter()
        .filter(|m| m.ready && !m.terminating)
        .filter(|m| node_lost_for(m, obs.settings).is_none())
        .filter(|m| !foreign.iter().any(|f| f.name == m.name))
        .filter(|m| !obs.passed_over.contains(&m.name))
        .filter(|m| match eligible_at(m, obs.settings.min_ready) {
            Some(at) if at > obs.now => {
                requeue.at(at, obs.now);
                false
            }
            _ => true,
        })
        .collect();
    c.sort_by(|a, b| preference_order(obs.settings.preference)(a, b));
    c
}

/// Who holds leadership now, as the cluster shows it.
#[derive(Debug, Default)]
pub struct Seat<'m> {
    /// The member labelled leader that keeps the seat: the one status records, else the highest
    /// trusted term, else the preferred one. Other labelled leaders are demoted.
    pub current: Option<&'m Member>,
    /// A promotion recorded in status whose label is not on the pod yet.
    pub pending: Option<&'m Member>,
}

/// The leader status records, by name and (when known) UID.
fn recorded(obs: &Observation<'_>, m: &Member) -> bool {
    obs.status.leader.as_deref() == Some(m.name.as_str())
        && obs.status.leader_uid.as_deref().is_none_or(|u| u == m.uid)
}

/// Finds the labelled leader and any promotion still in flight.
pub fn seat<'m>(obs: &Observation<'m>, foreign: &[&Member]) -> Seat<'m> {
    let order = preference_order(obs.settings.preference);
    let ours = |m: &&Member| !foreign.iter().any(|f| f.name == m.name);
    let current = obs
        .members
        .iter()
        .filter(ours)
        .filter(|m| m.role.as_deref() == Some(LEADER))
        .max_by(|a, b| {
            recorded(obs, a)
                .cmp(&recorded(obs, b))
                .then(
                    trusted_term(a, obs.group, obs.status.term).cmp(&trusted_term(
                        b,
                        obs.group,
                        obs.status.term,
                    )),
                )
                .then_with(|| order(b, a))
        });
    // Only at the version its promotion was decided at: a pod that has changed since may be a
    // leader that was demoted (say, by a pass that died before writing status), and must not
    // lead again under the same term.
    let pending = obs.members.iter().filter(ours).find(|m| {
        recorded(obs, m)
            && m.role.as_deref() != Some(LEADER)
            && obs.status.leader_resource_version.is_some()
            && m.resource_version == obs.status.leader_resource_version
    });
    Seat { current, pending }
}

/// The version recorded with the leader: unchanged while its leadership continues, else the
/// version the new leader was chosen at.
fn leader_version(obs: &Observation<'_>, next: Option<&Member>, term: Term) -> Option<String> {
    let next = next?;
    let continues = obs.status.leader_uid.as_deref() == Some(next.uid.as_str())
        && obs.status.term == term.value();
    if continues {
        obs.status.leader_resource_version.clone()
    } else {
        next.resource_version.clone()
    }
}

/// Who leads next and why.
#[derive(Debug, Default)]
pub struct Choice<'m> {
    /// The next leader, if any.
    pub next: Option<&'m Member>,
    /// Why leadership moves, when the decision moves it.
    pub reason: Option<TransitionReason>,
    /// `next` is a promotion status already records: finish it, keep its term, announce nothing new.
    pub completing: bool,
    /// Remove the handoff request annotation.
    pub clear_request: bool,
    /// When the old leader became unfit, for a failover.
    pub unfit_since: Option<Timestamp>,
    /// When a due handoff last found no other candidate.
    pub skipped_at: Option<Timestamp>,
    /// Since when `next` has led, if it keeps leading.
    pub since: Option<Timestamp>,
}

/// Decides who leads next: finish a recorded promotion, keep a fit leader, fail over, or hand over.
pub fn choose<'m>(
    obs: &Observation<'m>,
    seat: &Seat<'m>,
    candidates: &[&'m Member],
    notes: &mut Vec<Note>,
    requeue: &mut Requeue,
) -> Choice<'m> {
    let s = obs.settings;
    let current = seat.current;
    let kept = current.filter(|m| recorded(obs, m));
    let since = kept
        .and_then(|_| obs.status.leader_since.as_ref().map(|t| t.0))
        .unwrap_or(obs.now);
    let mut choice = Choice {
        next: current,
        since: Some(since),
        skipped_at: kept.and_then(|_| obs.status.handoff_skipped_at.as_ref().map(|t| t.0)),
        ..Choice::default()
    };
    if s.paused {
        return choice;
    }
    if let Some(p) = seat
        .pending
        .filter(|p| candidates.iter().any(|c| c.name == p.name))
    {
        choice.next = Some(p);
        choice.completing = true;
        // A manual handoff is performed once: finishing it also consumes the request.
        choice.clear_request = obs.handoff_request.is_some()
            && obs
                .status
                .last_transition
                .as_ref()
                .is_some_and(|t| t.reason == TransitionReason::Manual);
        choice.since = obs
            .status
            .leader_since
            .as_ref()
            .map(|t| t.0)
            .or(Some(obs.now));
        return choice;
    }
    match current.map(|l| fitness(l, s, obs.now)) {
        None => {
            let reason = if obs.status.leader.is_some() {
                choice.unfit_since = Some(obs.now);
                TransitionReason::Failover
            } else {
                TransitionReason::Elected
            };
            choice.next = heir(obs, candidates);
            choice.reason = Some(reason);
        }
        Some(Fitness::Unfit(at)) => {
            choice.unfit_since = Some(at);
            choice.next = heir(obs, candidates);
            choice.reason = Some(TransitionReason::Failover);
        }
        Some(Fitness::NodeLost(at)) => {
            choice.unfit_since = Some(at);
            choice.next = heir(obs, candidates);
            choice.reason = Some(TransitionReason::NodeLost);
        }
        Some(Fitness::Grace(until)) => requeue.at(until, obs.now),
        Some(Fitness::Fit) => {
            let leader = current.expect("fitness implies a leader");
            // A planned handoff waits until the leader carries the term status records for it:
            // otherwise a late write of that term (a stale writer's, say) could land on the old
            // leader after its successor's higher term, while make-before-break overlaps them.
            let settled = kept.is_some() && leader.term == Some(obs.status.term);
            if settled {
                hand_over(obs, leader, candidates, &mut choice, notes);
            }
        }
    }
    choice
}

/// Who takes over from a failed leader: the reserved successor while it is a candidate (its term
/// is already recorded, so it can be labelled at once), else the best candidate.
fn heir<'m>(obs: &Observation<'m>, candidates: &[&'m Member]) -> Option<&'m Member> {
    let reserved = obs.status.successor.as_ref();
    candidates
        .iter()
        .copied()
        .find(|c| reserved.is_some_and(|s| s.uid.as_deref() == Some(c.uid.as_str())))
        .or_else(|| candidates.first().copied())
}

/// For a fit leader: a manual request, a preemption or a due handoff may move leadership.
fn hand_over<'m>(
    obs: &Observation<'m>,
    leader: &'m Member,
    candidates: &[&'m Member],
    choice: &mut Choice<'m>,
    notes: &mut Vec<Note>,
) {
    let s = obs.settings;
    if let Some(request) = obs.handoff_request {
        choice.clear_request = true;
        match manual_target(request, leader, candidates, s.preference) {
            Ok(Some(target)) => {
                choice.next = Some(target);
                choice.reason = Some(TransitionReason::Manual);
                return;
            }
            Ok(None) => notes.push(group_note(
                false,
                "HandoffSkipped",
                format!(
                    "handoff to {} requested, but no other candidate is ready; {} stays leader",
                    quoted(request),
                    leader.name
                ),
            )),
            Err(why) => notes.push(group_note(
                true,
                "HandoffRejected",
                format!(
                    "handoff to {} not performed: {why}; {} stays leader",
                    quoted(request),
                    leader.name
                ),
            )),
        }
    }
    if s.preference == Preference::Priority
        && let Some(best) = candidates.first().filter(|c| c.priority > leader.priority)
    {
        choice.next = Some(*best);
        choice.reason = Some(TransitionReason::Preempted);
        return;
    }
    let since = choice.since.unwrap_or(obs.now);
    let base = choice.skipped_at.map_or(since, |t| t.max(since));
    let Some((_, due)) = s.timing.next_after(base).filter(|(at, _)| *at <= obs.now) else {
        return;
    };
    match rotate(leader, candidates, s.preference) {
        Some(target) => {
            choice.next = Some(target);
            choice.reason = Some(match due {
                Due::Scheduled => TransitionReason::Scheduled,
                Due::MaxTerm => TransitionReason::MaxTerm,
            });
        }
        None => {
            choice.skipped_at = Some(obs.now);
            notes.push(group_note(
                false,
                "HandoffSkipped",
                format!(
                    "{} handoff due, but no other candidate is ready; {} stays leader",
                    due_word(due),
                    leader.name
                ),
            ));
        }
    }
}

/// A request value as it appears in a message: quoted, and cut short when long.
fn quoted(request: &str) -> String {
    let cut: String = request.chars().take(80).collect();
    if cut.len() < request.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// The term the next leader carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// No new leadership: the recorded term (or the highest seen when there is no leader).
    Keep(i64),
    /// An unrecorded leader whose own annotation is the highest term seen (status was lost).
    Adopt(i64),
    /// A new leadership: one above every term seen, recorded in status before any label.
    Issue(i64),
    /// A new leadership for the reserved successor, with the term status reserved for it.
    Reserved(i64),
}

impl Term {
    /// The term itself.
    pub fn value(self) -> i64 {
        match self {
            Term::Keep(t) | Term::Adopt(t) | Term::Issue(t) | Term::Reserved(t) => t,
        }
    }
}

/// The highest term status or a managed member carries (a pod the group no longer selects has
/// no say: its annotation could be anyone's), not counting the successor's reservation.
pub fn term_seen(obs: &Observation<'_>) -> i64 {
    obs.members
        .iter()
        .filter_map(|m| trusted_term(m, obs.group, obs.status.term))
        .chain([obs.status.term.clamp(0, MAX_TERM)])
        .max()
        .unwrap_or(0)
}

/// The term reserved for the successor, if any.
fn reserved_term(obs: &Observation<'_>) -> i64 {
    obs.status
        .successor
        .as_ref()
        .map_or(0, |s| s.term.clamp(0, MAX_TERM))
}

/// Chooses the term: a recorded leadership keeps its term, anything else gets a fresh one.
pub fn next_term(obs: &Observation<'_>, seat: &Seat<'_>, choice: &Choice<'_>) -> Term {
    let seen = term_seen(obs);
    let reserved = reserved_term(obs);
    let Some(next) = choice.next else {
        return Term::Keep(seen);
    };
    let status_term = obs.status.term.clamp(0, MAX_TERM);
    // The recorded leadership continues only on the pod that holds it or is about to.
    let holds = [seat.current, seat.pending]
        .iter()
        .flatten()
        .any(|m| m.uid == next.uid);
    if recorded(obs, next) && holds && status_term >= 1 && status_term == seen {
        return Term::Keep(status_term);
    }
    if obs.status.leader.is_none()
        && next.role.as_deref() == Some(LEADER)
        && seen >= 1
        && trusted_term(next, obs.group, obs.status.term) == Some(seen)
    {
        return Term::Adopt(seen);
    }
    if obs
        .status
        .successor
        .as_ref()
        // `>=`: the successor may already carry its reserved term, labelled by a pass whose
        // status write did not land.
        .is_some_and(|s| {
            s.uid.as_deref() == Some(next.uid.as_str())
                && s.term == reserved
                && reserved >= seen
                && reserved > status_term
        })
    {
        return Term::Reserved(reserved);
    }
    // 2^53 terms are never reached in practice; at the cap the term stops rising rather than wrap.
    Term::Issue(seen.max(reserved).saturating_add(1).min(MAX_TERM))
}

/// The successor to reserve, with a term above every term seen or reserved, pinned to the pod's
/// current version: the reserved pod while it may still take over (it is pinned anew when it
/// changes), else the candidate a scheduled handoff would move to next (with `Oldest`, the next
/// in age order, wrapping; with `Priority`, within the top tier).
pub fn successor(
    obs: &Observation<'_>,
    choice: &Choice<'_>,
    candidates: &[&Member],
    term: Term,
    passed: Option<&Member>,
) -> Option<Successor> {
    // Without a new heir the old reservation stays: its term may already be on a pod (labelled
    // by a pass whose status write did not land), so it must never be given out again. A passed
    // heir keeps only its term, so that it is fenced once and never chosen for it.
    let keep = || {
        obs.status.successor.clone().map(|s| match passed {
            Some(_) => Successor {
                pod: None,
                uid: None,
                term: s.term,
                resource_version: None,
            },
            None => s,
        })
    };
    if obs.settings.paused {
        return obs.status.successor.clone();
    }
    let Some(next) = choice.next else {
        return keep();
    };
    let used = matches!(term, Term::Reserved(_));
    // The reservation stays on its pod while that pod may take over: moving it elsewhere would
    // mean writing the pod first, so that no stale failover can still label it.
    let sticky = obs
        .status
        .successor
        .as_ref()
        .filter(|_| !used)
        .and_then(|s| {
            candidates.iter().copied().find(|c| {
                s.uid.as_deref() == Some(c.uid.as_str())
                    && c.uid != next.uid
                    && passed.is_none_or(|p| p.uid != c.uid)
            })
        });
    let Some(heir) = sticky.or_else(|| rotate(next, candidates, obs.settings.preference)) else {
        return keep();
    };
    let floor = term.value().max(if used { 0 } else { reserved_term(obs) });
    match &obs.status.successor {
        // Kept, pinned to the version seen now.
        Some(s)
            if !used && s.uid.as_deref() == Some(heir.uid.as_str()) && s.term > term.value() =>
        {
            Some(Successor {
                resource_version: heir.resource_version.clone(),
                ..s.clone()
            })
        }
        _ => Some(Successor {
            pod: Some(heir.name.clone()),
            uid: Some(heir.uid.clone()),
            term: floor.saturating_add(1).min(MAX_TERM),
            resource_version: heir.resource_version.clone(),
        }),
    }
}

/// The role key status records as written on pods: the old one until no pod carries it.
fn written_role_label(obs: &Observation<'_>) -> Option<String> {
    let renaming = obs.members.iter().chain(obs.departed).any(|m| m.stale_key);
    if renaming {
        obs.status.role_label.clone()
    } else {
        Some(obs.settings.role_label.clone())
    }
}

/// The reserved successor this decision passes over (leadership moves elsewhere, or it was passed
/// over for failed promotions): someone may be promoting it from an older view, and that
/// promotion must not land later. A successor that is
/// not Ready or is terminating needs nothing: that change moved its resourceVersion past every
/// view in which it was a candidate.
pub fn passed_heir<'m>(
    obs: &Observation<'m>,
    seat: &Seat<'_>,
    choice: &Choice<'_>,
    term: Term,
) -> Option<&'m Member> {
    let reserved = obs.status.successor.as_ref()?;
    // Completing a recorded promotion moves nothing: the successor in status was reserved by
    // the same write that recorded it. A newly issued term (always above the reserved one)
    // going to anyone else passes the heir too, whatever the reason: otherwise the reservation
    // would keep its pod under a new term, and an older copy of status could still label that
    // unchanged pod with the old one.
    let moving = choice.reason.is_some()
        || (seat.current.is_none() && !choice.completing)
        || matches!(term, Term::Issue(_));
    let uid = reserved.uid.as_deref()?;
    if choice.next.is_some_and(|n| n.uid == uid) {
        return None;
    }
    obs.members
        .iter()
        .chain(obs.departed)
        .find(|m| m.uid == uid && m.ready && !m.terminating)
        // A successor passed over for failed promotions loses its reservation without any change
        // of its own: it is fenced like one passed over by a move of leadership.
        .filter(|m| moving || obs.passed_over.contains(&m.name))
}

/// The abandoned promotions whose pods still need a write: those carried over whose pod is still
/// at the recorded version, and the pending promotion this decision gives up.
pub fn abandoned(
    obs: &Observation<'_>,
    seat: &Seat<'_>,
    choice: &Choice<'_>,
    passed: Option<&Member>,
) -> Vec<Abandoned> {
    let at_version = |a: &Abandoned| {
        obs.members
            .iter()
            .chain(obs.departed)
            .any(|m| m.uid == a.uid && m.resource_version.as_deref() == Some(&a.resource_version))
    };
    let mut out: Vec<Abandoned> = obs
        .status
        .abandoned
        .iter()
        .filter(|a| at_version(a))
        .cloned()
        .collect();
    let given_up = seat
        .pending
        .filter(|p| choice.next.is_none_or(|n| n.uid != p.uid));
    for p in given_up.into_iter().chain(passed) {
        if let Some(rv) = &p.resource_version
            && !out.iter().any(|a| a.uid == p.uid)
        {
            out.push(Abandoned {
                pod: p.name.clone(),
                uid: p.uid.clone(),
                resource_version: rv.clone(),
            });
        }
    }
    out
}

/// Orders pod writes so that the mode's guarantee holds at every instant.
pub fn plan_writes(
    obs: &Observation<'_>,
    foreign: &[&Member],
    choice: &Choice<'_>,
    term: i64,
    seat: &Seat<'_>,
    abandoned: &[Abandoned],
) -> (Vec<PodWrite>, usize) {
    let next = choice.next;
    let write = |m: &Member, change: PodChange| PodWrite {
        pod: m.name.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        drop_old_key: m.stale_key,
        change,
    };
    let release = |m: &Member| {
        write(
            m,
            PodChange::Release {
                role_label: m.role.as_deref().is_some_and(podium_value),
            },
        )
    };
    let is_abandoned = |m: &Member| abandoned.iter().any(|a| a.uid == m.uid);
    // Before anyone is promoted: an abandoned promotion's pod is written, so that a stale copy of
    // that promotion fails its precondition; a departed leader is released (a Service selecting
    // on fewer labels than the group would otherwise see two leaders).
    let mut first = Vec::new();
    let mut demotions = Vec::new();
    let mut promotion = Vec::new();
    let mut others = Vec::new();
    for d in obs.departed {
        if is_abandoned(d) || d.role.as_deref() == Some(LEADER) {
            first.push(release(d));
        } else {
            others.push(release(d));
        }
    }
    for m in obs.members {
        if foreign.iter().any(|f| f.name == m.name) {
            continue;
        }
        let (role, want_term) = if next.is_some_and(|n| n.name == m.name) {
            (LEADER, Some(term))
        } else {
            (FOLLOWER, None)
        };
        if is_abandoned(m) && next.is_none_or(|n| n.uid != m.uid) {
            // Labelled follower already: take the labels off (the next pass puts them back).
            first.push(if m.role.is_some() {
                release(m)
            } else {
                write(m, PodChange::Label { role, term: None })
            });
            continue;
        }
        let up_to_date = m.role.as_deref() == Some(role)
            && m.term == want_term
            && m.group.as_deref() == Some(obs.group)
            && !m.stale_key;
        if up_to_date {
            continue;
        }
        let w = write(
            m,
            PodChange::Label {
                role,
                term: want_term,
            },
        );
        if m.role.as_deref() == Some(LEADER) && role == FOLLOWER {
            demotions.push(w);
        } else if role == LEADER {
            promotion.push(w);
        } else {
            others.push(w);
        }
    }
    // Make-before-break for a planned handoff, and for a leader whose pod is stopping while its
    // process still runs (a rolling update): the group is never without a working leader. A
    // leader that is gone or NotReady is demoted first.
    let planned = matches!(
        choice.reason,
        Some(
            TransitionReason::Scheduled
                | TransitionReason::MaxTerm
                | TransitionReason::Manual
                | TransitionReason::Preempted
        )
    );
    // Its process still runs only if its node is not lost.
    let stopping = seat
        .current
        .is_some_and(|c| c.terminating && node_lost_for(c, obs.settings).is_none());
    let old_alive = seat.current.is_some_and(|c| c.ready);
    let ordered = if obs.settings.mode == HandoffMode::MakeBeforeBreak
        && (planned || stopping)
        && old_alive
    {
        [first, promotion, demotions].concat()
    } else {
        [first, demotions, promotion].concat()
    };
    let neutral_from = ordered.len();
    ([ordered, others].concat(), neutral_from)
}

/// What the decision does to the record of leadership.
#[derive(Debug, Default)]
pub struct Moved {
    /// Why the leader changed, if this decision changes it.
    pub reason: Option<TransitionReason>,
    /// `status.lastTransition` to write.
    pub last_transition: Option<Transition>,
    /// `status.leaderSince` to write.
    pub leader_since: Option<Timestamp>,
    /// `status.handoffSkippedAt` to write.
    pub skipped_at: Option<Timestamp>,
}

/// Records a change of leader and the Events that announce it.
pub fn transition(
    obs: &Observation<'_>,
    seat: &Seat<'_>,
    choice: &Choice<'_>,
    term: Term,
    notes: &mut Vec<Note>,
) -> Moved {
    let next = choice.next;
    let same = Moved {
        reason: None,
        last_transition: obs.status.last_transition.clone(),
        leader_since: next.and(choice.since),
        skipped_at: choice.skipped_at,
    };
    if obs.settings.paused || choice.completing {
        return same;
    }
    let reason = match (next, term) {
        (Some(_), Term::Issue(_) | Term::Reserved(_)) => {
            choice.reason.unwrap_or(if obs.status.leader.is_some() {
                TransitionReason::Failover
            } else {
                TransitionReason::Elected
            })
        }
        (None, _) if seat.current.is_some() || obs.status.leader.is_some() => {
            TransitionReason::NoCandidates
        }
        _ => return same,
    };
    let from = seat
        .current
        .filter(|c| next.is_none_or(|n| n.name != c.name))
        .map(|m| m.name.clone())
        .or_else(|| obs.status.leader.clone());
    let to = next.map(|m| m.name.clone());
    announce(
        obs,
        seat,
        next,
        term.value(),
        reason,
        from.as_deref(),
        notes,
    );
    Moved {
        reason: Some(reason),
        last_transition: Some(Transition {
            time: Time(obs.now),
            from,
            to,
            reason,
        }),
        leader_since: next.map(|_| obs.now),
        skipped_at: None,
    }
}

/// The Events of a change of leader: on the group, on the new leader and on the old one.
fn announce(
    obs: &Observation<'_>,
    seat: &Seat<'_>,
    next: Option<&Member>,
    term: i64,
    r: TransitionReason,
    from: Option<&str>,
    notes: &mut Vec<Note>,
) {
    if let Some(to) = next {
        notes.push(group_note(
            false,
            "LeaderElected",
            format!(
                "{} is leader (term {term}, reason {}{})",
                to.name,
                r.as_str(),
                from.map(|f| format!(", was {f}")).unwrap_or_default()
            ),
        ));
        notes.push(Note {
            subject: Subject::Pod(to.name.clone()),
            warning: false,
            reason: "BecameLeader",
            message: format!(
                "leader of {} (term {term}, reason {})",
                obs.group,
                r.as_str()
            ),
        });
    }
    if let Some(old) = seat
        .current
        .filter(|c| next.is_none_or(|n| n.name != c.name))
    {
        notes.push(Note {
            subject: Subject::Pod(old.name.clone()),
            warning: false,
            reason: "LostLeadership",
            message: format!("no longer leader of {} (reason {})", obs.group, r.as_str()),
        });
    }
}

/// The next scheduled or maximum-term handoff of the leader that stays.
fn next_handoff(
    obs: &Observation<'_>,
    choice: &Choice<'_>,
    moved: &Moved,
    requeue: &mut Requeue,
) -> Option<Timestamp> {
    if obs.settings.paused || choice.next.is_none() {
        return None;
    }
    let since = moved.leader_since?;
    let base = moved.skipped_at.map_or(since, |t| t.max(since));
    obs.settings.timing.next_after(base).map(|(at, _)| {
        requeue.at(at, obs.now);
        at
    })
}

/// The Ready, SpecValid and Conflict conditions, with a Warning when one turns bad.
pub fn conditions(
    obs: &Observation<'_>,
    choice: &Choice<'_>,
    foreign: &[&Member],
    notes: &mut Vec<Note>,
) -> Vec<Condition> {
    let (ready_status, ready_reason, ready_message) = readiness(obs, choice.next, foreign);
    if ready_reason == "NoCandidates" && condition_reason(obs.status, READY) != Some("NoCandidates")
    {
        // A new group whose pods are still starting is expected to wait: a Warning only once
        // the group has had a leader to lose.
        let had_leader = obs.status.term > 0;
        let message = if had_leader {
            no_candidates(obs)
        } else {
            format!("waiting for a ready member ({})", no_candidates(obs))
        };
        notes.push(group_note(had_leader, "NoCandidates", message));
    }
    let (conflict_status, conflict_reason, conflict_message) = conflict(obs, foreign);
    if conflict_status == "True"
        && condition_message(obs.status, CONFLICT) != Some(conflict_message.as_str())
    {
        let event = match conflict_reason {
            "SelectorOverlap" => "Conflict",
            other => other,
        };
        notes.push(group_note(true, event, conflict_message.clone()));
    }
    vec![
        condition(obs, READY, ready_status, ready_reason, ready_message),
        condition(
            obs,
            SPEC_VALID,
            "True",
            "Valid",
            "spec is valid".to_string(),
        ),
        condition(
            obs,
            CONFLICT,
            conflict_status,
            conflict_reason,
            conflict_message,
        ),
    ]
}

fn readiness(
    obs: &Observation<'_>,
    next: Option<&Member>,
    foreign: &[&Member],
) -> (&'static str, &'static str, String) {
    let s = obs.settings;
    match next {
        _ if s.paused => match next {
            Some(l) if l.ready => ("True", "Paused", format!("paused; {} leads", l.name)),
            _ => ("False", "Paused", "paused; no healthy leader".to_string()),
        },
        Some(l) if l.ready && !l.terminating => {
            ("True", "LeaderReady", format!("{} leads", l.name))
        }
        Some(l) => (
            "False",
            "LeaderNotReady",
            format!(
                "{} leads but is not ready; failover after {}s",
                l.name,
                s.tolerance.as_secs()
            ),
        ),
        None => (
            "False",
            "NoCandidates",
            format!(
                "none of {} member(s) is a ready candidate{}{}",
                obs.members.len(),
                if foreign.is_empty() {
                    String::new()
                } else {
                    format!("; {} carry a foreign role label", foreign.len())
                },
                if obs.passed_over.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; passed over after failed writes: {}",
                        obs.passed_over.join(", ")
                    )
                }
            ),
        ),
    }
}

fn no_candidates(obs: &Observation<'_>) -> String {
    let s = obs.settings;
    format!(
        "no leader: none of {} member(s) is Ready{}",
        obs.members.len(),
        if s.min_ready.is_zero() {
            String::new()
        } else {
            format!(" for {}s", s.min_ready.as_secs())
        }
    )
}

/// Pods lost to older groups, members with a foreign role value, and a Lease owned by someone else.
fn conflict(obs: &Observation<'_>, foreign: &[&Member]) -> (&'static str, &'static str, String) {
    let mut parts: Vec<(&'static str, String)> = Vec::new();
    if !obs.conflicts.is_empty() {
        parts.push((
            "SelectorOverlap",
            format!(
                "some selected pods belong to older group(s) {} on the same role label; they stay there",
                obs.conflicts.join(", ")
            ),
        ));
    }
    if !foreign.is_empty() {
        let names: Vec<&str> = foreign.iter().take(10).map(|m| m.name.as_str()).collect();
        parts.push((
            "ForeignRoleLabel",
            format!(
                "{} member(s) carry {} with a value podium did not write, left alone: {}{}",
                foreign.len(),
                obs.settings.role_label,
                names.join(", "),
                if foreign.len() > names.len() {
                    ", …"
                } else {
                    ""
                }
            ),
        ));
    }
    if obs.lease_foreign {
        parts.push((
            "LeaseNotOwned",
            format!(
                "Lease {} exists and is not controlled by this group; it is not published",
                obs.group
            ),
        ));
    }
    match parts.first() {
        None => (
            "False",
            "NoOverlap",
            "no other group selects these pods".to_string(),
        ),
        Some((reason, _)) => (
            "True",
            reason,
            parts
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// The plan for a group whose spec failed validation: report, touch nothing else.
pub fn reject(
    status: &ElectionGroupStatus,
    generation: Option<i64>,
    problems: &str,
    now: Timestamp,
) -> Plan {
    let mut notes = Vec::new();
    let already_reported = condition_message(status, SPEC_VALID) == Some(problems)
        && status.observed_generation == generation;
    if !already_reported {
        notes.push(group_note(true, "InvalidSpec", problems.to_string()));
    }
    let mut next = status.clone();
    next.observed_generation = generation;
    let keep = |t: &str| status.conditions.iter().find(|c| c.type_ == t).cloned();
    let mut conditions: Vec<Condition> = [READY, CONFLICT].iter().filter_map(|t| keep(t)).collect();
    conditions.insert(
        1.min(conditions.len()),
        set_condition(
            status,
            generation,
            now,
            SPEC_VALID,
            "False",
            "InvalidSpec",
            problems.to_string(),
        ),
    );
    next.conditions = conditions;
    Plan {
        labels_first: false,
        writes: Vec::new(),
        neutral_from: 0,
        status: next,
        notes,
        requeue_after: None,
        clear_handoff_request: false,
        transition: None,
        unfit_since: None,
    }
}

enum Fitness {
    Fit,
    /// NotReady, but kept until the instant given.
    Grace(Timestamp),
    /// To be replaced; unfit since the instant given.
    Unfit(Timestamp),
    /// To be replaced: its node's Lease has not been renewed for `nodeLossSeconds`, since the
    /// instant given.
    NodeLost(Timestamp),
}

/// How long past `nodeLossSeconds` the member's node Lease has been silent, if it has.
fn node_lost_for(m: &Member, s: &Settings) -> Option<SignedDuration> {
    let silence = m.node_silence?;
    let over = silence.checked_sub(s.node_loss)?;
    SignedDuration::try_from(over).ok()
}

fn fitness(leader: &Member, s: &Settings, now: Timestamp) -> Fitness {
    let tolerance = s.tolerance;
    if leader.terminating {
        return Fitness::Unfit(now);
    }
    if let Some(lost_for) = node_lost_for(leader, s) {
        return Fitness::NodeLost(now.checked_sub(lost_for).unwrap_or(now));
    }
    if leader.ready {
        return Fitness::Fit;
    }
    let Some(since) = leader.ready_changed else {
        return Fitness::Unfit(now);
    };
    match since.checked_add(tolerance) {
        Ok(until) if until > now => Fitness::Grace(until),
        Ok(until) => Fitness::Unfit(until),
        Err(_) => Fitness::Unfit(now),
    }
}

fn eligible_at(m: &Member, min_ready: SignedDuration) -> Option<Timestamp> {
    if min_ready.is_zero() {
        return None;
    }
    m.ready_changed
        .or(Some(m.created))
        .and_then(|t| t.checked_add(min_ready).ok())
}

/// The comparison that sorts the best candidate first.
fn preference_order(p: Preference) -> fn(&Member, &Member) -> Ordering {
    match p {
        Preference::Oldest => |a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)),
        Preference::Priority => |a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.created.cmp(&b.created))
                .then_with(|| a.name.cmp(&b.name))
        },
    }
}

/// The candidate after the leader in preference order, wrapping around, so that every one leads in turn.
/// With priorities, only the top tier rotates: a lower one would be preempted at once.
fn rotate<'m>(leader: &Member, candidates: &[&'m Member], p: Preference) -> Option<&'m Member> {
    let top = candidates.first().map(|c| c.priority).unwrap_or(0);
    let pool: Vec<&Member> = candidates
        .iter()
        .copied()
        .filter(|c| p == Preference::Oldest || c.priority == top)
        .collect();
    let order = preference_order(p);
    pool.iter()
        .copied()
        .find(|c| c.name != leader.name && order(c, leader) == Ordering::Greater)
        .or_else(|| pool.iter().copied().find(|c| c.name != leader.name))
}

fn manual_target<'m>(
    request: &str,
    leader: &Member,
    candidates: &[&'m Member],
    p: Preference,
) -> Result<Option<&'m Member>, String> {
    let request = request.trim();
    if request.eq_ignore_ascii_case("any") {
        return Ok(rotate(leader, candidates, p));
    }
    if request == leader.name {
        return Err(format!("{} is already the leader", leader.name));
    }
    let Some(target) = candidates.iter().find(|c| c.name == request) else {
        return Err("it is not a ready member of this group".to_string());
    };
    if p == Preference::Priority
        && let Some(best) = candidates.first().filter(|b| b.priority > target.priority)
    {
        return Err(format!(
            "{} has priority {} below {}'s {} and would be preempted at once",
            target.name, target.priority, best.name, best.priority
        ));
    }
    Ok(Some(*target))
}

fn due_word(d: Due) -> &'static str {
    match d {
        Due::Scheduled => "scheduled",
        Due::MaxTerm => "maximum-term",
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

fn find<'s>(status: &'s ElectionGroupStatus, type_: &str) -> Option<&'s Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

fn condition_reason<'s>(status: &'s ElectionGroupStatus, type_: &str) -> Option<&'s str> {
    find(status, type_).map(|c| c.reason.as_str())
}

fn condition_message<'s>(status: &'s ElectionGroupStatus, type_: &str) -> Option<&'s str> {
    find(status, type_).map(|c| c.message.as_str())
}

fn condition(
    obs: &Observation<'_>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> Condition {
    set_condition(
        obs.status,
        obs.generation,
        obs.now,
        type_,
        status,
        reason,
        message,
    )
}

/// A condition whose transition time only moves when its status does.
fn set_condition(
    prev: &ElectionGroupStatus,
    generation: Option<i64>,
    now: Timestamp,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> Condition {
    let since = find(prev, type_)
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
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
