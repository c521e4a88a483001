//! What every write of podium's needs: the client, the overlay of its own writes, the fence of
//! the controller Lease, the write slots and the write metrics.

use std::sync::Arc;

use kube::Client;
use tokio::sync::SemaphorePermit;

use crate::error::NotLeading;
use crate::lane::Lane;
use crate::leadership::Fence;
use crate::metrics::Metrics;
use crate::overlay::Overlay;
use crate::routing::UrgentSince;
use crate::slots::WriteSlots;

/// The writer the reconciler's writes go through.
pub struct Writer {
    /// API client.
    pub client: Client,
    /// Writes the caches may not show yet.
    pub overlay: Arc<Overlay>,
    /// Whether this replica may write at this instant (the controller Lease, by its own clock).
    pub fence: Arc<Fence>,
    /// Who writes first: failovers, then routine writes and Events, which share the slots.
    pub slots: Arc<WriteSlots>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// When each group in the urgent queue was put there.
    pub urgent_since: Arc<UrgentSince>,
}

impl Writer {
    /// Fails unless this replica holds the controller Lease at this instant.
    pub fn fenced(&self) -> Result<(), NotLeading> {
        if self.fence.holds() {
            Ok(())
        } else {
            Err(NotLeading)
        }
    }

    /// Waits for the slot `lane` writes with, then checks the controller Lease, with nothing of
    /// podium's own to wait for between that check and the request. Hold the permit for the
    /// length of one request.
    pub async fn slot(&self, lane: &Lane) -> Result<Option<SemaphorePermit<'_>>, NotLeading> {
        let slot = lane.write_slot(&self.slots, &self.urgent_since).await;
        self.fenced()?;
        Ok(slot)
    }
}
