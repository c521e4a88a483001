//! The bench's configuration: every `BENCH_*` variable (and `PODIUM_BIN`), read once, in
//! [`Config::from_env`]. An unset or unparsable count takes its default; a malformed
//! `BENCH_SCALES`, `BENCH_GROUPS` or `BENCH_LEASE_TUNED` stops the bench.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// What one `make bench` (or `make bench-scale`) run does, and where its results go.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `BENCH_TRIALS` (50): failover trials of each kind, the leader deleted and the leader
    /// made NotReady; with each, the traffic switch. 0 skips them.
    pub trials: usize,
    /// `BENCH_APP_TRIALS` (30): the application's view, leader deletions and as many manual
    /// handoffs, timed by the member processes' output.
    pub app_trials: usize,
    /// `BENCH_IDLE_SECONDS` (30): each idle window (the background first, then podium and
    /// both Lease settings); 0 measures no idle cost.
    pub idle_s: u64,
    /// `BENCH_CONCURRENCY` (16): the operator's `--concurrency` in the scale runs, and the
    /// requests in flight of the raw API capacity measures.
    pub concurrency: usize,
    /// `BENCH_HANDOFFS` (10): handoffs of an `@every 10s` schedule, timed against
    /// `status.nextHandoff`.
    pub handoffs: usize,
    /// `BENCH_LEASE_KILLS` (5): client-go Lease baseline at the default timings, leader
    /// killed with SIGKILL.
    pub lease_kills: usize,
    /// `BENCH_LEASE_RELEASES` (10): the same, the leader stopped with SIGTERM (it releases
    /// the Lease).
    pub lease_releases: usize,
    /// `BENCH_LEASE_TUNED_KILLS` (20): SIGKILL trials at the tuned timings.
    pub lease_tuned_kills: usize,
    /// `BENCH_LEASE_TUNED` (`3,2,0.5`): the tuned Lease timings, in seconds: lease
    /// duration, renew deadline, retry period.
    pub lease_tuned: LeaseTimings,
    /// `BENCH_KIND_TRIALS` (10): failure kinds on the real node, trials per fast kind.
    pub kind_trials: usize,
    /// `BENCH_KIND_QUIET_MS` (3000): how long each real-node trial waits, after the previous
    /// one has settled, before it fails the leader. kube-proxy syncs at most once per
    /// `minSyncPeriod` (1 s) after a burst of two; the settling spends that burst, which the
    /// quiet before most real failures has restored. 0 starts trials back to back.
    pub kind_quiet_ms: u64,
    /// `BENCH_KIND_LABEL_ROUTE` (1): the real-node trials keep the sample's label-route Service
    /// beside the owned route; 0 deletes it, so that kube-proxy sees only podium's slice change
    /// (a change to any slice makes kube-proxy sync every Service, and then wait
    /// `minSyncPeriod` before the next).
    pub kind_label_route: bool,
    /// `BENCH_NODE_LOSS_TRIALS` (5): failure kinds, node losses (the kubelet frozen).
    pub node_loss_trials: usize,
    /// `BENCH_KIND_LEASE_TRIALS` (5): failure kinds, trials per kind for the Lease.
    pub kind_lease_trials: usize,
    /// `BENCH_CREATE_CONCURRENCY` (64): requests in flight when the scale runs create their
    /// namespaces, pods and groups (faster than the operator writes).
    pub create_concurrency: usize,
    /// `BENCH_SCALES` (`100,1000`; `none` or empty for no scale run), then `BENCH_GROUPS`
    /// when set: the scale runs, in order. `N` is N groups in one namespace, `NxM` N
    /// namespaces of M groups.
    pub scales: Vec<Shape>,
    /// `BENCH_LIST_ROUNDS` (3): after each scale run, rounds of cold starts of the operator,
    /// one with paged lists and one with streaming lists each, timed until its caches are
    /// filled; 0 skips them.
    pub list_rounds: usize,
    /// `BENCH_FORGED_TRIALS` (20): a follower's role label forged to `leader`, timed until
    /// podium puts it back, beside the failover trials; 0 skips them.
    pub forged_trials: usize,
    /// `BENCH_RAW_SWEEP` (`1,4,16,64`; `none` skips it): the concurrencies at which each
    /// scale run measures the raw label patch rate.
    pub raw_sweep: Vec<usize>,
    /// `BENCH_OUT` (`target/bench`), relative to the repository: where results.json,
    /// report.md and the member processes' logs go.
    pub out: PathBuf,
    /// `PODIUM_BIN`: the operator build that runs (the test kit starts it), as the report
    /// names it: relative to the repository when inside it. Unset: the bench's own build.
    pub operator: String,
}

impl Config {
    /// The configuration from the environment; `root` is the repository.
    pub fn from_env(root: &Path) -> Self {
        Self::from_vars(root, |name| std::env::var(name).ok())
    }

    /// The configuration from `var`, which gives a variable's value if it is set.
    pub fn from_vars(root: &Path, var: impl Fn(&str) -> Option<String>) -> Self {
        let count =
            |name: &str, default: usize| var(name).and_then(|v| v.parse().ok()).unwrap_or(default);
        let mut scales: Vec<Shape> = var("BENCH_SCALES")
            .unwrap_or_else(|| "100,1000".into())
            .split(',')
            .filter(|e| !e.trim().is_empty() && e.trim() != "none")
            .map(Shape::parse)
            .collect();
        if let Some(g) = var("BENCH_GROUPS").filter(|g| !g.trim().is_empty()) {
            scales.push(Shape::parse(&g));
        }
        let raw_sweep = var("BENCH_RAW_SWEEP")
            .unwrap_or_else(|| "1,4,16,64".into())
            .split(',')
            .filter_map(|c| c.trim().parse().ok())
            .collect();
        let lease_tuned =
            LeaseTimings::parse(&var("BENCH_LEASE_TUNED").unwrap_or_else(|| "3,2,0.5".into()));
        let operator = match var("PODIUM_BIN") {
            Some(bin) => {
                let prefix = format!("{}/", root.display());
                bin.strip_prefix(&prefix).unwrap_or(&bin).to_string()
            }
            None => "the bench's own build (host target)".into(),
        };
        Self {
            trials: count("BENCH_TRIALS", 50),
            app_trials: count("BENCH_APP_TRIALS", 30),
            idle_s: count("BENCH_IDLE_SECONDS", 30) as u64,
            concurrency: count("BENCH_CONCURRENCY", 16),
            handoffs: count("BENCH_HANDOFFS", 10),
            lease_kills: count("BENCH_LEASE_KILLS", 5),
            lease_releases: count("BENCH_LEASE_RELEASES", 10),
            lease_tuned_kills: count("BENCH_LEASE_TUNED_KILLS", 20),
            lease_tuned,
            kind_trials: count("BENCH_KIND_TRIALS", 10),
            kind_quiet_ms: count("BENCH_KIND_QUIET_MS", 3000) as u64,
            kind_label_route: count("BENCH_KIND_LABEL_ROUTE", 1) != 0,
            node_loss_trials: count("BENCH_NODE_LOSS_TRIALS", 5),
            kind_lease_trials: count("BENCH_KIND_LEASE_TRIALS", 5),
            create_concurrency: count("BENCH_CREATE_CONCURRENCY", 64),
            scales,
            list_rounds: count("BENCH_LIST_ROUNDS", 3),
            forged_trials: count("BENCH_FORGED_TRIALS", 20),
            raw_sweep,
            out: root.join(var("BENCH_OUT").unwrap_or_else(|| "target/bench".into())),
            operator,
        }
    }
}

/// A scale run's shape: `namespaces` namespaces of `groups_per_ns` groups of 5 pods. In
/// `BENCH_SCALES`, `N` is N groups in one namespace and `NxM` is N namespaces of M groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// How many namespaces.
    pub namespaces: usize,
    /// How many groups in each.
    pub groups_per_ns: usize,
}

impl Shape {
    /// One entry of `BENCH_SCALES`; panics on anything else.
    pub fn parse(entry: &str) -> Self {
        let parsed = match entry.split_once('x') {
            Some((n, m)) => n.trim().parse().ok().zip(m.trim().parse().ok()),
            None => entry.trim().parse().ok().map(|m| (1, m)),
        };
        match parsed {
            Some((namespaces, groups_per_ns)) if namespaces > 0 && groups_per_ns > 0 => Self {
                namespaces,
                groups_per_ns,
            },
            _ => panic!(
                "BENCH_SCALES entry {entry:?} is neither N (groups in one namespace) nor NxM (N namespaces of M groups)"
            ),
        }
    }

    /// Groups in all.
    pub fn groups(&self) -> usize {
        self.namespaces * self.groups_per_ns
    }

    /// `1000` or `1000x10`, as in BENCH_SCALES.
    pub fn name(&self) -> String {
        if self.namespaces == 1 {
            self.groups_per_ns.to_string()
        } else {
            format!("{}x{}", self.namespaces, self.groups_per_ns)
        }
    }
}

/// client-go Lease timings, in seconds: lease duration, renew deadline, retry period.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeaseTimings {
    /// Lease duration.
    pub lease: f64,
    /// Renew deadline.
    pub renew: f64,
    /// Retry period.
    pub retry: f64,
}

impl LeaseTimings {
    /// kube-controller-manager's defaults.
    pub const DEFAULT: Self = Self {
        lease: 15.0,
        renew: 10.0,
        retry: 2.0,
    };

    /// `lease,renew,retry` in seconds, as in `BENCH_LEASE_TUNED`; panics on anything else.
    pub fn parse(v: &str) -> Self {
        let v: Vec<f64> = v.split(',').filter_map(|x| x.trim().parse().ok()).collect();
        match v[..] {
            [lease, renew, retry] => Self {
                lease,
                renew,
                retry,
            },
            _ => panic!("BENCH_LEASE_TUNED wants three numbers of seconds: lease,renew,retry"),
        }
    }

    /// The lease-baseline candidate's flags.
    pub fn args(&self) -> Vec<String> {
        let d = |s: f64| format!("{}ms", (s * 1000.0).round() as u64);
        vec![
            format!("--lease-duration={}", d(self.lease)),
            format!("--renew-deadline={}", d(self.renew)),
            format!("--retry-period={}", d(self.retry)),
        ]
    }

    /// `15 s / 10 s / 2 s`.
    pub fn label(&self) -> String {
        format!("{} s / {} s / {} s", self.lease, self.renew, self.retry)
    }

    /// As results.json records them.
    pub fn json(&self) -> Value {
        json!({"lease_duration_s": self.lease, "renew_deadline_s": self.renew, "retry_period_s": self.retry})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Config {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(Path::new("/repo"), |name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let c = config(&[]);
        assert_eq!(
            (c.trials, c.app_trials, c.idle_s, c.concurrency, c.handoffs),
            (50, 30, 30, 16, 10)
        );
        assert_eq!(
            (c.lease_kills, c.lease_releases, c.lease_tuned_kills),
            (5, 10, 20)
        );
        assert_eq!(
            (c.kind_trials, c.node_loss_trials, c.kind_lease_trials),
            (10, 5, 5)
        );
        assert_eq!(c.create_concurrency, 64);
        assert_eq!(c.scales, [Shape::parse("100"), Shape::parse("1000")]);
        assert_eq!(c.raw_sweep, [1, 4, 16, 64]);
        assert_eq!(
            c.lease_tuned,
            LeaseTimings {
                lease: 3.0,
                renew: 2.0,
                retry: 0.5
            }
        );
        assert_eq!(c.out, Path::new("/repo/target/bench"));
        assert_eq!(c.operator, "the bench's own build (host target)");
    }

    #[test]
    fn counts_are_read_and_junk_falls_back_to_the_default() {
        let c = config(&[
            ("BENCH_TRIALS", "0"),
            ("BENCH_APP_TRIALS", "3"),
            ("BENCH_IDLE_SECONDS", "ten"),
            ("BENCH_CONCURRENCY", "-1"),
            ("BENCH_KIND_LEASE_TRIALS", "7"),
            ("BENCH_CREATE_CONCURRENCY", "128"),
            ("BENCH_LIST_ROUNDS", "0"),
        ]);
        assert_eq!(c.list_rounds, 0);
        assert_eq!(c.forged_trials, 20);
        assert_eq!(c.trials, 0);
        assert_eq!(c.app_trials, 3);
        assert_eq!(c.idle_s, 30);
        assert_eq!(c.concurrency, 16);
        assert_eq!(c.kind_lease_trials, 7);
        assert_eq!(c.create_concurrency, 128);
    }

    /// As `make bench-scale` sets them.
    #[test]
    fn scale_only_run() {
        let c = config(&[
            ("BENCH_SCALES", "10000,1000x10"),
            ("BENCH_OUT", "target/bench-scale"),
            (
                "PODIUM_BIN",
                "/repo/target/x86_64-unknown-linux-musl/release/podium",
            ),
            ("BENCH_TRIALS", "0"),
            ("BENCH_IDLE_SECONDS", "0"),
        ]);
        assert_eq!(
            c.scales,
            [
                Shape {
                    namespaces: 1,
                    groups_per_ns: 10000
                },
                Shape {
                    namespaces: 1000,
                    groups_per_ns: 10
                }
            ]
        );
        assert_eq!(c.scales[1].groups(), 10_000);
        assert_eq!(c.scales[1].name(), "1000x10");
        assert_eq!(c.scales[0].name(), "10000");
        assert_eq!(c.out, Path::new("/repo/target/bench-scale"));
        assert_eq!(
            c.operator,
            "target/x86_64-unknown-linux-musl/release/podium"
        );
        assert_eq!(c.trials, 0);
        assert_eq!(c.idle_s, 0);
    }

    #[test]
    fn no_scale_run_and_an_extra_one() {
        assert!(config(&[("BENCH_SCALES", "none")]).scales.is_empty());
        assert!(config(&[("BENCH_SCALES", "")]).scales.is_empty());
        let c = config(&[("BENCH_SCALES", " none, "), ("BENCH_GROUPS", "2x3")]);
        assert_eq!(
            c.scales,
            [Shape {
                namespaces: 2,
                groups_per_ns: 3
            }]
        );
        assert_eq!(config(&[("BENCH_GROUPS", " ")]).scales.len(), 2);
    }

    #[test]
    fn raw_sweep_and_operator_elsewhere() {
        assert!(config(&[("BENCH_RAW_SWEEP", "none")]).raw_sweep.is_empty());
        assert_eq!(config(&[("BENCH_RAW_SWEEP", "2, 8")]).raw_sweep, [2, 8]);
        assert_eq!(
            config(&[("PODIUM_BIN", "/opt/podium")]).operator,
            "/opt/podium"
        );
    }

    #[test]
    #[should_panic(expected = "neither N")]
    fn a_malformed_scale_stops_the_bench() {
        config(&[("BENCH_SCALES", "100,0x5")]);
    }

    #[test]
    #[should_panic(expected = "three numbers")]
    fn malformed_lease_timings_stop_the_bench() {
        config(&[("BENCH_LEASE_TUNED", "3,2")]);
    }

    #[test]
    fn lease_timings() {
        let t = LeaseTimings::parse("4, 2.5,0.25");
        assert_eq!(
            t.args(),
            [
                "--lease-duration=4000ms",
                "--renew-deadline=2500ms",
                "--retry-period=250ms"
            ]
        );
        assert_eq!(t.label(), "4 s / 2.5 s / 0.25 s");
        assert_eq!(LeaseTimings::DEFAULT.label(), "15 s / 10 s / 2 s");
        assert_eq!(
            LeaseTimings::DEFAULT.json(),
            json!({"lease_duration_s": 15.0, "renew_deadline_s": 10.0, "retry_period_s": 2.0})
        );
    }
}
