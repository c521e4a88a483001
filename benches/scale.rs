//! Scale: one operator, cold, on every namespace, converging thousands of groups of 5 pods;
//! failover in a probe group meanwhile, 60 s idle, then a storm of leader deletions.

mod cold_start;
mod storm;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use podium_api::ElectionGroup;
use podium_bench::config::{Config, Shape};
use podium_bench::metrics::{
    Histo, failover_stages, requests_between, stages_since, writes_between,
};
use podium_bench::stats::stats;
use podium_testkit::groups::{ROLE, status};
use podium_testkit::support::{
    Operator, TestNs, client, free_port, http_get, label, pod_manifest, wait_for_list,
};
use serde_json::{Value, json};

use crate::apiserver::{Durations, request_counts};
use crate::counting::{count_until, create_ready_pods};
use crate::host::{RssSampler, cpu_seconds_by_process, cpu_seconds_since, rss_peak_mib};
use crate::namespaces::{BenchNamespaces, run_id};
use crate::raw::{label_patches, rates_by_kind, raw_sweep};
use storm::{failover_under_load, probe_leader, storm_times};

/// Leaders per group (namespace/group), from pod labels.
pub fn leaders_by_group(pods: &[Arc<Pod>]) -> HashMap<String, Vec<String>> {
    let mut m: HashMap<String, Vec<String>> = HashMap::new();
    for p in pods {
        if label(p.as_ref(), ROLE).as_deref() == Some("leader") {
            let group = label(p.as_ref(), "group").unwrap_or_default();
            m.entry(format!("{}/{group}", p.namespace().unwrap_or_default()))
                .or_default()
                .push(p.name_any());
        }
    }
    m
}

/// Every pod is labelled and every group has exactly one leader, among `groups` groups.
pub fn one_leader_each(pods: &[Arc<Pod>], groups: usize) -> bool {
    let leaders = leaders_by_group(pods);
    pods.iter().all(|p| label(p.as_ref(), ROLE).is_some())
        && leaders.len() == groups
        && leaders.values().all(|l| l.len() == 1)
}

/// Pods per group in the scale runs.
pub const GROUP_SIZE: usize = 5;

/// The label on one scale run's pods and groups, whatever their namespace.
pub const RUN_LABEL: &str = "bench-run";

/// The probe group's pods' labels (its selector is `group=probe`).
pub const PROBE_LABELS: [(&str, &str); 1] = [("group", "probe")];

/// The scale runs' operator acts on every namespace: refuse to start it beside ElectionGroups
/// that are not the bench's (an e2e test's; a group already being deleted only gets the
/// cleanup its deletion asks for), or beside a podium running in the cluster (two
/// operators would share the bench's groups), which its controller Lease, renewed within the
/// last 30 s, gives away.
pub async fn assert_cluster_wide_ok(client: &Client) {
    // A freshly started API server answers 429 while its storage for the CRD initializes.
    let api = Api::<ElectionGroup>::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    let groups = loop {
        match api.list(&ListParams::default()).await {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                println!("  listing ElectionGroups: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("list ElectionGroups: {e}"),
        }
    };
    let foreign: Vec<String> = groups
        .items
        .iter()
        .filter(|g| g.metadata.deletion_timestamp.is_none())
        .map(|g| format!("{}/{}", g.namespace().unwrap_or_default(), g.name_any()))
        .filter(|g| !g.starts_with("bench-"))
        .collect();
    assert!(
        foreign.is_empty(),
        "the scale runs start podium on every namespace, and these ElectionGroups are not the bench's: {foreign:?}"
    );
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        client.clone(),
        "podium-system",
    )
    .get_opt("podium-controller")
    .await
    .ok()
    .flatten();
    let renewed = lease
        .and_then(|l| l.spec?.renew_time)
        .map(|t| jiff::Timestamp::now().duration_since(t.0));
    assert!(
        renewed.is_none_or(|ago| ago > jiff::SignedDuration::from_secs(30)),
        "a podium runs in the cluster (its Lease podium-system/podium-controller was renewed {renewed:?} ago; make undeploy): it would act on the bench's groups too"
    );
}

/// Server-side applies groups (namespace, name), each selecting the pods labelled
/// `group=<name>`, labelled `bench-run=<run>`.
pub async fn apply_groups(
    client: &Client,
    run: &str,
    groups: impl Iterator<Item = (String, String)>,
    concurrency: usize,
) {
    stream::iter(groups)
        .map(|(ns, name)| {
            let api: Api<ElectionGroup> = Api::namespaced(client.clone(), &ns);
            async move {
                let body = json!({"apiVersion": "podium.dev/v1alpha1", "kind": "ElectionGroup",
                    "metadata": {"name": name, "labels": {RUN_LABEL: run}},
                    "spec": {"selector": {"matchLabels": {"group": name}}}});
                api.patch(&name, &PatchParams::apply("bench"), &Patch::Apply(body))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
}

/// A group has a leader, all its members and has observed its current generation.
pub fn settled(g: &ElectionGroup) -> bool {
    g.status.as_ref().is_some_and(|st| {
        st.leader.is_some()
            && st.members == GROUP_SIZE as i32
            && st.observed_generation == g.metadata.generation
    })
}

/// One scale run of `shape`. Before the cold start, a probe group of 5 pods in a namespace of
/// its own is led by a short-lived operator. Then the shape's pods (Ready) and groups are
/// created, the raw patch rate is measured, and one operator starts cold; while the groups
/// converge, the probe group fails over again and again (failover under load). Then 60 s
/// idle, and a storm of leader deletions. Returns the row and the raw patch rate.
///
/// The operator runs on every namespace in both shapes, so that it sees the probe's namespace
/// beside the bench's one or many (nothing else may hold ElectionGroups meanwhile).
pub async fn scale(shape: Shape, cfg: &Config, last: bool) -> (Value, f64) {
    let (concurrency, create_concurrency) = (cfg.concurrency, cfg.create_concurrency);
    let client = client().await;
    assert_cluster_wide_ok(&client).await;
    let groups_n = shape.groups();
    let pods_n = groups_n * GROUP_SIZE;
    let per_ns = shape.groups_per_ns * GROUP_SIZE;
    // 50,000 pods take many minutes to be scheduled and run on the fake nodes, and their
    // groups many more to converge on a small machine.
    let big = pods_n > 5_000;
    let [pods_timeout, settle_timeout, storm_timeout] = if big {
        [1800, 3600, 900]
    } else {
        [600, 900, 300]
    }
    .map(Duration::from_secs);
    let run = run_id();
    let prefix = format!("bench-scale-{}-{run}", shape.name());
    let names: Vec<String> = if shape.namespaces == 1 {
        vec![prefix.clone()]
    } else {
        (0..shape.namespaces)
            .map(|i| format!("{prefix}-{i}"))
            .collect()
    };
    let probe = TestNs {
        client: client.clone(),
        name: format!("bench-probe-{run}"),
    };
    let namespaces = BenchNamespaces::create(
        &client,
        [probe.name.clone()]
            .into_iter()
            .chain(names.clone())
            .collect(),
        create_concurrency,
    )
    .await;

    // The probe group, led once by an operator of its own before the cold start.
    let probe_pods = probe.api::<Pod>();
    create_ready_pods(
        &probe_pods,
        "group=probe",
        GROUP_SIZE,
        GROUP_SIZE,
        Duration::from_secs(120),
        |i| {
            let pod = pod_manifest(&format!("probe-{i}"), &PROBE_LABELS, &[]);
            (probe.name.clone(), pod)
        },
    )
    .await;
    let probe_group = (probe.name.clone(), "probe".to_string());
    apply_groups(&client, "probe", [probe_group].into_iter(), 1).await;
    let warm = Operator::start_cluster_wide(&probe.name, &[]);
    probe_leader(&probe_pods, true, Duration::from_secs(60)).await;
    warm.kill().await;

    println!(
        "  creating {pods_n} pods and {groups_n} groups in {} namespace(s)",
        names.len()
    );
    let selector = format!("{RUN_LABEL}={run}");
    let all_pods: Api<Pod> = Api::all(client.clone());
    let group_of = |i: usize| format!("g{}", i % per_ns / GROUP_SIZE);
    let pod_at = |i: usize| {
        let name = format!("{}-{}", group_of(i), i % GROUP_SIZE);
        (names[i / per_ns].clone(), name)
    };
    create_ready_pods(
        &all_pods,
        &selector,
        pods_n,
        create_concurrency,
        pods_timeout,
        |i| {
            let (ns, name) = pod_at(i);
            let pod = pod_manifest(&name, &[("group", &group_of(i)), (RUN_LABEL, &run)], &[]);
            (ns, pod)
        },
    )
    .await;
    let groups = (0..groups_n).map(|i| {
        let ns = names[i / shape.groups_per_ns].clone();
        (ns, format!("g{}", i % shape.groups_per_ns))
    });
    apply_groups(&client, &run, groups, create_concurrency).await;

    // Raw capacity first: label patches from a plain client at the operator's concurrency.
    let raw_n = pods_n.min(2000);
    let raw_before = Durations::now(&client).await;
    let raw_per_s = label_patches(&client, "raw", raw_n, concurrency, pod_at).await;
    let raw_patch_ms = raw_before.mean_patch_ms(&Durations::now(&client).await);
    let raw_sweep = raw_sweep(&client, &cfg.raw_sweep, raw_n, pod_at).await;
    let group_at = |i: usize| {
        let i = i % groups_n;
        (
            names[i / shape.groups_per_ns].clone(),
            format!("g{}", i % shape.groups_per_ns),
        )
    };
    let by_kind = rates_by_kind(&client, raw_n, concurrency, group_at, pod_at).await;

    let before = request_counts(&client).await;
    let durations_before = Durations::now(&client).await;
    let cpu_before = cpu_seconds_by_process();
    let port = free_port();
    let start = Instant::now();
    let start_wall = jiff::Timestamp::now();
    let mut op = Operator::start_cluster_wide(
        &prefix,
        &[
            "--concurrency",
            &concurrency.to_string(),
            "--http-addr",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let pid = op_pid(&op);
    let rss = RssSampler::start(pid, start);
    let groups_api: Api<ElectionGroup> = Api::all(client.clone());
    let converged = AtomicBool::new(false);
    let converge = async {
        let timeline = count_until(
            &groups_api,
            watcher::Config::default().labels(&selector),
            groups_n,
            settled,
            start,
            settle_timeout,
            "groups settled",
        )
        .await;
        let settled_ms = ms_since(start);
        let pods = wait_for_list(
            &all_pods,
            watcher::Config::default().labels(&selector),
            pods_timeout,
            "pods labelled",
            |p| p.len() == pods_n && one_leader_each(p, groups_n),
        )
        .await;
        let verified_ms = ms_since(start);
        converged.store(true, Ordering::SeqCst);
        let held_s = metric_value(port, "podium_failover_priority_seconds_total").await;
        let durations = Durations::now(&client).await;
        let patch_ms = durations_before.mean_patch_ms(&durations);
        let cpu = cpu_seconds_since(&cpu_before, start);
        let serving = (durations.writes - durations_before.writes) / start.elapsed().as_secs_f64();
        // Status writes land last; give in-flight Events a moment before counting.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let labelled_ms = last_write_ms(&pods, start_wall)
            .expect("the labelled pods carry podium's managedFields entry");
        let times = json!({"settled_ms": settled_ms.round(), "labelled_ms": labelled_ms.round(),
                           "verified_ms": verified_ms.round(), "failover_priority_s": held_s,
                           "pod_patch_ms_raw": raw_patch_ms, "pod_patch_ms_converging": patch_ms,
                           "cpu_cores_converging": cpu,
                           "writes_in_flight_converging": (serving * 10.0).round() / 10.0});
        // Converged once every group is settled and every pod labelled; the bench's own list
        // that confirms it (tens of seconds for 50,000 pods) is timed apart, as verified_ms.
        let converge_ms = settled_ms.max(labelled_ms);
        (timeline, times, converge_ms, request_counts(&client).await)
    };
    let ((timeline, times, converge_ms, after), (failover_ms, during, ready_ms, failover_parts)) = tokio::join!(
        converge,
        failover_under_load(&probe, port, start, &converged, settle_timeout)
    );
    let writes = writes_between(&before, &after, &["pods", "electiongroups"]);
    let failover_stats = stats(&failover_ms);
    // The same failovers as podium timed them: from the reconcile that saw the leader gone (the
    // watch delivery and the queue before it left out) to its plan applied in full (the
    // successor's label, then the status write the bench does not wait for); and podium's
    // parts of them, up to the label acknowledged.
    let metrics = http_get(port, "/metrics").await.unwrap_or_default().1;
    let failover_podium = Histo::parse(&metrics, "podium_failover_duration_seconds", "").summary();
    let stages_converging = failover_stages(&metrics);
    let failover_stages_ms = stages_since(&stages_converging, None);
    println!("  failover under load, podium's parts: {failover_stages_ms}");
    println!(
        "  converged in {converge_ms:.0} ms ({times}) with {writes} writes; failover under load ({during} trials during convergence): {failover_stats}"
    );

    let idle_start = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let idle = request_counts(&client).await;
    // Pod and group writes in this window can only be podium's; Events are counted in the
    // bench namespaces by reporting controller, because other components post Events
    // cluster-wide.
    let idle_writes = writes_between(&after, &idle, &["pods", "electiongroups"])
        + podium_events_since(&client, &names, idle_start).await as f64;
    println!("  idle 60 s: {idle_writes} writes");

    // Storm: leaders deleted at once, 1,000 of them from 10,000 groups up.
    let storm_n = if groups_n >= 10_000 {
        1000
    } else {
        groups_n.min(100)
    };
    let gs = groups_api
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items;
    let victims: Vec<(String, String, String)> = gs
        .iter()
        .take(storm_n)
        .map(|g| {
            let ns = g.namespace().unwrap_or_default();
            (ns, g.name_any(), status(g).leader.unwrap())
        })
        .collect();
    let storm_before = request_counts(&client).await;
    let (storm, storm_deleted_ms, since_own) =
        storm_times(&all_pods, &selector, &victims, storm_timeout).await;
    let storm_requests = requests_between(&storm_before, &request_counts(&client).await);
    let metrics = http_get(port, "/metrics").await.unwrap_or_default().1;
    let storm_stages = stages_since(&failover_stages(&metrics), Some(&stages_converging));
    println!("  storm, podium's parts: {storm_stages}");
    let storm_stats = stats(&storm);
    let since_own = stats(&since_own);
    println!("  storm, each from its own leader's deletion: {since_own}");
    println!(
        "  storm of {storm_n}: {storm_stats}; the last deletion answered after {storm_deleted_ms:.0} ms"
    );
    let rss_timeline = rss.stop().await;
    let rss = rss_peak_mib(pid);
    assert!(op.alive());
    op.kill().await;
    let cold_starts = if cfg.list_rounds > 0 {
        println!(
            "  cold starts by list mode: {} round(s) of paged and streaming",
            cfg.list_rounds
        );
        cold_start::cold_starts(&prefix, cfg.list_rounds, settle_timeout).await
    } else {
        Value::Null
    };
    // Only a following entry needs the pods gone; after the last, deletion goes on unwatched.
    let wait = if last { Duration::ZERO } else { pods_timeout };
    namespaces.delete_and_wait(wait).await;
    let bound_ms = |writes: usize| (writes as f64 / raw_per_s * 1000.0).round();
    // One label per pod, and per group its finalizer and one status write.
    let min_writes = pods_n + 2 * groups_n;
    // The bound at the best concurrency swept: what no operator beats at any concurrency.
    let best_per_s = raw_sweep.values().copied().fold(raw_per_s, f64::max);
    let best_bound_ms = (min_writes as f64 / best_per_s * 1000.0).round();
    // The same writes, each kind at the rate a plain client reached for it; and every request
    // of a cold start, with the two Events a new group's first election posts (LeaderElected,
    // BecameLeader), which convergence does not wait for: what the API server is asked to do.
    let kind_ms = |count: usize, kind: &str| count as f64 / by_kind[kind] * 1000.0;
    let by_kind_ms = pods_n as f64 / raw_per_s * 1000.0
        + kind_ms(groups_n, "group_metadata")
        + kind_ms(groups_n, "group_status");
    let with_events_ms = by_kind_ms + kind_ms(2 * groups_n, "event");
    (
        json!({"groups": groups_n, "namespaces": shape.namespaces, "groups_per_namespace": shape.groups_per_ns,
               "pods": pods_n, "operator_ready_ms": ready_ms.round(), "converge_ms": converge_ms.round(), "converge_parts": times, "api_bound_ms": bound_ms(min_writes), "api_bound_best_ms": best_bound_ms,
               "api_bound_by_kind_ms": by_kind_ms.round(), "all_writes_by_kind_ms": with_events_ms.round(), "raw_per_s_by_kind": by_kind,
               "raw_patch_per_s": (raw_per_s * 10.0).round() / 10.0, "raw_patch_per_s_by_concurrency": raw_sweep, "writes": writes,
               "min_writes": min_writes, "idle_writes_60s": idle_writes, "rss_mib": rss, "cold_start_by_list_mode": cold_starts,
               "storm_n": storm_n, "storm_deleted_ms": storm_deleted_ms.round(), "storm_from_own_deletion_ms": since_own, "storm_p50_ms": storm_stats["p50"], "storm_p99_ms": storm_stats["p99"],
               "storm_api_bound_ms": bound_ms(storm_n), "storm_requests": storm_requests,
               "converge_requests": requests_between(&before, &after), "failover_under_load_ms": failover_stats,
               "failover_under_load_podium_ms": failover_podium,
               "failover_under_load_stages_ms": failover_stages_ms, "failover_under_load_bench_parts_ms": failover_parts, "storm_stages_ms": storm_stages,
               "failover_under_load_trials_during_convergence": during,
               "concurrency": concurrency, "podium_bin": cfg.operator,
               "timeline": timeline, "rss_timeline": rss_timeline}),
        raw_per_s,
    )
}

pub fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// When podium last wrote any of `pods`, in ms since `start`: the API server stamps each
/// manager's `managedFields` entry with the time of its last change, to the second, so this
/// rounds up to the end of that second.
pub fn last_write_ms(pods: &[Arc<Pod>], start: jiff::Timestamp) -> Option<f64> {
    let last = pods
        .iter()
        .flat_map(|p| p.metadata.managed_fields.iter().flatten())
        .filter(|m| m.manager.as_deref() == Some(podium_api::MANAGER))
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max()?;
    Some((last.duration_since(start).as_secs_f64() + 1.0) * 1000.0)
}

/// Events podium created or updated in `namespaces` since `since`.
pub async fn podium_events_since(
    client: &Client,
    namespaces: &[String],
    since: jiff::Timestamp,
) -> usize {
    let events = Api::<k8s_openapi::api::events::v1::Event>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    events
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("podium"))
        .filter(|e| namespaces.contains(&e.namespace().unwrap_or_default()))
        .filter(|e| {
            let last = e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or(e.event_time.as_ref().map(|t| t.0));
            last.is_some_and(|t| t >= since)
        })
        .count()
}

pub fn op_pid(op: &Operator) -> u32 {
    op.pid().expect("operator pid")
}

/// The value of an unlabelled metric on the operator's HTTP port (NaN when it cannot be read).
pub async fn metric_value(port: u16, name: &str) -> f64 {
    let body = http_get(port, "/metrics").await.map(|(_, b)| b);
    body.as_deref()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}
