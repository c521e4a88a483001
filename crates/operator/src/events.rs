//! Publishes Events, one per occurrence. kube's `Recorder` folds every Event with the same reason
//! on the same object into one series that keeps its first note, so a second failover would show
//! in `kubectl describe eg` as "x2" of the first leader's message. Here each Event keeps its own.
//!
//! Events are queued and written by a few workers: a cold start of thousands of groups makes
//! thousands of Events, which must not crowd out the label and status writes at the API server.
//! A full queue drops Events (counted), as Kubernetes' own event broadcaster does.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use std::sync::Arc;

use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::leadership::Fence;
use crate::metrics::Metrics;
use crate::slots::WriteSlots;

/// Events waiting to be written; more are dropped.
const QUEUE: usize = 4096;
/// Events written at once (at most: each also needs a routine write slot).
const WORKERS: usize = 2;

/// Why an Event was not written.
#[derive(Debug, thiserror::Error)]
pub enum Unpublished {
    /// The controller Lease was not held when its turn came.
    #[error("the controller lease is not held")]
    NotLeading,
    /// The API server refused it or could not be reached.
    #[error("{0}")]
    Api(kube::Error),
}

/// Numbers the Events this process writes.
static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Writes Events as the controller `reporter` names.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    reporter: Reporter,
    queue: mpsc::Sender<K8sEvent>,
    metrics: Arc<Metrics>,
    /// Queued Events are written in routine write slots, behind a failover's leadership writes
    /// (each waits for those at most 1 s).
    slots: Arc<WriteSlots>,
    /// Events are written, like everything else, only while this replica holds the Lease.
    fence: Arc<Fence>,
}

impl Publisher {
    /// A publisher writing through `client`, with its workers started on the current runtime.
    pub fn start(
        client: Client,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        slots: Arc<WriteSlots>,
        fence: Arc<Fence>,
    ) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let publisher = Self {
            client,
            reporter,
            queue,
            metrics,
            slots,
            fence,
        };
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WORKERS {
            let (p, rx) = (publisher.clone(), rx.clone());
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(event) = next else {
                        return;
                    };
                    let slot = p.slots.routine().await;
                    let created = p.create(&event).await;
                    drop(slot);
                    match created {
                        Ok(()) => {}
                        Err(Unpublished::NotLeading) => {
                            debug!(reason = ?event.reason, "event dropped: the controller lease is not held");
                        }
                        Err(Unpublished::Api(e)) => {
                            warn!(error = %e, reason = ?event.reason, "cannot publish event");
                        }
                    }
                }
            });
        }
        publisher
    }

    /// Queues Events about their objects, stamped now (several workers may write them out of
    /// order); drops (and counts) those a full queue refuses.
    pub fn publish_later(&self, events: Vec<(Event, ObjectReference)>) {
        for (ev, regarding) in events {
            if self.queue.try_send(self.build(&ev, &regarding)).is_err() {
                self.metrics.event_dropped();
            }
        }
    }

    /// Creates one Event about `regarding`, in its namespace, now.
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), Unpublished> {
        self.create(&self.build(ev, regarding)).await
    }

    async fn create(&self, event: &K8sEvent) -> Result<(), Unpublished> {
        if !self.fence.holds() {
            return Err(Unpublished::NotLeading);
        }
        let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
        Api::<K8sEvent>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), event)
            .await
            .map(|_| ())
            .map_err(Unpublished::Api)
    }

    /// The Event about `regarding`, in its namespace, as of now.
    fn build(&self, ev: &Event, regarding: &ObjectReference) -> K8sEvent {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        // Room for the suffix within the 253 characters of a name; a cut may not end a label.
        let regarding_name: String = regarding
            .name
            .clone()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        let regarding_name = regarding_name.trim_end_matches(['-', '.']);
        let now = jiff::Timestamp::now();
        // Unique per Event: the object's name, the time and a sequence number (two Events in
        // the same nanosecond stay apart).
        let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{regarding_name}.{:x}{seq:x}", now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            event_time: Some(MicroTime(now)),
            ..K8sEvent::default()
        }
    }
}
