//! The member's reading of its Pod and group, and when leadership counts as lost.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ObjectMeta;
use kube::core::Selector;
use kube::runtime::watcher;
use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::role::{GroupView, group_view, observe};
use crate::tracker::{Seen, Tracker};
use kube::ResourceExt;
use kube::api::DynamicObject;

fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
    let map = |kv: &[(&str, &str)]| {
        Some(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    Pod {
        metadata: ObjectMeta {
            name: Some("p1".into()),
            namespace: Some("ns".into()),
            labels: map(labels),
            annotations: map(annotations),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    }
}

fn groups(role_label: Option<&str>, leader: Option<&str>) -> BTreeMap<String, GroupView> {
    BTreeMap::from([(
        "g".to_string(),
        GroupView {
            role_label: role_label.map(str::to_string),
            leader: leader.map(str::to_string),
            selector: None,
            make_before_break: false,
        },
    )])
}

#[test]
fn the_pod_shows_the_role_term_group_and_leader() {
    let leader = pod(
        &[("podium.dev/role", "leader")],
        &[("podium.dev/group", "g"), ("podium.dev/term", "7")],
    );
    let s = observe(Some(&leader), &groups(None, Some("p1")));
    assert_eq!(
        (s.role, s.term, s.group.as_deref(), s.leader.as_deref()),
        (Role::Leader, Some(7), Some("g"), Some("p1"))
    );
    let follower = pod(
        &[("podium.dev/role", "follower")],
        &[("podium.dev/group", "g")],
    );
    let s = observe(Some(&follower), &groups(None, Some("p0")));
    assert_eq!((s.role, s.term), (Role::Follower, None));
}

#[test]
fn the_group_role_label_is_the_key_read() {
    let p = pod(
        &[
            ("podium.dev/role", "leader"),
            ("example.com/role", "follower"),
        ],
        &[("podium.dev/group", "g"), ("podium.dev/term", "3")],
    );
    let s = observe(Some(&p), &groups(Some("example.com/role"), None));
    assert_eq!(s.role, Role::Follower, "the group's key says follower");
}

#[test]
fn a_leader_label_without_podium_group_or_with_a_bad_term_is_not_trusted_blindly() {
    let unmanaged = pod(&[("podium.dev/role", "leader")], &[]);
    assert_eq!(
        observe(Some(&unmanaged), &groups(None, None)).role,
        Role::Follower
    );
    let junk = pod(
        &[("podium.dev/role", "leader")],
        &[("podium.dev/group", "g"), ("podium.dev/term", "x")],
    );
    let s = observe(Some(&junk), &groups(None, None));
    assert_eq!((s.role, s.term), (Role::Leader, None));
    assert_eq!(observe(None, &groups(None, None)).role, Role::Follower);
}

fn tracker(unknown_after: Duration) -> Tracker {
    Tracker {
        config: MemberConfig {
            namespace: "ns".into(),
            pod: "p1".into(),
            unknown_after,
            step_down_after_unknown: None,
        },
        pod: Some(pod(
            &[("podium.dev/role", "leader")],
            &[("podium.dev/group", "g"), ("podium.dev/term", "2")],
        )),
        pod_synced: true,
        groups: groups(None, Some("p1")),
        groups_synced: true,
        pending_groups: BTreeMap::new(),
        pending_pod: None,
        broken: [None, None],
    }
}

#[test]
fn unknown_only_after_the_watch_stays_broken_past_the_limit() {
    let mut t = tracker(Duration::from_secs(5));
    let t0 = Instant::now();
    assert_eq!(t.state(t0).role, Role::Leader);
    t.apply(Seen::Pod(Box::new(Err(watcher::Error::NoResourceVersion))));
    assert_eq!(t.state(t0).role, Role::Leader, "not yet");
    let at = t.unknown_at().expect("a deadline");
    let s = t.state(at);
    assert_eq!((s.role, s.term), (Role::Unknown, None));
    assert_eq!(
        s.leader.as_deref(),
        Some("p1"),
        "the last known leader stays"
    );
    // The group watch recovering does not heal the pod watch.
    t.apply(Seen::Group(Box::new(Ok(watcher::Event::InitDone))));
    assert_eq!(t.state(at).role, Role::Unknown);
    // The pod watch starts over with a list; the role holds through it and is known after.
    let leader = t.pod.clone().unwrap();
    t.apply(Seen::Pod(Box::new(Ok(watcher::Event::Init))));
    t.apply(Seen::Pod(Box::new(Ok(watcher::Event::InitApply(leader)))));
    assert_eq!(
        t.state(at).role,
        Role::Unknown,
        "not before the list is complete"
    );
    t.apply(Seen::Pod(Box::new(Ok(watcher::Event::InitDone))));
    assert_eq!(t.state(at).role, Role::Leader);
    assert!(t.unknown_at().is_none());
}

#[test]
fn a_relist_replaces_the_pod_only_once_complete() {
    let mut t = tracker(Duration::from_secs(5));
    let now = Instant::now();
    let follower = pod(
        &[("podium.dev/role", "follower")],
        &[("podium.dev/group", "g")],
    );
    t.apply(Seen::Pod(Box::new(Ok(watcher::Event::Init))));
    assert_eq!(
        t.state(now).role,
        Role::Leader,
        "no blink at the list's start"
    );
    t.apply(Seen::Pod(Box::new(Ok(watcher::Event::InitApply(follower)))));
    assert_eq!(t.state(now).role, Role::Leader, "nor half-way");
    t.apply(Seen::Pod(Box::new(Ok(watcher::Event::InitDone))));
    assert_eq!(t.state(now).role, Role::Follower);
    // A list without the pod: it is gone.
    t.apply(Seen::Pod(Box::new(Ok(watcher::Event::Init))));
    t.apply(Seen::Pod(Box::new(Ok(watcher::Event::InitDone))));
    assert!(t.pod.is_none());
}

#[test]
fn unknown_until_both_watches_have_synced() {
    let mut t = tracker(Duration::from_secs(5));
    t.groups_synced = false;
    assert_eq!(t.state(Instant::now()).role, Role::Unknown);
}

#[test]
fn membership_is_the_group_annotation_or_a_selecting_group() {
    let mut t = tracker(Duration::from_secs(5));
    assert!(t.is_member());
    t.pod = Some(pod(&[("app", "x")], &[]));
    assert!(!t.is_member());
    let mut g = groups(None, None);
    g.get_mut("g").unwrap().selector = Some(Selector::from_iter([("app", "x")]));
    t.groups = g;
    assert!(t.is_member());
    t.pod = None;
    assert!(!t.is_member());
}

fn state(role: Role, term: Option<i64>) -> State {
    State {
        role,
        term,
        group: Some("g".into()),
        leader: None,
        at: Timestamp::now(),
        make_before_break: false,
    }
}

#[tokio::test(start_paused = true)]
async fn leadership_ends_on_follower_or_a_new_term_and_not_on_a_blip_of_unknown() {
    let (tx, rx) = watch::channel(state(Role::Leader, Some(4)));
    let lost = tokio::spawn(leadership_lost(rx.clone(), 4, None));
    tx.send(state(Role::Unknown, None)).unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(
        !lost.is_finished(),
        "unknown alone does not end it by default"
    );
    tx.send(state(Role::Leader, Some(4))).unwrap();
    tokio::task::yield_now().await;
    assert!(!lost.is_finished());
    tx.send(state(Role::Leader, Some(5))).unwrap();
    lost.await.unwrap();

    let lost = tokio::spawn(leadership_lost(rx, 5, None));
    tx.send(state(Role::Follower, None)).unwrap();
    lost.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn step_down_after_unknown_ends_leadership_once_unknown_lasts() {
    let (tx, rx) = watch::channel(state(Role::Leader, Some(4)));
    let lost = tokio::spawn(leadership_lost(rx, 4, Some(Duration::from_secs(10))));
    tx.send(state(Role::Unknown, None)).unwrap();
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(!lost.is_finished());
    tokio::time::sleep(Duration::from_secs(2)).await;
    lost.await.unwrap();
}

#[test]
fn files_hold_the_role_term_and_leader() {
    let mut s = state(Role::Leader, Some(9));
    s.leader = Some("p1".into());
    let c = files::contents(&s);
    assert_eq!(
        c.map(|(k, v)| format!("{k}={v}")),
        ["role=leader", "term=9", "leader=p1"]
    );
    let c = files::contents(&state(Role::Unknown, None));
    assert_eq!(c[0].1, "unknown");
    assert_eq!(c[1].1, "");
}

#[test]
fn files_are_replaced_whole() {
    let dir = std::env::temp_dir().join(format!("podium-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    files::write(&dir, &state(Role::Leader, Some(3))).unwrap();
    files::write(&dir, &state(Role::Follower, None)).unwrap();
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
    assert_eq!(
        (read("role"), read("term")),
        ("follower\n".into(), "\n".into())
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file is left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn watch_lines_are_json_with_every_field() {
    let line = state(Role::Leader, Some(2)).json_line();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["role"], "leader");
    assert_eq!(v["term"], 2);
    assert_eq!(v["group"], "g");
    assert!(v["leader"].is_null());
    assert!(v["at"].as_str().is_some_and(|t| t.ends_with('Z')));
}

/// The cases shared with the Go client (clients/go/vectors_test.go): a pod and the groups seen,
/// and the role, term, group and leader a member reads from them. Cases on which the two
/// libraries disagree (an empty `spec.roleLabel`, an empty `status.leader`) are left out;
/// testdata/member/README.md describes them.
#[test]
fn the_shared_test_vectors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/member");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "test vectors in {}", dir.display());
    let mut failed = vec![];
    for file in &files {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let pod: Option<Pod> = serde_json::from_value(v["pod"].clone()).unwrap();
        let groups: BTreeMap<String, GroupView> = v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let obj: DynamicObject = serde_json::from_value(g.clone()).unwrap();
                (obj.name_any(), group_view(&obj))
            })
            .collect();
        let s = observe(pod.as_ref(), &groups);
        let got = serde_json::json!({
            "role": s.role, "term": s.term, "group": s.group, "leader": s.leader,
        });
        if got != v["expected"] {
            failed.push(format!(
                "{}: {}\n  got  {got}\n  want {}",
                file.display(),
                v["description"],
                v["expected"]
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
