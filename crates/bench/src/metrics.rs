//! Metrics as text: the API server's request counters and durations, and the operator's
//! failover histograms.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// API server counters by (verb, resource, subresource).
pub type Counts = BTreeMap<(String, String, String), f64>;

/// One histogram of the operator's `/metrics` (or one series of it, picked by a label).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histo {
    /// Cumulative counts by upper bound, `+Inf` last.
    buckets: Vec<(f64, f64)>,
    sum: f64,
}

impl Histo {
    /// The series of `name` whose labels besides `le` are `labels` (e.g. `stage="slot"`, or
    /// empty for an unlabelled histogram).
    pub fn parse(text: &str, name: &str, labels: &str) -> Self {
        let value = |l: &str| l.trim().parse::<f64>().ok();
        let mut h = Self::default();
        for line in text.lines() {
            let Some((series, v)) = line.rsplit_once(' ') else {
                continue;
            };
            if let Some(inner) = series
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix("_bucket{"))
                .and_then(|r| r.strip_suffix('}'))
            {
                let mut le = None;
                let mut rest = vec![];
                for part in inner.split(',') {
                    match part.strip_prefix("le=") {
                        Some(b) => le = Some(b.trim_matches('"')),
                        None => rest.push(part),
                    }
                }
                let bound = match le {
                    Some("+Inf") => Some(f64::INFINITY),
                    Some(b) => b.parse().ok(),
                    None => None,
                };
                if let (Some(bound), Some(v), true) = (bound, value(v), rest.join(",") == labels) {
                    h.buckets.push((bound, v));
                }
            } else if series == format!("{name}_sum") || series == format!("{name}_sum{{{labels}}}")
            {
                h.sum = value(v).unwrap_or(f64::NAN);
            }
        }
        h
    }

    /// What was observed since `before` (the same histogram read earlier).
    pub fn since(&self, before: &Histo) -> Histo {
        let buckets = self
            .buckets
            .iter()
            .map(|(le, c)| {
                let old = before
                    .buckets
                    .iter()
                    .find(|(b, _)| b == le)
                    .map_or(0.0, |b| b.1);
                (*le, c - old)
            })
            .collect();
        Histo {
            buckets,
            sum: self.sum - before.sum,
        }
    }

    /// Count, mean and the bucket bounds the median and the 99th percentile fall under (ms).
    pub fn summary(&self) -> Value {
        let n = self.buckets.last().map_or(0.0, |b| b.1);
        let bound = |q: f64| {
            self.buckets
                .iter()
                .find(|(_, c)| *c >= (q * n).ceil() && n > 0.0)
                .map(|(le, _)| le * 1000.0)
        };
        let mean = (n > 0.0).then(|| (self.sum / n * 1000.0 * 10.0).round() / 10.0);
        json!({"n": n, "mean_ms": mean, "p50_at_most": bound(0.5), "p99_at_most": bound(0.99)})
    }
}

/// The parts of podium's failovers (`podium_failover_stage_seconds`), as read now.
pub fn failover_stages(text: &str) -> Vec<(&'static str, Histo)> {
    ["queued", "slot", "moving"]
        .into_iter()
        .map(|stage| {
            let labels = format!("stage=\"{stage}\"");
            (
                stage,
                Histo::parse(text, "podium_failover_stage_seconds", &labels),
            )
        })
        .collect()
}

/// Each part's summary, of what was observed since `before` (none: since the start).
pub fn stages_since(now: &[(&str, Histo)], before: Option<&[(&str, Histo)]>) -> Value {
    let parts: serde_json::Map<String, Value> = now
        .iter()
        .map(|(stage, h)| {
            let old = before
                .and_then(|b| b.iter().find(|(s, _)| s == stage))
                .map(|(_, h)| h.clone())
                .unwrap_or_default();
            (stage.to_string(), h.since(&old).summary())
        })
        .collect();
    Value::Object(parts)
}

/// An API server metric whose lines start with `prefix`, summed by (verb, resource,
/// subresource).
pub fn api_server_sums(text: &str, prefix: &str) -> Counts {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(prefix)) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let get = |k: &str| {
            labels
                .split(&format!("{k}=\"")[..])
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        *out.entry((get("verb"), get("resource"), get("subresource")))
            .or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// Every request the API server answered between two counts, as `VERB resource[/sub]: n` (the
/// busiest first, those under 10 left out): what a window's time went to, whoever sent it.
pub fn requests_between(a: &Counts, b: &Counts) -> Value {
    let mut rows: Vec<(String, f64)> = b
        .iter()
        .map(|((verb, res, sub), v)| {
            let what = if sub.is_empty() {
                res.clone()
            } else {
                format!("{res}/{sub}")
            };
            (
                format!("{verb} {what}"),
                v - a
                    .get(&(verb.clone(), res.clone(), sub.clone()))
                    .copied()
                    .unwrap_or(0.0),
            )
        })
        .filter(|(_, n)| *n >= 10.0)
        .collect();
    rows.sort_by(|x, y| y.1.total_cmp(&x.1));
    Value::Object(rows.into_iter().map(|(k, n)| (k, json!(n))).collect())
}

/// Writes of the kinds podium makes on `resources`: PATCH and APPLY. DELETEs are left out
/// (the namespace controller issues them for unrelated namespaces), and so are pods/status
/// writes (kwok, playing kubelet, makes those; podium writes pod metadata only).
pub fn writes_between(a: &Counts, b: &Counts, resources: &[&str]) -> f64 {
    b.iter()
        .filter(|((verb, res, sub), _)| {
            matches!(verb.as_str(), "PATCH" | "APPLY")
                && !(res == "pods" && sub == "status")
                && resources.contains(&res.as_str())
        })
        .map(|(k, v)| v - a.get(k).copied().unwrap_or(0.0))
        .sum()
}

/// The verbs of write requests.
pub const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "APPLY", "DELETE"];

/// Write requests (any subresource, any response code) on `resources` between two snapshots.
pub fn write_requests(a: &Counts, b: &Counts, resources: &[&str]) -> f64 {
    b.iter()
        .filter(|((verb, res, _), _)| {
            WRITE_VERBS.contains(&verb.as_str()) && resources.contains(&res.as_str())
        })
        .map(|(k, v)| v - a.get(k).copied().unwrap_or(0.0))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR: &str = r#"# HELP podium_failover_stage_seconds Parts of a failover.
# TYPE podium_failover_stage_seconds histogram
podium_failover_stage_seconds_bucket{stage="queued",le="0.005"} 3
podium_failover_stage_seconds_bucket{stage="queued",le="0.05"} 9
podium_failover_stage_seconds_bucket{stage="queued",le="+Inf"} 10
podium_failover_stage_seconds_sum{stage="queued"} 0.25
podium_failover_stage_seconds_count{stage="queued"} 10
podium_failover_stage_seconds_bucket{stage="slot",le="0.005"} 1
podium_failover_stage_seconds_bucket{stage="slot",le="0.05"} 1
podium_failover_stage_seconds_bucket{stage="slot",le="+Inf"} 1
podium_failover_stage_seconds_sum{stage="slot"} 0.001
podium_failover_duration_seconds_bucket{le="0.01"} 4
podium_failover_duration_seconds_bucket{le="0.1"} 8
podium_failover_duration_seconds_bucket{le="+Inf"} 8
podium_failover_duration_seconds_sum 0.2
"#;

    #[test]
    fn a_histogram_series_by_its_labels() {
        let h = Histo::parse(
            OPERATOR,
            "podium_failover_stage_seconds",
            "stage=\"queued\"",
        );
        assert_eq!(
            h.buckets,
            [(0.005, 3.0), (0.05, 9.0), (f64::INFINITY, 10.0)]
        );
        assert_eq!(h.sum, 0.25);
        assert_eq!(
            h.summary(),
            json!({"n": 10.0, "mean_ms": 25.0, "p50_at_most": 50.0, "p99_at_most": null})
        );
        let plain = Histo::parse(OPERATOR, "podium_failover_duration_seconds", "");
        assert_eq!(
            plain.summary(),
            json!({"n": 8.0, "mean_ms": 25.0, "p50_at_most": 10.0, "p99_at_most": 100.0})
        );
        assert_eq!(
            Histo::default().summary(),
            json!({"n": 0.0, "mean_ms": null, "p50_at_most": null, "p99_at_most": null})
        );
    }

    #[test]
    fn failover_stages_since_an_earlier_read() {
        let before = failover_stages(OPERATOR);
        let later = OPERATOR
            .replace("le=\"+Inf\"} 10", "le=\"+Inf\"} 12")
            .replace("sum{stage=\"queued\"} 0.25", "sum{stage=\"queued\"} 0.45");
        let parts = stages_since(&failover_stages(&later), Some(&before));
        assert_eq!(parts["queued"]["n"], json!(2.0));
        assert_eq!(parts["queued"]["mean_ms"], json!(100.0));
        assert_eq!(parts["slot"]["n"], json!(0.0));
        assert_eq!(parts["moving"]["n"], json!(0.0));
        assert_eq!(stages_since(&before, None)["slot"]["n"], json!(1.0));
    }

    const API_SERVER: &str = r#"apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="PATCH",version="v1"} 40
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="PATCH",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1"} 30
apiserver_request_total{code="200",component="apiserver",dry_run="",group="podium.dev",resource="electiongroups",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 12
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 5
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="namespaces",scope="resource",subresource="",verb="DELETE",version="v1"} 3
apiserver_request_duration_seconds_sum{component="apiserver",resource="pods",subresource="",verb="PATCH"} 1.5
"#;

    fn key(verb: &str, res: &str, sub: &str) -> (String, String, String) {
        (verb.into(), res.into(), sub.into())
    }

    #[test]
    fn request_counters_summed_by_verb_and_resource() {
        let c = api_server_sums(API_SERVER, "apiserver_request_total{");
        assert_eq!(c[&key("PATCH", "pods", "")], 42.0);
        assert_eq!(c[&key("PATCH", "pods", "status")], 30.0);
        assert_eq!(c[&key("APPLY", "electiongroups", "status")], 12.0);
        assert_eq!(c.len(), 5);
        let d = api_server_sums(API_SERVER, "apiserver_request_duration_seconds_sum{");
        assert_eq!(d[&key("PATCH", "pods", "")], 1.5);
    }

    #[test]
    fn writes_and_requests_between_two_counts() {
        let zero = Counts::new();
        let c = api_server_sums(API_SERVER, "apiserver_request_total{");
        // Pod status writes are the kubelet's; DELETEs are the namespace controller's.
        assert_eq!(writes_between(&zero, &c, &["pods", "electiongroups"]), 54.0);
        assert_eq!(write_requests(&zero, &c, &["pods"]), 72.0);
        assert_eq!(write_requests(&zero, &c, &["namespaces"]), 3.0);
        let mut later = c.clone();
        *later.get_mut(&key("PATCH", "pods", "")).unwrap() += 25.0;
        *later.get_mut(&key("LIST", "pods", "")).unwrap() += 4.0;
        assert_eq!(writes_between(&c, &later, &["pods"]), 25.0);
        assert_eq!(requests_between(&c, &later), json!({"PATCH pods": 25.0}));
        assert_eq!(
            requests_between(&zero, &c),
            json!({"PATCH pods": 42.0, "PATCH pods/status": 30.0, "APPLY electiongroups/status": 12.0})
        );
    }
}
