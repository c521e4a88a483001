//! A model of the real world around `decide`: an API server with resourceVersions and
//! preconditions, two controllers whose caches lag (one of them arbitrarily stale, like a replica
//! resumed after a pause), writes that fail or stop half-way (a crash between two writes), and
//! pods that churn. The checks hold across every state the "API server" passes through.

use std::collections::HashMap;

use super::tests::{at, settings};
use super::*;
use crate::order::Phase;
use podium_api::{Handoff, HandoffMode, LEADER};
use proptest::prelude::*;

const GROUP: &str = "g";

#[derive(Debug, Clone)]
struct Pod {
    member: Member,
    rv: u64,
}

#[derive(Debug, Clone)]
struct Group {
    status: ElectionGroupStatus,
    request: Option<String>,
    rv: u64,
}

/// One state of the API server.
#[derive(Debug, Clone)]
struct State {
    pods: Vec<Pod>,
    group: Group,
}

/// A write as the reconciler makes it, with the precondition it carries.
#[derive(Debug, Clone)]
enum Step {
    Status(Box<ElectionGroupStatus>, u64),
    /// Conditional on the given version, or (`None`) on the one this plan's status write produced.
    ClearRequest(Option<u64>),
    Pod(PodWrite),
}

struct Server {
    state: State,
    history: Vec<State>,
    rv: u64,
    uids: u64,
}

impl Server {
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn snapshot(&mut self) {
        self.history.push(self.state.clone());
        if self.history.len() > 40 {
            self.history.remove(0);
        }
    }

    /// Applies one write if its precondition holds; false when it conflicts.
    fn write(&mut self, step: &Step) -> bool {
        let rv = self.rv + 1;
        let ok = match step {
            Step::Status(status, expect) => {
                let ok = self.state.group.rv == *expect;
                if ok {
                    self.state.group.status = (**status).clone();
                    self.state.group.rv = rv;
                }
                ok
            }
            Step::ClearRequest(expect) => {
                let ok = Some(self.state.group.rv) == *expect;
                if ok {
                    self.state.group.request = None;
                    self.state.group.rv = rv;
                }
                ok
            }
            Step::Pod(w) => {
                let found = self.state.pods.iter_mut().find(|p| {
                    p.member.name == w.pod
                        && p.member.uid == w.uid
                        && Some(p.rv.to_string()) == w.resource_version
                });
                match found {
                    Some(p) => {
                        match &w.change {
                            PodChange::Label { role, term } => {
                                p.member.role = Some(role.to_string());
                                p.member.term = *term;
                                p.member.group = Some(GROUP.into());
                            }
                            PodChange::Release { role_label } => {
                                if *role_label {
                                    p.member.role = None;
                                }
                                p.member.term = None;
                                p.member.group = None;
                            }
                        }
                        p.rv = rv;
                        true
                    }
                    None => false,
                }
            }
        };
        if ok {
            self.rv = rv;
            self.snapshot();
        }
        ok
    }
}

/// What a controller does from a view of the cluster, in the order `Plan::phases` gives.
fn plan_from(
    view: &State,
    settings: &Settings,
    now: Timestamp,
    passed_over: &[String],
) -> Vec<Step> {
    let members: Vec<Member> = view
        .pods
        .iter()
        .map(|p| Member {
            resource_version: Some(p.rv.to_string()),
            ..p.member.clone()
        })
        .collect();
    let plan = decide(&Observation {
        group: GROUP,
        generation: Some(1),
        settings,
        status: &view.group.status,
        members: &members,
        departed: &[],
        conflicts: &[],
        handoff_request: view.group.request.as_deref(),
        passed_over,
        lease_foreign: false,
        foreign_services: &[],
        now,
    });
    // The operator's order, from the plan itself. (The operator also pins the successor at the
    // version its write produced; this model keeps the decided pin, which only makes the next
    // failover write status first.)
    let mut steps = Vec::new();
    let mut rv = Some(view.group.rv);
    for phase in plan.phases() {
        match phase {
            Phase::Status => {
                if plan.status != view.group.status {
                    steps.push(Step::Status(Box::new(plan.status.clone()), view.group.rv));
                    rv = None;
                }
            }
            Phase::ClearHandoffRequest => {
                if plan.clear_handoff_request {
                    steps.push(Step::ClearRequest(rv));
                }
            }
            // The model has no Lease mirror and no owned route: neither moves a role or a term.
            Phase::LeaseMirror | Phase::Endpoints => {}
            Phase::SuccessorFollower | Phase::Leadership | Phase::Followers => {
                steps.extend(plan.pod_writes(*phase).into_iter().cloned().map(Step::Pod))
            }
        }
    }
    steps
}

/// The group writes after a status write are conditional on the version it produced.
fn chain(plan: &mut [Step], rv: u64) {
    for s in plan {
        if let Step::ClearRequest(expect @ None) = s {
            *expect = Some(rv);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add,
    Delete(u8),
    Ready(u8, bool),
    Terminate(u8),
    Tick(u8),
    Handoff(Option<u8>),
    /// A controller decides from a view `lag` states old (0: the current one).
    Decide {
        actor: u8,
        lag: u8,
        /// How much older its copy of the group is (pod and group caches are separate watches).
        group_lag: u8,
    },
    /// A controller makes its next write.
    Write(u8),
    /// A controller crashes or its write fails: the rest of its plan is dropped.
    Crash(u8),
    /// A controller passes a pod over after failed promotions (its own memory, not the cluster's).
    PassOver(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Add),
        1 => (0u8..6).prop_map(Op::Delete),
        2 => (0u8..6, any::<bool>()).prop_map(|(i, r)| Op::Ready(i, r)),
        1 => (0u8..6).prop_map(Op::Terminate),
        2 => (1u8..20).prop_map(Op::Tick),
        1 => proptest::option::of(0u8..6).prop_map(Op::Handoff),
        4 => (0u8..2, prop_oneof![3 => Just(0u8), 1 => 1u8..30], prop_oneof![3 => Just(0u8), 1 => 1u8..30])
            .prop_map(|(actor, lag, extra)| Op::Decide { actor, lag, group_lag: lag.saturating_add(extra) }),
        8 => (0u8..2).prop_map(Op::Write),
        1 => (0u8..2).prop_map(Op::Crash),
        1 => (0u8..2, 0u8..6).prop_map(|(a, i)| Op::PassOver(a, i)),
    ]
}

/// Everything the checks remember across states.
#[derive(Default)]
struct Checker {
    owner_of_term: HashMap<i64, String>,
    highest_term: i64,
    status_term: i64,
    /// (uid, term) of the leaders in the previous state.
    leading: Vec<(String, Option<i64>)>,
}

impl Checker {
    fn check(&mut self, s: &State, bbm: bool) -> Result<(), TestCaseError> {
        let leaders = leaders(s);
        if bbm {
            prop_assert!(leaders.len() <= 1, "two leaders: {:?}", names(&leaders));
        }
        for l in &leaders {
            let Some(t) = l.term else { continue };
            let was_leading = self.leading.iter().any(|(u, _)| *u == l.uid);
            // Leading again after a demotion is a new leadership: it needs a new term.
            if !was_leading && self.owner_of_term.contains_key(&t) {
                prop_assert!(false, "{} leads again under its old term {}", l.name, t);
            }
            match self.owner_of_term.get(&t) {
                Some(uid) => prop_assert_eq!(uid, &l.uid, "term {} carried by two pods", t),
                None => {
                    prop_assert!(
                        t > self.highest_term,
                        "new leadership {} with term {} not above {}",
                        l.name,
                        t,
                        self.highest_term
                    );
                    self.owner_of_term.insert(t, l.uid.clone());
                    self.highest_term = t;
                }
            }
        }
        self.leading = leaders.iter().map(|l| (l.uid.clone(), l.term)).collect();
        prop_assert!(s.group.status.term >= self.status_term, "status.term fell");
        self.status_term = s.group.status.term;
        Ok(())
    }
}

fn leaders(s: &State) -> Vec<&Member> {
    s.pods
        .iter()
        .map(|p| &p.member)
        .filter(|m| m.role.as_deref() == Some(LEADER))
        .collect()
}

fn names(ms: &[&Member]) -> Vec<String> {
    ms.iter().map(|m| m.name.clone()).collect()
}

fn run(settings: Settings, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let bbm = settings.mode == HandoffMode::BreakBeforeMake;
    let empty = State {
        pods: vec![],
        group: Group {
            status: ElectionGroupStatus::default(),
            request: None,
            rv: 1,
        },
    };
    let mut server = Server {
        state: empty.clone(),
        history: vec![empty],
        rv: 1,
        uids: 0,
    };
    let mut plans: [Vec<Step>; 2] = [vec![], vec![]];
    let mut passed: [Vec<String>; 2] = [vec![], vec![]];
    let mut clock = 0i64;
    let mut checker = Checker::default();
    let trace = std::env::var_os("PODIUM_MODEL_TRACE").is_some();
    for op in ops {
        let shown = format!("{op:?}");
        world_op(
            &mut server,
            &mut plans,
            &mut passed,
            &settings,
            &mut clock,
            op,
        );
        if trace {
            show(&shown, &server.state, &plans);
        }
        checker.check(&server.state, bbm)?;
    }
    // The faults stop: one controller with a current view settles the group.
    for _ in 0..12 {
        let mut steps = plan_from(&server.state, &settings, at(clock), &[]);
        if steps.is_empty() {
            break;
        }
        while !steps.is_empty() {
            let s = steps.remove(0);
            if !server.write(&s) {
                break;
            }
            if matches!(s, Step::Status(..)) {
                chain(&mut steps, server.state.group.rv);
            }
            checker.check(&server.state, bbm)?;
        }
    }
    settled(&server.state, &settings, at(clock))
}

/// One line per op and the state after it (`PODIUM_MODEL_TRACE=1`, for reading a failure).
fn show(op: &str, s: &State, plans: &[Vec<Step>; 2]) {
    let pods: Vec<String> = s
        .pods
        .iter()
        .map(|p| {
            let m = &p.member;
            format!(
                "{}@{}{}{}{}{}",
                m.name,
                p.rv,
                if m.ready { "" } else { "!r" },
                if m.terminating { "!t" } else { "" },
                m.role
                    .as_deref()
                    .map_or("", |r| if r == LEADER { ":L" } else { ":f" }),
                m.term.map_or(String::new(), |t| format!("#{t}"))
            )
        })
        .collect();
    let st = &s.group.status;
    eprintln!(
        "{op}\n   pods {pods:?}\n   group@{} leader={:?} term={} successor={:?} abandoned={:?} pending plans={:?}",
        s.group.rv,
        st.leader,
        st.term,
        st.successor
            .as_ref()
            .map(|x| (&x.pod, x.term, &x.resource_version)),
        st.abandoned,
        plans
            .iter()
            .map(|p| p
                .iter()
                .map(|w| match w {
                    Step::Status(st, rv) => format!(
                        "status@{rv}(leader={:?},term={},succ={:?})",
                        st.leader,
                        st.term,
                        st.successor.as_ref().map(|x| (&x.pod, x.term))
                    ),
                    Step::ClearRequest(_) => "clear".to_string(),
                    Step::Pod(w) => format!("{}:{:?}", w.pod, w.change),
                })
                .collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
}

/// After the faults: a leader exactly when a candidate exists, agreeing with status.
fn settled(s: &State, settings: &Settings, now: Timestamp) -> Result<(), TestCaseError> {
    prop_assert!(
        plan_from(s, settings, now, &[]).is_empty(),
        "did not settle"
    );
    let leaders = leaders(s);
    let candidate = s
        .pods
        .iter()
        .any(|p| p.member.ready && !p.member.terminating);
    if candidate {
        prop_assert_eq!(leaders.len(), 1, "one leader once settled");
        prop_assert_eq!(leaders[0].term, Some(s.group.status.term));
        prop_assert_eq!(
            s.group.status.leader.as_deref(),
            Some(leaders[0].name.as_str())
        );
    }
    Ok(())
}

fn world_op(
    server: &mut Server,
    plans: &mut [Vec<Step>; 2],
    passed: &mut [Vec<String>; 2],
    settings: &Settings,
    clock: &mut i64,
    op: Op,
) {
    let pod_mut = |server: &mut Server, i: u8| {
        let n = server.state.pods.len();
        (n > 0).then(|| usize::from(i) % n)
    };
    match op {
        Op::Add => {
            server.uids += 1;
            let rv = server.bump();
            let name = format!("p{}", server.uids);
            server.state.pods.push(Pod {
                member: Member {
                    name: name.clone(),
                    uid: format!("uid-{}", server.uids),
                    resource_version: None,
                    created: at(*clock),
                    ready: !server.uids.is_multiple_of(3),
                    ready_changed: Some(at(*clock)),
                    terminating: false,
                    priority: 0,
                    role: None,
                    stale_key: false,
                    term: None,
                    group: None,
                    node: None,
                    node_silence: None,
                },
                rv,
            });
        }
        Op::Delete(i) => {
            if let Some(k) = pod_mut(server, i) {
                server.bump();
                server.state.pods.remove(k);
            }
        }
        Op::Ready(i, r) => {
            if let Some(k) = pod_mut(server, i)
                && server.state.pods[k].member.ready != r
            {
                let rv = server.bump();
                let p = &mut server.state.pods[k];
                p.member.ready = r;
                p.member.ready_changed = Some(at(*clock));
                p.rv = rv;
            }
        }
        Op::Terminate(i) => {
            if let Some(k) = pod_mut(server, i)
                && !server.state.pods[k].member.terminating
            {
                let rv = server.bump();
                let p = &mut server.state.pods[k];
                p.member.terminating = true;
                p.rv = rv;
            }
        }
        Op::Tick(s) => *clock += i64::from(s),
        Op::Handoff(t) => {
            let rv = server.bump();
            server.state.group.request = Some(t.map_or("any".into(), |i| format!("p{i}")));
            server.state.group.rv = rv;
        }
        Op::Decide {
            actor,
            lag,
            group_lag,
        } => {
            let h = &server.history;
            let mut view = h[h.len().saturating_sub(1 + usize::from(lag))].clone();
            view.group = h[h.len().saturating_sub(1 + usize::from(group_lag))]
                .group
                .clone();
            plans[usize::from(actor)] =
                plan_from(&view, settings, at(*clock), &passed[usize::from(actor)]);
        }
        Op::Write(actor) => {
            let plan = &mut plans[usize::from(actor)];
            if !plan.is_empty() {
                let step = plan.remove(0);
                // A precondition that fails ends the plan: the reconciler re-reads and decides again.
                if !server.write(&step) {
                    plan.clear();
                } else if matches!(step, Step::Status(..)) {
                    chain(plan, server.state.group.rv);
                }
            }
        }
        Op::Crash(actor) => plans[usize::from(actor)].clear(),
        Op::PassOver(actor, i) => {
            if let Some(k) = pod_mut(server, i) {
                let name = server.state.pods[k].member.name.clone();
                passed[usize::from(actor)].push(name);
            }
        }
    }
    if !matches!(
        op,
        Op::Write(_) | Op::Decide { .. } | Op::Crash(_) | Op::Tick(_)
    ) {
        server.snapshot();
    }
}

fn model_cases() -> u32 {
    std::env::var("PODIUM_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

proptest! {
    // `PODIUM_MODEL_CASES` runs a longer search (`make model`).
    #![proptest_config(ProptestConfig { cases: model_cases(), ..ProptestConfig::default() })]

    #[test]
    fn stale_writers_crashes_and_churn_never_break_the_invariants(
        ops in proptest::collection::vec(op(), 1..120),
        make_before_break in any::<bool>(),
        tolerance in 0i64..2,
    ) {
        let mode = if make_before_break { HandoffMode::MakeBeforeBreak } else { HandoffMode::BreakBeforeMake };
        let s = settings(|s| {
            s.failover_tolerance_seconds = tolerance * 10;
            s.handoff = Some(Handoff { schedule: Some("@every 15s".into()), mode, ..Default::default() });
        });
        run(s, ops)?;
    }
}

mod cases;
