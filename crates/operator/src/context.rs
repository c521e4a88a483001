//! The controller's shared state: caches, indexes, locks, the writer and the Event publisher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::{ObjectRef, Store};
use podium_api::Guarded;
use tokio::sync::watch;

use crate::cache::PodCache;
use crate::claims::Claims;
use crate::events::Publisher;
use crate::nodes::NodeLeases;
use crate::owned::store::OwnedObjects;
use crate::promotions::Promotions;
use crate::routing::GroupLocks;
use crate::writer::Writer;

/// Shared state of the controller.
pub struct Context {
    /// Every write goes through it.
    pub writer: Writer,
    /// Every pod in scope, reduced to what the election reads and indexed.
    pub pods: Arc<PodCache>,
    /// Every ElectionGroup in scope.
    pub groups: Store<Guarded>,
    /// The Services and EndpointSlices of the owned routes.
    pub owned: Arc<OwnedObjects>,
    /// Every group's parsed selector, indexed.
    pub claims: Arc<Claims>,
    /// One reconcile per group at a time, across the routine and the urgent queue.
    pub locks: GroupLocks,
    /// Whether the pod and group caches have been filled once.
    pub synced: (watch::Receiver<bool>, watch::Receiver<bool>),
    /// Publishes Events.
    pub recorder: Publisher,
    /// Whether this replica is the active controller; a standby computes nothing and writes nothing.
    pub active: watch::Receiver<bool>,
    /// Consecutive failures per group, for the error policy's backoff.
    pub failures: Mutex<HashMap<ObjectRef<Guarded>, u32>>,
    /// Candidates whose promotion keeps failing.
    pub promotions: Promotions,
    /// The node Leases of the nodes hosting leaders and reserved successors.
    pub nodes: NodeLeases,
    /// Groups the urgent queue hands back to the routine one, to keep their timers there.
    pub handed_back: UnboundedSender<ObjectRef<Guarded>>,
}
