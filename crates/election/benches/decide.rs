//! `decide` on a group of 3 and of 100 members: a settled group (nothing to write), and a
//! failover (the leader terminating, a successor to choose and label).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};
use podium_api::{ElectionGroupSpec, ElectionGroupStatus, LEADER};
use podium_election::validation::{Settings, validate};
use podium_election::{Member, Observation, Plan, PodChange, decide};

fn at(secs: i64) -> Timestamp {
    "2026-11-22T10:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_secs(secs)
}

fn settings() -> Settings {
    let spec: ElectionGroupSpec =
        serde_json::from_value(serde_json::json!({"selector": {"matchLabels": {"app": "x"}}}))
            .unwrap();
    validate("g", &spec).unwrap()
}

/// `n` Ready pods, created a second apart, none labelled yet.
fn members(n: usize) -> Vec<Member> {
    let pod = |i: usize| {
        let created = at(i as i64 - 1000);
        let (name, uid) = (format!("p{i}"), format!("uid-{i}"));
        Member {
            name,
            uid,
            resource_version: Some("1".into()),
            created,
            ready: true,
            ready_changed: Some(created),
            terminating: false,
            priority: 0,
            role: None,
            stale_key: false,
            term: None,
            group: None,
            node: Some(format!("node-{}", i % 3)),
            node_silence: None,
        }
    };
    (0..n).map(pod).collect()
}

/// A group as the reconciler leaves it: its plans applied until one writes nothing.
struct Group {
    settings: Settings,
    members: Vec<Member>,
    status: ElectionGroupStatus,
}

impl Group {
    fn observation(&self, now: Timestamp) -> Observation<'_> {
        Observation {
            group: "g",
            generation: Some(1),
            settings: &self.settings,
            status: &self.status,
            members: &self.members,
            departed: &[],
            conflicts: &[],
            handoff_request: None,
            passed_over: &[],
            lease_foreign: false,
            foreign_services: &[],
            now,
        }
    }

    /// Stores the plan's status and its labels, each write a new resourceVersion.
    fn apply(&mut self, plan: &Plan, version: &mut u64) {
        for w in &plan.writes {
            let PodChange::Label { role, term } = &w.change else {
                panic!("no pod leaves a group here: {w:?}");
            };
            *version += 1;
            let m = self.members.iter_mut().find(|m| m.name == w.pod).unwrap();
            (m.role, m.term, m.group) = (Some(role.to_string()), *term, Some("g".into()));
            m.resource_version = Some(version.to_string());
        }
        self.status = plan.status.clone();
    }

    fn settled(n: usize) -> Self {
        let mut g = Group {
            settings: settings(),
            members: members(n),
            status: ElectionGroupStatus::default(),
        };
        let mut version = 1;
        for _ in 0..10 {
            let plan = decide(&g.observation(at(0)));
            if plan.writes.is_empty() && plan.status == g.status {
                break;
            }
            g.apply(&plan, &mut version);
        }
        let leaders = g
            .members
            .iter()
            .filter(|m| m.role.as_deref() == Some(LEADER));
        assert_eq!(leaders.count(), 1, "the group settled on one leader");
        g
    }
}

fn bench_decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for n in [3, 100] {
        let settled = Group::settled(n);
        group.bench_with_input(BenchmarkId::new("settled", n), &settled, |b, g| {
            b.iter(|| decide(black_box(&g.observation(at(5)))))
        });
        let mut failing = Group::settled(n);
        let leader = failing.status.leader.clone().unwrap();
        let m = failing
            .members
            .iter_mut()
            .find(|m| m.name == leader)
            .unwrap();
        m.terminating = true;
        let plan = decide(&failing.observation(at(5)));
        assert!(!plan.writes.is_empty(), "a terminating leader is replaced");
        group.bench_with_input(
            BenchmarkId::new("leader_terminating", n),
            &failing,
            |b, g| b.iter(|| decide(black_box(&g.observation(at(5))))),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
