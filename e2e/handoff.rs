//! Scheduled, maximum-term and manual handoffs, both handoff modes, and the Lease mirror.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::election::wait_event;
use crate::groups::*;
use crate::support::*;

async fn request_handoff(s: &Setup, group: &str, to: &str) {
    s.groups()
        .patch(
            group,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"podium.dev/handoff-to": to}}})),
        )
        .await
        .unwrap();
}

async fn wait_request_cleared(s: &Setup, group: &str) {
    s.wait_group(group, "annotation removed", |g| {
        !g.annotations().contains_key("podium.dev/handoff-to")
    })
    .await;
}

#[tokio::test]
async fn every_10s_rotates_through_all_pods_on_time() {
    let s = Setup::new("handoff-every").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    let watch = LeaderWatch::start(&s.ns, "app=x").await;
    s.apply_group(
        "api",
        json!({"selector": {"matchLabels": {"app": "x"}}, "handoff": {"schedule": "@every 10s"}}),
    )
    .await
    .unwrap();
    let mut g = s.wait_leader("api", "app=x", "p0").await;
    let mut leaders = vec!["p0".to_string()];
    for i in 0..3 {
        let st = status(&g);
        let due = st.next_handoff.expect("nextHandoff is set").0;
        let old = st.leader.clone().unwrap();
        let since = Instant::now();
        let (new, seen_at) = watch
            .wait_new_leader(&old, since, Duration::from_secs(30))
            .await;
        // Translate the watch's monotonic instant to wall time to compare with nextHandoff.
        let seen_wall =
            jiff::Timestamp::now() - jiff::SignedDuration::try_from(seen_at.elapsed()).unwrap();
        let offset = seen_wall.duration_since(due);
        println!(
            "handoff {i}: {old} -> {new}, {} ms after nextHandoff",
            offset.as_millis()
        );
        // Not early (nextHandoff has one-second resolution), and not stuck; how close to
        // the schedule it lands is measured by `make bench`, not asserted here.
        assert!(
            offset > -jiff::SignedDuration::from_secs(1),
            "handoff {i} came {offset} before nextHandoff"
        );
        assert!(
            offset < jiff::SignedDuration::from_secs(30),
            "handoff {i} came {offset} after nextHandoff"
        );
        g = s.wait_leader("api", "app=x", &new).await;
        let st = status(&g);
        assert_eq!(
            st.last_transition.as_ref().unwrap().reason.as_str(),
            "Scheduled"
        );
        assert_eq!(st.term, 2 + i);
        leaders.push(new);
    }
    assert_eq!(leaders, ["p0", "p1", "p2", "p0"], "every pod led in turn");
    assert!(watch.max_leaders() <= 1);
}

#[tokio::test]
async fn a_lone_pod_keeps_leading_and_the_skip_is_reported() {
    let s = Setup::new("handoff-solo").await;
    s.pods(&["solo"], &[("app", "x")]).await;
    s.apply_group(
        "api",
        json!({"selector": {"matchLabels": {"app": "x"}}, "handoff": {"schedule": "@every 2s"}}),
    )
    .await
    .unwrap();
    let g = s.wait_leader("api", "app=x", "solo").await;
    let first = status(&g).next_handoff.unwrap().0;
    wait_event(&s.ns, "api", "HandoffSkipped").await;
    let g = s
        .wait_group("api", "next handoff moved on", |g| {
            status(g).next_handoff.is_some_and(|t| t.0 > first)
        })
        .await;
    assert_eq!(status(&g).leader.as_deref(), Some("solo"));
    assert_eq!(status(&g).term, 1);
}

#[tokio::test]
async fn cron_with_seconds_and_time_zone_gives_the_expected_next_handoff() {
    let s = Setup::new("handoff-cron").await;
    s.pods(&["p0", "p1"], &[("app", "x")]).await;
    s.apply_group(
        "api",
        json!({"selector": {"matchLabels": {"app": "x"}},
               "handoff": {"schedule": "30 15 4 * * *", "timeZone": "Asia/Tokyo"}}),
    )
    .await
    .unwrap();
    let g = s.wait_leader("api", "app=x", "p0").await;
    let st = status(&g);
    let since = st.leader_since.unwrap().0;
    // Independently: the first 04:15:30 Tokyo time strictly after leaderSince.
    let local = since.to_zoned(jiff::tz::TimeZone::get("Asia/Tokyo").unwrap());
    let today = local
        .date()
        .at(4, 15, 30, 0)
        .to_zoned(local.time_zone().clone())
        .unwrap();
    let want = if today.timestamp() > since {
        today
    } else {
        today.tomorrow().unwrap()
    };
    assert_eq!(st.next_handoff.as_ref().unwrap().0, want.timestamp());
    // What a user sees: `kubectl get eg` prints that instant under NEXT HANDOFF.
    let out = kubectl(&["-n", &s.ns.name, "get", "eg", "api", "--no-headers"]);
    println!("{out}");
    let cells: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        cells.get(5).copied(),
        Some(
            want.timestamp()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
                .as_str()
        ),
        "NEXT HANDOFF in {out:?}"
    );
}

#[tokio::test]
async fn max_term_hands_over() {
    let s = Setup::new("handoff-maxterm").await;
    s.pods(&["p0", "p1"], &[("app", "x")]).await;
    s.apply_group(
        "api",
        json!({"selector": {"matchLabels": {"app": "x"}}, "handoff": {"maxTerm": "5s"}}),
    )
    .await
    .unwrap();
    let g = s.wait_leader("api", "app=x", "p0").await;
    let st = status(&g);
    let since = st.leader_since.unwrap().0;
    assert_eq!(
        st.next_handoff.unwrap().0,
        since + jiff::SignedDuration::from_secs(5)
    );
    let g = s.wait_leader("api", "app=x", "p1").await;
    assert_eq!(
        status(&g).last_transition.unwrap().reason.as_str(),
        "MaxTerm"
    );
}

#[tokio::test]
async fn manual_handoffs_to_a_pod_to_any_and_to_a_bogus_target() {
    let s = Setup::new("handoff-manual").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group("api", json!({"selector": {"matchLabels": {"app": "x"}}}))
        .await
        .unwrap();
    s.wait_leader("api", "app=x", "p0").await;

    request_handoff(&s, "api", "p2").await;
    let g = s.wait_leader("api", "app=x", "p2").await;
    wait_request_cleared(&s, "api").await;
    assert_eq!(
        status(&g).last_transition.unwrap().reason.as_str(),
        "Manual"
    );
    // p1 was the reserved successor with term 2, so p2 gets a term above it.
    let to_p2 = status(&g).term;
    assert!(to_p2 > 1, "term {to_p2}");

    request_handoff(&s, "api", "any").await;
    let g = s.wait_leader("api", "app=x", "p0").await;
    wait_request_cleared(&s, "api").await;
    let to_p0 = status(&g).term;
    assert!(to_p0 > to_p2, "terms rise: {to_p2} then {to_p0}");

    request_handoff(&s, "api", "no-such-pod").await;
    wait_request_cleared(&s, "api").await;
    let ev = wait_event(&s.ns, "api", "HandoffRejected").await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(ev.note.unwrap_or_default().contains("no-such-pod"));
    let g = s.groups().get("api").await.unwrap();
    assert_eq!(status(&g).leader.as_deref(), Some("p0"));
    assert_eq!(status(&g).term, to_p0, "a rejected request moves nothing");
}

async fn twenty_handoffs(mode: &str) -> LeaderWatch {
    let s = Setup::new(&format!("handoff-{}", mode.to_lowercase())).await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    s.apply_group(
        "api",
        json!({"selector": {"matchLabels": {"app": "x"}}, "handoff": {"mode": mode}}),
    )
    .await
    .unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    let watch = LeaderWatch::start(&s.ns, "app=x").await;
    for i in 0..20 {
        request_handoff(&s, "api", "any").await;
        let g = s
            .wait_group("api", "term moved", |g| status(g).term == 2 + i)
            .await;
        s.wait_leader("api", "app=x", status(&g).leader.as_deref().unwrap())
            .await;
        wait_request_cleared(&s, "api").await;
    }
    watch
}

#[tokio::test]
async fn break_before_make_never_shows_two_leaders() {
    let watch = twenty_handoffs("BreakBeforeMake").await;
    assert_eq!(watch.max_leaders(), 1, "a watch saw two leaders at once");
}

#[tokio::test]
async fn make_before_break_never_shows_zero_leaders() {
    let watch = twenty_handoffs("MakeBeforeBreak").await;
    assert_eq!(
        watch.min_leaders(),
        Some(1),
        "a watch saw no leader while the old one was alive"
    );
    assert_eq!(
        watch.max_leaders(),
        2,
        "make-before-break overlaps the two leaders briefly"
    );
}

#[tokio::test]
async fn the_lease_mirror_follows_the_leader() {
    let s = Setup::new("handoff-lease").await;
    s.pods(&["p0", "p1"], &[("app", "x")]).await;
    s.apply_group(
        "api",
        json!({"selector": {"matchLabels": {"app": "x"}}, "publishLease": true}),
    )
    .await
    .unwrap();
    s.wait_leader("api", "app=x", "p0").await;
    let leases = s.ns.api::<Lease>();
    let lease = wait_for_object(&leases, "api", Duration::from_secs(10), |l: &Lease| {
        l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some("p0")
    })
    .await;
    assert_eq!(lease.spec.as_ref().unwrap().lease_transitions, Some(1));
    assert_eq!(
        lease.owner_references().first().map(|o| o.name.as_str()),
        Some("api")
    );

    s.ns.delete_pod_now("p0").await;
    s.wait_leader("api", "app=x", "p1").await;
    wait_for_object(&leases, "api", Duration::from_secs(10), |l: &Lease| {
        let spec = l.spec.clone().unwrap_or_default();
        spec.holder_identity.as_deref() == Some("p1") && spec.lease_transitions == Some(2)
    })
    .await;
}
