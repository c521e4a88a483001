//! Counterexamples the model's search once found, kept as plain tests.

use super::*;

/// The scenario that needs the abandoned promotion's pod to be changed first: one replica records
/// a manual handoff to p2, demotes p1 and stalls before promoting p2; the other passes p2 over
/// and promotes p1; then the stalled promotion of p2 is attempted.
#[test]
fn a_stale_promotion_of_a_pod_passed_over_elsewhere_cannot_land() {
    let s = settings(|_| {});
    let mut ops = vec![Op::Add, Op::Add, Op::Add, Op::Add];
    ops.push(Op::Decide {
        actor: 0,
        lag: 0,
        group_lag: 0,
    });
    ops.extend(std::iter::repeat_n(Op::Write(0), 5));
    ops.push(Op::Handoff(Some(2)));
    ops.push(Op::Decide {
        actor: 0,
        lag: 0,
        group_lag: 0,
    });
    ops.extend(std::iter::repeat_n(Op::Write(0), 3)); // status, clear the request, demote p1
    ops.push(Op::PassOver(1, 1)); // p2
    ops.push(Op::Decide {
        actor: 1,
        lag: 0,
        group_lag: 0,
    });
    ops.extend(std::iter::repeat_n(Op::Write(1), 6));
    ops.push(Op::Write(0)); // the stalled promotion of p2
    run(s, ops).unwrap();
}

/// Leadership passes by the reserved successor p8 (a stale leader label makes p4 lead again under
/// a new term) while p8 stays reserved under a newer term; a replica holding a status copy from
/// before then fails over to p8 with the old reserved term. p8 must have been fenced (written)
/// when the term passed it, so that the stale labels-first write fails its precondition.
#[test]
fn a_term_issued_past_the_reserved_successor_fences_it() {
    use Op::*;
    let d = |actor, group_lag| Decide {
        actor,
        lag: 0,
        group_lag,
    };
    let ops = vec![
        Add,
        Add,
        Add,
        Add,
        Ready(5, false),
        Add,
        PassOver(1, 5),
        Handoff(None),
        Ready(4, false),
        Add,
        d(1, 0),
        Add,
        Write(1),
        Write(1),
        Add,
        d(0, 0),
        Write(0),
        Delete(0),
        Delete(5),
        d(0, 0),
        d(1, 0),
        Write(0),
        Write(0),
        Add,
        d(0, 0),
        Write(0),
        Write(0),
        d(0, 0),
        Add,
        Write(0),
        Add,
        Add,
        Add,
        d(0, 0),
        Add,
        Write(0),
        d(0, 12),
        Write(0),
    ];
    let s = settings(|s| {
        s.handoff = Some(podium_api::Handoff {
            schedule: Some("@every 15s".into()),
            mode: HandoffMode::BreakBeforeMake,
            ..Default::default()
        });
    });
    run(s, ops).unwrap();
}
