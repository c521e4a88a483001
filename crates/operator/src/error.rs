//! The controller's error type: what can go wrong in one reconcile, each retried by the error policy.

/// What can go wrong while applying a plan; each is retried by the error policy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pod label or annotation write failed.
    #[error("writing role {role} on pod {namespace}/{pod}: {}", brief(source))]
    PodWrite {
        namespace: String,
        pod: String,
        role: &'static str,
        #[source]
        source: kube::Error,
    },
    /// The status write failed.
    #[error("writing status of {namespace}/{group}: {}", brief(source))]
    Status {
        namespace: String,
        group: String,
        #[source]
        source: kube::Error,
    },
    /// Adding or removing the finalizer, or clearing the handoff annotation, failed.
    #[error("updating metadata of {namespace}/{group}: {}", brief(source))]
    Metadata {
        namespace: String,
        group: String,
        #[source]
        source: kube::Error,
    },
    /// Publishing the Lease mirror failed.
    #[error("publishing lease {namespace}/{group}: {}", brief(source))]
    Lease {
        namespace: String,
        group: String,
        #[source]
        source: kube::Error,
    },
    /// Creating, reading, updating or deleting a Service or EndpointSlice of the owned route failed.
    #[error("writing {kind} {namespace}/{name}: {}", brief(source))]
    Route {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Reading a pod the cache does not show failed.
    #[error("reading pod {namespace}/{pod}: {}", brief(source))]
    PodRead {
        namespace: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    /// The pod or group cache never became ready.
    #[error("waiting for the {0} cache: {1}")]
    Cache(&'static str, String),
    /// The object has no namespace; ElectionGroups are namespaced, so the API server sent something odd.
    #[error("ElectionGroup {0} has no namespace")]
    NoNamespace(String),
    /// This replica does not hold the controller Lease by its own clock; it writes nothing.
    #[error("not the active replica: the controller lease is not held")]
    NotLeading,
    /// Every attempt conflicted with a concurrent change.
    #[error("{namespace}/{group} kept changing while being reconciled; retrying")]
    Contended { namespace: String, group: String },
}

/// The API server's own message, without the Debug dump kube's Display adds.
pub(crate) fn brief(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.reason),
        other => other.to_string(),
    }
}

impl Error {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::PodWrite { source, .. }
            | Error::Status { source, .. }
            | Error::Metadata { source, .. }
            | Error::PodRead { source, .. }
            | Error::Lease { source, .. }
            | Error::Route { source, .. } => match source {
                kube::Error::Api(s) if s.code == 403 => "forbidden",
                kube::Error::Api(s) if s.code == 409 => "conflict",
                kube::Error::Api(s) if s.code == 404 => "not_found",
                kube::Error::Api(_) => "api",
                _ => "transport",
            },
            Error::Cache(..) => "cache",
            Error::NoNamespace(_) => "no_namespace",
            Error::NotLeading => "not_leading",
            Error::Contended { .. } => "contended",
        }
    }
}

/// This replica does not hold the controller Lease at this instant.
#[derive(Debug)]
pub struct NotLeading;

impl From<NotLeading> for Error {
    fn from(_: NotLeading) -> Self {
        Error::NotLeading
    }
}
