//! `why`, in words: who leads a group and since when, why it has no leader, or why a pod does
//! not lead. Pure: from a `GroupView` to sentences.

use std::collections::BTreeMap;

use jiff::Timestamp;
use podium_api::Preference;
use serde::Serialize;

use crate::standing::{GroupView, PodView, Standing};
use crate::table::instant;

/// The answer of `why`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Why {
    /// The group.
    pub group: String,
    /// The pod asked about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The pod's standing, when it is selected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standing: Option<Standing>,
    /// The group's leader, as status records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The sentences, most important first.
    pub reasons: Vec<String>,
}

/// Who leads the group and since when, or why nobody does.
pub fn group(v: &GroupView, now: Timestamp) -> Why {
    let mut r = preamble(v);
    match &v.leader {
        Some(l) => {
            r.push(leads(v, l, now));
            if let Some(p) = v.pod(l) {
                r.extend(leader_health(v, p));
            }
            if v.paused {
                r.push(paused(v));
            }
            if let Some(s) = &v.successor {
                r.push(format!(
                    "If {l} fails, {s} takes over (the reserved successor)."
                ));
            }
            if let Some(to) = &v.handoff_requested {
                r.push(format!(
                    "A handoff to {to} is requested; podium performs it on its next pass."
                ));
            }
            if let Some(at) = v.next_handoff {
                r.push(format!("Next planned handoff: {}.", instant(at, now)));
            }
        }
        None => {
            r.push(format!("{} has no leader.", v.name));
            if let Some(t) = v.last_transition.as_ref().filter(|t| t.to.is_none()) {
                r.push(format!(
                    "The last leader, {}, stepped down {} ago (reason {}).",
                    t.from.as_deref().unwrap_or("?"),
                    crate::table::ago(t.time.0, now),
                    t.reason.as_str()
                ));
            }
            r.extend(leaderless(v));
        }
    }
    Why {
        group: v.name.clone(),
        pod: None,
        standing: None,
        leader: v.leader.clone(),
        reasons: r,
    }
}

/// Why `pod` leads or does not; `labels` are its labels when it exists but the group does not
/// select it, `selector` the group's selector as text.
pub fn pod(
    v: &GroupView,
    pod: &str,
    labels: Option<&BTreeMap<String, String>>,
    selector: &str,
    now: Timestamp,
) -> Why {
    let mut r = preamble(v);
    let standing = v.pod(pod).map(|p| p.standing);
    match v.pod(pod) {
        None => match labels {
            None => r.push(format!("There is no pod {pod} in namespace {}.", v.namespace)),
            Some(labels) => r.push(format!(
                "{pod} is not selected by {}: the selector {selector} does not match its labels ({}).",
                v.name,
                labels_text(labels)
            )),
        },
        Some(p) => r.extend(member(v, p, now)),
    }
    Why {
        group: v.name.clone(),
        pod: Some(pod.to_string()),
        standing,
        leader: v.leader.clone(),
        reasons: r,
    }
}

/// What holds for the group as a whole: an invalid spec, a status not yet current.
fn preamble(v: &GroupView) -> Vec<String> {
    let mut r = Vec::new();
    if let Some(c) = v.condition("SpecValid").filter(|c| c.status == "False") {
        r.push(format!(
            "podium leaves {} alone: its spec is invalid ({}).",
            v.name, c.message
        ));
    }
    if v.conditions.is_empty() && v.leader.is_none() {
        r.push(format!(
            "{} has no status yet: podium has not acted on it. Is the operator running, and does it watch namespace {}?",
            v.name, v.namespace
        ));
    } else if v.status_stale {
        r.push(format!(
            "{}'s status is from an older version of its spec: podium has not acted on the latest change yet.",
            v.name
        ));
    }
    r
}

fn leads(v: &GroupView, leader: &str, now: Timestamp) -> String {
    let since = v
        .leader_since
        .map(|t| format!(" since {}", instant(t, now)))
        .unwrap_or_default();
    let how = v
        .last_transition
        .as_ref()
        .filter(|t| t.to.as_deref() == Some(leader))
        .map(|t| match &t.from {
            Some(from) => format!(", after {from} (reason {})", t.reason.as_str()),
            None => format!(" (reason {})", t.reason.as_str()),
        })
        .unwrap_or_default();
    format!("{leader} leads {}{since}, term {}{how}.", v.name, v.term)
}

fn paused(v: &GroupView) -> String {
    format!(
        "{} is paused: leadership does not move until `kubectl podium resume {}`.",
        v.name, v.name
    )
}

/// What is wrong with a leader that still holds the seat.
fn leader_health(v: &GroupView, p: &PodView) -> Vec<String> {
    let mut r = Vec::new();
    if p.standing != Standing::Leader {
        r.push(format!(
            "Status records {} as leader, but the pod does not carry the leader label ({}: {}).",
            p.name,
            p.standing.words(),
            p.detail
        ));
        return r;
    }
    if p.terminating {
        r.push(format!(
            "{} is terminating: podium hands leadership over at once.",
            p.name
        ));
    } else if !p.ready {
        let why = v
            .condition("Ready")
            .map(|c| format!(" ({})", c.message))
            .unwrap_or_default();
        r.push(format!(
            "{} is not Ready{why}: it is replaced once failoverToleranceSeconds has passed.",
            p.name
        ));
    }
    if p.node_lost {
        r.push(format!(
            "{}: its node looks lost to the plugin ({}); podium replaces the leader of a lost node (reason NodeLost).",
            p.name, p.detail
        ));
    }
    r
}

/// Why a group has no leader.
fn leaderless(v: &GroupView) -> Vec<String> {
    let mut r = Vec::new();
    if v.paused {
        r.push(paused(v));
    }
    let members: Vec<&PodView> = v
        .pods
        .iter()
        .filter(|p| p.standing != Standing::Conflict)
        .collect();
    let held = v.pods.len() - members.len();
    if v.pods.is_empty() {
        r.push(format!(
            "Its selector matches no pod in namespace {}.",
            v.namespace
        ));
    } else if members.is_empty() {
        r.push(format!(
            "All {held} pod(s) it selects are kept by older group(s) that also select them (Conflict)."
        ));
    }
    if let Some(best) = v.candidates().next() {
        r.push(format!(
            "{} is a candidate: podium elects it on its next pass. If that does not happen, check that the operator runs{}.",
            best.name,
            v.condition("Ready")
                .map(|c| format!(" (Ready={}, {}: {})", c.status, c.reason, c.message))
                .unwrap_or_default()
        ));
        return r;
    }
    if !members.is_empty() {
        r.push(format!(
            "None of its {} member(s) is a ready candidate:",
            members.len()
        ));
        for p in &members {
            r.push(format!("  {}: {}{}", p.name, p.standing.words(), detail(p)));
        }
    }
    if held > 0 && !members.is_empty() {
        r.push(format!(
            "{held} more pod(s) it selects are kept by older groups (Conflict)."
        ));
    }
    r
}

fn detail(p: &PodView) -> String {
    if p.detail.is_empty() {
        String::new()
    } else {
        format!(" ({})", p.detail)
    }
}

/// Why a selected pod leads or does not.
fn member(v: &GroupView, p: &PodView, now: Timestamp) -> Vec<String> {
    let name = &p.name;
    let g = &v.name;
    let mut r = Vec::new();
    match p.standing {
        Standing::Leader => {
            if v.leader.as_deref() == Some(name.as_str()) {
                r.push(leads(v, name, now));
            } else {
                r.push(format!(
                    "{name} carries the leader label, but status records {}: podium settles this on its next pass.",
                    v.leader.as_deref().unwrap_or("no leader")
                ));
            }
            r.extend(leader_health(v, p));
            return r;
        }
        Standing::Conflict => r.push(format!(
            "{name} is selected by {g} and by the older group {}, which keeps it: {g} reports Conflict (SelectorOverlap) and does not count {name} as a member.",
            p.other_groups.first().map(String::as_str).unwrap_or("?")
        )),
        Standing::ForeignRoleLabel => r.push(format!(
            "{name} carries the role label with a value podium did not write for {g} ({}): podium leaves the pod alone and never elects it. Remove the label for podium to manage it.",
            p.detail
        )),
        Standing::Terminating => r.push(format!(
            "{name} is terminating (deletionTimestamp set): a terminating pod never leads."
        )),
        Standing::NotReady => r.push(format!(
            "{name} is not Ready{}: only Ready pods may lead.",
            detail(p)
        )),
        Standing::NotReadyLongEnough => r.push(format!(
            "{name} has not been Ready long enough{}: minReadySeconds is {}.",
            detail(p),
            v.min_ready_seconds
        )),
        Standing::NodeLost => r.push(format!(
            "{name}'s node looks lost{}: a pod on a lost node does not lead (as the plugin reads kube-node-lease; podium measures on its own clock).",
            detail(p)
        )),
        Standing::PassedOver => r.push(format!(
            "{name} is passed over: {}. podium passes a pod over for five minutes after three failed promotions (`kubectl describe eg {g}` shows the Events).",
            p.detail
        )),
        Standing::Candidate => r.extend(candidate(v, p, now)),
    }
    if v.paused && p.standing != Standing::Candidate {
        r.push(paused(v));
    }
    r
}

/// Why a candidate does not lead: pause, stickiness, preference.
fn candidate(v: &GroupView, p: &PodView, now: Timestamp) -> Vec<String> {
    let name = &p.name;
    let g = &v.name;
    let mut r = vec![format!("{name} is a candidate: it may lead {g}.")];
    if v.paused {
        r.push(paused(v));
        return r;
    }
    if v.leader.as_deref() == Some(name.as_str()) {
        r.push(format!(
            "Status records {name} as the leader; its label is being written."
        ));
        return r;
    }
    let leader = v.pods.iter().find(|x| x.standing == Standing::Leader);
    match leader {
        Some(l) if v.candidates().any(|c| c.name == l.name) => {
            r.push(format!(
                "{} leads and is healthy: leadership is sticky, it moves only when the leader fails or on a handoff.",
                l.name
            ));
            r.push(preference_between(v, p, l));
        }
        Some(l) => {
            r.extend(leader_health(v, l));
            r.push(next_in_line(v, p));
        }
        None => r.push(next_in_line(v, p)),
    }
    if v.successor.as_deref() == Some(name.as_str()) {
        r.push(format!(
            "{name} is the reserved successor: it leads next if the leader fails."
        ));
    }
    if let Some(at) = v.next_handoff {
        r.push(format!("Next planned handoff: {}.", instant(at, now)));
    }
    r.push(format!(
        "`kubectl podium handoff {g} --to {name}` hands leadership to it."
    ));
    r
}

/// How `spec.preference` ranks a candidate against the healthy leader.
fn preference_between(v: &GroupView, p: &PodView, l: &PodView) -> String {
    match v.preference {
        Preference::Priority if p.priority > l.priority => format!(
            "{}'s priority {} is above {}'s {}: podium preempts the leader (reason Preempted) on its next pass.",
            p.name, p.priority, l.name, l.priority
        ),
        Preference::Priority => format!(
            "spec.preference is Priority: {}'s priority {} is not above {}'s {}, so it does not preempt.",
            p.name, p.priority, l.name, l.priority
        ),
        Preference::Oldest => {
            let older = crate::standing::preference_order(v.preference, p, l).is_lt();
            format!(
                "spec.preference is Oldest, which {}; it chooses only when there is no leader.",
                if older {
                    format!("would prefer {} (created earlier)", p.name)
                } else {
                    format!("prefers {} (created earlier)", l.name)
                }
            )
        }
    }
}

/// Who leads next when the seat is free or about to be.
fn next_in_line(v: &GroupView, p: &PodView) -> String {
    let best = v.candidates().find(|c| c.standing == Standing::Candidate);
    match best {
        Some(b) if b.name == p.name => format!(
            "{} is the best candidate by spec.preference {:?}: podium elects it on its next pass.",
            p.name, v.preference
        ),
        Some(b) => format!(
            "spec.preference {:?} prefers {} ({}).",
            v.preference,
            b.name,
            match v.preference {
                Preference::Oldest => "created earlier".to_string(),
                Preference::Priority if b.priority > p.priority =>
                    format!("priority {} above {}", b.priority, p.priority),
                Preference::Priority => "same priority, created earlier".to_string(),
            }
        ),
        None => String::new(),
    }
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "none".to_string();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
