//! The pure decision: from what was observed of a group and its pods, to a plan of writes.
//!
//! Nothing here reads the clock or talks to the API server; `now` is part of the observation.

use std::cmp::Ordering;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{
    ElectionGroupStatus, FOLLOWER, HandoffMode, LEADER, Preference, Transition, TransitionReason,
};
use crate::schedule::Due;
use crate::validation::Settings;

/// Condition type: a healthy leader is labelled.
pub const READY: &str = "Ready";
/// Condition type: the spec passed validation.
pub const SPEC_VALID: &str = "SpecValid";
/// Condition type: some selected pods belong to an older group.
pub const CONFLICT: &str = "Conflict";

/// What matters about one member pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
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
    /// Current value of the role label.
    pub role: Option<String>,
    /// Current `podium.dev/term` annotation.
    pub term: Option<i64>,
    /// Current `podium.dev/group` annotation.
    pub group: Option<String>,
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
    pub departed: &'a [String],
    /// Older groups that hold some of the selected pods.
    pub conflicts: &'a [String],
    /// Value of the `podium.dev/handoff-to` annotation, if set.
    pub handoff_request: Option<&'a str>,
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
    /// Remove everything podium wrote.
    Release,
}

/// One pod write, in the order the plan lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodWrite {
    /// Pod name.
    pub pod: String,
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
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Pod writes, each acknowledged before the next.
    pub writes: Vec<PodWrite>,
    /// The status to write (only written when it differs).
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
    let s = obs.settings;
    let mut notes = Vec::new();
    let mut requeue = Requeue::default();

    let order = preference_order(s.preference);
    let term_seen = obs
        .members
        .iter()
        .filter_map(|m| m.term)
        .chain([obs.status.term])
        .max()
        .unwrap_or(0)
        .max(0);

    // The cluster's labels are the source of truth; status only breaks ties.
    let labelled: Vec<&Member> = obs
        .members
        .iter()
        .filter(|m| m.role.as_deref() == Some(LEADER))
        .collect();
    let current = labelled.iter().copied().max_by(|a, b| {
        let named = |m: &Member| obs.status.leader.as_deref() == Some(m.name.as_str());
        named(a)
            .cmp(&named(b))
            .then(a.term.cmp(&b.term))
            .then_with(|| order(b, a))
    });

    let candidates: Vec<&Member> = {
        let mut c: Vec<&Member> = obs
            .members
            .iter()
            .filter(|m| m.ready && !m.terminating)
            .filter(|m| match eligible_at(m, s.min_ready) {
                Some(at) if at > obs.now => {
                    requeue.at(at, obs.now);
                    false
                }
                _ => true,
            })
            .collect();
        c.sort_by(|a, b| order(a, b));
        c
    };

    let known = |m: &Member| {
        obs.status.leader.as_deref() == Some(m.name.as_str())
            && obs.status.leader_uid.as_deref().is_none_or(|u| u == m.uid)
    };
    let since = current
        .filter(|m| known(m))
        .and_then(|_| obs.status.leader_since.as_ref().map(|t| t.0))
        .unwrap_or(obs.now);

    let mut clear_request = false;
    let mut unfit_since = None;
    let mut skipped_at = current
        .filter(|m| known(m))
        .and_then(|_| obs.status.handoff_skipped_at.as_ref().map(|t| t.0));

    // Decide who leads next, and why, unless the group is frozen.
    let (next, reason): (Option<&Member>, Option<TransitionReason>) = if s.paused {
        (current, None)
    } else {
        match current.map(|l| fitness(l, s.tolerance, obs.now)) {
            None => {
                let reason = if obs.status.leader.is_some() {
                    unfit_since = Some(obs.now);
                    TransitionReason::Failover
                } else {
                    TransitionReason::Elected
                };
                (candidates.first().copied(), Some(reason))
            }
            Some(Fitness::Unfit(at)) => {
                unfit_since = Some(at);
                (
                    candidates.first().copied(),
                    Some(TransitionReason::Failover),
                )
            }
            Some(Fitness::Grace(until)) => {
                requeue.at(until, obs.now);
                (current, None)
            }
            Some(Fitness::Fit) => {
                let leader = current.expect("fitness implies a leader");
                let mut choice = (current, None);
                if let Some(request) = obs.handoff_request {
                    clear_request = true;
                    match manual_target(request, leader, &candidates, s.preference) {
                        Ok(Some(target)) => choice = (Some(target), Some(TransitionReason::Manual)),
                        Ok(None) => notes.push(group_note(
                            false,
                            "HandoffSkipped",
                            format!("handoff to {request:?} requested, but no other candidate is ready; {} stays leader", leader.name),
                        )),
                        Err(why) => notes.push(group_note(
                            true,
                            "HandoffRejected",
                            format!("handoff to {request:?} not performed: {why}; {} stays leader", leader.name),
                        )),
                    }
                }
                if choice.1.is_none()
                    && s.preference == Preference::Priority
                    && let Some(best) = candidates.first().filter(|c| c.priority > leader.priority)
                {
                    choice = (Some(*best), Some(TransitionReason::Preempted));
                }
                let base = skipped_at.map_or(since, |t| t.max(since));
                if choice.1.is_none()
                    && let Some((at, due)) = s.timing.next_after(base)
                    && at <= obs.now
                {
                    match rotate(leader, &candidates, s.preference) {
                        Some(target) => {
                            let reason = match due {
                                Due::Scheduled => TransitionReason::Scheduled,
                                Due::MaxTerm => TransitionReason::MaxTerm,
                            };
                            choice = (Some(target), Some(reason));
                        }
                        None => {
                            skipped_at = Some(obs.now);
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
                choice
            }
        }
    };

    let changed = next.map(|m| &m.name) != current.map(|m| &m.name);
    let term = match next {
        Some(_) if changed => term_seen + 1,
        Some(_) => term_seen.max(1),
        None => term_seen,
    };
    let (leader_since, skipped_at) = if changed {
        (next.map(|_| obs.now), None)
    } else {
        (next.map(|_| since), skipped_at)
    };

    let writes = if s.paused {
        Vec::new()
    } else {
        plan_writes(obs, next, term, reason, current)
    };

    let transition = match next {
        _ if s.paused => None,
        Some(_) if changed => Some(reason.unwrap_or(TransitionReason::Elected)),
        None if changed || obs.status.leader.is_some() => Some(TransitionReason::NoCandidates),
        _ => None,
    };
    let from = current
        .map(|m| m.name.clone())
        .or_else(|| obs.status.leader.clone());
    let last_transition = match transition {
        Some(r) => {
            let to = next.map(|m| m.name.clone());
            if let Some(to) = &to {
                notes.push(group_note(
                    false,
                    "LeaderElected",
                    format!(
                        "{} is leader (term {term}, reason {}{})",
                        to,
                        r.as_str(),
                        from.as_ref()
                            .map(|f| format!(", was {f}"))
                            .unwrap_or_default()
                    ),
                ));
                notes.push(Note {
                    subject: Subject::Pod(to.clone()),
                    warning: false,
                    reason: "BecameLeader",
                    message: format!(
                        "leader of {} (term {term}, reason {})",
                        obs.group,
                        r.as_str()
                    ),
                });
            }
            if let Some(old) = current.filter(|c| next.is_none_or(|n| n.name != c.name)) {
                notes.push(Note {
                    subject: Subject::Pod(old.name.clone()),
                    warning: false,
                    reason: "LostLeadership",
                    message: format!("no longer leader of {} (reason {})", obs.group, r.as_str()),
                });
            }
            Some(Transition {
                time: Time(obs.now),
                from,
                to,
                reason: r,
            })
        }
        None => obs.status.last_transition.clone(),
    };

    let next_handoff = match (next, leader_since) {
        (Some(_), Some(since)) if !s.paused => {
            let base = skipped_at.map_or(since, |t| t.max(since));
            s.timing.next_after(base).map(|(at, _)| {
                requeue.at(at, obs.now);
                at
            })
        }
        _ => None,
    };

    // Ready condition and the NoCandidates warning.
    let ready_members = obs.members.iter().filter(|m| m.ready).count();
    let (ready_status, ready_reason, ready_message) = match next {
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
                "none of {} member(s) is a ready candidate",
                obs.members.len()
            ),
        ),
    };
    if ready_reason == "NoCandidates" && condition_reason(obs.status, READY) != Some("NoCandidates")
    {
        notes.push(group_note(
            true,
            "NoCandidates",
            format!(
                "no leader: none of {} member(s) is Ready{}",
                obs.members.len(),
                if s.min_ready.is_zero() {
                    String::new()
                } else {
                    format!(" for {}s", s.min_ready.as_secs())
                }
            ),
        ));
    }

    let (conflict_status, conflict_reason, conflict_message) = if obs.conflicts.is_empty() {
        (
            "False",
            "NoOverlap",
            "no other group selects these pods".to_string(),
        )
    } else {
        (
            "True",
            "SelectorOverlap",
            format!(
                "some selected pods belong to older group(s) {} on the same role label; they stay there",
                obs.conflicts.join(", ")
            ),
        )
    };
    if conflict_status == "True"
        && condition_message(obs.status, CONFLICT) != Some(conflict_message.as_str())
    {
        notes.push(group_note(true, "Conflict", conflict_message.clone()));
    }

    let conditions = vec![
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
    ];

    let status = ElectionGroupStatus {
        leader: next.map(|m| m.name.clone()),
        leader_uid: next.map(|m| m.uid.clone()),
        term,
        leader_since: leader_since.map(Time),
        members: count(obs.members.len()),
        ready_members: count(ready_members),
        ready_summary: Some(format!("{}/{}", ready_members, obs.members.len())),
        next_handoff: next_handoff.map(Time),
        handoff_skipped_at: skipped_at.map(Time),
        last_transition,
        observed_generation: obs.generation,
        conditions,
    };

    Plan {
        writes,
        status,
        notes,
        requeue_after: requeue.after(obs.now),
        clear_handoff_request: clear_request,
        transition,
        unfit_since: unfit_since.filter(|_| transition == Some(TransitionReason::Failover)),
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
        writes: Vec::new(),
        status: next,
        notes,
        requeue_after: None,
        clear_handoff_request: false,
        transition: None,
        unfit_since: None,
    }
}

/// Orders pod writes so that the mode's guarantee holds at every instant.
fn plan_writes(
    obs: &Observation<'_>,
    next: Option<&Member>,
    term: i64,
    reason: Option<TransitionReason>,
    current: Option<&Member>,
) -> Vec<PodWrite> {
    let role_of = |m: &Member| {
        if next.is_some_and(|n| n.name == m.name) {
            (LEADER, Some(term))
        } else {
            (FOLLOWER, None)
        }
    };
    let mut demotions = Vec::new();
    let mut promotion = Vec::new();
    let mut others = Vec::new();
    for m in obs.members {
        let (role, want_term) = role_of(m);
        let up_to_date = m.role.as_deref() == Some(role)
            && m.term == want_term
            && m.group.as_deref() == Some(obs.group);
        if up_to_date {
            continue;
        }
        let write = PodWrite {
            pod: m.name.clone(),
            change: PodChange::Label {
                role,
                term: want_term,
            },
        };
        if m.role.as_deref() == Some(LEADER) && role == FOLLOWER {
            demotions.push(write);
        } else if role == LEADER {
            promotion.push(write);
        } else {
            others.push(write);
        }
    }
    // Make-before-break only for a planned handoff away from a leader that is still alive.
    let planned = matches!(
        reason,
        Some(
            TransitionReason::Scheduled
                | TransitionReason::MaxTerm
                | TransitionReason::Manual
                | TransitionReason::Preempted
        )
    );
    let old_alive = current.is_some_and(|c| c.ready && !c.terminating);
    let mut writes = if obs.settings.mode == HandoffMode::MakeBeforeBreak && planned && old_alive {
        [promotion, demotions, others].concat()
    } else {
        [demotions, promotion, others].concat()
    };
    writes.extend(obs.departed.iter().map(|p| PodWrite {
        pod: p.clone(),
        change: PodChange::Release,
    }));
    writes
}

enum Fitness {
    Fit,
    /// NotReady, but kept until the instant given.
    Grace(Timestamp),
    /// To be replaced; unfit since the instant given.
    Unfit(Timestamp),
}

fn fitness(leader: &Member, tolerance: SignedDuration, now: Timestamp) -> Fitness {
    if leader.terminating {
        return Fitness::Unfit(now);
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
        return Err(format!("{request} is already the leader"));
    }
    let Some(target) = candidates.iter().find(|c| c.name == request) else {
        return Err(format!("{request} is not a ready member of this group"));
    };
    if p == Preference::Priority
        && let Some(best) = candidates.first().filter(|b| b.priority > target.priority)
    {
        return Err(format!(
            "{request} has priority {} below {}'s {} and would be preempted at once",
            target.priority, best.name, best.priority
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
struct Requeue(Option<Timestamp>);

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
