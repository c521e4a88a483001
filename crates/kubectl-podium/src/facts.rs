//! What the plugin reads about a group, as plain data: the group, the namespace's pods and
//! groups, node Leases and PromotionFailed Events. No I/O here; `cluster` fills it in.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use podium_api::{ElectionGroup, GROUP_ANNOTATION, PRIORITY_ANNOTATION, TERM_ANNOTATION};

/// How long podium passes over a pod whose promotion failed three times in a row.
pub const PASSED_OVER_SECONDS: i64 = 300;

/// Everything read about one namespace at one instant.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The namespace.
    pub namespace: String,
    /// Every ElectionGroup of the namespace.
    pub groups: Vec<ElectionGroup>,
    /// Every pod of the namespace.
    pub pods: Vec<Pod>,
    /// When each node's Lease (namespace `kube-node-lease`) was last renewed, by node name.
    pub node_leases: BTreeMap<String, Timestamp>,
    /// Why node Leases could not be read, when they could not.
    pub node_leases_unread: Option<String>,
    /// PromotionFailed Events on groups: (group, message, when).
    pub promotion_failures: Vec<(String, String, Timestamp)>,
    /// Why Events could not be read, when they could not.
    pub events_unread: Option<String>,
    /// When the facts were read.
    pub now: Timestamp,
}

/// One pod, reduced to what decides its standing.
#[derive(Debug, Clone, PartialEq)]
pub struct PodFacts {
    /// Name.
    pub name: String,
    /// Creation time.
    pub created: Option<Timestamp>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The Ready condition is True.
    pub ready: bool,
    /// When the Ready condition last changed.
    pub ready_changed: Option<Timestamp>,
    /// A deletionTimestamp is set.
    pub terminating: bool,
    /// The node it runs on.
    pub node: Option<String>,
    /// `podium.dev/priority`, 0 when absent or not an integer (as podium reads it).
    pub priority: i64,
    /// `podium.dev/group`.
    pub group: Option<String>,
    /// `podium.dev/term`, when it is an integer.
    pub term: Option<i64>,
}

impl PodFacts {
    /// Reduces a pod as the API server sent it.
    pub fn of(pod: &Pod) -> Self {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        let annotations = pod.annotations();
        Self {
            name: pod.name_any(),
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
            labels: pod.labels().clone(),
            ready: ready.is_some_and(|c| c.status == "True"),
            ready_changed: ready.and_then(|c| c.last_transition_time.as_ref().map(|t| t.0)),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            priority: annotations
                .get(PRIORITY_ANNOTATION)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
            group: annotations.get(GROUP_ANNOTATION).cloned(),
            term: annotations
                .get(TERM_ANNOTATION)
                .and_then(|v| v.trim().parse().ok()),
        }
    }
}

/// A group's selector, parsed as podium parses it: `None` when it is invalid or selects all.
pub fn selector(group: &ElectionGroup) -> Option<Selector> {
    Selector::try_from(group.spec.selector.clone())
        .ok()
        .filter(|s| !s.selects_all())
}

/// The group's selector in the `key=value,…` form of `kubectl get -l`.
pub fn selector_text(group: &ElectionGroup) -> String {
    match selector(group) {
        Some(s) => s.to_string(),
        None => "(invalid or empty)".to_string(),
    }
}

/// `a` is older than `b` (ties broken by name), so it keeps pods both select.
pub fn outranks(a: &ElectionGroup, b: &ElectionGroup) -> bool {
    let key = |g: &ElectionGroup| {
        (
            g.metadata.creation_timestamp.as_ref().map(|t| t.0),
            g.name_any(),
        )
    };
    key(a) < key(b)
}

impl Facts {
    /// The group of this name, if the namespace has it.
    pub fn group(&self, name: &str) -> Option<&ElectionGroup> {
        self.groups.iter().find(|g| g.name_any() == name)
    }

    /// The other groups that select a pod with these labels: (older ones, newer ones).
    pub fn rivals(
        &self,
        me: &ElectionGroup,
        labels: &BTreeMap<String, String>,
    ) -> (Vec<String>, Vec<String>) {
        let mut older = Vec::new();
        let mut newer = Vec::new();
        for other in &self.groups {
            if other.name_any() == me.name_any()
                || !selector(other).is_some_and(|s| s.matches(labels))
            {
                continue;
            }
            if outranks(other, me) {
                older.push(other.name_any());
            } else {
                newer.push(other.name_any());
            }
        }
        (older, newer)
    }

    /// Pods named in PromotionFailed Events on this group in the last five minutes, with when.
    pub fn promotion_failures(&self, group: &str) -> BTreeMap<String, Timestamp> {
        let mut out = BTreeMap::new();
        for (g, message, at) in &self.promotion_failures {
            let recent = self.now.duration_since(*at).as_secs() < PASSED_OVER_SECONDS;
            let pod = message
                .strip_prefix("promoting ")
                .and_then(|rest| rest.split_once(" failed"))
                .map(|(pod, _)| pod);
            if let (true, true, Some(pod)) = (g == group, recent, pod) {
                let latest = out.entry(pod.to_string()).or_insert(*at);
                *latest = (*latest).max(*at);
            }
        }
        out
    }
}
