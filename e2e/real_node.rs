//! End-to-end tests on real-node-0, the local cluster's node with a real kubelet, containerd
//! and kube-proxy: podium installed as users install it (`make deploy`: the image from
//! `make image`, in-cluster configuration, restricted Pod Security), the sample application of
//! config/samples with real readiness probes, real process death, and requests through the
//! leader Service's ClusterIP.
//!
//! `make e2e-node` runs them, one at a time and after the other e2e tests: the installed
//! operator acts on every namespace, so it must not meet the operators those tests start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, DeleteParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use podium_api::ElectionGroup;
use serde::Deserialize;
use std::time::Instant;

use crate::groups::{LeaderWatch, ROLE, status};
use crate::support::restarts;
use crate::support::{
    TestNs, client, cluster_dir, container_pid, http_request, kubectl, list, ms_since, pod_ip,
    pod_ready, real_node_member, wait_for_list, wait_for_object,
};

const SYSTEM: &str = "podium-system";
const NODE: &str = "real-node-0";
const LEASE: &str = "podium-controller";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `make <args>` in the repository; panics with its output when it fails.
fn make(args: &[&str]) -> String {
    let out = std::process::Command::new("make")
        .arg("--no-print-directory")
        .arg("-C")
        .arg(root())
        .args(args)
        .output()
        .expect("run make");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "make {args:?} failed:\n{text}");
    text
}

/// Watches pods matching `selector` until `ok` holds over them.
async fn wait_pods(
    api: &Api<Pod>,
    selector: &str,
    timeout: Duration,
    ok: impl Fn(&[Arc<Pod>]) -> bool,
) -> Vec<Pod> {
    let cfg = watcher::Config::default().labels(selector);
    let pods = wait_for_list(api, cfg, timeout, selector, ok).await;
    pods.iter().map(|p| Pod::clone(p)).collect()
}

/// The operator's pods, once exactly two are Running and Ready on the real node.
async fn operator_pods(client: &Client) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    wait_pods(
        &api,
        "app.kubernetes.io/name=podium",
        Duration::from_secs(120),
        |pods| {
            pods.len() == 2
                && pods.iter().all(|p| {
                    pod_ready(p)
                        && p.metadata.deletion_timestamp.is_none()
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE)
                })
        },
    )
    .await
}

/// Polls `check` until it holds; panics with `what` after `timeout`. For states no watch
/// reports in one object (a namespace or CRD being removed, a list emptying).
async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Deletes a group and waits until the operator has removed it (its finalizer clears
/// podium's labels and annotations first).
async fn delete_group(groups: &Api<ElectionGroup>, name: &str) {
    groups.delete(name, &DeleteParams::default()).await.unwrap();
    eventually(
        &format!("group {name} removed"),
        Duration::from_secs(30),
        async || groups.get_opt(name).await.unwrap().is_none(),
    )
    .await;
}

/// Installs podium with `make deploy` (idempotent) and waits for its two replicas.
async fn deploy() -> Vec<Pod> {
    let client = client().await;
    // An earlier uninstall may still be removing the namespace.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually(
        &format!("{SYSTEM} not terminating"),
        Duration::from_secs(60),
        async || {
            namespaces
                .get_opt(SYSTEM)
                .await
                .unwrap()
                .is_none_or(|n| n.metadata.deletion_timestamp.is_none())
        },
    )
    .await;
    make(&["deploy"]);
    operator_pods(&client).await
}

/// The replica holding the controller Lease, once one does.
async fn active_replica(client: &Client, not: Option<&str>) -> String {
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM);
    let lease = wait_for_object(&leases, LEASE, Duration::from_secs(60), |l: &Lease| {
        let holder = l.spec.as_ref().and_then(|s| s.holder_identity.as_deref());
        holder.is_some_and(|h| !h.is_empty() && Some(h) != not)
    })
    .await;
    lease.spec.unwrap().holder_identity.unwrap()
}

/// Sends a signal (`-KILL`, `-STOP`, ...) to a host process; true when it was delivered.
fn signal(pid: &str, sig: &str) -> bool {
    std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .expect("run kill")
        .success()
}

/// SIGKILLs a pod's main container process, as the out-of-memory killer or a crash would.
fn kill_container(pod: &Pod) {
    let pid = container_pid(pod).to_string();
    assert!(signal(&pid, "-KILL"), "kill -KILL {pid} failed");
}

/// Resident memory of a pod's main container process, in KiB (from /proc on the node).
fn rss_kib(pod: &Pod) -> u64 {
    let pid = container_pid(pod);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// What podium-sample answers on GET /.
#[derive(Debug, Deserialize, PartialEq)]
struct Answer {
    pod: String,
    role: String,
    #[serde(default)]
    term: i64,
}

async fn ask(addr: &str) -> Option<Answer> {
    let (code, body) = http_request(addr, "GET", "/").await?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// The sample application (config/local/samples: config/samples on the real node) in a
/// namespace of its own, with its group led by a Ready pod.
struct Sample {
    ns: TestNs,
    /// ClusterIP:port of the api-leader Service.
    service: String,
}

impl Sample {
    async fn start(prefix: &str) -> Self {
        Self::start_in(TestNs::new(prefix).await).await
    }

    async fn start_in(ns: TestNs) -> Self {
        let dir = root().join("config/local/samples");
        kubectl(&[
            "-n",
            &ns.name,
            "apply",
            "--server-side",
            "-k",
            dir.to_str().unwrap(),
        ]);
        let svc = ns.api::<Service>().get("api-leader").await.unwrap();
        let ip = svc.spec.unwrap().cluster_ip.expect("a ClusterIP");
        let sample = Self {
            ns,
            service: format!("{ip}:80"),
        };
        wait_pods(
            &sample.ns.api::<Pod>(),
            "app=api",
            Duration::from_secs(120),
            |pods| pods.len() == 3 && pods.iter().all(|p| pod_ready(p)),
        )
        .await;
        sample.leader().await;
        sample
    }

    fn groups(&self) -> Api<ElectionGroup> {
        self.ns.api()
    }

    /// The group's leader and term, once it has a leader that the Service answers for.
    async fn leader(&self) -> (String, i64) {
        let g = wait_for_object(&self.groups(), "api", Duration::from_secs(60), |g| {
            status(g).leader.is_some()
        })
        .await;
        let s = status(&g);
        let leader = s.leader.unwrap();
        let answer = self.wait_answer(&leader, Duration::from_secs(30)).await;
        (leader, answer.term)
    }

    /// Asks the leader Service until `pod` answers (as leader), then returns its answer.
    async fn wait_answer(&self, pod: &str, timeout: Duration) -> Answer {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = ask(&self.service).await
                && a.pod == pod
                && a.role == "leader"
            {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "the leader Service {} did not answer from {pod} within {timeout:?}",
                self.service
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn pod(&self, name: &str) -> Pod {
        self.ns.api::<Pod>().get(name).await.unwrap()
    }

    async fn pod_addr(&self, name: &str) -> String {
        let pod = self.pod(name).await;
        format!("{}:8080", pod_ip(&pod).expect("a pod IP"))
    }

    /// Deletes the group and waits until the operator has removed it.
    async fn delete_group(&self) {
        delete_group(&self.groups(), "api").await;
    }
}

impl Drop for Sample {
    /// Deletes the group while the operator runs, so that its finalizer completes and the
    /// namespace can go (an uninstall must not find groups left behind).
    fn drop(&mut self) {
        let ns = self.ns.name.clone();
        // A client of its own: the test's runtime, which drives the test's client, is blocked
        // until this returns.
        crate::support::block_on_side_thread(async move {
            let api: Api<ElectionGroup> = Api::namespaced(client().await, &ns);
            let _ = api.delete("api", &DeleteParams::default()).await;
            let _ = tokio::time::timeout(Duration::from_secs(15), async {
                while matches!(api.get_opt("api").await, Ok(Some(_))) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await;
        });
    }
}

/// (a) Two replicas Running and Ready on the real node under the restricted Pod Security
/// level, one of them active; the sample elects a leader through the in-cluster operator; a
/// SIGKILLed active replica is replaced by the standby, which then fails over a deleted leader.
#[tokio::test]
#[ignore = "real node: make e2e-node"]
async fn a_make_deploy_runs_two_ready_replicas_and_the_standby_takes_over() {
    let pods = deploy().await;
    let client = client().await;
    let ns = Api::<Namespace>::all(client.clone())
        .get(SYSTEM)
        .await
        .unwrap();
    assert_eq!(
        ns.labels()
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    let active = active_replica(&client, None).await;
    assert!(names.contains(&active), "{active} is not one of {names:?}");

    let sample = Sample::start("rn-deploy").await;
    let (leader, term) = sample.leader().await;
    println!("leader {leader} term {term}, active replica {active}");
    for p in &pods {
        println!("replica {}: RSS {} KiB", p.name_any(), rss_kib(p));
    }

    // SIGKILL of the active replica's process: the kubelet restarts the container in place, and
    // the new process (same pod, so same identity) resumes its own Lease at once.
    let active_pod = pods.iter().find(|p| p.name_any() == active).unwrap();
    let before = restarts(active_pod);
    let killed = Instant::now();
    kill_container(active_pod);
    let restarted = wait_for_object(
        &Api::<Pod>::namespaced(client.clone(), SYSTEM),
        &active,
        Duration::from_secs(60),
        |p: &Pod| restarts(p) > before && pod_ready(p),
    )
    .await;
    println!(
        "{active} restarted in place and Ready {} ms after kill -9 (restarts: {})",
        ms_since(killed),
        restarts(&restarted)
    );

    // The active process frozen (SIGSTOP: a long pause, a starved CPU): another replica takes
    // over once the Lease runs out, and the frozen one, resumed, finds it lost.
    let active = active_replica(&client, None).await;
    let frozen_pod = Api::<Pod>::namespaced(client.clone(), SYSTEM)
        .get(&active)
        .await
        .unwrap();
    let pid = container_pid(&frozen_pod).to_string();
    let frozen = Instant::now();
    assert!(signal(&pid, "-STOP"));
    let successor = active_replica(&client, Some(&active)).await;
    println!(
        "{successor} holds the Lease {} ms after {active} was frozen (Lease duration 15 s)",
        ms_since(frozen)
    );
    assert!(signal(&pid, "-CONT"));
    // Resumed, the old active replica finds the Lease taken and writes nothing: the Lease
    // stays with the successor and the group keeps its leader and term.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state
            .split(") ")
            .nth(1)
            .is_some_and(|s| !s.starts_with('T')),
        "{active} was not resumed: {state}"
    );
    assert_eq!(active_replica(&client, None).await, successor);
    let g = sample.groups().get("api").await.unwrap();
    assert_eq!(status(&g).leader.as_deref(), Some(leader.as_str()));
    assert_eq!(status(&g).term, term);

    // The active pod deleted as a drain or a rollout does: SIGTERM, the Lease released, and a
    // standby takes over at once.
    let removed = Instant::now();
    kubectl(&["-n", SYSTEM, "delete", "pod", &successor, "--wait=false"]);
    let standby = active_replica(&client, Some(&successor)).await;
    println!(
        "{standby} holds the Lease {} ms after {successor} was deleted",
        ms_since(removed)
    );

    // The new active replica does the usual work: a deleted leader is replaced.
    let watch = LeaderWatch::start(&sample.ns, "app=api").await;
    let deleted = Instant::now();
    sample
        .ns
        .api::<Pod>()
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    let (next, at) = watch
        .wait_new_leader(&leader, deleted, Duration::from_secs(30))
        .await;
    println!(
        "deleted leader {leader}: {next} labelled leader after {} ms",
        at.duration_since(deleted).as_millis()
    );
    let answer = sample.wait_answer(&next, Duration::from_secs(30)).await;
    assert!(answer.term > term, "term {} after {term}", answer.term);
    assert!(watch.max_leaders() <= 1, "two pods labelled leader at once");
}

/// (b) Every request through the leader Service's ClusterIP is answered by the leader, under
/// the leader's term; each follower, asked directly, knows it follows.
#[tokio::test]
#[ignore = "real node: make e2e-node"]
async fn b_requests_through_the_leader_service_reach_only_the_leader() {
    deploy().await;
    let sample = Sample::start("rn-traffic").await;
    let (leader, term) = sample.leader().await;
    for _ in 0..100 {
        let a = ask(&sample.service).await.expect("the Service answers");
        assert_eq!(
            a,
            Answer {
                pod: leader.clone(),
                role: "leader".into(),
                term
            }
        );
    }
    let pods = list(&sample.ns.api::<Pod>(), "app=api").await;
    let followers: Vec<&Pod> = pods.iter().filter(|p| p.name_any() != leader).collect();
    assert_eq!(followers.len(), 2);
    for p in followers {
        let a = ask(&sample.pod_addr(&p.name_any()).await)
            .await
            .expect("the follower answers");
        assert_eq!(a.role, "follower", "{a:?}");
        assert_eq!(p.labels().get(ROLE).map(String::as_str), Some("follower"));
    }
}

/// (c) The leader container's main process is SIGKILLed: the kubelet sees it die, Ready goes
/// False, podium promotes another pod, and the Service answers from it.
#[tokio::test]
#[ignore = "real node: make e2e-node"]
async fn c_a_killed_leader_process_fails_over_and_traffic_follows() {
    deploy().await;
    let sample = Sample::start("rn-kill").await;
    let (leader, term) = sample.leader().await;
    let watch = LeaderWatch::start(&sample.ns, "app=api").await;
    let before = sample.pod(&leader).await;
    let killed = Instant::now();
    kill_container(&before);
    let (next, at) = watch
        .wait_new_leader(&leader, killed, Duration::from_secs(30))
        .await;
    let label_ms = at.duration_since(killed).as_millis();
    let answer = sample.wait_answer(&next, Duration::from_secs(30)).await;
    println!(
        "kill -9 of {leader}'s process: {next} labelled leader after {label_ms} ms, answering through the Service after {} ms",
        ms_since(killed)
    );
    assert!(answer.term > term);
    assert!(watch.max_leaders() <= 1, "two pods labelled leader at once");
    // The old leader restarted in place and stays a follower.
    let old = wait_for_object(
        &sample.ns.api::<Pod>(),
        &leader,
        Duration::from_secs(60),
        |p: &Pod| restarts(p) > restarts(&before) && pod_ready(p),
    )
    .await;
    assert_eq!(old.labels().get(ROLE).map(String::as_str), Some("follower"));
    assert_eq!(
        status(&sample.groups().get("api").await.unwrap()).leader,
        Some(next)
    );
}

/// (d) The leader's readiness probe starts failing (the application reports unhealthy):
/// podium fails over, and the recovered pod does not take leadership back.
#[tokio::test]
#[ignore = "real node: make e2e-node"]
async fn d_a_failing_readiness_probe_fails_over() {
    deploy().await;
    let sample = Sample::start("rn-probe").await;
    let (leader, term) = sample.leader().await;
    let watch = LeaderWatch::start(&sample.ns, "app=api").await;
    let addr = sample.pod_addr(&leader).await;
    let failing = Instant::now();
    let (code, _) = http_request(&addr, "POST", "/admin/unhealthy")
        .await
        .expect("the leader answers");
    assert_eq!(code, 200);
    let (next, at) = watch
        .wait_new_leader(&leader, failing, Duration::from_secs(30))
        .await;
    let label_ms = at.duration_since(failing).as_millis();
    let answer = sample.wait_answer(&next, Duration::from_secs(30)).await;
    println!(
        "readiness of {leader} failing: {next} labelled leader after {label_ms} ms, answering through the Service after {} ms",
        ms_since(failing)
    );
    assert!(answer.term > term);
    let old = sample.pod(&leader).await;
    assert!(!pod_ready(&old), "{leader} should be NotReady");

    let (code, _) = http_request(&addr, "POST", "/admin/healthy").await.unwrap();
    assert_eq!(code, 200);
    wait_for_object(
        &sample.ns.api::<Pod>(),
        &leader,
        Duration::from_secs(30),
        pod_ready,
    )
    .await;
    // Give a wrong move the time to happen, then check nothing moved.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let g = sample.groups().get("api").await.unwrap();
    assert_eq!(status(&g).leader.as_deref(), Some(next.as_str()));
    assert_eq!(
        sample
            .pod(&leader)
            .await
            .labels()
            .get(ROLE)
            .map(String::as_str),
        Some("follower")
    );
    assert!(watch.max_leaders() <= 1, "two pods labelled leader at once");
}

/// Writes a kustomization that is config/local with another image tag; returns its directory.
fn overlay_with_tag(tag: &str) -> PathBuf {
    let dir = root().join(format!("target/e2e-logs/overlay-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "resources:\n  - ../../../config/local\nimages:\n  - name: podium\n    newName: podium\n    newTag: {tag}\n"
        ),
    )
    .unwrap();
    dir
}

/// Applies a kustomization and waits until the operator's rollout has finished.
fn apply_and_roll(dir: &std::path::Path) {
    kubectl(&["apply", "--server-side", "-k", dir.to_str().unwrap()]);
    kubectl(&[
        "-n",
        SYSTEM,
        "rollout",
        "status",
        "deployment/podium",
        "--timeout=180s",
    ]);
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// (e) Upgrading the operator (a new image tag through kustomize) rolls both replicas and
/// moves the controller Lease, with no leader change and no term change in user groups.
#[tokio::test]
#[ignore = "real node: make e2e-node"]
async fn e_upgrading_the_operator_keeps_every_leader_and_term() {
    let before_pods = deploy().await;
    let client = client().await;
    let sample = Sample::start("rn-upgrade").await;
    let (leader, term) = sample.leader().await;
    let watch = LeaderWatch::start(&sample.ns, "app=api").await;
    let started = Instant::now();

    // The same binary under a new tag: what changes is the Deployment's pod template.
    let binary = root().join("target/x86_64-unknown-linux-musl/release/podium");
    let built = std::process::Command::new(root().join("e2e/node/image.sh"))
        .arg("podium:upgrade")
        .arg(&binary)
        .arg(root().join("target/image/podium-upgrade.tar"))
        .args(["--port", "8080", "--", "run", "--leader-elect"])
        .args(["--http-addr=0.0.0.0:8080", "--log-format=json"])
        .status()
        .expect("run image.sh");
    assert!(built.success(), "building podium:upgrade failed");
    make(&["load-images"]);

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), SYSTEM);
    for (dir, tag) in [
        (overlay_with_tag("upgrade"), "podium:upgrade"),
        (root().join("config/local"), "podium:dev"),
    ] {
        apply_and_roll(&dir);
        let d = deployments.get("podium").await.unwrap();
        assert_eq!(image_of(&d), tag);
        let pods = operator_pods(&client).await;
        let old: Vec<String> = before_pods.iter().map(|p| p.name_any()).collect();
        assert!(
            pods.iter().all(|p| !old.contains(&p.name_any())),
            "the rollout to {tag} did not replace both replicas"
        );
        let active = active_replica(&client, None).await;
        assert!(pods.iter().any(|p| p.name_any() == active));
        let a = sample.wait_answer(&leader, Duration::from_secs(10)).await;
        assert_eq!(a.term, term, "the term changed during the rollout to {tag}");
    }
    let g = sample.groups().get("api").await.unwrap();
    assert_eq!(status(&g).leader.as_deref(), Some(leader.as_str()));
    assert_eq!(status(&g).term, term);
    // The watch saw every pod state during both rollouts: nobody else became leader.
    assert!(
        watch
            .became_leader_since(started)
            .iter()
            .all(|p| *p == leader),
        "leadership moved during the upgrade"
    );
    assert!(watch.max_leaders() <= 1);
}

/// (f) A rolling update of the sample Deployment moves leadership only away from a leader that
/// is being replaced, ends with a new pod leading, and completes (never deadlocks).
#[tokio::test]
#[ignore = "real node: make e2e-node"]
async fn f_a_rolling_update_moves_leadership_once_per_replaced_leader() {
    deploy().await;
    let sample = Sample::start("rn-roll").await;
    let (first, _) = sample.leader().await;
    let old: Vec<String> = list(&sample.ns.api::<Pod>(), "app=api")
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    let watch = LeaderWatch::start(&sample.ns, "app=api").await;
    let started = Instant::now();
    let ns = sample.ns.name.clone();
    kubectl(&["-n", &ns, "rollout", "restart", "deployment/api"]);
    kubectl(&[
        "-n",
        &ns,
        "rollout",
        "status",
        "deployment/api",
        "--timeout=180s",
    ]);
    let pods = wait_pods(
        &sample.ns.api::<Pod>(),
        "app=api",
        Duration::from_secs(60),
        |pods| pods.len() == 3 && pods.iter().all(|p| !old.contains(&p.name_any())),
    )
    .await;
    let (last, _) = sample.leader().await;
    assert!(
        pods.iter().any(|p| p.name_any() == last),
        "the leader {last} is not one of the new pods"
    );
    let moves = watch.became_leader_since(started);
    println!(
        "rolling update: leadership {first} -> {}",
        moves.join(" -> ")
    );
    // Each leader before the last was an old pod that the rollout replaced.
    let mut chain = vec![first];
    chain.extend(moves);
    assert_eq!(chain.last(), Some(&last));
    for p in &chain[..chain.len() - 1] {
        assert!(
            old.contains(p),
            "leadership left {p}, which was not replaced"
        );
    }
    let mut seen = chain.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), chain.len(), "a pod led twice: {chain:?}");
    assert!(watch.max_leaders() <= 1, "two pods labelled leader at once");
}

/// (g) Deleting the groups, then uninstalling, leaves no podium label or annotation on any pod.
#[tokio::test]
#[ignore = "real node: make e2e-node"]
async fn g_uninstall_after_deleting_the_groups_leaves_nothing_behind() {
    deploy().await;
    let sample = Sample::start("rn-uninstall").await;
    sample.leader().await;
    let marked = |p: &Pod| {
        p.labels().keys().any(|k| k.starts_with("podium.dev/"))
            || p.annotations().keys().any(|k| k.starts_with("podium.dev/"))
    };
    let pods = list(&sample.ns.api::<Pod>(), "app=api").await;
    assert!(pods.iter().all(marked), "the members were never marked");
    sample.delete_group().await;
    let client = client().await;
    // Groups of earlier tests may still be finishing (their namespaces go in the background).
    let all: Api<ElectionGroup> = Api::all(client.clone());
    eventually(
        "no group left in any namespace",
        Duration::from_secs(30),
        async || {
            all.list(&Default::default())
                .await
                .unwrap()
                .items
                .is_empty()
        },
    )
    .await;
    make(&["undeploy"]);
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    eventually("the CRD removed", Duration::from_secs(60), async || {
        crds.get_opt("electiongroups.podium.dev")
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let left: Vec<String> = list(&sample.ns.api::<Pod>(), "app=api")
        .await
        .iter()
        .filter(|p| marked(p))
        .map(|p| p.name_any())
        .collect();
    assert!(left.is_empty(), "podium's marks left on {left:?}");
    // Later tests (and `make deploy`) install it again.
    drop(sample);
}

/// The helm built from charts/tools (`make helm`).
fn helm() -> PathBuf {
    let out = std::process::Command::new(root().join("charts/tools/build.sh"))
        .output()
        .expect("run charts/tools/build.sh");
    assert!(out.status.success(), "building helm failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs helm against the local cluster; panics with its output when it fails.
fn run_helm(args: &[&str]) -> String {
    let out = std::process::Command::new(helm())
        .arg("--kubeconfig")
        .arg(crate::support::kubeconfig_path())
        .args(args)
        .output()
        .expect("run helm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm {args:?} failed:\n{text}");
    text
}

/// Uninstalls the Helm release when dropped, pass or fail, so `make deploy` finds none.
struct HelmRelease;

impl Drop for HelmRelease {
    fn drop(&mut self) {
        let _ = std::process::Command::new(helm())
            .arg("--kubeconfig")
            .arg(crate::support::kubeconfig_path())
            .args([
                "uninstall",
                "podium",
                "-n",
                SYSTEM,
                "--wait",
                "--timeout=60s",
            ])
            .output();
    }
}

/// (h) The Helm chart installs podium on the real node in the namespace-scoped mode: Roles
/// only, no ClusterRole; it elects in the namespace it is given and leaves another alone.
#[tokio::test]
#[ignore = "real node: make e2e-node"]
async fn h_the_helm_chart_installs_a_namespace_scoped_operator() {
    wait_crd_not_deleting().await;
    // No kustomize install beside the release (make undeploy refuses while groups exist).
    make(&["undeploy"]);
    let client = client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually(
        &format!("{SYSTEM} removed"),
        Duration::from_secs(60),
        async || namespaces.get_opt(SYSTEM).await.unwrap().is_none(),
    )
    .await;
    let watched = TestNs::new("rn-helm").await;
    let other = TestNs::new("rn-helm-other").await;
    kubectl(&["create", "namespace", SYSTEM]);
    kubectl(&[
        "label",
        "namespace",
        SYSTEM,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let _release = HelmRelease;
    let chart = root().join("charts/podium");
    let watch_ns = format!("watchNamespace={}", watched.name);
    run_helm(&[
        "install",
        "podium",
        chart.to_str().unwrap(),
        "-n",
        SYSTEM,
        "--set",
        "namespace.create=false",
        "--set",
        "image.tag=dev",
        "--set",
        "image.pullPolicy=Never",
        "--set",
        &watch_ns,
        "--set-json",
        r#"nodeSelector={"kubernetes.io/hostname":"real-node-0"}"#,
        "--set-json",
        r#"tolerations=[{"key":"podium.dev/real-node","operator":"Exists","effect":"NoSchedule"}]"#,
        "--wait",
        "--timeout=120s",
    ]);
    let pods = operator_pods(&client).await;
    let args = pods[0].spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap_or_default();
    assert!(
        args.contains(&format!("--namespace={}", watched.name)),
        "{args:?}"
    );
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(client.clone());
    assert!(
        roles.get_opt("podium").await.unwrap().is_none(),
        "a namespace-scoped install created a ClusterRole"
    );

    // The same group in a namespace the release does not watch: left alone.
    let dir = root().join("config/local/samples");
    kubectl(&[
        "-n",
        &other.name,
        "apply",
        "--server-side",
        "-k",
        dir.to_str().unwrap(),
    ]);
    let sample = Sample::start_in(watched).await;
    let (leader, term) = sample.leader().await;
    assert_eq!(term, 1);
    println!("helm release elected {leader} in {}", sample.ns.name);
    let unwatched = Api::<ElectionGroup>::namespaced(client.clone(), &other.name)
        .get("api")
        .await
        .unwrap();
    assert!(unwatched.status.is_none(), "{} was reconciled", other.name);
    assert!(
        list(&other.api::<Pod>(), "app=api")
            .await
            .iter()
            .all(|p| !p.labels().contains_key(ROLE)),
        "pods outside the watched namespace were labelled"
    );
    sample.delete_group().await;
    // The unwatched group has no finalizer: it goes with its namespace.
    kubectl(&["-n", &other.name, "delete", "electiongroup", "api"]);
}

/// Waits until no CRD deletion is in progress: helm installs the chart's CRD only when it is
/// missing, so a CRD still being deleted (the kustomize uninstall before this test) would
/// make helm skip it, then vanish.
async fn wait_crd_not_deleting() {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client().await);
    eventually(
        "no CRD deletion in progress",
        Duration::from_secs(60),
        async || {
            crds.get_opt("electiongroups.podium.dev")
                .await
                .unwrap()
                .is_none_or(|c| c.metadata.deletion_timestamp.is_none())
        },
    )
    .await;
}

/// SIGCONTs the real node's kubelet when dropped, pass or fail.
struct FrozenKubelet(String);

impl FrozenKubelet {
    fn freeze() -> Self {
        let pid = std::fs::read_to_string(cluster_dir().join("node/kubelet.pid"))
            .expect("the real node's kubelet.pid")
            .trim()
            .to_string();
        assert!(signal(&pid, "-STOP"), "kill -STOP {pid} failed");
        Self(pid)
    }
}

impl Drop for FrozenKubelet {
    fn drop(&mut self) {
        signal(&self.0, "-CONT");
    }
}

/// (i) Node loss on a real node: the kubelet of the leader's node frozen (SIGSTOP), so its
/// node Lease is no longer renewed while the leader's container keeps running; another member
/// is promoted once `nodeLossSeconds` has passed; the kubelet resumed, nothing moves back.
#[tokio::test]
#[ignore = "real node: make e2e-node"]
async fn i_a_leader_on_a_frozen_kubelet_is_replaced_after_node_loss_seconds() {
    deploy().await;
    let ns = TestNs::new("rn-nodeloss").await;
    let rbac = root().join("config/samples/member-rbac.yaml");
    kubectl(&["-n", &ns.name, "apply", "-f", rbac.to_str().unwrap()]);
    // m0, the oldest, runs podium-sample on the real node; m1 and m2 on kwok's nodes.
    let real = real_node_member("m0", &[("app", "mixed")]);
    let pods = ns.api::<Pod>();
    pods.create(&Default::default(), &real).await.unwrap();
    ns.wait_running("m0").await;
    ns.create_pod("m1", &[("app", "mixed")]).await;
    ns.create_pod("m2", &[("app", "mixed")]).await;
    ns.wait_running("m1").await;
    ns.wait_running("m2").await;
    let group: ElectionGroup = serde_json::from_value(serde_json::json!({
        "apiVersion": "podium.dev/v1alpha1", "kind": "ElectionGroup",
        "metadata": {"name": "mixed"},
        "spec": {"selector": {"matchLabels": {"app": "mixed"}}, "preference": "Oldest", "nodeLossSeconds": 11}
    }))
    .unwrap();
    let groups: Api<ElectionGroup> = ns.api();
    groups.create(&Default::default(), &group).await.unwrap();
    let g = wait_for_object(&groups, "mixed", Duration::from_secs(30), |g| {
        status(g).leader.as_deref() == Some("m0")
    })
    .await;
    let term = status(&g).term;
    let watch = LeaderWatch::start(&ns, "app=mixed").await;

    let node_leases: Api<Lease> = Api::namespaced(client().await, "kube-node-lease");
    let renew_time = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone());
    let renewed_before = renew_time(&node_leases.get(NODE).await.unwrap());
    let frozen = FrozenKubelet::freeze();
    let stopped = Instant::now();
    let g = wait_for_object(&groups, "mixed", Duration::from_secs(30), |g| {
        status(g).leader.as_deref().is_some_and(|l| l != "m0")
    })
    .await;
    let took = stopped.elapsed();
    println!(
        "kubelet of {NODE} frozen: {} promoted after {} ms (nodeLossSeconds 11, kubelet renews every 10 s)",
        status(&g).leader.unwrap_or_default(),
        took.as_millis()
    );
    let st = status(&g);
    assert_eq!(
        st.last_transition.as_ref().map(|t| t.reason),
        Some(podium_api::TransitionReason::NodeLost)
    );
    assert!(st.term > term);
    // Loss is 11 s of silence after the last renewal, which came at most 10 s before the stop.
    assert!(
        took >= Duration::from_secs(1) && took <= Duration::from_secs(14),
        "{took:?}"
    );
    let new = st.leader.unwrap();

    drop(frozen);
    // The kubelet renews its Lease again within its 10 s interval: once it has, and podium
    // has had a moment to see it, m0 must have taken nothing back.
    wait_for_object(&node_leases, NODE, Duration::from_secs(30), |l: &Lease| {
        renew_time(l).map(|t| t.0) > renewed_before.as_ref().map(|t| t.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let g = groups.get("mixed").await.unwrap();
    assert_eq!(status(&g).leader.as_deref(), Some(new.as_str()));
    let m0 = pods.get("m0").await.unwrap();
    assert_eq!(m0.labels().get(ROLE).map(String::as_str), Some("follower"));
    assert!(watch.max_leaders() <= 1, "two pods labelled leader at once");
    delete_group(&groups, "mixed").await;
}
