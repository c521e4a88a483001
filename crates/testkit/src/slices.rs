//! A watch of one Service's EndpointSlices that keeps every state it saw, so that a test or
//! the bench can ask what was listed, when, and the most ever listed at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::watcher;

use crate::support::TestNs;

/// What the Service's slices listed together at one moment, each list sorted.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listed {
    /// Every address, whatever its conditions.
    pub all: Vec<String>,
    /// The addresses whose endpoint is ready.
    pub ready: Vec<String>,
}

#[derive(Default)]
struct States {
    slices: BTreeMap<String, Listed>,
    history: Vec<(Instant, Listed)>,
    stopped: Option<String>,
}

impl States {
    fn listed(&self) -> Listed {
        let mut l = Listed::default();
        for s in self.slices.values() {
            l.all.extend(s.all.iter().cloned());
            l.ready.extend(s.ready.iter().cloned());
        }
        l.all.sort();
        l.ready.sort();
        l
    }
}

fn listed(slice: &EndpointSlice) -> Listed {
    let mut l = Listed::default();
    for e in &slice.endpoints {
        let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
        l.all.extend(e.addresses.iter().cloned());
        if ready {
            l.ready.extend(e.addresses.iter().cloned());
        }
    }
    l
}

/// Every state of one Service's slices (`kubernetes.io/service-name`), as a watch saw them. A
/// watch that errors or ends may have missed states, so every query panics once it has.
pub struct SliceWatch {
    service: String,
    seen: Arc<Mutex<States>>,
    changed: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl SliceWatch {
    /// Starts watching the slices of Service `service` in `ns`.
    pub fn start(ns: &TestNs, service: &str) -> Self {
        let seen = Arc::new(Mutex::new(States::default()));
        let changed = Arc::new(tokio::sync::Notify::new());
        let (state, notify, name) = (seen.clone(), changed.clone(), service.to_string());
        let cfg =
            watcher::Config::default().labels(&format!("kubernetes.io/service-name={service}"));
        let stream = watcher(ns.api::<EndpointSlice>(), cfg);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                let ev = match stream.try_next().await {
                    Ok(Some(ev)) => ev,
                    stop => {
                        state.lock().unwrap().stopped = Some(match stop {
                            Err(e) => format!("the {name} slice watch failed: {e}"),
                            _ => format!("the {name} slice watch ended"),
                        });
                        notify.notify_waiters();
                        return;
                    }
                };
                let now = Instant::now();
                let mut st = state.lock().unwrap();
                match ev {
                    watcher::Event::Apply(sl) | watcher::Event::InitApply(sl) => {
                        st.slices.insert(sl.name_any(), listed(&sl));
                    }
                    watcher::Event::Delete(sl) => {
                        st.slices.remove(&sl.name_any());
                    }
                    // A relist starts afresh; its objects follow.
                    watcher::Event::Init => st.slices.clear(),
                    watcher::Event::InitDone => {}
                }
                let now_listed = st.listed();
                if st.history.last().map(|(_, l)| l) != Some(&now_listed) {
                    st.history.push((now, now_listed));
                }
                drop(st);
                notify.notify_waiters();
            }
        });
        Self {
            service: service.to_string(),
            seen,
            changed,
            task,
        }
    }

    fn states(&self) -> MutexGuard<'_, States> {
        let s = self.seen.lock().unwrap();
        if let Some(why) = &s.stopped {
            panic!("{why}, so it may have missed states");
        }
        s
    }

    /// What is listed now.
    pub fn now(&self) -> Listed {
        self.states().listed()
    }

    /// Waits until `done` holds for what is listed; returns when the watch first saw that
    /// state (it may have come before the call). Panics after `timeout`.
    pub async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Listed) -> bool,
    ) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if let Some((at, l)) = self.states().history.last()
                && done(l)
            {
                return *at;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, changed).await.is_err() {
                panic!(
                    "the {} Service's slices never {what} within {timeout:?}: they list {:?}",
                    self.service,
                    self.now()
                );
            }
        }
    }

    /// Waits until the only address listed, and ready, is `ip`.
    pub async fn wait_only(&self, ip: &str, timeout: Duration) -> Instant {
        let want = [ip.to_string()];
        self.wait(&format!("listed only {ip}"), timeout, |l| {
            l.all == want && l.ready == want
        })
        .await
    }

    /// The most addresses listed at once since `after` (whatever their conditions).
    pub fn most_since(&self, after: Instant) -> usize {
        self.states()
            .history
            .iter()
            .filter(|(t, _)| *t >= after)
            .map(|(_, l)| l.all.len())
            .max()
            .unwrap_or(0)
    }

    /// Whether `ip` was listed at any moment since `after`.
    pub fn listed_since(&self, ip: &str, after: Instant) -> bool {
        self.states()
            .history
            .iter()
            .any(|(t, l)| *t >= after && l.all.iter().any(|a| a == ip))
    }

    /// How many states the watch has seen: a check of "never" must show that it saw some.
    pub fn states_seen(&self) -> usize {
        self.states().history.len()
    }
}

impl Drop for SliceWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
