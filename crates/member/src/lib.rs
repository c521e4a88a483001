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

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::{Selector, SelectorExt};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::watches::relisting;
use podium_api::{DEFAULT_ROLE_LABEL, ElectionGroup, GROUP_ANNOTATION, LEADER, TERM_ANNOTATION};

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

/// What the group says that the pod does not.
#[derive(Debug, Clone, Default)]
struct GroupView {
    role_label: Option<String>,
    leader: Option<String>,
    selector: Option<Selector>,
    make_before_break: bool,
}

fn group_view(obj: &DynamicObject) -> GroupView {
    let spec = &obj.data["spec"];
    let selector = serde_json::from_value::<LabelSelector>(spec["selector"].clone())
        .ok()
        .and_then(|s| Selector::try_from(s).ok())
        .filter(|s| !s.selects_all());
    GroupView {
        role_label: spec["roleLabel"].as_str().map(str::to_string),
        leader: obj.data["status"]["leader"].as_str().map(str::to_string),
        selector,
        make_before_break: spec["handoff"]["mode"].as_str() == Some("MakeBeforeBreak"),
    }
}

/// The role, term, group and leader a pod shows (`Unknown` is decided by the caller).
fn observe(pod: Option<&Pod>, groups: &BTreeMap<String, GroupView>) -> State {
    let group = pod.and_then(|p| p.annotations().get(GROUP_ANNOTATION).cloned());
    let view = group.as_ref().and_then(|g| groups.get(g));
    let key = view
        .and_then(|v| v.role_label.as_deref())
        .unwrap_or(DEFAULT_ROLE_LABEL);
    let leading = group.is_some()
        && pod.is_some_and(|p| p.labels().get(key).map(String::as_str) == Some(LEADER));
    let term = pod
        .filter(|_| leading)
        .and_then(|p| p.annotations().get(TERM_ANNOTATION))
        .and_then(|t| t.parse::<i64>().ok())
        .filter(|t| *t >= 1);
    State {
        role: if leading {
            Role::Leader
        } else {
            Role::Follower
        },
        term,
        leader: view.and_then(|v| v.leader.clone()),
        make_before_break: view.is_some_and(|v| v.make_before_break),
        group,
        at: Timestamp::now(),
    }
}

/// One item of either watch.
enum Seen {
    Pod(Box<watcher::Result<watcher::Event<Pod>>>),
    Group(Box<watcher::Result<watcher::Event<DynamicObject>>>),
}

/// The API server's refusal, if an error is one.
fn forbidden(e: &watcher::Error) -> Option<String> {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.as_ref(),
        watcher::Error::WatchError(s) => s.as_ref(),
        _ => return None,
    };
    (status.code == 403).then(|| status.message.clone())
}

/// Whether an event shows the watch answering with current data: a change, or a completed
/// list. The start of a list is announced before the API server has answered, and a list
/// half-way is not yet the current state.
fn heals<K>(ev: &watcher::Event<K>) -> bool {
    matches!(
        ev,
        watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone
    )
}

/// The state of both watches, folded from their events.
struct Tracker {
    config: MemberConfig,
    pod: Option<Pod>,
    pod_synced: bool,
    groups: BTreeMap<String, GroupView>,
    groups_synced: bool,
    pending_groups: BTreeMap<String, GroupView>,
    /// The pod as a re-list shows it, until the list is complete.
    pending_pod: Option<Pod>,
    /// Per watch (pod, groups): since when it has been failing, and its last failure.
    broken: [Option<(Instant, String)>; 2],
}

impl Tracker {
    fn apply(&mut self, seen: Seen) {
        let (which, failure) = match seen {
            Seen::Pod(item) => match *item {
                Ok(ev) => {
                    let heals = heals(&ev);
                    self.apply_pod(ev);
                    (0, heals.then_some(None))
                }
                Err(e) => (0, Some(Some(e.to_string()))),
            },
            Seen::Group(item) => match *item {
                Ok(ev) => {
                    let heals = heals(&ev);
                    self.apply_group(ev);
                    (1, heals.then_some(None))
                }
                Err(e) => (1, Some(Some(e.to_string()))),
            },
        };
        let Some(failure) = failure else { return };
        let slot = &mut self.broken[which];
        *slot = failure.map(|e| (slot.as_ref().map_or_else(Instant::now, |b| b.0), e));
    }

    /// Since when a watch has been failing (the earlier of the two), and its last failure.
    fn broken(&self) -> Option<&(Instant, String)> {
        self.broken.iter().flatten().min_by_key(|b| b.0)
    }

    fn apply_pod(&mut self, ev: watcher::Event<Pod>) {
        match ev {
            watcher::Event::Apply(p) => self.pod = Some(p),
            watcher::Event::Delete(_) => self.pod = None,
            // A re-list replaces the pod only once complete, so the role never blinks.
            watcher::Event::Init => self.pending_pod = None,
            watcher::Event::InitApply(p) => self.pending_pod = Some(p),
            watcher::Event::InitDone => {
                self.pod = self.pending_pod.take();
                self.pod_synced = true;
            }
        }
    }

    fn apply_group(&mut self, ev: watcher::Event<DynamicObject>) {
        match ev {
            watcher::Event::Apply(g) => {
                self.groups.insert(g.name_any(), group_view(&g));
            }
            watcher::Event::Delete(g) => {
                self.groups.remove(&g.name_any());
            }
            watcher::Event::Init => self.pending_groups.clear(),
            watcher::Event::InitApply(g) => {
                self.pending_groups.insert(g.name_any(), group_view(&g));
            }
            watcher::Event::InitDone => {
                self.groups = std::mem::take(&mut self.pending_groups);
                self.groups_synced = true;
            }
        }
    }

    /// The state to publish now.
    fn state(&self, now: Instant) -> State {
        let unknown = !(self.pod_synced && self.groups_synced)
            || self
                .broken()
                .is_some_and(|(since, _)| now.duration_since(*since) >= self.config.unknown_after);
        let seen = observe(self.pod.as_ref(), &self.groups);
        if unknown {
            State {
                role: Role::Unknown,
                term: None,
                ..seen
            }
        } else {
            seen
        }
    }

    /// When the state turns `Unknown` unless the watch recovers first.
    fn unknown_at(&self) -> Option<Instant> {
        self.broken()
            .map(|(since, _)| *since + self.config.unknown_after)
    }

    /// The pod belongs to a group: podium labelled it, or a group's selector selects it.
    fn is_member(&self) -> bool {
        let Some(pod) = &self.pod else {
            return false;
        };
        pod.annotations().contains_key(GROUP_ANNOTATION)
            || self
                .groups
                .values()
                .any(|g| g.selector.as_ref().is_some_and(|s| s.matches(pod.labels())))
    }
}

type Events = SelectAll<BoxStream<'static, Seen>>;

fn streams(client: &Client, config: &MemberConfig) -> Events {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &config.namespace);
    let fields = format!("metadata.name={}", config.pod);
    let pod = relisting(move || {
        watcher(pods.clone(), watcher::Config::default().fields(&fields)).boxed()
    })
    .map(|item| Seen::Pod(Box::new(item)));
    let ar = ApiResource::erase::<ElectionGroup>(&());
    let groups: Api<DynamicObject> = Api::namespaced_with(client.clone(), &config.namespace, &ar);
    let group = relisting(move || watcher(groups.clone(), watcher::Config::default()).boxed())
        .map(|item| Seen::Group(Box::new(item)));
    futures::stream::select_all([pod.boxed(), group.boxed()])
}

/// Follows both watches until the first complete view, failing fast on what will not heal.
async fn first_sync(tracker: &mut Tracker, events: &mut Events) -> Result<(), MemberError> {
    let namespace = tracker.config.namespace.clone();
    let deadline = Instant::now() + SYNC_TIMEOUT;
    while !(tracker.pod_synced && tracker.groups_synced) {
        let next = tokio::time::timeout_at(deadline, events.next()).await;
        let seen = match next {
            Ok(Some(seen)) => seen,
            Ok(None) | Err(_) => {
                return Err(MemberError::NoSync {
                    what: if tracker.pod_synced {
                        "electiongroups"
                    } else {
                        "its pod"
                    },
                    namespace,
                    secs: SYNC_TIMEOUT.as_secs(),
                    last: tracker
                        .broken()
                        .map_or_else(|| "no answer".into(), |b| b.1.clone()),
                });
            }
        };
        let refused = match &seen {
            Seen::Pod(item) => item
                .as_ref()
                .as_ref()
                .err()
                .and_then(forbidden)
                .map(|m| ("pods", m)),
            Seen::Group(item) => item
                .as_ref()
                .as_ref()
                .err()
                .and_then(forbidden)
                .map(|m| ("electiongroups.podium.dev", m)),
        };
        if let Some((what, message)) = refused {
            return Err(MemberError::Forbidden {
                what,
                namespace,
                message,
            });
        }
        tracker.apply(seen);
    }
    if tracker.pod.is_none() {
        return Err(MemberError::NoPod {
            namespace,
            pod: tracker.config.pod.clone(),
        });
    }
    if !tracker.is_member() {
        return Err(MemberError::NotAMember {
            namespace,
            pod: tracker.config.pod.clone(),
        });
    }
    Ok(())
}

/// Publishes every change of state until the receivers are gone.
async fn follow(mut tracker: Tracker, mut events: Events, tx: watch::Sender<State>) {
    loop {
        let unknown_at = tracker.unknown_at();
        tokio::select! {
            seen = events.next() => match seen {
                Some(seen) => tracker.apply(seen),
                None => return,
            },
            _ = sleep_until(unknown_at) => {}
            _ = tx.closed() => return,
        }
        let next = tracker.state(Instant::now());
        tx.send_if_modified(|current| {
            // The mode is no printed fact, but `exec` acts on it when the pod stops.
            let changed =
                !current.same(&next) || current.make_before_break != next.make_before_break;
            if changed {
                *current = next;
            }
            changed
        });
    }
}

async fn sleep_until(at: Option<Instant>) {
    // A deadline already past has been acted on: nothing more to wake for.
    match at {
        Some(at) if at > Instant::now() => tokio::time::sleep_until(at).await,
        _ => std::future::pending().await,
    }
}

impl Member {
    /// Checks that the pod exists, is a member and may be watched, then follows its role.
    pub async fn start(client: Client, config: MemberConfig) -> Result<Self, MemberError> {
        let mut events = streams(&client, &config);
        let mut tracker = Tracker {
            config: config.clone(),
            pod: None,
            pod_synced: false,
            groups: BTreeMap::new(),
            groups_synced: false,
            pending_groups: BTreeMap::new(),
            pending_pod: None,
            broken: [None, None],
        };
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
