//! The transition a plan records, its Events, and when the next handoff is due.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::choice::Choice;
use crate::seat::Seat;
use crate::term::Term;
use crate::{Member, Note, Observation, Requeue, Subject, group_note};
use podium_api::{Transition, TransitionReason};

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
pub(crate) fn announce(
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
pub(crate) fn next_handoff(
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
