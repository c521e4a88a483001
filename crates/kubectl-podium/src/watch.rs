//! `watch`: one line per transition of a group (leader, term, reason, Ready), from a watch of
//! the group that reports its errors and retries until Ctrl-C.

use std::io::Write;

use futures::StreamExt;
use jiff::Timestamp;
use kube::runtime::{WatchStreamExt, watcher};
use podium_api::ElectionGroup;

use crate::cluster::{Error, Target};

/// What a line is printed for: a change in any of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `status.leader`.
    pub leader: Option<String>,
    /// `status.term`.
    pub term: i64,
    /// `spec.paused`.
    pub paused: bool,
    /// The Ready condition, `status/reason`.
    pub ready: Option<String>,
}

impl Seen {
    /// What a group shows now.
    pub fn of(g: &ElectionGroup) -> Self {
        let status = g.status.clone().unwrap_or_default();
        Self {
            leader: status.leader,
            term: status.term,
            paused: g.spec.paused,
            ready: status
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| format!("{}/{}", c.status, c.reason)),
        }
    }
}

/// The header of the lines `line` prints.
pub fn header() -> String {
    row([
        "TIME", "LEADER", "TERM", "REASON", "FROM", "READY", "PAUSED",
    ])
}

fn row(cells: [&str; 7]) -> String {
    format!(
        "{:<21}{:<28}{:<7}{:<14}{:<28}{:<22}{}",
        cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
    )
    .trim_end()
    .to_string()
}

/// The line for a group as it is now; the reason and previous leader come from
/// `status.lastTransition` when it names the current leader and term moved.
pub fn line(g: &ElectionGroup, before: Option<&Seen>, at: Timestamp) -> String {
    let now = Seen::of(g);
    let moved = before.is_none_or(|b| b.leader != now.leader || b.term != now.term);
    let last = g
        .status
        .as_ref()
        .and_then(|s| s.last_transition.as_ref())
        .filter(|t| moved && t.to == now.leader);
    let time = at.round(jiff::Unit::Second).unwrap_or(at).to_string();
    let term = now.term.to_string();
    row([
        &time,
        now.leader.as_deref().unwrap_or("<none>"),
        &term,
        last.map(|t| t.reason.as_str()).unwrap_or("-"),
        last.and_then(|t| t.from.as_deref()).unwrap_or("-"),
        now.ready.as_deref().unwrap_or("<none>"),
        if now.paused { "yes" } else { "no" },
    ])
}

/// Prints the group's current state, then a line per change, until Ctrl-C.
pub async fn watch(t: &Target, name: &str, out: &mut impl Write) -> Result<(), Error> {
    let g = t.group(name).await?;
    let print = |out: &mut dyn Write, text: &str| {
        writeln!(out, "{text}").map_err(|e| Error::Output(e.to_string()))
    };
    print(out, &header())?;
    print(out, &line(&g, None, Timestamp::now()))?;
    let mut seen = Some(Seen::of(&g));
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let stream = watcher(t.groups(), config.clone()).default_backoff();
        tokio::pin!(stream);
        loop {
            let event = tokio::select! {
                _ = &mut ctrl_c => return Ok(()),
                e = stream.next() => e,
            };
            match event {
                Some(Ok(watcher::Event::Apply(g) | watcher::Event::InitApply(g))) => {
                    let now = Seen::of(&g);
                    if seen.as_ref() != Some(&now) {
                        print(out, &line(&g, seen.as_ref(), Timestamp::now()))?;
                        seen = Some(now);
                    }
                }
                Some(Ok(watcher::Event::Delete(_))) => {
                    let at = Timestamp::now()
                        .round(jiff::Unit::Second)
                        .unwrap_or_default();
                    print(out, &format!("{at:<21}electiongroup/{name} deleted"))?;
                    seen = None;
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                Some(Err(e)) => {
                    // Reported, never the end: the stream retries with a backoff.
                    eprintln!("watch of electiongroup/{name}: {e}; retrying");
                }
                None => {
                    eprintln!("watch of electiongroup/{name} ended; starting it again");
                    break;
                }
            }
        }
    }
}
