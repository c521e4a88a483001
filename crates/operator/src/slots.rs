//! Who goes first at a busy API server: failovers, then everything else.
//!
//! A request waits behind those already in flight at a busy API server, so what podium keeps in
//! flight decides how long a failover's requests take. Up to `--failover-concurrency` failovers
//! move leadership at once, and their writes take no routine slot; routine writes and Events
//! share `--concurrency` slots, and while a failover is moving leadership they wait (briefly)
//! so that its writes meet only those already sent (but for the writes of a reconcile that a
//! failover waits for: they go without a slot, see `Writer::slot`). Once its leadership writes are acknowledged
//! the rest of a failover (status, Events) is routine work: in a storm it must not hold up the
//! next promotion, and every moment routine writes wait is throughput lost to a cold start.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit, watch};
use tokio::time::Instant;

/// The longest a routine write waits for failovers to finish: a stuck one must not stop the rest.
const FAILOVER_PAUSE: Duration = Duration::from_secs(1);

/// Failovers moving leadership now, and since when at least one has been.
#[derive(Default)]
struct Moving {
    n: usize,
    since: Option<Instant>,
}

/// Write slots shared by routine reconciles and the Event workers, and the failovers' own.
pub struct WriteSlots {
    routine: Semaphore,
    moving: Arc<Semaphore>,
    failovers: watch::Sender<Moving>,
    /// Seconds during which at least one failover was moving leadership (whether or not a routine
    /// write was waiting).
    held: Counter<f64, AtomicU64>,
}

impl WriteSlots {
    /// `n` routine writes (Events included) in flight at once and `failovers` failovers moving
    /// leadership; the time during which a failover waits for its slot or is moving leadership
    /// is added to `held`.
    pub fn new(n: usize, failovers: usize, held: Counter<f64, AtomicU64>) -> Self {
        Self {
            routine: Semaphore::new(n.max(1)),
            moving: Arc::new(Semaphore::new(failovers.max(1))),
            failovers: watch::Sender::new(Moving::default()),
            held,
        }
    }

    /// Holds routine writes back at once, and waits for a failover slot; both last until the
    /// guard is dropped (also when its reconcile is cancelled): drop it once the failover's
    /// leadership writes are acknowledged.
    pub async fn failover(&self) -> Counted {
        let mut counted = Counted::start(self.failovers.clone(), self.held.clone());
        // Never closed.
        counted._slot = self.moving.clone().acquire_owned().await.ok();
        counted
    }

    /// Waits for a slot for one routine write or Event: after any failover moving leadership
    /// (up to [`FAILOVER_PAUSE`]). Hold the permit for the length of one request.
    pub async fn routine(&self) -> Option<SemaphorePermit<'_>> {
        self.pause_for_failovers().await;
        self.routine.acquire().await.ok()
    }

    async fn pause_for_failovers(&self) {
        let mut rx = self.failovers.subscribe();
        let _ = tokio::time::timeout(FAILOVER_PAUSE, rx.wait_for(|m| m.n == 0)).await;
    }
}

/// One failover moving leadership, counted off (and its slot freed) when dropped.
pub struct Counted {
    failovers: watch::Sender<Moving>,
    held: Counter<f64, AtomicU64>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Counted {
    fn start(failovers: watch::Sender<Moving>, held: Counter<f64, AtomicU64>) -> Self {
        failovers.send_modify(|m| {
            if m.n == 0 {
                m.since = Some(Instant::now());
            }
            m.n = m.n.saturating_add(1);
        });
        Self {
            failovers,
            held,
            _slot: None,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.failovers.send_modify(|m| {
            m.n = m.n.saturating_sub(1);
            if m.n == 0
                && let Some(since) = m.since.take()
            {
                self.held.inc_by(since.elapsed().as_secs_f64());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn routine_writes_wait_for_a_failover_but_not_for_ever() {
        let slots = WriteSlots::new(4, 1, Counter::default());
        let failover = slots.failover().await;
        let start = Instant::now();
        assert!(slots.routine().await.is_some());
        assert_eq!(start.elapsed(), FAILOVER_PAUSE);
        drop(failover);
        let start = Instant::now();
        assert!(slots.routine().await.is_some());
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failover_that_ends_lets_routine_writes_go_at_once() {
        let slots = WriteSlots::new(1, 1, Counter::default());
        let failover = slots.failover().await;
        let start = Instant::now();
        let write = slots.routine();
        tokio::pin!(write);
        assert!(futures::poll!(write.as_mut()).is_pending());
        tokio::time::advance(Duration::from_millis(100)).await;
        // A failover's reconcile that is cancelled counts off all the same.
        drop(failover);
        assert!(write.await.is_some());
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert_eq!(slots.failovers.borrow().n, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn held_time_counts_overlapping_failovers_once() {
        let held = Counter::<f64, AtomicU64>::default();
        let slots = WriteSlots::new(1, 2, held.clone());
        let first = slots.failover().await;
        tokio::time::advance(Duration::from_millis(100)).await;
        let second = slots.failover().await;
        tokio::time::advance(Duration::from_millis(100)).await;
        drop(first);
        assert_eq!(held.get(), 0.0, "a failover still moves leadership");
        tokio::time::advance(Duration::from_millis(50)).await;
        drop(second);
        assert!((held.get() - 0.25).abs() < 1e-9, "held {}", held.get());
        // Time with no failover adds nothing.
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(slots.failover().await);
        assert!((held.get() - 0.25).abs() < 1e-9, "held {}", held.get());
    }

    #[tokio::test(start_paused = true)]
    async fn failovers_beyond_their_slots_wait_but_hold_routine_writes_at_once() {
        let slots = WriteSlots::new(1, 1, Counter::default());
        let first = slots.failover().await;
        let second = slots.failover();
        tokio::pin!(second);
        assert!(futures::poll!(second.as_mut()).is_pending());
        drop(first);
        // The waiting failover already counts: routine writes wait for it too.
        assert_eq!(slots.failovers.borrow().n, 1);
        let start = Instant::now();
        let routine = slots.routine();
        tokio::pin!(routine);
        assert!(futures::poll!(routine.as_mut()).is_pending());
        let second = second.await;
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(futures::poll!(routine.as_mut()).is_pending());
        drop(second);
        assert!(routine.await.is_some());
        assert_eq!(start.elapsed(), Duration::from_millis(10));
    }
}
