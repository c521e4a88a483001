//! `make bench`: failover, traffic switch, scale and schedule figures for podium, beside
//! client-go's Lease-based election, all measured against the local control plane; and the
//! application's view: when a member process (the Go client, `podium-member-go`) learns that
//! it leads or no longer leads, and what each scheme writes to the API server while idle.
//! Writes results.json and report.md to target/bench, or to `BENCH_OUT` (plot.py draws the PNGs).
//! Its configuration, the `BENCH_*` variables, is `podium_bench::config::Config`; each
//! experiment is a module here, the parts that need no cluster are in crates/bench.

mod apiserver;
mod app;
mod counting;
mod failover;
mod failure_kinds;
mod host;
mod idle;
mod kube_proxy;
mod lease;
mod namespaces;
mod raw;
mod scale;
mod schedule;

use std::path::Path;
use std::time::{Duration, Instant};

use podium_bench::config::{Config, LeaseTimings};
use podium_bench::report::report;
use podium_bench::stats::stats;
use podium_testkit::groups::install_crd;
use podium_testkit::support::client;
use serde_json::{Value, json};

use crate::app::{AppRun, app_failover};
use crate::failover::{Failovers, failover};
use crate::host::machine;
use crate::idle::{background, idle_row};
use crate::lease::lease_baseline;
use crate::raw::raw_patch_rate;
use crate::scale::scale;
use crate::schedule::schedule_offsets;

#[tokio::main]
async fn main() {
    let cfg = Config::from_env(Path::new(env!("CARGO_MANIFEST_DIR")));
    let Config {
        trials,
        app_trials,
        idle_s,
        concurrency,
        handoffs,
        lease_kills,
        lease_releases,
        lease_tuned_kills: tuned_kills,
        lease_tuned: tuned,
        kind_trials,
        node_loss_trials,
        kind_lease_trials,
        forged_trials,
        ..
    } = cfg;
    std::fs::create_dir_all(&cfg.out).unwrap();
    let begun = Instant::now();
    install_crd().await;
    let client = client().await;
    let version = client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_default();

    // The idle baseline runs first, with nothing of the bench running yet.
    let bg = if idle_s > 0 {
        println!("idle baseline: {idle_s} s with nothing of the bench running");
        let bg = background(Duration::from_secs(idle_s)).await;
        println!(
            "  background writes/s: pods+electiongroups+events {:.2}, leases {:.2}",
            bg.podium_per_s, bg.leases_per_s
        );
        Some(bg)
    } else {
        None
    };

    let app = if app_trials > 0 || idle_s > 0 {
        println!(
            "application's view (podium-member-go): {app_trials} leader deletions and {app_trials} manual handoffs"
        );
        Some(app_failover(&cfg).await)
    } else {
        None
    };

    let failovers = if trials + forged_trials > 0 {
        println!(
            "failover: {trials} delete and {trials} NotReady trials, both routes; {forged_trials} forged labels"
        );
        let r = failover(trials, forged_trials).await;
        let all = |a: &[f64], b: &[f64]| stats(&[a, b].concat());
        println!(
            "  delete {}  unready {}\n  slices: label route {}  owned route {}\n  forged label reverted {} (listed by the label route in {} trial(s), by podium's own in {})",
            stats(&r.delete_ms),
            stats(&r.unready_ms),
            all(&r.label_delete_ms, &r.label_unready_ms),
            all(&r.owned_delete_ms, &r.owned_unready_ms),
            stats(&r.forged_ms),
            r.forged_in_label,
            r.forged_in_owned,
        );
        r
    } else {
        Failovers::default()
    };
    let (switch, forged) = failovers.json();
    let Failovers {
        delete_ms,
        unready_ms,
        ..
    } = failovers;

    let lease_default = if lease_kills + lease_releases > 0 || idle_s > 0 {
        println!(
            "client-go Lease baseline ({}): {lease_kills} kill -9 and {lease_releases} release trials",
            LeaseTimings::DEFAULT.label()
        );
        Some(lease_baseline(LeaseTimings::DEFAULT, lease_kills, lease_releases, idle_s).await)
    } else {
        None
    };
    let lease_tuned = if tuned_kills > 0 || idle_s > 0 {
        println!(
            "client-go Lease, tuned ({}): {tuned_kills} kill -9 trials",
            tuned.label()
        );
        Some(lease_baseline(tuned, tuned_kills, 0, idle_s).await)
    } else {
        None
    };

    let kinds = if kind_trials + node_loss_trials + kind_lease_trials == 0 {
        Value::Null
    } else if failure_kinds::available() {
        failure_kinds::failure_kinds(&cfg).await
    } else {
        println!("failure kinds: skipped, the real node is not up (make cluster-up)");
        Value::Null
    };

    let mut scale_rows = vec![];
    let mut raw = 0.0;
    let entries = cfg.scales.len();
    for (i, &shape) in cfg.scales.iter().enumerate() {
        println!(
            "scale: {} namespace(s) of {} groups",
            shape.namespaces, shape.groups_per_ns
        );
        let last = i + 1 == entries;
        let (row, raw_per_s) = scale(shape, &cfg, last).await;
        raw = f64::max(raw, raw_per_s);
        scale_rows.push(row);
    }
    if raw == 0.0 && idle_s > 0 {
        println!("raw API capacity: 1000 pod label patches at concurrency {concurrency}");
        raw = raw_patch_rate(concurrency).await;
        println!("  {raw:.1} patches/s");
    }

    let offsets = if handoffs > 0 {
        println!("schedule punctuality: {handoffs} handoffs of @every 10s");
        schedule_offsets(handoffs).await
    } else {
        vec![]
    };

    let ratio = |num: &Value, den: &Value| match (num.as_f64(), den.as_f64()) {
        (Some(n), Some(d)) if d > 0.0 => json!((n / d * 10.0).round() / 10.0),
        _ => Value::Null,
    };
    let delete_stats = stats(&delete_ms);
    let lease_kill = lease_default
        .as_ref()
        .map(|r| r.kill_ms.clone())
        .unwrap_or_default();
    let lease_release = lease_default
        .as_ref()
        .map(|r| r.release_ms.clone())
        .unwrap_or_default();
    let tuned_kill = lease_tuned
        .as_ref()
        .map(|r| r.kill_ms.clone())
        .unwrap_or_default();
    let lease_kill_stats = stats(&lease_kill);
    let tuned_kill_stats = stats(&tuned_kill);
    let app_samples =
        |f: fn(&AppRun) -> &Vec<f64>| app.as_ref().map(|a| f(a).clone()).unwrap_or_default();
    let app_failover_ms = app_samples(|a| &a.failover_ms);
    let app_failover_stats = stats(&app_failover_ms);
    let app_stepdown_ms = app_samples(|a| &a.stepdown_ms);

    // Idle writes per group per second, less the background; and at 1,000 groups.
    let mut idle_rows = serde_json::Map::new();
    if let Some(bg) = &bg {
        let rows = [
            (
                "podium",
                app.as_ref().and_then(|a| a.idle.clone()),
                bg.podium_per_s,
            ),
            (
                "lease_default",
                lease_default.as_ref().and_then(|r| r.idle.clone()),
                bg.leases_per_s,
            ),
            (
                "lease_tuned",
                lease_tuned.as_ref().and_then(|r| r.idle.clone()),
                bg.leases_per_s,
            ),
        ];
        for (name, w, bg_per_s) in rows {
            let Some(w) = w else { continue };
            let mut row = idle_row(&w, bg_per_s, 1);
            let per_group = row["per_group_per_s"].as_f64().unwrap_or(0.0);
            row["per_1000_groups_per_s"] = json!((per_group * 1000.0 * 10.0).round() / 10.0);
            row["pct_of_raw_patch_capacity"] = if raw > 0.0 {
                json!((per_group * 1000.0 / raw * 100.0 * 10.0).round() / 10.0)
            } else {
                Value::Null
            };
            idle_rows.insert(name.into(), row);
        }
    }
    let idle_per_group: serde_json::Map<String, Value> = idle_rows
        .iter()
        .map(|(k, v)| (k.clone(), v["per_group_per_s"].clone()))
        .collect();

    let results = json!({
        "date": jiff::Timestamp::now().to_string(),
        "kubernetes": version,
        "machine": machine(),
        "concurrency": concurrency,
        "failover_delete_ms": delete_stats,
        "failover_unready_ms": stats(&unready_ms),
        "endpointslice_switch_ms": switch,
        "forged_label": forged,
        "lease_kill_ms": lease_kill_stats,
        "lease_release_ms": stats(&lease_release),
        "schedule_offset_ms": stats(&offsets),
        "lease_median_over_podium_p99": ratio(&lease_kill_stats["p50"], &delete_stats["p99"]),
        "app_failover_ms": app_failover_stats,
        "app_failover_member_clock_ms": stats(&app_samples(|a| &a.failover_at_ms)),
        "app_stepdown_ms": stats(&app_stepdown_ms),
        "app_handoff_started_ms": stats(&app_samples(|a| &a.handoff_started_ms)),
        "lease_tuned_kill_ms": tuned_kill_stats,
        "lease_tuned": tuned.json(),
        "lease_default": LeaseTimings::DEFAULT.json(),
        "lease_idle_leader_changes": {
            "default": lease_default.as_ref().filter(|r| r.idle.is_some()).map(|r| r.idle_leader_changes),
            "tuned": lease_tuned.as_ref().filter(|r| r.idle.is_some()).map(|r| r.idle_leader_changes),
        },
        "lease_tuned_kill_median_over_app_failover_p99": ratio(&tuned_kill_stats["p50"], &app_failover_stats["p99"]),
        "idle_writes_per_group_per_s": idle_per_group,
        "idle": {
            "window_s": idle_s,
            "background_writes_per_s": bg.as_ref().map(|b| json!({
                "pods_electiongroups_events": (b.podium_per_s * 1000.0).round() / 1000.0,
                "leases": (b.leases_per_s * 1000.0).round() / 1000.0,
                "window_s": (b.window.secs * 10.0).round() / 10.0,
            })),
            "rows": idle_rows,
        },
        "raw_patch_per_s": (raw * 10.0).round() / 10.0,
        "failure_kinds": kinds,
        "scale": scale_rows,
        "samples": {"failover_delete_ms": delete_ms, "failover_unready_ms": unready_ms, "lease_kill_ms": lease_kill, "lease_release_ms": lease_release,
                    "app_failover_ms": app_failover_ms, "app_stepdown_ms": app_stepdown_ms, "lease_tuned_kill_ms": tuned_kill},
        "duration_s": begun.elapsed().as_secs(),
    });
    println!(
        "app failover {}  app stepdown {}  lease tuned kill {}  lease default kill {}",
        results["app_failover_ms"],
        results["app_stepdown_ms"],
        results["lease_tuned_kill_ms"],
        results["lease_kill_ms"]
    );
    println!(
        "lease_tuned_kill_median_over_app_failover_p99 = {}; idle writes per group per s: {}",
        results["lease_tuned_kill_median_over_app_failover_p99"],
        results["idle_writes_per_group_per_s"]
    );
    std::fs::write(
        cfg.out.join("results.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
    std::fs::write(cfg.out.join("report.md"), report(&results)).unwrap();
    println!(
        "wrote {}/results.json and report.md in {} s",
        cfg.out.display(),
        begun.elapsed().as_secs()
    );
}
