//! Election among operator replicas through a `coordination.k8s.io/v1` Lease, and the fence that
//! keeps a replica from writing once it may have lost the Lease.
//!
//! Every Lease write is conditional on the resourceVersion it was read at, so two replicas can
//! never both succeed from the same state. Expiry is judged as client-go judges it: by when this
//! replica *observed* the holder's last renewal on its own monotonic clock, never by comparing the
//! holder's wall-clock `renewTime` with ours, so clock skew between machines does not matter.
//!
//! The fence closes a fixed margin before any standby could consider the Lease expired: the holder
//! counts from the instant it *sent* its last successful renewal, and a standby counts from the
//! instant it *saw* that renewal, which is later. A process that is paused (a long GC pause, CPU
//! starvation, SIGSTOP) therefore finds its fence closed when it wakes, before its first write.
//! A whole VM frozen by its hypervisor is different: its guest clocks usually stop with it, so it
//! may wake with the fence still open; there only the writes' preconditions protect the cluster.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Where the controller's own Lease lives and who competes for it.
#[derive(Debug, Clone)]
pub struct Config {
    /// Lease name.
    pub lease: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (holderIdentity).
    pub identity: String,
    /// Seconds a Lease stays valid without renewal.
    pub duration_secs: u64,
}

impl Config {
    fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }

    /// How often the holder renews and a standby looks again: four tries per Lease duration.
    fn retry(&self) -> Duration {
        (self.duration() / 4).max(Duration::from_millis(250))
    }

    /// How long after sending a successful renewal the holder may still write: 80 % of the
    /// duration, leaving room for clocks that run at slightly different rates.
    fn validity(&self) -> Duration {
        self.duration() * 4 / 5
    }
}

/// Whether this replica may write now, by its own monotonic clock.
#[derive(Debug)]
pub struct Fence {
    until: Mutex<Option<Instant>>,
    leased: bool,
}

impl Fence {
    /// A fence that is always open: the only replica, without leader election.
    pub fn open() -> Arc<Self> {
        Arc::new(Self {
            until: Mutex::new(None),
            leased: false,
        })
    }

    /// A fence that opens only while the Lease is held.
    pub fn leased() -> Arc<Self> {
        Arc::new(Self {
            until: Mutex::new(None),
            leased: true,
        })
    }

    /// This replica may write.
    pub fn holds(&self) -> bool {
        !self.leased || self.lock().is_some_and(|u| Instant::now() < u)
    }

    fn extend(&self, until: Instant) {
        *self.lock() = Some(until);
    }

    fn close(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why leader election stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Lease could not be read or written.
    #[error("lease {namespace}/{lease}: {source}")]
    Api {
        namespace: String,
        lease: String,
        #[source]
        source: kube::Error,
    },
}

/// The last version of the Lease this replica saw, and when it first saw it.
struct Observed {
    resource_version: Option<String>,
    at: Instant,
}

/// What one look at the Lease leads to.
enum Step {
    /// Renewed or acquired: the fence is open until the instant given.
    Hold,
    /// Someone else holds an unexpired Lease.
    Wait(Duration),
    /// Try again soon (a conflict, an API error).
    Retry,
}

/// Competes for the Lease until `stop` resolves, then releases it if held.
/// `active` carries whether this replica currently holds the Lease; `fence` says whether it may
/// still write at this instant.
pub async fn run(
    client: Client,
    cfg: Config,
    active: watch::Sender<bool>,
    fence: Arc<Fence>,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let released = watcher(
        api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", cfg.lease)),
    )
    .default_backoff()
    .applied_objects()
    .filter_map(|l| async move {
        let holder = l.ok()?.spec.and_then(|s| s.holder_identity);
        holder.is_none_or(|h| h.is_empty()).then_some(())
    });
    let mut released = std::pin::pin!(released);
    let mut stop = std::pin::pin!(stop);
    let mut observed: Option<Observed> = None;
    let mut last_hold: Option<Instant> = None;
    info!(lease = %cfg.lease, namespace = %cfg.namespace, identity = %cfg.identity, "competing for the controller lease");

    loop {
        let step = tokio::select! {
            _ = &mut stop => break,
            s = step(&api, &cfg, &fence, &mut observed) => s,
        };
        let wait = match step {
            Step::Hold => {
                last_hold = Some(Instant::now());
                set_active(&active, &metrics, &cfg, true);
                cfg.retry()
            }
            Step::Wait(d) => {
                set_active(&active, &metrics, &cfg, false);
                d
            }
            Step::Retry => {
                // The fence is already closed; stand down once the Lease may have expired.
                if last_hold.is_none_or(|t| t.elapsed() >= cfg.duration()) {
                    set_active(&active, &metrics, &cfg, false);
                }
                cfg.retry() / 2
            }
        };
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(wait) => {}
            // Always polled, so the watch never backs up; only a standby acts on a release.
            Some(()) = released.next() => {}
        }
    }

    fence.close();
    set_active(&active, &metrics, &cfg, false);
    release(&api, &cfg).await
}

fn set_active(active: &watch::Sender<bool>, metrics: &Metrics, cfg: &Config, now: bool) {
    metrics.set_active(now);
    active.send_if_modified(|a| {
        let changed = *a != now;
        if changed {
            info!(identity = %cfg.identity, active = now, "controller lease changed hands");
        }
        *a = now;
        changed
    });
}

/// Reads the Lease once and renews, acquires or waits.
async fn step(
    api: &Api<Lease>,
    cfg: &Config,
    fence: &Fence,
    observed: &mut Option<Observed>,
) -> Step {
    let lease = match api.get_opt(&cfg.lease).await {
        Ok(l) => l,
        Err(e) => {
            fence.close();
            warn!(error = %e, "reading the controller lease");
            return Step::Retry;
        }
    };
    let Some(lease) = lease else {
        return write(api, cfg, fence, None).await;
    };
    let rv = lease.resource_version();
    if observed.as_ref().is_none_or(|o| o.resource_version != rv) {
        *observed = Some(Observed {
            resource_version: rv,
            at: Instant::now(),
        });
    }
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    let held_for = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(cfg.duration(), Duration::from_secs);
    let seen = observed.as_ref().map_or(Instant::now(), |o| o.at);
    if holder == cfg.identity || holder.is_empty() || seen.elapsed() >= held_for {
        return write(api, cfg, fence, Some(lease)).await;
    }
    fence.close();
    Step::Wait((held_for.saturating_sub(seen.elapsed())).min(cfg.retry()))
}

/// Creates, renews or takes over the Lease, conditional on the version read.
async fn write(api: &Api<Lease>, cfg: &Config, fence: &Fence, lease: Option<Lease>) -> Step {
    let sent = Instant::now();
    let now = MicroTime(Timestamp::now());
    let duration = i32::try_from(cfg.duration_secs).unwrap_or(i32::MAX);
    let result = match lease {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.lease.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
                spec.holder_identity = Some(cfg.identity.clone());
                spec.acquire_time = Some(now.clone());
                spec.lease_transitions =
                    Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            }
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(duration);
            // `lease.metadata.resourceVersion` is still the version read: the write's precondition.
            api.replace(&cfg.lease, &PostParams::default(), &lease)
                .await
        }
    };
    match result {
        Ok(_) => {
            fence.extend(sent + cfg.validity());
            Step::Hold
        }
        Err(e) => {
            fence.close();
            if !matches!(&e, kube::Error::Api(s) if s.code == 409) {
                warn!(error = %e, "writing the controller lease");
            }
            Step::Retry
        }
    }
}

/// Gives the Lease up, if this replica holds it, so that a standby takes over at once.
async fn release(api: &Api<Lease>, cfg: &Config) -> Result<(), Error> {
    let err = |source| Error::Api {
        namespace: cfg.namespace.clone(),
        lease: cfg.lease.clone(),
        source,
    };
    let Some(mut lease) = api.get_opt(&cfg.lease).await.map_err(err)? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    match api
        .replace(&cfg.lease, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => {
            info!("controller lease released");
            Ok(())
        }
        Err(e) => {
            warn!(error = %e, "could not release the controller lease; a successor waits for it to expire");
            Ok(())
        }
    }
}
