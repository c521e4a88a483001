//! Which pods belong to which group: selector matching, overlaps between groups, and the
//! reduction of a Pod to the few facts the election needs.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::core::{Expression, Selector, SelectorExt};

use crate::cache::{Anchor, CachedPod};
use podium_api::{ElectionGroup, GROUP_ANNOTATION, PRIORITY_ANNOTATION, TERM_ANNOTATION};
use podium_election::Member;

/// A group as seen when deciding who owns a contested pod.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Group name.
    pub name: String,
    /// Group namespace.
    pub namespace: String,
    /// Creation time; the older group keeps contested pods.
    pub created: Option<Timestamp>,
    /// Parsed selector; `None` for a group whose selector is invalid or empty.
    pub selector: Option<Selector>,
    /// The label every pod it selects must carry, for indexed look-ups.
    pub anchor: Anchor,
    /// UID and generation it was parsed from: a new generation is parsed again, a status write is not.
    pub parsed_from: (Option<String>, Option<i64>),
}

impl Claim {
    /// The claim of a group, with its selector parsed.
    pub fn of(group: &ElectionGroup) -> Self {
        let selector = Selector::try_from(group.spec.selector.clone())
            .ok()
            .filter(|s| !s.selects_all());
        Self {
            name: group.name_any(),
            namespace: group.namespace().unwrap_or_default(),
            created: group.metadata.creation_timestamp.as_ref().map(|t| t.0),
            anchor: selector.as_ref().map_or(Anchor::Scan, anchor),
            selector,
            parsed_from: (group.uid(), group.metadata.generation),
        }
    }

    /// The group's selector matches these labels.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }

    /// This group is older than `other` (ties broken by name), so it wins contested pods.
    pub fn outranks(&self, other: &Claim) -> bool {
        (self.created, &self.name) < (other.created, &other.name)
    }
}

/// The label a selector requires most narrowly: an equality first, else a set of values.
pub fn anchor(selector: &Selector) -> Anchor {
    let exprs: Vec<Expression> = selector.clone().into_iter().collect();
    let equal = exprs.iter().find_map(|e| match e {
        Expression::Equal(k, v) => Some(Anchor::Equal(k.clone(), v.clone())),
        _ => None,
    });
    let within = || {
        exprs.iter().find_map(|e| match e {
            Expression::In(k, vs) => Some(Anchor::In(k.clone(), vs.iter().cloned().collect())),
            _ => None,
        })
    };
    equal.or_else(within).unwrap_or(Anchor::Scan)
}

/// Members, departed pods and the names of older groups that hold some of the selected pods.
#[derive(Debug, Default)]
pub struct Membership {
    /// Pods that belong to this group.
    pub members: Vec<Member>,
    /// Pods still carrying this group's annotation that no longer belong to it.
    pub departed: Vec<Member>,
    /// Older groups that keep pods this group also selects.
    pub conflicts: Vec<String>,
}

/// The role keys of a group: the one to write, and the one podium wrote before, if it differs.
#[derive(Debug, Clone, Copy)]
pub struct RoleKeys<'a> {
    /// `spec.roleLabel`.
    pub current: &'a str,
    /// `status.roleLabel`, when a change of key is still being applied.
    pub previous: Option<&'a str>,
}

impl<'a> RoleKeys<'a> {
    /// Keys for a group whose role label never changed.
    #[cfg(test)]
    pub fn new(current: &'a str) -> Self {
        Self {
            current,
            previous: None,
        }
    }
}

/// Splits the pods of a namespace into this group's members and departed pods.
pub fn membership<'p>(
    me: &Claim,
    selector: &Selector,
    role_label: RoleKeys<'_>,
    others: &[Arc<Claim>],
    pods: impl IntoIterator<Item = &'p CachedPod>,
) -> Membership {
    let mut out = Membership::default();
    for pod in pods {
        let labels = &pod.labels;
        let ours = pod.annotations.get(GROUP_ANNOTATION) == Some(&me.name);
        // A pod out of the operator's pod selector is no member of anything, only departed.
        let selected = !pod.out_of_scope && selector.matches(labels);
        let holder = selected
            .then(|| {
                others
                    .iter()
                    .find(|o| o.name != me.name && o.outranks(me) && o.selects(labels))
            })
            .flatten();
        match (selected, holder) {
            (true, None) => out.members.push(member(pod, role_label, ours)),
            // The holder overwrites the pod's labels itself; releasing it here would race it.
            (true, Some(h)) => {
                if !out.conflicts.contains(&h.name) {
                    out.conflicts.push(h.name.clone());
                }
            }
            (false, _) if ours => out.departed.push(member(pod, role_label, ours)),
            (false, _) => {}
        }
    }
    out.conflicts.sort();
    out
}

/// Reduces a pod to what the election needs; `ours` says it carries this group's annotation.
pub fn member(pod: &CachedPod, keys: RoleKeys<'_>, ours: bool) -> Member {
    let annotations = &pod.annotations;
    let labels = &pod.labels;
    // Only podium's own pods can carry the previous key as podium's write.
    let previous = keys
        .previous
        .filter(|p| ours && *p != keys.current)
        .and_then(|p| labels.get(p));
    Member {
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        resource_version: pod.resource_version.clone(),
        created: pod.created.unwrap_or(Timestamp::UNIX_EPOCH),
        ready: pod.is_ready(),
        ready_changed: pod.ready.and_then(|(_, at)| at),
        terminating: pod.terminating,
        priority: annotations
            .get(PRIORITY_ANNOTATION)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
        role: labels.get(keys.current).or(previous).cloned(),
        stale_key: previous.is_some(),
        term: annotations
            .get(TERM_ANNOTATION)
            .and_then(|v| v.trim().parse().ok()),
        group: annotations.get(GROUP_ANNOTATION).cloned(),
        node: pod.node.clone(),
        node_silence: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, labels: serde_json::Value, annotations: serde_json::Value) -> CachedPod {
        CachedPod::from_pod(serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("u-{name}"), "labels": labels, "annotations": annotations,
                         "creationTimestamp": "2026-11-22T10:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-22T10:00:05Z"}]}
        }))
        .unwrap())
    }

    fn claim(name: &str, created: &str, app: &str) -> Arc<Claim> {
        let selector: Selector = [("app".to_string(), app.to_string())].into_iter().collect();
        Arc::new(Claim {
            name: name.into(),
            namespace: "ns".into(),
            created: Some(created.parse().unwrap()),
            anchor: anchor(&selector),
            selector: Some(selector),
            parsed_from: (None, None),
        })
    }

    #[test]
    fn anchors_on_an_equality_else_a_set() {
        let sel = |v: serde_json::Value| {
            Selector::try_from(
                serde_json::from_value::<
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
                >(v)
                .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(
            anchor(&sel(
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}],
                               "matchLabels": {"app": "x"}})
            )),
            Anchor::Equal("app".into(), "x".into())
        );
        assert_eq!(
            anchor(&sel(
                json!({"matchExpressions": [{"key": "tier", "operator": "Exists"},
                                                    {"key": "app", "operator": "In", "values": ["a"]}]})
            )),
            Anchor::In("app".into(), vec!["a".into()])
        );
        assert_eq!(
            anchor(&sel(
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]})
            )),
            Anchor::Scan
        );
    }

    #[test]
    fn reduces_a_pod() {
        let p = pod(
            "p",
            json!({"app": "x", "podium.dev/role": "leader"}),
            json!({"podium.dev/term": "4", "podium.dev/priority": "7", "podium.dev/group": "g"}),
        );
        let m = member(&p, RoleKeys::new("podium.dev/role"), true);
        assert_eq!(m.name, "p");
        assert!(m.ready);
        assert_eq!(
            m.ready_changed,
            Some("2026-11-22T10:00:05Z".parse().unwrap())
        );
        assert_eq!((m.priority, m.term), (7, Some(4)));
        assert_eq!(m.role.as_deref(), Some("leader"));
        assert_eq!(m.group.as_deref(), Some("g"));
        let junk = pod(
            "q",
            json!({}),
            json!({"podium.dev/term": "x", "podium.dev/priority": "high"}),
        );
        let m = member(&junk, RoleKeys::new("podium.dev/role"), false);
        assert_eq!(
            (m.priority, m.term, m.ready_changed.is_some()),
            (0, None, true)
        );
    }

    #[test]
    fn older_group_keeps_contested_pods() {
        let old = claim("old", "2026-01-01T00:00:00Z", "x");
        let new = claim("new", "2026-02-01T00:00:00Z", "x");
        let pods = [
            pod("a", json!({"app": "x"}), json!({"podium.dev/group": "new"})),
            pod("b", json!({"app": "y"}), json!({"podium.dev/group": "new"})),
            pod("c", json!({"app": "y"}), json!({})),
        ];
        let all = [old.clone(), new.clone()];
        let newer = membership(
            &new,
            new.selector.as_ref().unwrap(),
            RoleKeys::new("r"),
            &all,
            &pods,
        );
        assert!(newer.members.is_empty());
        assert_eq!(newer.conflicts, ["old"]);
        let departed: Vec<&str> = newer.departed.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(departed, ["b"]);
        let older = membership(
            &old,
            old.selector.as_ref().unwrap(),
            RoleKeys::new("r"),
            &all,
            &pods,
        );
        assert_eq!(older.members.len(), 1);
        assert!(older.conflicts.is_empty());
        assert!(older.departed.is_empty());
    }
}
