//! Failover under load (a probe group's leader deleted again and again while the groups
//! converge) and the storm (many leaders deleted at once).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::watcher;
use podium_bench::stats::stats;
use podium_testkit::groups::{LeaderWatch, ROLE};
use podium_testkit::support::{TestNs, label, wait_for_list, wait_http};
use serde_json::{Value, json};

use super::{GROUP_SIZE, PROBE_LABELS, leaders_by_group};

/// The pod labelled leader among the probe's pods, once there is exactly one and (if `all`)
/// all 5 are labelled.
pub async fn probe_leader(pods: &Api<Pod>, all: bool, timeout: Duration) -> String {
    let cfg = watcher::Config::default().labels("group=probe");
    let leaders = |p: &[Arc<Pod>]| {
        leaders_by_group(p)
            .into_values()
            .flatten()
            .collect::<Vec<_>>()
    };
    let led = |p: &[Arc<Pod>]| {
        let labelled = p.len() == GROUP_SIZE && p.iter().all(|p| label(p.as_ref(), ROLE).is_some());
        leaders(p).len() == 1 && (labelled || !all)
    };
    let pods = wait_for_list(pods, cfg, timeout, "the probe group's leader", led).await;
    leaders(&pods).remove(0)
}

/// Failover in a settled group while others converge. Once the operator (`/readyz` on
/// `port`) has synced its caches: deletes the probe group's leader (grace 0) and times, from a
/// pod watch, until another probe pod is labelled leader; replaces the deleted pod (a new name,
/// the same labels), waits until it is Ready, pauses 300 ms, and again until `converged`, and at
/// least 5 times. Returns the times, how many trials began before convergence ended, when
/// (ms after `start`) the operator was ready, and the parts the bench sees: when each deletion
/// was answered, when its watch saw the pod gone, and the new leader seen after the answer.
pub async fn failover_under_load(
    probe: &TestNs,
    port: u16,
    start: Instant,
    converged: &AtomicBool,
    timeout: Duration,
) -> (Vec<f64>, usize, f64, Value) {
    let watch = LeaderWatch::start(probe, "group=probe").await;
    let mut leader = probe_leader(&probe.api(), false, timeout).await;
    wait_http(port, "/readyz", 200, timeout).await;
    let ready_ms = start.elapsed().as_secs_f64() * 1000.0;
    let (mut times, mut during) = (vec![], 0);
    let (mut answered, mut seen_gone, mut after_answer) = (vec![], vec![], vec![]);
    // Replacements get new names: under load a same-named replacement was seen deleted (grace
    // 0) at once, as if the deletion of its predecessor, finished late, had reached it too.
    let mut replacements = GROUP_SIZE..;
    while !converged.load(Ordering::SeqCst) || times.len() < 5 {
        during += usize::from(!converged.load(Ordering::SeqCst));
        let start = Instant::now();
        probe.delete_pod_now(&leader).await;
        let answered_at = Instant::now();
        answered.push(answered_at.duration_since(start).as_secs_f64() * 1000.0);
        let (next, seen) = watch.wait_new_leader(&leader, start, timeout).await;
        times.push(seen.duration_since(start).as_secs_f64() * 1000.0);
        after_answer.push(seen.saturating_duration_since(answered_at).as_secs_f64() * 1000.0);
        // The deletion reaches the bench's watch as it reaches podium's (both watch pods).
        if let Some(gone) = watch.seen_gone(&leader, start) {
            seen_gone.push(gone.duration_since(start).as_secs_f64() * 1000.0);
        }
        let name = format!("probe-{}", replacements.next().unwrap_or_default());
        probe.create_pod(&name, &PROBE_LABELS).await;
        probe.wait_running(&name).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        leader = next;
    }
    assert!(
        watch.max_leaders() <= 1,
        "a watch saw two probe leaders at once"
    );
    let parts = json!({"delete_answered_ms": stats(&answered), "seen_deleted_ms": stats(&seen_gone),
               "leader_after_answer_ms": stats(&after_answer)});
    (times, during, ready_ms, parts)
}

/// Deletes each victim's leader (grace 0) and returns, per victim (namespace, group, leader),
/// the ms from before the first deletion until another pod of its group is labelled leader,
/// as a watch of the `selector` pods sees it. The watch lists first, so that no relabel is
/// seen late; the deletions go out 100 at a time, as fast as the API server takes them.
pub async fn storm_times(
    pods: &Api<Pod>,
    selector: &str,
    victims: &[(String, String, String)],
    timeout: Duration,
) -> (Vec<f64>, f64, Vec<f64>) {
    let client = pods.clone().into_client();
    let mut waiting: HashMap<(String, String), String> = victims
        .iter()
        .map(|(ns, g, leader)| ((ns.clone(), g.clone()), leader.clone()))
        .collect();
    let events = watcher(pods.clone(), watcher::Config::default().labels(selector));
    let mut events = std::pin::pin!(events);
    loop {
        match events.try_next().await {
            Ok(Some(watcher::Event::InitDone)) => break,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the storm's pod watch ended before its first list"),
            Err(e) => panic!("the storm's pod watch failed before its first list: {e}"),
        }
    }
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    // When each deletion was answered: the API server takes its time over a thousand of them,
    // so each group's failover is also timed from its own leader's deletion.
    let answered: std::sync::Mutex<HashMap<(String, String), f64>> = Default::default();
    let delete = stream::iter(victims)
        .map(|(ns, _, pod)| {
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let answered = &answered;
            async move {
                api.delete(pod, &DeleteParams::default().grace_period(0))
                    .await
                    .unwrap();
                answered.lock().unwrap().insert(
                    (ns.clone(), pod.clone()),
                    start.elapsed().as_secs_f64() * 1000.0,
                );
            }
        })
        .buffer_unordered(100)
        .collect::<Vec<_>>();
    let delete = async {
        delete.await;
        start.elapsed().as_secs_f64() * 1000.0
    };
    let promoted = async {
        let mut times = vec![];
        let mut victim_times = vec![];
        while !waiting.is_empty() {
            let p = match tokio::time::timeout_at(deadline, events.try_next()).await {
                Ok(Ok(Some(watcher::Event::Apply(p) | watcher::Event::InitApply(p)))) => p,
                Ok(Ok(Some(_))) => continue,
                _ => break,
            };
            let key = (
                p.namespace().unwrap_or_default(),
                label(&p, "group").unwrap_or_default(),
            );
            if label(&p, ROLE).as_deref() == Some("leader")
                && waiting.get(&key).is_some_and(|old| *old != p.name_any())
            {
                let old = waiting.remove(&key).unwrap_or_default();
                let now = start.elapsed().as_secs_f64() * 1000.0;
                times.push(now);
                victim_times.push((key.0, old, now));
            }
        }
        (times, victim_times)
    };
    let (deleted_ms, (times, victim_times)) = tokio::join!(delete, promoted);
    assert!(
        waiting.is_empty(),
        "{} groups never got a new leader",
        waiting.len()
    );
    // A new leader can be labelled before the deletion's answer reaches the bench: 0 then.
    let answered = answered.into_inner().unwrap();
    let since_own: Vec<f64> = victim_times
        .into_iter()
        .filter_map(|(ns, pod, at)| answered.get(&(ns, pod)).map(|d| (at - d).max(0.0)))
        .collect();
    (times, deleted_ms, since_own)
}
