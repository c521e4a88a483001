//! Turns an `ElectionGroupSpec` into checked settings, or says what is wrong with it.

use jiff::SignedDuration;
use kube::core::Selector;

use crate::schedule::Timing;
use podium_api::{ElectionGroupSpec, HandoffMode, Preference};

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
}

/// Checks a spec; the error lists every problem, one per line.
pub fn validate(spec: &ElectionGroupSpec) -> Result<Settings, String> {
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
        }),
        _ => Err(problems.join("\n")),
    }
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
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    use podium_api::Handoff;

    fn spec() -> ElectionGroupSpec {
        serde_json::from_value(serde_json::json!({"selector": {"matchLabels": {"app": "x"}}}))
            .unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        let s = validate(&spec()).unwrap();
        assert_eq!(s.role_label, "podium.dev/role");
        assert_eq!(s.preference, Preference::Oldest);
        assert_eq!(s.mode, HandoffMode::BreakBeforeMake);
        assert!(s.timing.schedule.is_none() && s.timing.max_term.is_none());
    }

    #[test]
    fn reports_each_problem() {
        type Mutation = Box<dyn Fn(&mut ElectionGroupSpec)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "selector must not be empty",
                Box::new(|s| s.selector = LabelSelector::default()),
            ),
            (
                "spec.selector is invalid",
                Box::new(|s| {
                    s.selector.match_expressions = Some(vec![LabelSelectorRequirement {
                        key: "app".into(),
                        operator: "Near".into(),
                        values: None,
                    }])
                }),
            ),
            (
                "roleLabel must not be a key the selector uses",
                Box::new(|s| s.role_label = "app".into()),
            ),
            (
                "roleLabel must not be a key the selector uses",
                Box::new(|s| {
                    s.role_label = "tier".into();
                    s.selector.match_expressions = Some(vec![LabelSelectorRequirement {
                        key: "tier".into(),
                        operator: "Exists".into(),
                        values: None,
                    }])
                }),
            ),
            (
                "not a valid label key",
                Box::new(|s| s.role_label = format!("{}.io/role", "a".repeat(260))),
            ),
            (
                "matchLabels[\"app\"] value",
                Box::new(|s| {
                    s.selector.match_labels = Some([("app".into(), "bad value!".into())].into())
                }),
            ),
            (
                "Exists takes no values",
                Box::new(|s| {
                    s.selector.match_expressions = Some(vec![LabelSelectorRequirement {
                        key: "app".into(),
                        operator: "Exists".into(),
                        values: Some(vec!["x".into()]),
                    }])
                }),
            ),
            (
                "minReadySeconds must not be negative",
                Box::new(|s| s.min_ready_seconds = -1),
            ),
            (
                "failoverToleranceSeconds must not be negative",
                Box::new(|s| s.failover_tolerance_seconds = -5),
            ),
            (
                "not a valid cron expression",
                Box::new(|s| {
                    s.handoff = Some(Handoff {
                        schedule: Some("every day".into()),
                        ..Default::default()
                    })
                }),
            ),
            (
                "not a known IANA time zone",
                Box::new(|s| {
                    s.handoff = Some(Handoff {
                        time_zone: Some("Moon/Base".into()),
                        ..Default::default()
                    })
                }),
            ),
            (
                "handoff.maxTerm",
                Box::new(|s| {
                    s.handoff = Some(Handoff {
                        max_term: Some("0s".into()),
                        ..Default::default()
                    })
                }),
            ),
        ];
        for (want, mutate) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = validate(&s).unwrap_err();
            assert!(err.contains(want), "expected {want:?} in {err:?}");
        }
    }
}
