//! Failover and traffic switch: a group of three, its leader deleted or made NotReady, timed
//! until another pod is labelled leader and until the leader Service's EndpointSlice holds
//! only the new leader.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use podium_testkit::groups::{LeaderWatch, ROLE, Setup, status};
use podium_testkit::support::{TestNs, pod_ip};
use serde_json::json;

/// Watches one Service's EndpointSlices and wakes waiters on every change.
pub struct SliceWatch {
    addrs: Arc<Mutex<Vec<String>>>,
    changed: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl SliceWatch {
    async fn start(ns: &TestNs, service: &str) -> Self {
        let addrs = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(tokio::sync::Notify::new());
        let (a, c) = (addrs.clone(), changed.clone());
        let api = ns.api::<EndpointSlice>();
        let cfg =
            watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
        let task = tokio::spawn(async move {
            let (reader, writer) = kube::runtime::reflector::store();
            let s =
                kube::runtime::reflector::reflector(writer, watcher(api, cfg)).default_backoff();
            let mut s = std::pin::pin!(s);
            while let Some(Ok(_)) = s.next().await {
                let mut ready: Vec<String> = reader
                    .state()
                    .iter()
                    .flat_map(|sl| sl.endpoints.clone())
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
                    .flat_map(|e| e.addresses)
                    .collect();
                ready.sort();
                *a.lock().unwrap() = ready;
                c.notify_waiters();
            }
        });
        Self {
            addrs,
            changed,
            task,
        }
    }

    /// Waits until the ready addresses are exactly `[ip]`; returns when that was seen.
    async fn wait_only(&self, ip: &str, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if *self.addrs.lock().unwrap() == [ip.to_string()] {
                return Instant::now();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                tokio::time::timeout(left, changed).await.is_ok(),
                "slice never held only {ip}"
            );
        }
    }
}

impl Drop for SliceWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn leader_of(s: &Setup, group: &str) -> String {
    let g = s
        .wait_group(group, "has a leader", |g| status(g).leader.is_some())
        .await;
    status(&g).leader.unwrap()
}

pub async fn pod_ip_of(ns: &TestNs, pod: &str) -> String {
    pod_ip(&ns.wait_running(pod).await).unwrap()
}

/// Failover and traffic-switch trials: delete the leader, or make it NotReady.
pub async fn failover(trials: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let s = Setup::new("bench-failover").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    crate_service(&s.ns).await;
    s.apply_group("api", json!({"selector": {"matchLabels": {"app": "x"}}}))
        .await
        .unwrap();
    let watch = LeaderWatch::start(&s.ns, "app=x").await;
    let slices = SliceWatch::start(&s.ns, "leader").await;
    let (mut delete_ms, mut unready_ms, mut traffic_ms) = (vec![], vec![], vec![]);
    let mut next = 3;
    for i in 0..trials * 2 {
        let old = leader_of(&s, "api").await;
        s.wait_leader("api", "app=x", &old).await;
        let old_ip = pod_ip_of(&s.ns, &old).await;
        slices.wait_only(&old_ip, Duration::from_secs(30)).await;
        let by_delete = i % 2 == 0;
        let start = Instant::now();
        if by_delete {
            s.ns.delete_pod_now(&old).await;
        } else {
            s.ns.set_ready(&old, false).await;
        }
        let (new, seen) = watch
            .wait_new_leader(&old, start, Duration::from_secs(30))
            .await;
        let ms = seen.duration_since(start).as_secs_f64() * 1000.0;
        let new_ip = pod_ip_of(&s.ns, &new).await;
        let switched = slices.wait_only(&new_ip, Duration::from_secs(30)).await;
        traffic_ms.push(switched.duration_since(start).as_secs_f64() * 1000.0);
        if by_delete {
            delete_ms.push(ms);
            let name = format!("p{next}");
            next += 1;
            s.ns.create_pod(&name, &[("app", "x")]).await;
            s.ns.wait_running(&name).await;
        } else {
            unready_ms.push(ms);
            s.ns.set_ready(&old, true).await;
        }
        // Let the group settle (all members labelled, status written) before the next trial.
        s.wait_group("api", "3 ready", |g| {
            status(g).ready_members == 3 && status(g).members == 3
        })
        .await;
    }
    assert!(
        watch.max_leaders() <= 1,
        "a watch saw two leaders during the trials"
    );
    (delete_ms, unready_ms, traffic_ms)
}

pub async fn crate_service(ns: &TestNs) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "leader"},
        "spec": {"selector": {"app": "x", ROLE: "leader"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    ns.api::<Service>()
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
}
