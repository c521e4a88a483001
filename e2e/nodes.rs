//! Node loss: a leader whose node stops renewing its Lease (kube-node-lease) is replaced once
//! the group's `nodeLossSeconds` has passed, before the node lifecycle controller would mark
//! its pods NotReady; a node that comes back takes nothing back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::time::Instant;

use crate::groups::{LeaderWatch, Setup, status};
use crate::support::{block_on_side_thread, client, pod_manifest};
use podium::crd::TransitionReason;

/// A node nobody else plays the kubelet for (kwok manages only nodes annotated
/// kwok.x-k8s.io/node=fake): the test renews its Lease every second and marks its pods Ready.
struct TestNode {
    name: String,
    renewing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl TestNode {
    async fn start(name: &str) -> Self {
        let c = client().await;
        let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Node>::all(c.clone())
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
        let leases: Api<Lease> = Api::namespaced(c, "kube-node-lease");
        let renewing = Arc::new(AtomicBool::new(true));
        let (on, node_name) = (renewing.clone(), name.to_string());
        let task = tokio::spawn(async move {
            loop {
                if on.load(Ordering::SeqCst) {
                    let lease = json!({
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": node_name},
                        "spec": {"holderIdentity": node_name, "leaseDurationSeconds": 40,
                                 "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}
                    });
                    let pp = PatchParams::apply("test-kubelet").force();
                    leases
                        .patch(&node_name, &pp, &Patch::Apply(&lease))
                        .await
                        .expect("renew the node Lease");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Self {
            name: name.to_string(),
            renewing,
            task,
        }
    }

    /// Creates a Running, Ready pod on this node, as its kubelet would report it.
    async fn pod(&self, s: &Setup, name: &str, labels: &[(&str, &str)]) {
        let mut pod = pod_manifest(name, labels, &[]);
        pod.spec.as_mut().unwrap().node_name = Some(self.name.clone());
        let pods = s.ns.api::<Pod>();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let now = jiff::Timestamp::now().to_string();
        let status = json!({"status": {"phase": "Running", "podIP": "10.251.0.1", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
        ]}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
    }

    fn set_renewing(&self, on: bool) {
        self.renewing.store(on, Ordering::SeqCst);
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.task.abort();
        let name = self.name.clone();
        block_on_side_thread(async move {
            let c = client().await;
            let _ = Api::<Node>::all(c.clone())
                .delete(&name, &Default::default())
                .await;
            let _ = Api::<Lease>::namespaced(c, "kube-node-lease")
                .delete(&name, &Default::default())
                .await;
        });
    }
}

#[tokio::test]
async fn a_leader_on_a_silent_node_is_replaced_after_node_loss_seconds_and_keeps_no_claim() {
    let s = Setup::new("nodes-loss").await;
    let node = TestNode::start(&format!("{}-node", s.ns.name)).await;
    // p0, the oldest, on the test node; p1 and p2 on kwok's nodes.
    node.pod(&s, "p0", &[("app", "x")]).await;
    s.pods(&["p1", "p2"], &[("app", "x")]).await;
    s.apply_group(
        "g",
        json!({"selector": {"matchLabels": {"app": "x"}}, "nodeLossSeconds": 11}),
    )
    .await
    .unwrap();
    let g = s.wait_leader("g", "app=x", "p0").await;
    let term = status(&g).term;
    let watch = LeaderWatch::start(&s.ns, "app=x").await;

    node.set_renewing(false);
    let stopped = Instant::now();
    let g = s
        .wait_group("g", "a new leader after node loss", |g| {
            status(g).leader.as_deref().is_some_and(|l| l != "p0")
        })
        .await;
    let took = stopped.elapsed();
    println!("node silent: new leader after {} ms", took.as_millis());
    let st = status(&g);
    assert_eq!(
        st.last_transition.as_ref().map(|t| t.reason),
        Some(TransitionReason::NodeLost)
    );
    assert!(st.term > term);
    // The last renewal came at most 1 s before the stop, and loss needs 11 s of silence.
    assert!(
        took >= Duration::from_secs(9),
        "replaced too early: {took:?}"
    );
    let new = st.leader.clone().unwrap();
    s.wait_leader("g", "app=x", &new).await;

    // The node comes back: nothing moves. A new member makes the operator reconcile with the
    // node renewing again.
    node.set_renewing(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.ns.create_pod("p3", &[("app", "x")]).await;
    let g = s.wait_leader("g", "app=x", &new).await;
    assert_eq!(
        status(&g).term,
        st.term,
        "the returning node took nothing back"
    );
    assert_eq!(status(&g).members, 4);
    assert!(
        watch.max_leaders() <= 1,
        "two leaders at once in break-before-make"
    );
}
