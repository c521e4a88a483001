//! Failover and traffic switch through both routes: a group of three with a podium-owned
//! leader Service (`api-leader`, whose EndpointSlice podium writes) beside a Service that
//! selects the role label (`leader`, whose slice kube-controller-manager writes). Its leader
//! is deleted or made NotReady, and each trial is timed until another pod is labelled leader
//! and until each Service's slices list only the new leader's address. Then a follower's role
//! label is forged to `leader`, timed until podium puts it back, and each slice is checked
//! for the forged pod's address.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Patch, PatchParams, PostParams};
use podium_bench::stats::stats;
use podium_testkit::groups::{LeaderWatch, ROLE, Setup, status};
use podium_testkit::slices::SliceWatch;
use podium_testkit::support::{TestNs, label, pod_ip};
use serde_json::{Value, json};

/// The Service selecting the role label.
const LABEL_SERVICE: &str = "leader";
/// The Service podium owns (the group's default name for it).
const OWNED_SERVICE: &str = "api-leader";

pub async fn leader_of(s: &Setup, group: &str) -> String {
    let g = s
        .wait_group(group, "has a leader", |g| status(g).leader.is_some())
        .await;
    status(&g).leader.unwrap()
}

pub async fn pod_ip_of(ns: &TestNs, pod: &str) -> String {
    pod_ip(&ns.wait_running(pod).await).unwrap()
}

/// Times in ms, one per trial.
#[derive(Default)]
pub struct Failovers {
    pub delete_ms: Vec<f64>,
    pub unready_ms: Vec<f64>,
    /// Leader deleted → the label route's slices list only the new leader.
    pub label_delete_ms: Vec<f64>,
    pub label_unready_ms: Vec<f64>,
    /// The same through podium's own slice.
    pub owned_delete_ms: Vec<f64>,
    pub owned_unready_ms: Vec<f64>,
    /// The most addresses each route listed at once during the failover trials.
    pub label_most: usize,
    pub owned_most: usize,
    /// A forged leader label → podium's label back on the pod.
    pub forged_ms: Vec<f64>,
    /// Forged trials in which each route listed the forged pod's address.
    pub forged_in_label: usize,
    pub forged_in_owned: usize,
}

impl Failovers {
    /// results.json's `endpointslice_switch_ms` and `forged_label`.
    pub fn json(&self) -> (Value, Value) {
        let all = |a: &[f64], b: &[f64]| [a, b].concat();
        let switch = json!({
            "label": stats(&all(&self.label_delete_ms, &self.label_unready_ms)),
            "owned": stats(&all(&self.owned_delete_ms, &self.owned_unready_ms)),
            "new_leader_labelled": stats(&all(&self.delete_ms, &self.unready_ms)),
            "by_failure": {
                "leader_deleted": {"label": stats(&self.label_delete_ms), "owned": stats(&self.owned_delete_ms)},
                "leader_not_ready": {"label": stats(&self.label_unready_ms), "owned": stats(&self.owned_unready_ms)},
            },
            "most_addresses": {"label": self.label_most, "owned": self.owned_most},
            "samples": {"label_delete": self.label_delete_ms, "label_unready": self.label_unready_ms,
                        "owned_delete": self.owned_delete_ms, "owned_unready": self.owned_unready_ms},
        });
        let forged = json!({
            "trials": self.forged_ms.len(),
            "revert_ms": stats(&self.forged_ms),
            "trials_listed_by_label_route": self.forged_in_label,
            "trials_listed_by_owned_route": self.forged_in_owned,
            "samples": self.forged_ms,
        });
        (switch, forged)
    }
}

const SELECTOR: &str = "app=x";

/// Failover trials (`trials` of each kind), then `forged` forged-label trials.
pub async fn failover(trials: usize, forged: usize) -> Failovers {
    let s = Setup::new("bench-failover").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    label_service(&s.ns).await;
    s.apply_group(
        "api",
        json!({"selector": {"matchLabels": {"app": "x"}},
               "service": {"ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .await
    .unwrap();
    let watch = LeaderWatch::start(&s.ns, SELECTOR).await;
    let label_route = SliceWatch::start(&s.ns, LABEL_SERVICE);
    let owned_route = SliceWatch::start(&s.ns, OWNED_SERVICE);
    let mut r = Failovers::default();
    let begun = Instant::now();
    let mut next = 3;
    for i in 0..trials * 2 {
        let old = leader_of(&s, "api").await;
        s.wait_leader("api", SELECTOR, &old).await;
        let old_ip = pod_ip_of(&s.ns, &old).await;
        label_route
            .wait_only(&old_ip, Duration::from_secs(30))
            .await;
        owned_route
            .wait_only(&old_ip, Duration::from_secs(30))
            .await;
        let by_delete = i % 2 == 0;
        let start = Instant::now();
        if by_delete {
            s.ns.delete_pod_now(&old).await;
        } else {
            s.ns.set_ready(&old, false).await;
        }
        let (new, seen) = watch
            .wait_new_leader(&old, start, Duration::from_secs(30))
            .await;
        let ms = |at: Instant| at.duration_since(start).as_secs_f64() * 1000.0;
        let new_ip = pod_ip_of(&s.ns, &new).await;
        let owned = ms(owned_route
            .wait_only(&new_ip, Duration::from_secs(30))
            .await);
        let labelled = ms(label_route
            .wait_only(&new_ip, Duration::from_secs(30))
            .await);
        if by_delete {
            r.delete_ms.push(ms(seen));
            r.owned_delete_ms.push(owned);
            r.label_delete_ms.push(labelled);
            let name = format!("p{next}");
            next += 1;
            s.ns.create_pod(&name, &[("app", "x")]).await;
            s.ns.wait_running(&name).await;
        } else {
            r.unready_ms.push(ms(seen));
            r.owned_unready_ms.push(owned);
            r.label_unready_ms.push(labelled);
            s.ns.set_ready(&old, true).await;
        }
        settle(&s).await;
    }
    assert!(
        watch.max_leaders() <= 1,
        "a watch saw two leaders during the trials"
    );
    r.label_most = label_route.most_since(begun);
    r.owned_most = owned_route.most_since(begun);
    assert!(
        r.owned_most <= 1,
        "podium's slice listed {} addresses at once",
        r.owned_most
    );
    forged_trials(&s, forged, &watch, [&label_route, &owned_route], &mut r).await;
    r
}

/// Lets the group settle (all members labelled, status written) before the next trial.
async fn settle(s: &Setup) {
    s.wait_group("api", "3 ready", |g| {
        status(g).ready_members == 3 && status(g).members == 3
    })
    .await;
}

/// A follower's role label set to `leader` by the admin (no admission policy in the bench's
/// namespaces), timed until a watch sees podium's label back; and whether each route listed
/// the follower's address meanwhile.
async fn forged_trials(
    s: &Setup,
    trials: usize,
    watch: &LeaderWatch,
    [label_route, owned_route]: [&SliceWatch; 2],
    r: &mut Failovers,
) {
    let pods = s.ns.api::<Pod>();
    for _ in 0..trials {
        let leader = leader_of(s, "api").await;
        let leader_ip = pod_ip_of(&s.ns, &leader).await;
        label_route
            .wait_only(&leader_ip, Duration::from_secs(30))
            .await;
        owned_route
            .wait_only(&leader_ip, Duration::from_secs(30))
            .await;
        let members = podium_testkit::support::list(&pods, SELECTOR).await;
        let follower = members
            .iter()
            .find(|p| label(*p, ROLE).as_deref() == Some("follower"))
            .expect("a follower");
        let name = follower.metadata.name.clone().unwrap_or_default();
        let ip = pod_ip(follower).unwrap();
        let forged = json!({"metadata": {"labels": {ROLE: "leader"}}});
        let start = Instant::now();
        pods.patch(&name, &PatchParams::default(), &Patch::Merge(&forged))
            .await
            .unwrap();
        let back = watch
            .wait_left_leader(&name, start, Duration::from_secs(30))
            .await;
        r.forged_ms
            .push(back.duration_since(start).as_secs_f64() * 1000.0);
        // The label route's slice settles again before the next trial (and its state is read).
        label_route
            .wait_only(&leader_ip, Duration::from_secs(30))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        r.forged_in_label += usize::from(label_route.listed_since(&ip, start));
        r.forged_in_owned += usize::from(owned_route.listed_since(&ip, start));
        settle(s).await;
    }
    assert_eq!(
        r.forged_in_owned, 0,
        "podium's slice listed a pod whose leader label was forged"
    );
}

/// The label route's Service: selects the members' role label.
pub async fn label_service(ns: &TestNs) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": LABEL_SERVICE},
        "spec": {"selector": {"app": "x", ROLE: "leader"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    ns.api::<Service>()
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
}
