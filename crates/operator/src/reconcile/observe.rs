//! Observation: what the caches (and podium's own newer writes) show of a group's pods.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use podium_api::{ElectionGroup, Guarded, LEADER};
use podium_election::validation::Settings;
use podium_election::{self as election};

use crate::cache::CachedPod;
use crate::context::Context;
use crate::error::Error;
use crate::membership::{Claim, RoleKeys, anchor, membership};

/// Gathers the group's members, departed members and conflicts, with the node silences of
/// those whose node is watched, members sorted by name.
pub(super) async fn observe(
    current: &ElectionGroup,
    ns: &str,
    settings: &Settings,
    ctx: &Context,
) -> Result<Gathered, Error> {
    let unseen = unseen_successor(current, ns, ctx).await?;
    let mut g = gather(current, ns, settings, unseen, ctx);
    node_silences(current, settings, &mut g.members, ctx).await;
    // Stable order, so that Events and writes do not depend on the cache's hash order.
    g.members.sort_by(|a, b| a.name.cmp(&b.name));
    g.departed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(g)
}

/// What the caches show of a group's pods.
pub(super) struct Gathered {
    /// The group's members.
    pub members: Vec<election::Member>,
    /// Pods podium labelled for the group that left it.
    pub departed: Vec<election::Member>,
    /// Pods that more than one group selects.
    pub conflicts: Vec<String>,
    /// The pods read, by name.
    pub pods: HashMap<String, Arc<CachedPod>>,
}

/// The reserved successor when the pod cache does not show it (yet), read from the API server:
/// a failover may label that pod before writing status, so a decision that moves the
/// reservation elsewhere must see the pod to fence it first.
async fn unseen_successor(
    current: &ElectionGroup,
    ns: &str,
    ctx: &Context,
) -> Result<Option<Arc<CachedPod>>, Error> {
    let Some(s) = current.status.as_ref().and_then(|s| s.successor.as_ref()) else {
        return Ok(None);
    };
    let (Some(name), Some(uid)) = (s.pod.as_deref(), s.uid.as_deref()) else {
        return Ok(None);
    };
    let cached = ctx.pods.get(ns, name);
    if cached.is_some_and(|p| p.uid == uid) || ctx.writer.overlay.uid_gone(uid) {
        return Ok(None);
    }
    let api: Api<Pod> = Api::namespaced(ctx.writer.client.clone(), ns);
    let read = api.get_opt(name).await.map_err(|source| Error::PodRead {
        namespace: ns.to_string(),
        pod: name.to_string(),
        source,
    })?;
    match read {
        Some(p) if p.uid().as_deref() == Some(uid) => Ok(Some(Arc::new(CachedPod::from_pod(p)))),
        _ => {
            ctx.writer.overlay.pod_deleted(uid);
            Ok(None)
        }
    }
}

/// Collects the group's members from the pod cache, with podium's newer writes and reads.
fn gather(
    current: &ElectionGroup,
    ns: &str,
    settings: &Settings,
    unseen: Option<Arc<CachedPod>>,
    ctx: &Context,
) -> Gathered {
    let name = current.name_any();
    // The pods the selector can match, by its anchor label, and those podium labelled for the
    // group (they may have left the selector).
    // Also the pods status names: a leader whose cached copy predates podium's own write (so
    // neither its labels nor its annotation index it here yet) must still be seen.
    let status = current.status.as_ref();
    let named = status
        .map(|s| {
            let successor = s.successor.as_ref().and_then(|x| x.pod.as_deref());
            [s.leader.as_deref(), successor]
        })
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .filter_map(|n| ctx.pods.get(ns, n));
    let pods: HashMap<String, Arc<CachedPod>> = ctx
        .pods
        .candidates(ns, &anchor(&settings.selector))
        .into_iter()
        .chain(ctx.pods.labelled_for(ns, &name))
        .chain(named)
        .filter(|p| !ctx.writer.overlay.pod_gone(p))
        .map(|p| ctx.writer.overlay.pod(&p))
        .chain(unseen)
        .map(|p| (p.name.clone(), p))
        .collect();
    // Only groups that select one of these pods can hold one of them.
    let mut others: Vec<Arc<Claim>> = pods
        .values()
        .flat_map(|p| ctx.claims.selecting(ns, &p.labels))
        .collect();
    others.sort_by(|a, b| a.name.cmp(&b.name));
    others.dedup_by(|a, b| a.name == b.name);
    let keys = RoleKeys {
        current: &settings.role_label,
        previous: current
            .status
            .as_ref()
            .and_then(|s| s.role_label.as_deref()),
    };
    let m = membership(
        &Claim::of(current),
        &settings.selector,
        keys,
        &others,
        pods.values().map(|p| p.as_ref()),
    );
    Gathered {
        members: m.members,
        departed: m.departed,
        conflicts: m.conflicts,
        pods,
    }
}

/// Watches the node Leases of the group's leader(s) and reserved successor, and tells each
/// member on those nodes how long its node has gone unrenewed. A node that looks lost is
/// confirmed with a read of its Lease first.
async fn node_silences(
    group: &ElectionGroup,
    settings: &Settings,
    members: &mut [election::Member],
    ctx: &Context,
) {
    let name = group.name_any();
    let status = group.status.as_ref();
    let leader = status.and_then(|s| s.leader.as_deref());
    let successor = status
        .and_then(|s| s.successor.as_ref())
        .and_then(|s| s.pod.as_deref());
    let mut nodes: Vec<(String, Duration)> = members
        .iter()
        .filter(|m| {
            // Only pods podium labelled for this group: a foreign pod's labels and node name
            // must not decide what podium watches.
            (m.role.as_deref() == Some(LEADER) && m.group.as_deref() == Some(name.as_str()))
                || Some(m.name.as_str()) == leader
                || Some(m.name.as_str()) == successor
        })
        .filter_map(|m| m.node.clone())
        .map(|n| (n, settings.node_loss))
        .collect();
    nodes.sort();
    nodes.dedup();
    let key = ObjectRef::<Guarded>::new(&name).within(&group.namespace().unwrap_or_default());
    let mut silences = ctx.nodes.observe(&key, &nodes);
    let (watched, failing) = ctx.nodes.watched();
    ctx.writer.metrics.node_lease_watches(watched, failing);
    let lost: Vec<String> = silences
        .iter()
        .filter(|(_, s)| **s >= settings.node_loss)
        .map(|(n, _)| n.clone())
        .collect();
    for node in lost {
        if !ctx.nodes.confirm_lost(&node).await {
            silences.remove(&node);
        }
    }
    for m in members {
        m.node_silence = m.node.as_ref().and_then(|n| silences.get(n).copied());
    }
}
