//! The pod cache: indexes, scope, and what a change reports.

use super::*;
use serde_json::json;

fn pod(ns: &str, name: &str, rv: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "uid": format!("u-{name}"), "resourceVersion": rv,
                     "labels": labels,
                     "annotations": {"podium.dev/group": "g", "podium.dev/term": "3",
                                     "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(2000)},
                     "managedFields": [{"manager": "kubectl"}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-22T10:00:05Z"}],
                   "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 0}]}
    }))
    .unwrap()
}

fn put(c: &PodCache, ns: &str, name: &str, rv: &str, app: &str) -> Vec<Change> {
    c.apply(watcher::Event::Apply(pod(
        ns,
        name,
        rv,
        json!({"app": app}),
    )))
}

fn gone(c: &PodCache, ns: &str, name: &str, rv: &str, app: &str) -> Vec<Change> {
    c.apply(watcher::Event::Delete(pod(
        ns,
        name,
        rv,
        json!({"app": app}),
    )))
}

fn names(mut pods: Vec<Arc<CachedPod>>) -> Vec<String> {
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    pods.iter().map(|p| p.name.clone()).collect()
}

#[test]
fn own_annotations_are_found_by_key_in_any_order_given() {
    let a: OwnAnnotations = [
        ("podium.dev/term", "3"),
        ("podium.dev/group", "g"),
        ("podium.dev/term", "4"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        ["podium.dev/group", "podium.dev/term"]
    );
    assert_eq!(a.get("podium.dev/term").map(String::as_str), Some("3"));
    assert_eq!(a.get("podium.dev/group").map(String::as_str), Some("g"));
    assert!(!a.contains_key("podium.dev/priority"));
    assert!(OwnAnnotations::default().get("podium.dev/group").is_none());
}

#[test]
fn keeps_only_what_the_election_reads() {
    let p = CachedPod::from_pod(pod("ns", "a", "1", json!({"app": "x"})));
    assert_eq!(
        p.annotations.keys().collect::<Vec<_>>(),
        ["podium.dev/group", "podium.dev/term"]
    );
    assert_eq!(p.node.as_deref(), Some("n1"));
    assert!(p.is_ready());
    assert_eq!(p.leads(), Some("g"));
    assert_eq!(p.labels["app"], "x");
}

#[test]
fn finds_pods_by_label_and_by_group() {
    let c = PodCache::default();
    put(&c, "ns", "a", "1", "x");
    put(&c, "ns", "b", "1", "y");
    put(&c, "other", "c", "1", "x");
    let x = Anchor::Equal("app".into(), "x".into());
    assert_eq!(names(c.candidates("ns", &x)), ["a"]);
    let xy = Anchor::In("app".into(), vec!["x".into(), "y".into()]);
    assert_eq!(names(c.candidates("ns", &xy)), ["a", "b"]);
    assert_eq!(names(c.candidates("ns", &Anchor::Scan)), ["a", "b"]);
    assert_eq!(names(c.labelled_for("ns", "g")), ["a", "b"]);
    // A label change moves the pod in the index.
    let change = put(&c, "ns", "a", "2", "y");
    assert_eq!(change[0].before.as_ref().unwrap().labels["app"], "x");
    assert!(c.candidates("ns", &x).is_empty());
    gone(&c, "ns", "b", "3", "y");
    assert_eq!(names(c.candidates("ns", &xy)), ["a"]);
    assert_eq!(c.len(), 2);
}

#[test]
fn under_a_pod_selector_a_labelled_pod_that_vanishes_is_kept_out_of_scope() {
    let c = PodCache::scoped_by_selector();
    put(&c, "ns", "a", "1", "x");
    let change = gone(&c, "ns", "a", "1", "x");
    assert!(change[0].after.as_ref().unwrap().out_of_scope);
    assert!(c.get("ns", "a").unwrap().out_of_scope);
    // Only the same pod, and only while out of scope, is forgotten.
    c.forget_out_of_scope("ns", "a", "other-uid");
    assert!(c.get("ns", "a").is_some());
    c.forget_out_of_scope("ns", "a", "u-a");
    assert!(c.get("ns", "a").is_none());
    // Without a pod selector a delete is a delete.
    let plain = PodCache::default();
    put(&plain, "ns", "a", "1", "x");
    gone(&plain, "ns", "a", "1", "x");
    assert!(plain.get("ns", "a").is_none());
}

#[test]
fn a_relist_reports_what_changed_and_what_vanished() {
    let c = PodCache::default();
    for (n, rv) in [("a", "1"), ("b", "1"), ("c", "1")] {
        c.apply(watcher::Event::Apply(pod("ns", n, rv, json!({"app": "x"}))));
    }
    let kept = c.get("ns", "a").unwrap();
    assert!(c.apply(watcher::Event::Init).is_empty());
    for (n, rv) in [("a", "1"), ("b", "5"), ("d", "6")] {
        assert!(
            c.apply(watcher::Event::InitApply(pod(
                "ns",
                n,
                rv,
                json!({"app": "x"})
            )))
            .is_empty()
        );
    }
    // The old state is served until the relist completes.
    assert!(c.get("ns", "c").is_some());
    let mut changes: Vec<(Option<String>, Option<String>)> = c
        .apply(watcher::Event::InitDone)
        .into_iter()
        .map(|ch| {
            (
                ch.before.map(|p| p.name.clone()),
                ch.after.map(|p| p.name.clone()),
            )
        })
        .collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            (None, Some("d".to_string())),
            (Some("b".to_string()), Some("b".to_string())),
            (Some("c".to_string()), None),
        ]
    );
    assert!(Arc::ptr_eq(&kept, &c.get("ns", "a").unwrap()));
    assert!(c.get("ns", "c").is_none());
    assert_eq!(c.len(), 3);
}
