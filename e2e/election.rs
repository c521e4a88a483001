//! The operator core against a real API server: election, failover, preferences, cleanup.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::cluster::{create_service, wait_slice};
use crate::groups::*;
use crate::support::*;

fn app_x() -> serde_json::Value {
    json!({"selector": {"matchLabels": {"app": "x"}}})
}

#[tokio::test]
async fn three_ready_pods_get_one_leader_and_a_service_reaches_it() {
    let s = Setup::new("core-elect").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    create_service(&s.ns, "leader", json!({"app": "x", ROLE: "leader"})).await;
    s.apply_group("api", app_x()).await.unwrap();

    s.wait_leader("api", "app=x", "p0").await;
    let g = s
        .wait_group("api", "settled", |g| {
            condition(g, "Ready").is_some() && status(g).members == 3
        })
        .await;
    let st = status(&g);
    assert_eq!(st.term, 1);
    assert_eq!((st.members, st.ready_members), (3, 3));
    assert_eq!(st.ready_summary.as_deref(), Some("3/3"));
    assert_eq!(st.observed_generation, g.metadata.generation);
    assert_eq!(condition(&g, "Ready").unwrap().0, "True");
    assert_eq!(condition(&g, "SpecValid").unwrap().0, "True");
    assert_eq!(condition(&g, "Conflict").unwrap().0, "False");
    assert_eq!(term_on(&s.ns, "p0").await, Some(1));
    assert_eq!(term_on(&s.ns, "p1").await, None, "followers carry no term");

    let p0 = s.ns.api::<Pod>().get("p0").await.unwrap();
    wait_slice(&s.ns, "leader", vec![(pod_ip(&p0).unwrap(), true)]).await;

    let out = std::process::Command::new(
        env!("CARGO_MANIFEST_DIR").to_string() + "/target/cluster/kubectl",
    )
    .args([
        "--kubeconfig",
        kubeconfig_path().to_str().unwrap(),
        "-n",
        &s.ns.name,
        "get",
        "eg",
    ])
    .output()
    .expect("kubectl get eg");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME", "LEADER", "TERM", "READY", "MEMBERS", "NEXT", "HANDOFF", "AGE"
        ]
    );
    let row: Vec<&str> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row[..5], ["api", "p0", "1", "3/3", "3"]);
}

#[tokio::test]
async fn deleting_the_leader_fails_over_without_two_leaders() {
    let s = Setup::new("core-delete").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group("api", app_x()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    let watch = LeaderWatch::start(&s.ns, "app=x").await;

    let start = Instant::now();
    s.ns.delete_pod_now("p0").await;
    let (new, seen) = watch
        .wait_new_leader("p0", start, Duration::from_secs(30))
        .await;
    println!(
        "failover after delete: {} ms (to {new})",
        seen.duration_since(start).as_millis()
    );
    assert_eq!(new, "p1", "the next oldest takes over");
    let g = s.wait_leader("api", "app=x", "p1").await;
    assert_eq!(status(&g).term, 2);
    // Each change of leader is its own Event, with its own message.
    wait_event_saying(&s.ns, "api", "LeaderElected", "p0 is leader (term 1").await;
    wait_event_saying(
        &s.ns,
        "api",
        "LeaderElected",
        "p1 is leader (term 2, reason Failover, was p0)",
    )
    .await;
    assert_eq!(
        status(&g).last_transition.unwrap().reason.as_str(),
        "Failover"
    );
    assert_eq!(term_on(&s.ns, "p1").await, Some(2));
    assert!(watch.max_leaders() <= 1, "a watch saw two leaders");
}

#[tokio::test]
async fn a_not_ready_leader_fails_over_at_once() {
    let s = Setup::new("core-unready").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group("api", app_x()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    let watch = LeaderWatch::start(&s.ns, "app=x").await;

    let start = Instant::now();
    s.ns.set_ready("p0", false).await;
    let (new, seen) = watch
        .wait_new_leader("p0", start, Duration::from_secs(30))
        .await;
    println!(
        "failover after NotReady: {} ms (to {new})",
        seen.duration_since(start).as_millis()
    );
    let g = s.wait_leader("api", "app=x", "p1").await;
    assert_eq!(status(&g).term, 2);
    assert_eq!(status(&g).ready_members, 2);
    assert!(watch.max_leaders() <= 1, "a watch saw two leaders");

    // The old leader recovering does not take leadership back: it is sticky.
    s.ns.set_ready("p0", true).await;
    s.wait_group("api", "3 ready", |g| status(g).ready_members == 3)
        .await;
    let g = s.wait_leader("api", "app=x", "p1").await;
    assert_eq!(status(&g).term, 2);
}

#[tokio::test]
async fn failover_tolerance_keeps_a_not_ready_leader_for_a_while() {
    let s = Setup::new("core-tolerance").await;
    s.pods(&["p0", "p1"], &[("app", "x")]).await;
    s.apply_group(
        "api",
        json!({"selector": {"matchLabels": {"app": "x"}}, "failoverToleranceSeconds": 3}),
    )
    .await
    .unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    let watch = LeaderWatch::start(&s.ns, "app=x").await;
    let start = Instant::now();
    s.ns.set_ready("p0", false).await;
    let g = s
        .wait_group("api", "LeaderNotReady", |g| {
            condition(g, "Ready").is_some_and(|c| c.1 == "LeaderNotReady")
        })
        .await;
    assert_eq!(status(&g).leader.as_deref(), Some("p0"));
    let (new, seen) = watch
        .wait_new_leader("p0", start, Duration::from_secs(30))
        .await;
    let waited = seen.duration_since(start);
    println!("tolerance 3 s: failover after {} ms", waited.as_millis());
    assert_eq!(new, "p1");
    assert!(
        waited >= Duration::from_millis(1900),
        "failed over too early: {waited:?}"
    );
}

#[tokio::test]
async fn priority_preference_picks_and_preempts() {
    let s = Setup::new("core-priority").await;
    s.ns.create_pod_with("low", &[("app", "x")], &[("podium.dev/priority", "1")])
        .await;
    s.ns.create_pod_with("high", &[("app", "x")], &[("podium.dev/priority", "10")])
        .await;
    s.ns.wait_running("low").await;
    s.ns.wait_running("high").await;
    s.apply_group(
        "api",
        json!({"selector": {"matchLabels": {"app": "x"}}, "preference": "Priority"}),
    )
    .await
    .unwrap();
    s.wait_leader("api", "app=x", "high").await;

    s.ns.create_pod_with("top", &[("app", "x")], &[("podium.dev/priority", "100")])
        .await;
    let g = s.wait_leader("api", "app=x", "top").await;
    assert_eq!(
        status(&g).last_transition.unwrap().reason.as_str(),
        "Preempted"
    );
    assert_eq!(status(&g).term, 2);
}

#[tokio::test]
async fn min_ready_seconds_delays_the_first_election() {
    let s = Setup::new("core-minready").await;
    s.apply_group(
        "api",
        json!({"selector": {"matchLabels": {"app": "x"}}, "minReadySeconds": 3}),
    )
    .await
    .unwrap();
    let start = Instant::now();
    s.ns.create_pod("p0", &[("app", "x")]).await;
    s.ns.wait_running("p0").await;
    s.wait_group("api", "no candidates yet", |g| {
        condition(g, "Ready").is_some_and(|c| c.1 == "NoCandidates") && status(g).members == 1
    })
    .await;
    // A new group waiting for its first ready member says so, without a Warning.
    let waiting = wait_event(&s.ns, "api", "NoCandidates").await;
    assert_eq!(waiting.type_.as_deref(), Some("Normal"), "{waiting:?}");
    assert!(
        waiting
            .note
            .as_deref()
            .unwrap_or_default()
            .starts_with("waiting for a ready member"),
        "{waiting:?}"
    );
    s.wait_leader("api", "app=x", "p0").await;
    let waited = start.elapsed();
    println!("minReadySeconds 3: elected after {} ms", waited.as_millis());
    // Ready's lastTransitionTime has one-second resolution, so eligibility can come up to 1 s early.
    assert!(
        waited >= Duration::from_millis(1900),
        "elected too early: {waited:?}"
    );
}

#[tokio::test]
async fn no_candidates_removes_the_leader_label_and_warns() {
    let s = Setup::new("core-nocand").await;
    s.pods(&["p0"], &[("app", "x")]).await;
    s.apply_group("api", app_x()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    s.ns.set_ready("p0", false).await;
    let g = s
        .wait_group("api", "no leader", |g| {
            status(g).leader.is_none() && status(g).ready_members == 0
        })
        .await;
    assert_eq!(
        condition(&g, "Ready"),
        Some(("False".into(), "NoCandidates".into()))
    );
    // Status records the change first; the label follows.
    wait_for_object(&s.ns.api::<Pod>(), "p0", Duration::from_secs(30), |p| {
        label(p, ROLE).as_deref() == Some("follower")
    })
    .await;
    let lost = wait_event(&s.ns, "api", "NoCandidates").await;
    assert_eq!(lost.type_.as_deref(), Some("Warning"), "{lost:?}");

    s.ns.set_ready("p0", true).await;
    let g = s.wait_leader("api", "app=x", "p0").await;
    assert_eq!(
        status(&g).term,
        2,
        "a new leadership, even of the same pod, has a new term"
    );
}

#[tokio::test]
async fn paused_group_keeps_labels_untouched() {
    let s = Setup::new("core-paused").await;
    s.pods(&["p0", "p1"], &[("app", "x")]).await;
    s.apply_group("api", app_x()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    s.apply_group(
        "api",
        json!({"selector": {"matchLabels": {"app": "x"}}, "paused": true}),
    )
    .await
    .unwrap();
    s.wait_group("api", "paused", |g| {
        condition(g, "Ready").is_some_and(|c| c.1 == "Paused")
    })
    .await;
    s.ns.set_ready("p0", false).await;
    s.wait_group("api", "sees 1 ready", |g| status(g).ready_members == 1)
        .await;
    let p0 = s.ns.api::<Pod>().get("p0").await.unwrap();
    assert_eq!(
        label(&p0, ROLE).as_deref(),
        Some("leader"),
        "paused: no failover"
    );

    s.apply_group("api", app_x()).await.unwrap();
    s.wait_leader("api", "app=x", "p1").await;
}

#[tokio::test]
async fn a_pod_leaving_the_selector_loses_its_labels() {
    let s = Setup::new("core-leave").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group("api", app_x()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;

    s.ns.set_label("p2", "app", Some("other")).await;
    s.ns.set_label("p0", "app", Some("other")).await;
    let g = s.wait_leader("api", "app=x", "p1").await;
    assert_eq!(status(&g).members, 1);
    for gone in ["p0", "p2"] {
        let p = wait_for_object(
            &s.ns.api::<Pod>(),
            gone,
            Duration::from_secs(10),
            |p: &Pod| label(p, ROLE).is_none(),
        )
        .await;
        assert_eq!(annotation(&p, "podium.dev/group"), None);
        assert_eq!(annotation(&p, "podium.dev/term"), None);
        assert_eq!(
            label(&p, "app").as_deref(),
            Some("other"),
            "only podium's own keys are touched"
        );
    }
}

#[tokio::test]
async fn deleting_the_group_removes_what_podium_wrote() {
    let s = Setup::new("core-cleanup").await;
    s.pods(&["p0", "p1"], &[("app", "x")]).await;
    s.ns.set_label("p1", "keep", Some("me")).await;
    s.apply_group("api", app_x()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    s.groups()
        .delete("api", &DeleteParams::default())
        .await
        .unwrap();
    wait_for_list(
        &s.ns.api::<Pod>(),
        kube::runtime::watcher::Config::default().labels("app=x"),
        Duration::from_secs(20),
        "labels removed",
        |pods| {
            pods.iter().all(|p| {
                label(p.as_ref(), ROLE).is_none()
                    && annotation(p.as_ref(), "podium.dev/term").is_none()
                    && annotation(p.as_ref(), "podium.dev/group").is_none()
            })
        },
    )
    .await;
    let p1 = s.ns.api::<Pod>().get("p1").await.unwrap();
    assert_eq!(label(&p1, "keep").as_deref(), Some("me"));
    // The finalizer was removed, so the group is gone.
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        while s.groups().get_opt("api").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "group still present");
}

#[tokio::test]
async fn overlapping_groups_the_older_keeps_the_pods() {
    let s = Setup::new("core-overlap").await;
    s.pods(&["p0", "p1"], &[("app", "x")]).await;
    s.apply_group("old", app_x()).await.unwrap();
    s.wait_leader("old", "app=x", "p0").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.apply_group("new", json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}]}}))
        .await
        .unwrap();
    let g = s
        .wait_group("new", "conflict", |g| {
            condition(g, "Conflict").is_some_and(|c| c.0 == "True")
        })
        .await;
    assert_eq!(status(&g).members, 0);
    assert_eq!(status(&g).leader, None);
    wait_event(&s.ns, "new", "Conflict").await;
    let old = s.wait_leader("old", "app=x", "p0").await;
    assert_eq!(condition(&old, "Conflict").unwrap().0, "False");
    assert_eq!(status(&old).term, 1, "the older group was not disturbed");
    let p0 = s.ns.api::<Pod>().get("p0").await.unwrap();
    assert_eq!(annotation(&p0, "podium.dev/group").as_deref(), Some("old"));
}

#[tokio::test]
async fn a_restarted_operator_adopts_labels_and_writes_nothing() {
    let mut s = Setup::new("core-restart").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group("api", app_x()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    s.wait_group("api", "settled", |g| status(g).members == 3)
        .await;
    // Settled also means the successor's reservation is pinned to its version after its
    // follower label (the write that follows that label).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let before = loop {
        let g = s.groups().get("api").await.unwrap();
        let successor = status(&g).successor.expect("a successor is reserved");
        let pod =
            s.ns.api::<Pod>()
                .get(successor.pod.as_deref().unwrap())
                .await
                .unwrap();
        if successor.resource_version == pod.metadata.resource_version {
            break g;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reservation was never pinned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pods_before: Vec<String> = list(&s.ns.api::<Pod>(), "app=x")
        .await
        .iter()
        .map(|p| p.metadata.resource_version.clone().unwrap())
        .collect();
    s.stop_operator().await;

    let port = free_port();
    s.operator =
        Some(Operator::start(&s.ns.name, &[&format!("--http-addr=127.0.0.1:{port}")]).await);
    // The new process has reconciled the group (so "nothing moved" means something).
    crate::operations::wait_reconciled(port).await;
    let after = s.groups().get("api").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "status was rewritten"
    );
    let pods_after: Vec<String> = list(&s.ns.api::<Pod>(), "app=x")
        .await
        .iter()
        .map(|p| p.metadata.resource_version.clone().unwrap())
        .collect();
    assert_eq!(pods_after, pods_before, "pods were rewritten");
    // And it is live: a failover still works.
    s.ns.delete_pod_now("p0").await;
    let g = s.wait_leader("api", "app=x", "p1").await;
    assert_eq!(status(&g).term, 2);
}

#[tokio::test]
async fn term_annotation_is_readable_and_agrees_with_status() {
    let s = Setup::new("core-term").await;
    s.pods(&["p0", "p1"], &[("app", "x")]).await;
    s.apply_group("api", app_x()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    for (i, (gone, next)) in [("p0", "p1")].iter().enumerate() {
        s.ns.delete_pod_now(gone).await;
        let g = s.wait_leader("api", "app=x", next).await;
        assert_eq!(status(&g).term, 2 + i as i64);
        assert_eq!(term_on(&s.ns, next).await, Some(status(&g).term));
    }
    // A term someone lowered by hand is raised back to status.
    s.ns.api::<Pod>()
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"podium.dev/term": "1"}}})),
        )
        .await
        .unwrap();
    wait_for_object(
        &s.ns.api::<Pod>(),
        "p1",
        Duration::from_secs(10),
        |p: &Pod| annotation(p, "podium.dev/term").as_deref() == Some("2"),
    )
    .await;
}

/// Waits until an Event with `reason` exists for the group.
/// Waits for an Event about `group` with `reason` whose note contains `text`.
pub async fn wait_event_saying(ns: &TestNs, group: &str, reason: &str, text: &str) {
    let api = ns.api::<k8s_openapi::api::events::v1::Event>();
    wait_for_list(
        &api,
        kube::runtime::watcher::Config::default().fields(&format!("regarding.name={group}")),
        Duration::from_secs(20),
        &format!("event {reason} on {group} saying {text:?}"),
        |evs| {
            evs.iter().any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.note.as_deref().is_some_and(|n| n.contains(text))
            })
        },
    )
    .await;
}

pub async fn wait_event(
    ns: &TestNs,
    group: &str,
    reason: &str,
) -> k8s_openapi::api::events::v1::Event {
    let api = ns.api::<k8s_openapi::api::events::v1::Event>();
    let found = wait_for_list(
        &api,
        kube::runtime::watcher::Config::default().fields(&format!("regarding.name={group}")),
        Duration::from_secs(20),
        &format!("event {reason} on {group}"),
        |evs| evs.iter().any(|e| e.reason.as_deref() == Some(reason)),
    )
    .await;
    found
        .iter()
        .find(|e| e.reason.as_deref() == Some(reason))
        .map(|e| e.as_ref().clone())
        .unwrap()
}
