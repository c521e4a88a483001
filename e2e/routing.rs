//! The owned route against a real API server: the leader Service podium creates, its
//! EndpointSlice following the leader in one write, and what others do to it — a Service or a
//! slice of its names podium did not create, forged leader labels (by hand and through a pod
//! template), a port the pods lack, a leader without an IP yet.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use podium_testkit::slices::SliceWatch;
use serde_json::json;

use crate::cluster::{create_service, wait_slice};
use crate::groups::*;
use crate::support::*;

fn with_service() -> serde_json::Value {
    json!({
        "selector": {"matchLabels": {"app": "x"}},
        "service": {"ports": [{"name": "web", "port": 80, "targetPort": 8080}]},
    })
}

async fn ip_of(s: &Setup, pod: &str) -> String {
    let p = s.ns.api::<Pod>().get(pod).await.unwrap();
    pod_ip(&p).unwrap_or_else(|| panic!("{pod} has no IP"))
}

#[tokio::test]
async fn a_group_with_a_service_gets_it_and_a_slice_listing_the_leader() {
    let s = Setup::new("route-svc").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group("api", with_service()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;

    let svc = wait_for_object(
        &s.ns.api::<Service>(),
        "api-leader",
        Duration::from_secs(30),
        |_| true,
    )
    .await;
    let spec = svc.spec.clone().unwrap();
    assert!(spec.selector.is_none(), "podium's Service has no selector");
    assert_eq!(spec.ports.unwrap()[0].port, 80);
    let owner = &svc.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ElectionGroup", "api")
    );
    assert_eq!(
        svc.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("podium")
    );

    wait_slice(&s.ns, "api-leader", vec![(ip_of(&s, "p0").await, true)]).await;
    let slice = s.ns.api::<EndpointSlice>().get("api-leader").await.unwrap();
    let port = slice.ports.unwrap_or_default()[0].port;
    assert_eq!(port, Some(8080));
    let e = &slice.endpoints[0];
    assert_eq!(
        e.target_ref.as_ref().and_then(|t| t.name.as_deref()),
        Some("p0")
    );
    assert!(e.node_name.is_some());
}

#[tokio::test]
async fn deleting_the_leader_moves_the_slice_without_ever_listing_two() {
    let s = Setup::new("route-failover").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group("api", with_service()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    let (old, new) = (ip_of(&s, "p0").await, ip_of(&s, "p1").await);
    let slices = SliceWatch::start(&s.ns, "api-leader");
    slices.wait_only(&old, Duration::from_secs(30)).await;

    let start = Instant::now();
    s.ns.delete_pod_now("p0").await;
    s.wait_leader("api", "app=x", "p1").await;
    slices.wait_only(&new, Duration::from_secs(30)).await;
    // The watch saw only p0's address, then only p1's: it saw the change.
    let most = slices.most_since(start);
    assert!(most <= 1, "a watch saw {most} addresses at once");
}

/// A group with a service elects p0 beside an object of its owned route's names that it does
/// not control, reports the conflict, and has had the time to write it wrongly.
async fn elect_beside_a_foreign_object(s: &Setup) {
    s.pods(&["p0", "p1"], &[("app", "x")]).await;
    s.apply_group("api", with_service()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    let g = s
        .wait_group("api", "conflict", |g| {
            condition(g, "Conflict")
                .is_some_and(|(st, reason)| st == "True" && reason == "ForeignService")
        })
        .await;
    assert_eq!(
        status(&g).leader.as_deref(),
        Some("p0"),
        "the election goes on"
    );
    // Give a wrong write the time to happen.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_foreign_service_of_that_name_is_a_conflict_and_left_alone() {
    let s = Setup::new("route-foreign").await;
    create_service(&s.ns, "api-leader", json!({"app": "someone-else"})).await;
    let before = s.ns.api::<Service>().get("api-leader").await.unwrap();
    elect_beside_a_foreign_object(&s).await;
    let after = s.ns.api::<Service>().get("api-leader").await.unwrap();
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "the Service was written"
    );
    let podium_slices = list(
        &s.ns.api::<EndpointSlice>(),
        "endpointslice.kubernetes.io/managed-by=podium.dev",
    )
    .await;
    assert!(
        podium_slices.is_empty(),
        "podium wrote slices: {podium_slices:?}"
    );
}

#[tokio::test]
async fn a_foreign_slice_of_that_name_is_a_conflict_and_left_alone() {
    let s = Setup::new("route-foreign-slice").await;
    let foreign: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "api-leader", "labels": {
            "kubernetes.io/service-name": "api-leader",
            "endpointslice.kubernetes.io/managed-by": "someone-else.example.com"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.250.9.9"], "conditions": {"ready": true}}],
        "ports": [{"port": 8080}]
    }))
    .unwrap();
    let slices = s.ns.api::<EndpointSlice>();
    let before = slices
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    elect_beside_a_foreign_object(&s).await;
    let after = slices.get("api-leader").await.unwrap();
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "the foreign slice was written"
    );
}

/// A follower labelled leader by hand (no admission policy here) and pods whose template
/// carries the leader label: the label route would send them traffic, the owned slice never
/// lists them.
#[tokio::test]
async fn forged_leader_labels_never_reach_the_owned_slice() {
    let s = Setup::new("route-forged").await;
    s.pods(&["p0", "p1"], &[("app", "x")]).await;
    s.apply_group("api", with_service()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    let (leader, follower) = (ip_of(&s, "p0").await, ip_of(&s, "p1").await);
    let slices = SliceWatch::start(&s.ns, "api-leader");
    slices.wait_only(&leader, Duration::from_secs(30)).await;
    let start = Instant::now();

    let forged = format!("{ROLE}=leader");
    kubectl(&[
        "-n",
        &s.ns.name,
        "label",
        "pod",
        "p1",
        &forged,
        "--overwrite",
    ]);
    wait_for_object(&s.ns.api::<Pod>(), "p1", Duration::from_secs(30), |p| {
        label(p, ROLE).as_deref() == Some("follower")
    })
    .await;

    let template: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "forger"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"forger": "yes"}},
                 "template": {"metadata": {"labels": {"app": "x", "forger": "yes", ROLE: "leader"}},
                              "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}}
    }))
    .unwrap();
    s.ns.api::<Deployment>()
        .create(&PostParams::default(), &template)
        .await
        .unwrap();
    let copies = wait_for_list(
        &s.ns.api::<Pod>(),
        kube::runtime::watcher::Config::default().labels("forger=yes"),
        Duration::from_secs(60),
        "the Deployment's pods running with an IP",
        |ps| ps.len() == 2 && ps.iter().all(|p| pod_ip(p).is_some()),
    )
    .await;
    // Give a wrong slice write the time to happen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The copies keep their foreign label (podium reports it); the election is unchanged.
    let g = s.groups().get("api").await.unwrap();
    assert_eq!(status(&g).leader.as_deref(), Some("p0"));
    slices.wait_only(&leader, Duration::from_secs(30)).await;
    assert!(
        !slices.listed_since(&follower, start),
        "the forged follower was listed"
    );
    for p in &copies {
        let ip = pod_ip(p).unwrap();
        assert!(
            !slices.listed_since(&ip, start),
            "{} was listed",
            p.name_any()
        );
    }
    let most = slices.most_since(start);
    assert!(most <= 1, "the slice listed {most} addresses at once");
}

/// A named target port the pods do not declare resolves to nothing, as the EndpointSlice
/// controller resolves it: the slice lists the leader with the ports it has.
#[tokio::test]
async fn a_target_port_the_pods_lack_is_left_out_of_the_slice() {
    let s = Setup::new("route-port").await;
    s.pods(&["p0", "p1"], &[("app", "x")]).await;
    let spec = json!({
        "selector": {"matchLabels": {"app": "x"}},
        "service": {"ports": [{"name": "web", "port": 80, "targetPort": "web"},
                              {"name": "metrics", "port": 9090, "targetPort": 9090}]},
    });
    s.apply_group("api", spec).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    wait_slice(&s.ns, "api-leader", vec![(ip_of(&s, "p0").await, true)]).await;
    let slice = s.ns.api::<EndpointSlice>().get("api-leader").await.unwrap();
    let ports: Vec<_> = slice
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.name.unwrap_or_default(), p.port))
        .collect();
    assert_eq!(ports, [("metrics".to_string(), Some(9090))]);
}

/// A leader whose kubelet has not reported an IP is listed once it has one, and followed when
/// it changes (a restarted pod sandbox): the slice never holds an address the pod lacks.
#[tokio::test]
async fn a_leader_without_an_ip_is_listed_once_it_has_one() {
    let s = Setup::new("route-no-ip").await;
    let start = Instant::now();
    // Bound to a node nobody runs: its status is what this test writes.
    let mut pod = pod_manifest("p0", &[("app", "x")], &[]);
    pod.spec.as_mut().unwrap().node_name = Some("route-no-ip-node".into());
    let pods = s.ns.api::<Pod>();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let report = |ip: Option<&str>| {
        let ips = ip.map(|ip| json!([{"ip": ip}]));
        json!({"status": {"phase": "Running", "podIP": ip, "podIPs": ips,
            "conditions": [{"type": "Ready", "status": "True"}]}})
    };
    let status_of = |ip| Patch::Merge(report(ip));
    pods.patch_status("p0", &PatchParams::default(), &status_of(None))
        .await
        .unwrap();
    s.apply_group("api", with_service()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    let slices = SliceWatch::start(&s.ns, "api-leader");
    let empty = wait_for_object(
        &s.ns.api::<EndpointSlice>(),
        "api-leader",
        Duration::from_secs(30),
        |_| true,
    )
    .await;
    assert!(
        empty.endpoints.is_empty(),
        "a leader without an IP is listed"
    );
    let service = wait_for_object(
        &s.ns.api::<Service>(),
        "api-leader",
        Duration::from_secs(30),
        |_| true,
    )
    .await;
    assert!(service.spec.unwrap().selector.is_none());
    for ip in ["10.250.7.1", "10.250.7.2"] {
        pods.patch_status("p0", &PatchParams::default(), &status_of(Some(ip)))
            .await
            .unwrap();
        slices.wait_only(ip, Duration::from_secs(30)).await;
    }
    let most = slices.most_since(start);
    assert!(most <= 1, "the slice listed {most} addresses at once");
}
