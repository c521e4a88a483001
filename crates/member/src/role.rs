//! The role, term, group and leader a pod shows, read from its labels, annotations and group.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::core::Selector;

use crate::{Role, State};
use podium_api::{DEFAULT_ROLE_LABEL, GROUP_ANNOTATION, LEADER, TERM_ANNOTATION};

/// What the group says that the pod does not.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupView {
    pub(crate) role_label: Option<String>,
    pub(crate) leader: Option<String>,
    pub(crate) selector: Option<Selector>,
    pub(crate) make_before_break: bool,
}

pub(crate) fn group_view(obj: &DynamicObject) -> GroupView {
    let spec = &obj.data["spec"];
    let selector = serde_json::from_value::<LabelSelector>(spec["selector"].clone())
        .ok()
        .and_then(|s| Selector::try_from(s).ok())
        .filter(|s| !s.selects_all());
    GroupView {
        role_label: spec["roleLabel"].as_str().map(str::to_string),
        leader: obj.data["status"]["leader"].as_str().map(str::to_string),
        selector,
        make_before_break: spec["handoff"]["mode"].as_str() == Some("MakeBeforeBreak"),
    }
}

/// The role, term, group and leader a pod shows (`Unknown` is decided by the caller).
pub(crate) fn observe(pod: Option<&Pod>, groups: &BTreeMap<String, GroupView>) -> State {
    let group = pod.and_then(|p| p.annotations().get(GROUP_ANNOTATION).cloned());
    let view = group.as_ref().and_then(|g| groups.get(g));
    let key = view
        .and_then(|v| v.role_label.as_deref())
        .unwrap_or(DEFAULT_ROLE_LABEL);
    let leading = group.is_some()
        && pod.is_some_and(|p| p.labels().get(key).map(String::as_str) == Some(LEADER));
    let term = pod
        .filter(|_| leading)
        .and_then(|p| p.annotations().get(TERM_ANNOTATION))
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|t| *t >= 1);
    State {
        role: if leading {
            Role::Leader
        } else {
            Role::Follower
        },
        term,
        leader: view.and_then(|v| v.leader.clone()),
        make_before_break: view.is_some_and(|v| v.make_before_break),
        group,
        at: Timestamp::now(),
    }
}
