//! The `ElectionGroup` custom resource (`podium.dev/v1alpha1`) and the keys podium writes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Field manager for every write podium makes.
pub const MANAGER: &str = "podium";

/// An ElectionGroup as a cache holds it: parsed, or the reason it could not be.
pub type Guarded = kube::core::error_boundary::DeserializeGuard<ElectionGroup>;

/// API group of every podium resource.
pub const GROUP: &str = "podium.dev";
/// Default label key that carries a member's role.
pub const DEFAULT_ROLE_LABEL: &str = "podium.dev/role";
/// Annotation on the leader pod holding its fencing term.
pub const TERM_ANNOTATION: &str = "podium.dev/term";
/// Annotation on every managed pod naming its group.
pub const GROUP_ANNOTATION: &str = "podium.dev/group";
/// Pod annotation read by `preference: Priority` (integer, higher wins).
pub const PRIORITY_ANNOTATION: &str = "podium.dev/priority";
/// Group annotation that requests a manual handoff (`<pod>` or `any`).
pub const HANDOFF_ANNOTATION: &str = "podium.dev/handoff-to";
/// Finalizer that lets the controller remove its labels when a group is deleted.
pub const FINALIZER: &str = "podium.dev/cleanup";
/// Role label value of the leader.
pub const LEADER: &str = "leader";
/// Role label value of every other member.
pub const FOLLOWER: &str = "follower";
/// Label on the Services podium creates (the value is [`MANAGER`]).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Label on the Services and EndpointSlices podium creates, naming their group.
pub const GROUP_LABEL: &str = "podium.dev/group";
/// The EndpointSlice label that names the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The EndpointSlice label naming the controller that writes a slice.
pub const SLICE_MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// podium's value of [`SLICE_MANAGED_BY_LABEL`].
pub const SLICE_MANAGER: &str = "podium.dev";

/// Desired state of an election group: which pods take part and how leadership moves.
// The printer columns repeat `type_ = ...`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "podium.dev",
    version = "v1alpha1",
    kind = "ElectionGroup",
    namespaced,
    shortname = "eg",
    status = "ElectionGroupStatus",
    doc = "A set of pods, chosen by a label selector, of which exactly one is labelled leader",
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
    printcolumn(name = "Term", type_ = "integer", json_path = ".status.term"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.readySummary"),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.members"),
    printcolumn(
        name = "Next Handoff",
        type_ = "string",
        json_path = ".status.nextHandoff"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.lastTransition.reason",
        description = "why leadership last moved",
        priority = "1"
    ),
    printcolumn(
        name = "Leader Since",
        type_ = "date",
        json_path = ".status.leaderSince",
        priority = "1"
    ),
    printcolumn(
        name = "Successor",
        type_ = "string",
        json_path = ".status.successor.pod",
        description = "the member reserved to take over next",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.roleLabel) || !has(self.selector.matchLabels) || !(self.roleLabel in self.selector.matchLabels)"
).message("roleLabel must not be a key the selector uses: podium would overwrite the label that makes a pod a member"))]
#[x_kube(validation = Rule::new(
    "!has(self.roleLabel) || !has(self.selector.matchExpressions) || self.selector.matchExpressions.all(e, e.key != self.roleLabel)"
).message("roleLabel must not be a key the selector uses: podium would overwrite the label that makes a pod a member"))]
pub struct ElectionGroupSpec {
    /// Label selector over pods in the group's namespace; must not be empty.
    #[x_kube(validation = Rule::new(
        "(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)"
    ).message("selector must not be empty: it would select every pod in the namespace"))]
    #[schemars(transform = bounded_selector)]
    pub selector: LabelSelector,

    /// Label key written on every member, with value `leader` or `follower`.
    #[serde(default = "default_role_label")]
    #[schemars(length(min = 1, max = 316))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$')"
    ).message("roleLabel must be a valid label key, e.g. podium.dev/role"))]
    pub role_label: String,

    /// How the leader is chosen among candidates.
    #[serde(default)]
    pub preference: Preference,

    /// How long a pod must have been Ready before it may lead.
    #[serde(default)]
    #[schemars(range(min = 0, max = 86400))]
    pub min_ready_seconds: i64,

    /// How long a NotReady leader is kept before failover.
    #[serde(default)]
    #[schemars(range(min = 0, max = 86400))]
    pub failover_tolerance_seconds: i64,

    /// A leader whose node Lease (namespace kube-node-lease) podium has not seen renewed for
    /// this long is unfit. A kubelet renews every 10 s by default (a quarter of its 40 s
    /// Lease), so the default of 15 s tolerates one late renewal; below 11 s a healthy node
    /// would flap.
    #[serde(default = "default_node_loss_seconds")]
    #[schemars(range(min = 11, max = 3600))]
    pub node_loss_seconds: i64,

    /// Scheduled and maximum-term handoffs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Handoff>,

    /// Also mirror leadership into a coordination.k8s.io/v1 Lease named after the group.
    #[serde(default)]
    pub publish_lease: bool,

    /// Freeze the group: no leader changes, labels untouched.
    #[serde(default)]
    pub paused: bool,

    /// The owned route: a Service without a selector that podium creates, owns and points at
    /// the leader by writing its EndpointSlice itself (and optionally one for the followers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<LeaderService>,
}

/// A Service podium creates for the group and whose EndpointSlices it writes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "size(self.ports) == 1 || self.ports.all(p, has(p.name))"
).message("every port needs a name when the Service has more than one"))]
pub struct LeaderService {
    /// The leader Service's name; `<group>-leader` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("name must be a DNS-1035 label, e.g. api-leader"))]
    pub name: Option<String>,

    /// The Service's ports; at least one.
    #[schemars(length(min = 1, max = 32))]
    pub ports: Vec<LeaderServicePort>,

    /// The Service's type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,

    /// Labels put on the Service (podium adds its own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: BTreeMap<String, String>,

    /// Annotations put on the Service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: BTreeMap<String, String>,

    /// A second Service, with the same ports, whose EndpointSlice lists the Ready followers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followers: Option<FollowersService>,
}

/// One port of the leader Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeaderServicePort {
    /// The port's name; required when the Service has more than one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("a port name must be a DNS-1123 label, e.g. http"))]
    pub name: Option<String>,

    /// The port the Service exposes.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// The pod's port: a number, or the name of a container port; `port` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,

    /// The port's protocol.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A port's protocol.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    #[default]
    TCP,
    /// UDP.
    UDP,
    /// SCTP.
    SCTP,
}

impl Protocol {
    /// The protocol as the Service and EndpointSlice APIs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TCP => "TCP",
            Self::UDP => "UDP",
            Self::SCTP => "SCTP",
        }
    }
}

/// The type of the leader Service.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    /// A cluster-internal virtual IP.
    #[default]
    ClusterIP,
    /// Also a port on every node.
    NodePort,
    /// Also an external load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The type as the Service API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The followers Service: same ports and type as the leader Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FollowersService {
    /// Its name; `<group>-followers` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("name must be a DNS-1035 label, e.g. api-followers"))]
    pub name: Option<String>,
}

/// Bounds the selector's lists and strings, so that the API server can price the CEL rules over
/// them, and names the operators it accepts.
fn bounded_selector(schema: &mut schemars::Schema) {
    let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else {
        return;
    };
    if let Some(labels) = props.get_mut("matchLabels").and_then(|v| v.as_object_mut()) {
        labels.insert("maxProperties".into(), 64.into());
    }
    let Some(exprs) = props
        .get_mut("matchExpressions")
        .and_then(|v| v.as_object_mut())
    else {
        return;
    };
    exprs.insert("maxItems".into(), 32.into());
    let Some(fields) = exprs
        .get_mut("items")
        .and_then(|i| i.get_mut("properties"))
        .and_then(|p| p.as_object_mut())
    else {
        return;
    };
    if let Some(key) = fields.get_mut("key").and_then(|v| v.as_object_mut()) {
        key.insert("maxLength".into(), 317.into());
    }
    if let Some(op) = fields.get_mut("operator").and_then(|v| v.as_object_mut()) {
        op.insert(
            "enum".into(),
            serde_json::json!(["In", "NotIn", "Exists", "DoesNotExist"]),
        );
    }
    if let Some(values) = fields.get_mut("values").and_then(|v| v.as_object_mut()) {
        values.insert("maxItems".into(), 256.into());
    }
}

fn default_role_label() -> String {
    DEFAULT_ROLE_LABEL.to_string()
}

/// Which candidate wins an election.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Preference {
    /// The oldest candidate pod.
    #[default]
    Oldest,
    /// The highest `podium.dev/priority` annotation; ties go to the oldest.
    Priority,
}

/// `spec.nodeLossSeconds` when the spec leaves it out.
pub const DEFAULT_NODE_LOSS_SECONDS: i64 = 15;

fn default_node_loss_seconds() -> i64 {
    DEFAULT_NODE_LOSS_SECONDS
}

/// When leadership is handed over while the leader is healthy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Handoff {
    /// Cron schedule: 5 fields, optional leading seconds, `@daily`-style macros or `@every <duration>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub schedule: Option<String>,

    /// IANA time zone the schedule is read in; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,

    /// Hand over once a leader has held this long (e.g. `24h`, `1h30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub max_term: Option<String>,

    /// Order of the two label writes of a planned handoff.
    #[serde(default)]
    pub mode: HandoffMode,
}

/// Order of writes in a planned handoff.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HandoffMode {
    /// Demote the old leader before promoting the new one: never two leaders.
    #[default]
    BreakBeforeMake,
    /// Promote the new leader before demoting the old one: never zero leaders.
    MakeBeforeBreak,
}

/// Observed state of an election group.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ElectionGroupStatus {
    /// Name of the leader pod, absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// UID of the leader pod.
    #[serde(
        default,
        rename = "leaderUID",
        alias = "leaderUid",
        skip_serializing_if = "Option::is_none"
    )]
    pub leader_uid: Option<String>,
    /// The leader pod's resourceVersion when its leadership was decided: a recorded leader
    /// without its label is promoted only while the pod is still at this version (after that,
    /// it may be a leader that was demoted, which must never lead again under the same term).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_resource_version: Option<String>,
    /// Fencing term: rises on every change of leader (numbers reserved for a successor that
    /// did not take over are skipped), never decreases.
    #[serde(default)]
    pub term: i64,
    /// When the current leader took over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_since: Option<Time>,
    /// Pods selected by the group.
    #[serde(default)]
    pub members: i32,
    /// Members that are Ready.
    #[serde(default)]
    pub ready_members: i32,
    /// `readyMembers/members`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_summary: Option<String>,
    /// The instant of the next scheduled or maximum-term handoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_handoff: Option<Time>,
    /// When a due handoff last found no other candidate; the next one is counted from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_skipped_at: Option<Time>,
    /// The last change of leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition: Option<Transition>,
    /// The generation of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `SpecValid` and `Conflict` conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The role label key podium has written on members; differs from `spec.roleLabel` while
    /// a change of key is being applied, so that the old key can be removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_label: Option<String>,
    /// Promotions recorded here and then abandoned: each pod is written once more, so that a
    /// stale copy of its promotion fails its precondition; dropped once its version has moved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abandoned: Vec<Abandoned>,
    /// The candidate that leads next if the leader fails, with the term it will carry, reserved
    /// ahead of need so that a failover can label it before writing status; a term reserved for
    /// a pod is never given to another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<Successor>,
}

/// A successor and its term, reserved in status before it is needed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Successor {
    /// The pod; absent once it was passed over, while its term stays reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Its UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The term it carries when it takes over; no other pod is ever given this term.
    pub term: i64,
    /// The pod's resourceVersion when this was recorded: a failover labels the successor before
    /// writing status only while the pod is still at this version (so never from a stale copy
    /// of status whose reservation has since moved on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// A promotion that was recorded in status and then abandoned before its label was written.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Abandoned {
    /// The pod.
    pub pod: String,
    /// Its UID.
    pub uid: String,
    /// Its resourceVersion when the promotion was abandoned.
    pub resource_version: String,
}

/// One change of leader.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// When the new leader was labelled.
    pub time: Time,
    /// The previous leader, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The new leader, absent when leadership was given up for want of candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Why leadership moved.
    pub reason: TransitionReason,
}

/// Why leadership moved.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransitionReason {
    /// First leader of a group, or a leader after a time without one.
    Elected,
    /// The leader died, turned unready, stopped matching or is terminating.
    Failover,
    /// The leader's node stopped renewing its Lease for `nodeLossSeconds`.
    NodeLost,
    /// A scheduled handoff.
    Scheduled,
    /// The leader reached `handoff.maxTerm`.
    MaxTerm,
    /// A `podium.dev/handoff-to` request.
    Manual,
    /// A candidate with a higher priority became Ready.
    Preempted,
    /// No candidate was left to lead.
    NoCandidates,
}

impl TransitionReason {
    /// The reason as it appears in status, Events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Elected => "Elected",
            Self::Failover => "Failover",
            Self::NodeLost => "NodeLost",
            Self::Scheduled => "Scheduled",
            Self::MaxTerm => "MaxTerm",
            Self::Manual => "Manual",
            Self::Preempted => "Preempted",
            Self::NoCandidates => "NoCandidates",
        }
    }

    /// The leader was replaced because it failed, not by plan.
    pub fn is_failover(self) -> bool {
        matches!(self, Self::Failover | Self::NodeLost)
    }
}

/// The CRD manifest as YAML, as `podium crd` prints it.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(&ElectionGroup::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_is_current() {
        let current = crd_yaml().unwrap();
        for (path, committed) in [
            (
                "crds/electiongroup.yaml",
                include_str!("../../../crds/electiongroup.yaml"),
            ),
            (
                "config/crd/electiongroup.yaml",
                include_str!("../../../config/crd/electiongroup.yaml"),
            ),
        ] {
            assert!(committed == current, "{path} is stale: run `make crds`");
        }
    }

    #[test]
    fn spec_defaults_apply_when_fields_are_absent() {
        let spec: ElectionGroupSpec =
            serde_json::from_value(serde_json::json!({"selector": {"matchLabels": {"app": "x"}}}))
                .unwrap();
        assert_eq!(spec.role_label, DEFAULT_ROLE_LABEL);
        assert_eq!(spec.preference, Preference::Oldest);
        assert!(!spec.paused && !spec.publish_lease && spec.handoff.is_none());
    }
}
