//! The checker's own record of every state its watches saw, and the invariants checked on
//! each of those states. It reads only what the API server serves, never the operator.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::DynamicObject;
use serde::Serialize;
use serde_json::{Value, json};

use super::route::{self, Finding, Named, Routes};
use super::setup::{APP, BARRIER, GroupDef, KEEP};
use crate::support::pod_ready;

/// podium's annotations and role value, spelled out here rather than imported from the
/// operator so that the checker shares nothing with what it checks.
pub const TERM: &str = "podium.dev/term";
/// The annotation podium writes on every member it manages.
pub const GROUP: &str = "podium.dev/group";
/// The role label value of a leader.
pub const LEADER: &str = "leader";

/// A leadership as the checker saw it: the pod, its UID and its term.
#[derive(Clone, Debug)]
pub struct Held {
    /// Pod name.
    pub pod: String,
    /// Pod UID.
    pub uid: String,
    /// The term on the pod.
    pub term: i64,
}

/// A group's `status.lastTransition`, as far as the checker reads it.
#[derive(Clone, Debug)]
pub struct Transition {
    /// The leader status names now.
    pub to: String,
    /// `lastTransition.from`.
    pub from: Option<String>,
    /// `lastTransition.reason`.
    pub reason: Option<String>,
}

/// One broken invariant.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// Number of the invariant (see `e2e/chaos/mod.rs`).
    pub invariant: u8,
    /// The group it concerns ("" for none).
    pub group: String,
    /// What was seen.
    pub detail: String,
    /// Milliseconds since the run started.
    pub at: u64,
    /// The fault in progress or most recently injected.
    pub fault: String,
}

/// A stretch of time in which a watch may have missed states (it had to relist).
#[derive(Clone, Debug, Serialize)]
pub struct Gap {
    /// `pods`, `groups` or `slices`.
    pub stream: &'static str,
    /// When the watch broke, in milliseconds since the start.
    pub from: u64,
    /// When the relist restored a complete state.
    pub to: u64,
    /// Why the watch could not resume.
    pub reason: String,
    /// The fault in progress.
    pub fault: String,
}

/// What the checker tracks per group across states.
#[derive(Default)]
struct Track {
    /// Which pod (UID) first carried each term as leader.
    term_owner: BTreeMap<i64, String>,
    /// Pods (UID) labelled leader in the current state, with their term.
    leaders: BTreeMap<String, Option<i64>>,
    /// Highest term seen on a leader.
    max_term: i64,
    /// Highest `status.term` seen.
    max_status_term: i64,
    /// More than one leader in the current state (reported once per episode).
    double: bool,
    /// The current state is settled (see [`History::settled`]).
    settled: bool,
    /// When the group last stopped being settled.
    settled_until: Option<Instant>,
}

/// Every watched state, and the verdicts on them.
pub struct History {
    start: Instant,
    rules: BTreeMap<String, GroupDef>,
    pods: BTreeMap<String, Pod>,
    groups: BTreeMap<String, DynamicObject>,
    tracks: BTreeMap<String, Track>,
    /// The EndpointSlices, and the owned routes judged on them.
    pub routes: Routes,
    reported: BTreeSet<String>,
    /// Invariant violations, in the order seen.
    pub violations: Vec<Violation>,
    /// Stretches where a watch relisted instead of resuming.
    pub gaps: Vec<Gap>,
    /// Watches that ended or failed and were resumed from their resourceVersion.
    pub resumes: u64,
    /// Watch events applied.
    pub events: u64,
    /// One compact line per watched change, written to `history.jsonl`.
    pub records: Vec<Value>,
    /// The fault in progress, for attributing violations.
    pub fault: String,
    /// Set when a watch could not be restored: the checker is blind and the run must fail.
    pub fatal: Option<String>,
    /// Since when every group is settled, if it is now.
    all_settled_since: Option<Instant>,
    /// Highest barrier value seen on the barrier pod and group.
    pub barrier_pod: u64,
    /// Highest barrier value seen on the barrier group.
    pub barrier_group: u64,
}

impl History {
    /// An empty history for these groups.
    pub fn new(start: Instant, defs: &[GroupDef]) -> Self {
        Self {
            start,
            rules: defs
                .iter()
                .map(|d| (d.name.to_string(), d.clone()))
                .collect(),
            pods: BTreeMap::new(),
            groups: BTreeMap::new(),
            tracks: defs
                .iter()
                .map(|d| (d.name.to_string(), Track::default()))
                .collect(),
            routes: Routes::new(defs),
            reported: BTreeSet::new(),
            violations: Vec::new(),
            gaps: Vec::new(),
            resumes: 0,
            events: 0,
            records: Vec::new(),
            fault: "setup".into(),
            fatal: None,
            all_settled_since: None,
            barrier_pod: 0,
            barrier_group: 0,
        }
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Records a violation; `key` suppresses repeats of the same finding.
    pub fn violate(&mut self, invariant: u8, group: &str, key: &str, detail: String) {
        if !self.reported.insert(format!("{invariant}/{group}/{key}")) {
            return;
        }
        println!("chaos: VIOLATION of invariant {invariant} in {group:?}: {detail}");
        self.violations.push(Violation {
            invariant,
            group: group.to_string(),
            detail,
            at: self.now_ms(),
            fault: self.fault.clone(),
        });
    }

    /// Names of the pods in the current state.
    pub fn pod_names(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    /// Names of the groups in the current state.
    pub fn group_names(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// The current state of the pods.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values()
    }

    /// The group a pod counts for: the one podium says it manages it for, else the one
    /// whose selector label it carries.
    fn group_of(&self, p: &Pod) -> Option<&GroupDef> {
        let by_annotation = p.annotations().get(GROUP).and_then(|g| self.rules.get(g));
        by_annotation.or_else(|| p.labels().get(APP).and_then(|g| self.rules.get(g)))
    }

    /// The pod is labelled leader in its group, and the term it carries.
    fn leadership(&self, p: &Pod) -> Option<(String, Option<i64>)> {
        let def = self.group_of(p)?;
        (p.labels().get(def.role_label).map(String::as_str) == Some(LEADER)).then(|| {
            let term = p.annotations().get(TERM).and_then(|t| t.parse().ok());
            (def.name.to_string(), term)
        })
    }

    /// Applies an added or modified pod.
    pub fn apply_pod(&mut self, p: Pod) {
        self.events += 1;
        if let Some(b) = p.annotations().get(BARRIER).and_then(|b| b.parse().ok()) {
            self.barrier_pod = self.barrier_pod.max(b);
        }
        self.record_pod("apply", &p);
        self.check_keep_pod(&p);
        let uid = p.uid().unwrap_or_default();
        let before = self
            .tracks
            .iter()
            .find_map(|(g, t)| t.leaders.get(&uid).map(|term| (g.clone(), *term)));
        // A pod may have moved between groups (annotation changed): forget its old role.
        for track in self.tracks.values_mut() {
            track.leaders.remove(&uid);
        }
        if let Some((group, term)) = self.leadership(&p) {
            let continuing = term.is_some() && before == Some((group.clone(), term));
            self.check_term(&group, &p, term, continuing);
        }
        self.pods.insert(p.name_any(), p);
        self.evaluate();
    }

    /// Applies a deleted pod.
    pub fn delete_pod(&mut self, name: &str) {
        self.events += 1;
        if let Some(p) = self.pods.remove(name) {
            self.record_pod("delete", &p);
            let uid = p.uid().unwrap_or_default();
            for track in self.tracks.values_mut() {
                track.leaders.remove(&uid);
            }
        }
        self.evaluate();
    }

    /// Applies an added or modified ElectionGroup.
    pub fn apply_group(&mut self, g: DynamicObject) {
        self.events += 1;
        if let Some(b) = g.annotations().get(BARRIER).and_then(|b| b.parse().ok()) {
            self.barrier_group = self.barrier_group.max(b);
        }
        let name = g.name_any();
        let status = &g.data["status"];
        self.records.push(json!({
            "t": self.now_ms(), "kind": "group", "op": "apply", "name": name,
            "rv": g.resource_version(), "leader": status["leader"], "term": status["term"],
            "reason": status["lastTransition"]["reason"],
            "handoff": g.annotations().get("podium.dev/handoff-to"),
        }));
        self.check_keep_group(&g);
        let term = status["term"].as_i64().unwrap_or(0);
        if let Some(track) = self.tracks.get_mut(&name) {
            let before = track.max_status_term;
            track.max_status_term = before.max(term);
            if term < before {
                let detail = format!("status.term went down from {before} to {term}");
                self.violate(3, &name, &format!("status-{before}-{term}"), detail);
            }
        }
        self.groups.insert(name, g);
        self.evaluate();
    }

    /// Applies a deleted ElectionGroup.
    pub fn delete_group(&mut self, name: &str) {
        self.events += 1;
        self.groups.remove(name);
        self.records
            .push(json!({"t": self.now_ms(), "kind": "group", "op": "delete", "name": name}));
        self.evaluate();
    }

    /// Applies an added or modified EndpointSlice.
    pub fn apply_slice(&mut self, s: EndpointSlice) {
        self.records.push(route::record("apply", &s, self.now_ms()));
        let found = self.routes.apply(s);
        self.route_changed(1, found);
    }

    /// Applies a deleted EndpointSlice.
    pub fn delete_slice(&mut self, name: &str) {
        self.records.push(route::record_delete(name, self.now_ms()));
        let found = self.routes.delete(name);
        self.route_changed(1, found);
    }

    /// Makes the relisted EndpointSlices the current state, as one state.
    pub fn replace_slices(&mut self, listed: Vec<EndpointSlice>) {
        let t = self.now_ms();
        self.records
            .extend(listed.iter().map(|s| route::record("relist", s, t)));
        let n = listed.len() as u64;
        let found = self.routes.replace(listed);
        self.route_changed(n, found);
    }

    /// Counts `events` slice events, reports invariant 9's findings and judges the state.
    fn route_changed(&mut self, events: u64, found: Vec<Finding>) {
        self.events += events;
        for f in found {
            self.violate(9, &f.group, &f.key, f.detail);
        }
        self.evaluate();
    }

    /// The leader the group's status names, with what the current state shows of its pod.
    fn named_leader(&self, group: &str) -> Option<Named> {
        let pod = self.groups.get(group)?.data["status"]["leader"].as_str()?;
        let state = self.pods.get(pod);
        Some(Named {
            pod: pod.to_string(),
            pod_state: state.map(|p| (p.uid().unwrap_or_default(), route::pod_ips(p))),
        })
    }

    fn record_pod(&mut self, op: &str, p: &Pod) {
        let role = self
            .group_of(p)
            .and_then(|d| p.labels().get(d.role_label).cloned());
        self.records.push(json!({
            "t": self.now_ms(), "kind": "pod", "op": op, "name": p.name_any(),
            "uid": p.uid(), "rv": p.resource_version(), "app": p.labels().get(APP),
            "group": p.annotations().get(GROUP), "role": role, "term": p.annotations().get(TERM),
            "ready": pod_ready(p), "deleting": p.metadata.deletion_timestamp.is_some(),
            "node": node_of(p),
        }));
    }

    /// Invariants 2 and 3 for a pod seen labelled leader of `group` with `term`;
    /// `continuing` when the previous state already showed it leading with that term.
    fn check_term(&mut self, group: &str, p: &Pod, term: Option<i64>, continuing: bool) {
        let uid = p.uid().unwrap_or_default();
        let name = p.name_any();
        let track = self.tracks.get_mut(group).expect("known group");
        track.leaders.insert(uid.clone(), term);
        let Some(term) = term else { return };
        let owner = track
            .term_owner
            .entry(term)
            .or_insert_with(|| uid.clone())
            .clone();
        let max_before = track.max_term;
        track.max_term = max_before.max(term);
        if owner != uid {
            let detail =
                format!("term {term} carried by {name} ({uid}) and earlier by pod {owner}");
            self.violate(2, group, &format!("{term}-{uid}"), detail);
        }
        // A continuing leadership was checked when it began.
        if !continuing && term <= max_before {
            let detail = format!(
                "{name} became leader with term {term}, not above the highest term seen before ({max_before})"
            );
            self.violate(3, group, &format!("{term}-{uid}"), detail);
        }
    }

    /// Invariant 6 on a pod: the harness's own label and annotation are untouched.
    fn check_keep_pod(&mut self, p: &Pod) {
        let label = p.labels().get(KEEP).map(String::as_str);
        let annotation = p.annotations().get(KEEP).map(String::as_str);
        if label != Some("1") || annotation != Some("1") {
            let detail = format!(
                "pod {} has foreign label {label:?} and annotation {annotation:?}, both should be \"1\"",
                p.name_any()
            );
            self.violate(6, "", &p.uid().unwrap_or_default(), detail);
        }
    }

    /// Invariant 6 on a group: the harness's label, annotation and finalizer are untouched.
    fn check_keep_group(&mut self, g: &DynamicObject) {
        let label = g.labels().get(KEEP).map(String::as_str);
        let annotation = g.annotations().get(KEEP).map(String::as_str);
        let finalizer = g.finalizers().iter().any(|f| f == KEEP);
        let mut changed = Vec::new();
        if label != Some("1") {
            changed.push(format!("label {KEEP} is {label:?}"));
        }
        if annotation != Some("1") {
            changed.push(format!("annotation {KEEP} is {annotation:?}"));
        }
        if !finalizer {
            changed.push(format!(
                "finalizer {KEEP} removed (finalizers now {:?})",
                g.finalizers()
            ));
        }
        if !changed.is_empty() {
            let detail = format!("foreign metadata changed: {}", changed.join(", "));
            self.violate(6, &g.name_any(), "keep", detail);
        }
    }

    /// Pods labelled leader of `group` in the current state.
    fn leaders_of(&self, group: &str) -> Vec<&Pod> {
        self.pods
            .values()
            .filter(|p| self.leadership(p).is_some_and(|(g, _)| g == group))
            .collect()
    }

    /// A pod that may lead `group`: selected, Ready and not terminating.
    fn candidate(p: &Pod, group: &str) -> bool {
        p.labels().get(APP).map(String::as_str) == Some(group)
            && pod_ready(p)
            && p.metadata.deletion_timestamp.is_none()
    }

    /// The group has a Ready candidate in the current state.
    pub fn has_candidate(&self, group: &str) -> bool {
        self.pods.values().any(|p| Self::candidate(p, group))
    }

    /// A group is settled when it has no candidate, or exactly one leader that is a
    /// candidate, and its status names that pod (name and UID) and its term.
    pub fn settled(&self, group: &str) -> bool {
        if !self.has_candidate(group) {
            return true;
        }
        let leaders = self.leaders_of(group);
        let [leader] = leaders.as_slice() else {
            return false;
        };
        let Some(g) = self.groups.get(group) else {
            return false;
        };
        let status = &g.data["status"];
        let term = leader
            .annotations()
            .get(TERM)
            .and_then(|t| t.parse::<i64>().ok());
        Self::candidate(leader, group)
            && status["leader"].as_str() == Some(leader.name_any().as_str())
            && leader_uid(status) == leader.uid().as_deref()
            && term.is_some()
            && status["term"].as_i64() == term
    }

    /// Invariant 1 on the current state, and the settled and routed bookkeeping.
    fn evaluate(&mut self) {
        let now = Instant::now();
        let names: Vec<String> = self.rules.keys().cloned().collect();
        let mut all = true;
        for group in names {
            let leaders: Vec<String> = self
                .leaders_of(&group)
                .iter()
                .map(|p| p.name_any())
                .collect();
            let settled = self.settled(&group);
            all &= settled;
            let bbm = self.rules[&group].break_before_make;
            let track = self.tracks.get_mut(&group).expect("known group");
            let double = leaders.len() > 1;
            let new_double = double && !track.double;
            track.double = double;
            if track.settled && !settled {
                track.settled_until = Some(now);
            }
            track.settled = settled;
            if bbm && new_double {
                let detail = format!(
                    "{} pods labelled leader at once: {leaders:?}",
                    leaders.len()
                );
                let key = format!("{}-{}", self.events, leaders.join(","));
                self.violate(1, &group, &key, detail);
            }
        }
        for group in self.routes.groups() {
            let named = self.named_leader(&group);
            self.routes.judge(&group, named, now);
        }
        match (all, self.all_settled_since) {
            (true, None) => self.all_settled_since = Some(now),
            (false, Some(_)) => self.all_settled_since = None,
            _ => {}
        }
    }

    /// Every group is settled now.
    pub fn all_settled(&self) -> bool {
        self.all_settled_since.is_some()
    }

    /// The group was settled at some instant at or after `t`.
    pub fn settled_since(&self, group: &str, t: Instant) -> bool {
        self.tracks
            .get(group)
            .is_some_and(|tr| tr.settled || tr.settled_until.is_some_and(|u| u >= t))
    }

    /// The group's leader, if status names a pod that the current state shows labelled leader
    /// on `node`.
    pub fn leader_on(&self, group: &str, node: &str) -> Option<Held> {
        let status = &self.groups.get(group)?.data["status"];
        let name = status["leader"].as_str()?;
        let pod = self.pods.get(name)?;
        let (g, term) = self.leadership(pod)?;
        (g == group && node_of(pod) == Some(node)).then(|| Held {
            pod: name.to_string(),
            uid: pod.uid().unwrap_or_default(),
            term: term.unwrap_or(0),
        })
    }

    /// The leader the group's status names, and how it came to lead.
    pub fn transition(&self, group: &str) -> Option<Transition> {
        let status = &self.groups.get(group)?.data["status"];
        let to = status["leader"].as_str()?;
        let last = &status["lastTransition"];
        let text = |v: &Value| v.as_str().map(str::to_string);
        Some(Transition {
            to: to.to_string(),
            from: text(&last["from"]),
            reason: text(&last["reason"]),
        })
    }

    /// Status names no leader and its last transition took leadership from `old` for want of
    /// candidates: it stepped down with nobody to follow it. `to` is empty.
    pub fn stepped_down(&self, group: &str, old: &Held) -> Option<Transition> {
        let status = &self.groups.get(group)?.data["status"];
        let last = &status["lastTransition"];
        let from = last["from"].as_str()?;
        let stepped = last["reason"].as_str() == Some("NoCandidates");
        (status["leader"].is_null() && from == old.pod && stepped).then(|| Transition {
            to: String::new(),
            from: Some(from.to_string()),
            reason: last["reason"].as_str().map(str::to_string),
        })
    }

    /// Ready members of `group` that are not on `node`: those that could have followed a leader
    /// lost with it.
    pub fn candidates_off(&self, group: &str, node: &str) -> Vec<String> {
        self.pods
            .values()
            .filter(|p| Self::candidate(p, group))
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node))
            .map(|p| p.name_any())
            .collect()
    }

    /// `old` leads its group again after it was replaced: status names it, or it carries the
    /// leader label with a term above the one it had.
    pub fn leads_again(&self, group: &str, old: &Held) -> bool {
        let named = self
            .groups
            .get(group)
            .is_some_and(|g| leader_uid(&g.data["status"]) == Some(old.uid.as_str()));
        let labelled = self.pods.get(&old.pod).is_some_and(|p| {
            p.uid().as_deref() == Some(old.uid.as_str())
                && self
                    .leadership(p)
                    .is_some_and(|(g, term)| g == group && term.is_some_and(|t| t > old.term))
        });
        named || labelled
    }

    /// A one-line account of a group's current state, for violation details.
    pub fn describe(&self, group: &str) -> String {
        let leaders: Vec<String> = self
            .leaders_of(group)
            .iter()
            .map(|p| format!("{}(term {:?})", p.name_any(), p.annotations().get(TERM)))
            .collect();
        let status = self.groups.get(group).map(|g| g.data["status"].clone());
        let status = status.unwrap_or_default();
        format!(
            "leaders {leaders:?}; status leader {} term {}; ready candidate: {}",
            status["leader"],
            status["term"],
            self.has_candidate(group)
        )
    }
}

/// The node the pod is bound to.
fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// `status.leaderUID`.
fn leader_uid(status: &Value) -> Option<&str> {
    status["leaderUID"].as_str()
}
