//! The owned route as the checker sees it: the namespace's EndpointSlices, invariant 9 on every
//! state of a route's slices, and the bookkeeping invariant 10 is judged from. It sees no pods
//! or groups: the history hands it the leader a group's status names.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use serde::Serialize;
use serde_json::{Value, json};

use super::setup::{BARRIER, GroupDef};

/// The label by which kube-proxy takes a slice as the Service's, whoever wrote it. podium's
/// labels are spelled out here, not imported, so that the checker shares nothing with what it
/// checks.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming a slice's writer.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// podium's value of [`MANAGED_BY`].
pub const PODIUM: &str = "podium.dev";
/// The label naming the group on the slices podium writes.
pub const GROUP_LABEL: &str = "podium.dev/group";

/// A state of a route that breaks invariant 9.
pub struct Finding {
    /// The group.
    pub group: String,
    /// Suppresses repeats (see `History::violate`).
    pub key: String,
    /// What was listed.
    pub detail: String,
}

/// How much of one group's route the checker saw: the proof that invariants 9 and 10 were
/// judged on something.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SliceStates {
    /// States of the group's slices checked: one per watched change to them (a relist is one).
    pub states: u64,
    /// Of those, states listing at least one address: only these can break invariant 9.
    pub with_address: u64,
    /// Changes of the set of addresses listed: the route following leadership.
    pub changes: u64,
    /// Most distinct addresses of one family listed at once.
    pub most: usize,
}

/// The leader a group's status names, for invariant 10.
pub struct Named {
    /// `status.leader`.
    pub pod: String,
    /// That pod's UID, and its IPs; `None` when the current state has no such pod.
    pub pod_state: Option<(String, BTreeSet<String>)>,
}

/// What the checker tracks per group with a route.
struct Track {
    service: String,
    /// Invariant 9's bound on distinct addresses of one family.
    limit: usize,
    /// The current state exceeds `limit` (reported once per episode).
    over: bool,
    /// Addresses listed in the current state.
    listed: BTreeSet<String>,
    /// The slices list exactly what status names now.
    right: bool,
    /// When they last stopped doing so.
    right_until: Option<Instant>,
    /// Why they do not, as of the last state that was wrong.
    wrong: String,
    seen: SliceStates,
}

/// The EndpointSlices of the namespace, and the routes of the groups with `spec.service`.
pub struct Routes {
    slices: BTreeMap<String, EndpointSlice>,
    tracks: BTreeMap<String, Track>,
    /// Highest barrier value seen on the barrier slice.
    pub barrier: u64,
}

impl Routes {
    /// No slices yet; a track for every group with a service.
    pub fn new(defs: &[GroupDef]) -> Self {
        let track = |d: &GroupDef| Track {
            service: d.service_name(),
            // BreakBeforeMake removes the old leader before it makes the new one; MakeBeforeBreak
            // may list both while it hands over, never a third.
            limit: if d.break_before_make { 1 } else { 2 },
            over: false,
            listed: BTreeSet::new(),
            right: false,
            right_until: None,
            wrong: "no state seen".into(),
            seen: SliceStates::default(),
        };
        Self {
            barrier: 0,
            slices: BTreeMap::new(),
            tracks: defs
                .iter()
                .filter(|d| d.service)
                .map(|d| (d.name.to_string(), track(d)))
                .collect(),
        }
    }

    /// Names of the slices in the current state.
    pub fn names(&self) -> Vec<String> {
        self.slices.keys().cloned().collect()
    }

    /// The groups with a route.
    pub fn groups(&self) -> Vec<String> {
        self.tracks.keys().cloned().collect()
    }

    /// The group whose route the slice belongs to, by its Service label.
    fn group_of(&self, s: &EndpointSlice) -> Option<String> {
        let service = s.labels().get(SERVICE_NAME)?;
        let (group, _) = self.tracks.iter().find(|(_, t)| t.service == *service)?;
        Some(group.clone())
    }

    /// Applies an added or modified slice; invariant 9 on the routes it changed.
    pub fn apply(&mut self, s: EndpointSlice) -> Vec<Finding> {
        self.see_barrier(&s);
        let name = s.name_any();
        let mut touched: BTreeSet<String> = self.group_of(&s).into_iter().collect();
        touched.extend(self.slices.get(&name).and_then(|old| self.group_of(old)));
        self.slices.insert(name, s);
        self.check(touched)
    }

    /// Applies a deleted slice.
    pub fn delete(&mut self, name: &str) -> Vec<Finding> {
        let old = self.slices.remove(name);
        let touched = old.and_then(|s| self.group_of(&s)).into_iter().collect();
        self.check(touched)
    }

    /// Makes the listed slices the current state at once. A relist is one snapshot: applied
    /// piece by piece, it would pair relisted slices with stale ones in states that never
    /// existed, and invariant 9 could count an old and a new leader together.
    pub fn replace(&mut self, listed: Vec<EndpointSlice>) -> Vec<Finding> {
        let before = std::mem::take(&mut self.slices);
        let mut touched: BTreeSet<String> =
            before.values().filter_map(|s| self.group_of(s)).collect();
        touched.extend(listed.iter().filter_map(|s| self.group_of(s)));
        listed.iter().for_each(|s| self.see_barrier(s));
        self.slices = listed.into_iter().map(|s| (s.name_any(), s)).collect();
        self.check(touched)
    }

    fn see_barrier(&mut self, s: &EndpointSlice) {
        if let Some(b) = s.annotations().get(BARRIER).and_then(|b| b.parse().ok()) {
            self.barrier = self.barrier.max(b);
        }
    }

    /// The group's slices: every slice labelled with its Service, by podium or anyone, since
    /// kube-proxy routes to them all.
    fn owned<'a>(&'a self, group: &str) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        let service = self.tracks.get(group).map(|t| t.service.clone());
        self.slices
            .values()
            .filter(move |s| s.labels().get(SERVICE_NAME) == service.as_ref())
    }

    /// Distinct addresses the group's slices list, per address type; every endpoint counts,
    /// whatever its conditions.
    fn addresses(&self, group: &str) -> BTreeMap<String, BTreeSet<String>> {
        let mut by_family: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in self.owned(group) {
            let family = by_family.entry(s.address_type.clone()).or_default();
            family.extend(s.endpoints.iter().flat_map(|e| e.addresses.iter().cloned()));
        }
        by_family
    }

    /// Invariant 9 on the current state of each touched group's slices, which it counts.
    fn check(&mut self, touched: BTreeSet<String>) -> Vec<Finding> {
        let mut found = Vec::new();
        for group in touched {
            let by_family = self.addresses(&group);
            let all: BTreeSet<String> = by_family.values().flatten().cloned().collect();
            let most = by_family.values().map(BTreeSet::len).max().unwrap_or(0);
            let track = self.tracks.get_mut(&group).expect("a group with a route");
            let seen = &mut track.seen;
            seen.states += 1;
            seen.with_address += u64::from(!all.is_empty());
            seen.changes += u64::from(all != track.listed);
            seen.most = seen.most.max(most);
            track.listed = all;
            let over = most > track.limit;
            if over && !track.over {
                found.push(Finding {
                    key: format!("{}-{:?}", seen.states, track.listed),
                    detail: format!(
                        "the slices of {} list {most} addresses of one family at once (at most {}): {by_family:?}",
                        track.service, track.limit
                    ),
                    group,
                });
            }
            track.over = over;
        }
        found
    }

    /// Why the group's slices do not route to exactly the leader status names (`None`: no
    /// leader), if they do not.
    fn mismatch(&self, group: &str, named: Option<&Named>) -> Option<String> {
        let owned: Vec<&EndpointSlice> = self.owned(group).collect();
        for s in &owned {
            let labels = (s.labels().get(MANAGED_BY), s.labels().get(GROUP_LABEL));
            if labels != (Some(&PODIUM.to_string()), Some(&group.to_string())) {
                return Some(format!(
                    "slice {} has {MANAGED_BY} {:?} and {GROUP_LABEL} {:?}",
                    s.name_any(),
                    labels.0,
                    labels.1
                ));
            }
        }
        let listed: BTreeSet<&String> = owned
            .iter()
            .flat_map(|s| &s.endpoints)
            .flat_map(|e| &e.addresses)
            .collect();
        let Some(named) = named else {
            return (!listed.is_empty())
                .then(|| format!("status names no leader, the slices list {listed:?}"));
        };
        let Some((uid, ips)) = &named.pod_state else {
            return Some(format!(
                "status names {}, a pod not in the state",
                named.pod
            ));
        };
        if listed != ips.iter().collect() {
            return Some(format!(
                "the slices list {listed:?}, leader {} has {ips:?}",
                named.pod
            ));
        }
        let endpoints = owned.iter().flat_map(|s| &s.endpoints);
        for e in endpoints {
            let t = e.target_ref.clone().unwrap_or_default();
            let uid_ok = t.uid.as_ref().is_none_or(|u| u == uid);
            if t.name.as_deref() != Some(named.pod.as_str()) || !uid_ok {
                return Some(format!(
                    "endpoint {:?} targets {:?} ({:?}), not leader {} ({uid})",
                    e.addresses, t.name, t.uid, named.pod
                ));
            }
        }
        None
    }

    /// Judges the group's route against the leader status names now (invariant 10's
    /// bookkeeping, like `History::settled`'s).
    pub fn judge(&mut self, group: &str, named: Option<Named>, now: Instant) {
        let wrong = self.mismatch(group, named.as_ref());
        let track = self.tracks.get_mut(group).expect("a group with a route");
        let right = wrong.is_none();
        if track.right && !right {
            track.right_until = Some(now);
        }
        track.right = right;
        if let Some(w) = wrong {
            track.wrong = w;
        }
    }

    /// The group's slices listed exactly its leader at some instant at or after `t`.
    pub fn right_since(&self, group: &str, t: Instant) -> bool {
        self.tracks
            .get(group)
            .is_some_and(|tr| tr.right || tr.right_until.is_some_and(|u| u >= t))
    }

    /// Why the group's route is wrong now (the last wrong state's reason).
    pub fn describe(&self, group: &str) -> String {
        self.tracks
            .get(group)
            .map_or_else(String::new, |t| t.wrong.clone())
    }

    /// What the checker saw of each route.
    pub fn seen(&self) -> BTreeMap<String, SliceStates> {
        self.tracks
            .iter()
            .map(|(g, t)| (g.clone(), t.seen.clone()))
            .collect()
    }
}

/// The pod's IPs (`status.podIPs`, else `status.podIP`).
pub fn pod_ips(p: &Pod) -> BTreeSet<String> {
    let Some(status) = &p.status else {
        return BTreeSet::new();
    };
    let ips = status.pod_ips.iter().flatten().map(|i| i.ip.clone());
    ips.chain(status.pod_ip.clone()).collect()
}

/// The line of `history.jsonl` for a deleted slice.
pub fn record_delete(name: &str, t: u64) -> Value {
    json!({"t": t, "kind": "slice", "op": "delete", "name": name})
}

/// A compact line of `history.jsonl` for a slice change.
pub fn record(op: &str, s: &EndpointSlice, t: u64) -> Value {
    let endpoints: Vec<Value> = s
        .endpoints
        .iter()
        .map(|e| {
            let ready = e.conditions.as_ref().and_then(|c| c.ready);
            let pod = e.target_ref.as_ref().and_then(|r| r.name.clone());
            json!([e.addresses, ready, pod])
        })
        .collect();
    json!({
        "t": t, "kind": "slice", "op": op, "name": s.name_any(), "rv": s.resource_version(),
        "service": s.labels().get(SERVICE_NAME), "endpoints": endpoints,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::chaos::setup::groups;

    /// A slice of `group`'s Service listing `endpoints` (address, pod, ready), as podium writes it.
    fn slice(name: &str, group: &str, endpoints: &[(&str, &str, bool)]) -> EndpointSlice {
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|(ip, pod, ready)| {
                json!({"addresses": [ip], "conditions": {"ready": ready},
                       "targetRef": {"kind": "Pod", "name": pod, "uid": format!("uid-{pod}")}})
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                SERVICE_NAME: format!("{group}-leader"), MANAGED_BY: PODIUM, GROUP_LABEL: group}},
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
        .expect("slice")
    }

    fn leader(pod: &str, ip: &str) -> Option<Named> {
        Some(Named {
            pod: pod.into(),
            pod_state: Some((format!("uid-{pod}"), BTreeSet::from([ip.to_string()]))),
        })
    }

    #[test]
    fn break_before_make_may_not_list_two_addresses_even_unready() {
        let mut r = Routes::new(&groups());
        assert!(
            r.apply(slice("bbm-leader", "bbm", &[("10.0.0.1", "a", true)]))
                .is_empty()
        );
        let two = [("10.0.0.1", "a", false), ("10.0.0.2", "b", true)];
        let found = r.apply(slice("bbm-leader", "bbm", &two));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].group, "bbm");
        // A second slice of the same Service counts too.
        let mut r = Routes::new(&groups());
        r.apply(slice("bbm-leader", "bbm", &[("10.0.0.1", "a", true)]));
        let found = r.apply(slice("other", "bbm", &[("10.0.0.2", "b", true)]));
        assert_eq!(found.len(), 1);
        assert_eq!(r.seen()["bbm"].states, 2);
    }

    #[test]
    fn make_before_break_may_list_two_but_not_three() {
        let mut r = Routes::new(&groups());
        let two = [("10.0.0.1", "a", true), ("10.0.0.2", "b", true)];
        assert!(
            r.apply(slice("mbb-every3s-leader", "mbb-every3s", &two))
                .is_empty()
        );
        let three = [two[0], two[1], ("10.0.0.3", "c", true)];
        assert_eq!(
            r.apply(slice("mbb-every3s-leader", "mbb-every3s", &three))
                .len(),
            1
        );
    }

    #[test]
    fn a_relist_is_one_state() {
        let mut r = Routes::new(&groups());
        r.apply(slice("bbm-leader", "bbm", &[("10.0.0.1", "a", true)]));
        r.apply(slice("bbm-leader-v2", "bbm", &[]));
        // The move from one slice to the other, seen only as a relist: one state, one address.
        let listed = vec![
            slice("bbm-leader", "bbm", &[]),
            slice("bbm-leader-v2", "bbm", &[("10.0.0.2", "b", true)]),
        ];
        assert!(r.replace(listed).is_empty());
        assert_eq!(r.seen()["bbm"].states, 3);
    }

    #[test]
    fn the_route_is_right_only_when_it_lists_exactly_the_named_leader() {
        let mut r = Routes::new(&groups());
        let t0 = Instant::now();
        let (t1, t2) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
        r.apply(slice("bbm-leader", "bbm", &[("10.0.0.1", "a", true)]));
        r.judge("bbm", leader("a", "10.0.0.1"), t0);
        assert!(r.right_since("bbm", t0));
        // Wrong from t1 on: right at t0, never at t2.
        r.judge("bbm", leader("b", "10.0.0.2"), t1);
        assert!(r.right_since("bbm", t0));
        assert!(!r.right_since("bbm", t2), "{}", r.describe("bbm"));
        r.judge("bbm", None, t1);
        assert!(
            r.describe("bbm").contains("no leader"),
            "{}",
            r.describe("bbm")
        );
        // The right address, but the endpoint names another pod.
        r.apply(slice("bbm-leader", "bbm", &[("10.0.0.2", "a", true)]));
        r.judge("bbm", leader("b", "10.0.0.2"), t1);
        assert!(
            r.describe("bbm").contains("targets"),
            "{}",
            r.describe("bbm")
        );
        assert!(!r.right_since("bbm", t2));
        r.apply(slice("bbm-leader", "bbm", &[]));
        r.judge("bbm", None, t2);
        assert!(r.right_since("bbm", t2));
    }
}
