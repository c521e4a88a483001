//! Reporting: the metrics and log lines of a plan, status conditions and Events of failures.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use podium_api::{ElectionGroup, Guarded};
use podium_election::{self as election, Note, Plan, Subject};
use serde_json::json;
use tracing::{info, warn};

use crate::apply;
use crate::context::Context;
use crate::error::{Error, brief};
use crate::events::Unpublished;
use crate::lane::Lane;
use crate::promotions::{PASSED_OVER_FOR, PROMOTION_TRIES};

/// Says that a pod whose promotion kept failing is passed over for a while.
pub(super) fn passed_over(group: &ElectionGroup, pod: &str, err: &Error, ctx: &Context) {
    let note = Note {
        subject: Subject::Group,
        warning: true,
        reason: "PromotionFailed",
        message: format!(
            "promoting {pod} failed {PROMOTION_TRIES} times ({err}); passing it over for {}s",
            PASSED_OVER_FOR.as_secs()
        ),
    };
    publish(group, &[note], ctx);
}

/// The metric and log line of a change of leader, once its term is recorded in status.
pub(super) fn transition(group: &ElectionGroup, ns: &str, plan: &Plan, ctx: &Context) {
    if let Some(reason) = plan.transition {
        ctx.writer.metrics.leader_changed(reason);
        info!(group = %group.name_any(), namespace = %ns, leader = ?plan.status.leader, term = plan.status.term,
              reason = reason.as_str(), "leader changed");
    }
}

/// Metrics of a plan applied in full; `failover_since` is when the leader it replaced became unfit.
pub(super) fn record(
    group: &ElectionGroup,
    ns: &str,
    plan: &Plan,
    failover_since: Option<Timestamp>,
    ctx: &Context,
) {
    let name = group.name_any();
    if let Some(since) = failover_since {
        ctx.writer
            .metrics
            .failover_took(Timestamp::now().duration_since(since).as_secs_f64());
    }
    let ready = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == election::READY);
    ctx.writer
        .metrics
        .group_ready(&format!("{ns}/{name}"), ready.map(|c| c.status.as_str()));
}

/// Marks the group not Ready because a pod write failed, and says why, so that a missing
/// permission is visible in `kubectl describe eg` and not only in the operator's log.
pub(super) async fn write_failure(
    group: &mut ElectionGroup,
    err: &Error,
    ctx: &Context,
    lane: &Lane,
) {
    let message = err.to_string();
    let now = Timestamp::now();
    let old = group.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = group.metadata.generation;
    let ready = Condition {
        type_: election::READY.into(),
        status: "False".into(),
        reason: "PodWriteFailed".into(),
        message: message.clone(),
        observed_generation: group.metadata.generation,
        last_transition_time: old
            .conditions
            .iter()
            .find(|c| c.type_ == election::READY && c.status == "False")
            .map_or(Time(now), |c| c.last_transition_time.clone()),
    };
    status.conditions.retain(|c| c.type_ != election::READY);
    status.conditions.insert(0, ready);
    if status != old
        && let Err(e) = apply::status(group, &status, &ctx.writer, lane).await
    {
        warn!(error = %e, "cannot report the failed pod write in status either");
    }
    let note = Note {
        subject: Subject::Group,
        warning: true,
        reason: "PodWriteFailed",
        message,
    };
    // Not Ready until a plan applies in full: the leaderless alert reads this gauge.
    let ns = group.namespace().unwrap_or_default();
    ctx.writer
        .metrics
        .group_ready(&format!("{ns}/{}", group.name_any()), Some("False"));
    publish(group, &[note], ctx);
}

/// Reports a group the controller cannot even read (its spec does not match the schema it knows).
pub(super) async fn unreadable(
    obj: &Guarded,
    error: &str,
    ctx: &Context,
    lane: &Lane,
) -> Result<Action, Error> {
    let name = obj.name_any();
    let ns = obj
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let message = format!("cannot read spec: {error}");
    let api: Api<ElectionGroup> = Api::namespaced(ctx.writer.client.clone(), &ns);
    let condition = json!({
        "type": election::SPEC_VALID, "status": "False", "reason": "InvalidSpec", "message": message,
        "observedGeneration": obj.meta().generation, "lastTransitionTime": Timestamp::now(),
    });
    let patch = json!({
        "metadata": {"resourceVersion": obj.meta().resource_version},
        "status": {"conditions": [condition], "observedGeneration": obj.meta().generation},
    });
    let _slot = ctx.writer.slot(lane).await?;
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|source| Error::Status {
            namespace: ns.clone(),
            group: name.clone(),
            source,
        })?;
    let ev = Event {
        type_: EventType::Warning,
        reason: "InvalidSpec".into(),
        note: Some(message),
        action: "Validate".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        match e {
            Unpublished::Api(e) => warn!(error = %brief(&e), "cannot publish event"),
            Unpublished::NotLeading => return Err(Error::NotLeading),
        }
    }
    Ok(Action::await_change())
}

/// Publishes Events in the background: an Event is never worth delaying a failover, and a
/// failure to publish one is logged, never fatal.
pub(super) fn publish(group: &ElectionGroup, notes: &[Note], ctx: &Context) {
    if notes.is_empty() {
        return;
    }
    let group_ref = group.object_ref(&());
    let events: Vec<(Event, ObjectReference)> = notes
        .iter()
        .map(|n| {
            let reference = match &n.subject {
                Subject::Group => group_ref.clone(),
                Subject::Pod(pod) => ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.clone()),
                    namespace: group.namespace(),
                    ..Default::default()
                },
            };
            let ev = Event {
                type_: if n.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: n.reason.into(),
                // The API server refuses an Event whose message exceeds 1024 characters.
                note: Some(n.message.chars().take(1000).collect()),
                action: match n.reason {
                    "LeaderElected" | "BecameLeader" | "LostLeadership" => "Elect",
                    "HandoffSkipped" | "HandoffRejected" => "Handoff",
                    _ => "Reconcile",
                }
                .into(),
                secondary: matches!(n.subject, Subject::Pod(_)).then(|| group_ref.clone()),
            };
            (ev, reference)
        })
        .collect();
    ctx.recorder.publish_later(events);
}
