//! The `kubectl podium` plugin against a real API server, with the operator running: status,
//! why, pause and resume, handoff, watch, and JSON output.
//!
//! The plugin is another package's binary, so cargo does not build it for this test; `make e2e`
//! builds it first (`cargo build -p kubectl-podium`), next to this test binary, and
//! `PODIUM_PLUGIN_BIN` names another one.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use kube::ResourceExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::groups::*;
use crate::support::*;

/// The plugin binary: `PODIUM_PLUGIN_BIN`, else `kubectl-podium` in this test binary's profile
/// directory (`target/debug`).
fn plugin_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PODIUM_PLUGIN_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/e2e-<hash>
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("kubectl-podium"))
        .expect("profile directory");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p kubectl-podium` first (make e2e does)",
        bin.display()
    );
    bin
}

/// `kubectl podium` on the test's namespace, as kubectl would run it.
fn plugin(s: &Setup, args: &[&str]) -> Command {
    let mut cmd = Command::new(plugin_bin());
    cmd.arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(["-n", &s.ns.name])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs the plugin to completion.
async fn run(s: &Setup, args: &[&str]) -> Output {
    tokio::time::timeout(Duration::from_secs(30), plugin(s, args).output())
        .await
        .unwrap_or_else(|_| panic!("kubectl podium {args:?} did not finish in 30 s"))
        .expect("run kubectl podium")
}

/// Runs the plugin, asserts it succeeded, and returns its standard output.
async fn ok(s: &Setup, args: &[&str]) -> String {
    let out = run(s, args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kubectl podium {args:?} failed ({}): {}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs the plugin with `-o json` and parses what it prints.
async fn json_of(s: &Setup, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = ok(s, &all).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} -o json: {e}:\n{out}"))
}

/// The whitespace-separated cells of the first line whose first cells are `prefix`.
fn row<'t>(text: &'t str, prefix: &[&str]) -> Vec<&'t str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

/// Three ready pods p0, p1, p2 and the group `api` over them, led by p0.
async fn three_pods_led_by_p0(prefix: &str) -> Setup {
    let s = Setup::new(prefix).await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group("api", json!({"selector": {"matchLabels": {"app": "x"}}}))
        .await
        .unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    // The reserved successor settles after the leader; wait for it so standings are final.
    s.wait_group("api", "successor reserved", |g| {
        status(g).successor.is_some_and(|x| x.pod.is_some())
    })
    .await;
    s
}

#[tokio::test]
async fn status_shows_the_leader_and_term_and_why_names_the_leader() {
    let s = three_pods_led_by_p0("plugin-status").await;

    let text = ok(&s, &["status", "api"]).await;
    println!("{text}");
    let group = row(&text, &["api", "p0"]);
    assert_eq!(group[2], "1", "term: {group:?}");
    assert_eq!(row(&text, &["api", "p0", "leader"])[3], "True");
    row(&text, &["api", "p1", "candidate"]);
    row(&text, &["api", "p2", "candidate"]);

    let all = ok(&s, &["status"]).await;
    assert_eq!(row(&all, &["api"])[1], "p0");

    let v = json_of(&s, &["status", "api"]).await;
    assert_eq!(v["leader"], "p0");
    assert_eq!(v["term"], 1);
    let standings: Vec<(String, String)> = v["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["standing"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        standings,
        [
            ("p0".to_string(), "leader".to_string()),
            ("p1".into(), "candidate".into()),
            ("p2".into(), "candidate".into())
        ]
    );
    let v = json_of(&s, &["status"]).await;
    assert_eq!(v["namespace"], s.ns.name.as_str());
    assert_eq!(v["groups"][0]["name"], "api");

    let why = ok(&s, &["why", "api", "p1"]).await;
    println!("{why}");
    assert!(why.contains("p1 is a candidate"), "{why}");
    assert!(why.contains("p0 leads and is healthy"), "{why}");
    let v = json_of(&s, &["why", "api", "p2"]).await;
    assert_eq!(v["leader"], "p0");
    assert_eq!(v["standing"], "candidate");
    let v = json_of(&s, &["why", "api"]).await;
    let first = v["reasons"][0].as_str().unwrap_or_default();
    assert!(first.starts_with("p0 leads api since "), "{v}");

    let missing = run(&s, &["status", "nope"]).await;
    assert!(!missing.status.success(), "a missing group is an error");
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("ElectionGroup \"nope\" not found"), "{err}");
}

#[tokio::test]
async fn pause_then_resume_flips_spec_paused() {
    let s = three_pods_led_by_p0("plugin-pause").await;

    let out = ok(&s, &["pause", "api"]).await;
    assert!(out.contains("electiongroup/api paused"), "{out}");
    let g = s.groups().get("api").await.unwrap();
    assert!(g.spec.paused);
    s.wait_group("api", "Ready=Paused", |g| {
        condition(g, "Ready").is_some_and(|(_, reason)| reason == "Paused")
    })
    .await;
    let v = json_of(&s, &["status", "api"]).await;
    assert_eq!(v["paused"], true);
    let out = ok(&s, &["pause", "api"]).await;
    assert!(out.contains("already paused"), "{out}");

    let out = ok(&s, &["resume", "api"]).await;
    assert!(out.contains("electiongroup/api resumed"), "{out}");
    let g = s.groups().get("api").await.unwrap();
    assert!(!g.spec.paused);
    s.wait_group("api", "Ready=LeaderReady", |g| {
        condition(g, "Ready").is_some_and(|(_, reason)| reason == "LeaderReady")
    })
    .await;
}

#[tokio::test]
async fn handoff_to_a_pod_moves_leadership_to_it() {
    let s = three_pods_led_by_p0("plugin-handoff").await;

    let out = ok(&s, &["handoff", "api", "--to", "p2"]).await;
    assert!(out.contains("handoff to p2 requested"), "{out}");
    let g = s.wait_leader("api", "app=x", "p2").await;
    assert_eq!(
        status(&g).last_transition.map(|t| t.reason.as_str()),
        Some("Manual")
    );
    let g = s
        .wait_group("api", "request removed", |g| {
            !g.annotations().contains_key("podium.dev/handoff-to")
        })
        .await;
    assert!(status(&g).term > 1);

    let missing = run(&s, &["handoff", "api", "--to", "ghost"]).await;
    assert!(!missing.status.success(), "a missing pod is an error");
    let g = s.groups().get("api").await.unwrap();
    assert!(
        !g.annotations().contains_key("podium.dev/handoff-to"),
        "nothing was requested for a missing pod"
    );
}

#[tokio::test]
async fn watch_prints_the_failover_after_the_leader_pod_is_deleted() {
    let s = three_pods_led_by_p0("plugin-watch").await;

    let mut child = plugin(&s, &["watch", "api"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl podium watch");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a line from watch within 30 s")
            .expect("read watch output")
            .expect("watch kept running")
    };
    let header = next().await;
    assert!(header.starts_with("TIME"), "{header}");
    let current = next().await;
    let cells: Vec<&str> = current.split_whitespace().collect();
    assert_eq!(cells[1..3], ["p0", "1"], "{current}");

    s.ns.delete_pod_now("p0").await;
    let mut seen = Vec::new();
    loop {
        let line = next().await;
        let cells: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        seen.push(line);
        if cells.get(1).is_some_and(|l| l == "p1") {
            assert_eq!(cells[3..5], ["Failover", "p0"], "{seen:#?}");
            break;
        }
        assert!(seen.len() < 10, "no transition to p1 in {seen:#?}");
    }

    // Ctrl-C ends it, successfully.
    let pid = child.id().expect("watch runs").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("watch ends on SIGINT")
        .expect("wait for watch");
    assert!(status.success(), "watch exits 0 on Ctrl-C: {status}");
}
