//! Applies a plan to the cluster: every write fenced by the controller Lease and conditional on
//! the resourceVersion the decision was made from.
//!
//! A write whose precondition fails is not an error: the object is read afresh (straight from the
//! API server, into the overlay) and the reconciler decides again at once. Nothing here backs off.

use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::cache::CachedPod;
use crate::error::{Error, NotLeading};
use crate::lane::Lane;
use crate::writer::Writer;
use podium_api::MANAGER;
use podium_api::{ElectionGroup, FINALIZER, GROUP_ANNOTATION, HANDOFF_ANNOTATION, TERM_ANNOTATION};
use podium_election::{PodChange, PodWrite};

/// How a conditional write ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The write landed (or had nothing to do).
    Done,
    /// The object changed since the decision; it has been re-read, decide again.
    Stale,
    /// No object of that name exists any more (recorded in the overlay).
    Gone,
}

/// Every write names podium as its field manager, so `managedFields` tells who wrote what.
fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// The API server refused a precondition: a changed resourceVersion or UID.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Reads a group afresh after a conflict so that the next decision starts from the truth.
async fn reread_group(group: &ElectionGroup, wr: &Writer) -> Result<Outcome, Error> {
    let (ns, name) = (group.namespace().unwrap_or_default(), group.name_any());
    let api: Api<ElectionGroup> = Api::namespaced(wr.client.clone(), &ns);
    match api.get_opt(&name).await {
        Ok(Some(fresh)) => wr.overlay.group_written(fresh),
        Ok(None) => {}
        Err(source) => {
            return Err(Error::Metadata {
                namespace: ns,
                group: name,
                source,
            });
        }
    }
    Ok(Outcome::Stale)
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: changed values, and `null` for
/// every key `new` no longer has.
pub fn merge_diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov) => {
                        patch.insert(k.clone(), merge_diff(ov, nv));
                    }
                    None => {
                        patch.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// Writes the group's status with a resourceVersion precondition; `current` becomes the result.
/// A merge patch of the difference, which the API server applies faster than server-side apply
/// and which, with the version as precondition, cannot undo anyone else's change.
pub async fn status(
    current: &mut ElectionGroup,
    status: &podium_api::ElectionGroupStatus,
    wr: &Writer,
    lane: &Lane,
) -> Result<Outcome, Error> {
    let (ns, name) = (current.namespace().unwrap_or_default(), current.name_any());
    let api: Api<ElectionGroup> = Api::namespaced(wr.client.clone(), &ns);
    let old = serde_json::to_value(current.status.as_ref()).unwrap_or(Value::Null);
    let new = serde_json::to_value(status).unwrap_or(Value::Null);
    let body = json!({
        "metadata": {"resourceVersion": current.resource_version()},
        "status": merge_diff(&old, &new),
    });
    let slot = wr.slot(lane).await?;
    let written = api
        .patch_status(&name, &params(), &Patch::Merge(body))
        .await;
    drop(slot);
    match written {
        Ok(written) => {
            wr.metrics.status_written();
            wr.overlay.group_written(written.clone());
            *current = written;
            Ok(Outcome::Done)
        }
        Err(e) if is_conflict(&e) => reread_group(current, wr).await,
        Err(source) => Err(Error::Status {
            namespace: ns,
            group: name,
            source,
        }),
    }
}

/// Merge-patches the group's metadata, conditional on the version `current` holds.
async fn group_metadata(
    current: &mut ElectionGroup,
    metadata: Value,
    wr: &Writer,
    lane: &Lane,
) -> Result<Outcome, Error> {
    let (ns, name) = (current.namespace().unwrap_or_default(), current.name_any());
    let api: Api<ElectionGroup> = Api::namespaced(wr.client.clone(), &ns);
    let mut metadata = metadata;
    metadata["resourceVersion"] = json!(current.resource_version());
    let slot = wr.slot(lane).await?;
    let written = api
        .patch_metadata(
            &name,
            &params(),
            &Patch::Merge(json!({ "metadata": metadata })),
        )
        .await;
    drop(slot);
    match written {
        Ok(meta) => {
            current.metadata = meta.metadata;
            wr.overlay.group_written(current.clone());
            Ok(Outcome::Done)
        }
        Err(e) if is_conflict(&e) => reread_group(current, wr).await,
        Err(source) => Err(Error::Metadata {
            namespace: ns,
            group: name,
            source,
        }),
    }
}

/// Adds podium's finalizer next to whatever finalizers the group already has.
pub async fn add_finalizer(
    current: &mut ElectionGroup,
    wr: &Writer,
    lane: &Lane,
) -> Result<Outcome, Error> {
    let mut all = current.finalizers().to_vec();
    all.push(FINALIZER.to_string());
    group_metadata(current, json!({ "finalizers": all }), wr, lane).await
}

/// Removes podium's finalizer and keeps every other one.
pub async fn remove_finalizer(
    current: &mut ElectionGroup,
    wr: &Writer,
    lane: &Lane,
) -> Result<Outcome, Error> {
    let rest: Vec<&String> = current
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let rest = json!(rest);
    group_metadata(current, json!({ "finalizers": rest }), wr, lane).await
}

/// Removes the handoff request that was just acted on; a newer request makes this conflict.
pub async fn clear_handoff_request(
    current: &mut ElectionGroup,
    wr: &Writer,
    lane: &Lane,
) -> Result<Outcome, Error> {
    group_metadata(
        current,
        json!({"annotations": {HANDOFF_ANNOTATION: null}}),
        wr,
        lane,
    )
    .await
}

/// The keys podium writes on a pod: the role label(s) to set or clear and its annotations.
pub struct PodKeys<'a> {
    /// The group's name, for `podium.dev/group`.
    pub group: &'a str,
    /// `spec.roleLabel`.
    pub role_label: &'a str,
    /// A role key podium wrote earlier and now removes, after a change of `roleLabel`.
    pub old_role_label: Option<&'a str>,
}

/// The merge patch of one pod write: podium's keys only, with the pod's UID and version as
/// preconditions.
pub fn pod_patch(w: &PodWrite, keys: &PodKeys<'_>) -> Value {
    let (labels, annotations) = match &w.change {
        PodChange::Label { role, term } => (
            json!({ keys.role_label: role }),
            json!({TERM_ANNOTATION: term.map(|t| t.to_string()), GROUP_ANNOTATION: keys.group}),
        ),
        PodChange::Release { role_label: true } => (
            json!({ keys.role_label: null }),
            json!({TERM_ANNOTATION: null, GROUP_ANNOTATION: null}),
        ),
        PodChange::Release { role_label: false } => (
            json!({}),
            json!({TERM_ANNOTATION: null, GROUP_ANNOTATION: null}),
        ),
    };
    let mut labels = labels;
    if let Some(old) = keys
        .old_role_label
        .filter(|o| w.drop_old_key && *o != keys.role_label)
    {
        labels[old] = Value::Null;
    }
    json!({"metadata": {
        "uid": w.uid,
        "resourceVersion": w.resource_version,
        "labels": labels,
        "annotations": annotations,
    }})
}

/// Why a pod write was not made or failed.
#[derive(Debug)]
pub enum PodWriteError {
    /// The controller Lease was not held when the write's turn came.
    NotLeading,
    /// The API server refused it or could not be reached.
    Api(kube::Error),
}

impl From<kube::Error> for PodWriteError {
    fn from(e: kube::Error) -> Self {
        Self::Api(e)
    }
}

impl From<NotLeading> for PodWriteError {
    fn from(_: NotLeading) -> Self {
        Self::NotLeading
    }
}

/// Writes one pod, conditional on the UID and version the decision saw.
pub async fn pod(
    ns: &str,
    w: &PodWrite,
    keys: &PodKeys<'_>,
    cached: Option<Arc<CachedPod>>,
    wr: &Writer,
    lane: &Lane,
) -> Result<Outcome, PodWriteError> {
    let api: Api<Pod> = Api::namespaced(wr.client.clone(), ns);
    let patch = pod_patch(w, keys);
    let slot = wr.slot(lane).await?;
    let written = api
        .patch_metadata(&w.pod, &params(), &Patch::Merge(&patch))
        .await;
    drop(slot);
    match written {
        Ok(written) => {
            wr.metrics.pod_written();
            if let Some(cached) = cached {
                wr.overlay.pod_written(&cached, written.metadata);
            }
            Ok(Outcome::Done)
        }
        Err(e) if is_conflict(&e) => {
            // Read the pod afresh (or learn it is gone) so the next decision sees the truth.
            match api.get_opt(&w.pod).await? {
                Some(fresh) if fresh.uid().as_deref() == Some(w.uid.as_str()) => {
                    wr.overlay.pod_read(CachedPod::from_pod(fresh))
                }
                // A same-named replacement is a different pod: the cache will bring it.
                Some(_) | None => wr.overlay.pod_deleted(&w.uid),
            }
            Ok(Outcome::Stale)
        }
        Err(e) if is_not_found(&e) => {
            wr.overlay.pod_deleted(&w.uid);
            Ok(Outcome::Gone)
        }
        Err(e) => Err(e.into()),
    }
}

/// Who holds the Lease named after the group.
#[derive(Debug, Clone)]
pub enum LeaseMirror {
    /// No Lease of that name.
    Absent,
    /// A Lease this group controls (ownerReference with its UID).
    Ours(Box<Lease>),
    /// A Lease someone else made: never touched.
    Foreign,
}

/// Reads the Lease a `publishLease` group mirrors into.
pub async fn lease_mirror(group: &ElectionGroup, wr: &Writer) -> Result<LeaseMirror, Error> {
    let (ns, name) = (group.namespace().unwrap_or_default(), group.name_any());
    let api: Api<Lease> = Api::namespaced(wr.client.clone(), &ns);
    let lease = api.get_opt(&name).await.map_err(|source| Error::Lease {
        namespace: ns,
        group: name,
        source,
    })?;
    let uid = group.uid();
    Ok(match lease {
        None => LeaseMirror::Absent,
        Some(l)
            if l.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref()) =>
        {
            LeaseMirror::Ours(Box::new(l))
        }
        Some(_) => LeaseMirror::Foreign,
    })
}

/// Mirrors the leader into the group's own Lease, when it differs; a foreign Lease is left alone.
pub async fn publish_lease(
    group: &ElectionGroup,
    mirror: LeaseMirror,
    status: &podium_api::ElectionGroupStatus,
    wr: &Writer,
    lane: &Lane,
) -> Result<Outcome, Error> {
    let (ns, name) = (group.namespace().unwrap_or_default(), group.name_any());
    let api: Api<Lease> = Api::namespaced(wr.client.clone(), &ns);
    let err = |source| Error::Lease {
        namespace: ns.clone(),
        group: name.clone(),
        source,
    };
    let since = status.leader_since.as_ref().map(|t| MicroTime(t.0));
    let want = k8s_openapi::api::coordination::v1::LeaseSpec {
        holder_identity: status.leader.clone(),
        lease_transitions: Some(i32::try_from(status.term).unwrap_or(i32::MAX)),
        acquire_time: since.clone(),
        renew_time: since,
        ..Default::default()
    };
    let mut lease = match mirror {
        LeaseMirror::Foreign => return Ok(Outcome::Done),
        LeaseMirror::Ours(l) => *l,
        LeaseMirror::Absent => Lease {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.clone()),
                owner_references: group.controller_owner_ref(&()).map(|o| vec![o]),
                ..Default::default()
            },
            spec: None,
        },
    };
    let have = lease.spec.clone().unwrap_or_default();
    let same = have.holder_identity == want.holder_identity
        && have.lease_transitions == want.lease_transitions
        && have.acquire_time == want.acquire_time
        && have.renew_time == want.renew_time;
    if same && lease.metadata.resource_version.is_some() {
        return Ok(Outcome::Done);
    }
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = want.holder_identity;
    spec.lease_transitions = want.lease_transitions;
    spec.acquire_time = want.acquire_time;
    spec.renew_time = want.renew_time;
    let slot = wr.slot(lane).await?;
    let result = if lease.metadata.resource_version.is_some() {
        api.replace(&name, &PostParams::default(), &lease).await
    } else {
        api.create(&PostParams::default(), &lease).await
    };
    drop(slot);
    match result {
        Ok(_) => Ok(Outcome::Done),
        Err(e) if is_conflict(&e) => Ok(Outcome::Stale),
        Err(source) => Err(err(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_diff_sets_changes_and_nulls_what_is_gone() {
        let old = json!({"leader": "a", "term": 1, "lastTransition": {"from": "x", "to": "a"}, "conditions": [1, 2]});
        let new = json!({"term": 2, "lastTransition": {"to": "b"}, "conditions": [1]});
        assert_eq!(
            merge_diff(&old, &new),
            json!({"leader": null, "term": 2, "lastTransition": {"from": null, "to": "b"}, "conditions": [1]})
        );
        assert_eq!(merge_diff(&Value::Null, &new), new);
    }
}
