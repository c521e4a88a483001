//! `status` as text: a table of groups, a table of their pods' standings, and what could not
//! be read.

use jiff::Timestamp;
use serde::Serialize;

use crate::standing::GroupView;
use crate::table::{Table, ago, or_none};

/// `status` without a group: every group of the namespace.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceView {
    /// The namespace.
    pub namespace: String,
    /// Its groups, by name.
    pub groups: Vec<GroupView>,
    /// Groups that could not be read, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

/// The two tables and the notes.
pub fn render(groups: &[GroupView], unreadable: &[String], now: Timestamp) -> String {
    let mut summary = Table::new(&[
        "GROUP",
        "LEADER",
        "TERM",
        "LEADER SINCE",
        "READY",
        "PAUSED",
        "NEXT HANDOFF",
        "CONDITION",
    ]);
    let mut members = Table::new(&["GROUP", "POD", "STANDING", "READY", "NODE", "DETAIL"]);
    let mut notes: Vec<String> = unreadable.to_vec();
    for g in groups {
        let ready = g.condition("Ready");
        summary.row(vec![
            g.name.clone(),
            or_none(g.leader.clone()),
            g.term.to_string(),
            or_none(g.leader_since.map(|t| format!("{} ago", ago(t, now)))),
            format!("{}/{}", g.ready_members, g.members),
            if g.paused { "yes" } else { "no" }.to_string(),
            or_none(g.next_handoff.map(|t| {
                if t > now {
                    format!("in {}", ago(now, t))
                } else {
                    format!("due ({} ago)", ago(t, now))
                }
            })),
            or_none(ready.map(|c| format!("{}={}", c.reason, c.status))),
        ]);
        for p in &g.pods {
            members.row(vec![
                g.name.clone(),
                p.name.clone(),
                p.standing.words().to_string(),
                if p.ready { "True" } else { "False" }.to_string(),
                or_none(p.node.clone()),
                p.detail.clone(),
            ]);
        }
        if g.pods.is_empty() {
            notes.push(format!("{}: the selector matches no pod", g.name));
        }
        if let Some(to) = &g.handoff_requested {
            notes.push(format!(
                "{}: handoff to {to} requested, not yet performed",
                g.name
            ));
        }
        if let Some(c) = g.condition("SpecValid").filter(|c| c.status == "False") {
            notes.push(format!("{}: invalid spec: {}", g.name, c.message));
        }
        if let Some(c) = g.condition("Conflict").filter(|c| c.status == "True") {
            notes.push(format!(
                "{}: Conflict ({}): {}",
                g.name, c.reason, c.message
            ));
        }
        if g.status_stale {
            notes.push(format!(
                "{}: status is not yet current with the spec (podium has not acted on it)",
                g.name
            ));
        }
        notes.extend(g.notes.iter().map(|n| format!("{}: {n}", g.name)));
    }
    if groups.is_empty() {
        return notes_text("No ElectionGroups found.\n".to_string(), &notes);
    }
    let text = format!("{}\n{}", summary.render(), members.render());
    notes_text(text, &notes)
}

fn notes_text(mut text: String, notes: &[String]) -> String {
    if !notes.is_empty() {
        text.push('\n');
        for n in notes {
            text.push_str("note: ");
            text.push_str(n);
            text.push('\n');
        }
    }
    text
}
