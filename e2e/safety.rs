//! The worst case: a controller replica paused past its Lease (SIGSTOP — a long GC pause, CPU
//! starvation, a frozen VM) and resumed while a handoff schedule keeps leadership moving.
//! An independent watch checks every state it sees: never two leaders in BreakBeforeMake, and
//! no term ever carried by two pods.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::watcher;
use serde_json::json;

use crate::groups::*;
use crate::support::*;

/// What the independent watch saw: violations, and how many leader changes it observed.
#[derive(Default)]
struct History {
    leaders: BTreeMap<String, (String, Option<i64>)>,
    term_owner: HashMap<i64, String>,
    violations: Vec<String>,
    changes: usize,
    ended: Option<String>,
}

impl History {
    fn observe(&mut self, p: &Pod) {
        let name = p.name_any();
        let leader = label(p, ROLE).as_deref() == Some("leader");
        let term = annotation(p, "podium.dev/term").and_then(|t| t.parse().ok());
        let uid = p.uid().unwrap_or_default();
        if leader {
            if self
                .leaders
                .insert(name.clone(), (uid.clone(), term))
                .is_none()
            {
                self.changes += 1;
            }
        } else {
            self.leaders.remove(&name);
        }
        if self.leaders.len() > 1 {
            self.violations
                .push(format!("two leaders at once: {:?}", self.leaders));
        }
        if let (true, Some(t)) = (leader, term) {
            let owner = self.term_owner.entry(t).or_insert(uid.clone());
            if *owner != uid {
                self.violations
                    .push(format!("term {t} carried by {name} and by pod uid {owner}"));
            }
        }
    }
}

/// Watches pods and records every state; the watch must never error or end while it runs.
fn watch_history(
    ns: &TestNs,
    selector: &str,
) -> (Arc<Mutex<History>>, tokio::task::JoinHandle<()>) {
    let history = Arc::new(Mutex::new(History::default()));
    let h = history.clone();
    let api = ns.api::<Pod>();
    // No backoff: an error ends the stream, and the test fails on it instead of missing states.
    let stream = watcher(api, watcher::Config::default().labels(selector));
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            match stream.try_next().await {
                Ok(Some(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                    h.lock().unwrap().observe(&p)
                }
                Ok(Some(watcher::Event::Delete(p))) => {
                    h.lock().unwrap().leaders.remove(&p.name_any());
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    h.lock().unwrap().ended = Some("watch ended".into());
                    return;
                }
                Err(e) => {
                    h.lock().unwrap().ended = Some(format!("watch failed: {e}"));
                    return;
                }
            }
        }
    });
    (history, task)
}

async fn holder(ns: &TestNs) -> Option<String> {
    ns.api::<Lease>()
        .get_opt("podium-controller")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
}

fn signal(op: &Operator, sig: &str) {
    let pid = op.pid().expect("replica runs").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill(1)")
        .success();
    assert!(ok, "kill {sig} {pid} failed");
}

#[tokio::test]
async fn a_replica_paused_past_its_lease_never_makes_a_second_leader_or_reuses_a_term() {
    install_crd().await;
    // Only the two replicas under test write: no operator of the usual setup.
    let s = Setup {
        ns: TestNs::new("safety-pause").await,
        operator: None,
    };
    let ns = s.ns.name.clone();
    let ids = ["op-0", "op-1"];
    let mut replicas = Vec::new();
    for id in ids {
        let args = [
            "--leader-elect",
            "--lease-namespace",
            &ns,
            "--lease-duration",
            "4",
            "--instance",
            id,
        ];
        replicas.push(Operator::start(&ns, &args).await);
    }
    s.pods(&["p0", "p1", "p2", "p3"], &[("app", "x")]).await;
    let (history, task) = watch_history(&s.ns, "app=x");
    s.apply_group(
        "api",
        json!({"selector": {"matchLabels": {"app": "x"}},
               "handoff": {"schedule": "@every 2s", "mode": "BreakBeforeMake"}}),
    )
    .await
    .unwrap();
    s.wait_group("api", "a leader", |g| status(g).leader.is_some())
        .await;

    for round in 0..3 {
        let active = holder(&s.ns).await.expect("a replica holds the lease");
        let i = ids
            .iter()
            .position(|id| *id == active)
            .expect("known replica");
        let changes_before = history.lock().unwrap().changes;
        signal(&replicas[i], "-STOP");
        // Past the 4 s Lease: the standby takes over while the paused one still believes it leads.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let taken = holder(&s.ns).await;
        signal(&replicas[i], "-CONT");
        assert_ne!(
            taken.as_deref(),
            Some(active.as_str()),
            "round {round}: the standby did not take the lease from the paused replica"
        );
        // Let the resumed replica act on its stale state while handoffs go on.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let changes = history.lock().unwrap().changes;
        assert!(
            changes > changes_before,
            "round {round}: no handoff happened, so the pause tested nothing"
        );
    }
    task.abort();
    let (ended, violations) = {
        let h = history.lock().unwrap();
        (h.ended.clone(), h.violations.clone())
    };
    assert!(ended.is_none(), "{}", ended.unwrap_or_default());
    assert!(violations.is_empty(), "violations: {violations:#?}");
    for r in replicas {
        r.kill().await;
    }
}
