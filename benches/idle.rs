//! What sitting still costs: write requests over an idle window, less the background rate
//! measured first with nothing of the bench running.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use podium_api::ElectionGroup;
use podium_bench::metrics::write_requests;
use podium_testkit::support::TestNs;
use serde_json::{Value, json};

use crate::apiserver::request_counts;
use crate::namespaces::wait_ns_gone;

/// API writes over one idle window: the API server's counters for `resources` (all
/// namespaces: background writes included, subtract a baseline) and, for a cross-check, the
/// changes a watch of the bench namespace saw on the same kinds.
#[derive(Clone, Debug)]
pub struct IdleWindow {
    pub secs: f64,
    pub writes: f64,
    pub ns_changes: usize,
}

/// Counts the changes a watch sees on one kind in a namespace until `until`.
pub async fn changes_until<K>(api: Api<K>, until: tokio::time::Instant) -> usize
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let stream = watcher(api, watcher::Config::default());
    let mut stream = std::pin::pin!(stream);
    let (mut live, mut n) = (false, 0);
    while let Ok(Some(ev)) = tokio::time::timeout_at(until, stream.next()).await {
        match ev {
            Ok(watcher::Event::InitDone) => live = true,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) if live => n += 1,
            _ => {}
        }
    }
    n
}

/// One idle window of `dur` over `resources` (among pods, electiongroups, events, leases).
pub async fn idle_window(ns: &TestNs, resources: &[&str], dur: Duration) -> IdleWindow {
    let client = ns.client.clone();
    let before = request_counts(&client).await;
    let t0 = Instant::now();
    let until = tokio::time::Instant::now() + dur;
    let count = |r: &str| resources.contains(&r);
    let (pods, groups, events, leases) = tokio::join!(
        async {
            if count("pods") {
                changes_until(ns.api::<Pod>(), until).await
            } else {
                0
            }
        },
        async {
            if count("electiongroups") {
                changes_until(ns.api::<ElectionGroup>(), until).await
            } else {
                0
            }
        },
        async {
            if count("events") {
                changes_until(ns.api::<k8s_openapi::api::events::v1::Event>(), until).await
            } else {
                0
            }
        },
        async {
            if count("leases") {
                changes_until(ns.api::<k8s_openapi::api::coordination::v1::Lease>(), until).await
            } else {
                0
            }
        },
    );
    tokio::time::sleep_until(until).await;
    let after = request_counts(&client).await;
    IdleWindow {
        secs: t0.elapsed().as_secs_f64(),
        writes: write_requests(&before, &after, resources),
        ns_changes: pods + groups + events + leases,
    }
}

/// Resources podium writes: pod labels and annotations, group status, Events.
pub const PODIUM_RESOURCES: [&str; 3] = ["pods", "electiongroups", "events"];

/// Background write rates (per second) with nothing of the bench running, per resource set.
pub struct Background {
    pub window: IdleWindow,
    pub podium_per_s: f64,
    pub leases_per_s: f64,
}

pub async fn background(dur: Duration) -> Background {
    let ns = TestNs::new("bench-idle-baseline").await;
    let client = ns.client.clone();
    let before = request_counts(&client).await;
    let t0 = Instant::now();
    tokio::time::sleep(dur).await;
    let after = request_counts(&client).await;
    let secs = t0.elapsed().as_secs_f64();
    let podium = write_requests(&before, &after, &PODIUM_RESOURCES);
    let leases = write_requests(&before, &after, &["leases"]);
    let name = ns.name.clone();
    drop(ns);
    wait_ns_gone(&name).await;
    Background {
        window: IdleWindow {
            secs,
            writes: podium + leases,
            ns_changes: 0,
        },
        podium_per_s: podium / secs,
        leases_per_s: leases / secs,
    }
}

/// Writes per group per second over an idle window, less the background rate.
pub fn idle_row(w: &IdleWindow, background_per_s: f64, groups: usize) -> Value {
    let net = w.writes - background_per_s * w.secs;
    let per_group = net / w.secs / groups as f64;
    json!({
        "groups": groups,
        "window_s": (w.secs * 10.0).round() / 10.0,
        "writes": w.writes,
        "background_writes": (background_per_s * w.secs * 10.0).round() / 10.0,
        "per_group_per_s": (per_group * 1000.0).round() / 1000.0,
        "ns_changes": w.ns_changes,
        "ns_changes_per_group_per_s": ((w.ns_changes as f64 / w.secs / groups as f64) * 1000.0).round() / 1000.0,
    })
}
