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
use podium::member::{Member, MemberConfig, Role};
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

/// `podium member <args>` as pod `pod` would run it; stdout to `out`, stderr to a log.
fn member(ns: &str, pod: &str, kubeconfig: &Path, args: &[&str], out: &Path) -> Child {
    let err = std::fs::File::create(log_dir().join(format!("{ns}-{pod}-member.log"))).unwrap();
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
        let err =
            std::fs::read_to_string(log_dir().join(format!("{ns}-{pod}-member.log"))).unwrap();
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
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/go/podium-member-go");
    assert!(
        bin.exists(),
        "{} is missing: `make go-client` builds it (make e2e does first)",
        bin.display()
    );
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
