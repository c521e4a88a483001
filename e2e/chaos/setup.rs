//! The world a chaos run acts on: the CRD, one namespace, the groups and their pods (on kwok's
//! nodes, and one member of some groups on a node whose kubelet the harness plays), all marked
//! with a foreign label, annotation and finalizer podium must leave alone, and the barrier the
//! injector writes to know the checker's watches caught up.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::api::{GroupVersionKind, PostParams};
use serde_json::json;

use crate::fake_kubelet::FakeKubelet;
use crate::support::{TestNs, kubectl, pod_manifest};

/// The label, annotation and finalizer the harness puts on everything it creates.
pub const KEEP: &str = "chaos.example/keep";
/// The label the groups select on; its value is the group's name.
pub const APP: &str = "chaos.example/app";
/// Selector value of pods that no group selects.
pub const STRAY: &str = "stray";
/// The annotation [`World::poke`] writes.
const POKE: &str = "chaos.example/poke";
/// The group (and its single pod) the injector writes to, to know the watches caught up.
pub const BARRIER_GROUP: &str = "barrier";
/// The EndpointSlice the injector writes to for the same reason. It names no Service, so no
/// controller (podium or Kubernetes') claims or prunes it.
pub const BARRIER_SLICE: &str = "chaos-barrier";
/// The annotation the injector bumps on the barrier objects.
pub const BARRIER: &str = "chaos.example/barrier";

/// `spec.nodeLossSeconds` of the groups with a member on the harness's node: the least podium
/// accepts, so that a silence of 12 s already costs a leader there its place.
pub const NODE_LOSS_SECONDS: u64 = 11;

/// One ElectionGroup of the run, as the harness (and the checker) knows it.
#[derive(Clone, Debug)]
pub struct GroupDef {
    /// Name; also the value of the [`APP`] label its pods carry.
    pub name: &'static str,
    /// `BreakBeforeMake` (else `MakeBeforeBreak`).
    pub break_before_make: bool,
    /// `spec.handoff.schedule`, if any.
    pub schedule: Option<&'static str>,
    /// `spec.roleLabel`.
    pub role_label: &'static str,
    /// Members at the start.
    pub pods: usize,
    /// Keeps one member on the harness's node (the oldest at the start, so it leads first),
    /// with [`NODE_LOSS_SECONDS`].
    pub node_member: bool,
    /// Has `spec.service`: podium routes the Service `<name>-leader` to the leader itself.
    pub service: bool,
}

impl GroupDef {
    /// The name of the leader Service podium creates for the group (the default, as the
    /// harness sets no `spec.service.name`).
    pub fn service_name(&self) -> String {
        format!("{}-leader", self.name)
    }
}

/// The groups of a run: both handoff modes, with and without schedules, one with its own
/// role label, and the barrier group. A member on the harness's node goes to the groups of
/// both modes without a schedule: there nothing but faults moves leadership, so what follows
/// a node silence can be judged (a schedule could hand leadership away or back meanwhile).
/// The owned route goes to a group of each mode that a schedule keeps moving (many slice
/// rewrites) and to the BreakBeforeMake group with a node member (its route must follow a
/// NodeLost failover); the others keep the label route alone, so a run checks both.
pub fn groups() -> Vec<GroupDef> {
    let def = |name, bbm, schedule, role_label, pods, node_member| GroupDef {
        name,
        break_before_make: bbm,
        schedule,
        role_label,
        pods,
        node_member,
        service: false,
    };
    let routed = |d: GroupDef| GroupDef { service: true, ..d };
    vec![
        routed(def("bbm", true, None, "podium.dev/role", 4, true)),
        routed(def(
            "bbm-every2s",
            true,
            Some("@every 2s"),
            "podium.dev/role",
            4,
            false,
        )),
        def(
            "bbm-every5s",
            true,
            Some("@every 5s"),
            "podium.dev/role",
            3,
            false,
        ),
        def("mbb", false, None, "chaos.example/role", 3, true),
        routed(def(
            "mbb-every3s",
            false,
            Some("@every 3s"),
            "podium.dev/role",
            5,
            false,
        )),
        def(BARRIER_GROUP, true, None, "podium.dev/role", 1, false),
    ]
}

/// The ElectionGroup API resource, built by hand so that the harness does not depend on
/// the operator's Rust types.
pub fn group_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("podium.dev", "v1alpha1", "ElectionGroup"),
        "electiongroups",
    )
}

/// The namespace of a run and the writes the injector makes in it. Writes return errors
/// instead of panicking: a fault may make the API server briefly unavailable.
pub struct World {
    /// The run's namespace (deleted on drop).
    pub ns: TestNs,
    /// The groups.
    pub defs: Vec<GroupDef>,
    /// The node whose kubelet the harness plays (deleted on drop).
    pub node: FakeKubelet,
    seq: AtomicU32,
}

impl World {
    /// Installs the CRD, creates the namespace and the harness's node.
    pub async fn new(defs: Vec<GroupDef>) -> Self {
        let crd = format!("{}/crds/electiongroup.yaml", env!("CARGO_MANIFEST_DIR"));
        kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &crd]);
        kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/electiongroups.podium.dev",
            "--timeout=60s",
        ]);
        let ns = TestNs::new("chaos").await;
        let node = FakeKubelet::start(&format!("{}-node", ns.name))
            .await
            .expect("create the harness's node");
        Self {
            ns,
            defs,
            node,
            seq: AtomicU32::new(0),
        }
    }

    /// The ElectionGroup API of the namespace.
    pub fn groups(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.ns.client.clone(), &self.ns.name, &group_resource())
    }

    /// The Pod API of the namespace.
    pub fn pods(&self) -> Api<Pod> {
        self.ns.api()
    }

    /// The EndpointSlice API of the namespace.
    pub fn slices(&self) -> Api<EndpointSlice> {
        self.ns.api()
    }

    /// Creates the barrier slice, every group and its initial members.
    pub async fn populate(&self) -> Result<(), kube::Error> {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": BARRIER_SLICE},
            "addressType": "IPv4",
            "endpoints": [],
        }))
        .expect("barrier slice manifest");
        self.slices().create(&PostParams::default(), &slice).await?;
        for def in &self.defs {
            for _ in 0..def.pods {
                self.create_member(def.name).await?;
            }
            self.create_group(def).await?;
        }
        Ok(())
    }

    async fn create_group(&self, def: &GroupDef) -> Result<(), kube::Error> {
        let mut handoff = json!({"mode": if def.break_before_make { "BreakBeforeMake" } else { "MakeBeforeBreak" }});
        if let Some(s) = def.schedule {
            handoff["schedule"] = json!(s);
        }
        let mut spec = json!({
            "selector": {"matchLabels": {APP: def.name}},
            "roleLabel": def.role_label,
            "handoff": handoff,
        });
        if def.node_member {
            spec["nodeLossSeconds"] = json!(NODE_LOSS_SECONDS);
        }
        if def.service {
            spec["service"] = json!({"ports": [{"port": 80, "targetPort": 8080}]});
        }
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "podium.dev/v1alpha1",
            "kind": "ElectionGroup",
            "metadata": {
                "name": def.name,
                "labels": {KEEP: "1"},
                "annotations": {KEEP: "1"},
                "finalizers": [KEEP],
            },
            "spec": spec,
        }))
        .expect("group manifest");
        self.groups().create(&PostParams::default(), &obj).await?;
        Ok(())
    }

    /// Creates a pod that `selector_value` selects (a group name, or [`STRAY`]): on the
    /// harness's node when the group keeps a member there and has none (its member there was
    /// deleted), else on kwok's.
    pub async fn create_member(&self, selector_value: &str) -> Result<String, kube::Error> {
        let name = format!(
            "{selector_value}-{}",
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let pod = pod_manifest(&name, &[(APP, selector_value), (KEEP, "1")], &[(KEEP, "1")]);
        if self.lacks_node_member(selector_value).await? {
            self.node.create_pod(&self.pods(), pod).await?;
        } else {
            self.pods().create(&PostParams::default(), &pod).await?;
        }
        Ok(name)
    }

    async fn lacks_node_member(&self, selector_value: &str) -> Result<bool, kube::Error> {
        let keeps = self
            .defs
            .iter()
            .any(|d| d.name == selector_value && d.node_member);
        Ok(keeps && self.members_on_node(selector_value).await?.is_empty())
    }

    /// Names of the pods whose selector label is `selector_value`.
    pub async fn members(&self, selector_value: &str) -> Result<Vec<String>, kube::Error> {
        self.live_names(ListParams::default().labels(&format!("{APP}={selector_value}")))
            .await
    }

    /// Names of those pods that are on the harness's node.
    pub async fn members_on_node(&self, selector_value: &str) -> Result<Vec<String>, kube::Error> {
        let lp = ListParams::default()
            .labels(&format!("{APP}={selector_value}"))
            .fields(&format!("spec.nodeName={}", self.node.name()));
        self.live_names(lp).await
    }

    /// Names of the listed pods that are not terminating.
    async fn live_names(&self, lp: ListParams) -> Result<Vec<String>, kube::Error> {
        let pods = self.pods().list(&lp).await?;
        Ok(pods
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name)
            .collect())
    }

    /// The pod the group's status names as leader.
    pub async fn leader(&self, group: &str) -> Result<Option<String>, kube::Error> {
        let g = self.groups().get(group).await?;
        Ok(g.data["status"]["leader"].as_str().map(str::to_string))
    }

    /// Sets a pod's Ready condition, as a kubelet would.
    pub async fn set_ready(&self, pod: &str, ready: bool) -> Result<(), kube::Error> {
        let status = if ready { "True" } else { "False" };
        let now = jiff::Timestamp::now().to_string();
        let patch = json!({"status": {"conditions": [
            {"type": "Ready", "status": status, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
        ]}});
        self.pods()
            .patch_status(pod, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
        Ok(())
    }

    /// Deletes a pod, at once (`grace` 0) or gracefully.
    pub async fn delete_pod(&self, pod: &str, grace: Option<u32>) -> Result<(), kube::Error> {
        let dp = match grace {
            Some(g) => DeleteParams::default().grace_period(g),
            None => DeleteParams::default(),
        };
        self.pods().delete(pod, &dp).await?;
        Ok(())
    }

    /// Sets the pod's selector label, moving it into or out of a group.
    pub async fn relabel(&self, pod: &str, selector_value: &str) -> Result<(), kube::Error> {
        let patch = json!({"metadata": {"labels": {APP: selector_value}}});
        self.pods()
            .patch(pod, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    /// Touches the group (an annotation of the harness's), so that podium reconciles it now.
    pub async fn poke(&self, group: &str) -> Result<(), kube::Error> {
        let at = jiff::Timestamp::now().to_string();
        let patch = json!({"metadata": {"annotations": {POKE: at}}});
        self.groups()
            .patch(group, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    /// Requests a manual handoff (`any` or a pod name).
    pub async fn request_handoff(&self, group: &str, to: &str) -> Result<(), kube::Error> {
        let patch = json!({"metadata": {"annotations": {"podium.dev/handoff-to": to}}});
        self.groups()
            .patch(group, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    /// Writes barrier `n` on the barrier pod, group and slice, so the checker can tell when
    /// its watches have seen everything written before.
    pub async fn barrier(&self, n: u64) -> Result<(), kube::Error> {
        let patch = Patch::Merge(json!({"metadata": {"annotations": {BARRIER: n.to_string()}}}));
        let pp = PatchParams::default();
        let pod = self.members(BARRIER_GROUP).await?;
        if let Some(pod) = pod.first() {
            self.pods().patch(pod, &pp, &patch).await?;
        }
        self.groups().patch(BARRIER_GROUP, &pp, &patch).await?;
        self.slices().patch(BARRIER_SLICE, &pp, &patch).await?;
        Ok(())
    }

    /// Removes the harness's finalizer from every group and deletes them, so the namespace
    /// can go; retried because podium may be editing the same finalizer list.
    pub async fn teardown(&self) {
        let api = self.groups();
        for _ in 0..20 {
            let Ok(list) = api.list(&ListParams::default()).await else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let mut pending = false;
            for mut g in list.items {
                let keep: Vec<String> = g
                    .metadata
                    .finalizers
                    .take()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|f| f != KEEP)
                    .collect();
                // Guarded by the resourceVersion: never drop podium's finalizer edits made
                // in between.
                let body = json!({"metadata": {"finalizers": keep, "resourceVersion": g.metadata.resource_version}});
                let name = g.metadata.name.clone().unwrap_or_default();
                pending |= api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(body))
                    .await
                    .is_err();
                let _ = api.delete(&name, &DeleteParams::default()).await;
            }
            if !pending {
                return;
            }
        }
    }
}
