//! Malformed ElectionGroups are rejected at admission or reported, and never stop other groups.

use serde_json::{Value, json};

use crate::election::wait_event;
use crate::groups::*;

fn sel() -> Value {
    json!({"matchLabels": {"app": "bad"}})
}

/// Specs the CRD schema rejects at admission.
fn rejected_at_admission() -> Vec<(&'static str, Value)> {
    vec![
        ("empty selector", json!({"selector": {}})),
        (
            "empty matchLabels",
            json!({"selector": {"matchLabels": {}}}),
        ),
        (
            "empty matchExpressions",
            json!({"selector": {"matchExpressions": []}}),
        ),
        ("missing selector", json!({"roleLabel": "podium.dev/role"})),
        (
            "unknown selector operator",
            json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Near"}]}}),
        ),
        (
            "unknown preference",
            json!({"selector": sel(), "preference": "Youngest"}),
        ),
        (
            "negative minReadySeconds",
            json!({"selector": sel(), "minReadySeconds": -1}),
        ),
        (
            "negative failoverToleranceSeconds",
            json!({"selector": sel(), "failoverToleranceSeconds": -5}),
        ),
        (
            "minReadySeconds over a day",
            json!({"selector": sel(), "minReadySeconds": 999_999}),
        ),
        (
            "string seconds",
            json!({"selector": sel(), "minReadySeconds": "ten"}),
        ),
        ("string paused", json!({"selector": sel(), "paused": "yes"})),
        (
            "unknown handoff mode",
            json!({"selector": sel(), "handoff": {"mode": "Whenever"}}),
        ),
        (
            "invalid role label",
            json!({"selector": sel(), "roleLabel": "not a label!"}),
        ),
        (
            "empty role label",
            json!({"selector": sel(), "roleLabel": ""}),
        ),
        (
            "empty schedule",
            json!({"selector": sel(), "handoff": {"schedule": ""}}),
        ),
    ]
}

/// Specs the schema admits but the controller reports with `SpecValid=False`.
fn reported_in_status() -> Vec<(&'static str, Value)> {
    let handoff = |h: Value| json!({"selector": sel(), "handoff": h});
    vec![
        (
            "cron minute out of range",
            handoff(json!({"schedule": "61 * * * *"})),
        ),
        (
            "cron with three fields",
            handoff(json!({"schedule": "* * *"})),
        ),
        (
            "unknown cron macro",
            handoff(json!({"schedule": "@fortnightly"})),
        ),
        (
            "unknown time zone",
            handoff(json!({"schedule": "0 3 * * *", "timeZone": "Mars/Olympus"})),
        ),
        ("@every zero", handoff(json!({"schedule": "@every 0s"}))),
        (
            "@every sub-second",
            handoff(json!({"schedule": "@every 500ms"})),
        ),
        (
            "maxTerm not a duration",
            handoff(json!({"maxTerm": "forever"})),
        ),
        ("maxTerm zero", handoff(json!({"maxTerm": "0s"}))),
        (
            "In without values",
            json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}),
        ),
    ]
}

#[tokio::test]
async fn malformed_groups_are_rejected_or_reported_and_others_keep_working() {
    let s = Setup::new("invalid").await;
    s.pods(&["p0", "p1"], &[("app", "x")]).await;
    s.apply_group("good", json!({"selector": {"matchLabels": {"app": "x"}}}))
        .await
        .unwrap();
    s.wait_leader("good", "app=x", "p0").await;

    let admission = rejected_at_admission();
    let reported = reported_in_status();

    for (i, (what, spec)) in admission.iter().enumerate() {
        match s.create_raw(&format!("adm-{i}"), spec.clone()).await {
            Err(kube::Error::Api(e)) => {
                assert!(
                    matches!(e.code, 400 | 422),
                    "{what}: unexpected status {}",
                    e.code
                );
                println!("rejected at admission ({what}): {}", e.message);
            }
            other => panic!("{what}: expected the API server to reject it, got {other:?}"),
        }
    }
    for (i, (what, spec)) in reported.iter().enumerate() {
        let name = format!("bad-{i}");
        s.apply_group(&name, spec.clone())
            .await
            .unwrap_or_else(|e| panic!("{what}: expected admission, got {e}"));
        let g = s
            .wait_group(&name, "SpecValid=False", |g| {
                condition(g, "SpecValid").is_some_and(|c| c.0 == "False")
                    && status(g).observed_generation == g.metadata.generation
            })
            .await;
        let message = status(&g)
            .conditions
            .iter()
            .find(|c| c.type_ == "SpecValid")
            .map(|c| c.message.clone())
            .unwrap();
        println!("reported ({what}): {message}");
        let ev = wait_event(&s.ns, &name, "InvalidSpec").await;
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
    }

    // The valid group still fails over while the broken ones sit there.
    s.ns.delete_pod_now("p0").await;
    let g = s.wait_leader("good", "app=x", "p1").await;
    assert_eq!(status(&g).term, 2);

    // Fixing a broken group makes it valid again.
    s.apply_group(
        "bad-0",
        json!({"selector": sel(), "handoff": {"schedule": "0 3 * * *"}}),
    )
    .await
    .unwrap();
    let g = s
        .wait_group("bad-0", "valid again", |g| {
            condition(g, "SpecValid").is_some_and(|c| c.0 == "True")
        })
        .await;
    assert_eq!(
        condition(&g, "Ready").map(|c| c.1),
        Some("NoCandidates".into())
    );
}
