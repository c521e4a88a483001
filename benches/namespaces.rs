//! Namespaces made by the bench, and their removal.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use podium_api::ElectionGroup;
use podium_testkit::support::{block_on_side_thread, client};
use serde_json::json;

use crate::counting::count_until;

/// Waits (up to 60 s) until a namespace deleted in the background is gone, so that its
/// deletion's writes do not land in the next measurement.
pub async fn wait_ns_gone(name: &str) {
    let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client().await);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && api.get_opt(name).await.ok().flatten().is_some() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A short name part that differs between runs.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:x}", std::process::id() % 4096, nanos % 65536)
}

/// Namespaces made for one scale run. Dropped (pass or fail), they are deleted, each group's
/// finalizer stripped first since no operator is left to remove it.
pub struct BenchNamespaces {
    client: Client,
    names: Vec<String>,
}

impl BenchNamespaces {
    /// Creates the namespaces at `concurrency` and waits until each has its default
    /// ServiceAccount (pods cannot be created before).
    pub async fn create(client: &Client, names: Vec<String>, concurrency: usize) -> Self {
        let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
        let made = Self {
            client: client.clone(),
            names: names.clone(),
        };
        stream::iter(names)
            .map(|name| {
                let api = api.clone();
                async move {
                    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
                    api.create(&PostParams::default(), &ns)
                        .await
                        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await;
        let in_run = |sa: &k8s_openapi::api::core::v1::ServiceAccount| {
            made.names.contains(&sa.namespace().unwrap_or_default())
        };
        count_until(
            &Api::all(client.clone()),
            watcher::Config::default().fields("metadata.name=default"),
            made.names.len(),
            in_run,
            Instant::now(),
            Duration::from_secs(300),
            "default ServiceAccounts",
        )
        .await;
        made
    }

    /// Deletes the namespaces and waits up to `timeout` until they are gone, so that the next
    /// run neither shares the nodes' pod capacity with their pods nor pays for their deletion.
    pub async fn delete_and_wait(mut self, timeout: Duration) {
        let names = std::mem::take(&mut self.names);
        delete_namespaces(self.client.clone(), names.clone()).await;
        let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client.clone());
        let deadline = Instant::now() + timeout;
        loop {
            let left = api
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|n| names.contains(&n.name_any()))
                        .count()
                })
                .unwrap_or(names.len());
            if left == 0 {
                return;
            }
            if Instant::now() > deadline {
                println!("  {left} bench namespaces still terminating after {timeout:?}");
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl Drop for BenchNamespaces {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        if !names.is_empty() {
            block_on_side_thread(async move { delete_namespaces(client().await, names).await });
        }
    }
}

/// Strips the finalizer of every group in `names` (no operator is left to remove it), then
/// deletes the namespaces.
pub async fn delete_namespaces(client: Client, names: Vec<String>) {
    stream::iter(names)
        .map(|name| {
            let client = client.clone();
            async move {
                strip_finalizers(&Api::namespaced(client.clone(), &name)).await;
                let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

pub async fn strip_finalizers(api: &Api<ElectionGroup>) {
    let gs = api.list(&ListParams::default()).await.unwrap().items;
    stream::iter(gs)
        .map(|g| {
            let api = api.clone();
            async move {
                let p = Patch::Merge(json!({"metadata": {"finalizers": null}}));
                let _ = api
                    .patch_metadata(&g.name_any(), &PatchParams::default(), &p)
                    .await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}
