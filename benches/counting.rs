//! Creating many objects, and counting them as a watch sees them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use podium_testkit::support::pod_ready;
use serde_json::{Value, json};

/// Creates `n` pods at `concurrency`, the i-th from `manifest(i)` (its namespace and
/// manifest), and waits until the `selector` pods that `pods` lists number `n` Ready ones.
pub async fn create_ready_pods(
    pods: &Api<Pod>,
    selector: &str,
    n: usize,
    concurrency: usize,
    timeout: Duration,
    manifest: impl Fn(usize) -> (String, Pod),
) {
    let client = pods.clone().into_client();
    stream::iter((0..n).map(manifest))
        .map(|(ns, p)| {
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            async move {
                api.create(&PostParams::default(), &p).await.unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let cfg = watcher::Config::default().labels(selector);
    count_until(
        pods,
        cfg,
        n,
        pod_ready,
        Instant::now(),
        timeout,
        "pods ready",
    )
    .await;
}

/// Watches the objects `api` lists and keeps count, event by event, of those `ok` holds for
/// (no recount of the lot per event: pods may number 50,000). Until the count reaches `n`,
/// records `[seconds since start, count]` every 500 ms, and once more at the end; returns
/// those samples. Panics after `timeout`.
pub async fn count_until<K>(
    api: &Api<K>,
    cfg: watcher::Config,
    n: usize,
    ok: impl Fn(&K) -> bool,
    start: Instant,
    timeout: Duration,
    what: &str,
) -> Vec<Value>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let events = watcher(api.clone(), cfg).default_backoff();
    let mut events = std::pin::pin!(events);
    let (mut live, mut fresh) = (HashMap::new(), None::<HashMap<_, bool>>);
    let mut count = 0;
    let sample = |count: usize| {
        json!([
            (start.elapsed().as_secs_f64() * 100.0).round() / 100.0,
            count
        ])
    };
    let mut samples = vec![];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let deadline = tokio::time::Instant::now() + timeout;
    while count < n {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(watcher::Event::Init)) => fresh = Some(HashMap::new()),
                Some(Ok(watcher::Event::InitApply(o))) => {
                    fresh.get_or_insert_default().insert(ObjectRef::from_obj(&o), ok(&o));
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    live = fresh.take().unwrap_or_default();
                    count = live.values().filter(|v| **v).count();
                }
                Some(Ok(watcher::Event::Apply(o))) => {
                    let now = ok(&o);
                    if live.insert(ObjectRef::from_obj(&o), now) == Some(true) {
                        count -= 1;
                    }
                    count += usize::from(now);
                }
                Some(Ok(watcher::Event::Delete(o))) => {
                    if live.remove(&ObjectRef::from_obj(&o)) == Some(true) {
                        count -= 1;
                    }
                }
                // The watcher lists again after a backoff.
                Some(Err(_)) => {}
                None => panic!("the watch for {what} ended"),
            },
            _ = tick.tick() => samples.push(sample(count)),
            _ = tokio::time::sleep_until(deadline) => {
                panic!("timed out after {timeout:?} waiting for {what}: {count} of {n}")
            }
        }
    }
    samples.push(sample(count));
    samples
}
