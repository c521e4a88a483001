//! Turns an `ElectionGroupSpec` into checked settings, or says what is wrong with it.

use jiff::SignedDuration;
use kube::core::Selector;

use crate::crd::{ElectionGroupSpec, HandoffMode, Preference};
use crate::schedule::Timing;

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
    }
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
            timing,
            mode: handoff.mode,
            paused: spec.paused,
            publish_lease: spec.publish_lease,
        }),
        _ => Err(problems.join("\n")),
    }
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
    use crate::crd::Handoff;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

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
