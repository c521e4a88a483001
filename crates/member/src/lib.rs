//! The member side: a process inside a member pod learns its role, term and leader within
//! milliseconds of podium's write, by watching its own Pod and its ElectionGroup.
//!
//! The state is a `tokio::sync::watch`: notifications coalesce and the latest state wins, so a
//! slow reader never builds a backlog. `UNKNOWN` means the watch has been broken for longer than
//! `unknown_after`: the process cannot tell whether it still leads (its term fences it).

pub mod client;
pub mod files;
pub mod signals;
pub mod supervise;
pub mod watches;

mod role;
mod tracker;

use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use kube::Client;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use tracker::{Tracker, first_sync, follow, streams};

/// A member's role, as its own Pod shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The pod carries `<roleLabel>: leader`.
    Leader,
    /// The pod is a follower, or not (or no longer) labelled by podium.
    Follower,
    /// The watch has been broken for longer than `unknown_after`.
    Unknown,
}

/// What a member knows about its election.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct State {
    /// The role.
    pub role: Role,
    /// The fencing term, while leading.
    pub term: Option<i64>,
    /// The ElectionGroup the pod belongs to, once podium has labelled it.
    pub group: Option<String>,
    /// The group's current leader, as its status says.
    pub leader: Option<String>,
    /// When this state was first observed.
    pub at: Timestamp,
    /// The group hands over make-before-break: a stopping leader keeps working until its
    /// successor is labelled.
    #[serde(skip)]
    pub make_before_break: bool,
}

impl State {
    /// The same facts, whatever the time.
    fn same(&self, other: &State) -> bool {
        (self.role, self.term, &self.group, &self.leader)
            == (other.role, other.term, &other.group, &other.leader)
    }

    /// One JSON line, as `podium member watch` prints it.
    pub fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why a member cannot follow its role.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The pod's identity was not given.
    #[error(
        "POD_NAME and POD_NAMESPACE must name this pod (set them from the downward API: fieldRef metadata.name and metadata.namespace)"
    )]
    NoIdentity,
    /// The pod does not exist.
    #[error("pod {namespace}/{pod} does not exist")]
    NoPod {
        /// Namespace.
        namespace: String,
        /// Pod name.
        pod: String,
    },
    /// No ElectionGroup selects the pod.
    #[error("pod {namespace}/{pod} is not a member of any ElectionGroup in its namespace")]
    NotAMember {
        /// Namespace.
        namespace: String,
        /// Pod name.
        pod: String,
    },
    /// RBAC forbids a read the member needs.
    #[error(
        "forbidden to read {what} in namespace {namespace}: {message} (a member needs get, list and watch on pods and electiongroups.podium.dev in its namespace; see config/samples/member-rbac.yaml)"
    )]
    Forbidden {
        /// What was read.
        what: &'static str,
        /// Namespace.
        namespace: String,
        /// The API server's message.
        message: String,
    },
    /// Any other failure to read from the API server.
    #[error("reading {what} in namespace {namespace}: {source}")]
    Api {
        /// What was read.
        what: &'static str,
        /// Namespace.
        namespace: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// The first watch did not complete in time.
    #[error("could not start watching {what} in namespace {namespace} within {secs} s: {last}")]
    NoSync {
        /// What was watched.
        what: &'static str,
        /// Namespace.
        namespace: String,
        /// The time allowed.
        secs: u64,
        /// The last error seen.
        last: String,
    },
}

/// Which pod this is, and how it judges a broken watch.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub pod: String,
    /// How long the watch may stay broken before the role is `Unknown`.
    pub unknown_after: Duration,
    /// Stop leading work after `Unknown` has lasted this long; `None`: keep it running (the term
    /// fences it), until the watch shows a follower.
    pub step_down_after_unknown: Option<Duration>,
}

impl MemberConfig {
    /// The pod named by `POD_NAME` and `POD_NAMESPACE`.
    pub fn from_env(unknown_after: Duration) -> Result<Self, MemberError> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (Some(pod), Some(namespace)) = (get("POD_NAME"), get("POD_NAMESPACE")) else {
            return Err(MemberError::NoIdentity);
        };
        Ok(Self {
            namespace,
            pod,
            unknown_after,
            step_down_after_unknown: None,
        })
    }
}

/// How long `Member::start` waits for the first complete view.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// A running follower of this pod's role.
pub struct Member {
    state: watch::Receiver<State>,
    config: MemberConfig,
    task: JoinHandle<()>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Member {
    /// Checks that the pod exists, is a member and may be watched, then follows its role.
    pub async fn start(client: Client, config: MemberConfig) -> Result<Self, MemberError> {
        let mut events = streams(&client, &config);
        let mut tracker = Tracker::new(config.clone());
        first_sync(&mut tracker, &mut events).await?;
        let (tx, rx) = watch::channel(tracker.state(Instant::now()));
        let task = tokio::spawn(follow(tracker, events, tx));
        Ok(Self {
            state: rx,
            config,
            task,
        })
    }

    /// A receiver of every change of state (coalesced: the latest wins).
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// This pod leads now, as far as the watch shows.
    pub fn is_leader(&self) -> bool {
        self.state.borrow().role == Role::Leader
    }

    /// The fencing term while leading.
    pub fn term(&self) -> Option<i64> {
        self.state.borrow().term
    }

    /// Runs `work` each time this pod starts leading, with its term and a token cancelled when
    /// the leadership ends (a follower, another term, or `Unknown` past
    /// `step_down_after_unknown`); waits for `work` to return before it may run again. Work that
    /// returns by itself is started again only on the next leadership. Returns when the watch
    /// ends.
    pub async fn run_while_leading<F, Fut>(&self, mut work: F)
    where
        F: FnMut(CancellationToken, i64) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut rx = self.subscribe();
        loop {
            let Some(term) = wait_leading(&mut rx).await else {
                return;
            };
            let token = CancellationToken::new();
            let run = work(token.clone(), term);
            tokio::pin!(run);
            let mut lost = std::pin::pin!(leadership_lost(
                rx.clone(),
                term,
                self.config.step_down_after_unknown
            ));
            tokio::select! {
                // Work that ends by itself runs again only on the next leadership.
                _ = &mut run => {
                    (&mut lost).await;
                    continue;
                }
                _ = &mut lost => token.cancel(),
            }
            run.await;
        }
    }
}

/// Waits until the state shows this pod leading with a term; `None` when the watch ended.
async fn wait_leading(rx: &mut watch::Receiver<State>) -> Option<i64> {
    let state = rx
        .wait_for(|s| s.role == Role::Leader && s.term.is_some())
        .await
        .ok()?;
    state.term
}

/// Resolves when leadership under `term` ends, as the state stream tells it.
pub async fn leadership_lost(
    mut rx: watch::Receiver<State>,
    term: i64,
    step_down_after_unknown: Option<Duration>,
) {
    loop {
        let (role, current) = {
            let s = rx.borrow_and_update();
            (s.role, s.term)
        };
        match role {
            Role::Follower => return,
            Role::Leader if current != Some(term) => return,
            Role::Leader => {
                if rx.changed().await.is_err() {
                    return;
                }
            }
            Role::Unknown => {
                let Some(limit) = step_down_after_unknown else {
                    if rx.changed().await.is_err() {
                        return;
                    }
                    continue;
                };
                match tokio::time::timeout(limit, rx.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return,
                }
            }
        }
    }
}

/// A stream of states, one per change of the facts, for `podium member watch`. Changes that
/// came and went between two reads coalesce: a state equal to the last one given is skipped.
pub fn changes(member: &Member) -> impl Stream<Item = State> + use<> {
    futures::stream::unfold(
        (member.subscribe(), None::<State>),
        |(mut rx, last)| async move {
            loop {
                if last.is_some() && rx.changed().await.is_err() {
                    return None;
                }
                let s = rx.borrow_and_update().clone();
                if last.as_ref().is_none_or(|l| !l.same(&s)) {
                    return Some((s.clone(), (rx, Some(s))));
                }
            }
        },
    )
}

#[cfg(test)]
mod tests;

/// `podium member watch`: one JSON line on stdout per change, until the pod stops.
pub async fn print_changes(member: &Member) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout();
    let mut states = std::pin::pin!(changes(member));
    let mut stop = std::pin::pin!(crate::signals::terminated());
    loop {
        tokio::select! {
            s = states.next() => match s {
                Some(s) => {
                    writeln!(out, "{}", s.json_line())?;
                    out.flush()?;
                }
                None => return Ok(()),
            },
            _ = &mut stop => return Ok(()),
        }
    }
}
