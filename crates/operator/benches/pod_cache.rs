//! The pod cache (`cache::PodCache`) holding 50,000 pods (10,000 groups of 5 in one
//! namespace): applying one pod's update, and the reads a reconcile makes (one pod, a
//! selector's candidates, the pods labelled for a group); and a relist of all of them.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;
use podium_operator::cache::{Anchor, PodCache};
use serde_json::json;

const PODS: usize = 50_000;
const GROUP_SIZE: usize = 5;

fn pod(i: usize, rv: u64) -> Pod {
    let group = format!("g{}", i / GROUP_SIZE);
    let role = if i.is_multiple_of(GROUP_SIZE) {
        "leader"
    } else {
        "follower"
    };
    serde_json::from_value(json!({
        "metadata": {"name": format!("{group}-{}", i % GROUP_SIZE), "namespace": "ns",
                     "uid": format!("u{i}"), "resourceVersion": rv.to_string(),
                     "creationTimestamp": "2026-11-22T10:00:00Z",
                     "labels": {"group": group, "podium.dev/role": role, "app": "bench"},
                     "annotations": {"podium.dev/group": group, "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"nodeName": format!("node-{}", i % 7), "containers": [{"name": "app", "image": "app"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-22T10:00:05Z"}]}
    }))
    .unwrap()
}

fn listed(pods: &[Pod]) -> PodCache {
    let cache = PodCache::default();
    cache.apply(Event::Init);
    for p in pods {
        cache.apply(Event::InitApply(p.clone()));
    }
    cache.apply(Event::InitDone);
    cache
}

fn bench_cache(c: &mut Criterion) {
    let pods: Vec<Pod> = (0..PODS).map(|i| pod(i, 1)).collect();
    let cache = listed(&pods);
    assert_eq!(cache.len(), PODS);
    let anchor = Anchor::Equal("group".into(), "g4321".into());
    assert_eq!(cache.candidates("ns", &anchor).len(), GROUP_SIZE);
    assert_eq!(cache.labelled_for("ns", "g4321").len(), GROUP_SIZE);

    let mut group = c.benchmark_group("pod_cache_50000");
    let mut rv = 1;
    group.bench_function("apply_update", |b| {
        b.iter_batched(
            || {
                rv += 1;
                pod(21_605, rv)
            },
            |p| cache.apply(Event::Apply(black_box(p))),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("get", |b| b.iter(|| cache.get("ns", black_box("g4321-3"))));
    group.bench_function("candidates", |b| {
        b.iter(|| cache.candidates("ns", black_box(&anchor)))
    });
    group.bench_function("labelled_for", |b| {
        b.iter(|| cache.labelled_for("ns", black_box("g4321")))
    });
    group.sample_size(10);
    group.bench_function("relist_unchanged", |b| {
        b.iter_batched(
            || pods.clone(),
            |pods| {
                cache.apply(Event::Init);
                for p in pods {
                    cache.apply(Event::InitApply(p));
                }
                cache.apply(Event::InitDone)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_cache);
criterion_main!(benches);
