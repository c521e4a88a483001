//! The local control plane behaves like a real cluster: Deployments get Ready pods with IPs,
//! EndpointSlices follow labels and readiness.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PostParams;
use kube::runtime::watcher;
use serde_json::json;

use crate::support::*;

/// Addresses in a Service's EndpointSlices, with their ready flag.
pub fn slice_addresses(slices: &[std::sync::Arc<EndpointSlice>]) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .flat_map(|e| {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            e.addresses.iter().map(move |a| (a.clone(), ready))
        })
        .collect();
    out.sort();
    out
}

/// Creates a ClusterIP Service with the given selector.
pub async fn create_service(ns: &TestNs, name: &str, selector: serde_json::Value) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    ns.api::<Service>()
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");
}

/// Watches the Service's EndpointSlices until their addresses are exactly `want`.
pub async fn wait_slice(ns: &TestNs, service: &str, want: Vec<(String, bool)>) {
    let cfg = watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
    wait_for_list(
        &ns.api::<EndpointSlice>(),
        cfg,
        Duration::from_secs(30),
        "endpoint slice",
        |s| slice_addresses(s) == want,
    )
    .await;
}

#[tokio::test]
async fn deployment_gets_ready_pods_with_ips() {
    let ns = TestNs::new("cluster-deploy").await;
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "x"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "x"}},
            "template": {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}
            }
        }
    }))
    .unwrap();
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();
    let pods = wait_for_list(
        &ns.api::<Pod>(),
        watcher::Config::default().labels("app=x"),
        Duration::from_secs(60),
        "3 ready pods",
        |pods| pods.len() == 3 && pods.iter().all(|p| pod_ready(p) && pod_ip(p).is_some()),
    )
    .await;
    let mut ips: Vec<_> = pods.iter().filter_map(|p| pod_ip(p)).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "each pod has its own IP: {ips:?}");
}

#[tokio::test]
async fn endpoint_slice_follows_labels_and_readiness() {
    let ns = TestNs::new("cluster-eps").await;
    for (name, role) in [("p0", "a"), ("p1", "b"), ("p2", "b")] {
        ns.create_pod(name, &[("app", "x"), ("role", role)]).await;
    }
    let mut ip = std::collections::HashMap::new();
    for name in ["p0", "p1", "p2"] {
        ip.insert(name, pod_ip(&ns.wait_running(name).await).unwrap());
    }
    create_service(&ns, "x", json!({"app": "x", "role": "a"})).await;
    wait_slice(&ns, "x", vec![(ip["p0"].clone(), true)]).await;

    let start = std::time::Instant::now();
    ns.set_label("p0", "role", Some("b")).await;
    ns.set_label("p1", "role", Some("a")).await;
    wait_slice(&ns, "x", vec![(ip["p1"].clone(), true)]).await;
    println!(
        "endpoint slice followed a relabel in {} ms",
        ms_since(start)
    );

    ns.set_ready("p1", false).await;
    wait_slice(&ns, "x", vec![(ip["p1"].clone(), false)]).await;
    // kwok must not revert a readiness patch: it stays NotReady.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p1 = ns.api::<Pod>().get("p1").await.unwrap();
    assert!(!pod_ready(&p1), "kwok reverted the NotReady patch");
}
