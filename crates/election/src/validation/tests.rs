//! Spec validation: each problem found and named, every valid spec accepted.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use podium_api::Handoff;

fn spec() -> ElectionGroupSpec {
    serde_json::from_value(serde_json::json!({"selector": {"matchLabels": {"app": "x"}}})).unwrap()
}

#[test]
fn defaults_are_valid() {
    let s = validate("g", &spec()).unwrap();
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
        let err = validate("g", &s).unwrap_err();
        assert!(
            err.0.iter().any(|p| p.message.contains(want)),
            "expected {want:?} in {err:?}"
        );
    }
}

fn with_service(service: serde_json::Value) -> ElectionGroupSpec {
    serde_json::from_value(serde_json::json!({
        "selector": {"matchLabels": {"app": "x"}}, "service": service,
    }))
    .unwrap()
}

#[test]
fn the_service_names_default_to_the_group_s() {
    let svc = with_service(serde_json::json!({"ports": [{"port": 80}], "followers": {}}));
    let route = validate("api", &svc).unwrap().service.unwrap();
    assert_eq!(route.leader, "api-leader");
    assert_eq!(route.followers.as_deref(), Some("api-followers"));
    assert!(validate("api", &spec()).unwrap().service.is_none());
}

#[test]
fn service_problems_are_reported() {
    let cases = [
        (
            serde_json::json!({"ports": [{"port": 80}]}),
            "a.b",
            "not a valid Service name",
        ),
        (serde_json::json!({"ports": []}), "g", "at least one port"),
        (
            serde_json::json!({"ports": [{"port": 80}, {"port": 81}]}),
            "g",
            "is required",
        ),
        (
            serde_json::json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}),
            "g",
            "listed twice",
        ),
        (
            serde_json::json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}),
            "g",
            "used twice",
        ),
        (
            serde_json::json!({"ports": [{"port": 80, "targetPort": 0}]}),
            "g",
            "targetPort",
        ),
        (
            serde_json::json!({"ports": [{"port": 80, "targetPort": "Not_A-Name"}]}),
            "g",
            "not a container port name",
        ),
        (
            serde_json::json!({"ports": [{"port": 80}], "labels": {"podium.dev/group": "x"}}),
            "g",
            "must not set",
        ),
        (
            serde_json::json!({"ports": [{"port": 80}], "annotations": {"-bad": "x"}}),
            "g",
            "annotation key",
        ),
        (
            serde_json::json!({"ports": [{"port": 80}], "name": "s", "followers": {"name": "s-v6"}}),
            "g",
            "share EndpointSlice names",
        ),
    ];
    for (service, group, want) in cases {
        let err = validate(group, &with_service(service.clone())).unwrap_err();
        assert!(
            err.to_string().contains(want),
            "{service}: expected {want:?} in {err:?}"
        );
    }
    let named = serde_json::json!({"ports": [{"port": 80, "targetPort": "http"}], "name": "x"});
    assert!(validate("a.b", &with_service(named)).is_ok());
}
