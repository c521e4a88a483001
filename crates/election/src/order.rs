//! The one order in which a plan's writes are made: the operator executes it, the model replays it.
//!
//! Safety rests on it (see the crate's documentation): status records a term before any pod
//! carries it, unless the plan promotes the reserved successor whose term status already holds;
//! the writes that move leadership go one at a time, each acknowledged before the next.

use crate::{Plan, PodWrite};

/// One step of a plan's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The reserved successor's follower write, ahead of status, so that status pins it at the
    /// version that write leaves it (one status write for a new group, not two). Should it
    /// fail, it is made again with [`Phase::Followers`], where a failure is reported.
    SuccessorFollower,
    /// The group's status, when it differs from what the decision saw.
    Status,
    /// Removing the handoff request annotation, when the plan answers one.
    ClearHandoffRequest,
    /// The writes that give or take leadership, each acknowledged before the next.
    Leadership,
    /// The owned route's EndpointSlices, when the group has one (the model has none): right
    /// after the labels, so that the new leader knows its role when its first request arrives,
    /// and in one write per slice, old address to new.
    Endpoints,
    /// The writes that move no leadership (new and released followers), in any order.
    Followers,
    /// The Lease mirror, when the group publishes one (the model has none).
    LeaseMirror,
}

/// A failover to the reserved successor: its term is already in status, so it is labelled
/// first and status is written last.
const LABELS_FIRST: &[Phase] = &[
    Phase::Leadership,
    Phase::Endpoints,
    Phase::Followers,
    Phase::Status,
    Phase::ClearHandoffRequest,
    Phase::LeaseMirror,
];

/// Every other plan: status records the term before a pod carries it.
const STATUS_FIRST: &[Phase] = &[
    Phase::SuccessorFollower,
    Phase::Status,
    Phase::ClearHandoffRequest,
    Phase::Leadership,
    Phase::Endpoints,
    Phase::Followers,
    Phase::LeaseMirror,
];

impl Plan {
    /// The phases of this plan's writes, in the order they must be made.
    pub fn phases(&self) -> &'static [Phase] {
        if self.labels_first {
            LABELS_FIRST
        } else {
            STATUS_FIRST
        }
    }

    /// The pod writes of one phase, in the plan's order (empty for the group's own writes).
    pub fn pod_writes(&self, phase: Phase) -> Vec<&PodWrite> {
        debug_assert!(
            self.neutral_from <= self.writes.len(),
            "neutral_from past the writes"
        );
        // Past the end (never decided so), every write would move leadership, one at a time.
        let (leadership, neutral) = self
            .writes
            .split_at(self.neutral_from.min(self.writes.len()));
        let successor = self.status.successor.as_ref().and_then(|s| s.uid.as_ref());
        let early = |w: &&PodWrite| !self.labels_first && Some(&w.uid) == successor;
        match phase {
            Phase::Leadership => leadership.iter().collect(),
            // Only the first: a plan writes each pod once.
            Phase::SuccessorFollower => neutral.iter().find(early).into_iter().collect(),
            Phase::Followers => {
                let first = neutral.iter().position(|w| early(&w));
                neutral
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| Some(*i) != first)
                    .map(|(_, w)| w)
                    .collect()
            }
            Phase::Status | Phase::ClearHandoffRequest | Phase::Endpoints | Phase::LeaseMirror => {
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_precedes_leadership_unless_labels_first() {
        let at = |phases: &[Phase], p| phases.iter().position(|x| *x == p).unwrap();
        let mut plan = Plan::default();
        let phases = plan.phases();
        assert!(at(phases, Phase::Status) < at(phases, Phase::Leadership));
        assert!(at(phases, Phase::SuccessorFollower) < at(phases, Phase::Status));
        plan.labels_first = true;
        let phases = plan.phases();
        assert!(at(phases, Phase::Leadership) < at(phases, Phase::Status));
        assert!(!phases.contains(&Phase::SuccessorFollower));
        for phases in [LABELS_FIRST, STATUS_FIRST] {
            assert!(at(phases, Phase::Leadership) < at(phases, Phase::Followers));
            // The slice follows the labels at once: nothing goes between them.
            assert_eq!(
                at(phases, Phase::Endpoints),
                at(phases, Phase::Leadership) + 1
            );
            assert_eq!(phases.last(), Some(&Phase::LeaseMirror));
        }
    }
}
