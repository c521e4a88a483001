//! Failover by kind of failure, on the real node (`real-node-0`): podium's sample application
//! and client-go Lease candidates both run as pods there, and each is failed the way users'
//! pods fail — the main process SIGKILLed, the pod deleted, the readiness probe failing, the
//! node's kubelet frozen. For podium: the time until another pod is labelled leader, and until
//! a request through each route's ClusterIP is answered by it: the sample's Service, which
//! selects the role label, and the Service podium owns (`spec.service`), whose EndpointSlice
//! podium writes. kube-proxy's own histograms say where the rest of the time goes; each trial
//! starts after a quiet time (`BENCH_KIND_QUIET_MS`) that gives kube-proxy back its burst. For the
//! Lease: the time until another candidate holds the Lease, where a Lease can notice the
//! failure at all.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use podium_bench::config::Config;
use podium_bench::stats::stats;
use serde_json::{Value, json};

use crate::kube_proxy::{proxy_config, proxy_histograms, proxy_since};
use podium_testkit::groups::{LeaderWatch, Setup, status};
use podium_testkit::support::*;

const NODE: &str = "real-node-0";

/// The real node is up and the images it needs are loaded (`make bench` does both).
pub fn available() -> bool {
    cluster_dir().join("node/containerd.sock").exists()
}

fn sh(cmd: &str, args: &[&str]) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits until `n` pods match `selector`, all Ready and none terminating.
async fn settle(ns: &TestNs, selector: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pods = list(&ns.api::<Pod>(), selector).await;
        if pods.len() == n
            && pods
                .iter()
                .all(|p| pod_ready(p) && p.metadata.deletion_timestamp.is_none())
        {
            return;
        }
        assert!(Instant::now() < deadline, "{selector} did not settle");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pod that answers through the leader Service, if it answers as leader.
async fn answering(service: &str) -> Option<String> {
    let (code, body) = http_request(service, "GET", "/").await?;
    let v: Value = serde_json::from_str(&body).ok()?;
    (code == 200 && v["role"] == "leader").then(|| v["pod"].as_str().map(str::to_string))?
}

/// Sends a request every 10 ms, each on a new connection and without waiting for the ones in
/// flight (one sent to a deleted pod's address hangs until its 2 s timeout); returns when the
/// first answer from `pod` as leader arrived, in ms after `start`.
async fn wait_answering(service: &str, pod: &str, start: Instant) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                assert!(Instant::now() < deadline, "{pod} never answered");
                let service = service.to_string();
                in_flight.spawn(async move { answering(&service).await });
            }
            Some(answered) = in_flight.join_next() => {
                if answered.ok().flatten().as_deref() == Some(pod) {
                    return start.elapsed().as_secs_f64() * 1000.0;
                }
            }
        }
    }
}

/// The sample application (config/local/samples) with a podium operator scoped to its
/// namespace.
struct Podium {
    s: Setup,
    /// Quiet before each trial.
    quiet: Duration,
    /// The label route's ClusterIP and port, unless it was deleted.
    service: Option<String>,
    /// The owned route's.
    owned: String,
}

/// The owned route's Service: the sample's port, its targetPort by name.
const OWNED: &str = "api-owned";

async fn cluster_address(ns: &TestNs, name: &str) -> String {
    let svc = wait_for_object(&ns.api::<Service>(), name, Duration::from_secs(60), |s| {
        s.spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_ref())
            .is_some()
    })
    .await;
    format!("{}:80", svc.spec.unwrap().cluster_ip.unwrap())
}

impl Podium {
    async fn start(quiet: Duration, label_route: bool) -> Self {
        let s = Setup::new("bench-kinds").await;
        let dir = repo_root().join("config/local/samples");
        kubectl(&["-n", &s.ns.name, "apply", "-k", dir.to_str().unwrap()]);
        settle(&s.ns, "app=api", 3).await;
        let route = json!({"spec": {"service": {"name": OWNED, "ports": [{"port": 80, "targetPort": "http"}]}}});
        s.ns.api::<podium_api::ElectionGroup>()
            .patch("api", &PatchParams::default(), &Patch::Merge(&route))
            .await
            .unwrap();
        let service = if label_route {
            Some(cluster_address(&s.ns, "api-leader").await)
        } else {
            kubectl(&["-n", &s.ns.name, "delete", "service", "api-leader"]);
            None
        };
        let owned = cluster_address(&s.ns, OWNED).await;
        let p = Self {
            s,
            quiet,
            service,
            owned,
        };
        let leader = p.leader().await;
        if let Some(service) = &p.service {
            wait_answering(service, &leader, Instant::now()).await;
        }
        wait_answering(&p.owned, &leader, Instant::now()).await;
        p
    }

    async fn leader(&self) -> String {
        let g = self
            .s
            .wait_group("api", "a leader", |g| status(g).leader.is_some())
            .await;
        status(&g).leader.unwrap()
    }

    /// One trial: `fail` breaks the leader; returns the label's, the label route's and the
    /// owned route's times.
    async fn trial(&self, fail: impl AsyncFnOnce(&Pod)) -> Times {
        let leader = self.leader().await;
        let pod = self.s.ns.api::<Pod>().get(&leader).await.unwrap();
        let watch = LeaderWatch::start(&self.s.ns, "app=api").await;
        tokio::time::sleep(self.quiet).await;
        let start = Instant::now();
        fail(&pod).await;
        let (next, at) = watch
            .wait_new_leader(&leader, start, Duration::from_secs(60))
            .await;
        let label = at.duration_since(start).as_secs_f64() * 1000.0;
        let label_route = async {
            match &self.service {
                Some(service) => Some(wait_answering(service, &next, start).await),
                None => None,
            }
        };
        let (traffic, owned) = tokio::join!(label_route, wait_answering(&self.owned, &next, start));
        assert!(watch.max_leaders() <= 1, "two leaders");
        Times {
            label: vec![label],
            traffic: traffic.into_iter().collect(),
            owned: vec![owned],
            ..Times::default()
        }
    }
}

/// One kind's samples on podium's side (ms), and kube-proxy's histograms over its trials.
#[derive(Default)]
struct Times {
    label: Vec<f64>,
    traffic: Vec<f64>,
    owned: Vec<f64>,
    proxy: Value,
}

impl Times {
    fn add(&mut self, t: Times) {
        self.label.extend(t.label);
        self.traffic.extend(t.traffic);
        self.owned.extend(t.owned);
    }

    fn print(&self, kind: &str) {
        println!(
            "  {kind}: label {}  label route {}  owned route {}",
            stats(&self.label),
            stats(&self.traffic),
            stats(&self.owned)
        );
    }
}

async fn podium_kinds(cfg: &Config) -> Vec<(&'static str, Times)> {
    let (trials, quiet) = (cfg.kind_trials, Duration::from_millis(cfg.kind_quiet_ms));
    let p = Podium::start(quiet, cfg.kind_label_route).await;
    let pods = p.s.ns.api::<Pod>();
    let mut out = vec![];

    let mut t = Times::default();
    let before = proxy_histograms().await;
    for _ in 0..trials {
        let mut killed = String::new();
        t.add(
            p.trial(async |pod: &Pod| {
                killed = pod.name_any();
                assert!(sh("kill", &["-KILL", &container_pid(pod).to_string()]));
            })
            .await,
        );
        // The killed pod, now a follower, is replaced rather than left to its restart: the
        // kubelet's crash-loop back-off would double with every kill of the same pod.
        let _ = pods.delete(&killed, &DeleteParams::default()).await;
        settle(&p.s.ns, "app=api", 3).await;
    }
    t.proxy = proxy_since(&before, &proxy_histograms().await);
    t.print("process kill -9");
    out.push(("process_kill", t));

    let mut t = Times::default();
    let before = proxy_histograms().await;
    for _ in 0..trials {
        t.add(
            p.trial(async |pod: &Pod| {
                pods.delete(&pod.name_any(), &DeleteParams::default())
                    .await
                    .unwrap();
            })
            .await,
        );
        settle(&p.s.ns, "app=api", 3).await;
    }
    t.proxy = proxy_since(&before, &proxy_histograms().await);
    t.print("pod deletion");
    out.push(("pod_delete", t));

    let mut t = Times::default();
    let before = proxy_histograms().await;
    for _ in 0..trials {
        let mut addr = String::new();
        t.add(
            p.trial(async |pod: &Pod| {
                addr = format!("{}:8080", pod_ip(pod).unwrap());
                let r = http_request(&addr, "POST", "/admin/unhealthy").await;
                assert_eq!(r.map(|r| r.0), Some(200));
            })
            .await,
        );
        http_request(&addr, "POST", "/admin/healthy").await;
        settle(&p.s.ns, "app=api", 3).await;
    }
    t.proxy = proxy_since(&before, &proxy_histograms().await);
    t.print("readiness failing");
    out.push(("readiness_failure", t));
    out
}

/// Node loss: the leader on the real node, two members on kwok nodes; the kubelet and the
/// leader's process frozen until another member is labelled leader, then resumed, and
/// leadership handed back for the next trial. Returns label ms (the new leader is on a kwok node, which serves
/// no traffic).
async fn podium_node_loss(trials: usize) -> Vec<f64> {
    let s = Setup::new("bench-nodeloss").await;
    let rbac = repo_root().join("config/samples/member-rbac.yaml");
    kubectl(&["-n", &s.ns.name, "apply", "-f", rbac.to_str().unwrap()]);
    let real = real_node_member("m0", &[("app", "mixed")]);
    s.ns.api::<Pod>()
        .create(&PostParams::default(), &real)
        .await
        .unwrap();
    s.ns.wait_running("m0").await;
    s.pods(&["m1", "m2"], &[("app", "mixed")]).await;
    s.apply_group(
        "mixed",
        json!({"selector": {"matchLabels": {"app": "mixed"}}, "preference": "Oldest", "nodeLossSeconds": 11}),
    )
    .await
    .unwrap();
    let mut label = vec![];
    for _ in 0..trials {
        s.wait_leader("mixed", "app=mixed", "m0").await;
        let m0 = s.ns.api::<Pod>().get("m0").await.unwrap();
        let watch = LeaderWatch::start(&s.ns, "app=mixed").await;
        let start = Instant::now();
        let lost = Lost::freeze(&m0);
        let waited = watch
            .wait_new_leader("m0", start, Duration::from_secs(60))
            .await;
        drop(lost);
        label.push(waited.1.duration_since(start).as_secs_f64() * 1000.0);
        assert!(watch.max_leaders() <= 1, "two leaders");
        // The node renews again within the kubelet's 10 s interval; m0 is handed leadership
        // back once it is fit again (the handoff refuses an unfit target).
        let groups: Api<podium_api::ElectionGroup> = s.ns.api();
        let handoff = json!({"metadata": {"annotations": {"podium.dev/handoff-to": "m0"}}});
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = groups
                .patch("mixed", &PatchParams::default(), &Patch::Merge(&handoff))
                .await;
            let g = groups.get("mixed").await.unwrap();
            if status(&g).leader.as_deref() == Some("m0") {
                break;
            }
            assert!(Instant::now() < deadline, "m0 never led again");
        }
    }
    println!("  node loss (kubelet frozen): label {}", stats(&label));
    label
}

/// The node "lost" for the pod that leads on it: its kubelet and the leading process frozen
/// (SIGSTOP) at once, as a hung or cut-off machine would be; the other candidates run on, as
/// on other nodes. Resumed (SIGCONT) when dropped, also when a trial panics.
struct Lost(Vec<String>);

impl Lost {
    fn freeze(leading: &Pod) -> Self {
        let kubelet = std::fs::read_to_string(cluster_dir().join("node/kubelet.pid"))
            .unwrap()
            .trim()
            .to_string();
        let pids = vec![kubelet, container_pid(leading).to_string()];
        for pid in &pids {
            assert!(sh("kill", &["-STOP", pid]));
        }
        Self(pids)
    }
}

impl Drop for Lost {
    fn drop(&mut self) {
        for pid in &self.0 {
            sh("kill", &["-CONT", pid]);
        }
    }
}

/// client-go Lease candidates as a Deployment of three pods on the real node, with
/// kube-controller-manager's timings (15 s / 10 s / 2 s) and identities made unique per process.
struct Leases {
    ns: TestNs,
}

impl Leases {
    /// Deploys the candidates from a manifest written into `out`.
    async fn start(out: &std::path::Path) -> Self {
        let ns = TestNs::new("bench-kinds-lease").await;
        let manifest = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "candidate"}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "candidate"},
             "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "candidate"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "candidate"},
             "subjects": [{"kind": "ServiceAccount", "name": "candidate", "namespace": ns.name}]},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "candidate"},
             "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "candidate"}},
              "template": {"metadata": {"labels": {"app": "candidate"}}, "spec": {
                "serviceAccountName": "candidate",
                "nodeSelector": {"kubernetes.io/hostname": NODE},
                "tolerations": [{"key": "podium.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [{"name": "candidate", "image": "lease-baseline:dev", "imagePullPolicy": "Never",
                  "args": ["-namespace", ns.name, "-lease", "baseline", "-id", "$(POD_NAME)", "-unique"],
                  "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}}}
        ]});
        let file = out.join("lease-candidates.json");
        std::fs::write(&file, manifest.to_string()).unwrap();
        kubectl(&["-n", &ns.name, "apply", "-f", file.to_str().unwrap()]);
        settle(&ns, "app=candidate", 3).await;
        let l = Self { ns };
        l.holder(None).await;
        l
    }

    /// The Lease's holder identity (`<pod>_<random>`: one per process), once it is not `not`.
    async fn holder(&self, not: Option<&str>) -> (String, Instant) {
        let leases: Api<Lease> = self.ns.api();
        let identity = |l: &Lease| {
            l.spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty())
        };
        let l = wait_for_object(&leases, "baseline", Duration::from_secs(90), |l: &Lease| {
            identity(l).is_some_and(|p| Some(p.as_str()) != not)
        })
        .await;
        (identity(&l).unwrap(), Instant::now())
    }

    /// Fails the holder's pod; the time until another process holds the Lease (a killed
    /// process restarted in place is another process, with another identity).
    async fn trial(&self, fail: impl AsyncFnOnce(&Pod)) -> f64 {
        let (holder, _) = self.holder(None).await;
        let pod_name = holder.split('_').next().unwrap_or_default().to_string();
        let pod = self.ns.api::<Pod>().get(&pod_name).await.unwrap();
        let start = Instant::now();
        fail(&pod).await;
        let (_, at) = self.holder(Some(&holder)).await;
        at.duration_since(start).as_secs_f64() * 1000.0
    }
}

async fn lease_kinds(trials: usize, out: &std::path::Path) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let l = Leases::start(out).await;
    let mut kill = vec![];
    for _ in 0..trials {
        kill.push(
            l.trial(async |pod: &Pod| {
                assert!(sh("kill", &["-KILL", &container_pid(pod).to_string()]));
            })
            .await,
        );
        settle(&l.ns, "app=candidate", 3).await;
    }
    println!("  Lease, process kill -9: {}", stats(&kill));
    let mut delete = vec![];
    let pods = l.ns.api::<Pod>();
    for _ in 0..trials {
        delete.push(
            l.trial(async |pod: &Pod| {
                pods.delete(&pod.name_any(), &DeleteParams::default())
                    .await
                    .unwrap();
            })
            .await,
        );
        settle(&l.ns, "app=candidate", 3).await;
    }
    println!("  Lease, pod deletion: {}", stats(&delete));
    let mut lost = vec![];
    for _ in 0..trials {
        let mut frozen = None;
        let mut victim = None;
        lost.push(
            l.trial(async |pod: &Pod| {
                victim = Some((pod.name_any(), restarts(pod)));
                frozen = Some(Lost::freeze(pod));
            })
            .await,
        );
        drop(frozen);
        // Resumed, the old holder finds its leadership gone and exits (lease-baseline stops
        // when Run ends); the next trial starts once the kubelet has restarted it, so that it
        // does not exit during a later freeze, when no kubelet would restart it.
        let (name, before) = victim.unwrap();
        wait_for_object(&pods, &name, Duration::from_secs(60), |p: &Pod| {
            restarts(p) > before && pod_ready(p)
        })
        .await;
        settle(&l.ns, "app=candidate", 3).await;
    }
    println!(
        "  Lease, node lost (kubelet and holder frozen): {}",
        stats(&lost)
    );
    (kill, delete, lost)
}

/// `failure_kinds` of results.json: one entry per kind, each with podium's label and traffic
/// times and the Lease's, as {n,p50,p90,p99,max} (null where a side cannot see the failure),
/// and the raw samples for the plot.
pub async fn failure_kinds(cfg: &Config) -> Value {
    let (trials, node_loss_trials, lease_trials) =
        (cfg.kind_trials, cfg.node_loss_trials, cfg.kind_lease_trials);
    println!(
        "failure kinds on {NODE}: {trials} trials per fast kind, {node_loss_trials} node losses, {lease_trials} per Lease kind"
    );
    let podium = podium_kinds(cfg).await;
    let node_loss = podium_node_loss(node_loss_trials).await;
    let (lease_kill, lease_delete, lease_lost) = lease_kinds(lease_trials, &cfg.out).await;
    let kind =
        |kind: &str, label: &[f64], podium: Option<&Times>, lease: Option<&[f64]>, note: &str| {
            // Null where the label route was not there (BENCH_KIND_LABEL_ROUTE=0).
            let traffic = podium
                .map(|t| t.traffic.as_slice())
                .filter(|t| !t.is_empty());
            let owned = podium.map(|t| t.owned.as_slice());
            json!({
                "kind": kind,
                "podium_label_ms": stats(label),
                "podium_traffic_ms": traffic.map(stats),
                "podium_owned_traffic_ms": owned.map(stats),
                "kube_proxy": podium.map(|t| &t.proxy),
                "lease_ms": lease.map(stats),
                "note": note,
                "samples": {"podium_label_ms": label, "podium_traffic_ms": traffic,
                            "podium_owned_traffic_ms": owned, "lease_ms": lease},
            })
        };
    let find = |k: &str| &podium.iter().find(|(n, _)| *n == k).unwrap().1;
    let (kill, del, probe) = (
        find("process_kill"),
        find("pod_delete"),
        find("readiness_failure"),
    );
    let config = proxy_config().await;
    let mut entries = json!([
        kind(
            "process_kill",
            &kill.label,
            Some(kill),
            Some(&lease_kill),
            "SIGKILL of the main process; podium: the kubelet sees the exit (PLEG) and Ready goes False; Lease: the successor waits out the 15 s lease"
        ),
        kind(
            "pod_delete",
            &del.label,
            Some(del),
            Some(&lease_delete),
            "kubectl delete pod (graceful); podium: the deletion itself; Lease: SIGTERM, the Lease released (ReleaseOnCancel), a candidate's next retry (2 s period) takes it"
        ),
        kind(
            "readiness_failure",
            &probe.label,
            Some(probe),
            None,
            "the application reports unhealthy; podium: probe period 1 s x failureThreshold 2; a Lease does not see readiness: its holder keeps leading"
        ),
        kind(
            "node_loss",
            &node_loss,
            None,
            Some(&lease_lost),
            "the leader's kubelet and process frozen (SIGSTOP), the other candidates running on as on other nodes; podium: nodeLossSeconds 11 after the last node Lease renewal it saw, the new leader on a kwok node (which serves no traffic); Lease: the frozen holder stops renewing and the successor waits out the 15 s lease"
        ),
    ]);
    // Each entry states kube-proxy's mode and rate limits beside its own histograms, and the
    // quiet each trial waited for.
    for e in entries.as_array_mut().into_iter().flatten() {
        e["quiet_before_trial_ms"] = json!(cfg.kind_quiet_ms);
        e["label_route_present"] = json!(cfg.kind_label_route);
        let mut proxy = config.clone();
        if let (Some(p), Some(own)) = (proxy.as_object_mut(), e["kube_proxy"].as_object()) {
            p.extend(own.clone());
        }
        e["kube_proxy"] = proxy;
    }
    entries
}
