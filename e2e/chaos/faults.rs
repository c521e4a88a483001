//! The faults, drawn from the run's seeded generator. Each one returns once it is fully
//! injected (a killed replica restarted, a paused one resumed, a restarted API server
//! ready again), so faults never pile up unresumed.

use std::time::Duration;

use super::Run;
use super::replicas::LEASE_SECONDS;
use super::setup::{BARRIER_GROUP, STRAY};

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 of the active replica, restarted after up to 2 s.
    KillActive,
    /// A manual handoff request, then at once kill -9 of the active replica.
    KillMidHandoff,
    /// SIGSTOP of the active replica for longer than its Lease, with a change meanwhile.
    PauseActive,
    /// SIGKILL and restart of kube-apiserver.
    ApiServerRestart,
    /// SIGKILL and restart of etcd.
    EtcdRestart,
    /// A pod (often the leader) goes NotReady and Ready again, one to three times.
    ReadinessFlap,
    /// The leader is deleted with grace period 0 and a new member created.
    DeleteLeaderNow,
    /// The leader is deleted gracefully and a new member created.
    DeleteLeaderGraceful,
    /// Members deleted, created, moved out of a selector or back in.
    PodChurn,
    /// A burst of manual handoff requests (`any` and named pods).
    HandoffStorm,
    /// The harness's node stops renewing its Lease for 12–20 s, then renews again.
    NodeSilence,
}

/// Relative frequencies: the slow faults (seconds each; a node silence takes 15–30 s) are
/// rarer, so that the default run's 200 faults fit in 20 minutes.
const WEIGHTS: [(Fault, u32); 11] = [
    (Fault::KillActive, 8),
    (Fault::KillMidHandoff, 6),
    (Fault::PauseActive, 8),
    (Fault::ApiServerRestart, 4),
    (Fault::EtcdRestart, 4),
    (Fault::ReadinessFlap, 16),
    (Fault::DeleteLeaderNow, 12),
    (Fault::DeleteLeaderGraceful, 8),
    (Fault::PodChurn, 16),
    (Fault::HandoffStorm, 14),
    (Fault::NodeSilence, 4),
];

impl Fault {
    /// Fails on a name in `CHAOS_KINDS` that is no fault's: a misspelt kind would otherwise be
    /// left out without a word.
    pub fn check_kinds(kinds: &[String]) {
        let known: Vec<&str> = WEIGHTS.iter().map(|(f, _)| f.name()).collect();
        if let Some(unknown) = kinds.iter().find(|k| !known.contains(&k.as_str())) {
            panic!("CHAOS_KINDS names {unknown:?}, not one of {known:?}");
        }
    }

    /// Draws a fault among those `allowed` (every kind when empty).
    pub fn choose(rng: &mut super::rng::Rng, allowed: &[String]) -> Self {
        let weights: Vec<(Fault, u32)> = WEIGHTS
            .into_iter()
            .filter(|(f, _)| allowed.is_empty() || allowed.iter().any(|a| a == f.name()))
            .collect();
        assert!(
            !weights.is_empty(),
            "CHAOS_KINDS {allowed:?} names no fault"
        );
        let total: u32 = weights.iter().map(|(_, w)| w).sum();
        let mut x = rng.below(total as usize) as u32;
        for (f, w) in weights {
            if x < w {
                return f;
            }
            x -= w;
        }
        unreachable!("weights cover the range")
    }

    /// The name used in results and logs.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillActive => "kill-active",
            Fault::KillMidHandoff => "kill-mid-handoff",
            Fault::PauseActive => "pause-active",
            Fault::ApiServerRestart => "apiserver-restart",
            Fault::EtcdRestart => "etcd-restart",
            Fault::ReadinessFlap => "readiness-flap",
            Fault::DeleteLeaderNow => "delete-leader-now",
            Fault::DeleteLeaderGraceful => "delete-leader-graceful",
            Fault::PodChurn => "pod-churn",
            Fault::HandoffStorm => "handoff-storm",
            Fault::NodeSilence => "node-silence",
        }
    }
}

/// Group sizes the churn keeps members within.
const MIN_MEMBERS: usize = 3;
const MAX_MEMBERS: usize = 5;

type Outcome = Result<(), String>;

pub(super) fn err(e: kube::Error) -> String {
    e.to_string()
}

impl Run {
    /// Injects one fault.
    pub async fn inject(&mut self, fault: Fault) -> Outcome {
        match fault {
            Fault::KillActive => self.kill_active(false).await,
            Fault::KillMidHandoff => self.kill_active(true).await,
            Fault::PauseActive => self.pause_active().await,
            Fault::ApiServerRestart => self.restart_component("kube-apiserver").await,
            Fault::EtcdRestart => self.restart_component("etcd").await,
            Fault::ReadinessFlap => self.readiness_flap().await,
            Fault::DeleteLeaderNow => self.delete_leader(Some(0)).await,
            Fault::DeleteLeaderGraceful => self.delete_leader(None).await,
            Fault::PodChurn => self.pod_churn().await,
            Fault::HandoffStorm => self.handoff_storm().await,
            Fault::NodeSilence => self.node_silence().await,
        }
    }

    /// A group to act on (never the barrier group).
    fn some_group(&mut self) -> &'static str {
        let names: Vec<&'static str> = self
            .world
            .defs
            .iter()
            .map(|d| d.name)
            .filter(|n| *n != BARRIER_GROUP)
            .collect();
        names[self.rng.below(names.len())]
    }

    /// The replica holding the Lease, else any.
    async fn active_or_any(&mut self) -> usize {
        match self.replicas.active(&self.leases).await {
            Some(i) => i,
            None => self.rng.below(self.replicas.len()),
        }
    }

    async fn kill_active(&mut self, mid_handoff: bool) -> Outcome {
        if mid_handoff {
            let g = self.some_group();
            self.world.request_handoff(g, "any").await.map_err(err)?;
        }
        let i = self.active_or_any().await;
        println!("chaos:           kill -9 {}", self.replicas.name(i));
        self.replicas.kill(i).await;
        tokio::time::sleep(self.rng.millis(0, 2000)).await;
        self.replicas.restart(i);
        Ok(())
    }

    /// Pauses the active replica past its Lease while the world changes, so that it
    /// resumes believing in a state that is no longer true.
    async fn pause_active(&mut self) -> Outcome {
        let i = self.active_or_any().await;
        println!("chaos:           SIGSTOP {}", self.replicas.name(i));
        self.replicas.pause(i, true);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let g = self.some_group();
        // Errors must not skip the SIGCONT below.
        let change = if self.rng.chance(0.5) {
            self.replace_leader(g, Some(0)).await
        } else {
            self.world.request_handoff(g, "any").await.map_err(err)
        };
        let rest = Duration::from_secs(LEASE_SECONDS) + self.rng.millis(500, 2500);
        tokio::time::sleep(rest.saturating_sub(Duration::from_secs(2))).await;
        self.replicas.pause(i, false);
        change
    }

    async fn restart_component(&mut self, component: &str) -> Outcome {
        self.control.restart(component).await?;
        self.wait_api_ready(Duration::from_secs(90)).await
    }

    /// Waits until the API server answers /readyz with ok.
    pub async fn wait_api_ready(&self, timeout: Duration) -> Outcome {
        let start = std::time::Instant::now();
        loop {
            let req = http::Request::get("/readyz").body(vec![]).expect("request");
            if let Ok(body) = self.world.ns.client.request_text(req).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!("API server not ready after {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn readiness_flap(&mut self) -> Outcome {
        let g = self.some_group();
        let members = self.world.members(g).await.map_err(err)?;
        let leader = self.world.leader(g).await.map_err(err)?;
        let pod = match leader {
            Some(l) if self.rng.chance(0.6) => l,
            _ if members.is_empty() => return Ok(()),
            _ => self.rng.pick(&members).clone(),
        };
        for _ in 0..1 + self.rng.below(3) {
            self.world.set_ready(&pod, false).await.map_err(err)?;
            tokio::time::sleep(self.rng.millis(100, 1500)).await;
            self.world.set_ready(&pod, true).await.map_err(err)?;
            tokio::time::sleep(self.rng.millis(0, 500)).await;
        }
        Ok(())
    }

    async fn delete_leader(&mut self, grace: Option<u32>) -> Outcome {
        let g = self.some_group();
        self.replace_leader(g, grace).await
    }

    /// Deletes the group's leader (or a member, if it has none) and creates a new member.
    async fn replace_leader(&mut self, g: &str, grace: Option<u32>) -> Outcome {
        let pod = match self.world.leader(g).await.map_err(err)? {
            Some(l) => l,
            None => match self.world.members(g).await.map_err(err)?.first() {
                Some(p) => p.clone(),
                None => return Ok(()),
            },
        };
        // The pod may already be gone (deleted by an earlier fault): nothing to delete.
        match self.world.delete_pod(&pod, grace).await {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(err(e)),
        }
        self.world.create_member(g).await.map_err(err)?;
        Ok(())
    }

    /// One membership change, keeping groups between three and five members; pods moved
    /// out of every selector must lose podium's labels (checked at the end). A member on the
    /// harness's node is never churned: it stays its group's member there (a stray on the node
    /// could move into a group with a schedule, where a silence proves nothing), and leader
    /// deletions, which may take it, have its replacement created there.
    async fn pod_churn(&mut self) -> Outcome {
        let g = self.some_group();
        let members = self.world.members(g).await.map_err(err)?;
        let on_node = self.world.members_on_node(g).await.map_err(err)?;
        let movable: Vec<String> = members
            .iter()
            .filter(|m| !on_node.contains(m))
            .cloned()
            .collect();
        let strays = self.world.members(STRAY).await.map_err(err)?;
        match self.rng.below(4) {
            _ if members.len() < MIN_MEMBERS || movable.is_empty() => {
                self.world.create_member(g).await.map_err(err)?;
            }
            0 if members.len() < MAX_MEMBERS => {
                self.world.create_member(g).await.map_err(err)?;
            }
            1 => {
                let victim = self.rng.pick(&movable).clone();
                self.world.delete_pod(&victim, Some(0)).await.map_err(err)?;
                self.world.create_member(g).await.map_err(err)?;
            }
            2 if !strays.is_empty() && members.len() < MAX_MEMBERS => {
                let back = self.rng.pick(&strays).clone();
                self.world.relabel(&back, g).await.map_err(err)?;
            }
            _ => {
                let out = self.rng.pick(&movable).clone();
                self.world.relabel(&out, STRAY).await.map_err(err)?;
                self.world.create_member(g).await.map_err(err)?;
            }
        }
        Ok(())
    }

    async fn handoff_storm(&mut self) -> Outcome {
        for _ in 0..3 + self.rng.below(6) {
            let g = self.some_group();
            let to = if self.rng.chance(0.6) {
                "any".to_string()
            } else {
                let members = self.world.members(g).await.map_err(err)?;
                if members.is_empty() {
                    continue;
                }
                self.rng.pick(&members).clone()
            };
            self.world.request_handoff(g, &to).await.map_err(err)?;
            tokio::time::sleep(self.rng.millis(50, 300)).await;
        }
        Ok(())
    }
}
