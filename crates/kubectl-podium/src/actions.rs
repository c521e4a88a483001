//! The commands that write: `handoff` (the `podium.dev/handoff-to` annotation), `pause` and
//! `resume` (`spec.paused`), each one merge patch on the group.

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use podium_api::HANDOFF_ANNOTATION;
use serde_json::json;

use crate::cluster::{Error, Target};
use crate::standing::{Standing, view};

/// The field manager of the plugin's writes.
const MANAGER: &str = "kubectl-podium";

/// Requests a handoff of `group` to `to` (or to the next candidate); returns what to print
/// and warnings for stderr.
pub async fn handoff(
    t: &Target,
    group: &str,
    to: Option<&str>,
) -> Result<(String, Vec<String>), Error> {
    let mut warnings = Vec::new();
    let (facts, _) = t.facts(Some(group)).await?;
    let g = facts
        .group(group)
        .ok_or_else(|| t.not_found("ElectionGroup", group))?;
    let v = view(&facts, g);
    if v.paused {
        warnings.push(format!(
            "{group} is paused: podium performs the handoff only after `kubectl podium resume {group}`"
        ));
    }
    let target = match to {
        Some(pod) => {
            match v.pod(pod) {
                None if !facts.pods.iter().any(|p| p.name_any() == pod) => {
                    return Err(t.not_found("pod", pod));
                }
                None => warnings.push(format!(
                    "{pod} is not selected by {group}: podium will refuse the handoff (HandoffRejected)"
                )),
                Some(_) if v.leader.as_deref() == Some(pod) => warnings.push(format!(
                    "{pod} already leads {group}: podium will refuse the handoff (HandoffRejected)"
                )),
                Some(p) if p.standing != Standing::Candidate => warnings.push(format!(
                    "{pod} is not a candidate ({}): podium will refuse the handoff (HandoffRejected)",
                    p.standing.words()
                )),
                Some(_) => {}
            }
            pod
        }
        None => {
            if v.candidates()
                .all(|c| v.leader.as_deref() == Some(c.name.as_str()))
            {
                warnings.push(format!(
                    "{group} has no other candidate: podium will skip the handoff (HandoffSkipped)"
                ));
            }
            "any"
        }
    };
    let patch = json!({"metadata": {"annotations": {HANDOFF_ANNOTATION: target}}});
    t.groups()
        .patch(group, &params(), &Patch::Merge(patch))
        .await
        .map_err(|e| t.error(e, "patch", "electiongroups"))?;
    let whom = if target == "any" {
        "the next candidate".to_string()
    } else {
        target.to_string()
    };
    Ok((
        format!(
            "electiongroup/{group}: handoff to {whom} requested ({HANDOFF_ANNOTATION}={target}); podium performs it once and removes the annotation. Follow it with `kubectl podium watch {group}`.\n"
        ),
        warnings,
    ))
}

/// Sets `spec.paused`; returns what to print.
pub async fn set_paused(t: &Target, group: &str, paused: bool) -> Result<String, Error> {
    let g = t.group(group).await?;
    let word = if paused { "paused" } else { "resumed" };
    if g.spec.paused == paused {
        return Ok(format!(
            "electiongroup/{group} is already {}\n",
            if paused {
                "paused"
            } else {
                "running (not paused)"
            }
        ));
    }
    let patch = json!({"spec": {"paused": paused}});
    t.groups()
        .patch(group, &params(), &Patch::Merge(patch))
        .await
        .map_err(|e| t.error(e, "patch", "electiongroups"))?;
    let what = if paused {
        format!(": leadership does not move until `kubectl podium resume {group}`")
    } else {
        String::new()
    };
    Ok(format!("electiongroup/{group} {word}{what}\n"))
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.to_string()),
        ..PatchParams::default()
    }
}
