//! Table-driven tests of the decision rules, and a property test over random histories.

use super::*;
use crate::validation::validate;
use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use podium_api::{
    DEFAULT_ROLE_LABEL, ElectionGroupSpec, FOLLOWER, Handoff, HandoffMode, LEADER, Preference,
};
use proptest::prelude::*;

pub(super) const T0: &str = "2026-11-22T10:00:00Z";

pub(super) fn at(secs: i64) -> Timestamp {
    T0.parse::<Timestamp>().unwrap() + SignedDuration::from_secs(secs)
}

pub(super) fn settings(f: impl FnOnce(&mut ElectionGroupSpec)) -> Settings {
    let mut spec: ElectionGroupSpec =
        serde_json::from_value(serde_json::json!({"selector": {"matchLabels": {"app": "x"}}}))
            .unwrap();
    f(&mut spec);
    validate("g", &spec).unwrap()
}

/// A Ready pod created `age` seconds before T0, Ready since its creation.
fn pod(name: &str, age: i64) -> Member {
    Member {
        name: name.into(),
        uid: format!("uid-{name}"),
        resource_version: Some("1".into()),
        created: at(-age),
        ready: true,
        ready_changed: Some(at(-age)),
        terminating: false,
        priority: 0,
        role: None,
        stale_key: false,
        term: None,
        group: None,
        node: None,
        node_silence: None,
    }
}

fn trio() -> Vec<Member> {
    vec![pod("a", 300), pod("b", 200), pod("c", 100)]
}

struct World {
    settings: Settings,
    members: Vec<Member>,
    status: ElectionGroupStatus,
    now: Timestamp,
    request: Option<String>,
    conflicts: Vec<String>,
    departed: Vec<Member>,
    passed_over: Vec<String>,
    lease_foreign: bool,
    foreign_services: Vec<String>,
}

impl World {
    fn new(settings: Settings, members: Vec<Member>) -> Self {
        Self {
            settings,
            members,
            status: ElectionGroupStatus::default(),
            now: at(0),
            request: None,
            conflicts: vec![],
            departed: vec![],
            passed_over: vec![],
            lease_foreign: false,
            foreign_services: Vec::new(),
        }
    }

    fn decide(&self) -> Plan {
        decide(&Observation {
            group: "g",
            generation: Some(1),
            settings: &self.settings,
            status: &self.status,
            members: &self.members,
            departed: &self.departed,
            conflicts: &self.conflicts,
            handoff_request: self.request.as_deref(),
            passed_over: &self.passed_over,
            lease_foreign: self.lease_foreign,
            foreign_services: &self.foreign_services,
            now: self.now,
        })
    }

    /// Decides and applies the plan as the reconciler would; returns the plan.
    fn step(&mut self) -> Plan {
        let plan = self.decide();
        for w in &plan.writes {
            apply_write(&mut self.members, w);
        }
        self.status = plan.status.clone();
        if plan.clear_handoff_request {
            self.request = None;
        }
        plan
    }

    fn leaders(&self) -> Vec<&str> {
        self.members
            .iter()
            .filter(|m| m.role.as_deref() == Some(LEADER))
            .map(|m| m.name.as_str())
            .collect()
    }

    fn member(&mut self, name: &str) -> &mut Member {
        self.members.iter_mut().find(|m| m.name == name).unwrap()
    }

    fn remove(&mut self, name: &str) {
        self.members.retain(|m| m.name != name);
    }
}

fn apply_write(members: &mut [Member], w: &PodWrite) {
    if let Some(m) = members.iter_mut().find(|m| m.name == w.pod) {
        let rv: u64 = m
            .resource_version
            .as_deref()
            .unwrap_or("0")
            .parse()
            .unwrap();
        m.resource_version = Some((rv + 1).to_string());
        match &w.change {
            PodChange::Label { role, term } => {
                m.role = Some(role.to_string());
                m.term = *term;
                m.group = Some("g".into());
            }
            PodChange::Release { role_label } => {
                if *role_label {
                    m.role = None;
                }
                m.term = None;
                m.group = None;
            }
        }
    }
}

/// The plan's writes as (pod, change), in order.
fn changes(plan: &Plan) -> Vec<(&str, PodChange)> {
    plan.writes
        .iter()
        .map(|w| (w.pod.as_str(), w.change.clone()))
        .collect()
}

fn reasons(plan: &Plan) -> Vec<&'static str> {
    plan.notes.iter().map(|n| n.reason).collect()
}

fn cond<'p>(plan: &'p Plan, t: &str) -> &'p Condition {
    plan.status
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap()
}

#[test]
fn oldest_ready_pod_is_elected_and_others_follow() {
    let mut w = World::new(settings(|_| {}), trio());
    let plan = w.step();
    assert_eq!(w.leaders(), ["a"]);
    assert_eq!(plan.writes[0].pod, "a", "the leader is labelled first");
    assert_eq!(plan.writes.len(), 3);
    // Only the promotion must wait for status; the followers may go first, in any order.
    assert_eq!(plan.neutral_from, 1);
    assert!(w.members.iter().all(|m| m.group.as_deref() == Some("g")));
    assert_eq!(w.member("a").term, Some(1));
    assert_eq!(w.member("b").role.as_deref(), Some(FOLLOWER));
    assert_eq!(w.member("b").term, None);
    let s = &plan.status;
    assert_eq!(
        (s.leader.as_deref(), s.term, s.members, s.ready_members),
        (Some("a"), 1, 3, 3)
    );
    assert_eq!(s.ready_summary.as_deref(), Some("3/3"));
    assert_eq!(s.leader_since, Some(Time(at(0))));
    assert_eq!(
        s.last_transition.as_ref().unwrap().reason,
        TransitionReason::Elected
    );
    assert_eq!(cond(&plan, READY).status, "True");
    assert_eq!(cond(&plan, SPEC_VALID).status, "True");
    assert_eq!(cond(&plan, CONFLICT).status, "False");
    assert_eq!(reasons(&plan), ["LeaderElected", "BecameLeader"]);
    assert_eq!(plan.transition, Some(TransitionReason::Elected));
    assert_eq!(plan.requeue_after, None);
}

#[test]
fn settled_group_writes_nothing_and_keeps_status() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    // The successor's reservation is pinned to its version once its follower label is on.
    let pin = w.step();
    assert!(pin.writes.is_empty());
    assert_eq!(
        pin.status.successor.and_then(|s| s.resource_version),
        w.member("b").resource_version
    );
    w.now = at(60);
    let before = w.status.clone();
    let plan = w.step();
    assert!(plan.writes.is_empty(), "{:?}", plan.writes);
    assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    assert_eq!(
        plan.status, before,
        "status must not churn when nothing changed"
    );
    assert_eq!(plan.transition, None);
}

#[test]
fn ties_on_age_go_to_the_first_name() {
    let mut w = World::new(
        settings(|_| {}),
        vec![pod("z", 100), pod("m", 100), pod("q", 100)],
    );
    w.step();
    assert_eq!(w.leaders(), ["m"]);
}

#[test]
fn deleted_leader_fails_over_with_a_higher_term() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    w.remove("a");
    w.now = at(5);
    let plan = w.step();
    assert_eq!(w.leaders(), ["b"]);
    assert_eq!(plan.status.term, 2);
    assert_eq!(w.member("b").term, Some(2));
    let t = plan.status.last_transition.unwrap();
    assert_eq!(
        (t.from.as_deref(), t.to.as_deref(), t.reason),
        (Some("a"), Some("b"), TransitionReason::Failover)
    );
    assert_eq!(plan.status.leader_since, Some(Time(at(5))));
}

#[test]
fn terminating_leader_is_demoted_before_the_successor_is_promoted() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    w.member("a").terminating = true;
    let plan = w.step();
    assert_eq!(
        changes(&plan)[..2],
        [
            (
                "a",
                PodChange::Label {
                    role: FOLLOWER,
                    term: None
                }
            ),
            (
                "b",
                PodChange::Label {
                    role: LEADER,
                    term: Some(2)
                }
            ),
        ]
    );
    assert_eq!(
        plan.status.last_transition.as_ref().unwrap().reason,
        TransitionReason::Failover
    );
    assert!(reasons(&plan).contains(&"LostLeadership"));
}

#[test]
fn not_ready_leader_fails_over_at_once_with_zero_tolerance() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    w.now = at(10);
    w.member("a").ready = false;
    w.member("a").ready_changed = Some(at(10));
    let plan = w.step();
    assert_eq!(w.leaders(), ["b"]);
    assert_eq!(plan.writes[0].pod, "a", "break before make");
    // The demotion and the promotion keep their order; nothing is neutral.
    assert_eq!(plan.neutral_from, plan.writes.len());
}

#[test]
fn not_ready_leader_is_kept_within_tolerance_then_replaced() {
    let mut w = World::new(settings(|s| s.failover_tolerance_seconds = 30), trio());
    w.step();
    w.now = at(10);
    w.member("a").ready = false;
    w.member("a").ready_changed = Some(at(10));
    let plan = w.step();
    assert_eq!(w.leaders(), ["a"]);
    assert!(plan.writes.is_empty());
    assert_eq!(cond(&plan, READY).status, "False");
    assert_eq!(cond(&plan, READY).reason, "LeaderNotReady");
    assert_eq!(plan.requeue_after, Some(std::time::Duration::from_secs(30)));

    w.now = at(39);
    assert_eq!(w.step().transition, None);
    w.now = at(40);
    let plan = w.step();
    assert_eq!(w.leaders(), ["b"]);
    assert_eq!(plan.transition, Some(TransitionReason::Failover));

    // A leader that recovers within the tolerance keeps leading.
    let mut w = World::new(settings(|s| s.failover_tolerance_seconds = 30), trio());
    w.step();
    w.member("a").ready = false;
    w.member("a").ready_changed = Some(at(0));
    w.step();
    w.member("a").ready = true;
    w.now = at(60);
    let plan = w.step();
    assert_eq!(w.leaders(), ["a"]);
    assert_eq!(cond(&plan, READY).status, "True");
}

#[test]
fn min_ready_seconds_delays_candidacy() {
    let mut members = trio();
    for m in &mut members {
        m.ready_changed = Some(at(-5));
    }
    let mut w = World::new(settings(|s| s.min_ready_seconds = 20), members);
    let plan = w.step();
    assert!(w.leaders().is_empty());
    assert_eq!(cond(&plan, READY).reason, "NoCandidates");
    let waiting: Vec<_> = plan
        .notes
        .iter()
        .filter(|n| n.reason == "NoCandidates")
        .collect();
    assert!(
        waiting.len() == 1 && !waiting[0].warning && waiting[0].message.starts_with("waiting"),
        "a new group waits without a Warning: {:?}",
        plan.notes
    );
    assert!(
        waiting[0]
            .message
            .ends_with("none of 3 member(s) is a candidate (3 Ready for less than 20s))"),
        "{}",
        waiting[0].message
    );
    assert_eq!(plan.requeue_after, Some(std::time::Duration::from_secs(15)));
    w.now = at(15);
    w.step();
    assert_eq!(w.leaders(), ["a"]);
}

#[test]
fn no_candidates_removes_the_leader_and_warns_once() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    for n in ["a", "b", "c"] {
        w.member(n).ready = false;
        w.member(n).ready_changed = Some(at(1));
    }
    w.now = at(1);
    let plan = w.step();
    assert!(w.leaders().is_empty());
    assert_eq!(plan.status.leader, None);
    assert_eq!(
        plan.status.term, 1,
        "term does not move without a new leader"
    );
    assert_eq!(cond(&plan, READY).reason, "NoCandidates");
    assert!(
        plan.notes
            .iter()
            .any(|n| n.reason == "NoCandidates" && n.warning),
        "losing every candidate is a Warning"
    );
    assert_eq!(
        plan.status.last_transition.unwrap().reason,
        TransitionReason::NoCandidates
    );
    w.now = at(2);
    let again = w.step();
    assert!(again.notes.is_empty(), "warned twice: {:?}", again.notes);
    assert!(again.writes.is_empty());

    w.member("c").ready = true;
    w.now = at(3);
    let plan = w.step();
    assert_eq!(w.leaders(), ["c"]);
    assert_eq!(
        plan.status.term, 3,
        "term 2 was reserved for b, which never took over: it is never given to another pod"
    );
    assert_eq!(plan.status.last_transition.unwrap().from.as_deref(), None);
}

#[test]
fn empty_group_has_no_leader() {
    let mut w = World::new(settings(|_| {}), vec![]);
    let plan = w.step();
    assert_eq!(plan.status.members, 0);
    assert_eq!(cond(&plan, READY).reason, "NoCandidates");
    assert_eq!(plan.transition, None);
}

#[test]
fn priority_preference_and_preemption() {
    let mut members = trio();
    members[1].priority = 10;
    members[2].priority = 10;
    let mut w = World::new(settings(|s| s.preference = Preference::Priority), members);
    w.step();
    assert_eq!(w.leaders(), ["b"], "highest priority, then oldest");

    let mut d = pod("d", 1);
    d.priority = 50;
    d.ready = false;
    w.members.push(d);
    w.now = at(5);
    assert_eq!(w.step().transition, None, "a NotReady pod does not preempt");
    w.member("d").ready = true;
    w.now = at(6);
    let plan = w.step();
    assert_eq!(w.leaders(), ["d"]);
    assert_eq!(plan.transition, Some(TransitionReason::Preempted));
    assert_eq!(
        plan.status.term, 3,
        "term 2 stays reserved for c, the successor"
    );

    // Equal priority does not preempt.
    let mut e = pod("e", 1000);
    e.priority = 50;
    w.members.push(e);
    w.now = at(7);
    assert_eq!(w.step().transition, None);
}

#[test]
fn paused_group_touches_no_labels() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    w.settings.paused = true;
    w.remove("a");
    w.members.push(pod("d", 1));
    let plan = w.step();
    assert!(plan.writes.is_empty());
    assert_eq!(plan.status.leader, None);
    assert_eq!(plan.transition, None);
    assert_eq!(cond(&plan, READY).reason, "Paused");
    w.settings.paused = false;
    w.step();
    assert_eq!(w.leaders(), ["b"]);
}

#[test]
fn restart_adopts_labels_without_writes_or_events() {
    let mut members = trio();
    for m in &mut members {
        m.role = Some(FOLLOWER.into());
        m.group = Some("g".into());
    }
    members[2].role = Some(LEADER.into());
    members[2].term = Some(7);
    let mut w = World::new(settings(|_| {}), members);
    w.status.term = 5;
    let plan = w.step();
    assert!(plan.writes.is_empty(), "{:?}", plan.writes);
    assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    assert_eq!(
        plan.status.leader.as_deref(),
        Some("c"),
        "labels win over preference"
    );
    assert_eq!(
        plan.status.term, 7,
        "term is the max of status and annotations"
    );
}

#[test]
fn stale_leader_annotation_is_raised_to_the_status_term() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    w.member("a").term = Some(1);
    w.status.term = 4;
    let plan = w.step();
    assert_eq!(plan.status.term, 4);
    assert_eq!(
        w.member("a").term,
        Some(4),
        "settled: annotation agrees with status"
    );
}

#[test]
fn two_labelled_leaders_are_reduced_to_the_one_in_status() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    w.member("c").role = Some(LEADER.into());
    w.member("c").term = Some(1);
    let plan = w.step();
    assert_eq!(w.leaders(), ["a"]);
    assert_eq!(plan.writes.len(), 1);
}

#[test]
fn a_forged_leader_label_is_put_back_and_reported() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    // Someone labels a follower leader (no term: podium writes one with every leader).
    w.member("c").role = Some(LEADER.into());
    let plan = w.step();
    assert_eq!(w.leaders(), ["a"]);
    assert_eq!(
        changes(&plan).len(),
        1,
        "only c is written: {:?}",
        changes(&plan)
    );
    let forged: Vec<_> = plan
        .notes
        .iter()
        .filter(|n| n.reason == FORGED_ROLE)
        .collect();
    assert!(
        forged.len() == 1 && forged[0].warning && forged[0].message.starts_with("c carries"),
        "{:?}",
        plan.notes
    );
    assert!(!reasons(&w.step()).contains(&FORGED_ROLE), "reported once");
}

#[test]
fn departed_pods_are_released() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    let mut old = pod("old", 500);
    old.role = Some(FOLLOWER.into());
    old.group = Some("g".into());
    w.departed = vec![old];
    let plan = w.step();
    assert_eq!(
        changes(&plan),
        [("old", PodChange::Release { role_label: true })]
    );
}

#[test]
fn a_departed_leader_is_released_before_its_successor_is_promoted() {
    for mode in [HandoffMode::BreakBeforeMake, HandoffMode::MakeBeforeBreak] {
        let mut w = World::new(every_10s(mode), trio());
        w.step();
        let a = w.members.remove(0);
        w.departed = vec![a];
        let plan = w.step();
        assert_eq!(
            changes(&plan)[0],
            ("a", PodChange::Release { role_label: true }),
            "{mode:?}"
        );
        assert_eq!(changes(&plan)[1].0, "b");
        assert_eq!(plan.status.leader.as_deref(), Some("b"));
        assert_eq!(plan.status.term, 2);
    }
}

#[test]
fn conflict_is_reported_once() {
    let mut w = World::new(settings(|_| {}), trio());
    w.conflicts = vec!["older".into()];
    let plan = w.step();
    assert_eq!(cond(&plan, CONFLICT).status, "True");
    assert!(cond(&plan, CONFLICT).message.contains("older"));
    assert!(reasons(&plan).contains(&"Conflict"));
    assert!(!reasons(&w.step()).contains(&"Conflict"));
}

fn every_10s(mode: HandoffMode) -> Settings {
    settings(|s| {
        s.handoff = Some(Handoff {
            schedule: Some("@every 10s".into()),
            mode,
            ..Default::default()
        })
    })
}

#[test]
fn scheduled_handoffs_rotate_through_every_candidate() {
    let mut w = World::new(every_10s(HandoffMode::BreakBeforeMake), trio());
    let plan = w.step();
    assert_eq!(plan.status.next_handoff, Some(Time(at(10))));
    assert_eq!(plan.requeue_after, Some(std::time::Duration::from_secs(10)));
    w.now = at(9);
    assert_eq!(w.step().transition, None);
    let mut seen = vec![w.leaders()[0].to_string()];
    for i in 1..=3 {
        w.now = at(10 * i);
        let plan = w.step();
        assert_eq!(plan.transition, Some(TransitionReason::Scheduled));
        assert_eq!(plan.status.term, 1 + i);
        assert_eq!(plan.status.next_handoff, Some(Time(at(10 * i + 10))));
        assert_eq!(
            plan.writes[0].change,
            PodChange::Label {
                role: FOLLOWER,
                term: None
            },
            "break before make"
        );
        seen.push(w.leaders()[0].to_string());
    }
    assert_eq!(seen, ["a", "b", "c", "a"]);
}

#[test]
fn make_before_break_promotes_first_also_from_a_stopping_leader_but_not_from_a_dead_one() {
    let mut w = World::new(every_10s(HandoffMode::MakeBeforeBreak), trio());
    w.step();
    w.now = at(10);
    let plan = w.step();
    assert_eq!(
        changes(&plan)[0],
        (
            "b",
            PodChange::Label {
                role: LEADER,
                term: Some(2)
            }
        )
    );
    assert_eq!(plan.writes[1].pod, "a");
    // A rolling update: b's pod is terminating while its process still runs out its grace.
    w.member("b").terminating = true;
    let plan = w.step();
    assert_eq!(plan.transition, Some(TransitionReason::Failover));
    let order: Vec<String> = changes(&plan).iter().map(|(p, _)| p.to_string()).collect();
    let next = order[0].clone();
    assert_ne!(next, "b");
    assert_eq!(
        order[1], "b",
        "successor promoted, then b demoted: {order:?}"
    );
    // A leader that is no longer Ready is dead to its clients: demoted first.
    w.member(&next).ready = false;
    let plan = w.step();
    assert_eq!(plan.transition, Some(TransitionReason::Failover));
    assert_eq!(
        plan.writes[0].pod, next,
        "a NotReady leader is demoted first"
    );
}

#[test]
fn handoff_with_no_other_candidate_is_skipped_and_rescheduled() {
    let mut w = World::new(
        every_10s(HandoffMode::BreakBeforeMake),
        vec![pod("solo", 10)],
    );
    w.step();
    w.now = at(10);
    let plan = w.step();
    assert_eq!(w.leaders(), ["solo"]);
    assert!(plan.writes.is_empty());
    assert_eq!(reasons(&plan), ["HandoffSkipped"]);
    assert_eq!(plan.status.next_handoff, Some(Time(at(20))));
    w.now = at(15);
    assert!(w.step().notes.is_empty(), "skipped once per instant");
    w.members.push(pod("late", 1));
    w.now = at(20);
    w.step();
    assert_eq!(w.leaders(), ["late"]);
}

#[test]
fn max_term_hands_over() {
    let s = settings(|s| {
        s.handoff = Some(Handoff {
            max_term: Some("15s".into()),
            ..Default::default()
        })
    });
    let mut w = World::new(s, trio());
    w.step();
    w.now = at(15);
    let plan = w.step();
    assert_eq!(plan.transition, Some(TransitionReason::MaxTerm));
    assert_eq!(w.leaders(), ["b"]);
    assert_eq!(plan.status.next_handoff, Some(Time(at(30))));
}

#[test]
fn manual_handoffs() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    w.request = Some("c".into());
    let plan = w.step();
    assert_eq!(w.leaders(), ["c"]);
    assert_eq!(plan.transition, Some(TransitionReason::Manual));
    assert!(plan.clear_handoff_request && w.request.is_none());

    w.request = Some("any".into());
    w.step();
    assert_eq!(
        w.leaders(),
        ["a"],
        "any: the next candidate after c, wrapping"
    );

    for bogus in ["nope", "a"] {
        w.request = Some(bogus.into());
        let plan = w.step();
        assert_eq!(w.leaders(), ["a"]);
        assert!(plan.writes.is_empty());
        assert_eq!(reasons(&plan), ["HandoffRejected"]);
        assert!(plan.notes[0].warning);
        assert!(plan.clear_handoff_request);
    }

    w.member("b").ready = false;
    w.request = Some("b".into());
    assert_eq!(
        reasons(&w.step()),
        ["HandoffRejected"],
        "a NotReady target is refused"
    );

    let mut solo = World::new(settings(|_| {}), vec![pod("solo", 1)]);
    solo.step();
    solo.request = Some("any".into());
    assert_eq!(reasons(&solo.step()), ["HandoffSkipped"]);
}

#[test]
fn manual_handoff_waits_while_paused() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    w.settings.paused = true;
    w.request = Some("b".into());
    let plan = w.step();
    assert!(!plan.clear_handoff_request);
    assert!(plan.writes.is_empty());
}

#[test]
fn invalid_spec_is_reported_once_per_generation() {
    let status = ElectionGroupStatus::default();
    let empty = crate::validation::Problems(vec![crate::validation::Problem::new(
        "spec.selector must not be empty",
    )]);
    assert_eq!(empty.0[0].field, "spec.selector");
    let plan = reject(&status, Some(2), &empty, at(0));
    assert!(plan.writes.is_empty());
    assert_eq!(reasons(&plan), ["InvalidSpec"]);
    assert_eq!(cond(&plan, SPEC_VALID).status, "False");
    let again = reject(&plan.status, Some(2), &empty, at(5));
    assert!(again.notes.is_empty());
    assert_eq!(again.status, plan.status);
    let next_gen = reject(&plan.status, Some(3), &empty, at(5));
    assert_eq!(reasons(&next_gen), ["InvalidSpec"]);
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8),
    Delete(u8),
    Ready(u8, bool),
    Terminate(u8),
    Tick(u8),
    Handoff(Option<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6).prop_map(Op::Add),
        (0u8..6).prop_map(Op::Delete),
        (0u8..6, any::<bool>()).prop_map(|(i, r)| Op::Ready(i, r)),
        (0u8..6).prop_map(Op::Terminate),
        (1u8..30).prop_map(Op::Tick),
        proptest::option::of(0u8..6).prop_map(Op::Handoff),
    ]
}

fn check_history(settings: Settings, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let bbm = settings.mode == HandoffMode::BreakBeforeMake;
    let mut w = World::new(settings, vec![]);
    let mut clock = 0;
    let mut last_term = 0;
    for op in ops {
        match op {
            Op::Add(i) => {
                let name = format!("p{i}");
                if !w.members.iter().any(|m| m.name == name) {
                    let mut p = pod(&name, -clock);
                    p.ready = i % 2 == 0;
                    w.members.push(p);
                }
            }
            Op::Delete(i) => w.remove(&format!("p{i}")),
            Op::Ready(i, r) => {
                if let Some(m) = w.members.iter_mut().find(|m| m.name == format!("p{i}"))
                    && m.ready != r
                {
                    m.ready = r;
                    m.ready_changed = Some(at(clock));
                }
            }
            Op::Terminate(i) => {
                if let Some(m) = w.members.iter_mut().find(|m| m.name == format!("p{i}")) {
                    m.terminating = true;
                }
            }
            Op::Tick(s) => clock += i64::from(s),
            Op::Handoff(t) => w.request = Some(t.map_or("any".into(), |i| format!("p{i}"))),
        }
        w.now = at(clock);
        let plan = w.decide();
        for write in &plan.writes {
            apply_write(&mut w.members, write);
            if bbm {
                prop_assert!(
                    w.leaders().len() <= 1,
                    "two leaders mid-plan: {:?}",
                    w.leaders()
                );
            }
        }
        prop_assert!(
            w.leaders().len() <= 1,
            "two leaders after a plan: {:?}",
            w.leaders()
        );
        prop_assert!(
            plan.status.term >= last_term,
            "term went down: {} -> {}",
            last_term,
            plan.status.term
        );
        last_term = plan.status.term;
        if let Some(l) = &plan.status.leader {
            let m = w.members.iter().find(|m| &m.name == l).unwrap();
            prop_assert_eq!(
                m.term,
                Some(plan.status.term),
                "leader annotation agrees with status"
            );
        }
        let has_candidate = w.members.iter().any(|m| m.ready && !m.terminating);
        if has_candidate {
            prop_assert!(
                plan.status.leader.is_some(),
                "a candidate exists but no leader was chosen"
            );
        }
        w.status = plan.status;
        if plan.clear_handoff_request {
            w.request = None;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_never_have_two_leaders_or_a_falling_term(
        ops in proptest::collection::vec(op(), 1..60),
        make_before_break in any::<bool>(),
        tolerance in 0i64..2,
    ) {
        let mode = if make_before_break { HandoffMode::MakeBeforeBreak } else { HandoffMode::BreakBeforeMake };
        let s = settings(|s| {
            s.failover_tolerance_seconds = tolerance * 10;
            s.handoff = Some(Handoff { schedule: Some("@every 15s".into()), mode, ..Default::default() });
        });
        check_history(s, ops)?;
    }
}

/// An observation of `w` with the given status, for testing one step alone.
fn observe<'a>(w: &'a World) -> Observation<'a> {
    Observation {
        group: "g",
        generation: Some(1),
        settings: &w.settings,
        status: &w.status,
        members: &w.members,
        departed: &w.departed,
        conflicts: &w.conflicts,
        handoff_request: w.request.as_deref(),
        passed_over: &w.passed_over,
        lease_foreign: w.lease_foreign,
        foreign_services: &w.foreign_services,
        now: w.now,
    }
}

#[test]
fn trusted_term_table() {
    let cases: [(Option<i64>, Option<&str>, Option<i64>); 8] = [
        (Some(4), Some("g"), Some(4)),
        (Some(4), None, None),
        (Some(4), Some("other"), None),
        (Some(0), Some("g"), None),
        (Some(-3), Some("g"), None),
        (Some(i64::MAX), Some("g"), None),
        (Some(1 << 32), Some("g"), Some(1 << 32)),
        (Some((1 << 32) + 1), Some("g"), None),
    ];
    for (term, group, want) in cases {
        let mut m = pod("a", 1);
        m.term = term;
        m.group = group.map(String::from);
        assert_eq!(trusted_term(&m, "g", 0), want, "{term:?} {group:?}");
    }
}

#[test]
fn foreign_members_table() {
    let cases: [(Option<&str>, Option<&str>, bool); 6] = [
        (None, None, false),
        (Some(LEADER), Some("g"), false),
        (Some(FOLLOWER), Some("other"), true),
        (Some(FOLLOWER), None, true),
        (Some("web"), Some("g"), true),
        (Some(LEADER), None, true),
    ];
    for (role, group, foreign) in cases {
        let mut w = World::new(settings(|_| {}), vec![pod("a", 1)]);
        w.members[0].role = role.map(String::from);
        w.members[0].group = group.map(String::from);
        assert_eq!(
            !foreign_members(&observe(&w)).is_empty(),
            foreign,
            "{role:?} {group:?}"
        );
    }
}

#[test]
fn candidates_exclude_the_unready_the_foreign_and_the_passed_over() {
    let mut w = World::new(settings(|_| {}), trio());
    w.members.push(pod("d", 400));
    w.members[3].role = Some("web".into());
    w.members[1].ready = false;
    w.passed_over = vec!["a".into()];
    let obs = observe(&w);
    let foreign = foreign_members(&obs);
    let c = candidates(&obs, &foreign, &mut Requeue::default());
    let names: Vec<&str> = c.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["c"]);
}

#[test]
fn seat_finds_the_recorded_leader_and_a_pending_promotion() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    // Status records b (term 2) but only a carries the label: b's promotion is in flight.
    w.status.leader = Some("b".into());
    w.status.leader_uid = Some("uid-b".into());
    w.status.leader_resource_version = w.member("b").resource_version.clone();
    w.status.term = 2;
    let obs = observe(&w);
    let s = seat(&obs, &[]);
    assert_eq!(s.current.map(|m| m.name.as_str()), Some("a"));
    assert_eq!(s.pending.map(|m| m.name.as_str()), Some("b"));
    // Once b has changed, the record may be of a leadership that ended: not in flight.
    w.member("b").resource_version = Some("7".into());
    let obs = observe(&w);
    assert_eq!(seat(&obs, &[]).pending.map(|m| m.name.as_str()), None);
}

#[test]
fn a_recorded_promotion_is_completed_with_its_term_and_announced_once() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    w.status.leader = Some("b".into());
    w.status.leader_uid = Some("uid-b".into());
    w.status.leader_resource_version = w.member("b").resource_version.clone();
    w.status.term = 2;
    let plan = w.step();
    assert_eq!(w.leaders(), ["b"]);
    assert_eq!(
        w.member("b").term,
        Some(2),
        "the recorded term, not a new one"
    );
    assert_eq!(plan.status.term, 2);
    assert_eq!(changes(&plan)[0].0, "a", "the old leader is demoted first");
    assert!(
        plan.notes.is_empty(),
        "announced by the decision that recorded it"
    );
}

#[test]
fn a_recorded_promotion_of_a_pod_that_is_no_longer_a_candidate_is_abandoned_with_a_new_term() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    w.status.leader = Some("b".into());
    w.status.leader_uid = Some("uid-b".into());
    w.status.term = 2;
    w.member("b").ready = false;
    let plan = w.step();
    assert_eq!(w.leaders(), ["a"]);
    assert_eq!(plan.status.term, 3, "term 2 belonged to b's leadership");
    assert_eq!(w.member("a").term, Some(3));
}

#[test]
fn next_term_table() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    let a = w.member("a").clone();
    let b = w.members[1].clone();
    let obs = observe(&w);
    let keep = Choice {
        next: Some(&a),
        ..Choice::default()
    };
    assert_eq!(next_term(&obs, &seat(&obs, &[]), &keep), Term::Keep(1));
    let other = Choice {
        next: Some(&b),
        ..Choice::default()
    };
    assert_eq!(
        next_term(&obs, &seat(&obs, &[]), &other),
        Term::Reserved(2),
        "b is the reserved successor"
    );
    let c = w.members[2].clone();
    let third = Choice {
        next: Some(&c),
        ..Choice::default()
    };
    assert_eq!(
        next_term(&observe(&w), &seat(&observe(&w), &[]), &third),
        Term::Issue(3),
        "above the reserved term"
    );
    assert_eq!(
        next_term(&obs, &seat(&obs, &[]), &Choice::default()),
        Term::Keep(1)
    );
    // A status lost (group recreated): the labelled leader's own term is adopted.
    w.status = ElectionGroupStatus::default();
    let obs = observe(&w);
    assert_eq!(next_term(&obs, &seat(&obs, &[]), &keep), Term::Adopt(1));
    // At the cap the term stops rising instead of wrapping.
    w.status.term = MAX_TERM;
    let obs = observe(&w);
    assert_eq!(
        next_term(&obs, &seat(&obs, &[]), &other),
        Term::Issue(MAX_TERM)
    );
}

#[test]
fn a_hostile_term_annotation_is_ignored() {
    let mut w = World::new(settings(|_| {}), trio());
    w.member("b").term = Some(i64::MAX);
    let plan = w.step();
    assert_eq!(plan.status.term, 1);
    assert_eq!(w.member("a").term, Some(1));
}

#[test]
fn foreign_role_values_are_left_alone_and_reported_once() {
    let mut w = World::new(settings(|_| {}), trio());
    w.member("a").role = Some("web".into());
    let plan = w.step();
    assert_eq!(w.leaders(), ["b"]);
    assert!(changes(&plan).iter().all(|(p, _)| *p != "a"));
    assert_eq!(w.member("a").role.as_deref(), Some("web"));
    let c = cond(&plan, CONFLICT);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "ForeignRoleLabel")
    );
    assert!(reasons(&plan).contains(&"ForeignRoleLabel"));
    assert!(!reasons(&w.step()).contains(&"ForeignRoleLabel"));
}

#[test]
fn no_candidates_says_why_each_member_is_not_one() {
    let mut members = trio();
    for m in &mut members {
        m.role = Some("web".into());
    }
    members[2].ready = false;
    let mut w = World::new(settings(|_| {}), members);
    let plan = w.step();
    assert!(w.leaders().is_empty());
    let note = plan.notes.iter().find(|n| n.reason == "NoCandidates");
    assert_eq!(
        note.map(|n| n.message.as_str()),
        Some(
            "waiting for a ready member (no leader: none of 3 member(s) is a candidate \
             (3 carry a foreign role label))"
        )
    );
}

#[test]
fn a_foreign_lease_is_reported() {
    let mut w = World::new(settings(|_| {}), trio());
    w.lease_foreign = true;
    let plan = w.step();
    assert_eq!(cond(&plan, CONFLICT).reason, "LeaseNotOwned");
    assert!(reasons(&plan).contains(&"LeaseNotOwned"));
}

#[test]
fn a_foreign_service_is_reported_once() {
    let mut w = World::new(settings(|_| {}), trio());
    w.foreign_services = vec!["Service g-leader".into()];
    let plan = w.step();
    let c = cond(&plan, CONFLICT);
    assert_eq!(c.reason, "ForeignService");
    assert!(c.message.contains("Service g-leader"), "{}", c.message);
    assert!(reasons(&plan).contains(&"ForeignService"));
    assert!(!reasons(&w.step()).contains(&"ForeignService"));
    // It does not stop the election.
    assert_eq!(w.status.leader.as_deref(), Some("a"));
}

#[test]
fn a_role_label_change_keeps_the_leader_and_term_and_removes_the_old_key() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    assert_eq!(w.status.role_label.as_deref(), Some(DEFAULT_ROLE_LABEL));
    w.settings = settings(|s| s.role_label = "example.com/role".into());
    // What membership reports after the change: roles read from the old key, marked stale.
    for m in &mut w.members {
        m.stale_key = true;
    }
    let plan = w.step();
    assert_eq!(plan.status.leader.as_deref(), Some("a"));
    assert_eq!(plan.status.term, 1);
    assert_eq!(plan.transition, None);
    assert_eq!(plan.writes.len(), 3, "every member is rewritten once");
    assert_eq!(
        plan.status.role_label.as_deref(),
        Some(DEFAULT_ROLE_LABEL),
        "the old key stays recorded until no pod carries it"
    );
    for m in &mut w.members {
        m.stale_key = false;
    }
    let plan = w.step();
    assert!(plan.writes.is_empty());
    assert_eq!(plan.status.role_label.as_deref(), Some("example.com/role"));
}

#[test]
fn an_abandoned_promotion_is_recorded_and_its_pod_written_before_anyone_is_promoted() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    // Status records b (term 2); a was demoted; then b is passed over by this replica.
    w.status.leader = Some("b".into());
    w.status.leader_uid = Some("uid-b".into());
    w.status.term = 2;
    w.member("a").role = Some(FOLLOWER.into());
    w.member("a").term = None;
    w.passed_over = vec!["b".into()];
    let plan = w.step();
    assert_eq!(
        changes(&plan)[0],
        ("b", PodChange::Release { role_label: true }),
        "b's resourceVersion must move before anyone is promoted"
    );
    assert_eq!(changes(&plan)[1].0, "a");
    assert_eq!(plan.status.term, 3);
    assert_eq!(
        plan.status.abandoned.len(),
        1,
        "recorded until b's version moves"
    );
    // The release moved b's version (the world applied it): nothing more to fence.
    let plan = w.step();
    assert!(plan.status.abandoned.is_empty());
}

#[test]
fn a_forged_term_on_an_unmanaged_pod_is_not_believed() {
    let mut w = World::new(settings(|_| {}), trio());
    w.member("a").term = Some(41);
    let plan = w.step();
    assert_eq!(w.leaders(), ["a"]);
    assert_eq!(plan.status.term, 1);
    assert_eq!(w.member("a").term, Some(1));
}

#[test]
fn a_failover_to_the_reserved_successor_gives_it_the_reserved_term() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    let reserved = w.status.successor.clone().expect("a successor is reserved");
    assert_eq!((reserved.pod.as_deref(), reserved.term), (Some("b"), 2));
    w.remove("a");
    let plan = w.step();
    assert_eq!(w.leaders(), ["b"]);
    assert_eq!(plan.status.term, 2);
    assert_eq!(
        plan.status
            .successor
            .as_ref()
            .map(|s| (s.pod.as_deref(), s.term)),
        Some((Some("c"), 3))
    );
    // Another pod than the reserved one: its term is recorded first, above the reservation.
    w.member("c").ready = false;
    w.member("c").ready_changed = Some(at(1));
    w.members.push(pod("d", 50));
    w.remove("b");
    w.now = at(2);
    let plan = w.step();
    assert_eq!(w.leaders(), ["d"]);
    assert_eq!(plan.status.term, 4, "3 stays c's");
}

#[test]
fn completing_a_recorded_failover_keeps_the_successor_it_reserved() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    w.remove("a");
    // The failover's status lands (b recorded, c reserved), its label does not.
    let recorded = w.decide();
    w.status = recorded.status.clone();
    let reserved = w.status.successor.clone().expect("c is reserved");
    assert_eq!(reserved.pod.as_deref(), Some("c"));
    let plan = w.step();
    assert_eq!(w.leaders(), ["b"]);
    assert_eq!(
        changes(&plan),
        [(
            "b",
            PodChange::Label {
                role: LEADER,
                term: Some(2)
            }
        )],
        "only b's label: c was not passed over"
    );
    assert!(plan.status.abandoned.is_empty());
    assert_eq!(plan.status.successor, Some(reserved));
}

#[test]
fn a_demoted_leader_whose_status_was_not_written_never_leads_again_under_its_term() {
    let mut w = World::new(settings(|_| {}), vec![pod("a", 300), pod("b", 200)]);
    w.step();
    w.step();
    assert_eq!((w.leaders(), w.status.term), (vec!["a"], 1));
    // a turns NotReady; a failover demotes it, and dies before labelling b or writing status.
    w.member("a").ready = false;
    let plan = w.decide();
    assert!(plan.labels_first, "b's term 2 is reserved");
    apply_write(&mut w.members, &plan.writes[0]);
    assert_eq!(plan.writes[0].pod, "a");
    // a recovers, and b is gone: a is the only candidate, recorded in status with term 1.
    w.member("a").ready = true;
    w.remove("b");
    let plan = w.step();
    assert_eq!(w.leaders(), ["a"]);
    assert!(
        plan.status.term > 1,
        "a new leadership: term {}",
        plan.status.term
    );
    assert_eq!(w.member("a").term, Some(plan.status.term));
    assert!(!plan.labels_first, "its term is not reserved: status first");
}

#[test]
fn a_failover_to_the_reserved_successor_labels_before_writing_status() {
    let mut w = World::new(settings(|_| {}), trio());
    let first = w.step();
    assert!(
        !first.labels_first,
        "a first election records its term first"
    );
    w.step();
    // A copy of status older than b's current version does not label first.
    let mut stale = w.status.clone();
    stale.successor.as_mut().unwrap().resource_version = Some("0".into());
    let fresh = std::mem::replace(&mut w.status, stale);
    w.remove("a");
    assert!(
        !w.decide().labels_first,
        "b has changed since the reservation"
    );
    w.status = fresh;
    let plan = w.step();
    assert!(plan.labels_first, "term 2 is already recorded for b");
    assert_eq!((w.leaders(), plan.status.term), (vec!["b"], 2));
    // A manual handoff is planned: status first.
    w.request = Some("c".into());
    let plan = w.step();
    assert!(!plan.labels_first);
    assert_eq!(w.leaders(), ["c"]);
}

#[test]
fn a_reservation_stays_on_its_pod_while_it_may_take_over() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    w.step();
    let reserved = w.status.successor.clone();
    assert_eq!(reserved.as_ref().and_then(|s| s.pod.as_deref()), Some("b"));
    // A pod joins; the rotation order changes, the reservation does not, and nothing is fenced.
    w.members.push(pod("d", 400));
    let plan = w.step();
    assert_eq!(plan.status.successor, reserved);
    assert!(plan.status.abandoned.is_empty());
    // b is passed over for failed promotions: it loses the reservation and is fenced.
    w.passed_over = vec!["b".into()];
    let plan = w.step();
    assert_ne!(
        plan.status
            .successor
            .as_ref()
            .and_then(|s| s.uid.as_deref()),
        Some("uid-b")
    );
    assert_eq!(changes(&plan)[0].0, "b", "b's version moves first");
}

#[test]
fn a_leader_on_a_silent_node_is_replaced_as_node_lost_and_demoted_first() {
    let mut w = World::new(settings(|_| {}), trio());
    w.step();
    assert_eq!(w.leaders(), ["a"]);
    // Watched, silent for less than nodeLossSeconds (15 s): kept. (The node Lease watch wakes
    // the group when the deadline passes; the decision sets no timer of its own.)
    w.member("a").node_silence = Some(std::time::Duration::from_secs(9));
    let plan = w.step();
    assert_eq!(plan.transition, None);
    w.member("a").node_silence = Some(std::time::Duration::from_secs(15));
    let plan = w.step();
    assert_eq!(plan.transition, Some(TransitionReason::NodeLost));
    assert_eq!(
        plan.status.last_transition.as_ref().map(|t| t.reason),
        Some(TransitionReason::NodeLost)
    );
    assert_eq!(
        changes(&plan)[0],
        (
            "a",
            PodChange::Label {
                role: FOLLOWER,
                term: None
            }
        ),
        "break before make: the unreachable leader is demoted first"
    );
    assert_eq!(w.leaders(), ["b"]);
    // The node comes back: nothing moves.
    w.member("a").node_silence = Some(std::time::Duration::ZERO);
    assert_eq!(w.step().transition, None);
    assert_eq!(w.leaders(), ["b"]);
}

#[test]
fn a_pod_on_a_lost_node_is_no_candidate_and_an_unwatched_node_is_never_lost() {
    let mut w = World::new(settings(|s| s.node_loss_seconds = 20), trio());
    // b would be next; its node has been silent for 20 s.
    w.member("b").node_silence = Some(std::time::Duration::from_secs(20));
    w.step();
    w.member("a").ready = false;
    w.member("a").ready_changed = Some(at(1));
    w.now = at(1);
    let plan = w.step();
    assert_eq!(plan.transition, Some(TransitionReason::Failover));
    assert_eq!(w.leaders(), ["c"], "b's node is lost");
    // No watch answering says nothing: c stays, whatever the time.
    w.member("c").node_silence = None;
    w.now = at(3600);
    assert_eq!(w.step().transition, None);
    assert_eq!(w.leaders(), ["c"]);
}
