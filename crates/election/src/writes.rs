//! The pod writes of a plan, in a safe order: fences first, then leadership, then the rest.

use crate::choice::Choice;
use crate::fitness::node_lost_for;
use crate::seat::{Seat, podium_value};
use crate::{Member, Observation, PodChange, PodWrite};
use podium_api::{Abandoned, FOLLOWER, HandoffMode, LEADER, TransitionReason};

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
