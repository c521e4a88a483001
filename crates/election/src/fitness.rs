//! How fit a member is to lead, when it may, and the order of preference among candidates.

use std::cmp::Ordering;

use jiff::{SignedDuration, Timestamp};
use podium_api::Preference;

use crate::Member;
use crate::validation::Settings;

/// Whether the leader may keep leading, and since when it may not.
pub(crate) enum Fitness {
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
pub(crate) fn node_lost_for(m: &Member, s: &Settings) -> Option<SignedDuration> {
    let silence = m.node_silence?;
    let over = silence.checked_sub(s.node_loss)?;
    SignedDuration::try_from(over).ok()
}

pub(crate) fn fitness(leader: &Member, s: &Settings, now: Timestamp) -> Fitness {
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

pub(crate) fn eligible_at(m: &Member, min_ready: SignedDuration) -> Option<Timestamp> {
    if min_ready.is_zero() {
        return None;
    }
    m.ready_changed
        .or(Some(m.created))
        .and_then(|t| t.checked_add(min_ready).ok())
}

/// The comparison that sorts the best candidate first.
pub(crate) fn preference_order(p: Preference) -> fn(&Member, &Member) -> Ordering {
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
pub(crate) fn rotate<'m>(
    leader: &Member,
    candidates: &[&'m Member],
    p: Preference,
) -> Option<&'m Member> {
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
