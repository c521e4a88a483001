//! The Kubernetes API client podium uses: kube's own layers over a connector with TCP_NODELAY.
//!
//! kube's default connector leaves Nagle's algorithm on. A request whose headers and body leave
//! in separate small segments then waits for the server's delayed ACK (40 ms on Linux) before
//! its second segment is sent — a stall larger than a whole failover. Go's client-go sets
//! TCP_NODELAY on every connection; so does this one.
//!
//! kube's default stack can also retry 429/503/504 answers for a long time (honouring
//! Retry-After). That layer is left out on purpose: a conditional write re-sent long after its
//! fence check could land after this replica lost the controller Lease. Retries are the
//! controller's error policy, which decides again from fresh state.

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::{Client, Config};
use tower::{BoxError, ServiceBuilder};

/// Why a client could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// kube could not build a layer (TLS, authentication, headers).
    #[error("building the API client: {0}")]
    Kube(#[from] kube::Error),
    /// The kubeconfig names a proxy, which this client does not support.
    #[error("the kubeconfig names a proxy ({0}); podium connects to the API server directly")]
    Proxy(String),
}

/// A client for `config` with the stack kube builds by default (base URI, authentication,
/// extra headers, connect/read/write timeouts), whose TCP connections send without delay.
pub fn build(config: Config) -> Result<Client, ClientError> {
    if let Some(proxy) = &config.proxy_url {
        return Err(ClientError::Proxy(proxy.to_string()));
    }
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let tls = config.rustls_https_connector_with_connector(tcp)?;
    let mut timed = hyper_timeout::TimeoutConnector::new(tls);
    timed.set_connect_timeout(config.connect_timeout);
    timed.set_read_timeout(config.read_timeout);
    timed.set_write_timeout(config.write_timeout);
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(timed);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http);
    Ok(Client::new(service, config.default_namespace))
}
