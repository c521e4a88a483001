//! The member's two watches (its Pod, the ElectionGroups) and the state they keep current.

use std::collections::BTreeMap;

use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::SelectorExt;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::role::{GroupView, group_view, observe};
use crate::watches::relisting;
use crate::{MemberConfig, MemberError, Role, SYNC_TIMEOUT, State};
use podium_api::{ElectionGroup, GROUP_ANNOTATION};

/// One item of either watch.
pub(crate) enum Seen {
    Pod(Box<watcher::Result<watcher::Event<Pod>>>),
    Group(Box<watcher::Result<watcher::Event<DynamicObject>>>),
}

/// The API server's refusal, if an error is one.
pub(crate) fn forbidden(e: &watcher::Error) -> Option<String> {
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
pub(crate) fn heals<K>(ev: &watcher::Event<K>) -> bool {
    matches!(
        ev,
        watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone
    )
}

/// The state of both watches, folded from their events.
pub(crate) struct Tracker {
    pub(crate) config: MemberConfig,
    pub(crate) pod: Option<Pod>,
    pub(crate) pod_synced: bool,
    pub(crate) groups: BTreeMap<String, GroupView>,
    pub(crate) groups_synced: bool,
    pub(crate) pending_groups: BTreeMap<String, GroupView>,
    /// The pod as a re-list shows it, until the list is complete.
    pub(crate) pending_pod: Option<Pod>,
    /// Per watch (pod, groups): since when it has been failing, and its last failure.
    pub(crate) broken: [Option<(Instant, String)>; 2],
}

impl Tracker {
    /// A tracker that has seen nothing yet.
    pub(crate) fn new(config: MemberConfig) -> Self {
        Self {
            config,
            pod: None,
            pod_synced: false,
            groups: BTreeMap::new(),
            groups_synced: false,
            pending_groups: BTreeMap::new(),
            pending_pod: None,
            broken: [None, None],
        }
    }

    pub(crate) fn apply(&mut self, seen: Seen) {
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
    pub(crate) fn broken(&self) -> Option<&(Instant, String)> {
        self.broken.iter().flatten().min_by_key(|b| b.0)
    }

    pub(crate) fn apply_pod(&mut self, ev: watcher::Event<Pod>) {
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

    pub(crate) fn apply_group(&mut self, ev: watcher::Event<DynamicObject>) {
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
    pub(crate) fn state(&self, now: Instant) -> State {
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
    pub(crate) fn unknown_at(&self) -> Option<Instant> {
        self.broken()
            .map(|(since, _)| *since + self.config.unknown_after)
    }

    /// The pod belongs to a group: podium labelled it, or a group's selector selects it.
    pub(crate) fn is_member(&self) -> bool {
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

pub(crate) type Events = SelectAll<BoxStream<'static, Seen>>;

pub(crate) fn streams(client: &Client, config: &MemberConfig) -> Events {
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
pub(crate) async fn first_sync(
    tracker: &mut Tracker,
    events: &mut Events,
) -> Result<(), MemberError> {
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
pub(crate) async fn follow(mut tracker: Tracker, mut events: Events, tx: watch::Sender<State>) {
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

pub(crate) async fn sleep_until(at: Option<Instant>) {
    // A deadline already past has been acted on: nothing more to wake for.
    match at {
        Some(at) if at > Instant::now() => tokio::time::sleep_until(at).await,
        _ => std::future::pending().await,
    }
}
