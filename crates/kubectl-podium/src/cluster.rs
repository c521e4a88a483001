//! Talking to the cluster: the client from kubeconfig flags, reading the facts of a namespace,
//! and errors in words (not found, no permission).

use std::collections::BTreeSet;
use std::path::Path;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::SelectorExt;
use kube::{Client, Config, ResourceExt};
use podium_api::ElectionGroup;

use crate::facts::{Facts, PodFacts, selector};

/// Why a command failed; every variant is said in words and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist.
    #[error("{kind} {name:?} not found in namespace {namespace}")]
    NotFound {
        /// `ElectionGroup`, `pod`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The namespace looked in.
        namespace: String,
    },
    /// RBAC refused a request.
    #[error("no permission to {verb} {resource} in namespace {namespace}: {message}")]
    Forbidden {
        /// What was attempted.
        verb: &'static str,
        /// On what.
        resource: &'static str,
        /// The namespace.
        namespace: String,
        /// The API server's message.
        message: String,
    },
    /// The API server does not serve ElectionGroups.
    #[error(
        "the API server does not serve electiongroups.podium.dev: is podium's CRD installed? ({0})"
    )]
    NoCrd(String),
    /// The kubeconfig could not be used.
    #[error("kubeconfig: {0}")]
    Config(String),
    /// Any other failed request.
    #[error("{verb} {resource} in namespace {namespace}: {message}")]
    Api {
        /// What was attempted.
        verb: &'static str,
        /// On what.
        resource: &'static str,
        /// The namespace.
        namespace: String,
        /// What went wrong.
        message: String,
    },
    /// Writing the output failed.
    #[error("{0}")]
    Output(String),
}

/// A client and the namespace the command works in.
#[derive(Clone)]
pub struct Target {
    /// The API client.
    pub client: Client,
    /// `-n`, else the kubeconfig context's namespace, else `default`.
    pub namespace: String,
}

impl Target {
    /// Connects as kubectl would: `--kubeconfig`, else `$KUBECONFIG` or `~/.kube/config` (or
    /// the in-cluster config), with `--context` when given.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Self, Error> {
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..KubeConfigOptions::default()
        };
        let config = match kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path)
                    .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| Error::Config(e.to_string()))?
            }
            None if context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| Error::Config(e.to_string()))?,
            None => Config::infer()
                .await
                .map_err(|e| Error::Config(e.to_string()))?,
        };
        let namespace = namespace
            .map(str::to_string)
            .unwrap_or_else(|| config.default_namespace.clone());
        let client =
            podium_member::client::build(config).map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self { client, namespace })
    }

    /// The namespace's ElectionGroups.
    pub fn groups(&self) -> Api<ElectionGroup> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Turns a failed request into words.
    pub fn error(&self, e: kube::Error, verb: &'static str, resource: &'static str) -> Error {
        let namespace = self.namespace.clone();
        match e {
            kube::Error::Api(s) if s.code == 403 => Error::Forbidden {
                verb,
                resource,
                namespace,
                message: s.message,
            },
            kube::Error::Api(s)
                if s.code == 404
                    && resource.starts_with("electiongroup")
                    && s.message.contains("could not find the requested resource") =>
            {
                Error::NoCrd(s.message)
            }
            other => Error::Api {
                verb,
                resource,
                namespace,
                message: other.to_string(),
            },
        }
    }

    /// The group, or `NotFound`.
    pub async fn group(&self, name: &str) -> Result<ElectionGroup, Error> {
        match self.groups().get_opt(name).await {
            Ok(Some(g)) => Ok(g),
            Ok(None) => Err(self.not_found("ElectionGroup", name)),
            Err(e) => Err(self.error(e, "get", "electiongroups")),
        }
    }

    /// A `NotFound` in this namespace.
    pub fn not_found(&self, kind: &'static str, name: &str) -> Error {
        Error::NotFound {
            kind,
            name: name.to_string(),
            namespace: self.namespace.clone(),
        }
    }

    /// Reads the namespace: its groups (only `only` when given, which must exist), pods, the
    /// node Leases of the selected pods, and PromotionFailed Events. Groups that cannot be
    /// parsed are left out and returned by name with the reason.
    pub async fn facts(&self, only: Option<&str>) -> Result<(Facts, Vec<String>), Error> {
        let ar = ApiResource::erase::<ElectionGroup>(&());
        let dynamic: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &ar);
        let listed = dynamic
            .list(&ListParams::default())
            .await
            .map_err(|e| self.error(e, "list", "electiongroups"))?;
        let mut groups = Vec::new();
        let mut skipped = Vec::new();
        for obj in listed.items {
            let name = obj.name_any();
            match obj.try_parse::<ElectionGroup>() {
                Ok(g) => groups.push(g),
                Err(e) => skipped.push(format!("ElectionGroup {name} could not be read: {e}")),
            }
        }
        if let Some(name) = only
            && !groups.iter().any(|g| g.name_any() == name)
        {
            return Err(self.not_found("ElectionGroup", name));
        }
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| self.error(e, "list", "pods"))?
            .items;
        let wanted: Vec<&ElectionGroup> = groups
            .iter()
            .filter(|g| only.is_none_or(|n| g.name_any() == n))
            .collect();
        let nodes: BTreeSet<String> = pods
            .iter()
            .map(PodFacts::of)
            .filter(|p| {
                wanted
                    .iter()
                    .any(|g| selector(g).is_some_and(|s| s.matches(&p.labels)))
            })
            .filter_map(|p| p.node)
            .collect();
        let mut facts = Facts {
            namespace: self.namespace.clone(),
            groups,
            pods,
            node_leases: Default::default(),
            node_leases_unread: None,
            promotion_failures: Vec::new(),
            events_unread: None,
            now: Timestamp::now(),
        };
        self.node_leases(&nodes, &mut facts).await;
        self.promotion_failures(only, &mut facts).await;
        facts.now = Timestamp::now();
        Ok((facts, skipped))
    }

    async fn node_leases(&self, nodes: &BTreeSet<String>, facts: &mut Facts) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        for node in nodes {
            match api.get_opt(node).await {
                Ok(Some(lease)) => {
                    let renewed = lease.spec.and_then(|s| s.renew_time).map(|t| t.0);
                    if let Some(at) = renewed {
                        facts.node_leases.insert(node.clone(), at);
                    }
                }
                Ok(None) => {}
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    facts.node_leases_unread =
                        Some("no permission to get leases in kube-node-lease".into());
                    return;
                }
                Err(e) => {
                    facts.node_leases_unread = Some(e.to_string());
                    return;
                }
            }
        }
    }

    async fn promotion_failures(&self, only: Option<&str>, facts: &mut Facts) {
        let mut fields = "involvedObject.kind=ElectionGroup,reason=PromotionFailed".to_string();
        if let Some(name) = only {
            fields.push_str(&format!(",involvedObject.name={name}"));
        }
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        match api.list(&ListParams::default().fields(&fields)).await {
            Ok(list) => {
                for e in list.items {
                    let at = e
                        .event_time
                        .as_ref()
                        .map(|t| t.0)
                        .or(e.last_timestamp.as_ref().map(|t| t.0))
                        .or(e.first_timestamp.as_ref().map(|t| t.0))
                        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
                    if let (Some(group), Some(message), Some(at)) =
                        (e.involved_object.name, e.message, at)
                    {
                        facts.promotion_failures.push((group, message, at));
                    }
                }
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                facts.events_unread = Some("no permission to list events".into());
            }
            Err(e) => facts.events_unread = Some(e.to_string()),
        }
    }
}
