//! Helpers for ElectionGroups in e2e tests: install the CRD, apply groups, wait on status,
//! and watch pods for the leader-count invariants.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{CustomResourceExt, ResourceExt};
use podium_api::{ElectionGroup, TERM_ANNOTATION};
use serde_json::json;
use tokio::sync::OnceCell;

use crate::support::*;

/// The default role label.
pub const ROLE: &str = "podium.dev/role";

/// The CRD of the operator under test: that of `PODIUM_BIN` when another build is run.
fn crd_to_install() -> CustomResourceDefinition {
    let Some(bin) = std::env::var_os("PODIUM_BIN") else {
        return ElectionGroup::crd();
    };
    let out = std::process::Command::new(&bin)
        .arg("crd")
        .output()
        .expect("run PODIUM_BIN crd");
    assert!(out.status.success(), "PODIUM_BIN crd failed");
    serde_saphyr::from_slice(&out.stdout).expect("PODIUM_BIN crd prints a CRD")
}

/// Installs the CRD once per test run and waits until it is served.
pub async fn install_crd() {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let api: Api<CustomResourceDefinition> = Api::all(client().await);
        let crd = crd_to_install();
        api.patch(
            &crd.name_any(),
            &PatchParams::apply("podium-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
        wait_for_object(
            &api,
            &crd.name_any(),
            Duration::from_secs(30),
            |c: &CustomResourceDefinition| {
                c.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
            },
        )
        .await;
    })
    .await;
}

/// A namespace with the CRD installed and an operator scoped to it.
pub struct Setup {
    /// The test namespace.
    pub ns: TestNs,
    /// The operator process (None once stopped).
    pub operator: Option<Operator>,
}

impl Setup {
    /// A fresh namespace and a running operator.
    pub async fn new(prefix: &str) -> Self {
        install_crd().await;
        let ns = TestNs::new(prefix).await;
        let operator = Some(Operator::start(&ns.name, &[]).await);
        Self { ns, operator }
    }

    /// Creates Ready pods `names` with the labels, waits until they run, and returns them.
    pub async fn pods(&self, names: &[&str], labels: &[(&str, &str)]) {
        for n in names {
            self.ns.create_pod(n, labels).await;
            // Creation timestamps have one-second resolution; spacing keeps "oldest" unambiguous.
            tokio::time::sleep(Duration::from_millis(1050)).await;
        }
        for n in names {
            self.ns.wait_running(n).await;
        }
    }

    /// Server-side applies an ElectionGroup with this spec.
    pub async fn apply_group(
        &self,
        name: &str,
        spec: serde_json::Value,
    ) -> Result<ElectionGroup, kube::Error> {
        let body = json!({
            "apiVersion": "podium.dev/v1alpha1",
            "kind": "ElectionGroup",
            "metadata": {"name": name},
            "spec": spec,
        });
        self.groups()
            .patch(
                name,
                &PatchParams::apply("podium-e2e").force(),
                &Patch::Apply(body),
            )
            .await
    }

    /// Creates an ElectionGroup from raw JSON, as `kubectl create` would.
    pub async fn create_raw(
        &self,
        name: &str,
        spec: serde_json::Value,
    ) -> Result<DynamicObject, kube::Error> {
        let ar = ApiResource::erase::<ElectionGroup>(&());
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.ns.client.clone(), &self.ns.name, &ar);
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "podium.dev/v1alpha1",
            "kind": "ElectionGroup",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .expect("object");
        api.create(&PostParams::default(), &obj).await
    }

    /// The ElectionGroup API of the namespace.
    pub fn groups(&self) -> Api<ElectionGroup> {
        self.ns.api()
    }

    /// Waits until the group's status satisfies `ok`.
    pub async fn wait_group(
        &self,
        name: &str,
        what: &str,
        ok: impl Fn(&ElectionGroup) -> bool,
    ) -> ElectionGroup {
        let _ = what;
        wait_for_object(&self.groups(), name, Duration::from_secs(30), ok).await
    }

    /// Waits until exactly `leader` carries the leader label among pods matching `selector`,
    /// every other one is a follower, and status agrees.
    pub async fn wait_leader(&self, group: &str, selector: &str, leader: &str) -> ElectionGroup {
        wait_for_list(
            &self.ns.api::<Pod>(),
            watcher::Config::default().labels(selector),
            Duration::from_secs(30),
            &format!("{leader} to lead {group}"),
            |pods| {
                pods.iter().all(|p| {
                    let want = if p.name_any() == leader {
                        "leader"
                    } else {
                        "follower"
                    };
                    label(p.as_ref(), ROLE).as_deref() == Some(want)
                })
            },
        )
        .await;
        self.wait_group(group, "status", |g| {
            status(g).leader.as_deref() == Some(leader)
        })
        .await
    }

    /// Kills the operator.
    pub async fn stop_operator(&mut self) {
        if let Some(op) = self.operator.take() {
            op.kill().await;
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // Delete the groups while the operator still runs, so that its finalizer does the
        // cleanup; if it is gone (or too slow), strip the finalizers so the namespace can go.
        let ns = self.ns.name.clone();
        let operator_alive = self.operator.as_mut().is_some_and(|o| o.alive());
        block_on_side_thread(async move {
            let api: Api<ElectionGroup> = Api::namespaced(client().await, &ns);
            let _ = api
                .delete_collection(&Default::default(), &Default::default())
                .await;
            if operator_alive {
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    while !api
                        .list(&Default::default())
                        .await
                        .map(|l| l.items.is_empty())
                        .unwrap_or(true)
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
                .await;
            }
            let patch = Patch::Merge(json!({"metadata": {"finalizers": null}}));
            if let Ok(groups) = api.list(&Default::default()).await {
                for g in groups {
                    let _ = api
                        .patch_metadata(&g.name_any(), &PatchParams::default(), &patch)
                        .await;
                }
            }
        });
    }
}

/// The group's status, or an empty one.
pub fn status(g: &ElectionGroup) -> podium_api::ElectionGroupStatus {
    g.status.clone().unwrap_or_default()
}

/// A condition's status string on a group.
pub fn condition(g: &ElectionGroup, type_: &str) -> Option<(String, String)> {
    status(g)
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// The leader's term annotation, read from the API server.
pub async fn term_on(ns: &TestNs, pod: &str) -> Option<i64> {
    let p = ns.api::<Pod>().get(pod).await.unwrap();
    annotation(&p, TERM_ANNOTATION).and_then(|t| t.parse().ok())
}

/// Watches pods in a namespace and records every state a watch sees: the number of pods
/// labelled leader after each event, and when each pod became leader.
///
/// A watch that errors or ends has missed states, so it cannot vouch for "never two leaders":
/// once it stops, every query panics and says why.
pub struct LeaderWatch {
    inner: Arc<Mutex<WatchState>>,
    changed: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct WatchState {
    roles: BTreeMap<String, String>,
    max_leaders: usize,
    min_leaders_after_first: Option<usize>,
    became_leader: Vec<(String, Instant)>,
    /// When each pod labelled leader was seen labelled otherwise (still a pod).
    left_leader: Vec<(String, Instant)>,
    /// When each pod was seen deleted.
    gone: Vec<(String, Instant)>,
    /// Why the watch stopped, if it did.
    stopped: Option<String>,
}

impl LeaderWatch {
    /// Starts watching pods matching `selector`; panics unless the initial list completes
    /// within 10 s.
    pub async fn start(ns: &TestNs, selector: &str) -> Self {
        let inner = Arc::new(Mutex::new(WatchState::default()));
        let state = inner.clone();
        let changed = Arc::new(tokio::sync::Notify::new());
        let notify = changed.clone();
        let api = ns.api::<Pod>();
        let cfg = watcher::Config::default().labels(selector);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let stream = watcher(api, cfg);
            let mut stream = std::pin::pin!(stream);
            loop {
                let ev = match stream.try_next().await {
                    Ok(Some(ev)) => ev,
                    stop => {
                        let why = match stop {
                            Err(e) => format!("the pod watch failed: {e}"),
                            _ => "the pod watch ended".to_string(),
                        };
                        state.lock().unwrap().stopped = Some(why);
                        notify.notify_waiters();
                        return;
                    }
                };
                let mut s = state.lock().unwrap();
                match ev {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        let role = label(&p, ROLE).unwrap_or_default();
                        let was = s.roles.insert(p.name_any(), role.clone());
                        if role == "leader" && was.as_deref() != Some("leader") {
                            s.became_leader.push((p.name_any(), Instant::now()));
                        }
                        if role != "leader" && was.as_deref() == Some("leader") {
                            s.left_leader.push((p.name_any(), Instant::now()));
                        }
                    }
                    watcher::Event::Delete(p) => {
                        s.roles.remove(&p.name_any());
                        s.gone.push((p.name_any(), Instant::now()));
                    }
                    watcher::Event::InitDone => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    watcher::Event::Init => {}
                }
                let leaders = s.roles.values().filter(|r| *r == "leader").count();
                s.max_leaders = s.max_leaders.max(leaders);
                if !s.became_leader.is_empty() {
                    s.min_leaders_after_first = Some(
                        s.min_leaders_after_first
                            .map_or(leaders, |m| m.min(leaders)),
                    );
                }
                drop(s);
                notify.notify_waiters();
            }
        });
        match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!(
                "the leader watch on {selector} stopped before its initial list completed: {}",
                inner.lock().unwrap().stopped.clone().unwrap_or_default()
            ),
            Err(_) => panic!(
                "the leader watch on {selector} did not complete its initial list within 10 s"
            ),
        }
        Self {
            inner,
            changed,
            task,
        }
    }

    /// The recorded state; panics if the watch has stopped, since it may have missed states.
    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        let s = self.inner.lock().unwrap();
        if let Some(why) = &s.stopped {
            panic!("the leader watch stopped, so it may have missed states: {why}");
        }
        s
    }

    /// The most pods labelled leader at once, as seen by the watch.
    pub fn max_leaders(&self) -> usize {
        self.state().max_leaders
    }

    /// The fewest pods labelled leader at once since the first leader appeared.
    pub fn min_leaders(&self) -> Option<usize> {
        self.state().min_leaders_after_first
    }

    /// When the watch saw `pod` deleted at or after `after`, if it did.
    #[allow(
        dead_code,
        reason = "the bench's failover under load uses it; no e2e test does"
    )]
    pub fn seen_gone(&self, pod: &str, after: Instant) -> Option<Instant> {
        self.state()
            .gone
            .iter()
            .find(|(p, t)| p == pod && *t >= after)
            .map(|(_, t)| *t)
    }

    /// The pods seen becoming leader at or after `after`, in order.
    pub fn became_leader_since(&self, after: Instant) -> Vec<String> {
        self.state()
            .became_leader
            .iter()
            .filter(|(_, t)| *t >= after)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Waits until `pod`, labelled leader, is seen labelled otherwise after `after`.
    pub async fn wait_left_leader(&self, pod: &str, after: Instant, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            let found = self
                .state()
                .left_leader
                .iter()
                .find(|(p, t)| *t >= after && p == pod)
                .map(|(_, t)| *t);
            if let Some(at) = found {
                return at;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(remaining, changed).await.is_err() {
                panic!("{pod} still labelled leader after {timeout:?}");
            }
        }
    }

    /// Waits until some pod other than `old` is seen labelled leader after `after`.
    pub async fn wait_new_leader(
        &self,
        old: &str,
        after: Instant,
        timeout: Duration,
    ) -> (String, Instant) {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            // The old leader's own label may arrive after `after` (status is written first):
            // look past it rather than stop at the first event.
            let found = self
                .state()
                .became_leader
                .iter()
                .find(|(p, t)| *t >= after && p != old)
                .cloned();
            if let Some(found) = found {
                return found;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(remaining, changed).await.is_err() {
                panic!("no new leader within {timeout:?}");
            }
        }
    }
}

impl Drop for LeaderWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
