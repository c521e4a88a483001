//! The node-silence fault and what must follow it (invariant 8). The harness plays the kubelet
//! of one node, where each group with `node_member` keeps a member; the fault silences that
//! kubelet for 12–20 s — no Lease renewals, as a node that stops answering — and brings it back.
//! For every group whose leader was on the node when it fell silent, the checker's own watches
//! must show:
//!
//! - the leader replaced, reason NodeLost, no sooner than `nodeLossSeconds` after the node's
//!   last renewal (the renewal is sent before podium can see it, so nothing legitimate comes
//!   earlier) and at most [`SLACK`] later. The deadline is judged only when the silence lasts
//!   past it and one replica process held the controller Lease throughout: a replica that
//!   takes over starts its node watches afresh, so its measure of the silence starts later.
//!   When no member off the node is a Ready candidate, the leader steps down instead (status
//!   names no leader), under the same deadline; it may lead again once its node renews.
//! - once the node renews again, a replaced leader not leading again within [`HOLD`]: a node
//!   that comes back takes nothing back. These groups have no schedule, so only a fault could move
//!   their leadership meanwhile, and none runs; a handoff request an earlier fault left pending
//!   is awaited before the silence (if it is still pending 30 s later, the silence is not judged).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use serde::Serialize;

use super::Run;
use super::faults::err;
use super::history::{Held, History, Transition};
use super::setup::NODE_LOSS_SECONDS;

/// How much later than `nodeLossSeconds` after the last renewal a replacement may come: the
/// confirming read, the writes, and the watches' delays on a busy machine.
const SLACK: Duration = Duration::from_secs(3);
/// How long the old leaders are watched once their node renews again.
const HOLD: Duration = Duration::from_secs(3);
/// How soon after its node renews a group left without a leader (no candidate off the node)
/// must have one again: podium's watch sees the renewal within a moment and wakes the group.
const REELECT: Duration = Duration::from_secs(3);
/// How often the fault first hands one group's leadership to its member on the node, when no
/// leader is there. Leadership rotates through the members (a failover goes to the reserved
/// successor, the next in age), so left to chance a silence finds a leader there about half
/// the time; aiming makes most silences count, the rest keep the unaimed cases (a successor
/// on the node, or nothing there at all).
const AIM: f64 = 0.75;
/// How long an aimed handoff may take to show.
const AIM_WAIT: Duration = Duration::from_secs(5);

/// What one node silence did, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct Silence {
    /// The fault (`#n node-silence`).
    pub fault: String,
    /// From the node's last renewal before the silence to its first after it.
    pub silent_ms: Option<u64>,
    /// A handoff to a member on the node was asked for first.
    pub aimed: bool,
    /// The groups whose leader was on the node when it fell silent.
    pub hits: Vec<Hit>,
}

/// A leader the silence hit, and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    /// Its group.
    pub group: String,
    /// The leader on the silent node.
    pub leader: String,
    /// Who replaced it during the silence, if anyone did.
    pub replaced_by: Option<String>,
    /// `lastTransition.reason` of that replacement.
    pub reason: Option<String>,
    /// From the node's last renewal until the checker saw the replacement in status.
    pub after_ms: Option<u64>,
    /// `ok`, `violated`, or why the deadline was not judged.
    pub verdict: String,
}

/// A replacement as the checker saw it, and when; `true` when the leader stepped down with no
/// successor (then `to` lists the Ready members off the node, which should be none).
type Seen = Option<(Instant, Transition, bool)>;

impl Run {
    /// Silences the harness's node for 12–20 s and checks what must follow.
    pub(super) async fn node_silence(&mut self) -> Result<(), String> {
        let length = self.rng.millis(12_000, 20_000);
        let aimed = self.rng.chance(AIM) && self.aim().await?;
        let tenure = self.steady_tenure().await;
        let answered = self.requests_answered().await;
        let held = self.leaders_on_node();
        self.world.node.set_alive(false).await;
        let last = self.world.node.last_renewal().unwrap_or_else(Instant::now);
        let resume = Instant::now() + length;
        let deadline = last + Duration::from_secs(NODE_LOSS_SECONDS) + SLACK;
        println!(
            "chaos:           node silent for {:.1} s; leaders on it: {:?}",
            length.as_secs_f64(),
            held.iter()
                .map(|(g, l)| format!("{g}/{}", l.pod))
                .collect::<Vec<_>>()
        );
        let seen = self.await_replacements(&held, deadline.min(resume)).await;
        let steady = tenure.is_some() && self.replicas.tenure(&self.leases).await == tenure;
        tokio::time::sleep(resume.saturating_duration_since(Instant::now())).await;
        self.world.node.set_alive(true).await;
        let back = self.renewed_after(Instant::now()).await;
        let unjudged = if resume < deadline {
            Some("not judged: the node renewed before the deadline")
        } else if !steady {
            Some("not judged: the active replica changed")
        } else if !answered {
            Some("not judged: a handoff request was still pending")
        } else {
            None
        };
        let hits: Vec<Hit> = held
            .iter()
            .zip(&seen)
            .map(|((g, old), s)| self.judge(g, old, s.as_ref(), last, unjudged))
            .collect();
        let takeback = match back {
            Some(_) => {
                self.check_elected_again(&held, &seen).await;
                self.check_no_takeback(&held, &seen).await
            }
            None => Err("the node did not renew within 30 s of coming back".into()),
        };
        self.silences.push(Silence {
            fault: self.shared.lock().fault.clone(),
            silent_ms: back.map(|b| b.duration_since(last).as_millis() as u64),
            aimed,
            hits,
        });
        takeback
    }

    /// Waits (up to 30 s) until no node group has a handoff request pending: a request an
    /// earlier fault left (say, `any` while no other member was a candidate yet) would move
    /// leadership during the silence for a reason of its own.
    async fn requests_answered(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let groups: Vec<&str> = self
            .world
            .defs
            .iter()
            .filter(|d| d.node_member)
            .map(|d| d.name)
            .collect();
        while Instant::now() < deadline {
            let mut pending = false;
            for g in &groups {
                pending |= match self.world.groups().get(g).await {
                    Ok(o) => o.annotations().contains_key("podium.dev/handoff-to"),
                    Err(_) => true,
                };
            }
            if !pending {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// The node groups and their leaders on the harness's node, as the checker sees them.
    fn leaders_on_node(&self) -> Vec<(&'static str, Held)> {
        let h = self.shared.lock();
        self.world
            .defs
            .iter()
            .filter(|d| d.node_member)
            .filter_map(|d| {
                h.leader_on(d.name, self.world.node.name())
                    .map(|l| (d.name, l))
            })
            .collect()
    }

    /// Unless a leader is on the node already, asks one node group to hand over to its member
    /// there and waits (briefly) until it leads; returns whether it asked.
    async fn aim(&mut self) -> Result<bool, String> {
        if !self.leaders_on_node().is_empty() {
            return Ok(false);
        }
        let groups: Vec<&'static str> = self
            .world
            .defs
            .iter()
            .filter(|d| d.node_member)
            .map(|d| d.name)
            .collect();
        let g = *self.rng.pick(&groups);
        let Some(pod) = self.world.members_on_node(g).await.map_err(err)?.pop() else {
            return Ok(false);
        };
        self.world.request_handoff(g, &pod).await.map_err(err)?;
        let node = self.world.node.name().to_string();
        self.wait_history(AIM_WAIT, |h| h.leader_on(g, &node).is_some())
            .await;
        Ok(true)
    }

    /// The tenure of the controller Lease once a running replica has renewed it (none if no
    /// replica does within 30 s): the process whose node watches will measure the silence.
    async fn steady_tenure(&mut self) -> Option<super::replicas::Tenure> {
        let now = jiff::Timestamp::now();
        self.replicas
            .wait_active(&self.leases, now, Duration::from_secs(30))
            .await?;
        self.replicas.tenure(&self.leases).await
    }

    /// Waits until every leader in `held` is replaced, or `until`; for each, the replacement
    /// and when the checker first saw it.
    async fn await_replacements(&self, held: &[(&str, Held)], until: Instant) -> Vec<Seen> {
        let seen: RefCell<Vec<Seen>> = RefCell::new(vec![None; held.len()]);
        let timeout = until.saturating_duration_since(Instant::now());
        self.wait_history(timeout, |h| {
            let mut seen = seen.borrow_mut();
            for (slot, (g, old)) in seen.iter_mut().zip(held) {
                if slot.is_none() {
                    let successor = h.transition(g).filter(|t| t.to != old.pod);
                    // Or it stepped down with nobody to follow: recorded with the members that
                    // could have (none, unless podium left one out).
                    let alone = || {
                        h.stepped_down(g, old).map(|mut t| {
                            t.to = h.candidates_off(g, self.world.node.name()).join(",");
                            t
                        })
                    };
                    *slot = successor
                        .map(|t| (Instant::now(), t, false))
                        .or_else(|| alone().map(|t| (Instant::now(), t, true)));
                }
            }
            seen.iter().all(Option::is_some)
        })
        .await;
        seen.into_inner()
    }

    /// Waits (up to 30 s: the API server may be slow) for the node's first renewal sent after
    /// `t`; returns when it was sent.
    async fn renewed_after(&self, t: Instant) -> Option<Instant> {
        let deadline = t + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(r) = self.world.node.last_renewal().filter(|r| *r > t) {
                return Some(r);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// The verdict on one hit leader; records a violation where there is one.
    fn judge(
        &self,
        group: &str,
        old: &Held,
        seen: Option<&(Instant, Transition, bool)>,
        last: Instant,
        unjudged: Option<&str>,
    ) -> Hit {
        let loss = Duration::from_secs(NODE_LOSS_SECONDS);
        let mut hit = Hit {
            group: group.to_string(),
            leader: old.pod.clone(),
            replaced_by: seen.filter(|s| !s.2).map(|(_, t, _)| t.to.clone()),
            reason: seen.and_then(|(_, t, _)| t.reason.clone()),
            after_ms: seen.map(|(at, _, _)| at.duration_since(last).as_millis() as u64),
            verdict: "ok".into(),
        };
        let problem = match seen {
            Some((_, t, true)) if !t.to.is_empty() => Some(format!(
                "{} on the silent node stepped down with no successor (reason {:?}) while {} could have followed",
                old.pod, t.reason, t.to
            )),
            Some((at, t, alone)) if at.duration_since(last) < loss => Some(format!(
                "{} on the silent node {} {} ms after the node's last renewal, before nodeLossSeconds ({}) had passed",
                old.pod,
                if *alone {
                    "stepped down".to_string()
                } else {
                    format!("was replaced by {}", t.to)
                },
                at.duration_since(last).as_millis(),
                NODE_LOSS_SECONDS
            )),
            Some((_, _, true)) => {
                hit.replaced_by = Some("none: no candidate off the node".into());
                None
            }
            Some((_, t, false))
                if t.reason.as_deref() != Some("NodeLost")
                    || t.from.as_deref() != Some(old.pod.as_str()) =>
            {
                Some(format!(
                    "{} on the silent node was replaced by {} with reason {:?} from {:?}, not NodeLost",
                    old.pod, t.to, t.reason, t.from
                ))
            }
            Some(_) => None,
            None => match unjudged {
                Some(why) => {
                    hit.verdict = why.into();
                    None
                }
                None => Some(format!(
                    "{} on the silent node still led {} ms after the node's last renewal (nodeLossSeconds {} + {} s)",
                    old.pod,
                    (loss + SLACK).as_millis(),
                    NODE_LOSS_SECONDS,
                    SLACK.as_secs()
                )),
            },
        };
        if let Some(detail) = problem {
            hit.verdict = "violated".into();
            let mut h = self.shared.lock();
            let key = format!("{}-{}", h.fault, old.uid);
            h.violate(8, group, &key, detail);
        }
        hit
    }

    /// A group whose leader stepped down for want of candidates off the node may lead again once
    /// the node renews, and must, at once: the renewal wakes the group (nothing else is done to
    /// it here). Judged when the node has renewed; records a violation for each group that is
    /// not settled [`REELECT`] later although it has a Ready candidate.
    async fn check_elected_again(&self, held: &[(&str, Held)], seen: &[Seen]) {
        let alone: Vec<&str> = held
            .iter()
            .zip(seen)
            .filter(|(_, s)| matches!(s, Some((_, _, true))))
            .map(|((g, _), _)| *g)
            .collect();
        if alone.is_empty() {
            return;
        }
        let settled = |h: &History| alone.iter().all(|g| h.settled(g));
        if self.wait_history(REELECT, settled).await.is_none() {
            let mut h = self.shared.lock();
            for g in &alone {
                if !h.settled(g) {
                    let detail = format!(
                        "no leader {} ms after its node renewed, though it has a Ready candidate: {}",
                        REELECT.as_millis(),
                        h.describe(g)
                    );
                    let key = format!("{}-again-{g}", h.fault);
                    h.violate(8, g, &key, detail);
                }
            }
        }
    }

    /// Once the node renews again, the replaced leaders must not lead again. The renewal wakes
    /// the groups that found the node lost, but only those whose leader it kept from a candidate
    /// need to act; each group is touched once podium has surely seen it.
    async fn check_no_takeback(
        &mut self,
        held: &[(&str, Held)],
        seen: &[Seen],
    ) -> Result<(), String> {
        let replaced: Vec<&(&str, Held)> = held
            .iter()
            .zip(seen)
            // A leader that stepped down with nobody to follow may lead again once it is back.
            .filter(|(_, s)| matches!(s, Some((_, _, false))))
            .map(|(h, _)| h)
            .collect();
        if replaced.is_empty() {
            return Ok(());
        }
        // Podium's Lease watch sees the renewal within milliseconds; a second beat makes sure.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (g, _) in &replaced {
            self.world.poke(g).await.map_err(err)?;
        }
        let again = |h: &History| replaced.iter().any(|(g, old)| took_back(h, g, old));
        if self.wait_history(HOLD, again).await.is_some() {
            let mut h = self.shared.lock();
            for (g, old) in &replaced {
                if took_back(&h, g, old) {
                    let detail = format!(
                        "{} leads again after its node came back, though it was replaced for NodeLost: {}; last transition {:?}",
                        old.pod,
                        h.describe(g),
                        h.transition(g)
                    );
                    let key = format!("{}-back-{}", h.fault, old.uid);
                    h.violate(8, g, &key, detail);
                }
            }
        }
        Ok(())
    }
}

/// `old` leads again, and not as the successor of a leader that was itself lost: kwok renews
/// its nodes' Leases every 10–10.4 s, so with `nodeLossSeconds: 11` a busy machine can make one
/// of them look lost, and its leader's successor may rightly be the pod that came back.
fn took_back(h: &History, group: &str, old: &Held) -> bool {
    let succeeded_lost = h
        .transition(group)
        .is_some_and(|t| t.to == old.pod && t.reason.as_deref() == Some("NodeLost"));
    h.leads_again(group, old) && !succeeded_lost
}
