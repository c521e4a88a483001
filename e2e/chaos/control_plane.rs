//! Restarts of the chaos cluster's kube-apiserver and etcd.
//!
//! kwokctl (binary runtime) starts each component as a detached process and keeps its pid
//! in `<state>/kwok/clusters/<name>/pids/<component>.pid`; it can stop and start a whole
//! cluster but not one component. So a restart reads the component's command line, working
//! directory, environment and log file from `/proc/<pid>`, kills it with SIGKILL (a crash,
//! not a shutdown), starts the same command line detached, and writes the new pid back so
//! that `e2e/cluster/down.sh` still stops it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cluster_dir;

/// The chaos cluster's control plane.
pub struct ControlPlane {
    pids: PathBuf,
}

/// What `/proc` tells about a running component.
struct Process {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    log: PathBuf,
}

impl ControlPlane {
    /// The control plane of the cluster named by `PODIUM_CLUSTER`; refuses the shared
    /// default cluster, whose restarts would break the other tests using it.
    pub fn from_env() -> Self {
        let cluster = std::env::var("PODIUM_CLUSTER").unwrap_or_default();
        assert!(
            !cluster.is_empty(),
            "chaos restarts the API server and etcd: run it on its own cluster \
             (PODIUM_CLUSTER=chaos, as `make chaos` does)"
        );
        let pids = cluster_dir().join(format!("kwok/clusters/podium-{cluster}/pids"));
        assert!(
            pids.is_dir(),
            "{} missing: is the cluster up?",
            pids.display()
        );
        Self { pids }
    }

    /// Kills `component` (`kube-apiserver` or `etcd`) with SIGKILL and starts it again with
    /// the same command line; returns once the new process runs.
    pub async fn restart(&self, component: &str) -> Result<(), String> {
        let pid_file = self.pids.join(format!("{component}.pid"));
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("{}: {e}", pid_file.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        let process = Process::read(pid)?;
        signal(pid, "-KILL");
        wait_gone(pid, Duration::from_secs(10)).await?;
        // The dying process may hold its listening ports for a moment after it is gone
        // from the process table's point of view; a start that fails to bind is retried.
        for _ in 0..10 {
            let new_pid = process.spawn_detached()?;
            // Without a newline, as kwokctl writes it: `kwokctl delete cluster` cannot
            // parse one with a newline and would leave the process running.
            std::fs::write(&pid_file, new_pid.to_string())
                .map_err(|e| format!("{}: {e}", pid_file.display()))?;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            if alive(new_pid) {
                return Ok(());
            }
        }
        Err(format!(
            "{component} exits at once after its restart; see its log"
        ))
    }
}

impl Process {
    fn read(pid: u32) -> Result<Self, String> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let nul_split = |file: &str| -> Result<Vec<String>, String> {
            let raw =
                std::fs::read(proc.join(file)).map_err(|e| format!("{file} of {pid}: {e}"))?;
            Ok(raw
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect())
        };
        let argv = nul_split("cmdline")?;
        let env = nul_split("environ")?
            .into_iter()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.into(), v.into())))
            .collect();
        let link = |name: &str| {
            std::fs::read_link(proc.join(name)).map_err(|e| format!("{name} of {pid}: {e}"))
        };
        Ok(Self {
            argv,
            env,
            cwd: link("cwd")?,
            log: link("fd/2")?,
        })
    }

    /// Starts the command through `sh`, which exits at once: the component is reparented
    /// like the original and outlives the test process, until `down.sh` stops it.
    fn spawn_detached(&self) -> Result<u32, String> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(r#"log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!"#)
            .arg("sh")
            .arg(&self.log)
            .args(&self.argv)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("start {}: {e}", self.argv[0]))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| format!("start {}: {e}", self.argv[0]))
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// The process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state field follows the parenthesised command name.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// Waits until the process is gone (or a zombie nobody reaps yet) and none of its threads
/// is still exiting.
async fn wait_gone(pid: u32, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
        if !alive(pid) && threads <= 1 {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!("process {pid} did not exit after SIGKILL"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
