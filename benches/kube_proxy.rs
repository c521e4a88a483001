//! kube-proxy on the real node, as its own endpoints report it: its mode and rate limits
//! (`/configz`) and the histograms that say where a traffic switch's time goes (`/metrics`).

use podium_bench::metrics::Histo;
use podium_testkit::support::http_request;
use serde_json::{Value, json};

/// kube-proxy's metrics endpoint on the real node (e2e/node/up.sh).
const PROXY_METRICS: &str = "127.0.0.1:10249";

/// The series of kube-proxy's histograms for the cluster's one address family.
const IPV4: &str = "ip_family=\"IPv4\"";

/// kube-proxy's histograms, as read now; `None` when its metrics cannot be read.
pub async fn proxy_histograms() -> Option<[Histo; 2]> {
    let (code, text) = http_request(PROXY_METRICS, "GET", "/metrics").await?;
    (code == 200).then(|| {
        [
            Histo::parse(
                &text,
                "kubeproxy_network_programming_duration_seconds",
                IPV4,
            ),
            Histo::parse(&text, "kubeproxy_sync_proxy_rules_duration_seconds", IPV4),
        ]
    })
}

/// What kube-proxy observed since `before`, null unless both reads worked: from each slice
/// change's trigger time to its rules programmed (every slice it programmed meanwhile, both
/// routes' and the settling between trials; the controller stamps a pod's change time, podium
/// its write time, so the two routes' samples do not start from the same event), and each
/// rule sync.
pub fn proxy_since(before: &Option<[Histo; 2]>, now: &Option<[Histo; 2]>) -> Value {
    let (Some(before), Some(now)) = (before, now) else {
        return Value::Null;
    };
    json!({
        "network_programming": now[0].since(&before[0]).summary(),
        "sync_proxy_rules": now[1].since(&before[1]).summary(),
    })
}

/// kube-proxy's mode and rate limits, from its /configz.
pub async fn proxy_config() -> Value {
    let text = http_request(PROXY_METRICS, "GET", "/configz").await;
    let cfg: Value = text
        .and_then(|r| serde_json::from_str(&r.1).ok())
        .unwrap_or(Value::Null);
    let c = &cfg["kubeproxy.config.k8s.io"];
    let mode = c["mode"].as_str().unwrap_or_default();
    let limits = if mode == "nftables" {
        &c["nftables"]
    } else {
        &c["iptables"]
    };
    json!({"mode": c["mode"], "minSyncPeriod": limits["minSyncPeriod"], "syncPeriod": limits["syncPeriod"]})
}
