//! The standing of each pod a group selects, in the words podium's election uses: leader,
//! candidate, or why it may not lead. Pure: from `Facts` to a `GroupView`.

use std::cmp::Ordering;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::core::SelectorExt;
use podium_api::{ElectionGroup, FOLLOWER, LEADER, Preference};
use serde::Serialize;

use crate::facts::{Facts, PodFacts, selector};
use crate::table::ago;

/// Where a selected pod stands, checked in the order podium's election checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    /// Labelled leader by podium for this group.
    Leader,
    /// May lead: Ready (long enough), not terminating, not on a lost node, not foreign, not
    /// passed over.
    Candidate,
    /// Its Ready condition is not True.
    NotReady,
    /// It has a deletionTimestamp.
    Terminating,
    /// Ready, but not yet for `minReadySeconds`.
    NotReadyLongEnough,
    /// Its node's Lease has not been renewed for `nodeLossSeconds`.
    NodeLost,
    /// Its promotion failed three times in a row; passed over for five minutes.
    PassedOver,
    /// It carries the role label with a value podium did not write for this group.
    ForeignRoleLabel,
    /// An older group also selects it and keeps it: no member of this group.
    Conflict,
}

impl Standing {
    /// The words of the status table.
    pub fn words(self) -> &'static str {
        match self {
            Self::Leader => "leader",
            Self::Candidate => "candidate",
            Self::NotReady => "not ready",
            Self::Terminating => "terminating",
            Self::NotReadyLongEnough => "not ready long enough",
            Self::NodeLost => "node lost",
            Self::PassedOver => "passed over",
            Self::ForeignRoleLabel => "foreign role label",
            Self::Conflict => "conflict",
        }
    }
}

/// One selected pod and where it stands.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// Its standing.
    pub standing: Standing,
    /// The Ready condition is True.
    pub ready: bool,
    /// It has a deletionTimestamp.
    pub terminating: bool,
    /// Its node's Lease has not been renewed for `nodeLossSeconds`, as the plugin read it.
    pub node_lost: bool,
    /// The node it runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The value of the role label, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `podium.dev/priority` as podium reads it.
    pub priority: i64,
    /// Creation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    /// For `not ready long enough`: when it may lead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eligible_at: Option<Timestamp>,
    /// For `conflict`: the older group that keeps it; otherwise newer groups that also select it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_groups: Vec<String>,
    /// What the standing rests on, in a few words.
    pub detail: String,
}

/// A group as the plugin shows it: status, conditions, and every selected pod's standing.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    /// Group name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The leader status records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Its fencing term.
    pub term: i64,
    /// When it took over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_since: Option<Timestamp>,
    /// `status.members`.
    pub members: i32,
    /// `status.readyMembers`.
    pub ready_members: i32,
    /// `status.nextHandoff`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_handoff: Option<Timestamp>,
    /// `spec.paused`.
    pub paused: bool,
    /// `spec.preference`.
    pub preference: Preference,
    /// `spec.minReadySeconds`.
    pub min_ready_seconds: i64,
    /// A `podium.dev/handoff-to` request waiting to be performed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff_requested: Option<String>,
    /// The last change of leader: from, to, reason, when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition: Option<podium_api::Transition>,
    /// The reserved successor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
    /// The status was computed from an older generation of the spec (or never).
    pub status_stale: bool,
    /// `Ready`, `SpecValid`, `Conflict`, as status has them.
    pub conditions: Vec<Condition>,
    /// Every pod the selector matches, in preference order (candidates first).
    pub pods: Vec<PodView>,
    /// What the plugin could not read, and what it inferred instead.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl GroupView {
    /// A condition of the group's status, by type.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// A pod of the view, by name.
    pub fn pod(&self, name: &str) -> Option<&PodView> {
        self.pods.iter().find(|p| p.name == name)
    }

    /// The pods that may lead, best first: the candidates, and a leader that is one.
    pub fn candidates(&self) -> impl Iterator<Item = &PodView> {
        self.pods.iter().filter(|p| match p.standing {
            Standing::Candidate => true,
            Standing::Leader => p.ready && !p.terminating && !p.node_lost,
            _ => false,
        })
    }
}

/// The order in which `spec.preference` ranks candidates, best first (as podium ranks them).
pub fn preference_order(p: Preference, a: &PodView, b: &PodView) -> Ordering {
    let oldest = a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name));
    match p {
        Preference::Oldest => oldest,
        Preference::Priority => b.priority.cmp(&a.priority).then(oldest),
    }
}

/// Builds the view of one group from what was read.
pub fn view(facts: &Facts, group: &ElectionGroup) -> GroupView {
    let name = group.name_any();
    let status = group.status.clone().unwrap_or_default();
    let spec = &group.spec;
    let mut notes = Vec::new();
    let selector = selector(group);
    if selector.is_none() {
        notes.push("the selector is invalid or empty: podium selects no pods with it".into());
    }
    let passed_by_condition = passed_over_in_condition(&status.conditions);
    let passed_by_event = facts.promotion_failures(&name);
    if let Some(why) = &facts.events_unread {
        notes.push(format!(
            "Events not readable ({why}): passed over is known only from the Ready condition"
        ));
    }
    let node_loss = SignedDuration::from_secs(spec.node_loss_seconds);
    let mut pods: Vec<PodView> = Vec::new();
    for pod in &facts.pods {
        let f = PodFacts::of(pod);
        if !selector.as_ref().is_some_and(|s| s.matches(&f.labels)) {
            continue;
        }
        let (older, newer) = facts.rivals(group, &f.labels);
        let ours = f.group.as_deref() == Some(name.as_str());
        let previous = status
            .role_label
            .as_deref()
            .filter(|p| ours && *p != spec.role_label);
        let role = f
            .labels
            .get(&spec.role_label)
            .or_else(|| previous.and_then(|p| f.labels.get(p)))
            .cloned();
        let foreign = role
            .as_deref()
            .is_some_and(|r| !(r == LEADER || r == FOLLOWER) || !ours);
        let renewed = f.node.as_ref().and_then(|n| facts.node_leases.get(n));
        let silent = renewed.map(|at| facts.now.duration_since(*at));
        let eligible_at = (spec.min_ready_seconds > 0)
            .then(|| f.ready_changed.or(f.created))
            .flatten()
            .and_then(|t| {
                t.checked_add(SignedDuration::from_secs(spec.min_ready_seconds))
                    .ok()
            })
            .filter(|at| *at > facts.now);
        let passed = passed_by_event
            .get(&f.name)
            .map(|at| {
                format!(
                    "promotion failed 3 times (PromotionFailed Event {} ago)",
                    ago(*at, facts.now)
                )
            })
            .or_else(|| {
                passed_by_condition
                    .contains(&f.name)
                    .then(|| "named in the Ready condition as passed over".to_string())
            });
        let (standing, detail) = if let Some(holder) = older.first() {
            (
                Standing::Conflict,
                format!("the older group {holder} also selects it and keeps it"),
            )
        } else if foreign {
            let value = role.clone().unwrap_or_default();
            let whose = match &f.group {
                Some(g) if g != &name => format!(", written for group {g}"),
                None if value == LEADER || value == FOLLOWER => {
                    ", not written by podium for this group".to_string()
                }
                _ => String::new(),
            };
            (
                Standing::ForeignRoleLabel,
                format!("{}={value}{whose}; left alone", spec.role_label),
            )
        } else if role.as_deref() == Some(LEADER) {
            (Standing::Leader, leader_detail(&f, spec, silent, node_loss))
        } else if f.terminating {
            (Standing::Terminating, "deletionTimestamp set".to_string())
        } else if !f.ready {
            let since = f
                .ready_changed
                .map(|t| format!(" for {}", ago(t, facts.now)))
                .unwrap_or_default();
            (Standing::NotReady, format!("Ready is not True{since}"))
        } else if let Some(s) = silent.filter(|s| *s > node_loss) {
            (Standing::NodeLost, node_detail(&f, s, node_loss))
        } else if let Some(why) = passed {
            (Standing::PassedOver, why)
        } else if let Some(at) = eligible_at {
            (
                Standing::NotReadyLongEnough,
                format!(
                    "Ready {} of minReadySeconds {}; may lead in {}",
                    ago(
                        f.ready_changed.or(f.created).unwrap_or(facts.now),
                        facts.now
                    ),
                    spec.min_ready_seconds,
                    ago(facts.now, at)
                ),
            )
        } else {
            let mut d = String::new();
            if status.leader.as_deref() == Some(f.name.as_str()) {
                d = "recorded leader in status; its label is not written yet".into();
            } else if status.successor.as_ref().and_then(|s| s.pod.as_deref())
                == Some(f.name.as_str())
            {
                d = "reserved successor".into();
            }
            (Standing::Candidate, d)
        };
        let mut detail = detail;
        if standing != Standing::Conflict && !newer.is_empty() {
            detail = join(
                &detail,
                &format!("also selected by newer {}", newer.join(", ")),
            );
        }
        pods.push(PodView {
            name: f.name.clone(),
            standing,
            ready: f.ready,
            terminating: f.terminating,
            node_lost: silent.is_some_and(|s| s > node_loss),
            node: f.node.clone(),
            role,
            priority: f.priority,
            created: f.created,
            eligible_at,
            other_groups: if standing == Standing::Conflict {
                older
            } else {
                newer
            },
            detail,
        });
    }
    if let Some(why) = &facts.node_leases_unread {
        notes.push(format!(
            "node Leases not readable ({why}): node loss not shown"
        ));
    }
    pods.sort_by(|a, b| {
        rank(a.standing)
            .cmp(&rank(b.standing))
            .then_with(|| preference_order(spec.preference, a, b))
    });
    GroupView {
        namespace: group.namespace().unwrap_or_else(|| facts.namespace.clone()),
        leader: status.leader.clone(),
        term: status.term,
        leader_since: status.leader_since.as_ref().map(|t| t.0),
        members: status.members,
        ready_members: status.ready_members,
        next_handoff: status.next_handoff.as_ref().map(|t| t.0),
        paused: spec.paused,
        preference: spec.preference,
        min_ready_seconds: spec.min_ready_seconds,
        handoff_requested: group
            .annotations()
            .get(podium_api::HANDOFF_ANNOTATION)
            .cloned(),
        last_transition: status.last_transition.clone(),
        successor: status.successor.as_ref().and_then(|s| s.pod.clone()),
        status_stale: group.status.is_none()
            || status.observed_generation < group.metadata.generation,
        conditions: status.conditions.clone(),
        pods,
        notes,
        name,
    }
}

/// The leader first, then candidates, then the others.
fn rank(s: Standing) -> u8 {
    match s {
        Standing::Leader => 0,
        Standing::Candidate => 1,
        Standing::Conflict => 3,
        _ => 2,
    }
}

fn leader_detail(
    f: &PodFacts,
    spec: &podium_api::ElectionGroupSpec,
    silent: Option<SignedDuration>,
    node_loss: SignedDuration,
) -> String {
    let mut d = f.term.map(|t| format!("term {t}")).unwrap_or_default();
    if f.terminating {
        d = join(&d, "terminating: podium hands over at once");
    } else if !f.ready {
        d = join(
            &d,
            &format!(
                "not ready: failover after failoverToleranceSeconds {}",
                spec.failover_tolerance_seconds
            ),
        );
    }
    if let Some(s) = silent.filter(|s| *s > node_loss) {
        d = join(&d, &node_detail(f, s, node_loss));
    }
    d
}

fn node_detail(f: &PodFacts, silent: SignedDuration, node_loss: SignedDuration) -> String {
    format!(
        "Lease of node {} renewed {}s ago, over nodeLossSeconds {}",
        f.node.as_deref().unwrap_or("?"),
        silent.as_secs(),
        node_loss.as_secs()
    )
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}; {b}")
    }
}

/// Pods the Ready condition names as passed over (`…; passed over after failed writes: a, b`).
fn passed_over_in_condition(conditions: &[Condition]) -> Vec<String> {
    let Some(c) = conditions.iter().find(|c| c.type_ == "Ready") else {
        return Vec::new();
    };
    c.message
        .split("; ")
        .find_map(|part| part.strip_prefix("passed over after failed writes: "))
        .map(|names| names.split(", ").map(str::to_string).collect())
        .unwrap_or_default()
}
