//! Routing one pod event to its groups (`routing::route`) with 10,000 groups in the Claims
//! index: a follower's relabel (routine), a leader deleted (urgent), a pod no group selects.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::watcher::Event;
use podium_api::ElectionGroup;
use podium_operator::cache::{CachedPod, Change};
use podium_operator::claims::Claims;
use podium_operator::routing::route;
use serde_json::json;

const GROUPS: usize = 10_000;

/// 10,000 groups in one namespace, group `gN` selecting the pods labelled `group=gN`.
fn claims() -> Claims {
    let claims = Claims::default();
    claims.apply(&Event::Init);
    for i in 0..GROUPS {
        let g: ElectionGroup = serde_json::from_value(json!({
            "apiVersion": "podium.dev/v1alpha1", "kind": "ElectionGroup",
            "metadata": {"name": format!("g{i}"), "namespace": "ns", "uid": format!("u-g{i}"), "generation": 1},
            "spec": {"selector": {"matchLabels": {"group": format!("g{i}")}}}
        }))
        .unwrap();
        claims.apply(&Event::InitApply(DeserializeGuard(Ok(g))));
    }
    claims.apply(&Event::InitDone);
    claims
}

fn pod(group: &str, rv: &str, extra: &str, leader: bool) -> Arc<CachedPod> {
    let annotations = if leader {
        json!({"podium.dev/group": group, "podium.dev/term": "3"})
    } else {
        json!({"podium.dev/group": group})
    };
    let role = if leader { "leader" } else { "follower" };
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("{group}-0"), "namespace": "ns", "uid": "u", "resourceVersion": rv,
                     "labels": {"group": group, "podium.dev/role": role, "extra": extra},
                     "annotations": annotations},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap();
    Arc::new(CachedPod::from_pod(p))
}

fn bench_route(c: &mut Criterion) {
    let claims = claims();
    let relabel = Change {
        before: Some(pod("g4321", "1", "a", false)),
        after: Some(pod("g4321", "2", "b", false)),
    };
    assert_eq!(route(&relabel, &claims).routine.len(), 1);
    let leader_gone = Change {
        before: Some(pod("g4321", "1", "a", true)),
        after: None,
    };
    assert_eq!(route(&leader_gone, &claims).urgent.len(), 1);
    let unselected: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-0", "namespace": "ns", "uid": "w", "resourceVersion": "1",
                     "labels": {"app": "web"}}
    }))
    .unwrap();
    let unselected = Arc::new(CachedPod::from_pod(unselected));
    let other = Change {
        before: Some(unselected.clone()),
        after: Some(unselected),
    };
    assert_eq!(route(&other, &claims), Default::default());

    let mut group = c.benchmark_group("route_10000_groups");
    group.bench_function("follower_relabelled", |b| {
        b.iter(|| route(black_box(&relabel), &claims))
    });
    group.bench_function("leader_deleted", |b| {
        b.iter(|| route(black_box(&leader_gone), &claims))
    });
    group.bench_function("unselected_pod", |b| {
        b.iter(|| route(black_box(&other), &claims))
    });
    group.finish();
}

criterion_group!(benches, bench_route);
criterion_main!(benches);
