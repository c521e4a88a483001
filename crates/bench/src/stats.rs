//! Samples in milliseconds as results.json and report.md give them.

use serde_json::{Value, json};

/// One report table row: the name, then n, p50, p90, p99 and max.
pub fn stats_row(name: &str, s: &Value) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} |\n",
        cell(&s["n"]),
        cell(&s["p50"]),
        cell(&s["p90"]),
        cell(&s["p99"]),
        cell(&s["max"])
    )
}

/// n, p50, p90, p99 and max of samples in milliseconds (nearest rank).
pub fn stats(samples: &[f64]) -> Value {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        if s.is_empty() {
            return Value::Null;
        }
        let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
        json!((s[rank - 1] * 10.0).round() / 10.0)
    };
    json!({"n": s.len(), "p50": pct(50.0), "p90": pct(90.0), "p99": pct(99.0), "max": pct(100.0)})
}

/// A table cell: `–` for null.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_to_a_tenth() {
        let samples: Vec<f64> = (1..=100).rev().map(|i| i as f64 + 0.04).collect();
        assert_eq!(
            stats(&samples),
            json!({"n": 100, "p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0})
        );
        assert_eq!(
            stats(&[3.25, 1.0, 2.0]),
            json!({"n": 3, "p50": 2.0, "p90": 3.3, "p99": 3.3, "max": 3.3})
        );
        assert_eq!(
            stats(&[7.0]),
            json!({"n": 1, "p50": 7.0, "p90": 7.0, "p99": 7.0, "max": 7.0})
        );
    }

    #[test]
    fn no_samples() {
        assert_eq!(
            stats(&[]),
            json!({"n": 0, "p50": null, "p90": null, "p99": null, "max": null})
        );
    }

    #[test]
    fn table_cells_and_rows() {
        assert_eq!(cell(&Value::Null), "–");
        assert_eq!(cell(&json!(1.5)), "1.5");
        assert_eq!(cell(&json!("x")), "\"x\"");
        assert_eq!(
            stats_row("delete", &stats(&[1.0, 2.0])),
            "| delete | 2 | 1.0 | 2.0 | 2.0 | 2.0 |\n"
        );
        assert_eq!(
            stats_row("none", &stats(&[])),
            "| none | 0 | – | – | – | – |\n"
        );
    }
}
