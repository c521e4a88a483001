//! Unit tests of the pure parts: standing, why and the tables, from fixtures of a namespace.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use podium_api::{ElectionGroup, Preference};
use serde::Deserialize;

use crate::facts::Facts;
use crate::standing::{GroupView, Standing, view};
use crate::table::{Table, ago};
use crate::{status, watch, why};

/// A namespace as a fixture file holds it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fixture {
    now: Timestamp,
    groups: Vec<ElectionGroup>,
    pods: Vec<Pod>,
    #[serde(default)]
    node_leases: BTreeMap<String, Timestamp>,
}

fn facts(text: &str) -> Facts {
    let f: Fixture = serde_json::from_str(text).expect("fixture parses");
    Facts {
        namespace: "prod".into(),
        groups: f.groups,
        pods: f.pods,
        node_leases: f.node_leases,
        node_leases_unread: None,
        promotion_failures: Vec::new(),
        events_unread: None,
        now: f.now,
    }
}

fn healthy() -> Facts {
    facts(include_str!("fixtures/healthy.json"))
}

fn troubled() -> Facts {
    facts(include_str!("fixtures/troubled.json"))
}

fn api(f: &Facts) -> GroupView {
    view(f, f.group("api").expect("group api"))
}

fn standings(v: &GroupView) -> Vec<(&str, Standing)> {
    v.pods
        .iter()
        .map(|p| (p.name.as_str(), p.standing))
        .collect()
}

fn text(w: &why::Why) -> String {
    w.reasons.join("\n")
}

#[test]
fn a_healthy_group_shows_its_leader_first_then_candidates_by_preference() {
    let v = api(&healthy());
    assert_eq!(
        standings(&v),
        [
            ("p0", Standing::Leader),
            ("p1", Standing::Candidate),
            ("p2", Standing::Candidate)
        ]
    );
    assert_eq!(v.leader.as_deref(), Some("p0"));
    assert_eq!(v.term, 3);
    assert_eq!(v.pod("p0").unwrap().detail, "term 3");
    assert_eq!(v.pod("p1").unwrap().detail, "reserved successor");
    assert!(v.pod("web").is_none(), "not selected");
    assert!(!v.status_stale);
}

#[test]
fn every_reason_a_member_may_not_lead_has_its_standing() {
    let v = api(&troubled());
    let s: BTreeMap<&str, Standing> = standings(&v).into_iter().collect();
    assert_eq!(s["nr"], Standing::NotReady);
    assert_eq!(s["young"], Standing::NotReadyLongEnough);
    assert_eq!(s["fr"], Standing::ForeignRoleLabel);
    assert_eq!(s["po"], Standing::PassedOver);
    assert_eq!(s["nl"], Standing::NodeLost);
    assert_eq!(s["bye"], Standing::Terminating);
    assert_eq!(s["c1"], Standing::Conflict);
    assert_eq!(s.len(), 7, "web is not selected: {s:?}");
    let young = v.pod("young").unwrap();
    assert_eq!(
        young.eligible_at,
        Some("2026-11-23T12:00:30Z".parse().unwrap())
    );
    assert_eq!(
        young.detail,
        "Ready 30s of minReadySeconds 60; may lead in 30s"
    );
    assert_eq!(v.pod("c1").unwrap().other_groups, ["old"]);
    assert_eq!(
        v.pod("fr").unwrap().detail,
        "podium.dev/role=primary; left alone"
    );
    assert!(v.pod("nl").unwrap().detail.contains("renewed 60s ago"));
    assert_eq!(v.candidates().count(), 0);
}

#[test]
fn a_leader_label_written_for_another_group_is_foreign() {
    let mut f = healthy();
    let p1 = f
        .pods
        .iter_mut()
        .find(|p| p.metadata.name.as_deref() == Some("p1"))
        .unwrap();
    p1.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("podium.dev/group".into(), "other".into());
    let v = api(&f);
    let p1 = v.pod("p1").unwrap();
    assert_eq!(p1.standing, Standing::ForeignRoleLabel);
    assert_eq!(
        p1.detail,
        "podium.dev/role=follower, written for group other; left alone"
    );
}

#[test]
fn promotion_failed_events_of_the_last_five_minutes_pass_a_pod_over() {
    let mut f = healthy();
    let now = f.now;
    let at = |secs: i64| {
        now.checked_sub(jiff::SignedDuration::from_secs(secs))
            .unwrap()
    };
    let message =
        |pod: &str| format!("promoting {pod} failed 3 times (forbidden); passing it over for 300s");
    f.promotion_failures = vec![
        ("api".into(), message("p1"), at(60)),
        ("api".into(), message("p2"), at(400)),
        ("other".into(), message("p2"), at(10)),
    ];
    let v = api(&f);
    let p1 = v.pod("p1").unwrap();
    assert_eq!(p1.standing, Standing::PassedOver);
    assert_eq!(
        p1.detail,
        "promotion failed 3 times (PromotionFailed Event 60s ago)"
    );
    assert_eq!(v.pod("p2").unwrap().standing, Standing::Candidate);
}

#[test]
fn unreadable_node_leases_and_events_are_said() {
    let mut f = healthy();
    f.node_leases.clear();
    f.node_leases_unread = Some("no permission to get leases in kube-node-lease".into());
    f.events_unread = Some("no permission to list events".into());
    let v = api(&f);
    assert_eq!(v.notes.len(), 2, "{:?}", v.notes);
    assert!(v.notes.iter().any(|n| n.contains("node loss not shown")));
    let table = status::render(std::slice::from_ref(&v), &[], f.now);
    assert!(
        table.contains("note: api: node Leases not readable"),
        "{table}"
    );
}

#[test]
fn why_a_group_leads_names_the_leader_its_term_and_how_it_came() {
    let f = healthy();
    let w = why::group(&api(&f), f.now);
    let t = text(&w);
    assert!(
        t.starts_with(
            "p0 leads api since 2026-11-23T11:55:00Z (5m0s ago), term 3, after p2 (reason Manual)."
        ),
        "{t}"
    );
    assert!(t.contains("If p0 fails, p1 takes over"), "{t}");
    assert!(
        t.contains("Next planned handoff: 2026-11-24T03:00:00Z (in 15h)"),
        "{t}"
    );
}

#[test]
fn why_a_group_has_no_leader_lists_each_member() {
    let f = troubled();
    let w = why::group(&api(&f), f.now);
    let t = text(&w);
    assert!(
        t.starts_with(
            "api has no leader.\nThe last leader, p0, stepped down 2m0s ago (reason NoCandidates).\nNone of its 6 member(s) is a ready candidate:"
        ),
        "{t}"
    );
    for line in [
        "  nr: not ready (Ready is not True for 2m0s)",
        "  young: not ready long enough (Ready 30s of minReadySeconds 60; may lead in 30s)",
        "  fr: foreign role label (podium.dev/role=primary; left alone)",
        "  po: passed over (named in the Ready condition as passed over)",
        "  bye: terminating (deletionTimestamp set)",
        "1 more pod(s) it selects are kept by older groups (Conflict).",
    ] {
        assert!(t.contains(line), "missing {line:?} in\n{t}");
    }
    assert!(
        t.contains(
            "  nl: node lost (Lease of node n-lost renewed 60s ago, over nodeLossSeconds 15)"
        ),
        "{t}"
    );
}

#[test]
fn why_a_follower_does_not_lead_names_the_healthy_leader() {
    let f = healthy();
    let w = why::pod(&api(&f), "p2", None, "app=api", f.now);
    let t = text(&w);
    assert_eq!(w.standing, Some(Standing::Candidate));
    assert!(t.contains("p2 is a candidate: it may lead api."), "{t}");
    assert!(
        t.contains("p0 leads and is healthy: leadership is sticky"),
        "{t}"
    );
    assert!(
        t.contains("spec.preference is Oldest, which prefers p0 (created earlier)"),
        "{t}"
    );
    assert!(t.contains("`kubectl podium handoff api --to p2`"), "{t}");
}

#[test]
fn why_with_priority_says_whether_a_candidate_preempts() {
    let mut f = healthy();
    f.groups[0].spec.preference = Preference::Priority;
    let v = api(&f);
    let t = text(&why::pod(&v, "p2", None, "app=api", f.now));
    assert!(
        t.contains("p2's priority 5 is above p0's 0: podium preempts the leader"),
        "{t}"
    );
    let t = text(&why::pod(&v, "p1", None, "app=api", f.now));
    assert!(
        t.contains("p1's priority 0 is not above p0's 0, so it does not preempt"),
        "{t}"
    );
}

#[test]
fn why_a_pod_is_not_leading_in_each_standing() {
    let f = troubled();
    let v = api(&f);
    let cases = [
        (
            "nr",
            "nr is not Ready (Ready is not True for 2m0s): only Ready pods may lead.",
        ),
        (
            "young",
            "young has not been Ready long enough (Ready 30s of minReadySeconds 60; may lead in 30s): minReadySeconds is 60.",
        ),
        (
            "fr",
            "fr carries the role label with a value podium did not write for api (podium.dev/role=primary; left alone)",
        ),
        (
            "po",
            "po is passed over: named in the Ready condition as passed over.",
        ),
        (
            "nl",
            "nl's node looks lost (Lease of node n-lost renewed 60s ago, over nodeLossSeconds 15)",
        ),
        (
            "bye",
            "bye is terminating (deletionTimestamp set): a terminating pod never leads.",
        ),
        (
            "c1",
            "c1 is selected by api and by the older group old, which keeps it",
        ),
    ];
    for (pod, want) in cases {
        let t = text(&why::pod(&v, pod, None, "app=api", f.now));
        assert!(t.contains(want), "{pod}: missing {want:?} in\n{t}");
    }
}

#[test]
fn why_a_pod_that_is_not_selected_or_missing_says_so() {
    let f = healthy();
    let v = api(&f);
    let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    let t = text(&why::pod(&v, "web", Some(&labels), "app=api", f.now));
    assert_eq!(
        t,
        "web is not selected by api: the selector app=api does not match its labels (app=web)."
    );
    let t = text(&why::pod(&v, "ghost", None, "app=api", f.now));
    assert_eq!(t, "There is no pod ghost in namespace prod.");
}

#[test]
fn why_in_a_paused_group_says_it_is_paused() {
    let mut f = healthy();
    f.groups[0].spec.paused = true;
    let v = api(&f);
    let t = text(&why::pod(&v, "p1", None, "app=api", f.now));
    assert!(
        t.contains("api is paused: leadership does not move until `kubectl podium resume api`."),
        "{t}"
    );
    assert!(!t.contains("handoff"), "{t}");
}

#[test]
fn why_a_group_without_status_asks_whether_the_operator_runs() {
    let mut f = healthy();
    f.groups[0].status = None;
    let v = api(&f);
    assert!(v.status_stale);
    let t = text(&why::group(&v, f.now));
    assert!(t.starts_with("api has no status yet"), "{t}");
    assert!(
        t.contains("p0 is a candidate") || t.contains("api has no leader"),
        "{t}"
    );
}

#[test]
fn the_status_tables_are_aligned() {
    let f = healthy();
    let t = status::render(&[api(&f)], &[], f.now);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[0],
        "GROUP   LEADER   TERM   LEADER SINCE   READY   PAUSED   NEXT HANDOFF   CONDITION"
    );
    assert_eq!(
        lines[1],
        "api     p0       3      5m0s ago       3/3     no       in 15h         LeaderReady=True"
    );
    assert_eq!(lines[3], "GROUP   POD   STANDING    READY   NODE   DETAIL");
    assert_eq!(lines[4], "api     p0    leader      True    n-a    term 3");
    assert_eq!(
        lines[5],
        "api     p1    candidate   True    n-b    reserved successor"
    );
}

#[test]
fn tables_pad_to_the_widest_cell_and_trim_the_end() {
    let mut t = Table::new(&["A", "BB"]);
    t.row(vec!["long".into(), String::new()]);
    assert_eq!(t.render(), "A      BB\nlong\n");
}

#[test]
fn ages_read_like_kubectl() {
    let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
    let before = |s: i64| now.checked_sub(jiff::SignedDuration::from_secs(s)).unwrap();
    assert_eq!(ago(before(5), now), "5s");
    assert_eq!(ago(before(125), now), "2m5s");
    assert_eq!(ago(before(3600), now), "60m");
    assert_eq!(ago(before(4 * 3600 + 60), now), "4h1m");
    assert_eq!(ago(before(30 * 3600), now), "30h");
    assert_eq!(ago(before(3 * 86400), now), "3d0h");
    assert_eq!(ago(before(30 * 86400), now), "30d");
    assert_eq!(ago(now, before(5)), "0s");
}

#[test]
fn watch_lines_give_the_reason_only_when_leadership_moved() {
    let f = healthy();
    let g = &f.groups[0];
    let line = watch::line(g, None, f.now);
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "2026-11-23T12:00:00Z",
            "p0",
            "3",
            "Manual",
            "p2",
            "True/LeaderReady",
            "no"
        ]
    );
    let seen = watch::Seen::of(g);
    let mut paused = g.clone();
    paused.spec.paused = true;
    let cells: Vec<String> = watch::line(&paused, Some(&seen), f.now)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(cells[3..], ["-", "-", "True/LeaderReady", "yes"]);
    assert_eq!(
        watch::header().split_whitespace().collect::<Vec<_>>(),
        [
            "TIME", "LEADER", "TERM", "REASON", "FROM", "READY", "PAUSED"
        ]
    );
}

#[test]
fn json_of_a_view_names_standings_in_kebab_case() {
    let v = api(&troubled());
    let json = serde_json::to_value(&v).unwrap();
    let young = json["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "young")
        .unwrap();
    assert_eq!(young["standing"], "not-ready-long-enough");
    assert_eq!(young["eligibleAt"], "2026-11-23T12:00:30Z");
    assert_eq!(json["name"], "api");
}
