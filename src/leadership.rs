//! Election among operator replicas through a `coordination.k8s.io/v1` Lease.
//!
//! kube-lease-manager acquires and renews the Lease. A standby also watches the Lease, so that
//! when the active replica releases it on shutdown the standby takes over at once instead of
//! sleeping out the lease duration.

use futures::{StreamExt, future::Either};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube_lease_manager::LeaseManagerBuilder;
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
    /// Seconds before expiry at which the holder renews.
    pub renew_before_secs: u64,
}

/// Why leader election stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Lease could not be created or read.
    #[error("setting up lease {namespace}/{lease}: {source}")]
    Setup {
        namespace: String,
        lease: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
}

/// Competes for the Lease until `stop` resolves, then releases it if held.
/// `active` carries whether this replica currently holds the Lease.
pub async fn run(
    client: Client,
    cfg: Config,
    active: watch::Sender<bool>,
    metrics: std::sync::Arc<Metrics>,
    stop: impl Future<Output = ()>,
) -> Result<(), Error> {
    let manager = LeaseManagerBuilder::new(client.clone(), &cfg.lease)
        .with_namespace(&cfg.namespace)
        .with_identity(&cfg.identity)
        .with_duration(cfg.duration_secs)
        .with_grace(cfg.renew_before_secs)
        .with_field_manager("podium")
        .build()
        .await
        .map_err(|source| Error::Setup {
            namespace: cfg.namespace.clone(),
            lease: cfg.lease.clone(),
            source,
        })?;
    let leases: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let released = watcher(
        leases,
        watcher::Config::default().fields(&format!("metadata.name={}", cfg.lease)),
    )
    .default_backoff()
    .applied_objects()
    .filter_map(|l| async move {
        let lease = l.ok()?;
        let holder = lease.spec.and_then(|s| s.holder_identity);
        holder.is_none().then_some(())
    });
    let mut released = std::pin::pin!(released);
    let mut stop = std::pin::pin!(stop);
    info!(lease = %cfg.lease, namespace = %cfg.namespace, identity = %cfg.identity, "competing for the controller lease");

    loop {
        let leading = *active.borrow();
        // A standby restarts its wait when the Lease is released; the holder never interrupts a renewal.
        let wake = if leading {
            Either::Left(futures::future::pending())
        } else {
            Either::Right(released.next())
        };
        tokio::select! {
            _ = &mut stop => break,
            changed = manager.changed() => match changed {
                Ok(now_leading) => {
                    info!(identity = %cfg.identity, active = now_leading, "controller lease changed hands");
                    metrics.set_active(now_leading);
                    let _ = active.send(now_leading);
                }
                Err(e) => {
                    warn!(error = %e, "controller lease error; standing by");
                    metrics.set_active(false);
                    let _ = active.send(false);
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            },
            Some(()) = wake => {
                // The manager caches the Lease until it expires; release() of a Lease someone else
                // holds writes nothing but re-reads it, so the next changed() sees it free at once.
                if let Err(e) = manager.release().await {
                    warn!(error = %e, "re-reading the controller lease");
                }
            }
        }
    }

    let _ = active.send(false);
    metrics.set_active(false);
    if let Err(e) = manager.release().await {
        warn!(error = %e, "could not release the controller lease; a successor waits for it to expire");
    } else {
        info!("controller lease released");
    }
    Ok(())
}
