//! Prometheus metrics. Labels stay bounded: reasons, conditions and error kinds, never names.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use podium_api::TransitionReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteWrite {
    kind: &'static str,
    verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

/// The parts of a failover before its leadership writes are acknowledged, each timed apart.
#[derive(Clone, Copy, Debug)]
pub enum FailoverStage {
    /// From the pod change that took the leader away, as podium's watch delivered it, to the
    /// failover's reconcile holding the group.
    Queued,
    /// Waiting for one of the `--failover-concurrency` slots of failovers moving leadership.
    Slot,
    /// From the slot to the leadership writes acknowledged (deciding, and status first when
    /// the new leader was not reserved).
    Moving,
}

impl FailoverStage {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Slot => "slot",
            Self::Moving => "moving",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    condition: &'static str,
    status: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Outcome, Counter>,
    leader_changes: Family<Reason, Counter>,
    failover: Histogram,
    failover_stages: Family<StageLabels, Histogram>,
    pod_writes: Counter,
    status_writes: Counter,
    route_writes: Family<RouteWrite, Counter>,
    conflicts: Counter,
    forged_roles: Counter,
    events_dropped: Counter,
    failover_priority: Counter<f64, AtomicU64>,
    groups: Family<ConditionLabels, Gauge>,
    group_ready: Mutex<HashMap<String, String>>,
    active: Gauge,
    node_lease_watches: Gauge,
    node_lease_watches_failing: Gauge,
}

/// 1 ms to about 32 s.
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("podium");
        let reconciles = Family::<Outcome, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles of ElectionGroups, by result and error kind",
            reconciles.clone(),
        );
        let leader_changes = Family::<Reason, Counter>::default();
        registry.register(
            "leader_changes",
            "Changes of leader, by reason",
            leader_changes.clone(),
        );
        let failover = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "failover_duration_seconds",
            "From a leader becoming unfit (Ready lost past the tolerance, or the reconcile that saw it deleted or terminating) to the plan that replaces it applied in full (the new leader's label and the status that records it acknowledged)",
            failover.clone(),
        );
        let failover_stages =
            Family::<StageLabels, Histogram>::new_with_constructor(stage_histogram as fn() -> _);
        registry.register(
            "failover_stage_seconds",
            "The parts of a failover's reconcile up to its leadership writes acknowledged, once per pass that takes a failover slot: queued (from podium's watch delivering the change to the reconcile holding the group; first pass only), slot (waiting for a failover slot), moving (to the leadership writes acknowledged; passes that move none are not counted)",
            failover_stages.clone(),
        );
        let pod_writes = Counter::default();
        registry.register(
            "pod_writes",
            "Label and annotation writes on pods",
            pod_writes.clone(),
        );
        let status_writes = Counter::default();
        registry.register(
            "status_writes",
            "Status writes on ElectionGroups",
            status_writes.clone(),
        );
        let route_writes = Family::<RouteWrite, Counter>::default();
        registry.register(
            "route_writes",
            "Writes of the owned route's Services and EndpointSlices, by kind (service, endpointslice) and verb (create, update, delete)",
            route_writes.clone(),
        );
        let conflicts = Counter::default();
        registry.register(
            "write_conflicts",
            "Decisions made again because a write's resourceVersion or UID precondition failed or its object was gone",
            conflicts.clone(),
        );
        let forged_roles = Counter::default();
        registry.register(
            "forged_role_labels",
            "Members found labelled leader by someone else (not the leader status records, no term podium would believe), each put back to follower",
            forged_roles.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Events not written because the queue of Events to write was full",
            events_dropped.clone(),
        );
        let failover_priority = Counter::<f64, AtomicU64>::default();
        registry.register(
            "failover_priority_seconds",
            "Time during which at least one failover's reconcile had not yet moved leadership (waiting for a failover slot, or moving it): the window in which routine writes and Events that come up wait (each at most 1 s), not the time any of them waited",
            failover_priority.clone(),
        );
        let groups = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "groups",
            "ElectionGroups by Ready condition status",
            groups.clone(),
        );
        let active = Gauge::default();
        registry.register(
            "active",
            "1 while this replica is the active controller",
            active.clone(),
        );
        let node_lease_watches = Gauge::default();
        registry.register(
            "node_lease_watches",
            "Node Leases watched for node loss (nodes hosting leaders and reserved successors)",
            node_lease_watches.clone(),
        );
        let node_lease_watches_failing = Gauge::default();
        registry.register(
            "node_lease_watches_failing",
            "Node Lease watches not answering: node loss cannot be detected on those nodes",
            node_lease_watches_failing.clone(),
        );
        Self {
            registry,
            reconciles,
            leader_changes,
            failover,
            failover_stages,
            pod_writes,
            status_writes,
            route_writes,
            conflicts,
            forged_roles,
            events_dropped,
            failover_priority,
            groups,
            group_ready: Mutex::default(),
            active,
            node_lease_watches,
            node_lease_watches_failing,
        }
    }
}

impl Metrics {
    /// Counts one reconcile; `error` is the error kind when it failed.
    pub fn reconciled(&self, error: Option<&'static str>) {
        let outcome = match error {
            None => Outcome {
                result: "ok",
                kind: "",
            },
            Some(kind) => Outcome {
                result: "error",
                kind,
            },
        };
        self.reconciles.get_or_create(&outcome).inc();
    }

    /// Counts a change of leader.
    pub fn leader_changed(&self, reason: TransitionReason) {
        self.leader_changes
            .get_or_create(&Reason {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The counter of time at least one failover was moving leadership, for the write slots.
    pub fn failover_priority(&self) -> Counter<f64, AtomicU64> {
        self.failover_priority.clone()
    }

    /// Records how long a failover took, in seconds.
    pub fn failover_took(&self, seconds: f64) {
        self.failover.observe(seconds.max(0.0));
    }

    /// Records how long one part of a failover took.
    pub fn failover_stage(&self, stage: FailoverStage, took: std::time::Duration) {
        self.failover_stages
            .get_or_create(&StageLabels {
                stage: stage.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one pod write.
    pub fn pod_written(&self) {
        self.pod_writes.inc();
    }

    /// Counts one status write.
    pub fn status_written(&self) {
        self.status_writes.inc();
    }

    /// Counts one write of the owned route (`kind` and `verb` come from a fixed set).
    pub fn route_written(&self, kind: &'static str, verb: &'static str) {
        self.route_writes
            .get_or_create(&RouteWrite { kind, verb })
            .inc();
    }

    /// Counts a write whose precondition failed.
    pub fn conflict(&self) {
        self.conflicts.inc();
    }

    /// Counts a member found labelled leader by someone else.
    pub fn forged_role(&self) {
        self.forged_roles.inc();
    }

    /// Counts an Event dropped because the queue of Events to write was full.
    pub fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    /// Records a group's Ready condition status (`True`, `False`, `Unknown`), or `None` once it is gone.
    pub fn group_ready(&self, group: &str, status: Option<&str>) {
        let mut known = self.group_ready.lock().unwrap_or_else(|p| p.into_inner());
        let before = match status {
            Some(s) => known.insert(group.to_string(), s.to_string()),
            None => known.remove(group),
        };
        if before.as_deref() == status {
            return;
        }
        let labels = |s: &str| ConditionLabels {
            condition: "Ready",
            status: s.to_string(),
        };
        if let Some(b) = before {
            self.groups.get_or_create(&labels(&b)).dec();
        }
        if let Some(s) = status {
            self.groups.get_or_create(&labels(s)).inc();
        }
    }

    /// How many node Leases are watched, and how many of those watches are not answering.
    pub fn node_lease_watches(&self, watched: usize, failing: usize) {
        self.node_lease_watches
            .set(i64::try_from(watched).unwrap_or(i64::MAX));
        self.node_lease_watches_failing
            .set(i64::try_from(failing).unwrap_or(i64::MAX));
    }

    /// Marks whether this replica is the active controller.
    pub fn set_active(&self, active: bool) {
        self.active.set(i64::from(active));
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_counters_and_group_gauges() {
        let m = Metrics::default();
        m.reconciled(None);
        m.reconciled(Some("forbidden"));
        m.leader_changed(TransitionReason::Failover);
        m.group_ready("ns/a", Some("True"));
        m.group_ready("ns/b", Some("True"));
        m.group_ready("ns/b", Some("False"));
        m.group_ready("ns/a", None);
        m.failover_stage(FailoverStage::Slot, std::time::Duration::from_millis(3));
        let text = m.encode();
        assert!(
            text.contains(r#"podium_failover_stage_seconds_bucket{le="0.004",stage="slot"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"podium_failover_stage_seconds_bucket{le="0.002",stage="slot"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"podium_reconciles_total{result="error",kind="forbidden"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"podium_leader_changes_total{reason="Failover"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"podium_groups{condition="Ready",status="True"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"podium_groups{condition="Ready",status="False"} 1"#),
            "{text}"
        );
    }
}
