//! The owned route's objects as podium wants them: the Services and their EndpointSlices, built
//! from the group's spec and the cached pods alone (no I/O), and the comparison with what exists.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ObjectReference, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use podium_api::{
    ElectionGroup, GROUP_LABEL, LeaderService, MANAGED_BY_LABEL, MANAGER, SERVICE_NAME_LABEL,
    SLICE_MANAGED_BY_LABEL, SLICE_MANAGER, ServiceType,
};
use serde_json::{Value, json};

use crate::cache::CachedPod;

/// An address family, with its slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4: the slice is named after the Service.
    V4,
    /// IPv6: the slice is `<service>-v6`.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The slice's `addressType`.
    pub fn address_type(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }

    /// The name of this family's slice of Service `service`.
    pub fn slice_name(self, service: &str) -> String {
        match self {
            Self::V4 => service.to_string(),
            Self::V6 => format!("{service}-v6"),
        }
    }

    fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}

/// The group as owner of what podium creates for it: the garbage collector deletes those with
/// the group, without blocking the group's deletion.
pub fn owner(group: &ElectionGroup) -> Option<OwnerReference> {
    let mut o = group.controller_owner_ref(&())?;
    o.block_owner_deletion = Some(false);
    Some(o)
}

/// Whether `obj` is controlled by the group with this UID.
pub fn owned_by<K: Resource>(obj: &K, group_uid: &str) -> bool {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == group_uid)
}

/// The Service `name` of the group: no selector (podium writes its EndpointSlices), the spec's
/// ports, type, labels and annotations, podium's own labels, and the group as owner.
pub fn service(group: &ElectionGroup, name: &str, spec: &LeaderService) -> Service {
    let mut labels = spec.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGER.into());
    labels.insert(GROUP_LABEL.into(), group.name_any());
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: group.namespace(),
            labels: Some(labels),
            annotations: (!spec.annotations.is_empty()).then(|| spec.annotations.clone()),
            owner_references: owner(group).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(spec.type_.as_str().into()),
            ports: Some(
                spec.ports
                    .iter()
                    .map(|p| ServicePort {
                        name: p.name.clone(),
                        port: p.port,
                        target_port: Some(
                            p.target_port.clone().unwrap_or(IntOrString::Int(p.port)),
                        ),
                        protocol: Some(p.protocol.as_str().into()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// What of a Service podium sets, as JSON: its labels and annotations (only the keys podium
/// sets), selector, type and ports (with the node ports the API server gave, kept while the
/// type has them).
fn service_projection(s: &Service, keys: &Service) -> Value {
    let pick = |m: &Option<BTreeMap<String, String>>, want: &Option<BTreeMap<String, String>>| {
        let m = m.clone().unwrap_or_default();
        let picked: BTreeMap<&String, &String> = want
            .iter()
            .flatten()
            .filter_map(|(k, _)| m.get_key_value(k))
            .collect();
        json!(picked)
    };
    let spec = s.spec.clone().unwrap_or_default();
    let ports: Vec<Value> = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            json!({"name": p.name.unwrap_or_default(), "port": p.port,
                   "targetPort": p.target_port.unwrap_or(IntOrString::Int(p.port)),
                   "protocol": p.protocol.unwrap_or_else(|| "TCP".into())})
        })
        .collect();
    json!({
        "metadata": {"labels": pick(&s.metadata.labels, &keys.metadata.labels),
                     "annotations": pick(&s.metadata.annotations, &keys.metadata.annotations)},
        "spec": {"selector": spec.selector, "type": spec.type_.unwrap_or_else(|| "ClusterIP".into()),
                 "ports": ports},
    })
}

/// The merge patch that makes `have` what podium wants (`want`), or `None` when it already is.
/// Ports are replaced whole, keeping each one's node port while the type has node ports; labels
/// and annotations that are not the spec's are left alone.
pub fn service_patch(have: &Service, want: &Service) -> Option<Value> {
    if service_projection(have, want) == service_projection(want, want) {
        return None;
    }
    let mut want = want.clone();
    let node_ports = want
        .spec
        .as_ref()
        .is_some_and(|s| s.type_.as_deref() != Some(ServiceType::ClusterIP.as_str()));
    let had = have
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    if let Some(ports) = want.spec.as_mut().and_then(|s| s.ports.as_mut()) {
        for p in ports.iter_mut().filter(|_| node_ports) {
            p.node_port = had
                .iter()
                .find(|h| h.port == p.port && h.protocol == p.protocol)
                .and_then(|h| h.node_port);
        }
    }
    let spec = want.spec.unwrap_or_default();
    let mut patch = json!({
        "metadata": {"labels": want.metadata.labels, "resourceVersion": have.metadata.resource_version,
                     "uid": have.metadata.uid},
        "spec": {"type": spec.type_, "ports": spec.ports},
    });
    if let Some(a) = want.metadata.annotations {
        patch["metadata"]["annotations"] = json!(a);
    }
    if have.spec.as_ref().is_some_and(|s| s.selector.is_some()) {
        patch["spec"]["selector"] = Value::Null;
    }
    Some(patch)
}

/// The ports of the Service as the pod serves them, as the EndpointSlice controller resolves
/// them: a numeric target port as is, a named one from the pod's container ports of that name
/// and protocol; a port the pod lacks is left out.
pub fn resolve_ports(spec: &LeaderService, pod: &CachedPod) -> Vec<EndpointPort> {
    spec.ports
        .iter()
        .filter_map(|p| {
            let port = match &p.target_port {
                None => p.port,
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(name)) => {
                    pod.ports
                        .iter()
                        .find(|c| c.name == *name && c.protocol == p.protocol)?
                        .port
                }
            };
            Some(EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(p.protocol.as_str().into()),
                app_protocol: None,
            })
        })
        .collect()
}

/// The pod's endpoint in a slice of `family`, if it has an address of that family.
fn endpoint(pod: &CachedPod, family: Family) -> Option<Endpoint> {
    let ip = pod.ips.iter().find(|ip| Family::of(ip) == family)?;
    Some(Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(pod.is_ready() && !pod.terminating),
            serving: Some(pod.is_ready()),
            terminating: Some(pod.terminating),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(pod.uid.clone()),
            ..ObjectReference::default()
        }),
        node_name: pod.node.clone(),
        ..Endpoint::default()
    })
}

/// Whether any of `pods` has an address of `family`.
pub fn has_family(pods: &[&CachedPod], family: Family) -> bool {
    pods.iter()
        .any(|p| p.ips.iter().any(|ip| Family::of(ip) == family))
}

/// The EndpointSlice of Service `service` for `family`, listing `pods` (the leader, or the
/// Ready followers): each pod with an address of the family, whose ports resolve as the first
/// such pod's do (a slice has one set of ports; a pod whose differ is left out).
pub fn slice(
    group: &ElectionGroup,
    service: &str,
    family: Family,
    spec: &LeaderService,
    pods: &[&CachedPod],
) -> EndpointSlice {
    let mut ports: Option<Vec<EndpointPort>> = None;
    let mut endpoints = Vec::new();
    for pod in pods {
        let Some(e) = endpoint(pod, family) else {
            continue;
        };
        let resolved = resolve_ports(spec, pod);
        match &ports {
            Some(p) if *p != resolved => continue,
            Some(_) => {}
            None => ports = Some(resolved),
        }
        endpoints.push(e);
    }
    let labels = BTreeMap::from([
        (SERVICE_NAME_LABEL.to_string(), service.to_string()),
        (
            SLICE_MANAGED_BY_LABEL.to_string(),
            SLICE_MANAGER.to_string(),
        ),
        (GROUP_LABEL.to_string(), group.name_any()),
    ]);
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(family.slice_name(service)),
            namespace: group.namespace(),
            labels: Some(labels),
            owner_references: owner(group).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        address_type: family.address_type().into(),
        endpoints,
        ports: Some(ports.unwrap_or_default()),
    }
}

/// What of a slice podium decides, normalized against the API server's defaults.
fn slice_projection(s: &EndpointSlice) -> Value {
    let ports: Vec<Value> = s
        .ports
        .iter()
        .flatten()
        .map(|p| {
            json!([
                p.name.clone().unwrap_or_default(),
                p.port,
                p.protocol.clone().unwrap_or_else(|| "TCP".into())
            ])
        })
        .collect();
    let endpoints: Vec<Value> = s
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            let t = e.target_ref.clone().unwrap_or_default();
            json!([
                e.addresses,
                c.ready,
                c.serving,
                c.terminating,
                t.name,
                t.uid,
                e.node_name
            ])
        })
        .collect();
    let labels: Vec<Option<&String>> = [SERVICE_NAME_LABEL, SLICE_MANAGED_BY_LABEL, GROUP_LABEL]
        .iter()
        .map(|k| s.metadata.labels.as_ref().and_then(|l| l.get(*k)))
        .collect();
    json!({"addressType": s.address_type, "ports": ports, "endpoints": endpoints, "labels": labels})
}

/// The slice to write in place of `have` to make it `want` (its whole endpoints and ports, on
/// the version `have` is at), or `None` when it already lists what `want` lists.
pub fn slice_update(have: &EndpointSlice, want: &EndpointSlice) -> Option<EndpointSlice> {
    if slice_projection(have) == slice_projection(want) {
        return None;
    }
    let mut next = have.clone();
    next.metadata.managed_fields = None;
    let labels = next.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.extend(want.metadata.labels.clone().unwrap_or_default());
    next.address_type = want.address_type.clone();
    next.endpoints = want.endpoints.clone();
    next.ports = want.ports.clone();
    Some(next)
}

/// The annotation kube-proxy times network programming from (the EndpointSlice controller puts
/// a pod change time there; podium the moment of its own write).
pub const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Stamps `slice` as written at `at`, so that kube-proxy's
/// `network_programming_duration_seconds` counts the owned route from podium's write to its
/// rules: the API server, the watch and kube-proxy's sync, not podium's own reaction.
pub fn stamp(slice: &mut EndpointSlice, at: jiff::Timestamp) {
    slice
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(TRIGGER_TIME.into(), at.to_string());
}

#[cfg(test)]
mod tests;
