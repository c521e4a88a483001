//! `make chaos`: a seeded fault injector and an independent invariant checker, in the
//! spirit of etcd's robustness tests.
//!
//! Three operator replicas (Lease election, 4 s Lease) manage several ElectionGroups of kwok
//! pods on a cluster of their own (`PODIUM_CLUSTER=chaos`), while faults drawn from a
//! printed seed hit them: kill -9 and SIGSTOP of the active replica, API server and etcd
//! restarts, readiness flapping, leader deletion, pod churn, handoff storms and the silence
//! of a node whose kubelet the harness plays (two groups keep a member there). Three groups
//! have `spec.service`, so podium also writes their leader Service's EndpointSlice (the owned
//! route). The checker watches pods, groups and EndpointSlices itself and checks every state it
//! sees:
//!
//! 1. BreakBeforeMake groups never have two pods labelled leader.
//! 2. No term is carried as leader by two different pods (UIDs) of a group.
//! 3. A new leader's term is above every term seen before in its group; `status.term`
//!    never goes down.
//! 4. After the faults stop (and a replica is active again), every group with a Ready
//!    candidate is settled within 2 s: one leader, and status names it and its term.
//! 5. At the end, pods no group selects carry none of podium's labels or annotations.
//! 6. The harness's own label, annotation and finalizer are never changed.
//! 7. No replica panics.
//! 8. A leader on a silent node is replaced, reason NodeLost, between `nodeLossSeconds` and
//!    `nodeLossSeconds` + 3 s after the node's last renewal, and does not lead again once the
//!    node is back (`node_silence.rs` says when this is judged).
//! 9. The owned route of a BreakBeforeMake group never lists two distinct addresses of one
//!    address family at once, and a MakeBeforeBreak group's never more than two. It counts
//!    every slice labelled with the group's Service (`kubernetes.io/service-name`), whoever
//!    wrote it, and every endpoint's addresses, Ready or not: kube-proxy takes all such slices,
//!    and falls back to serving and terminating endpoints when none is Ready, so an unready old
//!    leader still draws traffic. Per family, because a dual-stack leader has one of each.
//! 10. Where and when 4 is judged (within 2 s of a replica being active again after the
//!     faults), every group with `spec.service` had, at some instant, slices listing exactly
//!     the addresses of the pod `status.leader` names (none when it names none), every
//!     endpoint's targetRef naming that pod, and every slice labelled as podium's and the
//!     group's.
//!
//! Watch gaps: the checker's watches resume from the last resourceVersion they saw, so an
//! ended or broken watch loses nothing. After an API server restart the new server's watch
//! cache no longer has that version (410 Gone); the watch then relists, and the time from
//! the break to the relist is recorded as a gap in the results. The relisted state is
//! checked like any other, and the per-group records (terms seen, their owners, current
//! leaders) survive the gap, so whatever a gap hid that is still visible afterwards — a
//! reused or lower term, two leaders, changed foreign metadata — is still reported; only a
//! state that came and went inside a gap (e.g. two leaders for a few milliseconds) can be
//! missed. A relist of the slices is judged as one state, never piecewise. A watch that cannot
//! be restored for two minutes fails the run.
//!
//! Proof of work: the results count, per group with a service, the states of its slices that
//! invariant 9 was checked on; the run fails when a group's slices never listed an address,
//! since then invariants 9 and 10 held on nothing.
//!
//! Environment: `CHAOS_SEED` (replay), `CHAOS_FAULTS` (default 200), `CHAOS_MINUTES`
//! (time limit of the whole run, default 20), `CHAOS_KINDS` (comma-separated fault names
//! to draw from, as the results name them — `kill-active,node-silence` —, default all).

mod control_plane;
mod faults;
mod history;
mod node_silence;
mod replicas;
mod report;
mod rng;
mod route;
mod setup;
mod watch;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;

use control_plane::ControlPlane;
use faults::Fault;
use history::{GROUP, History, TERM};
use node_silence::Silence;
use replicas::Replicas;
use report::{Results, Stats};
use rng::Rng;
use setup::{APP, World};
use watch::Shared;

/// How long the injector waits for the groups to settle after a fault.
const SETTLE_CAP: Duration = Duration::from_secs(20);
/// Invariant 4's bound.
const FINAL_BOUND: Duration = Duration::from_secs(2);
/// Operator replicas.
const REPLICAS: usize = 3;

/// The run's settings, from the environment.
struct Settings {
    seed: u64,
    faults: usize,
    limit: Duration,
    kinds: Vec<String>,
}

impl Settings {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let parse = |name: &str, v: String| -> u64 {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        };
        let settings = Self {
            seed: var("CHAOS_SEED").map_or_else(rng::fresh_seed, |v| parse("CHAOS_SEED", v)),
            faults: var("CHAOS_FAULTS").map_or(200, |v| parse("CHAOS_FAULTS", v) as usize),
            kinds: var("CHAOS_KINDS")
                .map(|v| v.split(',').map(|k| k.trim().to_string()).collect())
                .unwrap_or_default(),
            limit: Duration::from_secs(
                60 * var("CHAOS_MINUTES").map_or(20, |v| parse("CHAOS_MINUTES", v)),
            ),
        };
        Fault::check_kinds(&settings.kinds);
        settings
    }
}

/// Everything one run acts on.
pub struct Run {
    world: World,
    replicas: Replicas,
    control: ControlPlane,
    leases: Api<Lease>,
    rng: Rng,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
    barrier: u64,
    injected: BTreeMap<&'static str, usize>,
    errors: BTreeMap<&'static str, usize>,
    settles: Vec<(Fault, u64)>,
    unsettled: Vec<String>,
    crashes: usize,
    silences: Vec<Silence>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the API server: run with `make chaos`, on a cluster of its own"]
async fn chaos() {
    let settings = Settings::from_env();
    println!(
        "chaos: seed {} ({} faults); replay with CHAOS_SEED={} CHAOS_FAULTS={} make chaos",
        settings.seed, settings.faults, settings.seed, settings.faults
    );
    let mut run = Run::start(&settings).await;
    run.inject_all(&settings).await;
    run.final_checks().await;
    let results = run.results(&settings);
    run.world.teardown().await;
    let records = std::mem::take(&mut run.shared.lock().records);
    report::write(&results, &records).expect("write target/chaos");
    let summary = format!(
        "seed {}: {} of {} faults, {} violations, {} gaps, {} slice states checked; see target/chaos/report.md",
        settings.seed,
        results.faults.values().sum::<usize>(),
        settings.faults,
        results.violations.len(),
        results.gaps.len(),
        results.slice_states_checked
    );
    println!("chaos: {summary}");
    if let Some(e) = &results.checker_failure {
        panic!("the checker lost its watches ({e}), {summary}");
    }
    assert!(
        results.violations.is_empty(),
        "invariants broken, {summary}"
    );
    assert!(
        results.faults.values().sum::<usize>() >= settings.faults,
        "too few faults ran, {summary}"
    );
    let idle: Vec<&String> = results
        .slice_states
        .iter()
        .filter(|(_, s)| s.with_address == 0)
        .map(|(g, _)| g)
        .collect();
    assert!(
        !results.slice_states.is_empty() && idle.is_empty(),
        "the route invariants judged nothing: no group has a service, or the slices of {idle:?} \
         never listed an address ({:?}), {summary}",
        results.slice_states
    );
}

impl Run {
    /// Sets up the world, the checker's watches and the replicas, and waits until every
    /// group is settled.
    async fn start(settings: &Settings) -> Self {
        let control = ControlPlane::from_env();
        let defs = setup::groups();
        let world = World::new(defs.clone()).await;
        let _ = std::fs::remove_dir_all(replicas::log_dir());
        let started = Instant::now();
        let shared = Arc::new(Shared {
            history: Mutex::new(History::new(started, &defs)),
            changed: tokio::sync::Notify::new(),
        });
        let tasks = vec![
            tokio::spawn(watch::follow(world.pods(), shared.clone())),
            tokio::spawn(watch::follow(world.groups(), shared.clone())),
            tokio::spawn(watch::follow(world.slices(), shared.clone())),
        ];
        let replicas = Replicas::start(&world.ns.name, REPLICAS);
        world.populate().await.expect("create groups and pods");
        let leases = world.ns.api::<Lease>();
        let run = Self {
            world,
            replicas,
            control,
            leases,
            rng: Rng::new(settings.seed),
            shared,
            tasks,
            started,
            barrier: 0,
            injected: BTreeMap::new(),
            errors: BTreeMap::new(),
            settles: Vec::new(),
            unsettled: Vec::new(),
            crashes: 0,
            silences: Vec::new(),
        };
        assert!(
            run.wait_settled(Duration::from_secs(90)).await.is_some(),
            "the groups did not settle before any fault: {}",
            run.describe_all()
        );
        run
    }

    /// Injects faults until the count is reached or the time limit nears.
    async fn inject_all(&mut self, settings: &Settings) {
        // Leave time for the final checks and the teardown.
        let deadline = self.started + settings.limit.saturating_sub(Duration::from_secs(60));
        let mut n = 0;
        while self.injected.values().sum::<usize>() < settings.faults && Instant::now() < deadline {
            n += 1;
            let fault = Fault::choose(&mut self.rng, &settings.kinds);
            self.one_fault(n, fault).await;
            if self.shared.lock().fatal.is_some() {
                // The checker is blind: stop, but still write what it saw.
                return;
            }
            tokio::time::sleep(self.rng.millis(0, 300)).await;
        }
    }

    /// Injects one fault, heals the replicas, and measures how long the groups take to
    /// settle afterwards.
    async fn one_fault(&mut self, n: usize, fault: Fault) {
        let label = format!("#{n} {}", fault.name());
        println!(
            "chaos: {:>7.1} s {label}",
            self.started.elapsed().as_secs_f64()
        );
        self.shared.lock().fault = label.clone();
        let outcome = self.inject(fault).await;
        self.crashes += self.replicas.heal();
        match outcome {
            Ok(()) => *self.injected.entry(fault.name()).or_default() += 1,
            Err(e) => {
                println!("chaos: {label} failed part-way: {e}");
                *self.errors.entry(fault.name()).or_default() += 1;
                // The API server may still be coming back from an earlier fault.
                let _ = self.wait_api_ready(Duration::from_secs(60)).await;
            }
        }
        let done = Instant::now();
        self.wait_barrier().await;
        match self.wait_settled(SETTLE_CAP).await {
            Some(at) => self
                .settles
                .push((fault, at.duration_since(done).as_millis() as u64)),
            None => {
                println!(
                    "chaos: {label} not settled after {SETTLE_CAP:?}: {}",
                    self.describe_all()
                );
                self.unsettled.push(label);
            }
        }
    }

    /// Writes a barrier and waits until every watch has seen it: then every write the fault
    /// made is in the checker's state.
    async fn wait_barrier(&mut self) {
        self.barrier += 1;
        let n = self.barrier;
        for _ in 0..50 {
            if self.world.barrier(n).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let seen = self
            .wait_history(Duration::from_secs(30), |h| {
                h.barrier_pod >= n && h.barrier_group >= n && h.routes.barrier >= n
            })
            .await;
        if seen.is_none() {
            self.shared
                .lock()
                .fatal
                .get_or_insert(format!("the watches did not see barrier {n} within 30 s"));
        }
    }

    /// Waits until every group is settled; returns when.
    async fn wait_settled(&self, timeout: Duration) -> Option<Instant> {
        self.wait_history(timeout, History::all_settled).await
    }

    /// Waits until `ok` holds on the history (re-checked on every change); returns when.
    async fn wait_history(
        &self,
        timeout: Duration,
        ok: impl Fn(&History) -> bool,
    ) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            if ok(&self.shared.lock()) {
                return Some(Instant::now());
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return None;
            }
            // A bounded wait: a change could slip in between the check and `notified`.
            let _ = tokio::time::timeout(remaining.min(Duration::from_millis(200)), changed).await;
        }
    }

    fn describe_all(&self) -> String {
        let h = self.shared.lock();
        self.world
            .defs
            .iter()
            .map(|d| format!("{}: {}", d.name, h.describe(d.name)))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Invariants 4, 5, 7 and 10, once the faults have stopped.
    async fn final_checks(&mut self) {
        self.shared.lock().fault = "after the faults".into();
        self.crashes += self.replicas.heal();
        let _ = self.wait_api_ready(Duration::from_secs(60)).await;
        let healed = jiff::Timestamp::now();
        let active = self
            .replicas
            .wait_active(&self.leases, healed, Duration::from_secs(30))
            .await;
        let t0 = Instant::now();
        if active.is_none() {
            self.shared.lock().violate(
                4,
                "",
                "active",
                "no replica held the Lease 30 s after the faults stopped".into(),
            );
        }
        tokio::time::sleep(FINAL_BOUND).await;
        self.check_final_leaders(t0);
        self.check_final_routes(t0);
        self.check_strays().await;
        for line in self.replicas.panics() {
            self.shared
                .lock()
                .violate(7, "", &line, format!("panic in the log: {line}"));
        }
    }

    /// Invariant 4: every group with a Ready candidate was settled at some instant within
    /// [`FINAL_BOUND`] of a replica becoming active.
    fn check_final_leaders(&self, t0: Instant) {
        let mut h = self.shared.lock();
        for def in &self.world.defs {
            if h.has_candidate(def.name) && !h.settled_since(def.name, t0) {
                let detail = format!(
                    "not settled within {FINAL_BOUND:?} after a replica was active again: {}",
                    h.describe(def.name)
                );
                h.violate(4, def.name, "final", detail);
            }
        }
    }

    /// Invariant 10: every route listed exactly its group's leader at some instant within
    /// [`FINAL_BOUND`] of a replica becoming active, as invariant 4 judges the leaders.
    fn check_final_routes(&self, t0: Instant) {
        let mut h = self.shared.lock();
        for group in h.routes.groups() {
            if !h.routes.right_since(&group, t0) {
                let detail = format!(
                    "the route did not list exactly the leader within {FINAL_BOUND:?} after a replica was active again: {}; {}",
                    h.routes.describe(&group),
                    h.describe(&group)
                );
                h.violate(10, &group, "final", detail);
            }
        }
    }

    /// Invariant 5: pods no group selects lose podium's labels and annotations (given the
    /// same bound as the leaders, measured from now).
    async fn check_strays(&self) {
        let groups: Vec<&str> = self.world.defs.iter().map(|d| d.name).collect();
        let roles: Vec<&str> = self.world.defs.iter().map(|d| d.role_label).collect();
        let dirty = |h: &History| -> Vec<String> {
            h.pods()
                .filter(|p| {
                    !p.labels()
                        .get(APP)
                        .is_some_and(|a| groups.contains(&a.as_str()))
                })
                .filter(|p| podium_marks(p, &roles))
                .map(|p| p.name_any())
                .collect()
        };
        let clean = self
            .wait_history(FINAL_BOUND, |h| dirty(h).is_empty())
            .await;
        if clean.is_none() {
            let mut h = self.shared.lock();
            for pod in dirty(&h) {
                h.violate(
                    5,
                    "",
                    &pod,
                    format!("{pod} is selected by no group but carries podium's marks"),
                );
            }
        }
    }

    fn results(&mut self, settings: &Settings) -> Results {
        for t in &self.tasks {
            t.abort();
        }
        let h = self.shared.lock();
        let slice_states = h.routes.seen();
        let all: Vec<u64> = self.settles.iter().map(|(_, ms)| *ms).collect();
        let mut by_kind: BTreeMap<&'static str, Vec<u64>> = BTreeMap::new();
        for (f, ms) in &self.settles {
            by_kind.entry(f.name()).or_default().push(*ms);
        }
        Results {
            seed: settings.seed,
            faults_requested: settings.faults,
            duration_s: self.started.elapsed().as_secs_f64(),
            faults: self.injected.clone(),
            fault_errors: self.errors.clone(),
            violations: h.violations.clone(),
            settle_ms: Stats::of(&all),
            settle_ms_by_kind: by_kind.iter().map(|(k, v)| (*k, Stats::of(v))).collect(),
            unsettled: self.unsettled.clone(),
            gaps: h.gaps.clone(),
            watch_resumes: h.resumes,
            events: h.events,
            replica_crashes: self.crashes,
            checker_failure: h.fatal.clone(),
            node_silences: self.silences.clone(),
            slice_states_checked: slice_states.values().map(|s| s.states).sum(),
            slice_states,
        }
    }
}

/// The pod carries a podium label or annotation.
fn podium_marks(p: &Pod, role_labels: &[&str]) -> bool {
    p.annotations().contains_key(GROUP)
        || p.annotations().contains_key(TERM)
        || role_labels.iter().any(|r| p.labels().contains_key(*r))
}
