//! The API server's own metrics: request counters and durations, read over HTTP.

use kube::Client;
use podium_bench::metrics::{Counts, api_server_sums};

/// API server request counters by (verb, resource, subresource).
pub async fn request_counts(client: &Client) -> Counts {
    api_server_sums(
        &api_server_metrics(client).await,
        "apiserver_request_total{",
    )
}

/// The API server's own request durations at one instant, from one read of its metrics.
pub struct Durations {
    /// Seconds spent on PATCHes of pods, and their count.
    pub pod_patches: (f64, f64),
    /// Seconds spent on writes of every kind, every client's: over a window, the mean number
    /// of writes it was serving at once (Little's law).
    pub writes: f64,
}

impl Durations {
    pub async fn now(client: &Client) -> Self {
        let text = api_server_metrics(client).await;
        let sum = api_server_sums(&text, "apiserver_request_duration_seconds_sum{");
        let count = api_server_sums(&text, "apiserver_request_duration_seconds_count{");
        let key = ("PATCH".to_string(), "pods".to_string(), String::new());
        let writes = sum
            .iter()
            .filter(|((verb, _, _), _)| {
                matches!(verb.as_str(), "PATCH" | "POST" | "PUT" | "DELETE")
            })
            .map(|(_, v)| v)
            .sum();
        Self {
            pod_patches: (
                sum.get(&key).copied().unwrap_or(0.0),
                count.get(&key).copied().unwrap_or(0.0),
            ),
            writes,
        }
    }

    /// The mean time the API server took over a PATCH of a pod since `self`, in ms.
    pub fn mean_patch_ms(&self, later: &Self) -> f64 {
        let seconds = later.pod_patches.0 - self.pod_patches.0;
        let count = later.pod_patches.1 - self.pod_patches.1;
        (seconds / count * 10_000.0).round() / 10.0
    }
}

/// The API server's metrics, as text.
pub async fn api_server_metrics(client: &Client) -> String {
    client
        .request_text(http::Request::get("/metrics").body(vec![]).unwrap())
        .await
        .expect("apiserver /metrics")
}
