//! Who may lead and who holds the seat now: candidates, foreign members, the recorded leader.

use crate::fitness::{eligible_at, node_lost_for, preference_order};
use crate::{MAX_TERM, Member, Observation, Requeue};
use podium_api::{FOLLOWER, LEADER};

/// How far above the recorded term a pod's annotation may be and still be believed: podium
/// records every term in status before writing it, so only a lost status (a recreated group)
/// explains a higher one, and no group reaches 2^32 leaderships.
pub(crate) const TERM_SLACK: i64 = 1 << 32;

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
pub(crate) fn podium_value(role: &str) -> bool {
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
pub(crate) fn recorded(obs: &Observation<'_>, m: &Member) -> bool {
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

/// Members labelled `leader` by someone else: not the leader status records, and without a
/// term podium would believe (podium writes the term with every `leader` it writes).
pub fn forged<'m>(obs: &Observation<'m>, foreign: &[&Member]) -> Vec<&'m Member> {
    obs.members
        .iter()
        .filter(|m| !foreign.iter().any(|f| f.name == m.name))
        .filter(|m| m.role.as_deref() == Some(LEADER))
        .filter(|m| !recorded(obs, m))
        .filter(|m| trusted_term(m, obs.group, obs.status.term).is_none())
        .collect()
}
