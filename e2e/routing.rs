//! The owned route against a real API server: the leader Service podium creates, its
//! EndpointSlice following the leader in one write, and a Service of that name podium did not
//! create left alone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::watcher;
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

/// Every state a watch of the Service's slices saw: how many addresses they listed together.
#[derive(Default)]
struct SliceWatch {
    slices: BTreeMap<String, Vec<String>>,
    most: usize,
    stopped: Option<String>,
}

impl SliceWatch {
    fn listed(&self) -> Vec<String> {
        let mut all: Vec<String> = self.slices.values().flatten().cloned().collect();
        all.sort();
        all
    }
}

#[tokio::test]
async fn deleting_the_leader_moves_the_slice_without_ever_listing_two() {
    let s = Setup::new("route-failover").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group("api", with_service()).await.unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    let (old, new) = (ip_of(&s, "p0").await, ip_of(&s, "p1").await);
    wait_slice(&s.ns, "api-leader", vec![(old.clone(), true)]).await;

    // A watch that errors or ends has missed states: the test then fails.
    let seen = Arc::new(Mutex::new(SliceWatch::default()));
    let (state, notify) = (seen.clone(), Arc::new(tokio::sync::Notify::new()));
    let changed = notify.clone();
    let cfg = watcher::Config::default().labels("kubernetes.io/service-name=api-leader");
    let stream = watcher(s.ns.api::<EndpointSlice>(), cfg);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let ev = match stream.try_next().await {
                Ok(Some(ev)) => ev,
                stop => {
                    state.lock().unwrap().stopped = Some(match stop {
                        Err(e) => format!("the slice watch failed: {e}"),
                        _ => "the slice watch ended".into(),
                    });
                    changed.notify_waiters();
                    return;
                }
            };
            let mut st = state.lock().unwrap();
            match ev {
                watcher::Event::Apply(sl) | watcher::Event::InitApply(sl) => {
                    let addresses = sl.endpoints.iter().flat_map(|e| e.addresses.clone());
                    st.slices.insert(sl.name_any(), addresses.collect());
                }
                watcher::Event::Delete(sl) => {
                    st.slices.remove(&sl.name_any());
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
            st.most = st.most.max(st.listed().len());
            changed.notify_waiters();
        }
    });

    s.ns.delete_pod_now("p0").await;
    s.wait_leader("api", "app=x", "p1").await;
    let settled = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let wake = notify.notified();
            {
                let st = seen.lock().unwrap();
                if let Some(why) = &st.stopped {
                    panic!("{why}");
                }
                if st.listed() == [new.clone()] {
                    return;
                }
            }
            wake.await;
        }
    })
    .await;
    task.abort();
    let st = seen.lock().unwrap();
    assert!(
        settled.is_ok(),
        "the slice never listed only {new}: {:?}",
        st.slices
    );
    if let Some(why) = &st.stopped {
        panic!("{why}");
    }
    assert!(st.most <= 1, "a watch saw {} addresses at once", st.most);
    assert_eq!(st.listed(), [new]);
}

#[tokio::test]
async fn a_foreign_service_of_that_name_is_a_conflict_and_left_alone() {
    let s = Setup::new("route-foreign").await;
    create_service(&s.ns, "api-leader", json!({"app": "someone-else"})).await;
    let before = s.ns.api::<Service>().get("api-leader").await.unwrap();
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
