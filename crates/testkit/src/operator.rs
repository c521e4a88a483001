//! The operator under test: a `podium run` process.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::paths::{kubeconfig_path, repo_root};

/// The `podium` binary to run: `PODIUM_BIN` when set, else the one Cargo built beside the test
/// or bench binary that is running (`<target>/<profile>/podium`, as `CARGO_BIN_EXE_podium`
/// names it: Cargo builds the package's binaries for its tests and benches).
pub fn podium_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PODIUM_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the running test binary's path");
    let mut dir = exe
        .parent()
        .expect("test binary in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(format!("podium{}", std::env::consts::EXE_SUFFIX))
}

/// A running `podium` operator process, killed when dropped.
pub struct Operator {
    child: Child,
}

impl Operator {
    /// Starts `podium run` scoped to a namespace, with extra arguments; logs go to
    /// `target/e2e-logs/<namespace>.log`.
    pub async fn start(namespace: &str, extra: &[&str]) -> Self {
        Self::start_with(namespace, &kubeconfig_path(), extra).await
    }

    /// Starts `podium run` with a given kubeconfig.
    pub async fn start_with(namespace: &str, kubeconfig: &std::path::Path, extra: &[&str]) -> Self {
        let dir = repo_root().join("target/e2e-logs");
        Self::start_logged(
            &dir.join(format!("{namespace}.log")),
            namespace,
            kubeconfig,
            extra,
        )
    }

    /// Starts `podium run` with a given kubeconfig, appending its output to `log`.
    pub fn start_logged(
        log: &std::path::Path,
        namespace: &str,
        kubeconfig: &std::path::Path,
        extra: &[&str],
    ) -> Self {
        Self::spawn(log, Some(namespace), kubeconfig, extra)
    }

    /// Starts `podium run` on every namespace (no `--namespace`), with extra arguments; logs go
    /// to `target/e2e-logs/<log_name>.log`. It acts on every ElectionGroup in the cluster.
    pub fn start_cluster_wide(log_name: &str, extra: &[&str]) -> Self {
        let dir = repo_root().join("target/e2e-logs");
        Self::spawn(
            &dir.join(format!("{log_name}.log")),
            None,
            &kubeconfig_path(),
            extra,
        )
    }

    /// Starts `podium run`, scoped to `namespace` if given, appending its output to `log`.
    fn spawn(
        log: &std::path::Path,
        namespace: Option<&str>,
        kubeconfig: &std::path::Path,
        extra: &[&str],
    ) -> Self {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).expect("log dir");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        // PODIUM_BIN runs another build under the same harness (an A/B comparison in the bench).
        let mut cmd = Command::new(podium_bin());
        cmd.arg("run").arg("--kubeconfig").arg(kubeconfig);
        if let Some(namespace) = namespace {
            cmd.arg("--namespace").arg(namespace);
        }
        cmd.args(extra)
            .env(
                "RUST_LOG",
                std::env::var("PODIUM_E2E_LOG").unwrap_or_else(|_| "info,podium=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true);
        if !extra.iter().any(|a| a.starts_with("--http-addr")) {
            cmd.args(["--http-addr", "127.0.0.1:0"]);
        }
        Self {
            child: cmd.spawn().expect("start podium"),
        }
    }

    /// Stops the process with SIGKILL and waits for it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }

    /// Waits up to `timeout` for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(|s| s.ok())
            .and_then(|s| s.code())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
