//! Node loss: a leader whose node stops renewing its Lease (kube-node-lease) is replaced once
//! the group's `nodeLossSeconds` has passed, before the node lifecycle controller would mark
//! its pods NotReady; a node that comes back takes nothing back.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::fake_kubelet::FakeKubelet;
use crate::groups::{LeaderWatch, Setup, status};
use crate::support::pod_manifest;
use podium_api::TransitionReason;

#[tokio::test]
async fn a_leader_on_a_silent_node_is_replaced_after_node_loss_seconds_and_keeps_no_claim() {
    let s = Setup::new("nodes-loss").await;
    // The test plays the node's kubelet.
    let node = FakeKubelet::start(&format!("{}-node", s.ns.name))
        .await
        .expect("create the test's node");
    // p0, the oldest, on the test node; p1 and p2 on kwok's nodes.
    node.create_pod(&s.ns.api(), pod_manifest("p0", &[("app", "x")], &[]))
        .await
        .expect("create p0 on the test's node");
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

    node.set_alive(false).await;
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
    node.set_alive(true).await;
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
