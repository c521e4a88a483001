//! Turns an `ElectionGroupSpec` into checked settings, or says what is wrong with it.

use jiff::SignedDuration;
use kube::core::Selector;

use crate::schedule::Timing;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use podium_api::{
    ElectionGroupSpec, GROUP_LABEL, HandoffMode, LeaderService, MANAGED_BY_LABEL, Preference,
};

/// A spec that passed every check the CRD schema cannot express.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which pods are members.
    pub selector: Selector,
    /// Label key carrying the role.
    pub role_label: String,
    /// How the leader is chosen.
    pub preference: Preference,
    /// How long a pod must be Ready before it may lead.
    pub min_ready: SignedDuration,
    /// How long a NotReady leader is kept.
    pub tolerance: SignedDuration,
    /// How long a leader's node Lease may go unrenewed before the leader is unfit.
    pub node_loss: std::time::Duration,
    /// When a healthy leader hands over.
    pub timing: Timing,
    /// Order of writes in a planned handoff.
    pub mode: HandoffMode,
    /// Freeze leadership and labels.
    pub paused: bool,
    /// Mirror leadership into a Lease.
    pub publish_lease: bool,
    /// The owned route, when the spec asks for one.
    pub service: Option<Route>,
}

/// The owned route of a valid spec: the Services' names resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The leader Service's name.
    pub leader: String,
    /// The followers Service's name, when there is one.
    pub followers: Option<String>,
    /// The Services' spec as written.
    pub spec: LeaderService,
}

/// One thing wrong with a spec: the field it concerns, and the sentence a user reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field's path as the sentence names it first, e.g. `spec.selector` or
    /// `spec.service.ports[0]`.
    pub field: String,
    /// What is wrong, as a whole sentence that names the field.
    pub message: String,
}

impl Problem {
    /// A problem from its sentence, which names the field first.
    pub fn new(message: impl Into<String>) -> Self {
        let message = message.into();
        let field = message
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_string();
        Self { field, message }
    }
}

/// Every problem found in a spec, in the order found; shown one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<&str> = self.0.iter().map(|p| p.message.as_str()).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// Checks the spec of the group named `group`; the error lists every problem.
pub fn validate(group: &str, spec: &ElectionGroupSpec) -> Result<Settings, Problems> {
    let mut problems = Vec::new();

    let selector_empty = spec
        .selector
        .match_labels
        .as_ref()
        .is_none_or(|m| m.is_empty())
        && spec
            .selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty());
    if selector_empty {
        problems.push("spec.selector must not be empty".to_string());
    }
    let selector = Selector::try_from(spec.selector.clone())
        .map_err(|e| problems.push(format!("spec.selector is invalid: {e}")))
        .ok();

    if spec.role_label.is_empty() {
        problems.push("spec.roleLabel must not be empty".to_string());
    } else if let Err(why) = label_key(&spec.role_label) {
        problems.push(format!("spec.roleLabel is not a valid label key: {why}"));
    }
    problems.extend(selector_syntax(spec));
    if selector_keys(spec).any(|k| *k == spec.role_label) {
        problems.push(format!(
            "spec.roleLabel must not be a key the selector uses ({}): podium would overwrite the label that makes a pod a member",
            spec.role_label
        ));
    }
    let seconds = |field: &str, v: i64, problems: &mut Vec<String>| {
        if v < 0 {
            problems.push(format!("spec.{field} must not be negative, got {v}"));
        }
        SignedDuration::from_secs(v.max(0))
    };
    let min_ready = seconds("minReadySeconds", spec.min_ready_seconds, &mut problems);
    let tolerance = seconds(
        "failoverToleranceSeconds",
        spec.failover_tolerance_seconds,
        &mut problems,
    );

    // The schema enforces the range; a spec written before the field existed, or read from a
    // cache that bypassed admission, is checked again here.
    if !(11..=3600).contains(&spec.node_loss_seconds) {
        problems.push(format!(
            "spec.nodeLossSeconds must be between 11 and 3600 (a kubelet renews its node Lease every 10 s), got {}",
            spec.node_loss_seconds
        ));
    }
    let node_loss = std::time::Duration::from_secs(spec.node_loss_seconds.clamp(11, 3600) as u64);

    let handoff = spec.handoff.clone().unwrap_or_default();
    let timing = Timing::parse(
        handoff.schedule.as_deref(),
        handoff.time_zone.as_deref(),
        handoff.max_term.as_deref(),
    )
    .map_err(|e| problems.push(e.to_string()))
    .ok();

    let service = spec
        .service
        .as_ref()
        .map(|svc| route(group, svc, &mut problems));

    match (selector, timing) {
        (Some(selector), Some(timing)) if problems.is_empty() => Ok(Settings {
            selector,
            role_label: spec.role_label.clone(),
            preference: spec.preference,
            min_ready,
            tolerance,
            node_loss,
            timing,
            mode: handoff.mode,
            paused: spec.paused,
            publish_lease: spec.publish_lease,
            service,
        }),
        _ => Err(Problems(problems.into_iter().map(Problem::new).collect())),
    }
}

/// Resolves the owned route's names and checks what the schema cannot: names that depend on the
/// group's, unique ports, named target ports, and the Services' labels and annotations.
fn route(group: &str, svc: &LeaderService, problems: &mut Vec<String>) -> Route {
    let leader = svc
        .name
        .clone()
        .unwrap_or_else(|| format!("{group}-leader"));
    let followers = svc.followers.as_ref().map(|f| {
        f.name
            .clone()
            .unwrap_or_else(|| format!("{group}-followers"))
    });
    for (field, name) in [
        ("name", Some(&leader)),
        ("followers.name", followers.as_ref()),
    ] {
        if let Some(name) = name
            && let Err(why) = dns_label(name, true)
        {
            problems.push(format!(
                "spec.service.{field} {} is not a valid Service name ({why}); set it",
                shown(name)
            ));
        }
    }
    // A family's slice is `<service>` or `<service>-v6`: no two of them may share a name.
    if let Some(f) = &followers
        && (*f == leader || *f == format!("{leader}-v6") || leader == format!("{f}-v6"))
    {
        problems.push(format!(
            "spec.service.followers.name {} would share EndpointSlice names with the leader Service {}",
            shown(f),
            shown(&leader)
        ));
    }
    if svc.ports.is_empty() {
        problems.push("spec.service.ports must list at least one port".into());
    }
    for (i, p) in svc.ports.iter().enumerate() {
        let at = format!("spec.service.ports[{i}]");
        if !(1..=65535).contains(&p.port) {
            problems.push(format!("{at}.port must be 1–65535, got {}", p.port));
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => {
                problems.push(format!("{at}.targetPort must be 1–65535, got {n}"));
            }
            Some(IntOrString::String(n)) => {
                if let Err(why) = port_name(n) {
                    problems.push(format!(
                        "{at}.targetPort {} is not a container port name ({why})",
                        shown(n)
                    ));
                }
            }
            _ => {}
        }
        match &p.name {
            Some(n) => {
                if let Err(why) = dns_label(n, false) {
                    problems.push(format!("{at}.name {} is invalid ({why})", shown(n)));
                }
                if svc.ports[..i].iter().any(|q| q.name.as_ref() == Some(n)) {
                    problems.push(format!("{at}.name {} is used twice", shown(n)));
                }
            }
            None if svc.ports.len() > 1 => {
                problems.push(format!(
                    "{at}.name is required when the Service has more than one port"
                ));
            }
            None => {}
        }
        if svc.ports[..i]
            .iter()
            .any(|q| q.port == p.port && q.protocol == p.protocol)
        {
            problems.push(format!(
                "{at}: port {}/{} is listed twice",
                p.port,
                p.protocol.as_str()
            ));
        }
    }
    for (k, v) in &svc.labels {
        if let Err(why) = label_key(k).and_then(|()| label_value(v)) {
            problems.push(format!(
                "spec.service.labels: {}={} is not a valid label ({why})",
                shown(k),
                shown(v)
            ));
        }
        if k == MANAGED_BY_LABEL || k == GROUP_LABEL {
            problems.push(format!(
                "spec.service.labels must not set {k}: podium sets it to find its own Services"
            ));
        }
    }
    for k in svc.annotations.keys() {
        if let Err(why) = label_key(k) {
            problems.push(format!(
                "spec.service.annotations: {} is not a valid annotation key ({why})",
                shown(k)
            ));
        }
    }
    Route {
        leader,
        followers,
        spec: svc.clone(),
    }
}

/// A DNS label: lowercase alphanumerics and `-`, at most 63 characters, starting with a letter
/// when `letter_first` (a DNS-1035 label, as a Service name must be).
fn dns_label(s: &str, letter_first: bool) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("must be 1–63 characters, has {}", s.len()));
    }
    let ok = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let first = s.chars().next().unwrap_or('-');
    let first_ok = if letter_first {
        first.is_ascii_lowercase()
    } else {
        first.is_ascii_alphanumeric()
    };
    if !ok || !first_ok || s.ends_with('-') {
        return Err(if letter_first {
            "lowercase letters, digits and '-', starting with a letter and ending with an alphanumeric".into()
        } else {
            "lowercase letters, digits and '-', starting and ending with an alphanumeric".into()
        });
    }
    Ok(())
}

/// A container port's name (IANA_SVC_NAME): at most 15 lowercase alphanumerics and `-`, with
/// at least one letter, no `--`, starting and ending with an alphanumeric.
fn port_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!("must be 1–15 characters, has {}", s.len()));
    }
    let ok = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok
        || !s.chars().any(|c| c.is_ascii_lowercase())
        || s.contains("--")
        || s.starts_with('-')
        || s.ends_with('-')
    {
        return Err("lowercase letters, digits and single '-' inside, with a letter".into());
    }
    Ok(())
}

/// What the API server itself would say of a label selector: keys and values that are not label
/// syntax, and operators whose values do not fit.
fn selector_syntax(spec: &ElectionGroupSpec) -> Vec<String> {
    let s = &spec.selector;
    let mut problems = Vec::new();
    for (k, v) in s.match_labels.iter().flatten() {
        if let Err(why) = label_key(k) {
            problems.push(format!("spec.selector.matchLabels key {}: {why}", shown(k)));
        }
        if let Err(why) = label_value(v) {
            problems.push(format!(
                "spec.selector.matchLabels[{}] value: {why}",
                shown(k)
            ));
        }
    }
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let at = format!("spec.selector.matchExpressions[{i}]");
        if let Err(why) = label_key(&e.key) {
            problems.push(format!("{at}.key {}: {why}", shown(&e.key)));
        }
        let values = e.values.as_deref().unwrap_or_default();
        match (e.operator.as_str(), values.is_empty()) {
            ("In" | "NotIn", true) => problems.push(format!("{at}: {} needs values", e.operator)),
            ("Exists" | "DoesNotExist", false) => {
                problems.push(format!("{at}: {} takes no values", e.operator))
            }
            _ => {}
        }
        for v in values {
            if let Err(why) = label_value(v) {
                problems.push(format!("{at} value {}: {why}", shown(v)));
            }
        }
    }
    problems
}

/// A value as it appears in a message: quoted and cut short.
fn shown(v: &str) -> String {
    let cut: String = v.chars().take(64).collect();
    if cut.len() < v.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// A label name or value: at most 63 characters, alphanumerics with `-`, `_`, `.` inside.
fn name_part(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!("must be at most 63 characters, has {}", s.len()));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !s.chars().all(ok_char) || !edge(s.chars().next()) || !edge(s.chars().last()) {
        return Err(
            "must be alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
                .into(),
        );
    }
    Ok(())
}

/// A label key: an optional DNS-subdomain prefix (at most 253 characters) and `/`, then a name.
fn label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        let subdomain = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !subdomain {
            return Err("the prefix must be a DNS subdomain of at most 253 characters".into());
        }
    }
    name_part(name)
}

/// A label value: empty, or a name.
fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() { Ok(()) } else { name_part(v) }
}

/// Every label key the selector reads.
fn selector_keys(spec: &ElectionGroupSpec) -> impl Iterator<Item = &String> {
    let s = &spec.selector;
    s.match_labels
        .iter()
        .flat_map(|m| m.keys())
        .chain(s.match_expressions.iter().flatten().map(|e| &e.key))
}

#[cfg(test)]
mod tests;
