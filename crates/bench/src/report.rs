//! report.md, written from results.json.

use serde_json::Value;

use crate::stats::{cell, stats_row};

/// report.md: every section, from the results.
pub fn report(r: &Value) -> String {
    let mut md = String::new();
    let m = &r["machine"];
    md.push_str(&format!(
        "# podium benchmark\n\nRun {} on {} cores, {} GiB ({}), Kubernetes {} (local control plane, kwok nodes). Release build.\n\n",
        cell(&r["date"]).trim_matches('"'), m["cores"], m["memory_gib"], m["cpu"].as_str().unwrap_or(""), cell(&r["kubernetes"]).trim_matches('"')
    ));
    md.push_str("## Failover and traffic switch (ms)\n\n| measurement | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n");
    for (name, key) in [
        (
            "podium: leader deleted → new leader labelled",
            "failover_delete_ms",
        ),
        (
            "podium: leader NotReady → new leader labelled",
            "failover_unready_ms",
        ),
        (
            "client-go Lease: leader kill -9 → successor leading",
            "lease_kill_ms",
        ),
        (
            "client-go Lease: leader released → successor leading",
            "lease_release_ms",
        ),
        (
            "podium: @every 10s handoff, offset from nextHandoff",
            "schedule_offset_ms",
        ),
    ] {
        md.push_str(&stats_row(name, &r[key]));
    }
    let switch = &r["endpointslice_switch_ms"];
    for (name, key) in [
        (
            "label route (Service selects the role label; kube-controller-manager writes its slice): → slices list only the new leader",
            "label",
        ),
        (
            "owned route (spec.service; podium writes its slice): → slice lists only the new leader",
            "owned",
        ),
    ] {
        md.push_str(&stats_row(name, &switch[key]));
    }
    let forged = &r["forged_label"];
    md.push_str(&stats_row(
        "a follower's role label forged to leader → put back",
        &forged["revert_ms"],
    ));
    md.push_str(&format!(
        "\nLease kill -9 median / podium delete-failover p99: **{}×**. Raw API capacity: {} pod label patches/s at concurrency {}.\n\n",
        cell(&r["lease_median_over_podium_p99"]), cell(&r["raw_patch_per_s"]), cell(&r["concurrency"])
    ));
    md.push_str(&format!(
        "\nMost addresses listed at once during the failovers: label route {}, owned route {}. Forged labels: {} trial(s); the label route listed the forged pod in {}, the owned route in {}.\n\n",
        cell(&switch["most_addresses"]["label"]), cell(&switch["most_addresses"]["owned"]),
        cell(&forged["trials"]), cell(&forged["trials_listed_by_label_route"]), cell(&forged["trials_listed_by_owned_route"])
    ));
    md.push_str(&app_report(r));
    md.push_str(&failure_kinds(&r["failure_kinds"]));
    md.push_str("## Scale (one operator, groups of 5 pods)\n\n| groups | namespaces | pods | converge ms | API bound ms | writes | min writes | idle writes 60 s | peak RSS MiB | storm n | storm p50 ms | storm p99 ms | storm bound ms | failover under load p99 ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for s in r["scale"].as_array().unwrap() {
        let row = [
            &s["groups"],
            &s["namespaces"],
            &s["pods"],
            &s["converge_ms"],
            &s["api_bound_ms"],
            &s["writes"],
            &s["min_writes"],
            &s["idle_writes_60s"],
            &s["rss_mib"],
            &s["storm_n"],
            &s["storm_p50_ms"],
            &s["storm_p99_ms"],
            &s["storm_api_bound_ms"],
            &s["failover_under_load_ms"]["p99"],
        ];
        let cells: Vec<String> = row.into_iter().map(cell).collect();
        md.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    md.push_str("\n`writes` counts PATCHes of pods and ElectionGroups from the API server's `apiserver_request_total`; `min_writes` is one pod write per pod plus, per group, the finalizer it gets on first sight and one status write. The difference is the probe group's writes (below) and writes that conflicted or were repeated. `API bound` is `min_writes` at the raw patch rate a plain client reaches at the operator's concurrency (`raw_patch_per_s`): no operator converges faster. `idle writes` counts pod and ElectionGroup writes plus the Events podium posted in the bench namespaces. In the storm, `storm n` leaders are deleted at once (1,000 from 10,000 groups up, else up to 100); each group costs up to two pod writes and a status write: a deletion with grace 0 first marks the leader terminating, and the terminating leader is relabelled follower before the successor is labelled leader (break-before-make); a reserved successor's term was recorded when it was reserved, so its label goes first and the status write after it, behind other groups' promotions; `storm bound` counts only the promotion's label, one write per group, at the raw patch rate. `failover under load`: once the cold-started operator has synced its caches (`operator_ready_ms` in results.json), and while the groups converge, the leader of an unrelated, settled group of 5 pods (in a namespace of its own) is deleted again and again, timed until another of its pods is labelled leader. The operator runs on every namespace; `NxM` runs spread the groups over N namespaces. `converge` is the later of the last group settled (its status shows a leader and 5 members) and the last pod label podium wrote (the API server's `managedFields` time, to the second, rounded up); the bench's own list that confirms every label is timed apart (`verified_ms`).\n");
    for s in r["scale"].as_array().unwrap() {
        md.push_str(&format!(
            "\n**{} groups × {} namespace(s)** (operator: {}). Raw label patches/s by concurrency: {}; the API bound at the best of them: {} ms. Other writes at the operator's concurrency, per s: {}; the bound with each kind of write at its own rate: {} ms; every write of the cold start at those rates, with the two Events a new group's election posts (not a bound: convergence does not wait for Events): {} ms. Converging: {}. Failover under load as podium timed it (ms, from its reconcile to its plan applied): {}. Requests while converging: {}. Requests during the storm: {}.\n",
            cell(&s["groups"]),
            cell(&s["namespaces"]),
            s["podium_bin"].as_str().unwrap_or("–"),
            s["raw_patch_per_s_by_concurrency"],
            cell(&s["api_bound_best_ms"]),
            s["raw_per_s_by_kind"],
            cell(&s["api_bound_by_kind_ms"]),
            cell(&s["all_writes_by_kind_ms"]),
            s["converge_parts"],
            s["failover_under_load_podium_ms"],
            s["converge_requests"],
            s["storm_requests"],
        ));
    }
    md
}

/// The application's view and the idle cost, as markdown.
fn app_report(r: &Value) -> String {
    let mut md = String::new();
    let secs = |k: &str| {
        let t = &r[k];
        format!(
            "{} s / {} s / {} s",
            cell(&t["lease_duration_s"]),
            cell(&t["renew_deadline_s"]),
            cell(&t["retry_period_s"])
        )
    };
    md.push_str("## The application's view of failover (ms)\n\nTimes are taken by the bench when it reads the member process's stdout line: podium's through `podium-member-go` (the Go client) run as each pod's process; client-go's from the candidate's own `LEADING` line.\n\n| measurement | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n");
    for (name, key) in [
        (
            "podium app failover: leader pod deleted → successor's process prints `started`"
                .to_string(),
            "app_failover_ms",
        ),
        (
            "podium app stepdown: manual handoff → old leader's process prints `stopped`"
                .to_string(),
            "app_stepdown_ms",
        ),
        (
            "podium app handoff: manual handoff → new leader's process prints `started`"
                .to_string(),
            "app_handoff_started_ms",
        ),
        (
            format!(
                "client-go Lease default ({}): kill -9 → successor leading",
                secs("lease_default")
            ),
            "lease_kill_ms",
        ),
        (
            format!(
                "client-go Lease tuned ({}): kill -9 → successor leading",
                secs("lease_tuned")
            ),
            "lease_tuned_kill_ms",
        ),
    ] {
        md.push_str(&stats_row(&name, &r[key]));
    }
    md.push_str(&format!(
        "\nTuned Lease kill -9 median / podium app failover p99: **{}×**. Leader changes while idle (nothing provoking them): default {}, tuned {}.\n\n",
        cell(&r["lease_tuned_kill_median_over_app_failover_p99"]),
        cell(&r["lease_idle_leader_changes"]["default"]),
        cell(&r["lease_idle_leader_changes"]["tuned"]),
    ));
    let rows = &r["idle"]["rows"];
    if rows.as_object().is_some_and(|m| !m.is_empty()) {
        let bg = &r["idle"]["background_writes_per_s"];
        md.push_str(&format!(
            "## Idle API writes (one group, {} s window)\n\nWrite requests (POST, PUT, PATCH, APPLY, DELETE) from the API server's `apiserver_request_total`, on pods, ElectionGroups and Events for podium and on Leases for client-go, less the background rate measured first with nothing of the bench running ({} writes/s on pods, ElectionGroups and Events; {} on Leases: kwok's node Leases, the controller manager's and scheduler's). `ns changes` counts what a watch of the bench namespace saw change on the same kinds, as a cross-check immune to other namespaces' writes. Raw API capacity: {} pod label patches/s.\n\n| system | writes in window | background | writes / group / s | ns changes / group / s | at 1,000 groups, writes/s | % of raw patch capacity |\n|---|---|---|---|---|---|---|\n",
            cell(&r["idle"]["window_s"]),
            cell(&bg["pods_electiongroups_events"]),
            cell(&bg["leases"]),
            cell(&r["raw_patch_per_s"]),
        ));
        for (name, key) in [
            ("podium (operator + 3 member processes)", "podium"),
            ("client-go Lease default (3 candidates)", "lease_default"),
            ("client-go Lease tuned (3 candidates)", "lease_tuned"),
        ] {
            let row = &rows[key];
            if row.is_null() {
                continue;
            }
            md.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {} |\n",
                cell(&row["writes"]),
                cell(&row["background_writes"]),
                cell(&row["per_group_per_s"]),
                cell(&row["ns_changes_per_group_per_s"]),
                cell(&row["per_1000_groups_per_s"]),
                cell(&row["pct_of_raw_patch_capacity"]),
            ));
        }
        md.push('\n');
    }
    md
}

/// The report's section: one table row per kind and side, and each kind's note.
fn failure_kinds(kinds: &Value) -> String {
    let Some(kinds) = kinds.as_array() else {
        return String::new();
    };
    let mut md = String::from(
        "## Failover by kind of failure (real node)\n\n| kind: measure | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n",
    );
    for k in kinds {
        let kind = k["kind"].as_str().unwrap_or_default();
        for (key, what) in [
            ("podium_label_ms", "podium, new leader labelled"),
            (
                "podium_traffic_ms",
                "podium, label route: Service answers from it",
            ),
            (
                "podium_owned_traffic_ms",
                "podium, owned route: Service answers from it",
            ),
            ("lease_ms", "client-go Lease 15/10/2 s, new holder"),
        ] {
            if k[key].is_null() {
                md.push_str(&format!("| {kind}: {what} | — | | | | |\n"));
            } else {
                md.push_str(&stats_row(&format!("{kind}: {what}"), &k[key]));
            }
        }
    }
    md.push('\n');
    for k in kinds {
        md.push_str(&format!(
            "- **{}**: {}\n",
            k["kind"].as_str().unwrap_or_default(),
            k["note"].as_str().unwrap_or_default()
        ));
        let proxy = &k["kube_proxy"];
        if !proxy["network_programming"].is_null() {
            md.push_str(&format!(
                "  kube-proxy ({} mode, minSyncPeriod {}), over these trials: network programming of every slice change, both routes' (from the controller's pod change time, or from podium's write) {}; rule syncs {}\n",
                cell(&proxy["mode"]).trim_matches('"'),
                cell(&proxy["minSyncPeriod"]).trim_matches('"'),
                proxy["network_programming"],
                proxy["sync_proxy_rules"]
            ));
        }
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LeaseTimings;
    use crate::stats::stats;
    use serde_json::json;

    fn results(kinds: Value) -> Value {
        json!({
            "date": "2026-01-02T03:04:05Z", "kubernetes": "v1.33.0",
            "machine": {"cores": 2, "memory_gib": 24.0, "cpu": "a cpu"},
            "concurrency": 16, "raw_patch_per_s": 812.5,
            "failover_delete_ms": stats(&[10.0, 20.0]), "failover_unready_ms": stats(&[]),
            "endpointslice_switch_ms": {"label": stats(&[]), "owned": stats(&[])}, "lease_kill_ms": stats(&[15000.0]),
            "lease_release_ms": stats(&[]), "schedule_offset_ms": stats(&[]),
            "lease_median_over_podium_p99": 750.0,
            "app_failover_ms": stats(&[]), "app_stepdown_ms": stats(&[]),
            "app_handoff_started_ms": stats(&[]), "lease_tuned_kill_ms": stats(&[]),
            "lease_tuned": LeaseTimings::parse("3,2,0.5").json(),
            "lease_default": LeaseTimings::DEFAULT.json(),
            "lease_idle_leader_changes": {"default": 0, "tuned": null},
            "lease_tuned_kill_median_over_app_failover_p99": null,
            "idle": {"window_s": 30, "rows": {}},
            "failure_kinds": kinds,
            "scale": [],
        })
    }

    #[test]
    fn the_sections_from_the_results() {
        let md = report(&results(Value::Null));
        assert!(md.starts_with("# podium benchmark\n\nRun 2026-01-02T03:04:05Z on 2 cores, 24.0 GiB (a cpu), Kubernetes v1.33.0"));
        assert!(md.contains(
            "| podium: leader deleted → new leader labelled | 2 | 10.0 | 20.0 | 20.0 | 20.0 |\n"
        ));
        assert!(md.contains(
            "**750.0×**. Raw API capacity: 812.5 pod label patches/s at concurrency 16."
        ));
        assert!(md.contains("client-go Lease tuned (3.0 s / 2.0 s / 0.5 s)"));
        assert!(md.contains("default 0, tuned –."));
        assert!(!md.contains("## Idle API writes"));
        assert!(!md.contains("## Failover by kind of failure"));
        assert!(md.contains("## Scale (one operator, groups of 5 pods)"));
    }

    #[test]
    fn failure_kinds_where_a_side_sees_nothing() {
        let kinds = json!([{"kind": "readiness_failure", "podium_label_ms": stats(&[1500.0]),
            "podium_traffic_ms": stats(&[1600.0]), "lease_ms": null, "note": "a note"}]);
        let md = report(&results(kinds));
        assert!(md.contains("| readiness_failure: podium, new leader labelled | 1 | 1500.0 |"));
        assert!(md.contains(
            "| readiness_failure: client-go Lease 15/10/2 s, new holder | — | | | | |\n"
        ));
        assert!(md.contains("- **readiness_failure**: a note\n"));
    }
}
