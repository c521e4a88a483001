//! The operator replicas of a run: started with leader election on a Lease in the run's
//! namespace, killed, paused and resumed by the injector, and always brought back so that
//! at least two run.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::Api;

use crate::support::{Operator, free_port, kubeconfig_path};

/// The controller Lease's name.
pub const LEASE: &str = "chaos-controller";
/// `--lease-duration`, in seconds.
pub const LEASE_SECONDS: u64 = 4;

/// Who holds the controller Lease, and in which process. Two equal tenures read at two instants
/// mean one process held it throughout: a change of holder bumps `leaseTransitions`, and a
/// replica restarted under its old name (which renews without a transition) has a new pid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenure {
    replica: usize,
    pid: Option<u32>,
    transitions: i32,
}

/// One replica's slot: it keeps its name (like a StatefulSet pod) across restarts.
struct Slot {
    name: String,
    op: Option<Operator>,
    stopped: bool,
}

/// The replicas, each logging to `target/chaos/logs/<name>.log`.
pub struct Replicas {
    namespace: String,
    slots: Vec<Slot>,
}

/// Where the replicas' logs go.
pub fn log_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/chaos/logs")
}

impl Replicas {
    /// Starts `n` replicas scoped to `namespace`.
    pub fn start(namespace: &str, n: usize) -> Self {
        let mut r = Self {
            namespace: namespace.to_string(),
            slots: (0..n)
                .map(|i| Slot {
                    name: format!("replica-{i}"),
                    op: None,
                    stopped: false,
                })
                .collect(),
        };
        for i in 0..n {
            r.launch(i);
        }
        r
    }

    fn launch(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let addr = format!("--http-addr=127.0.0.1:{}", free_port());
        let lease_seconds = LEASE_SECONDS.to_string();
        let args = [
            "--leader-elect",
            "--lease-duration",
            &lease_seconds,
            "--lease-name",
            LEASE,
            "--lease-namespace",
            &self.namespace,
            "--instance",
            &slot.name,
            &addr,
        ];
        let log = log_dir().join(format!("{}.log", slot.name));
        slot.op = Some(Operator::start_logged(
            &log,
            &self.namespace,
            &kubeconfig_path(),
            &args,
        ));
        slot.stopped = false;
    }

    /// The index of the replica the Lease names as holder, if it names one of them.
    pub async fn active(&self, leases: &Api<Lease>) -> Option<usize> {
        self.holder(leases).await.map(|(i, _)| i)
    }

    /// The holder's index and when it last renewed the Lease.
    async fn holder(&self, leases: &Api<Lease>) -> Option<(usize, Option<jiff::Timestamp>)> {
        let (i, spec) = self.holder_spec(leases).await?;
        Some((i, spec.renew_time.map(|t| t.0)))
    }

    /// Which process holds the Lease now; see [`Tenure`].
    pub async fn tenure(&self, leases: &Api<Lease>) -> Option<Tenure> {
        let (i, spec) = self.holder_spec(leases).await?;
        Some(Tenure {
            replica: i,
            pid: self.slots[i].op.as_ref().and_then(|o| o.pid()),
            transitions: spec.lease_transitions.unwrap_or(0),
        })
    }

    /// The holder's index and the Lease's spec.
    async fn holder_spec(&self, leases: &Api<Lease>) -> Option<(usize, LeaseSpec)> {
        let spec = leases.get(LEASE).await.ok()?.spec?;
        let holder = spec.holder_identity.as_deref()?;
        let i = self.slots.iter().position(|s| s.name == holder)?;
        Some((i, spec))
    }

    /// The replica's name.
    pub fn name(&self, i: usize) -> &str {
        &self.slots[i].name
    }

    /// Number of replicas.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Sends SIGKILL and waits for the process to go.
    pub async fn kill(&mut self, i: usize) {
        if let Some(op) = self.slots[i].op.take() {
            op.kill().await;
        }
        self.slots[i].stopped = false;
    }

    /// Starts the replica again (same name) if it is not running.
    pub fn restart(&mut self, i: usize) {
        let running = self.slots[i].op.as_mut().is_some_and(|o| o.alive());
        if !running {
            self.launch(i);
        }
    }

    /// Sends SIGSTOP or SIGCONT.
    pub fn pause(&mut self, i: usize, stop: bool) {
        let Some(pid) = self.slots[i].op.as_ref().and_then(|o| o.pid()) else {
            return;
        };
        let signal = if stop { "-STOP" } else { "-CONT" };
        let _ = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
        self.slots[i].stopped = stop;
    }

    /// Resumes every paused replica and restarts every dead one; returns how many had
    /// exited on their own (a crash the harness did not cause).
    pub fn heal(&mut self) -> usize {
        let mut crashed = 0;
        for i in 0..self.slots.len() {
            if self.slots[i].stopped {
                self.pause(i, false);
            }
            if self.slots[i].op.as_mut().is_some_and(|o| !o.alive()) {
                crashed += 1;
            }
            self.restart(i);
        }
        crashed
    }

    /// Lines of the replicas' logs that report a panic.
    pub fn panics(&self) -> Vec<String> {
        self.slots
            .iter()
            .flat_map(|s| {
                let log = log_dir().join(format!("{}.log", s.name));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.lines()
                    .filter(|l| l.contains("panicked"))
                    .map(|l| format!("{}: {l}", s.name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Waits until a running replica holds the Lease and has renewed it after `after`
    /// (a renewal by a process since killed does not count), or `timeout` passes.
    pub async fn wait_active(
        &mut self,
        leases: &Api<Lease>,
        after: jiff::Timestamp,
        timeout: Duration,
    ) -> Option<usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if let Some((i, Some(renewed))) = self.holder(leases).await
                && renewed > after
                && self.slots[i].op.as_mut().is_some_and(|o| o.alive())
                && !self.slots[i].stopped
            {
                return Some(i);
            }
            // The Lease has no watch here worth its setup; it changes every few seconds.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        // A stopped process would ignore nothing but SIGKILL; resume it so it dies cleanly
        // when its Operator is dropped (which kills it).
        for i in 0..self.slots.len() {
            if self.slots[i].stopped {
                self.pause(i, false);
            }
        }
    }
}
