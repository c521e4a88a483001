//! `make bench`: failover, traffic switch, scale and schedule figures for podium, beside
//! client-go's Lease-based election, all measured against the local control plane; and the
//! application's view: when a member process (the Go client, `podium-member-go`) learns that
//! it leads or no longer leads, and what each scheme writes to the API server while idle.
//! Writes results.json and report.md to target/bench, or to `BENCH_OUT` (plot.py draws the PNGs).

#[path = "../e2e/groups.rs"]
#[allow(dead_code)]
mod groups;
#[path = "../e2e/support.rs"]
#[allow(dead_code)]
mod support;

mod failure_kinds;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use podium_api::ElectionGroup;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use groups::*;
use support::*;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One report table row: the name, then n, p50, p90, p99 and max.
fn stats_row(name: &str, s: &Value) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} |\n",
        cell(&s["n"]),
        cell(&s["p50"]),
        cell(&s["p90"]),
        cell(&s["p99"]),
        cell(&s["max"])
    )
}

/// n, p50, p90, p99 and max of samples in milliseconds (nearest rank).
fn stats(samples: &[f64]) -> Value {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if s.is_empty() {
            return Value::Null;
        }
        let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
        json!((s[rank - 1] * 10.0).round() / 10.0)
    };
    json!({"n": s.len(), "p50": pct(50.0), "p90": pct(90.0), "p99": pct(99.0), "max": pct(100.0)})
}

/// Where results go: `BENCH_OUT` (relative to the checkout), target/bench unless set.
fn out_dir() -> PathBuf {
    let dir = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench".into());
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir)
}

/// Watches one Service's EndpointSlices and wakes waiters on every change.
struct SliceWatch {
    addrs: Arc<Mutex<Vec<String>>>,
    changed: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl SliceWatch {
    async fn start(ns: &TestNs, service: &str) -> Self {
        let addrs = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(tokio::sync::Notify::new());
        let (a, c) = (addrs.clone(), changed.clone());
        let api = ns.api::<EndpointSlice>();
        let cfg =
            watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
        let task = tokio::spawn(async move {
            let (reader, writer) = kube::runtime::reflector::store();
            let s =
                kube::runtime::reflector::reflector(writer, watcher(api, cfg)).default_backoff();
            let mut s = std::pin::pin!(s);
            while let Some(Ok(_)) = s.next().await {
                let mut ready: Vec<String> = reader
                    .state()
                    .iter()
                    .flat_map(|sl| sl.endpoints.clone())
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
                    .flat_map(|e| e.addresses)
                    .collect();
                ready.sort();
                *a.lock().unwrap() = ready;
                c.notify_waiters();
            }
        });
        Self {
            addrs,
            changed,
            task,
        }
    }

    /// Waits until the ready addresses are exactly `[ip]`; returns when that was seen.
    async fn wait_only(&self, ip: &str, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if *self.addrs.lock().unwrap() == [ip.to_string()] {
                return Instant::now();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                tokio::time::timeout(left, changed).await.is_ok(),
                "slice never held only {ip}"
            );
        }
    }
}

impl Drop for SliceWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn leader_of(s: &Setup, group: &str) -> String {
    let g = s
        .wait_group(group, "has a leader", |g| status(g).leader.is_some())
        .await;
    status(&g).leader.unwrap()
}

async fn pod_ip_of(ns: &TestNs, pod: &str) -> String {
    pod_ip(&ns.wait_running(pod).await).unwrap()
}

/// Failover and traffic-switch trials: delete the leader, or make it NotReady.
async fn failover(trials: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let s = Setup::new("bench-failover").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    crate_service(&s.ns).await;
    s.apply_group("api", json!({"selector": {"matchLabels": {"app": "x"}}}))
        .await
        .unwrap();
    let watch = LeaderWatch::start(&s.ns, "app=x").await;
    let slices = SliceWatch::start(&s.ns, "leader").await;
    let (mut delete_ms, mut unready_ms, mut traffic_ms) = (vec![], vec![], vec![]);
    let mut next = 3;
    for i in 0..trials * 2 {
        let old = leader_of(&s, "api").await;
        s.wait_leader("api", "app=x", &old).await;
        let old_ip = pod_ip_of(&s.ns, &old).await;
        slices.wait_only(&old_ip, Duration::from_secs(30)).await;
        let by_delete = i % 2 == 0;
        let start = Instant::now();
        if by_delete {
            s.ns.delete_pod_now(&old).await;
        } else {
            s.ns.set_ready(&old, false).await;
        }
        let (new, seen) = watch
            .wait_new_leader(&old, start, Duration::from_secs(30))
            .await;
        let ms = seen.duration_since(start).as_secs_f64() * 1000.0;
        let new_ip = pod_ip_of(&s.ns, &new).await;
        let switched = slices.wait_only(&new_ip, Duration::from_secs(30)).await;
        traffic_ms.push(switched.duration_since(start).as_secs_f64() * 1000.0);
        if by_delete {
            delete_ms.push(ms);
            let name = format!("p{next}");
            next += 1;
            s.ns.create_pod(&name, &[("app", "x")]).await;
            s.ns.wait_running(&name).await;
        } else {
            unready_ms.push(ms);
            s.ns.set_ready(&old, true).await;
        }
        // Let the group settle (all members labelled, status written) before the next trial.
        s.wait_group("api", "3 ready", |g| {
            status(g).ready_members == 3 && status(g).members == 3
        })
        .await;
    }
    assert!(
        watch.max_leaders() <= 1,
        "a watch saw two leaders during the trials"
    );
    (delete_ms, unready_ms, traffic_ms)
}

async fn crate_service(ns: &TestNs) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "leader"},
        "spec": {"selector": {"app": "x", ROLE: "leader"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    ns.api::<Service>()
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
}

struct Candidate {
    child: tokio::process::Child,
}

/// client-go Lease timings, in seconds: lease duration, renew deadline, retry period.
#[derive(Clone, Copy)]
struct LeaseTimings {
    lease: f64,
    renew: f64,
    retry: f64,
}

impl LeaseTimings {
    /// kube-controller-manager's defaults.
    const DEFAULT: Self = Self {
        lease: 15.0,
        renew: 10.0,
        retry: 2.0,
    };

    fn args(&self) -> Vec<String> {
        let d = |s: f64| format!("{}ms", (s * 1000.0).round() as u64);
        vec![
            format!("--lease-duration={}", d(self.lease)),
            format!("--renew-deadline={}", d(self.renew)),
            format!("--retry-period={}", d(self.retry)),
        ]
    }

    fn label(&self) -> String {
        format!("{} s / {} s / {} s", self.lease, self.renew, self.retry)
    }

    fn json(&self) -> Value {
        json!({"lease_duration_s": self.lease, "renew_deadline_s": self.renew, "retry_period_s": self.retry})
    }

    /// `BENCH_LEASE_TUNED="3,2,0.5"` (seconds); 3 s / 2 s / 0.5 s unless set.
    fn tuned_from_env() -> Self {
        let v: Vec<f64> = std::env::var("BENCH_LEASE_TUNED")
            .unwrap_or_else(|_| "3,2,0.5".into())
            .split(',')
            .filter_map(|x| x.trim().parse().ok())
            .collect();
        match v[..] {
            [lease, renew, retry] => Self {
                lease,
                renew,
                retry,
            },
            _ => panic!("BENCH_LEASE_TUNED wants three numbers of seconds: lease,renew,retry"),
        }
    }
}

/// One client-go Lease run: kill -9 and release trials, and what an idle window cost.
struct LeaseRun {
    kill_ms: Vec<f64>,
    release_ms: Vec<f64>,
    idle: Option<IdleWindow>,
    /// LEADING or STOPPED lines printed during the idle window: each is a leader change
    /// (or a lost renewal) with nothing provoking it.
    idle_leader_changes: usize,
}

/// client-go Lease election: three candidates; optionally an idle window first (writes, and
/// spurious leader changes), then kill -9 or SIGTERM the leader and time the successor.
async fn lease_baseline(
    timings: LeaseTimings,
    kills: usize,
    releases: usize,
    idle_s: u64,
) -> LeaseRun {
    let ns = TestNs::new("bench-lease").await;
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/lease-baseline");
    // (LEADING or STOPPED, candidate, unix nanos)
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, String, i128)>();
    let spawn = |id: String| {
        let mut child = tokio::process::Command::new(&bin)
            .args([
                "--kubeconfig",
                kubeconfig_path().to_str().unwrap(),
                "--namespace",
                &ns.name,
                "--id",
                &id,
            ])
            .args(timings.args())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start lease-baseline (make bench builds it)");
        let out = child.stdout.take().unwrap();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let parts: Vec<&str> = l.split_whitespace().collect();
                if let [what @ ("LEADING" | "STOPPED"), id, nanos] = parts[..] {
                    let _ = tx.send((
                        what == "LEADING",
                        id.to_string(),
                        nanos.parse().unwrap_or(0),
                    ));
                }
            }
        });
        Candidate { child }
    };
    let recv_leading = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<_>| loop {
        let (leading, id, at): (bool, String, i128) =
            tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("a Lease candidate leads within 60 s")
                .unwrap();
        if leading {
            return (id, at);
        }
    };
    let mut cands: HashMap<String, Candidate> = HashMap::new();
    for i in 0..3 {
        cands.insert(format!("c{i}"), spawn(format!("c{i}")));
    }
    let (mut leader, _) = recv_leading(&mut rx).await;
    let mut idle = None;
    let mut idle_leader_changes = 0;
    if idle_s > 0 {
        // Let the followers come up and try once, then count what sitting still costs.
        tokio::time::sleep(Duration::from_secs(2)).await;
        while rx.try_recv().is_ok() {}
        let window = idle_window(&ns, &["leases"], Duration::from_secs(idle_s)).await;
        while let Ok((leading, id, _)) = rx.try_recv() {
            println!(
                "  lease idle: {id} {} with nothing provoking it",
                if leading {
                    "started leading"
                } else {
                    "stopped"
                }
            );
            idle_leader_changes += 1;
            if leading {
                leader = id;
            }
        }
        println!(
            "  lease idle {} s: {} lease writes, {} Lease changes in the namespace, {idle_leader_changes} leader changes",
            idle_s, window.writes, window.ns_changes
        );
        idle = Some(window);
    }
    let now_nanos = || jiff::Timestamp::now().as_nanosecond();
    let (mut kill_ms, mut release_ms) = (vec![], vec![]);
    for i in 0..kills + releases {
        let by_kill = i < kills;
        let mut c = cands.remove(&leader).unwrap();
        let start = now_nanos();
        if by_kill {
            let _ = c.child.start_kill();
        } else if let Some(pid) = c.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let (next, at) = loop {
            let (id, at) = recv_leading(&mut rx).await;
            if id != leader {
                break (id, at);
            }
        };
        let ms = (at - start) as f64 / 1e6;
        println!(
            "  lease {}: {leader} -> {next} after {ms:.0} ms",
            if by_kill { "kill -9" } else { "release" }
        );
        if by_kill {
            kill_ms.push(ms)
        } else {
            release_ms.push(ms)
        }
        let _ = c.child.wait().await;
        cands.insert(leader.clone(), spawn(leader.clone()));
        leader = next;
    }
    drop(cands);
    let name = ns.name.clone();
    drop(ns);
    wait_ns_gone(&name).await;
    LeaseRun {
        kill_ms,
        release_ms,
        idle,
        idle_leader_changes,
    }
}

/// Waits (up to 60 s) until a namespace deleted in the background is gone, so that its
/// deletion's writes do not land in the next measurement.
async fn wait_ns_gone(name: &str) {
    let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client().await);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && api.get_opt(name).await.ok().flatten().is_some() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// API writes over one idle window: the API server's counters for `resources` (all
/// namespaces: background writes included, subtract a baseline) and, for a cross-check, the
/// changes a watch of the bench namespace saw on the same kinds.
#[derive(Clone, Debug)]
struct IdleWindow {
    secs: f64,
    writes: f64,
    ns_changes: usize,
}

const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "APPLY", "DELETE"];

/// Write requests (any subresource, any response code) on `resources` between two snapshots.
fn write_requests(
    a: &BTreeMap<(String, String, String), f64>,
    b: &BTreeMap<(String, String, String), f64>,
    resources: &[&str],
) -> f64 {
    b.iter()
        .filter(|((verb, res, _), _)| {
            WRITE_VERBS.contains(&verb.as_str()) && resources.contains(&res.as_str())
        })
        .map(|(k, v)| v - a.get(k).copied().unwrap_or(0.0))
        .sum()
}

/// Counts the changes a watch sees on one kind in a namespace until `until`.
async fn changes_until<K>(api: Api<K>, until: tokio::time::Instant) -> usize
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let stream = watcher(api, watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    let (mut live, mut n) = (false, 0);
    while let Ok(Some(ev)) = tokio::time::timeout_at(until, stream.next()).await {
        match ev {
            Ok(watcher::Event::InitDone) => live = true,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) if live => n += 1,
            _ => {}
        }
    }
    n
}

/// One idle window of `dur` over `resources` (among pods, electiongroups, events, leases).
async fn idle_window(ns: &TestNs, resources: &[&str], dur: Duration) -> IdleWindow {
    let client = ns.client.clone();
    let before = request_counts(&client).await;
    let t0 = Instant::now();
    let until = tokio::time::Instant::now() + dur;
    let count = |r: &str| resources.contains(&r);
    let (pods, groups, events, leases) = tokio::join!(
        async {
            if count("pods") {
                changes_until(ns.api::<Pod>(), until).await
            } else {
                0
            }
        },
        async {
            if count("electiongroups") {
                changes_until(ns.api::<ElectionGroup>(), until).await
            } else {
                0
            }
        },
        async {
            if count("events") {
                changes_until(ns.api::<k8s_openapi::api::events::v1::Event>(), until).await
            } else {
                0
            }
        },
        async {
            if count("leases") {
                changes_until(ns.api::<k8s_openapi::api::coordination::v1::Lease>(), until).await
            } else {
                0
            }
        },
    );
    tokio::time::sleep_until(until).await;
    let after = request_counts(&client).await;
    IdleWindow {
        secs: t0.elapsed().as_secs_f64(),
        writes: write_requests(&before, &after, resources),
        ns_changes: pods + groups + events + leases,
    }
}

/// Resources podium writes: pod labels and annotations, group status, Events.
const PODIUM_RESOURCES: [&str; 3] = ["pods", "electiongroups", "events"];

/// Background write rates (per second) with nothing of the bench running, per resource set.
struct Background {
    window: IdleWindow,
    podium_per_s: f64,
    leases_per_s: f64,
}

async fn background(dur: Duration) -> Background {
    let ns = TestNs::new("bench-idle-baseline").await;
    let client = ns.client.clone();
    let before = request_counts(&client).await;
    let t0 = Instant::now();
    tokio::time::sleep(dur).await;
    let after = request_counts(&client).await;
    let secs = t0.elapsed().as_secs_f64();
    let podium = write_requests(&before, &after, &PODIUM_RESOURCES);
    let leases = write_requests(&before, &after, &["leases"]);
    let name = ns.name.clone();
    drop(ns);
    wait_ns_gone(&name).await;
    Background {
        window: IdleWindow {
            secs,
            writes: podium + leases,
            ns_changes: 0,
        },
        podium_per_s: podium / secs,
        leases_per_s: leases / secs,
    }
}

/// Writes per group per second over an idle window, less the background rate.
fn idle_row(w: &IdleWindow, background_per_s: f64, groups: usize) -> Value {
    let net = w.writes - background_per_s * w.secs;
    let per_group = net / w.secs / groups as f64;
    json!({
        "groups": groups,
        "window_s": (w.secs * 10.0).round() / 10.0,
        "writes": w.writes,
        "background_writes": (background_per_s * w.secs * 10.0).round() / 10.0,
        "per_group_per_s": (per_group * 1000.0).round() / 1000.0,
        "ns_changes": w.ns_changes,
        "ns_changes_per_group_per_s": ((w.ns_changes as f64 / w.secs / groups as f64) * 1000.0).round() / 1000.0,
    })
}

/// One line a member process printed, stamped when the bench read it.
#[derive(Clone, Debug)]
struct MemberEvent {
    pod: String,
    event: String,
    term: Option<i64>,
    leader: Option<String>,
    at: Option<jiff::Timestamp>,
    seen: Instant,
}

/// `podium-member-go` processes, one per pod, as the pods' own processes; their stdout lines
/// are read as they come.
struct AppMembers {
    ns: String,
    bin: PathBuf,
    procs: HashMap<String, tokio::process::Child>,
    events: Arc<Mutex<Vec<MemberEvent>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl AppMembers {
    fn new(ns: &str) -> Self {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/go/podium-member-go");
        assert!(
            bin.exists(),
            "{} is missing: `make go-client` builds it (make bench does first)",
            bin.display()
        );
        Self {
            ns: ns.to_string(),
            bin,
            procs: HashMap::new(),
            events: Arc::default(),
            changed: Arc::default(),
        }
    }

    fn spawn(&mut self, pod: &str) {
        let logs = out_dir().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let err = std::fs::File::create(logs.join(format!("{}-{pod}.log", self.ns))).unwrap();
        let mut child = tokio::process::Command::new(&self.bin)
            .arg("-kubeconfig")
            .arg(kubeconfig_path())
            .env("KUBECONFIG", kubeconfig_path())
            .env("POD_NAME", pod)
            .env("POD_NAMESPACE", &self.ns)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("start podium-member-go");
        let out = child.stdout.take().unwrap();
        let (events, changed, pod_name) =
            (self.events.clone(), self.changed.clone(), pod.to_string());
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let seen = Instant::now();
                let Ok(v) = serde_json::from_str::<Value>(&l) else {
                    continue;
                };
                events.lock().unwrap().push(MemberEvent {
                    pod: pod_name.clone(),
                    event: v["event"].as_str().unwrap_or("").to_string(),
                    term: v["term"].as_i64(),
                    leader: v["leader"].as_str().map(str::to_string),
                    at: v["at"].as_str().and_then(|a| a.parse().ok()),
                    seen,
                });
                changed.notify_waiters();
            }
        });
        self.procs.insert(pod.to_string(), child);
    }

    async fn kill(&mut self, pod: &str) {
        if let Some(mut c) = self.procs.remove(pod) {
            let _ = c.kill().await;
        }
    }

    /// Waits until `ok` holds over the events so far; returns what it returned.
    async fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&[MemberEvent]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if let Some(t) = ok(&self.events.lock().unwrap()) {
                return t;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, changed).await.is_err() {
                let tail: Vec<String> = self
                    .events
                    .lock()
                    .unwrap()
                    .iter()
                    .rev()
                    .take(12)
                    .map(|e| format!("{} {} {:?} {:?}", e.pod, e.event, e.term, e.leader))
                    .collect();
                panic!("{what}: not printed within {timeout:?}; last lines: {tail:#?}");
            }
        }
    }

    /// Waits until `leader`'s process leads under `term` and every other one has printed
    /// `leader` as the leader.
    async fn wait_settled(&self, leader: &str, term: i64) {
        let pods: Vec<String> = self.procs.keys().cloned().collect();
        self.wait(
            &format!("members settled on {leader} (term {term})"),
            Duration::from_secs(30),
            |evs| {
                let last = |pod: &str, f: &dyn Fn(&MemberEvent) -> bool| {
                    evs.iter().rev().find(|e| e.pod == pod && f(e)).cloned()
                };
                let leading = last(leader, &|e| e.event == "started" || e.event == "stopped")
                    .is_some_and(|e| e.event == "started" && e.term == Some(term));
                let followers_know = pods.iter().all(|p| {
                    last(p, &|e| e.event == "new_leader")
                        .is_some_and(|e| e.leader.as_deref() == Some(leader))
                });
                (leading && followers_know).then_some(())
            },
        )
        .await
    }
}

/// The application's view: a group of three pods, each with its own `podium-member-go`.
/// Alternately the leader pod is deleted (time until the successor's process prints
/// `started`) and a manual handoff is requested (time until the old leader's process prints
/// `stopped`, and until the new one's prints `started`). Then, if `idle_s` > 0, an idle
/// window with everything settled.
struct AppRun {
    failover_ms: Vec<f64>,
    failover_at_ms: Vec<f64>,
    stepdown_ms: Vec<f64>,
    handoff_started_ms: Vec<f64>,
    idle: Option<IdleWindow>,
}

async fn app_failover(trials: usize, idle_s: u64) -> AppRun {
    let s = Setup::new("bench-app").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group("api", json!({"selector": {"matchLabels": {"app": "x"}}}))
        .await
        .unwrap();
    let mut members = AppMembers::new(&s.ns.name);
    for p in ["p0", "p1", "p2"] {
        members.spawn(p);
    }
    let mut run = AppRun {
        failover_ms: vec![],
        failover_at_ms: vec![],
        stepdown_ms: vec![],
        handoff_started_ms: vec![],
        idle: None,
    };
    let settle = async |members: &AppMembers| {
        let g = s
            .wait_group("api", "3 ready with a leader", |g| {
                let st = status(g);
                st.ready_members == 3 && st.members == 3 && st.leader.is_some()
            })
            .await;
        let (leader, term) = (status(&g).leader.unwrap(), status(&g).term);
        s.wait_leader("api", "app=x", &leader).await;
        members.wait_settled(&leader, term).await;
        leader
    };
    let mut next = 3;
    for i in 0..trials * 2 {
        let old = settle(&members).await;
        let start = Instant::now();
        let start_wall = jiff::Timestamp::now();
        if i % 2 == 0 {
            s.ns.delete_pod_now(&old).await;
            let ev = members
                .wait("a successor started", Duration::from_secs(30), |evs| {
                    evs.iter()
                        .find(|e| e.seen >= start && e.pod != old && e.event == "started")
                        .cloned()
                })
                .await;
            let ms = ev.seen.duration_since(start).as_secs_f64() * 1000.0;
            let at_ms = ev.at.map_or(f64::NAN, |at| {
                at.duration_since(start_wall).as_secs_f64() * 1000.0
            });
            println!(
                "  app failover {old} -> {}: started printed after {ms:.1} ms (its own clock: {at_ms:.1} ms)",
                ev.pod
            );
            run.failover_ms.push(ms);
            run.failover_at_ms.push(at_ms);
            members.kill(&old).await;
            let name = format!("p{next}");
            next += 1;
            s.ns.create_pod(&name, &[("app", "x")]).await;
            s.ns.wait_running(&name).await;
            members.spawn(&name);
        } else {
            let mut others: Vec<String> = members
                .procs
                .keys()
                .filter(|p| **p != old)
                .cloned()
                .collect();
            others.sort();
            let to = others[i / 2 % others.len()].clone();
            let patch = json!({"metadata": {"annotations": {"podium.dev/handoff-to": &to}}});
            s.groups()
                .patch("api", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
            let at = |pod: &str, event: &str| {
                let (pod, event) = (pod.to_string(), event.to_string());
                move |evs: &[MemberEvent]| {
                    evs.iter()
                        .find(|e| e.seen >= start && e.pod == pod && e.event == event)
                        .map(|e| e.seen.duration_since(start).as_secs_f64() * 1000.0)
                }
            };
            let stopped = members
                .wait(
                    "the old leader stopped",
                    Duration::from_secs(30),
                    at(&old, "stopped"),
                )
                .await;
            let started = members
                .wait(
                    "the new leader started",
                    Duration::from_secs(30),
                    at(&to, "started"),
                )
                .await;
            println!(
                "  app handoff {old} -> {to}: stopped after {stopped:.1} ms, started after {started:.1} ms"
            );
            run.stepdown_ms.push(stopped);
            run.handoff_started_ms.push(started);
        }
    }
    if idle_s > 0 {
        settle(&members).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let w = idle_window(&s.ns, &PODIUM_RESOURCES, Duration::from_secs(idle_s)).await;
        println!(
            "  podium idle {idle_s} s: {} pod/group/event writes (all namespaces), {} changes in the namespace",
            w.writes, w.ns_changes
        );
        run.idle = Some(w);
    }
    drop(members);
    let name = s.ns.name.clone();
    drop(s);
    wait_ns_gone(&name).await;
    run
}

/// Creates `n` pods at `concurrency`, the i-th from `manifest(i)` (its namespace and
/// manifest), and waits until the `selector` pods that `pods` lists number `n` Ready ones.
async fn create_ready_pods(
    pods: &Api<Pod>,
    selector: &str,
    n: usize,
    concurrency: usize,
    timeout: Duration,
    manifest: impl Fn(usize) -> (String, Pod),
) {
    let client = pods.clone().into_client();
    stream::iter((0..n).map(manifest))
        .map(|(ns, p)| {
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            async move {
                api.create(&PostParams::default(), &p).await.unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let cfg = watcher::Config::default().labels(selector);
    count_until(
        pods,
        cfg,
        n,
        pod_ready,
        Instant::now(),
        timeout,
        "pods ready",
    )
    .await;
}

/// Watches the objects `api` lists and keeps count, event by event, of those `ok` holds for
/// (no recount of the lot per event: pods may number 50,000). Until the count reaches `n`,
/// records `[seconds since start, count]` every 500 ms, and once more at the end; returns
/// those samples. Panics after `timeout`.
async fn count_until<K>(
    api: &Api<K>,
    cfg: watcher::Config,
    n: usize,
    ok: impl Fn(&K) -> bool,
    start: Instant,
    timeout: Duration,
    what: &str,
) -> Vec<Value>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let events = watcher(api.clone(), cfg).default_backoff();
    let mut events = std::pin::pin!(events);
    let (mut live, mut fresh) = (HashMap::new(), None::<HashMap<_, bool>>);
    let mut count = 0;
    let sample = |count: usize| {
        json!([
            (start.elapsed().as_secs_f64() * 100.0).round() / 100.0,
            count
        ])
    };
    let mut samples = vec![];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let deadline = tokio::time::Instant::now() + timeout;
    while count < n {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(watcher::Event::Init)) => fresh = Some(HashMap::new()),
                Some(Ok(watcher::Event::InitApply(o))) => {
                    fresh.get_or_insert_default().insert(ObjectRef::from_obj(&o), ok(&o));
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    live = fresh.take().unwrap_or_default();
                    count = live.values().filter(|v| **v).count();
                }
                Some(Ok(watcher::Event::Apply(o))) => {
                    let now = ok(&o);
                    if live.insert(ObjectRef::from_obj(&o), now) == Some(true) {
                        count -= 1;
                    }
                    count += usize::from(now);
                }
                Some(Ok(watcher::Event::Delete(o))) => {
                    if live.remove(&ObjectRef::from_obj(&o)) == Some(true) {
                        count -= 1;
                    }
                }
                // The watcher lists again after a backoff.
                Some(Err(_)) => {}
                None => panic!("the watch for {what} ended"),
            },
            _ = tick.tick() => samples.push(sample(count)),
            _ = tokio::time::sleep_until(deadline) => {
                panic!("timed out after {timeout:?} waiting for {what}: {count} of {n}")
            }
        }
    }
    samples.push(sample(count));
    samples
}

/// Raw API capacity when no scale run measures it: label patches of 100 pods from a plain
/// client at `concurrency`, as in the scale runs.
async fn raw_patch_rate(concurrency: usize) -> f64 {
    let ns = TestNs::new("bench-raw").await;
    let pods_api = ns.api::<Pod>();
    let pods_n = 100;
    create_ready_pods(
        &pods_api,
        "bench=raw",
        pods_n,
        concurrency,
        Duration::from_secs(120),
        |i| {
            let pod = pod_manifest(&format!("r{i}"), &[("bench", "raw")], &[]);
            (ns.name.clone(), pod)
        },
    )
    .await;
    label_patches(&ns.client, "raw", 1000, concurrency, |i| {
        (ns.name.clone(), format!("r{}", i % pods_n))
    })
    .await
}

/// The raw patch rate at each concurrency of `BENCH_RAW_SWEEP` (`1,4,16,64` unless set; `none`
/// skips it), `n` patches each: how many requests in flight the API server needs to reach its
/// capacity, which is what `--concurrency` should be chosen from.
async fn raw_sweep(
    client: &Client,
    n: usize,
    pod: impl Fn(usize) -> (String, String) + Copy,
) -> BTreeMap<String, f64> {
    let list = std::env::var("BENCH_RAW_SWEEP").unwrap_or_else(|_| "1,4,16,64".into());
    let mut rates = BTreeMap::new();
    for c in list
        .split(',')
        .filter_map(|c| c.trim().parse::<usize>().ok())
    {
        // A value of its own per pass: an unchanged value is no write at all.
        let rate = label_patches(client, &format!("c{c}"), n, c.max(1), pod).await;
        println!("  raw label patches at concurrency {c}: {rate:.1}/s");
        rates.insert(format!("{c:03}"), (rate * 10.0).round() / 10.0);
    }
    rates
}

/// `n` requests, `concurrency` in flight, the i-th made by `request(i)`: how many per second.
async fn request_rate<F, Fut>(n: usize, concurrency: usize, request: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    stream::iter(0..n)
        .map(request)
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    n as f64 / start.elapsed().as_secs_f64()
}

/// What a plain client reaches, at `concurrency`, for each kind of write podium makes besides
/// pod labels: a metadata patch of a group (as its finalizer is), a status patch of a group's
/// size, and an Event. `group(i)` names the i-th group (namespace, name); `n` of each are
/// made. The statuses are removed afterwards, untimed, so the operator starts from none.
async fn rates_by_kind(
    client: &Client,
    n: usize,
    concurrency: usize,
    group: impl Fn(usize) -> (String, String) + Copy,
    pod: impl Fn(usize) -> (String, String) + Copy,
) -> BTreeMap<&'static str, f64> {
    let groups = |ns: &str| Api::<ElectionGroup>::namespaced(client.clone(), ns);
    let merge = |v: Value| Patch::Merge(v);
    let meta = request_rate(n, concurrency, |i| {
        let (ns, name) = group(i);
        let api = groups(&ns);
        async move {
            let patch = merge(json!({"metadata": {"annotations": {"bench-raw": format!("m{i}")}}}));
            api.patch(&name, &PatchParams::default(), &patch)
                .await
                .unwrap();
        }
    })
    .await;
    let status = request_rate(n, concurrency, |i| {
        let (ns, name) = group(i);
        let api = groups(&ns);
        async move {
            let at = jiff::Timestamp::now().to_string();
            let patch = merge(json!({"status": {
                "members": 5, "readyMembers": 5, "readySummary": "5/5", "term": i,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Bench",
                    "message": format!("bench status write {i}"), "lastTransitionTime": at}]}}));
            api.patch_status(&name, &PatchParams::default(), &patch)
                .await
                .unwrap();
        }
    })
    .await;
    // Untimed: only so that the operator starts from groups without a status.
    request_rate(n, concurrency, |i| {
        let (ns, name) = group(i);
        let api = groups(&ns);
        async move {
            let patch = merge(json!({"status": null}));
            api.patch_status(&name, &PatchParams::default(), &patch)
                .await
                .unwrap();
        }
    })
    .await;
    let stamp = jiff::Timestamp::now().as_second();
    let events = request_rate(n, concurrency, |i| {
        let (ns, pod_name) = pod(i);
        let api = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns);
        async move {
            let event: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
                "metadata": {"name": format!("bench-raw-{stamp}-{i}")},
                "eventTime": jiff::Timestamp::now().to_string(),
                "reportingController": "bench.podium.dev/raw", "reportingInstance": "bench",
                "action": "Bench", "reason": "Bench", "type": "Normal",
                "note": format!("bench event {i}"),
                "regarding": {"kind": "Pod", "namespace": ns, "name": pod_name, "apiVersion": "v1"}
            }))
            .unwrap();
            api.create(&PostParams::default(), &event).await.unwrap();
        }
    })
    .await;
    let round = |r: f64| (r * 10.0).round() / 10.0;
    println!(
        "  raw at concurrency {concurrency}: group metadata {meta:.1}/s, group status {status:.1}/s, Events {events:.1}/s"
    );
    BTreeMap::from([
        ("group_metadata", round(meta)),
        ("group_status", round(status)),
        ("event", round(events)),
    ])
}

/// `n` label patches from a plain client at `concurrency`, the i-th on pod `pod(i)` (its
/// namespace and name): the API server's raw write capacity, in patches per second.
async fn label_patches(
    client: &Client,
    tag: &str,
    n: usize,
    concurrency: usize,
    pod: impl Fn(usize) -> (String, String),
) -> f64 {
    request_rate(n, concurrency, |i| {
        let (ns, name) = pod(i);
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"metadata": {"labels": {"bench-raw": format!("{tag}-{i}")}}});
        async move {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
        }
    })
    .await
}

/// API server request counters by (verb, resource, subresource).
async fn request_counts(client: &Client) -> BTreeMap<(String, String, String), f64> {
    api_server_sums(
        &api_server_metrics(client).await,
        "apiserver_request_total{",
    )
}

/// The API server's own request durations at one instant, from one read of its metrics.
struct Durations {
    /// Seconds spent on PATCHes of pods, and their count.
    pod_patches: (f64, f64),
    /// Seconds spent on writes of every kind, every client's: over a window, the mean number
    /// of writes it was serving at once (Little's law).
    writes: f64,
}

impl Durations {
    async fn now(client: &Client) -> Self {
        let text = api_server_metrics(client).await;
        let sum = api_server_sums(&text, "apiserver_request_duration_seconds_sum{");
        let count = api_server_sums(&text, "apiserver_request_duration_seconds_count{");
        let key = ("PATCH".to_string(), "pods".to_string(), String::new());
        let writes = sum
            .iter()
            .filter(|((verb, _, _), _)| {
                matches!(verb.as_str(), "PATCH" | "POST" | "PUT" | "DELETE")
            })
            .map(|(_, v)| v)
            .sum();
        Self {
            pod_patches: (
                sum.get(&key).copied().unwrap_or(0.0),
                count.get(&key).copied().unwrap_or(0.0),
            ),
            writes,
        }
    }

    /// The mean time the API server took over a PATCH of a pod since `self`, in ms.
    fn mean_patch_ms(&self, later: &Self) -> f64 {
        let seconds = later.pod_patches.0 - self.pod_patches.0;
        let count = later.pod_patches.1 - self.pod_patches.1;
        (seconds / count * 10_000.0).round() / 10.0
    }
}

/// The API server's metrics, as text.
async fn api_server_metrics(client: &Client) -> String {
    client
        .request_text(http::Request::get("/metrics").body(vec![]).unwrap())
        .await
        .expect("apiserver /metrics")
}

/// An API server metric whose lines start with `prefix`, summed by (verb, resource,
/// subresource).
fn api_server_sums(text: &str, prefix: &str) -> BTreeMap<(String, String, String), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(prefix)) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let get = |k: &str| {
            labels
                .split(&format!("{k}=\"")[..])
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        *out.entry((get("verb"), get("resource"), get("subresource")))
            .or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// Every request the API server answered between two counts, as `VERB resource[/sub]: n` (the
/// busiest first, those under 10 left out): what a window's time went to, whoever sent it.
fn requests_between(
    a: &BTreeMap<(String, String, String), f64>,
    b: &BTreeMap<(String, String, String), f64>,
) -> Value {
    let mut rows: Vec<(String, f64)> = b
        .iter()
        .map(|((verb, res, sub), v)| {
            let what = if sub.is_empty() {
                res.clone()
            } else {
                format!("{res}/{sub}")
            };
            (
                format!("{verb} {what}"),
                v - a
                    .get(&(verb.clone(), res.clone(), sub.clone()))
                    .copied()
                    .unwrap_or(0.0),
            )
        })
        .filter(|(_, n)| *n >= 10.0)
        .collect();
    rows.sort_by(|x, y| y.1.total_cmp(&x.1));
    Value::Object(rows.into_iter().map(|(k, n)| (k, json!(n))).collect())
}

/// Writes of the kinds podium makes on `resources`: PATCH and APPLY. DELETEs are left out
/// (the namespace controller issues them for unrelated namespaces), and so are pods/status
/// writes (kwok, playing kubelet, makes those; podium writes pod metadata only).
fn writes_between(
    a: &BTreeMap<(String, String, String), f64>,
    b: &BTreeMap<(String, String, String), f64>,
    resources: &[&str],
) -> f64 {
    b.iter()
        .filter(|((verb, res, sub), _)| {
            matches!(verb.as_str(), "PATCH" | "APPLY")
                && !(res == "pods" && sub == "status")
                && resources.contains(&res.as_str())
        })
        .map(|(k, v)| v - a.get(k).copied().unwrap_or(0.0))
        .sum()
}

fn rss_peak_mib(pid: u32) -> f64 {
    proc_status_mib(pid, "VmHWM:")
}

/// A line of /proc/<pid>/status given in kB, in MiB to one decimal (0 when unreadable).
fn proc_status_mib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| (kib / 1024.0 * 10.0).round() / 10.0)
}

/// The operator's resident memory once a second, to show when its peak happens.
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Value>>,
}

impl RssSampler {
    fn start(pid: u32, start: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = vec![];
            while !done.load(Ordering::SeqCst) {
                let t = (start.elapsed().as_secs_f64() * 10.0).round() / 10.0;
                samples.push(json!([t, proc_status_mib(pid, "VmRSS:")]));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            samples
        });
        Self { stop, task }
    }

    /// `[seconds since the operator started, MiB]` pairs.
    async fn stop(self) -> Vec<Value> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap_or_default()
    }
}

/// Leaders per group (namespace/group), from pod labels.
fn leaders_by_group(pods: &[Arc<Pod>]) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for p in pods {
        if label(p.as_ref(), ROLE).as_deref() == Some("leader") {
            let group = label(p.as_ref(), "group").unwrap_or_default();
            m.entry(format!("{}/{group}", p.namespace().unwrap_or_default()))
                .or_default()
                .push(p.name_any());
        }
    }
    m
}

/// Every pod is labelled and every group has exactly one leader, among `groups` groups.
fn one_leader_each(pods: &[Arc<Pod>], groups: usize) -> bool {
    let leaders = leaders_by_group(pods);
    pods.iter().all(|p| label(p.as_ref(), ROLE).is_some())
        && leaders.len() == groups
        && leaders.values().all(|l| l.len() == 1)
}

/// Pods per group in the scale runs.
const GROUP_SIZE: usize = 5;

/// The label on one scale run's pods and groups, whatever their namespace.
const RUN_LABEL: &str = "bench-run";

/// The probe group's pods' labels (its selector is `group=probe`).
const PROBE_LABELS: [(&str, &str); 1] = [("group", "probe")];

/// A scale run's shape: `namespaces` namespaces of `groups_per_ns` groups of 5 pods. In
/// `BENCH_SCALES`, `N` is N groups in one namespace and `NxM` is N namespaces of M groups.
#[derive(Clone, Copy, Debug)]
struct Shape {
    namespaces: usize,
    groups_per_ns: usize,
}

impl Shape {
    fn parse(entry: &str) -> Self {
        let parsed = match entry.split_once('x') {
            Some((n, m)) => n.trim().parse().ok().zip(m.trim().parse().ok()),
            None => entry.trim().parse().ok().map(|m| (1, m)),
        };
        match parsed {
            Some((namespaces, groups_per_ns)) if namespaces > 0 && groups_per_ns > 0 => Self {
                namespaces,
                groups_per_ns,
            },
            _ => panic!(
                "BENCH_SCALES entry {entry:?} is neither N (groups in one namespace) nor NxM (N namespaces of M groups)"
            ),
        }
    }

    fn groups(&self) -> usize {
        self.namespaces * self.groups_per_ns
    }

    /// `1000` or `1000x10`, as in BENCH_SCALES.
    fn name(&self) -> String {
        if self.namespaces == 1 {
            self.groups_per_ns.to_string()
        } else {
            format!("{}x{}", self.namespaces, self.groups_per_ns)
        }
    }
}

/// A short name part that differs between runs.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:x}", std::process::id() % 4096, nanos % 65536)
}

/// The scale runs' operator acts on every namespace: refuse to start it beside ElectionGroups
/// that are not the bench's (an e2e test's; a group already being deleted only gets the
/// cleanup its deletion asks for), or beside a podium running in the cluster (two
/// operators would share the bench's groups), which its controller Lease, renewed within the
/// last 30 s, gives away.
async fn assert_cluster_wide_ok(client: &Client) {
    // A freshly started API server answers 429 while its storage for the CRD initializes.
    let api = Api::<ElectionGroup>::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    let groups = loop {
        match api.list(&ListParams::default()).await {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                println!("  listing ElectionGroups: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("list ElectionGroups: {e}"),
        }
    };
    let foreign: Vec<String> = groups
        .items
        .iter()
        .filter(|g| g.metadata.deletion_timestamp.is_none())
        .map(|g| format!("{}/{}", g.namespace().unwrap_or_default(), g.name_any()))
        .filter(|g| !g.starts_with("bench-"))
        .collect();
    assert!(
        foreign.is_empty(),
        "the scale runs start podium on every namespace, and these ElectionGroups are not the bench's: {foreign:?}"
    );
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        client.clone(),
        "podium-system",
    )
    .get_opt("podium-controller")
    .await
    .ok()
    .flatten();
    let renewed = lease
        .and_then(|l| l.spec?.renew_time)
        .map(|t| jiff::Timestamp::now().duration_since(t.0));
    assert!(
        renewed.is_none_or(|ago| ago > jiff::SignedDuration::from_secs(30)),
        "a podium runs in the cluster (its Lease podium-system/podium-controller was renewed {renewed:?} ago; make undeploy): it would act on the bench's groups too"
    );
}

/// Namespaces made for one scale run. Dropped (pass or fail), they are deleted, each group's
/// finalizer stripped first since no operator is left to remove it.
struct BenchNamespaces {
    client: Client,
    names: Vec<String>,
}

impl BenchNamespaces {
    /// Creates the namespaces at `concurrency` and waits until each has its default
    /// ServiceAccount (pods cannot be created before).
    async fn create(client: &Client, names: Vec<String>, concurrency: usize) -> Self {
        let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
        let made = Self {
            client: client.clone(),
            names: names.clone(),
        };
        stream::iter(names)
            .map(|name| {
                let api = api.clone();
                async move {
                    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
                    api.create(&PostParams::default(), &ns)
                        .await
                        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await;
        let in_run = |sa: &k8s_openapi::api::core::v1::ServiceAccount| {
            made.names.contains(&sa.namespace().unwrap_or_default())
        };
        count_until(
            &Api::all(client.clone()),
            watcher::Config::default().fields("metadata.name=default"),
            made.names.len(),
            in_run,
            Instant::now(),
            Duration::from_secs(300),
            "default ServiceAccounts",
        )
        .await;
        made
    }

    /// Deletes the namespaces and waits up to `timeout` until they are gone, so that the next
    /// run neither shares the nodes' pod capacity with their pods nor pays for their deletion.
    async fn delete_and_wait(mut self, timeout: Duration) {
        let names = std::mem::take(&mut self.names);
        delete_namespaces(self.client.clone(), names.clone()).await;
        let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client.clone());
        let deadline = Instant::now() + timeout;
        loop {
            let left = api
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|n| names.contains(&n.name_any()))
                        .count()
                })
                .unwrap_or(names.len());
            if left == 0 {
                return;
            }
            if Instant::now() > deadline {
                println!("  {left} bench namespaces still terminating after {timeout:?}");
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl Drop for BenchNamespaces {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        if !names.is_empty() {
            block_on_side_thread(async move { delete_namespaces(client().await, names).await });
        }
    }
}

/// Strips the finalizer of every group in `names` (no operator is left to remove it), then
/// deletes the namespaces.
async fn delete_namespaces(client: Client, names: Vec<String>) {
    stream::iter(names)
        .map(|name| {
            let client = client.clone();
            async move {
                strip_finalizers(&Api::namespaced(client.clone(), &name)).await;
                let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// Server-side applies groups (namespace, name), each selecting the pods labelled
/// `group=<name>`, labelled `bench-run=<run>`.
async fn apply_groups(
    client: &Client,
    run: &str,
    groups: impl Iterator<Item = (String, String)>,
    concurrency: usize,
) {
    stream::iter(groups)
        .map(|(ns, name)| {
            let api: Api<ElectionGroup> = Api::namespaced(client.clone(), &ns);
            async move {
                let body = json!({"apiVersion": "podium.dev/v1alpha1", "kind": "ElectionGroup",
                    "metadata": {"name": name, "labels": {RUN_LABEL: run}},
                    "spec": {"selector": {"matchLabels": {"group": name}}}});
                api.patch(&name, &PatchParams::apply("bench"), &Patch::Apply(body))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
}

/// A group has a leader, all its members and has observed its current generation.
fn settled(g: &ElectionGroup) -> bool {
    g.status.as_ref().is_some_and(|st| {
        st.leader.is_some()
            && st.members == GROUP_SIZE as i32
            && st.observed_generation == g.metadata.generation
    })
}

/// The pod labelled leader among the probe's pods, once there is exactly one and (if `all`)
/// all 5 are labelled.
async fn probe_leader(pods: &Api<Pod>, all: bool, timeout: Duration) -> String {
    let cfg = watcher::Config::default().labels("group=probe");
    let leaders = |p: &[Arc<Pod>]| {
        leaders_by_group(p)
            .into_values()
            .flatten()
            .collect::<Vec<_>>()
    };
    let led = |p: &[Arc<Pod>]| {
        let labelled = p.len() == GROUP_SIZE && p.iter().all(|p| label(p.as_ref(), ROLE).is_some());
        leaders(p).len() == 1 && (labelled || !all)
    };
    let pods = wait_for_list(pods, cfg, timeout, "the probe group's leader", led).await;
    leaders(&pods).remove(0)
}

/// Failover in a settled group while others converge. Once the operator (`/readyz` on
/// `port`) has synced its caches: deletes the probe group's leader (grace 0) and times, from a
/// pod watch, until another probe pod is labelled leader; replaces the deleted pod (a new name,
/// the same labels), waits until it is Ready, pauses 300 ms, and again until `converged`, and at
/// least 5 times. Returns the times, how many trials began before convergence ended, when
/// (ms after `start`) the operator was ready, and the parts the bench sees: when each deletion
/// was answered, when its watch saw the pod gone, and the new leader seen after the answer.
async fn failover_under_load(
    probe: &TestNs,
    port: u16,
    start: Instant,
    converged: &AtomicBool,
    timeout: Duration,
) -> (Vec<f64>, usize, f64, Value) {
    let watch = LeaderWatch::start(probe, "group=probe").await;
    let mut leader = probe_leader(&probe.api(), false, timeout).await;
    wait_http(port, "/readyz", 200, timeout).await;
    let ready_ms = start.elapsed().as_secs_f64() * 1000.0;
    let (mut times, mut during) = (vec![], 0);
    let (mut answered, mut seen_gone, mut after_answer) = (vec![], vec![], vec![]);
    // Replacements get new names: under load a same-named replacement was seen deleted (grace
    // 0) at once, as if the deletion of its predecessor, finished late, had reached it too.
    let mut replacements = GROUP_SIZE..;
    while !converged.load(Ordering::SeqCst) || times.len() < 5 {
        during += usize::from(!converged.load(Ordering::SeqCst));
        let start = Instant::now();
        probe.delete_pod_now(&leader).await;
        let answered_at = Instant::now();
        answered.push(answered_at.duration_since(start).as_secs_f64() * 1000.0);
        let (next, seen) = watch.wait_new_leader(&leader, start, timeout).await;
        times.push(seen.duration_since(start).as_secs_f64() * 1000.0);
        after_answer.push(seen.saturating_duration_since(answered_at).as_secs_f64() * 1000.0);
        // The deletion reaches the bench's watch as it reaches podium's (both watch pods).
        if let Some(gone) = watch.seen_gone(&leader, start) {
            seen_gone.push(gone.duration_since(start).as_secs_f64() * 1000.0);
        }
        let name = format!("probe-{}", replacements.next().unwrap_or_default());
        probe.create_pod(&name, &PROBE_LABELS).await;
        probe.wait_running(&name).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        leader = next;
    }
    assert!(
        watch.max_leaders() <= 1,
        "a watch saw two probe leaders at once"
    );
    let parts = json!({"delete_answered_ms": stats(&answered), "seen_deleted_ms": stats(&seen_gone),
               "leader_after_answer_ms": stats(&after_answer)});
    (times, during, ready_ms, parts)
}

/// One scale run of `shape`. Before the cold start, a probe group of 5 pods in a namespace of
/// its own is led by a short-lived operator. Then the shape's pods (Ready) and groups are
/// created, the raw patch rate is measured, and one operator starts cold; while the groups
/// converge, the probe group fails over again and again (failover under load). Then 60 s
/// idle, and a storm of leader deletions. Returns the row and the raw patch rate.
///
/// The operator runs on every namespace in both shapes, so that it sees the probe's namespace
/// beside the bench's one or many (nothing else may hold ElectionGroups meanwhile).
async fn scale(
    shape: Shape,
    concurrency: usize,
    create_concurrency: usize,
    last: bool,
) -> (Value, f64) {
    let client = client().await;
    assert_cluster_wide_ok(&client).await;
    let groups_n = shape.groups();
    let pods_n = groups_n * GROUP_SIZE;
    let per_ns = shape.groups_per_ns * GROUP_SIZE;
    // 50,000 pods take many minutes to be scheduled and run on the fake nodes, and their
    // groups many more to converge on a small machine.
    let big = pods_n > 5_000;
    let [pods_timeout, settle_timeout, storm_timeout] = if big {
        [1800, 3600, 900]
    } else {
        [600, 900, 300]
    }
    .map(Duration::from_secs);
    let run = run_id();
    let prefix = format!("bench-scale-{}-{run}", shape.name());
    let names: Vec<String> = if shape.namespaces == 1 {
        vec![prefix.clone()]
    } else {
        (0..shape.namespaces)
            .map(|i| format!("{prefix}-{i}"))
            .collect()
    };
    let probe = TestNs {
        client: client.clone(),
        name: format!("bench-probe-{run}"),
    };
    let namespaces = BenchNamespaces::create(
        &client,
        [probe.name.clone()]
            .into_iter()
            .chain(names.clone())
            .collect(),
        create_concurrency,
    )
    .await;

    // The probe group, led once by an operator of its own before the cold start.
    let probe_pods = probe.api::<Pod>();
    create_ready_pods(
        &probe_pods,
        "group=probe",
        GROUP_SIZE,
        GROUP_SIZE,
        Duration::from_secs(120),
        |i| {
            let pod = pod_manifest(&format!("probe-{i}"), &PROBE_LABELS, &[]);
            (probe.name.clone(), pod)
        },
    )
    .await;
    let probe_group = (probe.name.clone(), "probe".to_string());
    apply_groups(&client, "probe", [probe_group].into_iter(), 1).await;
    let warm = Operator::start_cluster_wide(&probe.name, &[]);
    probe_leader(&probe_pods, true, Duration::from_secs(60)).await;
    warm.kill().await;

    println!(
        "  creating {pods_n} pods and {groups_n} groups in {} namespace(s)",
        names.len()
    );
    let selector = format!("{RUN_LABEL}={run}");
    let all_pods: Api<Pod> = Api::all(client.clone());
    let group_of = |i: usize| format!("g{}", i % per_ns / GROUP_SIZE);
    let pod_at = |i: usize| {
        let name = format!("{}-{}", group_of(i), i % GROUP_SIZE);
        (names[i / per_ns].clone(), name)
    };
    create_ready_pods(
        &all_pods,
        &selector,
        pods_n,
        create_concurrency,
        pods_timeout,
        |i| {
            let (ns, name) = pod_at(i);
            let pod = pod_manifest(&name, &[("group", &group_of(i)), (RUN_LABEL, &run)], &[]);
            (ns, pod)
        },
    )
    .await;
    let groups = (0..groups_n).map(|i| {
        let ns = names[i / shape.groups_per_ns].clone();
        (ns, format!("g{}", i % shape.groups_per_ns))
    });
    apply_groups(&client, &run, groups, create_concurrency).await;

    // Raw capacity first: label patches from a plain client at the operator's concurrency.
    let raw_n = pods_n.min(2000);
    let raw_before = Durations::now(&client).await;
    let raw_per_s = label_patches(&client, "raw", raw_n, concurrency, pod_at).await;
    let raw_patch_ms = raw_before.mean_patch_ms(&Durations::now(&client).await);
    let raw_sweep = raw_sweep(&client, raw_n, pod_at).await;
    let group_at = |i: usize| {
        let i = i % groups_n;
        (
            names[i / shape.groups_per_ns].clone(),
            format!("g{}", i % shape.groups_per_ns),
        )
    };
    let by_kind = rates_by_kind(&client, raw_n, concurrency, group_at, pod_at).await;

    let before = request_counts(&client).await;
    let durations_before = Durations::now(&client).await;
    let cpu_before = cpu_seconds_by_process();
    let port = free_port();
    let start = Instant::now();
    let start_wall = jiff::Timestamp::now();
    let mut op = Operator::start_cluster_wide(
        &prefix,
        &[
            "--concurrency",
            &concurrency.to_string(),
            "--http-addr",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let pid = op_pid(&op);
    let rss = RssSampler::start(pid, start);
    let groups_api: Api<ElectionGroup> = Api::all(client.clone());
    let converged = AtomicBool::new(false);
    let converge = async {
        let timeline = count_until(
            &groups_api,
            watcher::Config::default().labels(&selector),
            groups_n,
            settled,
            start,
            settle_timeout,
            "groups settled",
        )
        .await;
        let settled_ms = ms_since(start);
        let pods = wait_for_list(
            &all_pods,
            watcher::Config::default().labels(&selector),
            pods_timeout,
            "pods labelled",
            |p| p.len() == pods_n && one_leader_each(p, groups_n),
        )
        .await;
        let verified_ms = ms_since(start);
        converged.store(true, Ordering::SeqCst);
        let held_s = metric_value(port, "podium_failover_priority_seconds_total").await;
        let durations = Durations::now(&client).await;
        let patch_ms = durations_before.mean_patch_ms(&durations);
        let cpu = cpu_seconds_since(&cpu_before, start);
        let serving = (durations.writes - durations_before.writes) / start.elapsed().as_secs_f64();
        // Status writes land last; give in-flight Events a moment before counting.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let labelled_ms = last_write_ms(&pods, start_wall)
            .expect("the labelled pods carry podium's managedFields entry");
        let times = json!({"settled_ms": settled_ms.round(), "labelled_ms": labelled_ms.round(),
                           "verified_ms": verified_ms.round(), "failover_priority_s": held_s,
                           "pod_patch_ms_raw": raw_patch_ms, "pod_patch_ms_converging": patch_ms,
                           "cpu_cores_converging": cpu,
                           "writes_in_flight_converging": (serving * 10.0).round() / 10.0});
        // Converged once every group is settled and every pod labelled; the bench's own list
        // that confirms it (tens of seconds for 50,000 pods) is timed apart, as verified_ms.
        let converge_ms = settled_ms.max(labelled_ms);
        (timeline, times, converge_ms, request_counts(&client).await)
    };
    let ((timeline, times, converge_ms, after), (failover_ms, during, ready_ms, failover_parts)) = tokio::join!(
        converge,
        failover_under_load(&probe, port, start, &converged, settle_timeout)
    );
    let writes = writes_between(&before, &after, &["pods", "electiongroups"]);
    let failover_stats = stats(&failover_ms);
    // The same failovers as podium timed them: from the reconcile that saw the leader gone (the
    // watch delivery and the queue before it left out) to its plan applied in full (the
    // successor's label, then the status write the bench does not wait for); and podium's
    // parts of them, up to the label acknowledged.
    let metrics = http_get(port, "/metrics").await.unwrap_or_default().1;
    let failover_podium = Histo::parse(&metrics, "podium_failover_duration_seconds", "").summary();
    let stages_converging = failover_stages(&metrics);
    let failover_stages_ms = stages_since(&stages_converging, None);
    println!("  failover under load, podium's parts: {failover_stages_ms}");
    println!(
        "  converged in {converge_ms:.0} ms ({times}) with {writes} writes; failover under load ({during} trials during convergence): {failover_stats}"
    );

    let idle_start = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle = request_counts(&client).await;
    // Pod and group writes in this window can only be podium's; Events are counted in the
    // bench namespaces by reporting controller, because other components post Events
    // cluster-wide.
    let idle_writes = writes_between(&after, &idle, &["pods", "electiongroups"])
        + podium_events_since(&client, &names, idle_start).await as f64;
    println!("  idle 60 s: {idle_writes} writes");

    // Storm: leaders deleted at once, 1,000 of them from 10,000 groups up.
    let storm_n = if groups_n >= 10_000 {
        1000
    } else {
        groups_n.min(100)
    };
    let gs = groups_api
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items;
    let victims: Vec<(String, String, String)> = gs
        .iter()
        .take(storm_n)
        .map(|g| {
            let ns = g.namespace().unwrap_or_default();
            (ns, g.name_any(), status(g).leader.unwrap())
        })
        .collect();
    let storm_before = request_counts(&client).await;
    let (storm, storm_deleted_ms, since_own) =
        storm_times(&all_pods, &selector, &victims, storm_timeout).await;
    let storm_requests = requests_between(&storm_before, &request_counts(&client).await);
    let metrics = http_get(port, "/metrics").await.unwrap_or_default().1;
    let storm_stages = stages_since(&failover_stages(&metrics), Some(&stages_converging));
    println!("  storm, podium's parts: {storm_stages}");
    let storm_stats = stats(&storm);
    let since_own = stats(&since_own);
    println!("  storm, each from its own leader's deletion: {since_own}");
    println!(
        "  storm of {storm_n}: {storm_stats}; the last deletion answered after {storm_deleted_ms:.0} ms"
    );
    let rss_timeline = rss.stop().await;
    let rss = rss_peak_mib(pid);
    assert!(op.alive());
    op.kill().await;
    // Only a following entry needs the pods gone; after the last, deletion goes on unwatched.
    let wait = if last { Duration::ZERO } else { pods_timeout };
    namespaces.delete_and_wait(wait).await;
    let bound_ms = |writes: usize| (writes as f64 / raw_per_s * 1000.0).round();
    // One label per pod, and per group its finalizer and one status write.
    let min_writes = pods_n + 2 * groups_n;
    // The bound at the best concurrency swept: what no operator beats at any concurrency.
    let best_per_s = raw_sweep.values().copied().fold(raw_per_s, f64::max);
    let best_bound_ms = (min_writes as f64 / best_per_s * 1000.0).round();
    // The same writes, each kind at the rate a plain client reached for it; and every request
    // of a cold start, with the two Events a new group's first election posts (LeaderElected,
    // BecameLeader), which convergence does not wait for: what the API server is asked to do.
    let kind_ms = |count: usize, kind: &str| count as f64 / by_kind[kind] * 1000.0;
    let by_kind_ms = pods_n as f64 / raw_per_s * 1000.0
        + kind_ms(groups_n, "group_metadata")
        + kind_ms(groups_n, "group_status");
    let with_events_ms = by_kind_ms + kind_ms(2 * groups_n, "event");
    (
        json!({"groups": groups_n, "namespaces": shape.namespaces, "groups_per_namespace": shape.groups_per_ns,
               "pods": pods_n, "operator_ready_ms": ready_ms.round(), "converge_ms": converge_ms.round(), "converge_parts": times, "api_bound_ms": bound_ms(min_writes), "api_bound_best_ms": best_bound_ms,
               "api_bound_by_kind_ms": by_kind_ms.round(), "all_writes_by_kind_ms": with_events_ms.round(), "raw_per_s_by_kind": by_kind,
               "raw_patch_per_s": (raw_per_s * 10.0).round() / 10.0, "raw_patch_per_s_by_concurrency": raw_sweep, "writes": writes,
               "min_writes": min_writes, "idle_writes_60s": idle_writes, "rss_mib": rss,
               "storm_n": storm_n, "storm_deleted_ms": storm_deleted_ms.round(), "storm_from_own_deletion_ms": since_own, "storm_p50_ms": storm_stats["p50"], "storm_p99_ms": storm_stats["p99"],
               "storm_api_bound_ms": bound_ms(storm_n), "storm_requests": storm_requests,
               "converge_requests": requests_between(&before, &after), "failover_under_load_ms": failover_stats,
               "failover_under_load_podium_ms": failover_podium,
               "failover_under_load_stages_ms": failover_stages_ms, "failover_under_load_bench_parts_ms": failover_parts, "storm_stages_ms": storm_stages,
               "failover_under_load_trials_during_convergence": during,
               "concurrency": concurrency, "podium_bin": podium_bin(),
               "timeline": timeline, "rss_timeline": rss_timeline}),
        raw_per_s,
    )
}

/// The processes of the control plane, kwok and podium: the machine's CPU while converging.
const PROFILED: [&str; 7] = [
    "kube-apiserver",
    "etcd",
    "kube-scheduler",
    "kube-controller",
    "kwok",
    "podium",
    "bench",
];

/// CPU seconds (user and system) used so far by the processes named in [`PROFILED`], summed by
/// name (`/proc/<pid>/comm`, which the kernel cuts to 15 bytes).
fn cpu_seconds_by_process() -> BTreeMap<String, f64> {
    let ticks: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let Some(name) = PROFILED.iter().find(|n| comm.trim().starts_with(**n)) else {
            continue;
        };
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let cpu: f64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
            .sum();
        *out.entry(name.to_string()).or_insert(0.0) += cpu / ticks;
    }
    out
}

/// The cores each process of [`PROFILED`] used on average since `before` was taken at `start`
/// (a process that started since counts from its start).
fn cpu_seconds_since(before: &BTreeMap<String, f64>, start: Instant) -> Value {
    let seconds = start.elapsed().as_secs_f64();
    let now = cpu_seconds_by_process();
    let cores: serde_json::Map<String, Value> = now
        .iter()
        .map(|(name, cpu)| {
            let used = cpu - before.get(name).copied().unwrap_or(0.0);
            (
                name.clone(),
                json!((used.max(0.0) / seconds * 100.0).round() / 100.0),
            )
        })
        .collect();
    Value::Object(cores)
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// When podium last wrote any of `pods`, in ms since `start`: the API server stamps each
/// manager's `managedFields` entry with the time of its last change, to the second, so this
/// rounds up to the end of that second.
fn last_write_ms(pods: &[Arc<Pod>], start: jiff::Timestamp) -> Option<f64> {
    let last = pods
        .iter()
        .flat_map(|p| p.metadata.managed_fields.iter().flatten())
        .filter(|m| m.manager.as_deref() == Some(podium_api::MANAGER))
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max()?;
    Some((last.duration_since(start).as_secs_f64() + 1.0) * 1000.0)
}

/// One histogram of the operator's `/metrics` (or one series of it, picked by a label).
#[derive(Clone, Default)]
struct Histo {
    /// Cumulative counts by upper bound, `+Inf` last.
    buckets: Vec<(f64, f64)>,
    sum: f64,
}

impl Histo {
    /// The series of `name` whose labels besides `le` are `labels` (e.g. `stage="slot"`, or
    /// empty for an unlabelled histogram).
    fn parse(text: &str, name: &str, labels: &str) -> Self {
        let value = |l: &str| l.trim().parse::<f64>().ok();
        let mut h = Self::default();
        for line in text.lines() {
            let Some((series, v)) = line.rsplit_once(' ') else {
                continue;
            };
            if let Some(inner) = series
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix("_bucket{"))
                .and_then(|r| r.strip_suffix('}'))
            {
                let mut le = None;
                let mut rest = vec![];
                for part in inner.split(',') {
                    match part.strip_prefix("le=") {
                        Some(b) => le = Some(b.trim_matches('"')),
                        None => rest.push(part),
                    }
                }
                let bound = match le {
                    Some("+Inf") => Some(f64::INFINITY),
                    Some(b) => b.parse().ok(),
                    None => None,
                };
                if let (Some(bound), Some(v), true) = (bound, value(v), rest.join(",") == labels) {
                    h.buckets.push((bound, v));
                }
            } else if series == format!("{name}_sum") || series == format!("{name}_sum{{{labels}}}")
            {
                h.sum = value(v).unwrap_or(f64::NAN);
            }
        }
        h
    }

    /// What was observed since `before` (the same histogram read earlier).
    fn since(&self, before: &Histo) -> Histo {
        let buckets = self
            .buckets
            .iter()
            .map(|(le, c)| {
                let old = before
                    .buckets
                    .iter()
                    .find(|(b, _)| b == le)
                    .map_or(0.0, |b| b.1);
                (*le, c - old)
            })
            .collect();
        Histo {
            buckets,
            sum: self.sum - before.sum,
        }
    }

    /// Count, mean and the bucket bounds the median and the 99th percentile fall under (ms).
    fn summary(&self) -> Value {
        let n = self.buckets.last().map_or(0.0, |b| b.1);
        let bound = |q: f64| {
            self.buckets
                .iter()
                .find(|(_, c)| *c >= (q * n).ceil() && n > 0.0)
                .map(|(le, _)| le * 1000.0)
        };
        let mean = (n > 0.0).then(|| (self.sum / n * 1000.0 * 10.0).round() / 10.0);
        json!({"n": n, "mean_ms": mean, "p50_at_most": bound(0.5), "p99_at_most": bound(0.99)})
    }
}

/// The parts of podium's failovers (`podium_failover_stage_seconds`), as read now.
fn failover_stages(text: &str) -> Vec<(&'static str, Histo)> {
    ["queued", "slot", "moving"]
        .into_iter()
        .map(|stage| {
            let labels = format!("stage=\"{stage}\"");
            (
                stage,
                Histo::parse(text, "podium_failover_stage_seconds", &labels),
            )
        })
        .collect()
}

/// Each part's summary, of what was observed since `before` (none: since the start).
fn stages_since(now: &[(&str, Histo)], before: Option<&[(&str, Histo)]>) -> Value {
    let parts: serde_json::Map<String, Value> = now
        .iter()
        .map(|(stage, h)| {
            let old = before
                .and_then(|b| b.iter().find(|(s, _)| s == stage))
                .map(|(_, h)| h.clone())
                .unwrap_or_default();
            (stage.to_string(), h.since(&old).summary())
        })
        .collect();
    Value::Object(parts)
}

/// The value of an unlabelled metric on the operator's HTTP port (NaN when it cannot be read).
async fn metric_value(port: u16, name: &str) -> f64 {
    let body = http_get(port, "/metrics").await.map(|(_, b)| b);
    body.as_deref()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Which operator build ran: `PODIUM_BIN` (relative to the repository when inside it), or the
/// bench's own build of the host target.
fn podium_bin() -> String {
    match std::env::var("PODIUM_BIN") {
        Ok(bin) => bin
            .strip_prefix(concat!(env!("CARGO_MANIFEST_DIR"), "/"))
            .unwrap_or(&bin)
            .to_string(),
        Err(_) => "the bench's own build (host target)".into(),
    }
}

/// Events podium created or updated in `namespaces` since `since`.
async fn podium_events_since(
    client: &Client,
    namespaces: &[String],
    since: jiff::Timestamp,
) -> usize {
    let events = Api::<k8s_openapi::api::events::v1::Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    events
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("podium"))
        .filter(|e| namespaces.contains(&e.namespace().unwrap_or_default()))
        .filter(|e| {
            let last = e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or(e.event_time.as_ref().map(|t| t.0));
            last.is_some_and(|t| t >= since)
        })
        .count()
}

fn op_pid(op: &Operator) -> u32 {
    op.pid().expect("operator pid")
}

/// Deletes each victim's leader (grace 0) and returns, per victim (namespace, group, leader),
/// the ms from before the first deletion until another pod of its group is labelled leader,
/// as a watch of the `selector` pods sees it. The watch lists first, so that no relabel is
/// seen late; the deletions go out 100 at a time, as fast as the API server takes them.
async fn storm_times(
    pods: &Api<Pod>,
    selector: &str,
    victims: &[(String, String, String)],
    timeout: Duration,
) -> (Vec<f64>, f64, Vec<f64>) {
    let client = pods.clone().into_client();
    let mut waiting: HashMap<(String, String), String> = victims
        .iter()
        .map(|(ns, g, leader)| ((ns.clone(), g.clone()), leader.clone()))
        .collect();
    let events = watcher(pods.clone(), watcher::Config::default().labels(selector));
    let mut events = std::pin::pin!(events);
    loop {
        match events.try_next().await {
            Ok(Some(watcher::Event::InitDone)) => break,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the storm's pod watch ended before its first list"),
            Err(e) => panic!("the storm's pod watch failed before its first list: {e}"),
        }
    }
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    // When each deletion was answered: the API server takes its time over a thousand of them,
    // so each group's failover is also timed from its own leader's deletion.
    let answered: std::sync::Mutex<HashMap<(String, String), f64>> = Default::default();
    let delete = stream::iter(victims)
        .map(|(ns, _, pod)| {
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let answered = &answered;
            async move {
                api.delete(pod, &DeleteParams::default().grace_period(0))
                    .await
                    .unwrap();
                answered.lock().unwrap().insert(
                    (ns.clone(), pod.clone()),
                    start.elapsed().as_secs_f64() * 1000.0,
                );
            }
        })
        .buffer_unordered(100)
        .collect::<Vec<_>>();
    let delete = async {
        delete.await;
        start.elapsed().as_secs_f64() * 1000.0
    };
    let promoted = async {
        let mut times = vec![];
        let mut victim_times = vec![];
        while !waiting.is_empty() {
            let p = match tokio::time::timeout_at(deadline, events.try_next()).await {
                Ok(Ok(Some(watcher::Event::Apply(p) | watcher::Event::InitApply(p)))) => p,
                Ok(Ok(Some(_))) => continue,
                _ => break,
            };
            let key = (
                p.namespace().unwrap_or_default(),
                label(&p, "group").unwrap_or_default(),
            );
            if label(&p, ROLE).as_deref() == Some("leader")
                && waiting.get(&key).is_some_and(|old| *old != p.name_any())
            {
                let old = waiting.remove(&key).unwrap_or_default();
                let now = start.elapsed().as_secs_f64() * 1000.0;
                times.push(now);
                victim_times.push((key.0, old, now));
            }
        }
        (times, victim_times)
    };
    let (deleted_ms, (times, victim_times)) = tokio::join!(delete, promoted);
    assert!(
        waiting.is_empty(),
        "{} groups never got a new leader",
        waiting.len()
    );
    // A new leader can be labelled before the deletion's answer reaches the bench: 0 then.
    let answered = answered.into_inner().unwrap();
    let since_own: Vec<f64> = victim_times
        .into_iter()
        .filter_map(|(ns, pod, at)| answered.get(&(ns, pod)).map(|d| (at - d).max(0.0)))
        .collect();
    (times, deleted_ms, since_own)
}

async fn strip_finalizers(api: &Api<ElectionGroup>) {
    let gs = api.list(&ListParams::default()).await.unwrap().items;
    stream::iter(gs)
        .map(|g| {
            let api = api.clone();
            async move {
                let p = Patch::Merge(json!({"metadata": {"finalizers": null}}));
                let _ = api
                    .patch_metadata(&g.name_any(), &PatchParams::default(), &p)
                    .await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

/// Offset between status.nextHandoff and the relabel a pod watch sees, over `n` handoffs.
async fn schedule_offsets(n: usize) -> Vec<f64> {
    let s = Setup::new("bench-schedule").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    let watch = LeaderWatch::start(&s.ns, "app=x").await;
    s.apply_group(
        "api",
        json!({"selector": {"matchLabels": {"app": "x"}}, "handoff": {"schedule": "@every 10s"}}),
    )
    .await
    .unwrap();
    let mut g = s
        .wait_group("api", "leader", |g| status(g).next_handoff.is_some())
        .await;
    let mut offsets = vec![];
    for _ in 0..n {
        let st = status(&g);
        let due = st.next_handoff.unwrap().0;
        let old = st.leader.unwrap();
        let (new, seen) = watch
            .wait_new_leader(&old, Instant::now(), Duration::from_secs(20))
            .await;
        let seen_wall =
            jiff::Timestamp::now() - jiff::SignedDuration::try_from(seen.elapsed()).unwrap();
        let off = seen_wall.duration_since(due).as_secs_f64() * 1000.0;
        println!("  handoff {old} -> {new}: {off:.0} ms after nextHandoff");
        offsets.push(off);
        g = s
            .wait_group("api", "next", |g| {
                status(g).leader.as_deref() == Some(new.as_str())
                    && status(g).next_handoff.is_some_and(|t| t.0 > due)
            })
            .await;
    }
    offsets
}

fn machine() -> Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    json!({"cores": cores, "memory_gib": mem_gib, "cpu": cpu})
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn report(r: &Value) -> String {
    let mut md = String::new();
    let m = &r["machine"];
    md.push_str(&format!(
        "# podium benchmark\n\nRun {} on {} cores, {} GiB ({}), Kubernetes {} (local control plane, kwok nodes). Release build.\n\n",
        cell(&r["date"]).trim_matches('"'), m["cores"], m["memory_gib"], m["cpu"].as_str().unwrap_or(""), cell(&r["kubernetes"]).trim_matches('"')
    ));
    md.push_str("## Failover and traffic switch (ms)\n\n| measurement | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n");
    for (name, key) in [
        (
            "podium: leader deleted → new leader labelled",
            "failover_delete_ms",
        ),
        (
            "podium: leader NotReady → new leader labelled",
            "failover_unready_ms",
        ),
        (
            "podium: → EndpointSlice holds only the new leader",
            "traffic_switch_ms",
        ),
        (
            "client-go Lease: leader kill -9 → successor leading",
            "lease_kill_ms",
        ),
        (
            "client-go Lease: leader released → successor leading",
            "lease_release_ms",
        ),
        (
            "podium: @every 10s handoff, offset from nextHandoff",
            "schedule_offset_ms",
        ),
    ] {
        md.push_str(&stats_row(name, &r[key]));
    }
    md.push_str(&format!(
        "\nLease kill -9 median / podium delete-failover p99: **{}×**. Raw API capacity: {} pod label patches/s at concurrency {}.\n\n",
        cell(&r["lease_median_over_podium_p99"]), cell(&r["raw_patch_per_s"]), cell(&r["concurrency"])
    ));
    md.push_str(&app_report(r));
    md.push_str(&failure_kinds::report(&r["failure_kinds"]));
    md.push_str("## Scale (one operator, groups of 5 pods)\n\n| groups | namespaces | pods | converge ms | API bound ms | writes | min writes | idle writes 60 s | peak RSS MiB | storm n | storm p50 ms | storm p99 ms | storm bound ms | failover under load p99 ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for s in r["scale"].as_array().unwrap() {
        let row = [
            &s["groups"],
            &s["namespaces"],
            &s["pods"],
            &s["converge_ms"],
            &s["api_bound_ms"],
            &s["writes"],
            &s["min_writes"],
            &s["idle_writes_60s"],
            &s["rss_mib"],
            &s["storm_n"],
            &s["storm_p50_ms"],
            &s["storm_p99_ms"],
            &s["storm_api_bound_ms"],
            &s["failover_under_load_ms"]["p99"],
        ];
        let cells: Vec<String> = row.into_iter().map(cell).collect();
        md.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    md.push_str("\n`writes` counts PATCHes of pods and ElectionGroups from the API server's `apiserver_request_total`; `min_writes` is one pod write per pod plus, per group, the finalizer it gets on first sight and one status write. The difference is the probe group's writes (below) and writes that conflicted or were repeated. `API bound` is `min_writes` at the raw patch rate a plain client reaches at the operator's concurrency (`raw_patch_per_s`): no operator converges faster. `idle writes` counts pod and ElectionGroup writes plus the Events podium posted in the bench namespaces. In the storm, `storm n` leaders are deleted at once (1,000 from 10,000 groups up, else up to 100); each group costs up to two pod writes and a status write: a deletion with grace 0 first marks the leader terminating, and the terminating leader is relabelled follower before the successor is labelled leader (break-before-make); a reserved successor's term was recorded when it was reserved, so its label goes first and the status write after it, behind other groups' promotions; `storm bound` counts only the promotion's label, one write per group, at the raw patch rate. `failover under load`: once the cold-started operator has synced its caches (`operator_ready_ms` in results.json), and while the groups converge, the leader of an unrelated, settled group of 5 pods (in a namespace of its own) is deleted again and again, timed until another of its pods is labelled leader. The operator runs on every namespace; `NxM` runs spread the groups over N namespaces. `converge` is the later of the last group settled (its status shows a leader and 5 members) and the last pod label podium wrote (the API server's `managedFields` time, to the second, rounded up); the bench's own list that confirms every label is timed apart (`verified_ms`).\n");
    for s in r["scale"].as_array().unwrap() {
        md.push_str(&format!(
            "\n**{} groups × {} namespace(s)** (operator: {}). Raw label patches/s by concurrency: {}; the API bound at the best of them: {} ms. Other writes at the operator's concurrency, per s: {}; the bound with each kind of write at its own rate: {} ms; every write of the cold start at those rates, with the two Events a new group's election posts (not a bound: convergence does not wait for Events): {} ms. Converging: {}. Failover under load as podium timed it (ms, from its reconcile to its plan applied): {}. Requests while converging: {}. Requests during the storm: {}.\n",
            cell(&s["groups"]),
            cell(&s["namespaces"]),
            s["podium_bin"].as_str().unwrap_or("–"),
            s["raw_patch_per_s_by_concurrency"],
            cell(&s["api_bound_best_ms"]),
            s["raw_per_s_by_kind"],
            cell(&s["api_bound_by_kind_ms"]),
            cell(&s["all_writes_by_kind_ms"]),
            s["converge_parts"],
            s["failover_under_load_podium_ms"],
            s["converge_requests"],
            s["storm_requests"],
        ));
    }
    md
}

/// The application's view and the idle cost, as markdown.
fn app_report(r: &Value) -> String {
    let mut md = String::new();
    let secs = |k: &str| {
        let t = &r[k];
        format!(
            "{} s / {} s / {} s",
            cell(&t["lease_duration_s"]),
            cell(&t["renew_deadline_s"]),
            cell(&t["retry_period_s"])
        )
    };
    md.push_str("## The application's view of failover (ms)\n\nTimes are taken by the bench when it reads the member process's stdout line: podium's through `podium-member-go` (the Go client) run as each pod's process; client-go's from the candidate's own `LEADING` line.\n\n| measurement | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n");
    for (name, key) in [
        (
            "podium app failover: leader pod deleted → successor's process prints `started`"
                .to_string(),
            "app_failover_ms",
        ),
        (
            "podium app stepdown: manual handoff → old leader's process prints `stopped`"
                .to_string(),
            "app_stepdown_ms",
        ),
        (
            "podium app handoff: manual handoff → new leader's process prints `started`"
                .to_string(),
            "app_handoff_started_ms",
        ),
        (
            format!(
                "client-go Lease default ({}): kill -9 → successor leading",
                secs("lease_default")
            ),
            "lease_kill_ms",
        ),
        (
            format!(
                "client-go Lease tuned ({}): kill -9 → successor leading",
                secs("lease_tuned")
            ),
            "lease_tuned_kill_ms",
        ),
    ] {
        md.push_str(&stats_row(&name, &r[key]));
    }
    md.push_str(&format!(
        "\nTuned Lease kill -9 median / podium app failover p99: **{}×**. Leader changes while idle (nothing provoking them): default {}, tuned {}.\n\n",
        cell(&r["lease_tuned_kill_median_over_app_failover_p99"]),
        cell(&r["lease_idle_leader_changes"]["default"]),
        cell(&r["lease_idle_leader_changes"]["tuned"]),
    ));
    let rows = &r["idle"]["rows"];
    if rows.as_object().is_some_and(|m| !m.is_empty()) {
        let bg = &r["idle"]["background_writes_per_s"];
        md.push_str(&format!(
            "## Idle API writes (one group, {} s window)\n\nWrite requests (POST, PUT, PATCH, APPLY, DELETE) from the API server's `apiserver_request_total`, on pods, ElectionGroups and Events for podium and on Leases for client-go, less the background rate measured first with nothing of the bench running ({} writes/s on pods, ElectionGroups and Events; {} on Leases: kwok's node Leases, the controller manager's and scheduler's). `ns changes` counts what a watch of the bench namespace saw change on the same kinds, as a cross-check immune to other namespaces' writes. Raw API capacity: {} pod label patches/s.\n\n| system | writes in window | background | writes / group / s | ns changes / group / s | at 1,000 groups, writes/s | % of raw patch capacity |\n|---|---|---|---|---|---|---|\n",
            cell(&r["idle"]["window_s"]),
            cell(&bg["pods_electiongroups_events"]),
            cell(&bg["leases"]),
            cell(&r["raw_patch_per_s"]),
        ));
        for (name, key) in [
            ("podium (operator + 3 member processes)", "podium"),
            ("client-go Lease default (3 candidates)", "lease_default"),
            ("client-go Lease tuned (3 candidates)", "lease_tuned"),
        ] {
            let row = &rows[key];
            if row.is_null() {
                continue;
            }
            md.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {} |\n",
                cell(&row["writes"]),
                cell(&row["background_writes"]),
                cell(&row["per_group_per_s"]),
                cell(&row["ns_changes_per_group_per_s"]),
                cell(&row["per_1000_groups_per_s"]),
                cell(&row["pct_of_raw_patch_capacity"]),
            ));
        }
        md.push('\n');
    }
    md
}

#[tokio::main]
async fn main() {
    let trials = env_usize("BENCH_TRIALS", 50);
    let app_trials = env_usize("BENCH_APP_TRIALS", 30);
    let idle_s = env_usize("BENCH_IDLE_SECONDS", 30) as u64;
    let concurrency = env_usize("BENCH_CONCURRENCY", 16);
    let handoffs = env_usize("BENCH_HANDOFFS", 10);
    let lease_kills = env_usize("BENCH_LEASE_KILLS", 5);
    let lease_releases = env_usize("BENCH_LEASE_RELEASES", 10);
    let tuned_kills = env_usize("BENCH_LEASE_TUNED_KILLS", 20);
    let kind_trials = env_usize("BENCH_KIND_TRIALS", 10);
    let node_loss_trials = env_usize("BENCH_NODE_LOSS_TRIALS", 5);
    let kind_lease_trials = env_usize("BENCH_KIND_LEASE_TRIALS", 5);
    let tuned = LeaseTimings::tuned_from_env();
    // Pods and groups for the scale runs are created faster than the operator writes.
    let create_concurrency = env_usize("BENCH_CREATE_CONCURRENCY", 64);
    // `none` (or nothing) runs no scale entry.
    let mut scales: Vec<Shape> = std::env::var("BENCH_SCALES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter(|e| !e.trim().is_empty() && e.trim() != "none")
        .map(Shape::parse)
        .collect();
    if let Ok(g) = std::env::var("BENCH_GROUPS")
        && !g.trim().is_empty()
    {
        scales.push(Shape::parse(&g));
    }
    std::fs::create_dir_all(out_dir()).unwrap();
    let begun = Instant::now();
    install_crd().await;
    let client = client().await;
    let version = client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_default();

    // The idle baseline runs first, with nothing of the bench running yet.
    let bg = if idle_s > 0 {
        println!("idle baseline: {idle_s} s with nothing of the bench running");
        let bg = background(Duration::from_secs(idle_s)).await;
        println!(
            "  background writes/s: pods+electiongroups+events {:.2}, leases {:.2}",
            bg.podium_per_s, bg.leases_per_s
        );
        Some(bg)
    } else {
        None
    };

    let app = if app_trials > 0 || idle_s > 0 {
        println!(
            "application's view (podium-member-go): {app_trials} leader deletions and {app_trials} manual handoffs"
        );
        Some(app_failover(app_trials, idle_s).await)
    } else {
        None
    };

    let (delete_ms, unready_ms, traffic_ms) = if trials > 0 {
        println!("failover: {trials} delete and {trials} NotReady trials");
        let r = failover(trials).await;
        println!(
            "  delete {}  unready {}  traffic {}",
            stats(&r.0),
            stats(&r.1),
            stats(&r.2)
        );
        r
    } else {
        (vec![], vec![], vec![])
    };

    let lease_default = if lease_kills + lease_releases > 0 || idle_s > 0 {
        println!(
            "client-go Lease baseline ({}): {lease_kills} kill -9 and {lease_releases} release trials",
            LeaseTimings::DEFAULT.label()
        );
        Some(lease_baseline(LeaseTimings::DEFAULT, lease_kills, lease_releases, idle_s).await)
    } else {
        None
    };
    let lease_tuned = if tuned_kills > 0 || idle_s > 0 {
        println!(
            "client-go Lease, tuned ({}): {tuned_kills} kill -9 trials",
            tuned.label()
        );
        Some(lease_baseline(tuned, tuned_kills, 0, idle_s).await)
    } else {
        None
    };

    let kinds = if kind_trials + node_loss_trials + kind_lease_trials == 0 {
        Value::Null
    } else if failure_kinds::available() {
        failure_kinds::failure_kinds(kind_trials, node_loss_trials, kind_lease_trials).await
    } else {
        println!("failure kinds: skipped, the real node is not up (make cluster-up)");
        Value::Null
    };

    let mut scale_rows = vec![];
    let mut raw = 0.0;
    let entries = scales.len();
    for (i, shape) in scales.into_iter().enumerate() {
        println!(
            "scale: {} namespace(s) of {} groups",
            shape.namespaces, shape.groups_per_ns
        );
        let last = i + 1 == entries;
        let (row, raw_per_s) = scale(shape, concurrency, create_concurrency, last).await;
        raw = f64::max(raw, raw_per_s);
        scale_rows.push(row);
    }
    if raw == 0.0 && idle_s > 0 {
        println!("raw API capacity: 1000 pod label patches at concurrency {concurrency}");
        raw = raw_patch_rate(concurrency).await;
        println!("  {raw:.1} patches/s");
    }

    let offsets = if handoffs > 0 {
        println!("schedule punctuality: {handoffs} handoffs of @every 10s");
        schedule_offsets(handoffs).await
    } else {
        vec![]
    };

    let ratio = |num: &Value, den: &Value| match (num.as_f64(), den.as_f64()) {
        (Some(n), Some(d)) if d > 0.0 => json!((n / d * 10.0).round() / 10.0),
        _ => Value::Null,
    };
    let delete_stats = stats(&delete_ms);
    let lease_kill = lease_default
        .as_ref()
        .map(|r| r.kill_ms.clone())
        .unwrap_or_default();
    let lease_release = lease_default
        .as_ref()
        .map(|r| r.release_ms.clone())
        .unwrap_or_default();
    let tuned_kill = lease_tuned
        .as_ref()
        .map(|r| r.kill_ms.clone())
        .unwrap_or_default();
    let lease_kill_stats = stats(&lease_kill);
    let tuned_kill_stats = stats(&tuned_kill);
    let app_samples =
        |f: fn(&AppRun) -> &Vec<f64>| app.as_ref().map(|a| f(a).clone()).unwrap_or_default();
    let app_failover_ms = app_samples(|a| &a.failover_ms);
    let app_failover_stats = stats(&app_failover_ms);
    let app_stepdown_ms = app_samples(|a| &a.stepdown_ms);

    // Idle writes per group per second, less the background; and at 1,000 groups.
    let mut idle_rows = serde_json::Map::new();
    if let Some(bg) = &bg {
        let rows = [
            (
                "podium",
                app.as_ref().and_then(|a| a.idle.clone()),
                bg.podium_per_s,
            ),
            (
                "lease_default",
                lease_default.as_ref().and_then(|r| r.idle.clone()),
                bg.leases_per_s,
            ),
            (
                "lease_tuned",
                lease_tuned.as_ref().and_then(|r| r.idle.clone()),
                bg.leases_per_s,
            ),
        ];
        for (name, w, bg_per_s) in rows {
            let Some(w) = w else { continue };
            let mut row = idle_row(&w, bg_per_s, 1);
            let per_group = row["per_group_per_s"].as_f64().unwrap_or(0.0);
            row["per_1000_groups_per_s"] = json!((per_group * 1000.0 * 10.0).round() / 10.0);
            row["pct_of_raw_patch_capacity"] = if raw > 0.0 {
                json!((per_group * 1000.0 / raw * 100.0 * 10.0).round() / 10.0)
            } else {
                Value::Null
            };
            idle_rows.insert(name.into(), row);
        }
    }
    let idle_per_group: serde_json::Map<String, Value> = idle_rows
        .iter()
        .map(|(k, v)| (k.clone(), v["per_group_per_s"].clone()))
        .collect();

    let results = json!({
        "date": jiff::Timestamp::now().to_string(),
        "kubernetes": version,
        "machine": machine(),
        "concurrency": concurrency,
        "failover_delete_ms": delete_stats,
        "failover_unready_ms": stats(&unready_ms),
        "traffic_switch_ms": stats(&traffic_ms),
        "lease_kill_ms": lease_kill_stats,
        "lease_release_ms": stats(&lease_release),
        "schedule_offset_ms": stats(&offsets),
        "lease_median_over_podium_p99": ratio(&lease_kill_stats["p50"], &delete_stats["p99"]),
        "app_failover_ms": app_failover_stats,
        "app_failover_member_clock_ms": stats(&app_samples(|a| &a.failover_at_ms)),
        "app_stepdown_ms": stats(&app_stepdown_ms),
        "app_handoff_started_ms": stats(&app_samples(|a| &a.handoff_started_ms)),
        "lease_tuned_kill_ms": tuned_kill_stats,
        "lease_tuned": tuned.json(),
        "lease_default": LeaseTimings::DEFAULT.json(),
        "lease_idle_leader_changes": {
            "default": lease_default.as_ref().filter(|r| r.idle.is_some()).map(|r| r.idle_leader_changes),
            "tuned": lease_tuned.as_ref().filter(|r| r.idle.is_some()).map(|r| r.idle_leader_changes),
        },
        "lease_tuned_kill_median_over_app_failover_p99": ratio(&tuned_kill_stats["p50"], &app_failover_stats["p99"]),
        "idle_writes_per_group_per_s": idle_per_group,
        "idle": {
            "window_s": idle_s,
            "background_writes_per_s": bg.as_ref().map(|b| json!({
                "pods_electiongroups_events": (b.podium_per_s * 1000.0).round() / 1000.0,
                "leases": (b.leases_per_s * 1000.0).round() / 1000.0,
                "window_s": (b.window.secs * 10.0).round() / 10.0,
            })),
            "rows": idle_rows,
        },
        "raw_patch_per_s": (raw * 10.0).round() / 10.0,
        "failure_kinds": kinds,
        "scale": scale_rows,
        "samples": {"failover_delete_ms": delete_ms, "failover_unready_ms": unready_ms, "lease_kill_ms": lease_kill, "lease_release_ms": lease_release,
                    "app_failover_ms": app_failover_ms, "app_stepdown_ms": app_stepdown_ms, "lease_tuned_kill_ms": tuned_kill},
        "duration_s": begun.elapsed().as_secs(),
    });
    println!(
        "app failover {}  app stepdown {}  lease tuned kill {}  lease default kill {}",
        results["app_failover_ms"],
        results["app_stepdown_ms"],
        results["lease_tuned_kill_ms"],
        results["lease_kill_ms"]
    );
    println!(
        "lease_tuned_kill_median_over_app_failover_p99 = {}; idle writes per group per s: {}",
        results["lease_tuned_kill_median_over_app_failover_p99"],
        results["idle_writes_per_group_per_s"]
    );
    std::fs::write(
        out_dir().join("results.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
    std::fs::write(out_dir().join("report.md"), report(&results)).unwrap();
    println!(
        "wrote {}/results.json and report.md in {} s",
        out_dir().display(),
        begun.elapsed().as_secs()
    );
}
