//! Running podium like a production operator: kustomize install, least-privilege RBAC,
//! replicas with leader election, health and metrics.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::json;

use crate::election::wait_event;
use crate::groups::*;
use crate::support::*;

fn app_x() -> serde_json::Value {
    json!({"selector": {"matchLabels": {"app": "x"}}, "publishLease": true})
}

/// `kubectl apply -k config/default` once per run (it is cluster-wide), without
/// config/admission: its policy, bound to every namespace, would refuse the writes of the
/// operators the other tests run with the admin's credentials (admission.rs installs it bound
/// to its own namespace).
async fn install_default() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        install_crd().await;
        let default = format!("{}/config/default", env!("CARGO_MANIFEST_DIR"));
        let kustomization = std::fs::read_to_string(format!("{default}/kustomization.yaml"))
            .expect("config/default/kustomization.yaml");
        let kustomization: serde_json::Value =
            serde_saphyr::from_str(&kustomization).expect("config/default/kustomization.yaml");
        // The directory that holds podium's Namespace first: the others put objects in it.
        let mut dirs: Vec<&str> = kustomization["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|d| d.as_str().expect("a resource path"))
            .collect();
        dirs.sort_by_key(|d| *d != "../manager");
        for dir in dirs {
            if dir != "../admission" {
                kubectl(&[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "-k",
                    &format!("{default}/{dir}"),
                ]);
            }
        }
    })
    .await;
}

#[tokio::test]
async fn the_podium_service_account_is_enough_and_missing_rights_are_reported() {
    install_default().await;
    let ns = TestNs::new("ops-rbac").await;
    let kc = service_account_kubeconfig("podium-system", "podium", &ns.name).await;
    let mut s = Setup { ns, operator: None };
    s.operator = Some(Operator::start_with(&s.ns.name, &kc, &[]).await);

    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group("api", app_x()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    wait_event(&s.ns, "api", "LeaderElected").await;
    s.ns.delete_pod_now("p0").await;
    let g = s.wait_leader("api", "app=x", "p1").await;
    assert_eq!(status(&g).term, 2);
    wait_for_object(
        &s.ns.api::<Lease>(),
        "api",
        Duration::from_secs(10),
        |l: &Lease| l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some("p1"),
    )
    .await;
    s.groups().delete("api", &Default::default()).await.unwrap();
    wait_for_list(
        &s.ns.api::<k8s_openapi::api::core::v1::Pod>(),
        kube::runtime::watcher::Config::default().labels("app=x"),
        Duration::from_secs(20),
        "cleanup with the service account",
        |pods| pods.iter().all(|p| label(p.as_ref(), ROLE).is_none()),
    )
    .await;
    assert!(s.operator.as_mut().unwrap().alive());

    // The same binary with an account that may not patch pods reports it and keeps running.
    let role = kubectl(&["get", "clusterrole", "podium", "-o", "json"]);
    let mut role: serde_json::Value = serde_json::from_str(&role).unwrap();
    for rule in role["rules"].as_array_mut().unwrap() {
        if rule["resources"] == json!(["pods"]) {
            rule["verbs"] = json!(["get", "list", "watch"]);
        }
    }
    let sa = format!("{}-nopatch", s.ns.name);
    let manifest = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nopatch", "namespace": s.ns.name}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": sa}, "rules": role["rules"]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": sa},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": sa},
         "subjects": [{"kind": "ServiceAccount", "name": "nopatch", "namespace": s.ns.name}]},
    ]});
    let file = std::env::temp_dir().join(format!("{sa}.json"));
    std::fs::write(&file, manifest.to_string()).unwrap();
    kubectl(&["apply", "-f", file.to_str().unwrap()]);
    s.stop_operator().await;
    let kc = service_account_kubeconfig(&s.ns.name, "nopatch", &sa).await;
    s.operator = Some(Operator::start_with(&s.ns.name, &kc, &[]).await);
    s.apply_group("denied", json!({"selector": {"matchLabels": {"app": "x"}}}))
        .await
        .unwrap();
    let g = s
        .wait_group("denied", "write failure reported", |g| {
            condition(g, "Ready").is_some_and(|c| c.1 == "PodWriteFailed")
        })
        .await;
    let message = status(&g)
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message;
    println!("reported: {message}");
    assert!(message.contains("forbidden"), "{message}");
    wait_event(&s.ns, "denied", "PodWriteFailed").await;
    assert!(s.operator.as_mut().unwrap().alive(), "the operator crashed");
    kubectl(&[
        "delete",
        "clusterrole,clusterrolebinding",
        &sa,
        "--ignore-not-found",
    ]);
}

async fn lease_holder(ns: &TestNs, lease: &str, not: Option<&str>) -> (String, Instant) {
    let l = wait_for_object(
        &ns.api::<Lease>(),
        lease,
        Duration::from_secs(30),
        |l: &Lease| {
            let holder = l.spec.as_ref().and_then(|s| s.holder_identity.as_deref());
            holder.is_some() && holder != not
        },
    )
    .await;
    (l.spec.unwrap().holder_identity.unwrap(), Instant::now())
}

/// Waits until the operator serving metrics on `port` has counted a reconcile, so that a
/// check that "nothing moved" afterwards means something; panics after 30 s.
pub async fn wait_reconciled(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = wait_http(port, "/metrics", 200, Duration::from_secs(30)).await;
        if reconciles(&metrics) > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the operator on :{port} reconciled nothing within 30 s:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn reconciles(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("podium_reconciles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn replicas_elect_one_active_controller_and_hand_over_on_kill_and_sigterm() {
    install_crd().await;
    let mut s = Setup {
        ns: TestNs::new("ops-ha").await,
        operator: None,
    };
    let ns = s.ns.name.clone();
    let start = |id: &'static str, port: u16| {
        let ns = ns.clone();
        async move {
            let port = port.to_string();
            let args = [
                "--leader-elect",
                "--lease-namespace",
                &ns,
                "--lease-duration",
                "6",
                "--instance",
                id,
            ];
            let addr = format!("--http-addr=127.0.0.1:{port}");
            Operator::start(&ns, &[&args[..], &[addr.as_str()]].concat()).await
        }
    };
    let ports = [free_port(), free_port(), free_port()];
    let mut a = Some(start("op-a", ports[0]).await);
    let (first, _) = lease_holder(&s.ns, "podium-controller", None).await;
    let mut b = Some(start("op-b", ports[1]).await);
    let (active_port, standby_port) = if first == "op-a" {
        (ports[0], ports[1])
    } else {
        (ports[1], ports[0])
    };
    wait_http(standby_port, "/readyz", 200, Duration::from_secs(20)).await;

    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group("api", json!({"selector": {"matchLabels": {"app": "x"}}}))
        .await
        .unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    let active_metrics = wait_http(active_port, "/metrics", 200, Duration::from_secs(5)).await;
    let standby_metrics = wait_http(standby_port, "/metrics", 200, Duration::from_secs(5)).await;
    assert!(
        reconciles(&active_metrics) > 0,
        "the active replica reconciled nothing"
    );
    assert_eq!(reconciles(&standby_metrics), 0, "the standby reconciled");
    assert!(
        active_metrics.contains("podium_active 1") && standby_metrics.contains("podium_active 0")
    );

    // kill -9 the active replica: the standby takes over once the Lease expires.
    let (mut dead, mut live) = if first == "op-a" {
        (a.take(), b.take())
    } else {
        (b.take(), a.take())
    };
    let killed = Instant::now();
    dead.take().unwrap().kill().await;
    let (second, at) = lease_holder(&s.ns, "podium-controller", Some(&first)).await;
    let kill_takeover = at.duration_since(killed);
    println!(
        "kill -9 of {first}: {second} took over after {} ms (lease 6 s)",
        kill_takeover.as_millis()
    );
    // A liveness bound; the takeover time itself is measured by `make bench`.
    assert!(
        kill_takeover <= Duration::from_secs(30),
        "took {kill_takeover:?}"
    );
    wait_reconciled(standby_port).await;
    let g = s.groups().get("api").await.unwrap();
    assert_eq!(
        status(&g).leader.as_deref(),
        Some("p0"),
        "groups keep their leaders"
    );
    s.ns.delete_pod_now("p0").await;
    s.wait_leader("api", "app=x", "p1").await;

    // SIGTERM the active replica: it releases the Lease and a fresh standby takes over at once.
    let mut c = start("op-c", ports[2]).await;
    wait_http(ports[2], "/readyz", 200, Duration::from_secs(20)).await;
    let mut active = live.take().unwrap();
    let termed = Instant::now();
    active.terminate();
    let (third, at) = lease_holder(&s.ns, "podium-controller", Some(&second)).await;
    let term_takeover = at.duration_since(termed);
    let code = active.wait_exit(Duration::from_secs(5)).await;
    println!(
        "SIGTERM of {second}: {third} took over after {} ms; exit code {code:?} after {} ms",
        term_takeover.as_millis(),
        termed.elapsed().as_millis()
    );
    assert_eq!(third, "op-c");
    // Sooner than the 6 s Lease could expire, so the Lease was released, not left to expire.
    assert!(
        term_takeover < Duration::from_secs(6),
        "took {term_takeover:?}: the Lease was not released"
    );
    assert_eq!(code, Some(0));
    s.ns.delete_pod_now("p1").await;
    s.wait_leader("api", "app=x", "p2").await;
    assert!(c.alive());
    s.operator = Some(c);
}

#[tokio::test]
async fn readyz_waits_for_caches_and_metrics_count_failovers() {
    install_crd().await;
    let ns = TestNs::new("ops-metrics").await;

    // An operator that cannot reach any API server is alive but never ready.
    let mut kc = kube::config::Kubeconfig::read_from(kubeconfig_path()).unwrap();
    for c in &mut kc.clusters {
        if let Some(cluster) = c.cluster.as_mut() {
            cluster.server = Some(format!("https://127.0.0.1:{}", free_port()));
        }
    }
    let dead = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/e2e-logs/{}-dead.kubeconfig", ns.name));
    std::fs::write(&dead, serde_json::to_string(&kc).unwrap()).unwrap();
    let port = free_port();
    let unreachable =
        Operator::start_with(&ns.name, &dead, &[&format!("--http-addr=127.0.0.1:{port}")]).await;
    wait_http(port, "/healthz", 200, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(http_get(port, "/readyz").await.map(|r| r.0), Some(503));
    unreachable.kill().await;

    let port = free_port();
    let mut s = Setup { ns, operator: None };
    s.operator =
        Some(Operator::start(&s.ns.name, &[&format!("--http-addr=127.0.0.1:{port}")]).await);
    wait_http(port, "/readyz", 200, Duration::from_secs(20)).await;
    s.pods(&["p0", "p1"], &[("app", "x")]).await;
    s.apply_group("api", json!({"selector": {"matchLabels": {"app": "x"}}}))
        .await
        .unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    let failovers = |m: &str| {
        m.lines()
            .find(|l| l.starts_with(r#"podium_leader_changes_total{reason="Failover"}"#))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = failovers(&wait_http(port, "/metrics", 200, Duration::from_secs(5)).await);
    s.ns.delete_pod_now("p0").await;
    s.wait_leader("api", "app=x", "p1").await;
    // The status names p1 before the failover is counted (the term is recorded first, then
    // the transition counted), and its duration is observed once p1's label is acknowledged,
    // a moment later: wait for both.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let m = wait_http(port, "/metrics", 200, Duration::from_secs(5)).await;
        let timed = m.contains("podium_failover_duration_seconds_count 1");
        if (failovers(&m) > before && timed) || std::time::Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failovers(&metrics), before + 1, "{metrics}");
    assert!(
        metrics.contains("podium_failover_duration_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"podium_groups{condition="Ready",status="True"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_pod_selector_limits_what_podium_caches_and_a_bad_one_stops_it() {
    install_crd().await;
    let ns = TestNs::new("ops-podsel").await;
    // A selector the API server refuses stops podium at once, saying why.
    let mut bad = Operator::start(&ns.name, &["--pod-selector=tier in ("]).await;
    let code = bad.wait_exit(Duration::from_secs(20)).await;
    assert!(code.is_some_and(|c| c != 0), "exit: {code:?}");
    let log = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("target/e2e-logs/{}.log", ns.name)),
    )
    .unwrap();
    assert!(log.contains("--pod-selector"), "{log}");

    let mut s = Setup { ns, operator: None };
    s.operator = Some(Operator::start(&s.ns.name, &["--pod-selector=podium-member=yes"]).await);
    // p0 is the oldest but outside the pod selector: podium does not see it at all.
    s.pods(&["p0"], &[("app", "x")]).await;
    s.pods(&["p1", "p2"], &[("app", "x"), ("podium-member", "yes")])
        .await;
    s.apply_group("api", json!({"selector": {"matchLabels": {"app": "x"}}}))
        .await
        .unwrap();
    let g = s.wait_leader("api", "podium-member=yes", "p1").await;
    assert_eq!(status(&g).members, 2);
    let pods = s.ns.api::<k8s_openapi::api::core::v1::Pod>();
    let p0 = pods.get("p0").await.unwrap();
    assert_eq!(label(&p0, "podium.dev/role"), None);
    assert_eq!(annotation(&p0, "podium.dev/group"), None);

    // The leader leaves the pod selector: to the scoped watch it is gone, but the pod still
    // carries podium's keys, so podium takes them off before p2 leads.
    s.ns.set_label("p1", "podium-member", None).await;
    let g = s.wait_leader("api", "podium-member=yes", "p2").await;
    assert_eq!(status(&g).members, 1);
    let p1 = wait_for_object(&pods, "p1", Duration::from_secs(30), |p| {
        label(p, "podium.dev/role").is_none()
    })
    .await;
    assert_eq!(annotation(&p1, "podium.dev/group"), None);
    assert_eq!(annotation(&p1, "podium.dev/term"), None);
}
