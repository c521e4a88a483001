//! Where the repository and the local cluster's state are.

use std::path::PathBuf;

/// The repository's root: paths under target/ and config/ are relative to it.
pub fn repo_root() -> PathBuf {
    let testkit = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    testkit
        .ancestors()
        .nth(2)
        .expect("crates/testkit in the repository")
        .to_path_buf()
}

/// Path of the admin kubeconfig written by `make cluster-up`; with `PODIUM_CLUSTER=<x>`,
/// the one of the separate cluster `PODIUM_CLUSTER=<x> e2e/cluster/up.sh` started.
pub fn kubeconfig_path() -> PathBuf {
    cluster_dir().join("kubeconfig")
}

/// State directory of the cluster the tests run against (see `e2e/cluster/up.sh`).
pub fn cluster_dir() -> PathBuf {
    let dir = match std::env::var("PODIUM_CLUSTER") {
        Ok(name) if !name.is_empty() => format!("target/cluster-{name}"),
        _ => "target/cluster".to_string(),
    };
    repo_root().join(dir)
}
