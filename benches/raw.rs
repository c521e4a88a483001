//! The API server's raw capacity: what a plain client reaches for each kind of write podium
//! makes, the bound no operator beats.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use podium_api::ElectionGroup;
use podium_testkit::support::{TestNs, pod_manifest};
use serde_json::{Value, json};

use crate::counting::create_ready_pods;

/// Raw API capacity when no scale run measures it: label patches of 100 pods from a plain
/// client at `concurrency`, as in the scale runs.
pub async fn raw_patch_rate(concurrency: usize) -> f64 {
    let ns = TestNs::new("bench-raw").await;
    let pods_api = ns.api::<Pod>();
    let pods_n = 100;
    create_ready_pods(
        &pods_api,
        "bench=raw",
        pods_n,
        concurrency,
        Duration::from_secs(120),
        |i| {
            let pod = pod_manifest(&format!("r{i}"), &[("bench", "raw")], &[]);
            (ns.name.clone(), pod)
        },
    )
    .await;
    label_patches(&ns.client, "raw", 1000, concurrency, |i| {
        (ns.name.clone(), format!("r{}", i % pods_n))
    })
    .await
}

/// The raw patch rate at each of `concurrencies` (`BENCH_RAW_SWEEP`), `n` patches each: how many requests in flight the API server needs to reach its
/// capacity, which is what `--concurrency` should be chosen from.
pub async fn raw_sweep(
    client: &Client,
    concurrencies: &[usize],
    n: usize,
    pod: impl Fn(usize) -> (String, String) + Copy,
) -> BTreeMap<String, f64> {
    let mut rates = BTreeMap::new();
    for &c in concurrencies {
        // A value of its own per pass: an unchanged value is no write at all.
        let rate = label_patches(client, &format!("c{c}"), n, c.max(1), pod).await;
        println!("  raw label patches at concurrency {c}: {rate:.1}/s");
        rates.insert(format!("{c:03}"), (rate * 10.0).round() / 10.0);
    }
    rates
}

/// `n` requests, `concurrency` in flight, the i-th made by `request(i)`: how many per second.
pub async fn request_rate<F, Fut>(n: usize, concurrency: usize, request: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    stream::iter(0..n)
        .map(request)
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    n as f64 / start.elapsed().as_secs_f64()
}

/// What a plain client reaches, at `concurrency`, for each kind of write podium makes besides
/// pod labels: a metadata patch of a group (as its finalizer is), a status patch of a group's
/// size, and an Event. `group(i)` names the i-th group (namespace, name); `n` of each are
/// made. The statuses are removed afterwards, untimed, so the operator starts from none.
pub async fn rates_by_kind(
    client: &Client,
    n: usize,
    concurrency: usize,
    group: impl Fn(usize) -> (String, String) + Copy,
    pod: impl Fn(usize) -> (String, String) + Copy,
) -> BTreeMap<&'static str, f64> {
    let groups = |ns: &str| Api::<ElectionGroup>::namespaced(client.clone(), ns);
    let merge = |v: Value| Patch::Merge(v);
    let meta = request_rate(n, concurrency, |i| {
        let (ns, name) = group(i);
        let api = groups(&ns);
        async move {
            let patch = merge(json!({"metadata": {"annotations": {"bench-raw": format!("m{i}")}}}));
            api.patch(&name, &PatchParams::default(), &patch)
                .await
                .unwrap();
        }
    })
    .await;
    let status = request_rate(n, concurrency, |i| {
        let (ns, name) = group(i);
        let api = groups(&ns);
        async move {
            let at = jiff::Timestamp::now().to_string();
            let patch = merge(json!({"status": {
                "members": 5, "readyMembers": 5, "readySummary": "5/5", "term": i,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Bench",
                    "message": format!("bench status write {i}"), "lastTransitionTime": at}]}}));
            api.patch_status(&name, &PatchParams::default(), &patch)
                .await
                .unwrap();
        }
    })
    .await;
    // Untimed: only so that the operator starts from groups without a status.
    request_rate(n, concurrency, |i| {
        let (ns, name) = group(i);
        let api = groups(&ns);
        async move {
            let patch = merge(json!({"status": null}));
            api.patch_status(&name, &PatchParams::default(), &patch)
                .await
                .unwrap();
        }
    })
    .await;
    let stamp = jiff::Timestamp::now().as_second();
    let events = request_rate(n, concurrency, |i| {
        let (ns, pod_name) = pod(i);
        let api = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns);
        async move {
            let event: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
                "metadata": {"name": format!("bench-raw-{stamp}-{i}")},
                "eventTime": jiff::Timestamp::now().to_string(),
                "reportingController": "bench.podium.dev/raw", "reportingInstance": "bench",
                "action": "Bench", "reason": "Bench", "type": "Normal",
                "note": format!("bench event {i}"),
                "regarding": {"kind": "Pod", "namespace": ns, "name": pod_name, "apiVersion": "v1"}
            }))
            .unwrap();
            api.create(&PostParams::default(), &event).await.unwrap();
        }
    })
    .await;
    let round = |r: f64| (r * 10.0).round() / 10.0;
    println!(
        "  raw at concurrency {concurrency}: group metadata {meta:.1}/s, group status {status:.1}/s, Events {events:.1}/s"
    );
    BTreeMap::from([
        ("group_metadata", round(meta)),
        ("group_status", round(status)),
        ("event", round(events)),
    ])
}

/// `n` label patches from a plain client at `concurrency`, the i-th on pod `pod(i)` (its
/// namespace and name): the API server's raw write capacity, in patches per second.
pub async fn label_patches(
    client: &Client,
    tag: &str,
    n: usize,
    concurrency: usize,
    pod: impl Fn(usize) -> (String, String),
) -> f64 {
    request_rate(n, concurrency, |i| {
        let (ns, name) = pod(i);
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"metadata": {"labels": {"bench-raw": format!("{tag}-{i}")}}});
        async move {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
        }
    })
    .await
}
