//! Handoff timing: cron schedules, `@every` intervals, time zones and maximum terms.

use croner::{
    Cron,
    parser::{CronParser, Seconds},
};
use jiff::{SignedDuration, Timestamp, Zoned, tz::TimeZone};

/// Why a handoff setting could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("handoff.schedule {expr:?} is not a valid cron expression: {reason}")]
    Cron { expr: String, reason: String },
    /// The duration does not parse or is out of range.
    #[error("{field} {value:?} is not a valid duration: {reason}")]
    Duration {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// The time zone is not a known IANA name.
    #[error("handoff.timeZone {0:?} is not a known IANA time zone")]
    TimeZone(String),
}

/// A recurring handoff instant.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression read in a time zone.
    Cron(Box<Cron>),
    /// A fixed interval counted from the start of the leadership.
    Every(SignedDuration),
}

/// Everything that decides when a healthy leader hands over.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The recurring schedule, if any.
    pub schedule: Option<Schedule>,
    /// The zone the cron schedule is read in.
    pub time_zone: TimeZone,
    /// The longest a leader may hold, if capped.
    pub max_term: Option<SignedDuration>,
}

/// Which rule produced a handoff instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The cron schedule or `@every` interval.
    Scheduled,
    /// The maximum term.
    MaxTerm,
}

impl Timing {
    /// Parses the three handoff settings; `None` everywhere means no planned handoffs.
    pub fn parse(
        schedule: Option<&str>,
        time_zone: Option<&str>,
        max_term: Option<&str>,
    ) -> Result<Self, ScheduleError> {
        let time_zone = match time_zone {
            None => TimeZone::UTC,
            Some(name) => parse_time_zone(name)?,
        };
        Ok(Self {
            schedule: schedule.map(parse_schedule).transpose()?,
            time_zone,
            max_term: max_term
                .map(|v| parse_duration("handoff.maxTerm", v))
                .transpose()?,
        })
    }

    /// The first handoff instant strictly after `base`, and which rule set it.
    pub fn next_after(&self, base: Timestamp) -> Option<(Timestamp, Due)> {
        let scheduled = self.schedule.as_ref().and_then(|s| match s {
            Schedule::Every(d) => base.checked_add(*d).ok(),
            Schedule::Cron(cron) => next_cron(cron, &base.to_zoned(self.time_zone.clone())),
        });
        let capped = self.max_term.and_then(|d| base.checked_add(d).ok());
        match (scheduled, capped) {
            (Some(s), Some(m)) if m < s => Some((m, Due::MaxTerm)),
            (Some(s), _) => Some((s, Due::Scheduled)),
            (None, Some(m)) => Some((m, Due::MaxTerm)),
            (None, None) => None,
        }
    }
}

/// The next cron instant after `after`; a wall-clock time that repeats when clocks go back fires once.
fn next_cron(cron: &Cron, after: &Zoned) -> Option<Timestamp> {
    let mut from = after.clone();
    // A handful of steps is enough: each repeat skips at most one duplicated wall-clock hour.
    for _ in 0..4 {
        let next = cron.find_next_occurrence(&from, false).ok()?;
        if next.datetime() > after.datetime() {
            return Some(next.timestamp());
        }
        from = next;
    }
    None
}

/// Parses a cron expression or `@every <duration>`.
pub fn parse_schedule(expr: &str) -> Result<Schedule, ScheduleError> {
    let trimmed = expr.trim();
    if let Some(rest) = trimmed.strip_prefix("@every")
        && rest.starts_with(char::is_whitespace)
    {
        return parse_duration("handoff.schedule @every", rest.trim()).map(Schedule::Every);
    }
    // croner knows every common macro but `@midnight`, which is `@daily` by another name.
    let pattern = if trimmed.eq_ignore_ascii_case("@midnight") {
        "@daily"
    } else {
        trimmed
    };
    let parser = CronParser::builder().seconds(Seconds::Optional).build();
    parser
        .parse(pattern)
        .map(|c| Schedule::Cron(Box::new(c)))
        .map_err(|e| ScheduleError::Cron {
            expr: expr.to_string(),
            reason: e.to_string(),
        })
}

/// Parses an IANA time zone name from the bundled database.
pub fn parse_time_zone(name: &str) -> Result<TimeZone, ScheduleError> {
    TimeZone::get(name).map_err(|_| ScheduleError::TimeZone(name.to_string()))
}

/// Parses a positive duration of at least one second, such as `90s`, `1h30m` or `24h`.
pub fn parse_duration(field: &'static str, value: &str) -> Result<SignedDuration, ScheduleError> {
    let err = |reason: &str| ScheduleError::Duration {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let d: SignedDuration = value
        .trim()
        .parse()
        .map_err(|e: jiff::Error| err(&e.to_string()))?;
    if d < SignedDuration::from_secs(1) {
        return Err(err("must be at least 1s"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(schedule: &str, tz: Option<&str>, base: &str) -> Timestamp {
        Timing::parse(Some(schedule), tz, None)
            .unwrap()
            .next_after(ts(base))
            .unwrap()
            .0
    }

    #[test]
    fn cron_forms() {
        let cases = [
            (
                "0 3 * * *",
                None,
                "2026-11-22T10:00:00Z",
                "2026-11-23T03:00:00Z",
            ),
            (
                "*/15 * * * *",
                None,
                "2026-11-22T10:07:00Z",
                "2026-11-22T10:15:00Z",
            ),
            (
                "30 */5 * * * *",
                None,
                "2026-11-22T10:00:00Z",
                "2026-11-22T10:00:30Z",
            ),
            (
                "@hourly",
                None,
                "2026-11-22T10:07:00Z",
                "2026-11-22T11:00:00Z",
            ),
            (
                "@daily",
                None,
                "2026-11-22T10:07:00Z",
                "2026-11-23T00:00:00Z",
            ),
            (
                "@midnight",
                None,
                "2026-11-22T10:07:00Z",
                "2026-11-23T00:00:00Z",
            ),
            (
                "@weekly",
                None,
                "2026-11-22T10:07:00Z",
                "2026-11-29T00:00:00Z",
            ),
            (
                "@monthly",
                None,
                "2026-11-22T10:07:00Z",
                "2026-12-01T00:00:00Z",
            ),
            (
                "@yearly",
                None,
                "2026-11-22T10:07:00Z",
                "2027-01-01T00:00:00Z",
            ),
            (
                "@annually",
                None,
                "2026-11-22T10:07:00Z",
                "2027-01-01T00:00:00Z",
            ),
            (
                "0 3 * * *",
                Some("Europe/Berlin"),
                "2026-11-22T10:00:00Z",
                "2026-11-23T02:00:00Z",
            ),
            (
                "0 9 * * 1",
                Some("America/New_York"),
                "2026-11-22T10:00:00Z",
                "2026-11-23T14:00:00Z",
            ),
        ];
        for (expr, tz, base, want) in cases {
            assert_eq!(
                next(expr, tz, base),
                ts(want),
                "{expr} in {tz:?} after {base}"
            );
        }
    }

    #[test]
    fn every_counts_from_base() {
        assert_eq!(
            next("@every 90s", None, "2026-11-22T10:00:00Z"),
            ts("2026-11-22T10:01:30Z")
        );
        assert_eq!(
            next("@every 1h30m", None, "2026-11-22T10:00:00Z"),
            ts("2026-11-22T11:30:00Z")
        );
        assert_eq!(
            next("@every 10s", Some("Asia/Tokyo"), "2026-11-22T10:00:05Z"),
            ts("2026-11-22T10:00:15Z")
        );
    }

    #[test]
    fn daylight_saving_gap_fires_once_at_next_valid_instant() {
        // 2026-03-29 02:30 does not exist in Berlin: clocks jump from 02:00 to 03:00 CEST.
        let got = next("30 2 * * *", Some("Europe/Berlin"), "2026-03-28T12:00:00Z");
        let following = next("30 2 * * *", Some("Europe/Berlin"), &got.to_string());
        assert!(got > ts("2026-03-28T12:00:00Z"));
        assert!(got <= ts("2026-03-29T01:30:00Z"), "fired late: {got}");
        assert_eq!(following, ts("2026-03-30T00:30:00Z"));
    }

    #[test]
    fn daylight_saving_repeat_fires_once() {
        // 2026-10-25 02:30 happens twice in Berlin (CEST, then CET).
        let first = next("30 2 * * *", Some("Europe/Berlin"), "2026-10-24T12:00:00Z");
        assert_eq!(first, ts("2026-10-25T00:30:00Z"));
        let second = next("30 2 * * *", Some("Europe/Berlin"), &first.to_string());
        assert_eq!(second, ts("2026-10-26T01:30:00Z"));
    }

    #[test]
    fn max_term_wins_when_earlier() {
        let t = Timing::parse(Some("0 3 * * *"), None, Some("15s")).unwrap();
        assert_eq!(
            t.next_after(ts("2026-11-22T10:00:00Z")),
            Some((ts("2026-11-22T10:00:15Z"), Due::MaxTerm))
        );
        let t = Timing::parse(Some("@every 10s"), None, Some("24h")).unwrap();
        assert_eq!(
            t.next_after(ts("2026-11-22T10:00:00Z")),
            Some((ts("2026-11-22T10:00:10Z"), Due::Scheduled))
        );
        let t = Timing::parse(None, None, Some("1h")).unwrap();
        assert_eq!(
            t.next_after(ts("2026-11-22T10:00:00Z")),
            Some((ts("2026-11-22T11:00:00Z"), Due::MaxTerm))
        );
        assert!(
            Timing::parse(None, None, None)
                .unwrap()
                .next_after(ts("2026-11-22T10:00:00Z"))
                .is_none()
        );
    }

    #[test]
    fn rejects_bad_input() {
        let bad_schedules = [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * * *",
            "@every",
            "@every 0s",
            "@every 500ms",
            "@every -5s",
            "@every soon",
            "@fortnightly",
            "0 25 * * *",
        ];
        for s in bad_schedules {
            assert!(parse_schedule(s).is_err(), "{s:?} should be rejected");
        }
        assert!(parse_time_zone("Mars/Olympus").is_err());
        assert!(parse_time_zone("Europe/Berlin").is_ok());
        for d in ["", "0s", "10", "abc", "-1h", "999ms"] {
            assert!(
                parse_duration("handoff.maxTerm", d).is_err(),
                "{d:?} should be rejected"
            );
        }
        for d in ["1s", "90s", "1h30m", "24h", "2m"] {
            assert!(
                parse_duration("handoff.maxTerm", d).is_ok(),
                "{d:?} should parse"
            );
        }
    }
}
