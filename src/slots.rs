//! Who goes first at a busy API server: failovers, then everything else.
//!
//! A request waits behind those already in flight at a busy API server, so what podium keeps in
//! flight decides how long a failover's requests take. A failover's writes take no slot; routine
//! writes and Events share `--concurrency` slots, and while a failover is being reconciled they
//! wait (briefly) so that it meets only those already sent.

use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit, watch};

/// The longest a routine write waits for failovers to finish: a stuck one must not stop the rest.
const FAILOVER_PAUSE: Duration = Duration::from_secs(1);

/// Write slots shared by routine reconciles and the Event workers.
pub struct WriteSlots {
    routine: Semaphore,
    /// Failovers being reconciled now.
    failovers: watch::Sender<usize>,
}

impl WriteSlots {
    /// `n` routine writes (Events included) in flight at once.
    pub fn new(n: usize) -> Self {
        Self {
            routine: Semaphore::new(n.max(1)),
            failovers: watch::Sender::new(0),
        }
    }

    /// Counts a failover's reconcile until the guard is dropped (also when it is cancelled).
    pub fn failover(&self) -> Counted<'_> {
        Counted::start(&self.failovers)
    }

    /// Waits for a slot for one routine write or Event: after any running failover (up to
    /// [`FAILOVER_PAUSE`]). Hold the permit for the length of one request.
    pub async fn routine(&self) -> Option<SemaphorePermit<'_>> {
        self.pause_for_failovers().await;
        self.routine.acquire().await.ok()
    }

    async fn pause_for_failovers(&self) {
        let mut rx = self.failovers.subscribe();
        let _ = tokio::time::timeout(FAILOVER_PAUSE, rx.wait_for(|n| *n == 0)).await;
    }
}

/// One unit of a counter, taken back when dropped.
pub struct Counted<'a>(&'a watch::Sender<usize>);

impl<'a> Counted<'a> {
    fn start(counter: &'a watch::Sender<usize>) -> Self {
        counter.send_modify(|n| *n = n.saturating_add(1));
        Self(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn routine_writes_wait_for_a_failover_but_not_for_ever() {
        let slots = WriteSlots::new(4);
        let failover = slots.failover();
        let start = tokio::time::Instant::now();
        assert!(slots.routine().await.is_some());
        assert_eq!(start.elapsed(), FAILOVER_PAUSE);
        drop(failover);
        let start = tokio::time::Instant::now();
        assert!(slots.routine().await.is_some());
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failover_that_ends_lets_routine_writes_go_at_once() {
        let slots = WriteSlots::new(1);
        let failover = slots.failover();
        let start = tokio::time::Instant::now();
        let write = slots.routine();
        tokio::pin!(write);
        assert!(futures::poll!(write.as_mut()).is_pending());
        tokio::time::advance(Duration::from_millis(100)).await;
        // A failover's reconcile that is cancelled counts off all the same.
        drop(failover);
        assert!(write.await.is_some());
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert_eq!(*slots.failovers.borrow(), 0);
    }
}
