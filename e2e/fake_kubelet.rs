//! A kubelet played by the tests for one Node nobody else manages (kwok manages only the nodes
//! annotated kwok.x-k8s.io/node=fake). Once a second it renews the node's Lease in
//! kube-node-lease, starts the pods bound to the node (Running, Ready, an IP, written through
//! the status subresource as a kubelet reports them) and finishes their deletion, as kwok does
//! for its nodes. Silenced, it does none of that: a node that stopped answering.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::support::{block_on_side_thread, client, pod_ip};

/// How often a live kubelet renews its Lease and looks at its pods. A real one renews every
/// 10 s; every second keeps the Lease's silence, when it starts, within a second of the moment
/// a test silences the node.
const BEAT: Duration = Duration::from_secs(1);

/// The node and the task playing its kubelet; dropping it deletes both Node and Lease.
pub struct FakeKubelet {
    name: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

/// What the kubelet's task and the test share.
struct State {
    node: String,
    client: Client,
    /// Held across a whole beat, so that silencing waits out a renewal in flight.
    alive: tokio::sync::Mutex<bool>,
    /// When the last successful renewal was sent: no observer can have seen a later one.
    renewed: Mutex<Option<Instant>>,
    /// Numbers the pods' IPs.
    started: AtomicU32,
}

impl FakeKubelet {
    /// Creates the Node, renews its Lease once, and starts beating.
    pub async fn start(name: &str) -> Result<Self, kube::Error> {
        let client = client().await;
        // Explicit, though a node without capacity fits no pod anyway: only pods bound to it
        // by name run here.
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"taints": [{"key": "podium.dev/fake-kubelet", "effect": "NoSchedule"}]},
        }))
        .expect("node manifest");
        Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &node)
            .await?;
        let state = Arc::new(State {
            node: name.to_string(),
            client,
            alive: tokio::sync::Mutex::new(true),
            renewed: Mutex::new(None),
            started: AtomicU32::new(0),
        });
        state.renew().await?;
        let task = tokio::spawn(beat_forever(state.clone()));
        Ok(Self {
            name: name.to_string(),
            state,
            task,
        })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Silences the kubelet (no renewals, no pod updates) or brings it back. Returns once no
    /// beat is in flight, so no renewal lands after the kubelet was silenced.
    pub async fn set_alive(&self, alive: bool) {
        *self.state.alive.lock().await = alive;
    }

    /// When the last successful renewal was sent.
    pub fn last_renewal(&self) -> Option<Instant> {
        *self.state.renewed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates `pod` on this node and reports it Running and Ready at once, as a kubelet
    /// would once its containers run.
    pub async fn create_pod(&self, pods: &Api<Pod>, mut pod: Pod) -> Result<Pod, kube::Error> {
        // No beat meanwhile, which could find the new pod and start it a second time.
        let _no_beat = self.state.alive.lock().await;
        pod.spec.get_or_insert_with(Default::default).node_name = Some(self.name.clone());
        let created = pods.create(&PostParams::default(), &pod).await?;
        self.state.start_pod(&created).await?;
        Ok(created)
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
        let name = self.name.clone();
        block_on_side_thread(async move {
            let c = client().await;
            let _ = Api::<Node>::all(c.clone())
                .delete(&name, &DeleteParams::default())
                .await;
            let _ = Api::<Lease>::namespaced(c, "kube-node-lease")
                .delete(&name, &DeleteParams::default())
                .await;
        });
    }
}

/// The kubelet's loop, until the FakeKubelet is dropped.
async fn beat_forever(state: Arc<State>) {
    loop {
        {
            let alive = state.alive.lock().await;
            if *alive {
                // A failed or hung call is retried on the next beat (the API server may be
                // restarting, in chaos), and never holds up a silencing for long.
                let beat = async {
                    let _ = state.renew().await;
                    let _ = state.tend_pods().await;
                };
                let _ = tokio::time::timeout(BEAT * 5, beat).await;
            }
        }
        tokio::time::sleep(BEAT).await;
    }
}

impl State {
    /// One renewal of the node Lease (created by the first).
    async fn renew(&self) -> Result<(), kube::Error> {
        let sent = Instant::now();
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.node},
            "spec": {"holderIdentity": self.node, "leaseDurationSeconds": 40,
                     "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}
        });
        let pp = PatchParams::apply("test-kubelet").force();
        Api::<Lease>::namespaced(self.client.clone(), "kube-node-lease")
            .patch(&self.node, &pp, &Patch::Apply(&lease))
            .await?;
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(sent);
        Ok(())
    }

    /// Starts the node's pods that have not run yet and finishes the deletion of terminating
    /// ones; a pod already running is left alone, so readiness a test set stays as it is.
    async fn tend_pods(&self) -> Result<(), kube::Error> {
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.node));
        for pod in Api::<Pod>::all(self.client.clone()).list(&lp).await? {
            if pod.metadata.deletion_timestamp.is_some() {
                self.finish_pod(&pod).await?;
            } else if pod_ip(&pod).is_none() {
                self.start_pod(&pod).await?;
            }
        }
        Ok(())
    }

    /// Reports the pod Running and Ready, with an IP of its own.
    async fn start_pod(&self, pod: &Pod) -> Result<(), kube::Error> {
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let ip = format!("10.251.{}.{}", n / 250, n % 250 + 1);
        let now = jiff::Timestamp::now().to_string();
        let status = json!({"status": {"phase": "Running", "podIP": ip, "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
        ]}});
        self.pods(pod)
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(status),
            )
            .await?;
        Ok(())
    }

    /// Removes a terminating pod at once, as a kubelet does once its containers have exited
    /// (and kwok does straight away); only that pod, not a same-named successor.
    async fn finish_pod(&self, pod: &Pod) -> Result<(), kube::Error> {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.pods(pod).delete(&pod.name_any(), &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn pods(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default())
    }
}
