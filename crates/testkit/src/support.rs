//! Helpers for end-to-end tests against the local control plane (`make cluster-up`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

pub use crate::operator::{Operator, podium_bin};
pub use crate::paths::{cluster_dir, kubeconfig_path, repo_root};

/// A client for the local control plane, built as podium builds its own (TCP_NODELAY), so the
/// harness adds no delayed-ACK stalls to what it times.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; run `make cluster-up`", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    podium_member::client::build(config).expect("client")
}

/// A namespace created for one test and deleted when the test ends, pass or fail.
pub struct TestNs {
    /// Client for the local control plane.
    pub client: Client,
    /// Namespace name.
    pub name: String,
}

impl TestNs {
    /// Creates a fresh namespace whose name starts with `prefix`.
    pub async fn new(prefix: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let client = client().await;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "{prefix}-{:x}{:x}-{}",
            std::process::id() % 4096,
            nanos % 65536,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        // Pods cannot be created until the default ServiceAccount exists.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_for_object(&sa, "default", Duration::from_secs(30), |_| true).await;
        Self { client, name }
    }

    /// Typed namespaced API.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates a pod that kwok runs: Running, Ready and with an IP shortly after.
    pub async fn create_pod(&self, name: &str, labels: &[(&str, &str)]) -> Pod {
        self.create_pod_with(name, labels, &[]).await
    }

    /// Creates a pod with labels and annotations.
    pub async fn create_pod_with(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> Pod {
        let pod = pod_manifest(name, labels, annotations);
        self.api::<Pod>()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("create pod {name}: {e}"))
    }

    /// Waits until a pod is Ready with an IP.
    pub async fn wait_running(&self, name: &str) -> Pod {
        wait_for_object(
            &self.api::<Pod>(),
            name,
            Duration::from_secs(60),
            |p: &Pod| pod_ready(p) && pod_ip(p).is_some(),
        )
        .await
    }

    /// Sets a pod's Ready condition through the status subresource, as a kubelet would.
    pub async fn set_ready(&self, name: &str, ready: bool) {
        let status = if ready { "True" } else { "False" };
        let now = jiff::Timestamp::now().to_string();
        let patch = json!({"status": {"conditions": [
            {"type": "Ready", "status": status, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
        ]}});
        self.api::<Pod>()
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .unwrap_or_else(|e| panic!("set ready={ready} on {name}: {e}"));
    }

    /// Sets (or with `None` removes) one label on a pod.
    pub async fn set_label(&self, pod: &str, key: &str, value: Option<&str>) {
        let patch = json!({"metadata": {"labels": {key: value}}});
        self.api::<Pod>()
            .patch(pod, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap_or_else(|e| panic!("label {pod}: {e}"));
    }

    /// Deletes a pod at once (grace period 0).
    pub async fn delete_pod_now(&self, name: &str) {
        self.api::<Pod>()
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
            .unwrap_or_else(|e| panic!("delete pod {name}: {e}"));
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_side_thread(async move {
            let api = Api::<Namespace>::all(client().await);
            api.delete(&name, &DeleteParams::background()).await.ok()
        });
    }
}

/// Runs a future to completion from synchronous code (a Drop), on a short-lived runtime
/// on its own thread, since the test's runtime cannot be blocked from inside itself.
pub fn block_on_side_thread<F>(fut: F)
where
    F: Future + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(fut);
        }
    })
    .join();
}

/// A pod manifest for the fake nodes.
pub fn pod_manifest(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
    let labels: BTreeMap<_, _> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let annotations: BTreeMap<_, _> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "containers": [{"name": "app", "image": "registry.example/app:1"}],
            "terminationGracePeriodSeconds": 30,
        }
    }))
    .unwrap()
}

/// The pod's Ready condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod's IP, if it has one.
pub fn pod_ip(p: &Pod) -> Option<String> {
    p.status.as_ref().and_then(|s| s.pod_ip.clone())
}

/// A label's value on an object.
pub fn label<K: Resource>(o: &K, key: &str) -> Option<String> {
    o.meta().labels.as_ref().and_then(|l| l.get(key).cloned())
}

/// An annotation's value on an object.
pub fn annotation<K: Resource>(o: &K, key: &str) -> Option<String> {
    o.meta()
        .annotations
        .as_ref()
        .and_then(|l| l.get(key).cloned())
}

/// Watches one object until `ok` holds, or panics after `timeout`.
pub async fn wait_for_object<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    ok: impl Fn(&K) -> bool,
) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api.clone(), cfg).applied_objects();
    let mut stream = std::pin::pin!(stream);
    let mut last = None;
    let found = tokio::time::timeout(timeout, async {
        while let Some(obj) = stream.try_next().await.ok().flatten() {
            if ok(&obj) {
                return Some(obj);
            }
            last = Some(obj);
        }
        None
    })
    .await;
    match found {
        Ok(Some(o)) => o,
        _ => panic!("timed out after {timeout:?} waiting for {name}; last seen: {last:#?}"),
    }
}

/// Watches a set of objects (a reflector) until `ok` holds over them, or panics after `timeout`.
pub async fn wait_for_list<K>(
    api: &Api<K>,
    cfg: watcher::Config,
    timeout: Duration,
    what: &str,
    ok: impl Fn(&[std::sync::Arc<K>]) -> bool,
) -> Vec<std::sync::Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api.clone(), cfg)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, stream.next()).await {
            Ok(Some(Ok(
                watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_),
            ))) => {
                if reader.wait_until_ready().await.is_ok() && ok(&reader.state()) {
                    return reader.state();
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; last state: {:#?}",
                    reader.state()
                )
            }
        }
    }
}

/// Lists objects once.
pub async fn list<K>(api: &Api<K>, selector: &str) -> Vec<K>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.list(&ListParams::default().labels(selector))
        .await
        .expect("list")
        .items
}

/// Milliseconds since `start`, for printing measured latencies.
pub fn ms_since(start: Instant) -> u128 {
    start.elapsed().as_millis()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP GET on loopback; returns the status code and body.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_request(&format!("127.0.0.1:{port}"), "GET", path).await
}

/// One HTTP/1.0 request to `addr` (host:port), given 2 s to connect and answer; returns the
/// status code and body, or None when the server cannot be reached or does not answer.
pub async fn http_request(addr: &str, method: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("{method} {path} HTTP/1.0\r\nHost: podium\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.ok()?;
        let code = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// Polls an HTTP endpoint until it answers `code` (the endpoint has no watch to wait on).
pub async fn wait_http(port: u16, path: &str, code: u16, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((c, body)) = http_get(port, path).await
            && c == code
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} on :{port} did not answer {code} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A kubeconfig for the local cluster that authenticates with a ServiceAccount token.
pub async fn service_account_kubeconfig(namespace: &str, sa: &str, file: &str) -> PathBuf {
    let out = std::process::Command::new(kubectl_path())
        .args(["--kubeconfig", kubeconfig_path().to_str().unwrap()])
        .args(["-n", namespace, "create", "token", sa, "--duration=1h"])
        .output()
        .expect("kubectl create token");
    assert!(
        out.status.success(),
        "create token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut kc = Kubeconfig::read_from(kubeconfig_path()).unwrap();
    for user in &mut kc.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            *auth = serde_json::from_value(json!({"token": token})).unwrap();
        }
    }
    let path = repo_root().join(format!("target/e2e-logs/{file}.kubeconfig"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_string(&kc).unwrap()).unwrap();
    path
}

/// The kubectl built with the local control plane.
pub fn kubectl_path() -> PathBuf {
    cluster_dir().join("kubectl")
}

/// Runs kubectl against the local cluster; panics with its output when it fails.
pub fn kubectl(args: &[&str]) -> String {
    let out = std::process::Command::new(kubectl_path())
        .args(["--kubeconfig", kubeconfig_path().to_str().unwrap()])
        .args(args)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host pid of a pod's first container on the real node (e2e/node), from its containerd.
pub fn container_pid(pod: &Pod) -> u32 {
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.container_id.as_deref())
        .and_then(|id| id.strip_prefix("containerd://"))
        .unwrap_or_else(|| {
            panic!(
                "{} has no running container",
                kube::ResourceExt::name_any(pod)
            )
        })
        .to_string();
    let sock = cluster_dir().join("node/containerd.sock");
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&sock)
        .args(["-n", "k8s.io", "tasks", "ls"])
        .output()
        .expect("run ctr");
    let tasks = String::from_utf8_lossy(&out.stdout);
    tasks
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(id.as_str())).then(|| f.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("container {id} is not a running task:\n{tasks}"))
}

/// A pod running podium-sample (`make image`) on the real node, as a member of whatever group
/// selects `labels`; it reads its role with the podium-member ServiceAccount
/// (config/samples/member-rbac.yaml) and turns Ready once it serves.
pub fn real_node_member(name: &str, labels: &[(&str, &str)]) -> Pod {
    let labels: BTreeMap<_, _> = labels.iter().map(|(k, v)| (*k, *v)).collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": "real-node-0",
            "serviceAccountName": "podium-member",
            "tolerations": [{"key": "podium.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{
                "name": "app", "image": "podium-sample:dev", "imagePullPolicy": "Never",
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
                ],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1}
            }]
        }
    }))
    .unwrap()
}

/// How often a pod's first container has been restarted.
pub fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .map_or(0, |c| c.restart_count)
}
