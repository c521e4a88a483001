//! How the caches fill: a streaming list where the API server serves one, else a paged list.
//!
//! A streaming list (WatchList, on by default since Kubernetes 1.34) sends the initial objects
//! one by one as watch events, from the API server's watch cache, so neither side holds a whole
//! page of 500 pods at once. A server without it (the feature turned off) refuses the request,
//! and podium lists in pages, as before.

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::api::{Api, WatchEvent, WatchParams};
use kube::runtime::watcher::{self, watcher};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

/// A label selector no object carries: the probe asks for the stream, not for objects.
const NOTHING: &str = "podium.dev/list-probe-matches-nothing=x";
/// How long the probe waits for the server's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the initial list of a watch is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMode {
    /// One watch that streams the initial objects (`sendInitialEvents`).
    Streaming,
    /// Paged lists, then a watch.
    Paged,
}

/// A watch of `api` with `config`, filled from a streaming list in `Streaming` mode; once the
/// server refuses a streaming list (a control plane whose servers differ, or the feature
/// turned off later), it fills from paged lists for good, as if the probe had said so.
pub fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    mode: ListMode,
) -> BoxStream<'static, watcher::Result<watcher::Event<K>>>
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    if mode == ListMode::Paged {
        return watcher(api, config).boxed();
    }
    let first = watcher(api.clone(), config.clone().streaming_lists()).boxed();
    futures::stream::unfold(
        (first, Some((api, config))),
        |(mut stream, fallback)| async move {
            let item = stream.next().await?;
            let refusal = matches!(&item, Err(e) if refused(e));
            match (refusal, fallback) {
                (true, Some((api, config))) => {
                    warn!("the API server refused a streaming list; filling from paged lists");
                    Some((item, (watcher(api, config).boxed(), None)))
                }
                (_, fallback) => Some((item, (stream, fallback))),
            }
        },
    )
    .boxed()
}

/// The API server refused the request itself (as one without streaming lists does), rather
/// than failing to answer it.
fn refused(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchStartFailed(kube::Error::Api(s)) => matches!(s.code, 400 | 422),
        watcher::Error::WatchError(s) => matches!(s.code, 400 | 422),
        _ => false,
    }
}

/// The oldest Kubernetes minor podium is built and tested for (k8s-openapi's `v1_35`).
pub const OLDEST_MINOR: u32 = 35;

/// Warns when the API server is older than [`OLDEST_MINOR`]: podium runs there (its caches fill
/// from paged lists), but untested.
pub async fn check_version(client: &kube::Client) {
    match client.apiserver_version().await {
        Ok(v) => {
            let minor: Option<u32> = v.minor.trim_end_matches('+').parse().ok();
            if v.major == "1" && minor.is_some_and(|m| m < OLDEST_MINOR) {
                warn!(server = %v.git_version, oldest = %format!("1.{OLDEST_MINOR}"),
                      "the API server is older than any Kubernetes podium is tested on");
            } else {
                info!(server = %v.git_version, "API server");
            }
        }
        Err(e) => warn!(error = %e, "cannot read the API server's version"),
    }
}

/// Asks the API server for an (empty) streaming list of `api`'s objects: `Streaming` when it
/// answers with the bookmark that ends the initial events, `Paged` otherwise.
pub async fn probe<K>(api: &Api<K>) -> ListMode
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let params = WatchParams::streaming_lists()
        .labels(NOTHING)
        .timeout(PROBE_TIMEOUT.as_secs() as u32);
    let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut stream = match api.watch(&params, "0").await {
            Ok(s) => s.boxed(),
            Err(e) => return Err(e.to_string()),
        };
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(WatchEvent::Bookmark(b))
                    if b.metadata
                        .annotations
                        .contains_key("k8s.io/initial-events-end") =>
                {
                    return Ok(());
                }
                Ok(WatchEvent::Error(status)) => return Err(status.message),
                Err(e) => return Err(e.to_string()),
                Ok(_) => {}
            }
        }
        Err("the stream ended without its initial-events bookmark".to_string())
    })
    .await;
    match answer {
        Ok(Ok(())) => {
            info!("the API server streams lists: caches fill from one watch each");
            ListMode::Streaming
        }
        Ok(Err(reason)) => {
            warn!(%reason, "no streaming list (refused, or the request failed); caches fill from paged lists");
            ListMode::Paged
        }
        Err(_) => {
            warn!("no answer to a streaming list in time; caches fill from paged lists");
            ListMode::Paged
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use k8s_openapi::api::core::v1::Pod;
    use kube::client::Body;

    /// A client whose API server answers every request with `code` and `body`; the query
    /// strings it was sent go to `seen`.
    fn answering(
        code: u16,
        body: &'static str,
    ) -> (kube::Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            log.lock()
                .unwrap()
                .push(req.uri().query().unwrap_or_default().to_string());
            async move {
                let response = Response::builder()
                    .status(code)
                    .body(Body::from(body.as_bytes().to_vec()));
                Ok::<_, std::convert::Infallible>(response.unwrap())
            }
        });
        (kube::Client::new(service, "default"), seen)
    }

    #[tokio::test]
    async fn a_server_that_streams_lists_answers_with_the_initial_events_bookmark() {
        let bookmark = r#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"7","annotations":{"k8s.io/initial-events-end":"true"}}}}
"#;
        let (client, seen) = answering(200, bookmark);
        assert_eq!(probe(&Api::<Pod>::all(client)).await, ListMode::Streaming);
        let query = seen.lock().unwrap().join("&");
        assert!(query.contains("sendInitialEvents=true"), "{query}");
        assert!(
            query.contains("resourceVersionMatch=NotOlderThan"),
            "{query}"
        );
    }

    #[tokio::test]
    async fn a_server_that_refuses_streaming_lists_gets_paged_lists() {
        let refusal = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled","reason":"Invalid","code":422}"#;
        let (client, _) = answering(422, refusal);
        assert_eq!(probe(&Api::<Pod>::all(client)).await, ListMode::Paged);
    }

    #[tokio::test]
    async fn a_bookmark_that_does_not_end_the_initial_events_is_not_enough() {
        let bookmark = r#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"7"}}}
"#;
        let (client, _) = answering(200, bookmark);
        assert_eq!(probe(&Api::<Pod>::all(client)).await, ListMode::Paged);
    }

    #[tokio::test]
    async fn a_refused_streaming_list_turns_the_watch_to_paged_lists() {
        let refusal = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"no","reason":"Invalid","code":422}"#;
        let (client, seen) = answering(422, refusal);
        let mut events = watch(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            ListMode::Streaming,
        );
        assert!(
            matches!(events.next().await, Some(Err(_))),
            "the refusal is reported"
        );
        // The next attempt lists in pages (a list, not a watch): Init, then the failed list.
        assert!(matches!(
            events.next().await,
            Some(Ok(watcher::Event::Init))
        ));
        assert!(matches!(events.next().await, Some(Err(_))));
        let queries = seen.lock().unwrap().clone();
        assert!(queries[0].contains("sendInitialEvents=true"), "{queries:?}");
        assert!(
            queries.len() == 2
                && !queries[1].contains("watch=true")
                && !queries[1].contains("sendInitialEvents"),
            "{queries:?}"
        );
    }

    #[tokio::test]
    async fn a_stream_without_the_bookmark_gets_paged_lists() {
        let (client, _) = answering(200, "");
        assert_eq!(probe(&Api::<Pod>::all(client)).await, ListMode::Paged);
    }
}
