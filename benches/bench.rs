//! `make bench`: failover, traffic switch, scale and schedule figures for podium, beside
//! client-go's Lease-based election, all measured against the local control plane.
//! Writes target/bench/results.json and target/bench/report.md (plot.py draws the PNG).

#[path = "../e2e/groups.rs"]
#[allow(dead_code)]
mod groups;
#[path = "../e2e/support.rs"]
#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use podium::crd::ElectionGroup;
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

fn out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench")
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

/// client-go Lease election: three candidates; kill -9 or SIGTERM the leader, time the successor.
async fn lease_baseline(kills: usize, releases: usize) -> (Vec<f64>, Vec<f64>) {
    let ns = TestNs::new("bench-lease").await;
    let bin = out_dir().join("lease-baseline");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, i128)>();
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
                if let ["LEADING", id, nanos] = parts[..] {
                    let _ = tx.send((id.to_string(), nanos.parse().unwrap_or(0)));
                }
            }
        });
        Candidate { child }
    };
    let mut cands: HashMap<String, Candidate> = HashMap::new();
    for i in 0..3 {
        cands.insert(format!("c{i}"), spawn(format!("c{i}")));
    }
    let (mut leader, _) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .unwrap()
        .unwrap();
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
            let (id, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .unwrap()
                .unwrap();
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
    (kill_ms, release_ms)
}

/// API server request counters by (verb, resource, subresource).
async fn request_counts(client: &Client) -> BTreeMap<(String, String, String), f64> {
    let text = client
        .request_text(http::Request::get("/metrics").body(vec![]).unwrap())
        .await
        .expect("apiserver /metrics");
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
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
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| (kib / 1024.0 * 10.0).round() / 10.0)
}

/// Leaders per group, from pod labels.
fn leaders_by_group(pods: &[Arc<Pod>]) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for p in pods {
        if label(p.as_ref(), ROLE).as_deref() == Some("leader") {
            m.entry(label(p.as_ref(), "group").unwrap_or_default())
                .or_default()
                .push(p.name_any());
        }
    }
    m
}

async fn scale(groups_n: usize, concurrency: usize) -> (Value, f64) {
    let ns = TestNs::new(&format!("bench-scale-{groups_n}")).await;
    let client = ns.client.clone();
    let pods_n = groups_n * 5;
    println!("  creating {pods_n} pods and {groups_n} groups");
    let pods_api = ns.api::<Pod>();
    stream::iter(0..pods_n)
        .map(|i| {
            let api = pods_api.clone();
            async move {
                let g = format!("g{}", i / 5);
                let p = pod_manifest(&format!("{g}-{}", i % 5), &[("group", &g)], &[]);
                api.create(&PostParams::default(), &p).await.unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    wait_for_list(
        &pods_api,
        watcher::Config::default(),
        Duration::from_secs(600),
        "pods ready",
        |p| p.len() == pods_n && p.iter().all(|p| pod_ready(p)),
    )
    .await;
    let groups_api: Api<ElectionGroup> = ns.api();
    stream::iter(0..groups_n)
        .map(|i| {
            let api = groups_api.clone();
            async move {
                let body = json!({"apiVersion": "podium.dev/v1alpha1", "kind": "ElectionGroup",
                    "metadata": {"name": format!("g{i}")},
                    "spec": {"selector": {"matchLabels": {"group": format!("g{i}")}}}});
                api.patch(
                    &format!("g{i}"),
                    &PatchParams::apply("bench"),
                    &Patch::Apply(body),
                )
                .await
                .unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;

    // Raw capacity first: label patches from a plain client at the operator's concurrency.
    let raw_n = pods_n.min(2000);
    let raw_start = Instant::now();
    stream::iter(0..raw_n)
        .map(|i| {
            let api = pods_api.clone();
            async move {
                let g = i / 5;
                let patch = json!({"metadata": {"labels": {"bench-raw": i.to_string()}}});
                api.patch(
                    &format!("g{g}-{}", i % 5),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
                .unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let raw_per_s = raw_n as f64 / raw_start.elapsed().as_secs_f64();

    let before = request_counts(&client).await;
    let start = Instant::now();
    let mut op = Operator::start(&ns.name, &["--concurrency", &concurrency.to_string()]).await;
    let pid = op_pid(&op);
    let settled = wait_for_list(
        &groups_api,
        watcher::Config::default(),
        Duration::from_secs(900),
        "groups settled",
        |gs| {
            gs.len() == groups_n
                && gs.iter().all(|g| {
                    let st = status(g);
                    st.leader.is_some()
                        && st.members == 5
                        && st.observed_generation == g.metadata.generation
                })
        },
    )
    .await;
    wait_for_list(
        &pods_api,
        watcher::Config::default(),
        Duration::from_secs(300),
        "pods labelled",
        |p| {
            p.iter().all(|p| label(p.as_ref(), ROLE).is_some())
                && leaders_by_group(p).values().all(|l| l.len() == 1)
                && leaders_by_group(p).len() == groups_n
        },
    )
    .await;
    let converge_ms = start.elapsed().as_secs_f64() * 1000.0;
    drop(settled);
    // Status writes land last; give in-flight Events a moment before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = request_counts(&client).await;
    let writes = writes_between(&before, &after, &["pods", "electiongroups"]);
    println!("  converged in {converge_ms:.0} ms with {writes} writes");

    let idle_start = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle = request_counts(&client).await;
    // Pod and group writes in this window can only be podium's; Events are counted in the
    // namespace by reporting controller, because other components post Events cluster-wide.
    let idle_writes = writes_between(&after, &idle, &["pods", "electiongroups"])
        + podium_events_since(&ns, idle_start).await as f64;
    println!("  idle 60 s: {idle_writes} writes");

    // Storm: delete 100 leaders at once.
    let storm_n = groups_n.min(100);
    let gs = groups_api.list(&ListParams::default()).await.unwrap().items;
    let victims: Vec<(String, String)> = gs
        .iter()
        .take(storm_n)
        .map(|g| (g.name_any(), status(g).leader.unwrap()))
        .collect();
    let storm_start = Instant::now();
    stream::iter(victims.clone())
        .map(|(_, pod)| {
            let api = pods_api.clone();
            async move {
                api.delete(&pod, &DeleteParams::default().grace_period(0))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(storm_n)
        .collect::<Vec<_>>()
        .await;
    let storm = storm_times(&pods_api, &victims, storm_start).await;
    let storm_stats = stats(&storm);
    println!("  storm of {storm_n}: {storm_stats}");
    let rss = rss_peak_mib(pid);
    assert!(op.alive());
    op.kill().await;
    strip_finalizers(&groups_api).await;
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
        .delete(&ns.name, &DeleteParams::background())
        .await;
    (
        json!({"groups": groups_n, "pods": pods_n, "converge_ms": converge_ms.round(), "writes": writes,
               "min_writes": pods_n + groups_n, "idle_writes_60s": idle_writes,
               "rss_mib": rss, "storm_p50_ms": storm_stats["p50"], "storm_p99_ms": storm_stats["p99"],
               "concurrency": concurrency}),
        raw_per_s,
    )
}

/// Events podium created or updated in the namespace since `since`.
async fn podium_events_since(ns: &TestNs, since: jiff::Timestamp) -> usize {
    let events = ns
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    events
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("podium"))
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

/// For each (group, deleted leader): ms until another pod of that group is labelled leader.
async fn storm_times(pods: &Api<Pod>, victims: &[(String, String)], start: Instant) -> Vec<f64> {
    let mut waiting: HashMap<String, String> = victims.iter().cloned().collect();
    let mut times = vec![];
    let stream = watcher(pods.clone(), watcher::Config::default()).applied_objects();
    let mut stream = std::pin::pin!(stream);
    let deadline = start + Duration::from_secs(300);
    while !waiting.is_empty() && Instant::now() < deadline {
        let Ok(Ok(Some(p))) =
            tokio::time::timeout(Duration::from_secs(30), stream.try_next()).await
        else {
            break;
        };
        let g = label(&p, "group").unwrap_or_default();
        if label(&p, ROLE).as_deref() == Some("leader")
            && waiting.get(&g).is_some_and(|old| *old != p.name_any())
        {
            waiting.remove(&g);
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    assert!(
        waiting.is_empty(),
        "{} groups never got a new leader",
        waiting.len()
    );
    times
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
        let s = &r[key];
        md.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            cell(&s["n"]),
            cell(&s["p50"]),
            cell(&s["p90"]),
            cell(&s["p99"]),
            cell(&s["max"])
        ));
    }
    md.push_str(&format!(
        "\nLease kill -9 median / podium delete-failover p99: **{}×**. Raw API capacity: {} pod label patches/s at concurrency {}.\n\n",
        cell(&r["lease_median_over_podium_p99"]), cell(&r["raw_patch_per_s"]), cell(&r["concurrency"])
    ));
    md.push_str("## Scale (one operator, groups of 5 pods)\n\n| groups | pods | converge ms | writes | min writes | idle writes 60 s | peak RSS MiB | storm p50 ms | storm p99 ms |\n|---|---|---|---|---|---|---|---|---|\n");
    for s in r["scale"].as_array().unwrap() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s["groups"],
            s["pods"],
            cell(&s["converge_ms"]),
            cell(&s["writes"]),
            s["min_writes"],
            cell(&s["idle_writes_60s"]),
            cell(&s["rss_mib"]),
            cell(&s["storm_p50_ms"]),
            cell(&s["storm_p99_ms"])
        ));
    }
    md.push_str("\n`writes` counts PATCHes of pods and ElectionGroups from the API server's `apiserver_request_total`; `min_writes` is one pod write per pod plus one status write per group. The difference is the finalizer each group gets on first sight (one metadata write per group). `idle writes` counts pod and ElectionGroup writes plus the Events podium posted in the bench namespace. In the storm each group costs two pod writes: the terminating leader is relabelled follower before the successor is labelled leader (break-before-make).\n");
    md
}

#[tokio::main]
async fn main() {
    let trials = env_usize("BENCH_TRIALS", 50);
    let concurrency = env_usize("BENCH_CONCURRENCY", 16);
    let handoffs = env_usize("BENCH_HANDOFFS", 10);
    let mut scales: Vec<usize> = std::env::var("BENCH_SCALES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|g| g.trim().parse().ok())
        .collect();
    if let Some(g) = std::env::var("BENCH_GROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        scales.push(g);
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

    println!("failover: {trials} delete and {trials} NotReady trials");
    let (delete_ms, unready_ms, traffic_ms) = failover(trials).await;
    println!(
        "  delete {}  unready {}  traffic {}",
        stats(&delete_ms),
        stats(&unready_ms),
        stats(&traffic_ms)
    );

    println!("client-go Lease baseline: 5 kill -9 and 10 release trials");
    let (lease_kill, lease_release) = lease_baseline(
        env_usize("BENCH_LEASE_KILLS", 5),
        env_usize("BENCH_LEASE_RELEASES", 10),
    )
    .await;

    let mut scale_rows = vec![];
    let mut raw = 0.0;
    for g in scales {
        println!("scale: {g} groups");
        let (row, raw_per_s) = scale(g, concurrency).await;
        raw = f64::max(raw, raw_per_s);
        scale_rows.push(row);
    }

    println!("schedule punctuality: {handoffs} handoffs of @every 10s");
    let offsets = schedule_offsets(handoffs).await;

    let delete_stats = stats(&delete_ms);
    let lease_kill_stats = stats(&lease_kill);
    let ratio = match (
        lease_kill_stats["p50"].as_f64(),
        delete_stats["p99"].as_f64(),
    ) {
        (Some(l), Some(p)) if p > 0.0 => json!((l / p * 10.0).round() / 10.0),
        _ => Value::Null,
    };
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
        "lease_median_over_podium_p99": ratio,
        "raw_patch_per_s": (raw * 10.0).round() / 10.0,
        "scale": scale_rows,
        "samples": {"failover_delete_ms": delete_ms, "failover_unready_ms": unready_ms, "lease_kill_ms": lease_kill, "lease_release_ms": lease_release},
        "duration_s": begun.elapsed().as_secs(),
    });
    std::fs::write(
        out_dir().join("results.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
    std::fs::write(out_dir().join("report.md"), report(&results)).unwrap();
    println!(
        "wrote target/bench/results.json and report.md in {} s",
        begun.elapsed().as_secs()
    );
}
