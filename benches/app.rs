//! The application's view: `podium-member-go` (the Go client) run as each pod's process, its
//! `started` and `stopped` lines timed as the bench reads them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use podium_bench::config::Config;
use podium_testkit::groups::{Setup, status};
use podium_testkit::support::{kubeconfig_path, repo_root};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::idle::{IdleWindow, PODIUM_RESOURCES, idle_window};
use crate::namespaces::wait_ns_gone;

/// One line a member process printed, stamped when the bench read it.
#[derive(Clone, Debug)]
pub struct MemberEvent {
    pod: String,
    event: String,
    term: Option<i64>,
    leader: Option<String>,
    at: Option<jiff::Timestamp>,
    seen: Instant,
}

/// `podium-member-go` processes, one per pod, as the pods' own processes; their stdout lines
/// are read as they come.
pub struct AppMembers {
    ns: String,
    bin: PathBuf,
    /// Where each process's stderr goes, `<namespace>-<pod>.log`.
    logs: PathBuf,
    procs: HashMap<String, tokio::process::Child>,
    events: Arc<Mutex<Vec<MemberEvent>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl AppMembers {
    fn new(ns: &str, logs: PathBuf) -> Self {
        let bin = repo_root().join("target/go/podium-member-go");
        assert!(
            bin.exists(),
            "{} is missing: `make go-client` builds it (make bench does first)",
            bin.display()
        );
        Self {
            ns: ns.to_string(),
            bin,
            logs,
            procs: HashMap::new(),
            events: Arc::default(),
            changed: Arc::default(),
        }
    }

    fn spawn(&mut self, pod: &str) {
        std::fs::create_dir_all(&self.logs).unwrap();
        let err = std::fs::File::create(self.logs.join(format!("{}-{pod}.log", self.ns))).unwrap();
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
pub struct AppRun {
    pub failover_ms: Vec<f64>,
    pub failover_at_ms: Vec<f64>,
    pub stepdown_ms: Vec<f64>,
    pub handoff_started_ms: Vec<f64>,
    pub idle: Option<IdleWindow>,
}

pub async fn app_failover(cfg: &Config) -> AppRun {
    let (trials, idle_s) = (cfg.app_trials, cfg.idle_s);
    let s = Setup::new("bench-app").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group("api", json!({"selector": {"matchLabels": {"app": "x"}}}))
        .await
        .unwrap();
    let mut members = AppMembers::new(&s.ns.name, cfg.out.join("logs"));
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
