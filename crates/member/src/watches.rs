//! Watch streams for state that must be known to be current: a watch that merely resumes after
//! an error sends nothing while nothing changes, so it cannot tell "nothing changed" from "the
//! API server is not answering". These start over with a fresh list instead.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::runtime::watcher;

/// The longest pause between two attempts of a failing watch.
pub const RETRY_MAX: Duration = Duration::from_secs(4);

/// A watch that starts over with a fresh list after every error, after a pause that doubles
/// from 250 ms up to [`RETRY_MAX`]. A watch that merely resumes sends nothing while nothing
/// changes, so only a completed list proves the API server answers again.
pub fn relisting<K, F>(make: F) -> impl Stream<Item = watcher::Result<watcher::Event<K>>>
where
    K: Send + 'static,
    F: Fn() -> BoxStream<'static, watcher::Result<watcher::Event<K>>> + Send + 'static,
{
    let inner = make();
    futures::stream::unfold(
        (make, inner, 0u32, false),
        |(make, mut inner, failures, restart)| async move {
            if restart {
                let doublings = failures.saturating_sub(1).min(5);
                let pause = Duration::from_millis(250u64.saturating_mul(1 << doublings));
                tokio::time::sleep(pause.min(RETRY_MAX)).await;
                inner = make();
            }
            let item = inner.next().await?;
            // Only a change streamed live proves the watch itself works: a server that lists but
            // fails every watch keeps the pause growing instead of relisting in a tight loop.
            let (failures, restart) = match &item {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => (0, false),
                Ok(_) => (failures, false),
                Err(_) => (failures.saturating_add(1), true),
            };
            Some((item, (make, inner, failures, restart)))
        },
    )
}
