//! Output as kubectl prints it: tables aligned in columns, and short human durations.

use jiff::Timestamp;

/// A table of text cells, printed with columns padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row; missing cells are left empty.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text: three spaces between columns, no trailing blanks, one line per row.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                line.push_str(cell);
                if i + 1 < columns {
                    let pad = width - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The time from `then` to `now` as kubectl prints ages: `42s`, `5m12s`, `3h`, `4d`
/// (`0s` when `then` is later than `now`).
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    let secs = now.duration_since(then).as_secs().max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    match secs {
        s if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", secs % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if d < 2 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

/// An instant with its distance from now: `2026-11-24T02:00:00Z (in 3h)` or `(5m ago)`.
pub fn instant(at: Timestamp, now: Timestamp) -> String {
    let at_s = at.round(jiff::Unit::Second).unwrap_or(at);
    if at > now {
        format!("{at_s} (in {})", ago(now, at))
    } else {
        format!("{at_s} ({} ago)", ago(at, now))
    }
}

/// `<none>`, as kubectl prints an absent value.
pub fn or_none(v: Option<String>) -> String {
    v.unwrap_or_else(|| "<none>".to_string())
}
