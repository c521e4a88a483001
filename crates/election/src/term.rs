//! Terms: the next term, the reserved successor and its term, abandoned promotions.

use crate::choice::Choice;
use crate::fitness::rotate;
use crate::seat::{Seat, recorded, trusted_term};
use crate::{MAX_TERM, Member, Observation};
use podium_api::{Abandoned, LEADER, Successor};

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
pub(crate) fn reserved_term(obs: &Observation<'_>) -> i64 {
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
pub(crate) fn written_role_label(obs: &Observation<'_>) -> Option<String> {
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

/// The version recorded with the leader: unchanged while its leadership continues, else the
/// version the new leader was chosen at.
pub(crate) fn leader_version(
    obs: &Observation<'_>,
    next: Option<&Member>,
    term: Term,
) -> Option<String> {
    let next = next?;
    let continues = obs.status.leader_uid.as_deref() == Some(next.uid.as_str())
        && obs.status.term == term.value();
    if continues {
        obs.status.leader_resource_version.clone()
    } else {
        next.resource_version.clone()
    }
}
