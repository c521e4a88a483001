//! `target/chaos/results.json`, `report.md` and `history.jsonl`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use super::history::{Gap, Violation};
use super::node_silence::Silence;
use super::route::SliceStates;

/// Latency summary in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl Stats {
    /// Summarises samples (nearest-rank percentiles).
    pub fn of(samples: &[u64]) -> Self {
        let mut s = samples.to_vec();
        s.sort_unstable();
        let rank = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        if s.is_empty() {
            return Self::default();
        }
        Self {
            n: s.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: s[s.len() - 1],
        }
    }
}

/// Everything a run reports.
#[derive(Debug, Serialize)]
pub struct Results {
    /// The seed; `CHAOS_SEED=<seed>` replays the fault schedule.
    pub seed: u64,
    /// Faults asked for.
    pub faults_requested: usize,
    /// Wall time of the whole run.
    pub duration_s: f64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// Faults whose injection failed part-way (an API call refused), by kind.
    pub fault_errors: BTreeMap<&'static str, usize>,
    /// Broken invariants.
    pub violations: Vec<Violation>,
    /// Per fault: injection done until every group again has exactly one leader and
    /// status agrees.
    pub settle_ms: Stats,
    /// The same, per kind of fault.
    pub settle_ms_by_kind: BTreeMap<&'static str, Stats>,
    /// Faults after which the groups did not settle within the cap (`#n kind`).
    pub unsettled: Vec<String>,
    /// Times a watch relisted instead of resuming (states may be missing in between).
    pub gaps: Vec<Gap>,
    /// Times a watch ended or failed and was resumed from its resourceVersion.
    pub watch_resumes: u64,
    /// Watch events the checker applied.
    pub events: u64,
    /// Replicas that exited without being killed by the harness.
    pub replica_crashes: usize,
    /// Why the checker stopped seeing the cluster, if it did (the run then fails).
    pub checker_failure: Option<String>,
    /// What each node silence did.
    pub node_silences: Vec<Silence>,
    /// States of the owned routes' slices that invariant 9 was checked on, in all.
    pub slice_states_checked: u64,
    /// The same, per group with a service, with how many listed an address and how often the
    /// route moved.
    pub slice_states: BTreeMap<String, SliceStates>,
}

/// Where results go.
pub fn out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/chaos")
}

/// Writes results.json, report.md and history.jsonl.
pub fn write(results: &Results, history: &[Value]) -> std::io::Result<()> {
    let dir = out_dir();
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_string_pretty(results).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("results.json"), json + "\n")?;
    std::fs::write(dir.join("report.md"), markdown(results))?;
    let mut lines = String::new();
    for r in history {
        lines.push_str(&r.to_string());
        lines.push('\n');
    }
    std::fs::write(dir.join("history.jsonl"), lines)
}

fn markdown(r: &Results) -> String {
    let mut md = String::new();
    let verdict = if r.violations.is_empty() {
        "no invariant broken"
    } else {
        "INVARIANTS BROKEN"
    };
    let total: usize = r.faults.values().sum();
    let _ = writeln!(md, "# podium chaos run: {verdict}\n");
    let _ = writeln!(
        md,
        "Seed **{}**, {total} of {} faults in {:.0} s; {} watch events checked.\n",
        r.seed, r.faults_requested, r.duration_s, r.events
    );
    let _ = writeln!(
        md,
        "Replay the fault schedule (the cluster's timing is not replayed):\n\n    CHAOS_SEED={} CHAOS_FAULTS={} make chaos\n",
        r.seed, r.faults_requested
    );
    let _ = writeln!(
        md,
        "## Faults\n\n| kind | injected | failed part-way | settle p50 / p99 / max (ms) |\n|---|---|---|---|"
    );
    for (kind, n) in &r.faults {
        let s = r.settle_ms_by_kind.get(kind).cloned().unwrap_or_default();
        let e = r.fault_errors.get(kind).copied().unwrap_or(0);
        let _ = writeln!(
            md,
            "| {kind} | {n} | {e} | {} / {} / {} |",
            s.p50, s.p99, s.max
        );
    }
    let s = &r.settle_ms;
    let _ = writeln!(
        md,
        "\nSettle time over all faults (injection done → every group has exactly one leader and status agrees): n={} p50={} ms p99={} ms max={} ms; not settled within the cap: {:?}.\n",
        s.n, s.p50, s.p99, s.max, r.unsettled
    );
    silences(&mut md, &r.node_silences);
    routes(&mut md, r);
    let _ = writeln!(md, "## Violations\n");
    if r.violations.is_empty() {
        let _ = writeln!(md, "None.\n");
    }
    for v in &r.violations {
        let _ = writeln!(
            md,
            "- invariant {} in `{}` at {} ms (during {}): {}",
            v.invariant, v.group, v.at, v.fault, v.detail
        );
    }
    let _ = writeln!(
        md,
        "\n## Watch continuity\n\n{} resumes from the last resourceVersion (no event lost); {} gaps (relists after 410 Gone). \
         The relisted state is checked like any other and the per-group records survive a gap, so lasting evidence \
         (a reused or lower term, two leaders, changed foreign metadata) is still caught; only states that came and \
         went inside a gap are unseen.\n",
        r.watch_resumes,
        r.gaps.len()
    );
    for g in &r.gaps {
        let _ = writeln!(
            md,
            "- {} {}–{} ms during {}: {}",
            g.stream, g.from, g.to, g.fault, g.reason
        );
    }
    if let Some(e) = &r.checker_failure {
        let _ = writeln!(
            md,
            "\n**The checker lost its watches: {e}.** The run is void."
        );
    }
    let _ = writeln!(
        md,
        "\nReplicas that exited on their own: {}. Logs: target/chaos/logs/; every watched change: target/chaos/history.jsonl.",
        r.replica_crashes
    );
    md
}

/// The owned-route section: what invariants 9 and 10 were judged on.
fn routes(md: &mut String, r: &Results) {
    let _ = writeln!(
        md,
        "## Owned route\n\n{} states of the leader Services' EndpointSlices checked (invariant 9 on \
         each, invariant 10 after the faults).\n\n| group | slice states | listing an address | \
         address-set changes | most addresses of one family at once |\n|---|---|---|---|---|",
        r.slice_states_checked
    );
    for (group, s) in &r.slice_states {
        let _ = writeln!(
            md,
            "| {group} | {} | {} | {} | {} |",
            s.states, s.with_address, s.changes, s.most
        );
    }
    let _ = writeln!(md);
}

/// The node-silence section: what each silence hit and how fast its leaders were replaced.
fn silences(md: &mut String, all: &[Silence]) {
    if all.is_empty() {
        return;
    }
    let hits: Vec<_> = all.iter().flat_map(|s| &s.hits).collect();
    let lost: Vec<u64> = hits
        .iter()
        .filter(|h| h.reason.as_deref() == Some("NodeLost"))
        .filter_map(|h| h.after_ms)
        .collect();
    let t = Stats::of(&lost);
    let _ = writeln!(
        md,
        "## Node silence\n\n{} silences ({} aimed: a handoff to the node's member first); {} hit a leader, {} leaders in all; \
         {} replaced with reason NodeLost, after (from the node's last renewal) p50 {} / max {} ms.\n",
        all.len(),
        all.iter().filter(|s| s.aimed).count(),
        all.iter().filter(|s| !s.hits.is_empty()).count(),
        hits.len(),
        t.n,
        t.p50,
        t.max
    );
    let _ = writeln!(
        md,
        "| fault | silent (ms) | aimed | leader on the node | replaced by | reason | after (ms) | verdict |\n|---|---|---|---|---|---|---|---|"
    );
    let dash = |v: Option<String>| v.unwrap_or_else(|| "–".into());
    for s in all {
        let silent = dash(s.silent_ms.map(|m| m.to_string()));
        if s.hits.is_empty() {
            let _ = writeln!(
                md,
                "| {} | {silent} | {} | none | | | | |",
                s.fault, s.aimed
            );
        }
        for h in &s.hits {
            let _ = writeln!(
                md,
                "| {} | {silent} | {} | {}/{} | {} | {} | {} | {} |",
                s.fault,
                s.aimed,
                h.group,
                h.leader,
                dash(h.replaced_by.clone()),
                dash(h.reason.clone()),
                dash(h.after_ms.map(|m| m.to_string())),
                h.verdict
            );
        }
    }
    let _ = writeln!(md);
}
