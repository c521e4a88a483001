//! Who leads next and why: keep, fail over, hand over (scheduled, manual, maxTerm), by preference.

use jiff::Timestamp;

use crate::fitness::{Fitness, fitness, rotate};
use crate::schedule::Due;
use crate::seat::{Seat, recorded};
use crate::{Member, Note, Observation, Requeue, group_note};
use podium_api::{Preference, TransitionReason};

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
pub(crate) fn heir<'m>(obs: &Observation<'m>, candidates: &[&'m Member]) -> Option<&'m Member> {
    let reserved = obs.status.successor.as_ref();
    candidates
        .iter()
        .copied()
        .find(|c| reserved.is_some_and(|s| s.uid.as_deref() == Some(c.uid.as_str())))
        .or_else(|| candidates.first().copied())
}

/// For a fit leader: a manual request, a preemption or a due handoff may move leadership.
pub(crate) fn hand_over<'m>(
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
pub(crate) fn quoted(request: &str) -> String {
    let cut: String = request.chars().take(80).collect();
    if cut.len() < request.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// The pod a manual handoff request names, if it may lead; otherwise why not.
pub(crate) fn manual_target<'m>(
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

/// The word an Event uses for what made a handoff due.
pub(crate) fn due_word(d: Due) -> &'static str {
    match d {
        Due::Scheduled => "scheduled",
        Due::MaxTerm => "maximum-term",
    }
}
