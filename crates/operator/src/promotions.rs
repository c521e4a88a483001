//! Promotion bookkeeping: candidates whose promotion keeps failing are passed over for a while.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use podium_election::Member;

/// A candidate whose promotion failed this many times in a row is passed over…
pub const PROMOTION_TRIES: u32 = 3;
/// …for this long, then tried again.
pub const PASSED_OVER_FOR: Duration = Duration::from_secs(300);

/// Failed promotions per pod UID: how many in a row, and when the last one failed.
#[derive(Default)]
pub struct Promotions {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Promotions {
    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Members whose promotion keeps failing, to be passed over for now.
    pub fn passed_over(&self, members: &[Member]) -> Vec<String> {
        let failures = self.failures();
        members
            .iter()
            .filter(|m| {
                failures
                    .get(&m.uid)
                    .is_some_and(|(n, at)| *n >= PROMOTION_TRIES && at.elapsed() < PASSED_OVER_FOR)
            })
            .map(|m| m.name.clone())
            .collect()
    }

    /// Forgets the failures of a pod whose promotion landed.
    pub fn succeeded(&self, uid: &str) {
        self.failures().remove(uid);
    }

    /// Counts a failed promotion; true when this failure passes the pod over.
    pub fn failed(&self, uid: &str) -> bool {
        let mut failures = self.failures();
        if failures.len() > 4096 {
            failures.retain(|_, (_, at)| at.elapsed() < PASSED_OVER_FOR);
        }
        let entry = failures
            .entry(uid.to_string())
            .or_insert((0, Instant::now()));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = Instant::now();
        entry.0 == PROMOTION_TRIES
    }
}
