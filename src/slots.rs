//! Who goes first at a busy API server: failovers, then the writes that elect and label, then
//! Events.
//!
//! A request waits behind those already in flight at a busy API server, so what podium keeps in
//! flight decides how long a failover's requests take. A failover's writes take no slot; while
//! one is being reconciled, other writes wait (briefly) so that it meets only those already sent.
//! Events are told last: they wait until no election write is waiting for a slot.

use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit, watch};

/// The longest a routine write waits for failovers to finish: a stuck one must not stop the rest.
const FAILOVER_PAUSE: Duration = Duration::from_secs(1);
/// The longest an Event waits for election writes: a controller that is never idle still tells.
const EVENT_YIELD: Duration = Duration::from_secs(10);

/// Write slots shared by routine reconciles and the Event workers.
pub struct WriteSlots {
    routine: Semaphore,
    /// Failovers being reconciled now.
    failovers: watch::Sender<usize>,
    /// Routine writes waiting for a slot.
    waiting: watch::Sender<usize>,
}

impl WriteSlots {
    /// `n` routine writes (Events included) in flight at once.
    pub fn new(n: usize) -> Self {
        Self {
            routine: Semaphore::new(n.max(1)),
            failovers: watch::Sender::new(0),
            waiting: watch::Sender::new(0),
        }
    }

    /// Counts a failover's reconcile until the guard is dropped (also when it is cancelled).
    pub fn failover(&self) -> Counted<'_> {
        Counted::start(&self.failovers)
    }

    /// Waits for a slot for one routine write: after any running failover (up to
    /// [`FAILOVER_PAUSE`]). Hold the permit for the length of one request.
    pub async fn routine(&self) -> Option<SemaphorePermit<'_>> {
        self.pause_for_failovers().await;
        let _waiting = Counted::start(&self.waiting);
        self.routine.acquire().await.ok()
    }

    /// Waits for a slot for one Event: after any running failover, and once no routine write is
    /// waiting for a slot (up to [`EVENT_YIELD`]).
    pub async fn event(&self) -> Option<SemaphorePermit<'_>> {
        self.pause_for_failovers().await;
        let mut waiting = self.waiting.subscribe();
        let _ = tokio::time::timeout(EVENT_YIELD, waiting.wait_for(|n| *n == 0)).await;
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
    async fn an_event_waits_while_a_routine_write_waits() {
        let slots = WriteSlots::new(1);
        let held = slots.routine().await.expect("the only slot");
        // A routine write now waits for the slot; an Event queued after it must not go first.
        let routine = slots.routine();
        let event = slots.event();
        tokio::pin!(routine, event);
        assert!(futures::poll!(routine.as_mut()).is_pending());
        assert_eq!(*slots.waiting.borrow(), 1);
        assert!(futures::poll!(event.as_mut()).is_pending());
        drop(held);
        let permit = routine.await.expect("the slot, first");
        assert_eq!(*slots.waiting.borrow(), 0);
        assert!(futures::poll!(event.as_mut()).is_pending());
        drop(permit);
        assert!(event.await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_goes_after_its_longest_wait_even_when_routine_writes_keep_waiting() {
        let slots = WriteSlots::new(1);
        let _waiting = Counted::start(&slots.waiting);
        let start = tokio::time::Instant::now();
        assert!(slots.event().await.is_some());
        assert_eq!(start.elapsed(), EVENT_YIELD);
    }

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
}
