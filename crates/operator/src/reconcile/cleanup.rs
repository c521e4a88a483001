//! Cleanup of a deleted group: podium's labels and annotations off its pods, its owned route's
//! slices emptied, then its finalizer.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use podium_api::{ElectionGroup, FINALIZER, FOLLOWER, GROUP_ANNOTATION, Guarded, LEADER};
use podium_election::{self as election, PodChange};
use tracing::info;

use super::Pass;
use crate::apply::{self, Outcome, PodKeys, PodWriteError};
use crate::cache::CachedPod;
use crate::context::Context;
use crate::error::Error;
use crate::lane::Lane;
use crate::membership::{Claim, anchor};
use crate::owned;

/// Removes what podium wrote on the group's pods, then the finalizer (keeping everyone else's).
pub(super) async fn cleanup(
    group: &mut ElectionGroup,
    ns: &str,
    ctx: &Context,
    lane: &Lane,
) -> Result<Pass, Error> {
    let name = group.name_any();
    ctx.nodes
        .forget(&ObjectRef::<Guarded>::new(&name).within(ns));
    if !group.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Pass::Done(Action::await_change()));
    }
    let keys = PodKeys {
        group: &name,
        role_label: &group.spec.role_label,
        old_role_label: group.status.as_ref().and_then(|s| s.role_label.as_deref()),
    };
    // Those the cache shows labelled for the group, and those its selector picks, whose label
    // podium may have just written without the cache showing it yet.
    let selected = Claim::of(group).selector.map(|s| anchor(&s));
    let mut pods = ctx.pods.labelled_for(ns, &name);
    pods.extend(
        selected
            .map(|a| ctx.pods.candidates(ns, &a))
            .unwrap_or_default(),
    );
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    pods.dedup_by(|a, b| a.name == b.name);
    let released: Vec<Arc<CachedPod>> = pods
        .iter()
        .map(|p| ctx.writer.overlay.pod(p))
        .filter(|p| p.annotations.get(GROUP_ANNOTATION) == Some(&name))
        .filter(|p| !ctx.writer.overlay.pod_gone(p))
        .collect();
    for pod in &released {
        let podium_value = |key: &str| {
            pod.labels
                .get(key)
                .is_some_and(|v| v == LEADER || v == FOLLOWER)
        };
        let w = election::PodWrite {
            pod: pod.name.clone(),
            uid: pod.uid.clone(),
            resource_version: pod.resource_version.clone(),
            drop_old_key: keys.old_role_label.is_some_and(podium_value),
            change: PodChange::Release {
                role_label: podium_value(keys.role_label),
            },
        };
        match apply::pod(ns, &w, &keys, Some(pod.clone()), &ctx.writer, lane).await {
            Ok(Outcome::Done | Outcome::Gone) => ctx.pods.forget_out_of_scope(ns, &w.pod, &w.uid),
            Ok(Outcome::Stale) => return Ok(Pass::Stale),
            Err(PodWriteError::NotLeading) => return Err(Error::NotLeading),
            Err(PodWriteError::Api(source)) => {
                return Err(Error::PodWrite {
                    namespace: ns.to_string(),
                    pod: w.pod,
                    role: "none",
                    source,
                });
            }
        }
    }
    // The garbage collector deletes the owned route after the group; until then its slices
    // must not route to a pod podium no longer labels.
    let route = owned::Writes {
        writer: &ctx.writer,
        owned: &ctx.owned,
        lane,
        group,
        ns,
        route: None,
    };
    if route.empty().await? == Outcome::Stale {
        return Ok(Pass::Stale);
    }
    if apply::remove_finalizer(group, &ctx.writer, lane).await? == Outcome::Stale {
        return Ok(Pass::Stale);
    }
    ctx.writer
        .metrics
        .group_ready(&format!("{ns}/{name}"), None);
    info!(group = %name, namespace = %ns, pods = released.len(), "group deleted; labels removed");
    Ok(Pass::Done(Action::await_change()))
}
