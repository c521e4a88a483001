//! The group's conditions (Ready, SpecValid, Conflict) and the plan of an invalid spec.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::choice::Choice;
use crate::fitness::{eligible_at, node_lost_for};
use crate::validation::Problems;
use crate::{CONFLICT, Member, Note, Observation, Plan, READY, SPEC_VALID, group_note};
use podium_api::ElectionGroupStatus;

/// The Ready, SpecValid and Conflict conditions, with a Warning when one turns bad.
pub fn conditions(
    obs: &Observation<'_>,
    choice: &Choice<'_>,
    foreign: &[&Member],
    notes: &mut Vec<Note>,
) -> Vec<Condition> {
    let (ready_status, ready_reason, ready_message) = readiness(obs, choice.next, foreign);
    if ready_reason == "NoCandidates" && condition_reason(obs.status, READY) != Some("NoCandidates")
    {
        // A new group whose pods are still starting is expected to wait: a Warning only once
        // the group has had a leader to lose.
        let had_leader = obs.status.term > 0;
        let message = if had_leader {
            no_candidates(obs, foreign)
        } else {
            format!(
                "waiting for a ready member ({})",
                no_candidates(obs, foreign)
            )
        };
        notes.push(group_note(had_leader, "NoCandidates", message));
    }
    let (conflict_status, conflict_reason, conflict_message) = conflict(obs, foreign);
    if conflict_status == "True"
        && condition_message(obs.status, CONFLICT) != Some(conflict_message.as_str())
    {
        let event = match conflict_reason {
            "SelectorOverlap" => "Conflict",
            other => other,
        };
        notes.push(group_note(true, event, conflict_message.clone()));
    }
    vec![
        condition(obs, READY, ready_status, ready_reason, ready_message),
        condition(
            obs,
            SPEC_VALID,
            "True",
            "Valid",
            "spec is valid".to_string(),
        ),
        condition(
            obs,
            CONFLICT,
            conflict_status,
            conflict_reason,
            conflict_message,
        ),
    ]
}

pub(crate) fn readiness(
    obs: &Observation<'_>,
    next: Option<&Member>,
    foreign: &[&Member],
) -> (&'static str, &'static str, String) {
    let s = obs.settings;
    match next {
        _ if s.paused => match next {
            Some(l) if l.ready => ("True", "Paused", format!("paused; {} leads", l.name)),
            _ => ("False", "Paused", "paused; no healthy leader".to_string()),
        },
        Some(l) if l.ready && !l.terminating => {
            ("True", "LeaderReady", format!("{} leads", l.name))
        }
        Some(l) => (
            "False",
            "LeaderNotReady",
            format!(
                "{} leads but is not ready; failover after {}s",
                l.name,
                s.tolerance.as_secs()
            ),
        ),
        None => (
            "False",
            "NoCandidates",
            format!(
                "none of {} member(s) is a ready candidate{}{}",
                obs.members.len(),
                if foreign.is_empty() {
                    String::new()
                } else {
                    format!("; {} carry a foreign role label", foreign.len())
                },
                if obs.passed_over.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; passed over after failed writes: {}",
                        obs.passed_over.join(", ")
                    )
                }
            ),
        ),
    }
}

pub(crate) fn no_candidates(obs: &Observation<'_>, foreign: &[&Member]) -> String {
    format!(
        "no leader: none of {} member(s) is a candidate{}",
        obs.members.len(),
        why_none(obs, foreign)
    )
}

/// Why no member is a candidate, as counts of each reason: " (2 not Ready, 1 …)", or "".
fn why_none(obs: &Observation<'_>, foreign: &[&Member]) -> String {
    let s = obs.settings;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for m in obs.members {
        let reason = if foreign.iter().any(|f| f.name == m.name) {
            "carry a foreign role label".to_string()
        } else if obs.passed_over.contains(&m.name) {
            "passed over after failed writes".to_string()
        } else if m.terminating {
            "terminating".to_string()
        } else if !m.ready {
            "not Ready".to_string()
        } else if node_lost_for(m, s).is_some() {
            "on a lost node".to_string()
        } else if eligible_at(m, s.min_ready).is_some_and(|at| at > obs.now) {
            format!("Ready for less than {}s", s.min_ready.as_secs())
        } else {
            continue;
        };
        match counts.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => counts.push((reason, 1)),
        }
    }
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    format!(" ({})", parts.join(", "))
}

/// Pods lost to older groups, members with a foreign role value, and a Lease owned by someone else.
pub(crate) fn conflict(
    obs: &Observation<'_>,
    foreign: &[&Member],
) -> (&'static str, &'static str, String) {
    let mut parts: Vec<(&'static str, String)> = Vec::new();
    if !obs.conflicts.is_empty() {
        parts.push((
            "SelectorOverlap",
            format!(
                "some selected pods belong to older group(s) {} on the same role label; they stay there",
                obs.conflicts.join(", ")
            ),
        ));
    }
    if !foreign.is_empty() {
        let names: Vec<&str> = foreign.iter().take(10).map(|m| m.name.as_str()).collect();
        parts.push((
            "ForeignRoleLabel",
            format!(
                "{} member(s) carry {} with a value podium did not write, left alone: {}{}",
                foreign.len(),
                obs.settings.role_label,
                names.join(", "),
                if foreign.len() > names.len() {
                    ", …"
                } else {
                    ""
                }
            ),
        ));
    }
    if obs.lease_foreign {
        parts.push((
            "LeaseNotOwned",
            format!(
                "Lease {} exists and is not controlled by this group; it is not published",
                obs.group
            ),
        ));
    }
    if !obs.foreign_services.is_empty() {
        parts.push((
            "ForeignService",
            format!(
                "{} exist(s) and is not controlled by this group; podium leaves it alone and routes nothing through it",
                obs.foreign_services.join(", ")
            ),
        ));
    }
    match parts.first() {
        None => (
            "False",
            "NoOverlap",
            "no other group selects these pods".to_string(),
        ),
        Some((reason, _)) => (
            "True",
            reason,
            parts
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// The plan for a group whose spec failed validation: report, touch nothing else.
pub fn reject(
    status: &ElectionGroupStatus,
    generation: Option<i64>,
    problems: &Problems,
    now: Timestamp,
) -> Plan {
    let problems = problems.to_string();
    let problems = problems.as_str();
    let mut notes = Vec::new();
    let already_reported = condition_message(status, SPEC_VALID) == Some(problems)
        && status.observed_generation == generation;
    if !already_reported {
        notes.push(group_note(true, "InvalidSpec", problems.to_string()));
    }
    let mut next = status.clone();
    next.observed_generation = generation;
    let keep = |t: &str| status.conditions.iter().find(|c| c.type_ == t).cloned();
    let mut conditions: Vec<Condition> = [READY, CONFLICT].iter().filter_map(|t| keep(t)).collect();
    conditions.insert(
        1.min(conditions.len()),
        set_condition(
            status,
            generation,
            now,
            SPEC_VALID,
            "False",
            "InvalidSpec",
            problems.to_string(),
        ),
    );
    next.conditions = conditions;
    Plan {
        labels_first: false,
        writes: Vec::new(),
        neutral_from: 0,
        status: next,
        notes,
        requeue_after: None,
        clear_handoff_request: false,
        transition: None,
        unfit_since: None,
    }
}

pub(crate) fn find<'s>(status: &'s ElectionGroupStatus, type_: &str) -> Option<&'s Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

pub(crate) fn condition_reason<'s>(
    status: &'s ElectionGroupStatus,
    type_: &str,
) -> Option<&'s str> {
    find(status, type_).map(|c| c.reason.as_str())
}

pub(crate) fn condition_message<'s>(
    status: &'s ElectionGroupStatus,
    type_: &str,
) -> Option<&'s str> {
    find(status, type_).map(|c| c.message.as_str())
}

pub(crate) fn condition(
    obs: &Observation<'_>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> Condition {
    set_condition(
        obs.status,
        obs.generation,
        obs.now,
        type_,
        status,
        reason,
        message,
    )
}

/// A condition whose transition time only moves when its status does.
pub(crate) fn set_condition(
    prev: &ElectionGroupStatus,
    generation: Option<i64>,
    now: Timestamp,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> Condition {
    let since = find(prev, type_)
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}
