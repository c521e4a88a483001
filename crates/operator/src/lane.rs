//! The lane a reconcile writes in: routine, or a failover's, which goes before routine work.
//!
//! A failover's reconcile takes a failover slot while it may move leadership; until its
//! leadership writes are acknowledged its writes take no routine slot and routine writes are
//! held back. A reconcile that a failover waits for (on the group's lock, or queued behind it)
//! writes without a slot too, as the failover's own writes would. Every writer is handed the
//! lane, so the call site shows which rules apply.

use std::sync::Mutex;
use std::time::Instant;

use kube::runtime::reflector::ObjectRef;
use podium_api::Guarded;
use tokio::sync::{SemaphorePermit, watch};

use crate::metrics::{FailoverStage, Metrics};
use crate::routing::UrgentSince;
use crate::slots::{Counted, WriteSlots};

/// A failover's reconcile: when it was queued, and its hold while it moves leadership.
#[derive(Default)]
struct Failover {
    queued: Option<Instant>,
    hold: Option<Counted>,
    moving_since: Option<Instant>,
}

/// The lane of one reconcile, which holds its group's lock.
pub struct Lane {
    key: ObjectRef<Guarded>,
    /// How many failovers wait for this group's lock.
    failovers_waiting: watch::Receiver<usize>,
    /// Set for a reconcile of the urgent queue.
    failover: Option<Mutex<Failover>>,
}

impl Lane {
    /// The lane of a reconcile holding `key`'s lock; a failover's when `queued` is given (when
    /// it was put in the urgent queue, if known).
    pub fn new(
        key: ObjectRef<Guarded>,
        failovers_waiting: watch::Receiver<usize>,
        failover: Option<Option<Instant>>,
    ) -> Self {
        let failover = failover.map(|queued| {
            Mutex::new(Failover {
                queued,
                ..Failover::default()
            })
        });
        Self {
            key,
            failovers_waiting,
            failover,
        }
    }

    fn with_failover<T>(&self, f: impl FnOnce(&mut Failover) -> T) -> Option<T> {
        let cell = self.failover.as_ref()?;
        Some(f(&mut cell.lock().unwrap_or_else(|p| p.into_inner())))
    }

    /// Holds routine writes back while a failover's pass may move leadership, and takes one of
    /// the failover slots; taken again by every pass, since one that went stale after moving it
    /// may have to move it again. Released by [`Lane::leadership_moved`] or with the lane.
    pub async fn hold_for_failover(&self, slots: &WriteSlots, metrics: &Metrics) {
        let Some(Some(queued)) = self.with_failover(|f| f.hold.is_none().then(|| f.queued.take()))
        else {
            return;
        };
        let start = Instant::now();
        if let Some(queued) = queued {
            metrics.failover_stage(FailoverStage::Queued, start.duration_since(queued));
        }
        let hold = slots.failover().await;
        metrics.failover_stage(FailoverStage::Slot, start.elapsed());
        self.with_failover(|f| {
            f.hold = Some(hold);
            f.moving_since = Some(Instant::now());
        });
    }

    /// Lets routine writes go again: the failover's leadership writes are acknowledged, and
    /// what it writes next (status, the other followers, Events) waits for routine slots.
    pub fn leadership_moved(&self, metrics: &Metrics) {
        self.with_failover(|f| {
            f.hold = None;
            if let Some(since) = f.moving_since.take() {
                metrics.failover_stage(FailoverStage::Moving, since.elapsed());
            }
        });
    }

    /// Waits for a routine write slot, unless this is a failover still moving leadership or a
    /// reconcile a failover waits for. Hold the permit for the length of one request.
    pub async fn write_slot<'s>(
        &self,
        slots: &'s WriteSlots,
        urgent: &UrgentSince,
    ) -> Option<SemaphorePermit<'s>> {
        if self.with_failover(|f| f.hold.is_some()) == Some(true) {
            return None;
        }
        // A failover waiting for this group waits for these writes: they go without a slot,
        // as its own would, rather than behind other groups' routine writes.
        let mut waiting = self.failovers_waiting.clone();
        let waiting_for_lock = async move {
            if waiting.wait_for(|n| *n > 0).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            biased;
            () = waiting_for_lock => None,
            () = urgent.pending(&self.key) => None,
            slot = slots.routine() => slot,
        }
    }
}
