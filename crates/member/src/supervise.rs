//! `podium member exec`: runs a command only while this pod leads, with its term in
//! `PODIUM_TERM`; stops it (SIGTERM, then SIGKILL after a grace period) when leadership ends and
//! starts it again when it returns.
//!
//! The one module of podium that uses `unsafe`: a signal to a process group and the
//! pre-exec hook that ties the command's life to its supervisor.
#![allow(unsafe_code)]

use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::{Member, State, leadership_lost, wait_leading};

/// The command to supervise.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Program and arguments.
    pub command: Vec<String>,
    /// How long the command has to exit after SIGTERM before it is killed.
    pub grace: Duration,
    /// In a make-before-break group, how long a stopping leader keeps working after its
    /// demotion, to cover the time its successor takes to learn that it leads.
    pub handover_linger: Duration,
}

/// Why supervision stopped without the command's own exit status.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No command was given.
    #[error("no command to run: podium member exec [--grace D] -- CMD ARGS...")]
    NoCommand,
    /// The command could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Installing a signal handler failed.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The watch of this pod's role ended.
    #[error("the watch of this pod's role ended")]
    WatchEnded,
}

/// Signals passed on to the command; SIGTERM and SIGINT also mean the pod is stopping.
const FORWARDED: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn stopping(sig: i32) -> bool {
    sig == libc::SIGTERM || sig == libc::SIGINT
}

/// Delivers the forwarded signals on one channel.
fn signals() -> Result<mpsc::UnboundedReceiver<i32>, ExecError> {
    let (tx, rx) = mpsc::unbounded_channel();
    for sig in FORWARDED {
        let mut stream = signal(SignalKind::from_raw(sig)).map_err(ExecError::Signals)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        });
    }
    Ok(rx)
}

/// The exit code a shell would report.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Sends a signal to the command's process group (it runs in its own, so a shell wrapper's
/// children get it too).
fn send(child: &Child, sig: i32) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) has no memory effects; a stale pid group at worst gets ESRCH.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

fn spawn(config: &ExecConfig, state: &State, term: i64) -> Result<Child, ExecError> {
    let (program, args) = config.command.split_first().ok_or(ExecError::NoCommand)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("PODIUM_TERM", term.to_string())
        .env("PODIUM_GROUP", state.group.clone().unwrap_or_default())
        .process_group(0)
        .kill_on_drop(true);
    let supervisor = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: between fork and exec the closure only makes async-signal-safe calls (prctl,
    // getppid, _exit) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // The command dies with its supervisor, so work never goes on unsupervised (and
            // unfenced by a stop) when `podium member` itself is killed. The signal follows the
            // spawning thread; `podium member` spawns from the thread running its main future,
            // which lives as long as the process.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != supervisor {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| ExecError::Spawn {
        program: program.clone(),
        source,
    })
}

/// Stops the command: `sig` (SIGTERM or SIGINT), then SIGKILL once the grace period is over.
async fn stop(child: &mut Child, sig: i32, grace: Duration) -> Option<ExitStatus> {
    send(child, sig);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            send(child, libc::SIGKILL);
            child.wait().await.ok()
        }
    }
}

/// The pod is stopping while the command leads. In a make-before-break group the command keeps
/// working until podium has labelled a successor and demoted this pod, and then for the
/// handover linger (all within the grace period), so the group is never without a working
/// leader; otherwise it is signalled at once.
/// Returns the command's exit code.
async fn stop_with_pod(
    child: &mut Child,
    lost: &mut (impl std::future::Future<Output = ()> + Unpin),
    rx: &watch::Receiver<State>,
    (grace, linger): (Duration, Duration),
    (sig, sigs): (i32, &mut mpsc::UnboundedReceiver<i32>),
) -> i32 {
    if rx.borrow().make_before_break {
        tracing::info!("pod stopping: keeping the command until a successor leads");
        let deadline = tokio::time::Instant::now() + grace;
        let mut until = deadline;
        let mut demoted = false;
        loop {
            tokio::select! {
                status = child.wait() => return status.map_or(1, exit_code),
                _ = &mut *lost, if !demoted => {
                    // Demoted: the successor was labelled first, but its own watch may tell it
                    // a little later than ours told us.
                    demoted = true;
                    until = (tokio::time::Instant::now() + linger).min(deadline);
                }
                _ = tokio::time::sleep_until(until) => break,
                Some(other) = sigs.recv() => {
                    // A second stop signal stops at once; any other is passed on meanwhile.
                    if stopping(other) {
                        break;
                    }
                    send(child, other);
                }
            }
        }
        tracing::info!("pod stopping: stopping the command");
        // What is left of the grace period (at least a moment to act on the signal).
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_millis(100));
        return stop(child, sig, left).await.map_or(1, exit_code);
    }
    tracing::info!("pod stopping: stopping the command");
    stop(child, sig, grace).await.map_or(1, exit_code)
}

/// What ended a leading phase.
enum Phase {
    /// Leadership ended; the command was stopped.
    Lost,
    /// The command exited by itself, or the pod is stopping: exit with this code.
    Exit(i32),
}

async fn lead(
    child: &mut Child,
    rx: watch::Receiver<State>,
    term: i64,
    config: &ExecConfig,
    step_down_after_unknown: Option<Duration>,
    sigs: &mut mpsc::UnboundedReceiver<i32>,
) -> Phase {
    let mut lost = std::pin::pin!(leadership_lost(rx.clone(), term, step_down_after_unknown));
    loop {
        tokio::select! {
            status = child.wait() => {
                return Phase::Exit(status.map_or(1, exit_code));
            }
            _ = &mut lost => {
                tracing::info!(term, "leadership ended: stopping the command");
                stop(child, libc::SIGTERM, config.grace).await;
                return Phase::Lost;
            }
            Some(sig) = sigs.recv() => {
                if stopping(sig) {
                    return Phase::Exit(stop_with_pod(child, &mut lost, &rx, (config.grace, config.handover_linger), (sig, sigs)).await);
                }
                send(child, sig);
            }
        }
    }
}

/// Supervises the command until the pod stops or the command exits by itself; returns the exit
/// code to exit with.
pub async fn exec(member: &Member, config: &ExecConfig) -> Result<i32, ExecError> {
    if config.command.is_empty() {
        return Err(ExecError::NoCommand);
    }
    let mut sigs = signals()?;
    let mut rx = member.subscribe();
    loop {
        let term = tokio::select! {
            t = wait_leading(&mut rx) => t.ok_or(ExecError::WatchEnded)?,
            Some(sig) = sigs.recv() => {
                if stopping(sig) {
                    return Ok(0);
                }
                continue;
            }
        };
        let state = rx.borrow().clone();
        tracing::info!(term, "leading: starting the command");
        let mut child = spawn(config, &state, term)?;
        let phase = lead(
            &mut child,
            rx.clone(),
            term,
            config,
            member.config.step_down_after_unknown,
            &mut sigs,
        )
        .await;
        match phase {
            Phase::Lost => continue,
            Phase::Exit(code) => return Ok(code),
        }
    }
}
