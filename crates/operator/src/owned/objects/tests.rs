use super::*;
use k8s_openapi::api::core::v1::Pod;
use podium_api::{LeaderServicePort, Protocol};

fn group() -> ElectionGroup {
    serde_json::from_value(json!({
        "apiVersion": "podium.dev/v1alpha1", "kind": "ElectionGroup",
        "metadata": {"name": "g", "namespace": "ns", "uid": "g-uid"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}},
    }))
    .unwrap()
}

fn spec(ports: Value) -> LeaderService {
    serde_json::from_value(json!({"ports": ports})).unwrap()
}

fn pod(name: &str, ips: &[&str], ready: bool, terminating: bool) -> CachedPod {
    let ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    let mut meta = json!({"name": name, "namespace": "ns", "uid": format!("{name}-uid")});
    if terminating {
        meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    let p: Pod = serde_json::from_value(json!({
        "metadata": meta,
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "ports": [
            {"name": "http", "containerPort": 8080},
            {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
            {"containerPort": 9000},
        ]}]},
        "status": {"podIPs": ips, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
    }))
    .unwrap();
    CachedPod::from_pod(p)
}

fn ports(s: &EndpointSlice) -> Vec<(String, i32, String)> {
    s.ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or_default(),
                p.protocol.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn the_pod_keeps_only_its_named_ports_and_its_addresses() {
    let p = pod("a", &["10.0.0.1", "fd00::1"], true, false);
    let named: Vec<(&str, i32, Protocol)> = p
        .ports
        .iter()
        .map(|n| (n.name.as_str(), n.port, n.protocol))
        .collect();
    assert_eq!(
        named,
        [("http", 8080, Protocol::TCP), ("dns", 5353, Protocol::UDP)]
    );
    assert_eq!(p.ips.len(), 2);
    assert_eq!(p.node.as_deref(), Some("n1"));
}

#[test]
fn the_service_has_no_selector_and_is_owned_by_the_group() {
    let mut svc_spec = spec(json!([{"port": 80}, {"name": "b", "port": 81, "targetPort": "http"}]));
    svc_spec.labels.insert("team".into(), "a".into());
    svc_spec.annotations.insert("note".into(), "b".into());
    let s = service(&group(), "g-leader", &svc_spec);
    let spec = s.spec.clone().unwrap();
    assert!(spec.selector.is_none());
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let ports = spec.ports.unwrap();
    assert_eq!(ports[0].target_port, Some(IntOrString::Int(80)));
    assert_eq!(
        ports[1].target_port,
        Some(IntOrString::String("http".into()))
    );
    let labels = s.metadata.labels.clone().unwrap();
    assert_eq!(labels["team"], "a");
    assert_eq!(labels[MANAGED_BY_LABEL], "podium");
    assert_eq!(labels[GROUP_LABEL], "g");
    assert_eq!(s.metadata.annotations.clone().unwrap()["note"], "b");
    let o = &s.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (o.uid.as_str(), o.kind.as_str()),
        ("g-uid", "ElectionGroup")
    );
    assert_eq!(
        (o.controller, o.block_owner_deletion),
        (Some(true), Some(false))
    );
    assert!(owned_by(&s, "g-uid") && !owned_by(&s, "other"));
}

#[test]
fn a_service_as_the_api_server_defaults_it_needs_no_write() {
    let svc_spec = spec(json!([{"port": 80, "targetPort": "http"}]));
    let want = service(&group(), "g-leader", &svc_spec);
    let mut have = want.clone();
    have.metadata.resource_version = Some("5".into());
    let s = have.spec.as_mut().unwrap();
    s.cluster_ip = Some("10.96.0.10".into());
    s.session_affinity = Some("None".into());
    have.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("added-by-someone".into(), "x".into());
    assert_eq!(service_patch(&have, &want), None);

    // A selector someone added is taken off; the port change keeps the node port.
    let mut np = svc_spec.clone();
    np.type_ = ServiceType::NodePort;
    let want = service(&group(), "g-leader", &np);
    let mut have = want.clone();
    have.metadata.resource_version = Some("5".into());
    let s = have.spec.as_mut().unwrap();
    s.selector = Some(BTreeMap::from([("app".into(), "x".into())]));
    s.ports.as_mut().unwrap()[0].node_port = Some(30080);
    let patch = service_patch(&have, &want).unwrap();
    assert_eq!(patch["spec"]["selector"], Value::Null);
    assert_eq!(patch["spec"]["ports"][0]["nodePort"], 30080);
    assert_eq!(patch["metadata"]["resourceVersion"], "5");
}

#[test]
fn a_numeric_target_port_is_used_as_is_and_a_named_one_is_looked_up() {
    let s = spec(json!([
        {"name": "web", "port": 80, "targetPort": "http"},
        {"name": "raw", "port": 90, "targetPort": 9090},
        {"name": "plain", "port": 70},
        {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
    ]));
    let a = pod("a", &["10.0.0.1"], true, false);
    let sl = slice(&group(), "g-leader", Family::V4, &s, &[&a]);
    assert_eq!(
        ports(&sl),
        [
            ("web".into(), 8080, "TCP".into()),
            ("raw".into(), 9090, "TCP".into()),
            ("plain".into(), 70, "TCP".into()),
            ("dns".into(), 5353, "UDP".into()),
        ]
    );
}

#[test]
fn a_port_the_pod_lacks_is_left_out() {
    // `dns` is a UDP port: a TCP port of that name is not found; `grpc` does not exist.
    let s = spec(json!([
        {"name": "web", "port": 80, "targetPort": "http"},
        {"name": "d", "port": 53, "targetPort": "dns"},
        {"name": "g", "port": 81, "targetPort": "grpc"},
    ]));
    let a = pod("a", &["10.0.0.1"], true, false);
    let sl = slice(&group(), "g-leader", Family::V4, &s, &[&a]);
    assert_eq!(ports(&sl), [("web".into(), 8080, "TCP".into())]);
    assert_eq!(sl.endpoints.len(), 1);
}

#[test]
fn a_pod_without_an_address_gives_no_endpoint() {
    let s = spec(json!([{"port": 80}]));
    let a = pod("a", &[], true, false);
    let sl = slice(&group(), "g-leader", Family::V4, &s, &[&a]);
    assert!(sl.endpoints.is_empty());
    assert_eq!(sl.ports, Some(vec![]));
    assert_eq!(sl.metadata.name.as_deref(), Some("g-leader"));
}

#[test]
fn each_family_has_its_slice_with_only_its_addresses() {
    let s = spec(json!([{"port": 80}]));
    let dual = pod("a", &["10.0.0.1", "fd00::1"], true, false);
    let v4 = slice(&group(), "svc", Family::V4, &s, &[&dual]);
    let v6 = slice(&group(), "svc", Family::V6, &s, &[&dual]);
    assert_eq!(
        (v4.address_type.as_str(), v6.address_type.as_str()),
        ("IPv4", "IPv6")
    );
    assert_eq!(v4.metadata.name.as_deref(), Some("svc"));
    assert_eq!(v6.metadata.name.as_deref(), Some("svc-v6"));
    assert_eq!(v4.endpoints[0].addresses, ["10.0.0.1"]);
    assert_eq!(v6.endpoints[0].addresses, ["fd00::1"]);
    let only6 = pod("b", &["fd00::2"], true, false);
    assert!(
        slice(&group(), "svc", Family::V4, &s, &[&only6])
            .endpoints
            .is_empty()
    );
    assert!(has_family(&[&only6], Family::V6) && !has_family(&[&only6], Family::V4));
    let labels = v6.metadata.labels.unwrap();
    assert_eq!(labels[SERVICE_NAME_LABEL], "svc");
    assert_eq!(labels[SLICE_MANAGED_BY_LABEL], "podium.dev");
    assert_eq!(labels[GROUP_LABEL], "g");
}

#[test]
fn conditions_follow_readiness_and_termination() {
    let s = spec(json!([{"port": 80}]));
    let cases = [
        ((true, false), (true, true, false)),
        ((false, false), (false, false, false)),
        ((true, true), (false, true, true)),
        ((false, true), (false, false, true)),
    ];
    for ((ready, terminating), want) in cases {
        let p = pod("a", &["10.0.0.1"], ready, terminating);
        let sl = slice(&group(), "svc", Family::V4, &s, &[&p]);
        let e = &sl.endpoints[0];
        let c = e.conditions.clone().unwrap();
        assert_eq!(
            (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap()),
            want,
            "ready={ready} terminating={terminating}"
        );
        let t = e.target_ref.clone().unwrap();
        assert_eq!(
            (t.kind.as_deref(), t.name.as_deref()),
            (Some("Pod"), Some("a"))
        );
        assert_eq!(t.uid.as_deref(), Some("a-uid"));
        assert_eq!(e.node_name.as_deref(), Some("n1"));
    }
}

#[test]
fn a_slice_is_rewritten_only_when_what_it_lists_differs() {
    let s = spec(json!([{"port": 80}]));
    let (a, b) = (
        pod("a", &["10.0.0.1"], true, false),
        pod("b", &["10.0.0.2"], true, false),
    );
    let mut have = slice(&group(), "svc", Family::V4, &s, &[&a]);
    have.metadata.resource_version = Some("7".into());
    // The API server's defaults change nothing.
    have.ports.as_mut().unwrap()[0].app_protocol = None;
    assert!(slice_update(&have, &slice(&group(), "svc", Family::V4, &s, &[&a])).is_none());
    let next = slice_update(&have, &slice(&group(), "svc", Family::V4, &s, &[&b])).unwrap();
    assert_eq!(next.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(next.endpoints.len(), 1);
    assert_eq!(next.endpoints[0].addresses, ["10.0.0.2"]);
    let empty = slice_update(&have, &slice(&group(), "svc", Family::V4, &s, &[])).unwrap();
    assert!(empty.endpoints.is_empty());
}

#[test]
fn followers_whose_ports_differ_from_the_first_are_left_out() {
    let s: LeaderService = LeaderService {
        ports: vec![LeaderServicePort {
            port: 80,
            target_port: Some(IntOrString::String("http".into())),
            ..LeaderServicePort::default()
        }],
        ..LeaderService::default()
    };
    let a = pod("a", &["10.0.0.1"], true, false);
    let mut b = pod("b", &["10.0.0.2"], true, false);
    b.ports = Box::default();
    let c = pod("c", &["10.0.0.3"], true, false);
    let sl = slice(&group(), "f", Family::V4, &s, &[&a, &b, &c]);
    let listed: Vec<&str> = sl
        .endpoints
        .iter()
        .map(|e| e.addresses[0].as_str())
        .collect();
    assert_eq!(listed, ["10.0.0.1", "10.0.0.3"]);
}

#[test]
fn a_stamp_is_the_write_time_in_rfc3339_and_only_a_stamp_is_no_change() {
    let s = spec(json!([{"port": 80}]));
    let a = pod("a", &["10.0.0.1"], true, false);
    let mut have = slice(&group(), "svc", Family::V4, &s, &[&a]);
    let at: jiff::Timestamp = "2026-12-07T19:45:01.123456789Z".parse().unwrap();
    stamp(&mut have, at);
    let written = &have.metadata.annotations.as_ref().unwrap()[TRIGGER_TIME];
    // kube-proxy reads it with Go's time.RFC3339Nano.
    assert_eq!(written, "2026-12-07T19:45:01.123456789Z");
    // An unstamped slice that lists the same is not a change to write.
    assert!(slice_update(&have, &slice(&group(), "svc", Family::V4, &s, &[&a])).is_none());
}
