//! Applications learn their role: `podium member` (exec, watch, files) and the Rust client, run
//! as a member pod's process would (its identity in POD_NAME / POD_NAMESPACE, a ServiceAccount
//! bound to config/samples/member-rbac.yaml), against the operator and the local control plane.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use podium_member::{Member, MemberConfig, Role};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::groups::{Setup, status};
use crate::support::{kubectl, service_account_kubeconfig};

/// Applies the sample member RBAC in the namespace and returns a kubeconfig for its account.
async fn member_kubeconfig(ns: &str) -> PathBuf {
    let rbac = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/samples/member-rbac.yaml");
    kubectl(&["-n", ns, "apply", "-f", rbac.to_str().unwrap()]);
    service_account_kubeconfig(ns, "podium-member", &format!("{ns}-member")).await
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e-logs");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `podium member <args>` as pod `pod` would run it; stdout to `out`, stderr to `out` with the
/// extension `log`.
fn member(ns: &str, pod: &str, kubeconfig: &Path, args: &[&str], out: &Path) -> Child {
    let err = std::fs::File::create(out.with_extension("log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_podium"))
        .arg("member")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", ns)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .expect("start podium member")
}

/// Waits until `ok` holds for the file's lines.
async fn wait_lines(path: &Path, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if ok(&lines) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within 30 s in {}:\n{}",
            path.display(),
            lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn hand_over(s: &Setup, to: &str) {
    let patch = json!({"metadata": {"annotations": {"podium.dev/handoff-to": to}}});
    s.groups()
        .patch("g", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

async fn term_of(s: &Setup, leader: &str) -> i64 {
    status(&s.wait_leader("g", "app=x", leader).await).term
}

/// A three-pod group led by p0, and a kubeconfig with the member Role.
async fn group(prefix: &str, spec: serde_json::Value) -> (Setup, PathBuf) {
    let s = Setup::new(prefix).await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group("g", spec).await.unwrap();
    s.wait_leader("g", "app=x", "p0").await;
    let kc = member_kubeconfig(&s.ns.name).await;
    (s, kc)
}

/// The command `exec` supervises: logs its start and its SIGTERM with the pod and term.
fn logging_command(log: &Path) -> Vec<String> {
    let l = log.display();
    let script = format!(
        "echo \"start $POD_NAME $PODIUM_TERM\" >> {l}; \
         trap 'echo \"stop $POD_NAME $PODIUM_TERM\" >> {l}; exit 0' TERM; \
         while :; do sleep 0.05; done"
    );
    vec!["sh".into(), "-c".into(), script]
}

/// Per pod, starts and stops alternate with the same term; returns the pods still running.
fn running(lines: &[String]) -> Vec<(String, i64)> {
    let mut open: Vec<(String, i64)> = Vec::new();
    for l in lines {
        let parts: Vec<&str> = l.split_whitespace().collect();
        let [event, pod, term] = parts[..] else {
            panic!("unexpected line {l:?}");
        };
        let term: i64 = term.parse().unwrap();
        match event {
            "start" => {
                assert!(
                    !open.iter().any(|(p, _)| p == pod),
                    "{pod} started twice without a stop: {lines:?}"
                );
                open.push((pod.to_string(), term));
            }
            "stop" => {
                let at = open
                    .iter()
                    .position(|(p, t)| p == pod && *t == term)
                    .unwrap_or_else(|| {
                        panic!("{pod} stopped term {term} it never started: {lines:?}")
                    });
                open.remove(at);
            }
            _ => panic!("unexpected line {l:?}"),
        }
    }
    open
}

#[tokio::test]
async fn exec_runs_the_command_only_while_leading_through_every_kind_of_handoff() {
    let (s, kc) = group(
        "member-exec",
        json!({"selector": {"matchLabels": {"app": "x"}}}),
    )
    .await;
    let ns = s.ns.name.clone();
    let log = log_dir().join(format!("{ns}-exec.log"));
    let _ = std::fs::remove_file(&log);
    let cmd = logging_command(&log);
    let mut args = vec!["exec", "--grace", "3s", "--"];
    args.extend(cmd.iter().map(String::as_str));
    let _procs: Vec<Child> = ["p0", "p1", "p2"]
        .iter()
        .map(|p| member(&ns, p, &kc, &args, &log_dir().join(format!("{ns}-{p}.out"))))
        .collect();
    let settled = |leader: String, term: i64| {
        move |lines: &[String]| running(lines) == [(leader.clone(), term)]
    };
    wait_lines(&log, "p0 runs under term 1", settled("p0".into(), 1)).await;

    hand_over(&s, "p1").await;
    let t = term_of(&s, "p1").await;
    wait_lines(&log, "manual handoff to p1", settled("p1".into(), t)).await;

    // Failover: the leader pod is deleted; its member sees the pod go and stops the command.
    s.ns.delete_pod_now("p1").await;
    let g = s
        .wait_group("g", "a new leader", |g| {
            status(g).leader.as_deref().is_some_and(|l| l != "p1")
        })
        .await;
    let (next, t) = (status(&g).leader.unwrap(), status(&g).term);
    let lines = wait_lines(&log, "failover", settled(next.clone(), t)).await;
    assert!(lines.iter().any(|l| l.starts_with("stop p1 ")), "{lines:?}");

    // A scheduled handoff, then back to p0: p0 leads again under a new, higher term.
    s.apply_group(
        "g",
        json!({"selector": {"matchLabels": {"app": "x"}}, "handoff": {"schedule": "@every 2s"}}),
    )
    .await
    .unwrap();
    s.wait_group("g", "a scheduled handoff", |g| status(g).term > t)
        .await;
    s.apply_group("g", json!({"selector": {"matchLabels": {"app": "x"}}}))
        .await
        .unwrap();
    hand_over(&s, "p0").await;
    let t0 = term_of(&s, "p0").await;
    let lines = wait_lines(&log, "p0 leads again", settled("p0".into(), t0)).await;
    let starts: Vec<i64> = lines
        .iter()
        .filter(|l| l.starts_with("start "))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "every start has a higher term: {starts:?}"
    );
    assert!(starts.len() >= 4, "four leaderships at least: {lines:?}");
    assert!(
        lines.iter().filter(|l| l.starts_with("start p0 ")).count() >= 2,
        "p0 started again on regaining leadership: {lines:?}"
    );
}

#[tokio::test]
async fn watch_prints_each_change_and_files_follow_it() {
    let (s, kc) = group(
        "member-watch",
        json!({"selector": {"matchLabels": {"app": "x"}}}),
    )
    .await;
    let ns = s.ns.name.clone();
    let out = log_dir().join(format!("{ns}-watch.out"));
    let dir = log_dir().join(format!("{ns}-files"));
    let _ = std::fs::remove_dir_all(&dir);
    let _watch = member(&ns, "p1", &kc, &["watch"], &out);
    let _files = member(
        &ns,
        "p1",
        &kc,
        &["files", dir.to_str().unwrap()],
        &log_dir().join(format!("{ns}-files.out")),
    );
    let parsed = |lines: &[String]| -> Vec<serde_json::Value> {
        lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    let lines = wait_lines(&out, "first state", |l| !l.is_empty()).await;
    let first = &parsed(&lines)[0];
    assert_eq!(
        (&first["role"], &first["group"], &first["leader"]),
        (&json!("follower"), &json!("g"), &json!("p0"))
    );
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();

    hand_over(&s, "p1").await;
    let t = term_of(&s, "p1").await;
    let lines = wait_lines(&out, "p1 leads", |l| {
        parsed(l)
            .iter()
            .any(|v| v["role"] == "leader" && v["term"] == t)
    })
    .await;
    let at = |v: &serde_json::Value| {
        v["at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    let states = parsed(&lines);
    assert!(
        states.windows(2).all(|w| at(&w[0]) <= at(&w[1])),
        "times rise: {lines:?}"
    );
    wait_lines(&dir.join("role"), "role file", |l| l == ["leader"]).await;
    assert_eq!(read("term").trim(), t.to_string());
    assert_eq!(read("leader").trim(), "p1");

    hand_over(&s, "p2").await;
    term_of(&s, "p2").await;
    let lines = wait_lines(&out, "p1 follows again", |l| {
        parsed(l)
            .last()
            .is_some_and(|v| v["role"] == "follower" && v["leader"] == "p2")
    })
    .await;
    for w in parsed(&lines).windows(2) {
        assert_ne!(w[0]["role"].clone(), json!(null));
        let facts =
            |v: &serde_json::Value| (v["role"].clone(), v["term"].clone(), v["leader"].clone());
        assert_ne!(
            facts(&w[0]),
            facts(&w[1]),
            "a line per change only: {lines:?}"
        );
    }
    wait_lines(&dir.join("role"), "role file", |l| l == ["follower"]).await;
    assert_eq!(read("term").trim(), "");
    assert_eq!(read("leader").trim(), "p2");
}

#[tokio::test]
async fn a_burst_of_handoffs_ends_in_the_final_state_without_a_backlog() {
    let (s, kc) = group(
        "member-burst",
        json!({"selector": {"matchLabels": {"app": "x"}}}),
    )
    .await;
    let ns = s.ns.name.clone();
    let out = log_dir().join(format!("{ns}-burst.out"));
    let _watch = member(&ns, "p1", &kc, &["watch"], &out);
    wait_lines(&out, "first state", |l| !l.is_empty()).await;
    let targets = ["p1", "p2"];
    for i in 0..20 {
        let to = targets[i % 2];
        hand_over(&s, to).await;
        s.wait_group("g", "handoff performed and consumed", |g| {
            status(g).leader.as_deref() == Some(to)
                && !g.annotations().contains_key("podium.dev/handoff-to")
        })
        .await;
    }
    // The last target was p2: p1's watch ends on follower with p2 leading, and nothing after.
    let final_term = term_of(&s, "p2").await;
    let lines = wait_lines(&out, "final state", |l| {
        l.last().is_some_and(|v| {
            let v: serde_json::Value = serde_json::from_str(v).unwrap();
            v["role"] == "follower" && v["leader"] == "p2"
        })
    })
    .await;
    let leads: Vec<i64> = lines
        .iter()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["role"] == "leader").then(|| v["term"].as_i64().unwrap())
        })
        .collect();
    // One leader line per change of facts (the group's leader field moves too), so a term may
    // repeat; it never falls.
    assert!(
        leads.windows(2).all(|w| w[0] <= w[1]),
        "terms seen never fall: {leads:?}"
    );
    assert!(leads.iter().all(|t| *t < final_term));
    assert!(!leads.is_empty(), "p1 led at least once during the burst");
}

#[tokio::test]
async fn the_rust_client_runs_work_while_leading_and_cancels_it_on_loss() {
    let (s, kc) = group(
        "member-rust",
        json!({"selector": {"matchLabels": {"app": "x"}}}),
    )
    .await;
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kc).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let m = Member::start(
        client,
        MemberConfig {
            namespace: s.ns.name.clone(),
            pod: "p1".into(),
            unknown_after: Duration::from_secs(5),
            step_down_after_unknown: None,
        },
    )
    .await
    .expect("p1 is a member");
    assert!(!m.is_leader());
    assert_eq!(m.state().role, Role::Follower);
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let m = Arc::new(m);
    let runner = {
        let (m, events) = (m.clone(), events.clone());
        tokio::spawn(async move {
            m.run_while_leading(|token, term| {
                let events = events.clone();
                async move {
                    events.lock().unwrap().push(format!("started {term}"));
                    token.cancelled().await;
                    events.lock().unwrap().push(format!("cancelled {term}"));
                }
            })
            .await
        })
    };
    let seen = |want: usize| {
        let events = events.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while events.lock().unwrap().len() < want {
                assert!(Instant::now() < deadline, "{:?}", events.lock().unwrap());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    hand_over(&s, "p1").await;
    let t1 = term_of(&s, "p1").await;
    seen(1).await;
    assert!(m.is_leader());
    assert_eq!(m.term(), Some(t1));
    hand_over(&s, "p2").await;
    term_of(&s, "p2").await;
    seen(2).await;
    hand_over(&s, "p1").await;
    let t3 = term_of(&s, "p1").await;
    seen(3).await;
    assert_eq!(
        *events.lock().unwrap(),
        [
            format!("started {t1}"),
            format!("cancelled {t1}"),
            format!("started {t3}")
        ]
    );
    runner.abort();
}

#[tokio::test]
async fn member_refuses_a_missing_pod_a_non_member_and_missing_rbac() {
    let (s, kc) = group(
        "member-errors",
        json!({"selector": {"matchLabels": {"app": "x"}}}),
    )
    .await;
    let ns = s.ns.name.clone();
    s.ns.create_pod("loner", &[("app", "other")]).await;
    kubectl(&["-n", &ns, "create", "serviceaccount", "nobody"]);
    let nobody = service_account_kubeconfig(&ns, "nobody", &format!("{ns}-nobody")).await;
    let cases: [(&str, &Path, &str); 3] = [
        ("ghost", &kc, "does not exist"),
        ("loner", &kc, "not a member"),
        ("p0", &nobody, "forbidden"),
    ];
    for (pod, kubeconfig, want) in cases {
        let out = log_dir().join(format!("{ns}-{pod}-err.out"));
        let mut child = member(&ns, pod, kubeconfig, &["watch"], &out);
        let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
            .await
            .expect("exits")
            .unwrap();
        let err = std::fs::read_to_string(out.with_extension("log")).unwrap();
        assert!(!status.success(), "{pod}: exit {status}");
        assert!(err.contains(want), "{pod}: {err}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "",
            "no state printed"
        );
    }
    // The same command works for a member with the Role: the failures above were the inputs.
    let out = log_dir().join(format!("{ns}-ok.out"));
    let _ok = member(&ns, "p0", &kc, &["watch"], &out);
    wait_lines(&out, "p0 leads", |l| {
        l.iter().any(|v| v.contains("\"role\":\"leader\""))
    })
    .await;
}

#[tokio::test]
async fn the_go_client_calls_back_in_order_with_the_terms() {
    let bin = go_member_bin();
    let (s, kc) = group(
        "member-go",
        json!({"selector": {"matchLabels": {"app": "x"}}}),
    )
    .await;
    let ns = s.ns.name.clone();
    let out = log_dir().join(format!("{ns}-go.out"));
    let err = std::fs::File::create(log_dir().join(format!("{ns}-go.log"))).unwrap();
    let _go = Command::new(&bin)
        .arg("-kubeconfig")
        .arg(&kc)
        .env("POD_NAME", "p1")
        .env("POD_NAMESPACE", &ns)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .expect("start podium-member-go");
    let events = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                match v["event"].as_str().unwrap() {
                    "started" => format!("started {}", v["term"]),
                    "new_leader" => format!("new_leader {}", v["leader"].as_str().unwrap()),
                    other => other.to_string(),
                }
            })
            .collect()
    };
    wait_lines(&out, "the current leader", |l| {
        events(l).contains(&"new_leader p0".to_string())
    })
    .await;
    hand_over(&s, "p1").await;
    let t1 = term_of(&s, "p1").await;
    hand_over(&s, "p2").await;
    term_of(&s, "p2").await;
    hand_over(&s, "p1").await;
    let t3 = term_of(&s, "p1").await;
    let want = format!("started {t3}");
    let lines = wait_lines(&out, "p1 leads again", |l| events(l).contains(&want)).await;
    let leadership: Vec<String> = events(&lines)
        .into_iter()
        .filter(|e| !e.starts_with("new_leader"))
        .collect();
    assert_eq!(
        leadership,
        [
            format!("started {t1}"),
            "stopped".into(),
            format!("started {t3}")
        ]
    );
    assert!(
        events(&lines).contains(&"new_leader p2".to_string()),
        "{lines:?}"
    );
}

/// A TCP relay to the API server that can be cut: while cut, every open connection is dropped
/// and new ones are closed at once, which is what a client sees of a stopped API server.
struct Relay {
    addr: std::net::SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (c, open) = (cut.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if c.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let up = upstream.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&up).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                open.lock().unwrap().push(relay);
            }
        });
        Self {
            addr,
            cut,
            conns,
            task,
        }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
        if cut {
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }

    /// A copy of `kubeconfig` whose server is this relay.
    fn kubeconfig(&self, kubeconfig: &Path) -> PathBuf {
        let mut kc = Kubeconfig::read_from(kubeconfig).unwrap();
        for cluster in &mut kc.clusters {
            if let Some(c) = cluster.cluster.as_mut() {
                c.server = Some(format!("https://{}", self.addr));
            }
        }
        let path = kubeconfig.with_extension("relay.kubeconfig");
        std::fs::write(&path, serde_json::to_string(&kc).unwrap()).unwrap();
        path
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.set_cut(true);
    }
}

/// The API server address a kubeconfig names, as host:port.
fn upstream(kubeconfig: &Path) -> String {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let server = kc.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .unwrap();
    server.trim_start_matches("https://").to_string()
}

#[tokio::test]
async fn a_member_cut_off_from_the_api_server_turns_unknown_and_recovers() {
    let (s, kc) = group(
        "member-unknown",
        json!({"selector": {"matchLabels": {"app": "x"}}}),
    )
    .await;
    let ns = s.ns.name.clone();
    let t0 = term_of(&s, "p0").await;
    let relay = Relay::start(upstream(&kc)).await;
    let rkc = relay.kubeconfig(&kc);
    let out = log_dir().join(format!("{ns}-unknown-watch.out"));
    let _watch = member(&ns, "p0", &rkc, &["--unknown-after", "1s", "watch"], &out);
    // Two exec supervisors on the leader: one keeps the command through UNKNOWN (the default),
    // one steps down after 2 s of it.
    let (keep_log, step_log) = (
        log_dir().join(format!("{ns}-unknown-keep.log")),
        log_dir().join(format!("{ns}-unknown-step.log")),
    );
    let exec = |log: &Path, extra: &[&str], name: &str| {
        let mut args = vec!["--unknown-after", "1s", "exec"];
        args.extend_from_slice(extra);
        args.push("--");
        let cmd = logging_command(log);
        let mut all: Vec<&str> = args;
        all.extend(cmd.iter().map(String::as_str));
        member(
            &ns,
            "p0",
            &rkc,
            &all,
            &log_dir().join(format!("{ns}-{name}.out")),
        )
    };
    let _keep = exec(&keep_log, &[], "keep");
    let _step = exec(&step_log, &["--step-down-after-unknown", "2s"], "step");
    let parsed = |lines: &[String]| -> Vec<serde_json::Value> {
        lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    let last_role = |l: &[String]| parsed(l).last().map(|v| v["role"].clone());
    wait_lines(&out, "leader before the cut", |l| {
        last_role(l) == Some(json!("leader"))
    })
    .await;
    for log in [&keep_log, &step_log] {
        wait_lines(log, "command started", |l| l == [format!("start p0 {t0}")]).await;
    }

    relay.set_cut(true);
    let cut_at = Instant::now();
    let lines = wait_lines(&out, "unknown while cut off", |l| {
        last_role(l) == Some(json!("unknown"))
    })
    .await;
    assert!(
        cut_at.elapsed() >= Duration::from_millis(900),
        "unknown only after --unknown-after: {lines:?}"
    );
    wait_lines(&step_log, "step-down after 2 s of unknown", |l| {
        l == [format!("start p0 {t0}"), format!("stop p0 {t0}")]
    })
    .await;
    // The default keeps the command: still only its start after the step-down happened.
    assert_eq!(
        std::fs::read_to_string(&keep_log)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        [format!("start p0 {t0}")],
        "the default leader keeps its command through unknown"
    );

    relay.set_cut(false);
    let lines = wait_lines(&out, "leader again once reconnected", |l| {
        parsed(l)
            .last()
            .is_some_and(|v| v["role"] == "leader" && v["term"] == t0)
    })
    .await;
    let roles: Vec<_> = parsed(&lines).iter().map(|v| v["role"].clone()).collect();
    assert_eq!(
        roles,
        [json!("leader"), json!("unknown"), json!("leader")],
        "one line per change: {lines:?}"
    );
    // The stepped-down command runs again under the same, still valid term.
    wait_lines(&step_log, "restarted after reconnecting", |l| {
        l.last() == Some(&format!("start p0 {t0}")) && l.len() == 3
    })
    .await;
    // Nothing moved in the cluster meanwhile.
    assert_eq!(status(&s.wait_leader("g", "app=x", "p0").await).term, t0);
}

/// What one pod's `podium member exec` believed, from its log: (pod, term, from, until) in
/// nanoseconds since the epoch; `until` is None while it still leads.
type Belief = (String, i64, i128, Option<i128>);

/// What runs as a member pod's container in the rolling-update tests.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Container {
    /// The singleton under `podium member exec`, writing to the sink while it leads.
    Exec,
    /// The Go client's `podium-member-go`, printing its callbacks.
    Go,
}

impl Container {
    /// Starts the container's process for `pod`.
    fn spawn(self, ns: &str, pod: &str, kc: &Path, sink: &Path) -> Child {
        match self {
            Container::Exec => {
                let mut args = vec![
                    "--log-format".to_string(),
                    "json".into(),
                    "exec".into(),
                    "--grace".into(),
                    "5s".into(),
                    "--".into(),
                ];
                args.extend(sink_command(sink));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = log_dir().join(format!("{ns}-{pod}-exec.out"));
                member(ns, pod, kc, &args, &out)
            }
            Container::Go => {
                let out = log_dir().join(format!("{ns}-{pod}-go.out"));
                Command::new(go_member_bin())
                    .args(["-kubeconfig", kc.to_str().unwrap(), "-grace", "5s"])
                    .env("POD_NAME", pod)
                    .env("POD_NAMESPACE", ns)
                    .stdin(Stdio::null())
                    .stdout(std::fs::File::create(&out).unwrap())
                    .stderr(std::fs::File::create(out.with_extension("log")).unwrap())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("start podium-member-go")
            }
        }
    }

    /// Every pod's leading intervals, from the files its process wrote in the namespace.
    fn beliefs(self, ns: &str) -> Vec<Belief> {
        let suffix = match self {
            Container::Exec => "-exec.log",
            Container::Go => "-go.out",
        };
        let mut all = Vec::new();
        for entry in std::fs::read_dir(log_dir()).unwrap().flatten() {
            let file = entry.file_name().to_string_lossy().to_string();
            let Some(pod) = file
                .strip_prefix(&format!("{ns}-"))
                .and_then(|f| f.strip_suffix(suffix))
            else {
                continue;
            };
            all.extend(match self {
                Container::Exec => beliefs(pod, &entry.path()),
                Container::Go => go_beliefs(pod, &entry.path()),
            });
        }
        all.sort_by_key(|b| b.2);
        all
    }
}

/// The Go member binary `make go-client` builds.
fn go_member_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/go/podium-member-go");
    assert!(
        bin.exists(),
        "{} is missing: `make go-client` builds it (make e2e does first)",
        bin.display()
    );
    bin
}

/// Reads the leading intervals from one pod's `podium-member-go` output: from `started` to
/// `stopped`.
fn go_beliefs(pod: &str, out: &Path) -> Vec<Belief> {
    let mut all: Vec<Belief> = Vec::new();
    for line in std::fs::read_to_string(out).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let at = v["at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap();
        let at = at.as_nanosecond();
        match v["event"].as_str().unwrap() {
            "started" => all.push((pod.to_string(), v["term"].as_i64().unwrap(), at, None)),
            "stopped" => {
                if let Some(last) = all.last_mut().filter(|b| b.3.is_none()) {
                    last.3 = Some(at);
                }
            }
            _ => {}
        }
    }
    all
}

/// Reads the leading intervals from one pod's JSON log of `podium member exec`.
fn beliefs(pod: &str, log: &Path) -> Vec<Belief> {
    let mut out: Vec<Belief> = Vec::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let msg = v["fields"]["message"].as_str().unwrap_or_default();
        let at = v["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_nanosecond());
        let Some(at) = at else { continue };
        if msg.starts_with("leading: starting the command") {
            let term = v["fields"]["term"].as_i64().unwrap();
            out.push((pod.to_string(), term, at, None));
        } else if (msg.starts_with("leadership ended")
            || msg == "pod stopping: stopping the command")
            && let Some(last) = out.last_mut().filter(|b| b.3.is_none())
        {
            last.3 = Some(at);
        }
    }
    out
}

/// Time with no believer and time with two or more, over [first start, end], in ms.
fn gap_and_overlap(beliefs: &[Belief], end: i128) -> (f64, f64) {
    let mut edges: Vec<(i128, i32)> = Vec::new();
    for (_, _, from, until) in beliefs {
        edges.push((*from, 1));
        edges.push((until.unwrap_or(end), -1));
    }
    // At equal times a start counts before a stop: a hand-over in the same instant is no gap.
    edges.sort_by_key(|&(t, d)| (t, -d));
    let (mut gap, mut overlap, mut open, mut last) = (0i128, 0i128, 0i32, None);
    for (t, d) in edges {
        if let Some(prev) = last {
            match open {
                0 => gap += t - prev,
                1 => {}
                _ => overlap += t - prev,
            }
        }
        open += d;
        last = Some(t);
    }
    (gap as f64 / 1e6, overlap as f64 / 1e6)
}

/// Plays the kubelet for one node that kwok leaves alone: each pod bound to it gets
/// `podium member exec` as its container and is then marked Running and Ready; a terminating
/// pod's container gets SIGTERM, and the pod is removed once the container has exited (or was
/// killed after the pod's grace period).
struct FakeKubelet {
    node: String,
    signalled: Arc<Mutex<Vec<String>>>,
    broken: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKubelet {
    async fn start(ns: &str, kc: &Path, container: Container, sink: &Path) -> Self {
        use futures::StreamExt;
        use k8s_openapi::api::core::v1::{Node, Pod};
        use kube::runtime::watcher;
        let node = format!("{ns}-node");
        let client = crate::support::client().await;
        let nodes: kube::Api<Node> = kube::Api::all(client.clone());
        let manifest: Node = serde_json::from_value(json!({"metadata": {"name": node}})).unwrap();
        nodes.create(&Default::default(), &manifest).await.unwrap();
        let signalled = Arc::new(Mutex::new(Vec::new()));
        let broken = Arc::new(Mutex::new(None));
        let (sig, brk) = (signalled.clone(), broken.clone());
        let (ns, kc, sink, node_name) = (
            ns.to_string(),
            kc.to_path_buf(),
            sink.to_path_buf(),
            node.clone(),
        );
        let task = tokio::spawn(async move {
            let api: kube::Api<Pod> = kube::Api::namespaced(client, &ns);
            let mut children: std::collections::HashMap<String, Child> = Default::default();
            let mut ips = 0u32;
            let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
            let mut events = std::pin::pin!(watcher(api.clone(), config));
            while let Some(e) = events.next().await {
                let p = match e {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                    Ok(_) => continue,
                    Err(e) => {
                        *brk.lock().unwrap() = Some(e.to_string());
                        return;
                    }
                };
                let name = p.name_any();
                if p.metadata.deletion_timestamp.is_some() {
                    let Some(mut child) = children.remove(&name) else {
                        continue;
                    };
                    if let Some(pid) = child.id() {
                        // As the kubelet would: SIGTERM first (kill(1), from procps).
                        let _ = std::process::Command::new("kill")
                            .args(["-TERM", &pid.to_string()])
                            .status();
                    }
                    sig.lock().unwrap().push(name.clone());
                    let grace = p.metadata.deletion_grace_period_seconds.unwrap_or(30) as u64;
                    let (api, uid) = (api.clone(), p.uid().unwrap());
                    tokio::spawn(async move {
                        let exited =
                            tokio::time::timeout(Duration::from_secs(grace), child.wait()).await;
                        if exited.is_err() {
                            let _ = child.kill().await;
                        }
                        let dp = kube::api::DeleteParams {
                            grace_period_seconds: Some(0),
                            preconditions: Some(kube::api::Preconditions {
                                uid: Some(uid),
                                resource_version: None,
                            }),
                            ..Default::default()
                        };
                        let _ = api.delete(&name, &dp).await;
                    });
                } else if !children.contains_key(&name) {
                    children.insert(name.clone(), container.spawn(&ns, &name, &kc, &sink));
                    ips += 1;
                    let now = jiff::Timestamp::now().to_string();
                    let status = json!({"status": {
                        "phase": "Running",
                        "podIP": format!("10.250.{}.{}", ips / 250, ips % 250 + 1),
                        "conditions": [
                            {"type": "Ready", "status": "True", "lastTransitionTime": now},
                            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                        ],
                    }});
                    if let Err(e) = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                        .await
                    {
                        *brk.lock().unwrap() = Some(format!("marking {name} Running: {e}"));
                        return;
                    }
                }
            }
            *brk.lock().unwrap() = Some("the pod watch ended".into());
        });
        Self {
            node,
            signalled,
            broken,
            task,
        }
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
        let node = self.node.clone();
        crate::support::block_on_side_thread(async move {
            let client = crate::support::client().await;
            let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
            let _ = nodes.delete(&node, &Default::default()).await;
        });
    }
}

/// The singleton's work: while it runs, append `<pod> <term> <seq>` to the sink every 20 ms.
fn sink_command(sink: &Path) -> Vec<String> {
    let l = sink.display();
    let script = format!(
        "trap 'exit 0' TERM; i=0; \
         while :; do i=$((i+1)); echo \"$POD_NAME $PODIUM_TERM $i\" >> {l}; \
         sleep 0.02 & wait $!; done"
    );
    vec!["sh".into(), "-c".into(), script]
}

/// Waits until `pod`'s process believes it leads under `term`.
async fn wait_believer(container: Container, ns: &str, pod: &str, term: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !container
        .beliefs(ns)
        .iter()
        .any(|b| b.0 == pod && b.1 == term && b.3.is_none())
    {
        assert!(
            Instant::now() < deadline,
            "{pod} never believed it leads under term {term}: {:?}",
            container.beliefs(ns)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The names of the namespace's pods.
async fn pod_names(s: &Setup) -> Vec<String> {
    let pods = s.ns.api::<k8s_openapi::api::core::v1::Pod>();
    let list = pods.list(&Default::default()).await.unwrap();
    list.items.iter().map(|p| p.name_any()).collect()
}

/// A three-replica Deployment in a group of `mode`, rolled one pod at a time while every pod
/// runs the singleton under `podium member exec`. Returns (gap ms, overlap ms, leaders).
/// What a rolling update showed: the namespace, the time with no believer and with two or
/// more (ms), and every leading interval in order.
struct Rolled {
    ns: String,
    gap: f64,
    beliefs: Vec<Belief>,
}

async fn rolling_update(prefix: &str, mode: &str, container: Container) -> Rolled {
    use k8s_openapi::api::apps::v1::Deployment;
    let s = Setup::new(prefix).await;
    let ns = s.ns.name.clone();
    let kc = member_kubeconfig(&ns).await;
    let sink = log_dir().join(format!("{ns}-sink"));
    let _ = std::fs::remove_file(&sink);
    let kubelet = FakeKubelet::start(&ns, &kc, container, &sink).await;
    let deploy = |rev: &str| -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "singleton"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "x"}},
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": "x"}, "annotations": {"rev": rev}},
                    "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}],
                             "nodeName": kubelet.node,
                             "terminationGracePeriodSeconds": 3}
                }
            }
        }))
        .unwrap()
    };
    let deployments = s.ns.api::<Deployment>();
    deployments
        .create(&Default::default(), &deploy("1"))
        .await
        .unwrap();
    s.apply_group(
        "g",
        json!({"selector": {"matchLabels": {"app": "x"}}, "handoff": {"mode": mode}}),
    )
    .await
    .unwrap();
    let first = s
        .wait_group("g", "a leader", |g| {
            status(g).leader.is_some() && status(g).ready_members == 3
        })
        .await;
    let first_leader = status(&first).leader.unwrap();
    let pods_before: Vec<String> = pod_names(&s).await;
    wait_believer(container, &ns, &first_leader, status(&first).term).await;

    deployments
        .patch(
            "singleton",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}),
            ),
        )
        .await
        .unwrap();
    // The rollout completes (it never deadlocks) and every old pod is gone.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let names = pod_names(&s).await;
        let d = deployments.get("singleton").await.unwrap();
        let st = d.status.unwrap_or_default();
        if st.updated_replicas == Some(3)
            && st.available_replicas == Some(3)
            && names.len() == 3
            && names.iter().all(|n| !pods_before.contains(n))
        {
            break;
        }
        assert!(Instant::now() < deadline, "rollout stuck: {names:?} {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = s
        .wait_group("g", "a leader among the new pods", |g| {
            status(g).leader.is_some_and(|l| !pods_before.contains(&l))
                && status(g).ready_members == 3
        })
        .await;
    // Let the new leader's member start.
    let new_leader = status(&last).leader.unwrap();
    let new_term = status(&last).term;
    wait_believer(container, &ns, &new_leader, new_term).await;
    let end = jiff::Timestamp::now().as_nanosecond();
    assert!(
        kubelet.broken.lock().unwrap().is_none(),
        "the pod watch failed: {:?}",
        kubelet.broken.lock().unwrap()
    );
    let signalled = kubelet.signalled.lock().unwrap().clone();
    drop(kubelet);

    let all = container.beliefs(&ns);
    let leaders: Vec<(String, i64)> = all.iter().map(|b| (b.0.clone(), b.1)).collect();
    assert_eq!(
        leaders.first().map(|l| &l.0),
        Some(&first_leader),
        "{all:?}"
    );
    assert_eq!(leaders.last(), Some(&(new_leader, new_term)), "{all:?}");
    assert!(
        leaders.windows(2).all(|w| w[0].1 < w[1].1),
        "each leadership has a higher term: {leaders:?}"
    );
    // Leadership moved once per leader replaced: every leadership but the last ended because
    // its pod was stopping.
    for b in &all[..all.len() - 1] {
        assert!(
            signalled.contains(&b.0) && b.3.is_some(),
            "{} stopped leading although its pod was not replaced: {all:?}",
            b.0
        );
    }
    let (gap, overlap) = gap_and_overlap(&all, end);
    println!(
        "{mode} rolling update, {container:?}: leaders {leaders:?}, gap {gap:.1} ms, \
         overlap {overlap:.1} ms"
    );
    if container == Container::Exec {
        // The sink, fencing by term, takes a line unless a higher term has written before it.
        let lines = std::fs::read_to_string(&sink).unwrap();
        let (mut highest, mut rejected) = (0i64, 0usize);
        for l in lines.lines() {
            let term: i64 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
            if term < highest {
                rejected += 1;
            }
            highest = highest.max(term);
        }
        println!(
            "  sink: {} lines, of which a term fence rejects {rejected}",
            lines.lines().count()
        );
        if mode == "BreakBeforeMake" {
            assert_eq!(rejected, 0, "an old leader wrote after its successor");
        }
    }
    s.groups().delete("g", &Default::default()).await.unwrap();
    Rolled {
        ns,
        gap,
        beliefs: all,
    }
}

#[tokio::test]
async fn a_rolling_update_in_make_before_break_leaves_no_instant_without_a_leader() {
    for container in [Container::Exec, Container::Go] {
        let prefix = format!("member-roll-mbb-{container:?}").to_lowercase();
        let r = rolling_update(&prefix, "MakeBeforeBreak", container).await;
        assert!(
            r.beliefs.len() >= 2,
            "the leader was replaced: {:?}",
            r.beliefs
        );
        assert_eq!(
            r.gap, 0.0,
            "{container:?}: an instant in which no member believed it leads"
        );
    }
}

/// When the operator's log says its demotion (or release) of `pod` was acknowledged, the first
/// time after `after` (ns since the epoch).
fn demoted_at(ns: &str, pod: &str, after: i128) -> Option<i128> {
    let log = std::fs::read_to_string(log_dir().join(format!("{ns}.log"))).ok()?;
    log.lines()
        .filter(|l| {
            l.contains(&format!(
                "pod written pod={pod} change=Label {{ role: \"follower\""
            )) || l.contains(&format!("pod written pod={pod} change=Release"))
        })
        .filter_map(|l| l.split_whitespace().next()?.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_nanosecond())
        .find(|t| *t > after)
}

#[tokio::test]
async fn a_rolling_update_in_break_before_make_never_has_two_believers() {
    for container in [Container::Exec, Container::Go] {
        let prefix = format!("member-roll-bbm-{container:?}").to_lowercase();
        let Rolled { ns, beliefs, .. } =
            rolling_update(&prefix, "BreakBeforeMake", container).await;
        assert!(beliefs.len() >= 2, "the leader was replaced: {beliefs:?}");
        // Where two believe at once, the new leader's process began only after podium's
        // demotion of the old one was acknowledged: the overlap is the old member's delay in
        // learning of it, reported here. (An old leader that stopped first, with its pod, needs
        // no demotion: its pod was gone before the successor was labelled.)
        for w in beliefs.windows(2) {
            let (old, new) = (&w[0], &w[1]);
            let stopped = old.3.expect("the old leader stopped");
            if new.2 >= stopped {
                continue;
            }
            let demoted = demoted_at(&ns, &old.0, old.2).unwrap_or_else(|| {
                panic!(
                    "{container:?}: {} began while {} led, which podium never demoted",
                    new.0, old.0
                )
            });
            assert!(
                new.2 > demoted,
                "{container:?}: {} began before {}'s demotion was acknowledged: {beliefs:?}",
                new.0,
                old.0
            );
            println!(
                "  overlap: {} learned of its demotion {:.1} ms after it was acknowledged; {} began {:.1} ms after",
                old.0,
                (stopped - demoted) as f64 / 1e6,
                new.0,
                (new.2 - demoted) as f64 / 1e6
            );
        }
    }
}
