//! Schedule punctuality: the handoffs of an `@every 10s` schedule, against `status.nextHandoff`.

use std::time::{Duration, Instant};

use podium_testkit::groups::{LeaderWatch, Setup, status};
use serde_json::json;

/// Offset between status.nextHandoff and the relabel a pod watch sees, over `n` handoffs.
pub async fn schedule_offsets(n: usize) -> Vec<f64> {
    let s = Setup::new("bench-schedule").await;
    s.pods(&["p0", "p1", "p2"], &[("app", "x")]).await;
    let watch = LeaderWatch::start(&s.ns, "app=x").await;
    s.apply_group(
        "api",
        json!({"selector": {"matchLabels": {"app": "x"}}, "handoff": {"schedule": "@every 10s"}}),
    )
    .await
    .unwrap();
    let mut g = s
        .wait_group("api", "leader", |g| status(g).next_handoff.is_some())
        .await;
    let mut offsets = vec![];
    for _ in 0..n {
        let st = status(&g);
        let due = st.next_handoff.unwrap().0;
        let old = st.leader.unwrap();
        let (new, seen) = watch
            .wait_new_leader(&old, Instant::now(), Duration::from_secs(20))
            .await;
        let seen_wall =
            jiff::Timestamp::now() - jiff::SignedDuration::try_from(seen.elapsed()).unwrap();
        let off = seen_wall.duration_since(due).as_secs_f64() * 1000.0;
        println!("  handoff {old} -> {new}: {off:.0} ms after nextHandoff");
        offsets.push(off);
        g = s
            .wait_group("api", "next", |g| {
                status(g).leader.as_deref() == Some(new.as_str())
                    && status(g).next_handoff.is_some_and(|t| t.0 > due)
            })
            .await;
    }
    offsets
}
