//! Request-sequence tests of the reconciler against a mock API server: the writes of a plan
//! reach the API server in the order `Plan::phases` gives, for each kind of change of leader.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use podium_api::{Guarded, HANDOFF_ANNOTATION, MANAGED_BY_LABEL};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::reconcile_group;
use crate::cache::PodCache;
use crate::claims::Claims;
use crate::context::Context;
use crate::events::Publisher;
use crate::lane::Lane;
use crate::leadership::Fence;
use crate::metrics::Metrics;
use crate::nodes::NodeLeases;
use crate::overlay::Overlay;
use crate::owned::store::OwnedObjects;
use crate::routing::{GroupLocks, UrgentSince};
use crate::slots::WriteSlots;
use crate::writer::Writer;

const NS: &str = "ns";

/// The objects a mock API server holds, and the writes and reads it answered, in order.
#[derive(Default)]
struct Server {
    objects: BTreeMap<String, Value>,
    version: u64,
    log: Vec<String>,
    /// Writes to keys starting with this are refused (403).
    refuse: Option<String>,
}

/// RFC 7386: a JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(t) = target else { return };
    for (k, v) in patch {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn failure(code: StatusCode, reason: &str) -> (StatusCode, Value) {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "message": reason, "reason": reason, "code": code.as_u16()});
    (code, body)
}

impl Server {
    fn put(&mut self, key: &str, mut object: Value) {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.objects.insert(key.to_string(), object);
    }

    /// Answers one request: GET and merge-PATCH of pods and ElectionGroups (with podium's
    /// resourceVersion and UID preconditions), create, replace, merge-PATCH and delete of
    /// Services and EndpointSlices, Events accepted unlogged.
    fn answer(&mut self, method: &str, path: &str, body: &[u8]) -> (StatusCode, Value) {
        if path.contains("/events") {
            return (
                StatusCode::CREATED,
                serde_json::from_slice(body).unwrap_or_default(),
            );
        }
        let path = path.split('?').next().unwrap_or_default();
        let (kind, rest) = match path.split_once(&format!("/namespaces/{NS}/")) {
            Some((_, rest)) => (rest.split('/').next().unwrap_or_default(), rest),
            None => return failure(StatusCode::NOT_FOUND, "NotFound"),
        };
        let mut parts = rest.split('/').skip(1);
        let name = parts.next().unwrap_or_default();
        let subresource = parts.next();
        let key = format!("{kind}/{name}");
        if method != "GET"
            && let Some(refused) = self.refuse.as_deref()
            && key.starts_with(refused)
        {
            let sent: Value = serde_json::from_slice(body).unwrap_or_default();
            self.log
                .push(format!("{method} {} (refused)", described(&key, &sent)));
            return failure(StatusCode::FORBIDDEN, "Forbidden");
        }
        if method == "POST" {
            return self.create(kind, body);
        }
        let Some(stored) = self.objects.get(&key).cloned() else {
            self.log.push(format!("{method} {key} (absent)"));
            return failure(StatusCode::NOT_FOUND, "NotFound");
        };
        if method == "GET" {
            self.log.push(format!("GET {key}"));
            return (StatusCode::OK, stored);
        }
        if method == "PUT" || method == "DELETE" {
            return self.replace_or_delete(method, &key, stored, body);
        }
        let patch: Value = serde_json::from_slice(body).unwrap_or_default();
        let entry = match (kind, subresource) {
            ("pods", _) => {
                let role = &patch["metadata"]["labels"]["podium.dev/role"];
                format!("PATCH {key} role={}", role.as_str().unwrap_or("released"))
            }
            (_, Some(sub)) => format!("PATCH {key}/{sub}"),
            (_, None) => format!("PATCH {key}"),
        };
        if !preconditions_hold(&stored, &patch["metadata"]) {
            self.log.push(format!("{entry} (conflict)"));
            return failure(StatusCode::CONFLICT, "Conflict");
        }
        self.log.push(entry);
        let mut updated = stored;
        let mut patch = patch;
        if let Some(m) = patch["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            m.remove("uid");
        }
        match subresource {
            // The status subresource takes status only; the main resource leaves status alone.
            Some(_) => merge(&mut updated["status"], &patch["status"]),
            None => {
                if let Some(p) = patch.as_object_mut() {
                    p.remove("status");
                }
                merge(&mut updated, &patch);
            }
        }
        self.put(&key, updated);
        (StatusCode::OK, self.objects[&key].clone())
    }

    /// A create: refused when the name is taken.
    fn create(&mut self, kind: &str, body: &[u8]) -> (StatusCode, Value) {
        let mut object: Value = serde_json::from_slice(body).unwrap_or_default();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = format!("{kind}/{name}");
        if self.objects.contains_key(&key) {
            self.log.push(format!("POST {key} (exists)"));
            return failure(StatusCode::CONFLICT, "AlreadyExists");
        }
        self.log.push(format!("POST {}", described(&key, &object)));
        object["metadata"]["uid"] = json!(format!("{name}-uid"));
        self.put(&key, object);
        (StatusCode::CREATED, self.objects[&key].clone())
    }

    /// A replace (on the version it names) or a delete (with its preconditions).
    fn replace_or_delete(
        &mut self,
        method: &str,
        key: &str,
        stored: Value,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let sent: Value = serde_json::from_slice(body).unwrap_or_default();
        let expected = match method {
            "PUT" => &sent["metadata"],
            _ => &sent["preconditions"],
        };
        let entry = match method {
            "PUT" => format!("PUT {}", described(key, &sent)),
            _ => format!("DELETE {key}"),
        };
        if !preconditions_hold(&stored, expected) {
            self.log.push(format!("{entry} (conflict)"));
            return failure(StatusCode::CONFLICT, "Conflict");
        }
        self.log.push(entry);
        if method == "DELETE" {
            self.objects.remove(key);
            return (StatusCode::OK, stored);
        }
        self.put(key, sent);
        (StatusCode::OK, self.objects[key].clone())
    }
}

/// Whether the resourceVersion and UID a request names (if any) are the stored object's.
fn preconditions_hold(stored: &Value, expected: &Value) -> bool {
    ["resourceVersion", "uid"].iter().all(|field| {
        expected[field]
            .as_str()
            .is_none_or(|e| stored["metadata"][field].as_str() == Some(e))
    })
}

/// A request's object as the log shows it: an EndpointSlice with the addresses it lists.
fn described(key: &str, object: &Value) -> String {
    if !key.starts_with("endpointslices/") {
        return key.to_string();
    }
    let addresses: Vec<&str> = object["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    format!("{key} [{}]", addresses.join(" "))
}

/// A controller over a mock API server, with caches fed from what the server holds.
struct Harness {
    server: Arc<Mutex<Server>>,
    ctx: Context,
    groups: reflector::store::Writer<Guarded>,
}

/// A Ready pod; a, b and c have the addresses 10.0.0.1, .2 and .3.
fn pod(name: &str, uid: &str, created: &str, labels: Value, annotations: Value) -> Value {
    let ip = format!("10.0.0.{}", name.bytes().next().map_or(0, |b| b - b'a' + 1));
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": uid, "creationTimestamp": created,
                     "labels": labels, "annotations": annotations},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "app",
                                  "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

fn group(spec: Value) -> Value {
    let mut spec = spec;
    spec["selector"] = json!({"matchLabels": {"app": "x"}});
    json!({
        "apiVersion": "podium.dev/v1alpha1", "kind": "ElectionGroup",
        "metadata": {"name": "g", "namespace": NS, "uid": "g-uid", "generation": 1,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": spec,
    })
}

impl Harness {
    /// A group `g` selecting `app=x` with the pods a, b and c (oldest first), all Ready.
    fn new(spec: Value) -> Self {
        let server = Arc::new(Mutex::new(Server::default()));
        {
            let mut s = server.lock().unwrap();
            for (name, created) in [("a", "01"), ("b", "02"), ("c", "03")] {
                let at = format!("2026-01-01T00:00:{created}Z");
                let p = pod(
                    name,
                    &format!("{name}-uid"),
                    &at,
                    json!({"app": "x"}),
                    json!({}),
                );
                s.put(&format!("pods/{name}"), p);
            }
            s.put("electiongroups/g", group(spec));
        }
        let answering = server.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let server = answering.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let path = parts.uri.path_and_query().map(|p| p.to_string());
                let (code, value) = server.lock().unwrap().answer(
                    parts.method.as_str(),
                    &path.unwrap_or_default(),
                    &bytes,
                );
                let body = Body::from(serde_json::to_vec(&value).unwrap());
                Ok::<_, std::convert::Infallible>(
                    Response::builder().status(code).body(body).unwrap(),
                )
            }
        });
        let client = kube::Client::new(service, NS);
        let metrics = Arc::new(Metrics::default());
        let fence = Fence::open();
        let slots = Arc::new(WriteSlots::new(4, 4, metrics.failover_priority()));
        let reporter = Reporter {
            controller: "podium".into(),
            instance: None,
        };
        let (store, groups) = reflector::store();
        let (handed_back, _) = mpsc::unbounded();
        let ctx = Context {
            writer: Writer {
                client: client.clone(),
                overlay: Arc::new(Overlay::default()),
                fence: fence.clone(),
                slots: slots.clone(),
                metrics: metrics.clone(),
                urgent_since: Arc::new(UrgentSince::default()),
            },
            pods: Arc::new(PodCache::default()),
            groups: store,
            owned: Arc::new(OwnedObjects::default()),
            claims: Arc::new(Claims::default()),
            locks: GroupLocks::default(),
            synced: (watch::channel(true).1, watch::channel(true).1),
            recorder: Publisher::start(client.clone(), reporter, metrics, slots, fence),
            active: watch::channel(true).1,
            failures: Mutex::default(),
            promotions: Default::default(),
            nodes: NodeLeases::new(client).0,
            handed_back,
        };
        let mut h = Self {
            server,
            ctx,
            groups,
        };
        h.sync();
        h
    }

    /// Feeds the caches what the server holds, as the watches would.
    fn sync(&mut self) {
        let s = self.server.lock().unwrap();
        for (key, object) in &s.objects {
            if key.starts_with("pods/") {
                let p: Pod = serde_json::from_value(object.clone()).unwrap();
                self.ctx.pods.apply(watcher::Event::Apply(p));
            } else if key.starts_with("services/") {
                // The watch shows only the Services carrying podium's label.
                let svc: Service = serde_json::from_value(object.clone()).unwrap();
                if svc.labels().get(MANAGED_BY_LABEL).is_some() {
                    self.ctx.owned.apply_service(watcher::Event::Apply(svc));
                }
            } else if key.starts_with("endpointslices/") {
                let slice: EndpointSlice = serde_json::from_value(object.clone()).unwrap();
                self.ctx.owned.apply_slice(watcher::Event::Apply(slice));
            } else {
                let g: Guarded = serde_json::from_value(object.clone()).unwrap();
                let ev = watcher::Event::Apply(g);
                self.ctx.claims.apply(&ev);
                self.groups.apply_watcher_event(&ev);
            }
        }
    }

    /// Changes an object on the server (and in the caches), as someone else would.
    fn edit(&mut self, key: &str, change: impl FnOnce(&mut Value)) {
        {
            let mut s = self.server.lock().unwrap();
            let mut object = s.objects[key].clone();
            change(&mut object);
            s.put(key, object);
        }
        self.sync();
    }

    /// Deletes a pod on the server and in the cache.
    fn delete(&mut self, name: &str) {
        let key = format!("pods/{name}");
        let object = self.server.lock().unwrap().objects.remove(&key).unwrap();
        let p: Pod = serde_json::from_value(object).unwrap();
        self.ctx.pods.apply(watcher::Event::Delete(p));
    }

    /// One reconcile of `g` (in the failover lane when `failover`); the requests it made.
    async fn reconcile(&mut self, failover: bool) -> Vec<String> {
        self.server.lock().unwrap().log.clear();
        let key = ObjectRef::<Guarded>::new("g").within(NS);
        let cached = self.ctx.groups.get(&key).unwrap();
        let group = cached.0.as_ref().unwrap().clone();
        let (_tx, waiting) = watch::channel(0);
        let lane = Lane::new(key, waiting, failover.then_some(None));
        reconcile_group(&group, &self.ctx, &lane).await.unwrap();
        self.sync();
        std::mem::take(&mut self.server.lock().unwrap().log)
    }

    fn status(&self) -> Value {
        self.server.lock().unwrap().objects["electiongroups/g"]["status"].clone()
    }

    /// Elects a leader from scratch and settles.
    async fn elected(spec: Value) -> Self {
        let mut h = Self::new(spec);
        let first = h.reconcile(false).await;
        assert!(!first.is_empty(), "the first reconcile wrote nothing");
        let again = h.reconcile(false).await;
        assert_eq!(
            again,
            Vec::<String>::new(),
            "a settled group is written again"
        );
        assert_eq!(h.status()["leader"], "a");
        h
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A new group's requests: the finalizer, then the reserved successor's follower write (status
/// pins its version), status with the new term, the leader, the other follower.
const NEW_GROUP: [&str; 5] = [
    "PATCH electiongroups/g",
    "PATCH pods/b role=follower",
    "PATCH electiongroups/g/status",
    "PATCH pods/a role=leader",
    "PATCH pods/c role=follower",
];

#[tokio::test]
async fn a_new_group_records_its_term_before_labelling_its_leader() {
    let mut h = Harness::new(json!({}));
    let sent = h.reconcile(false).await;
    assert_eq!(sent, strings(&NEW_GROUP));
    assert_eq!(h.status()["successor"]["pod"], "b");
}

#[tokio::test]
async fn a_failover_to_the_reserved_successor_labels_it_before_status() {
    let mut h = Harness::elected(json!({})).await;
    let term = h.status()["term"].as_i64().unwrap();
    h.delete("a");
    let sent = h.reconcile(true).await;
    assert_eq!(
        sent,
        strings(&["PATCH pods/b role=leader", "PATCH electiongroups/g/status"])
    );
    assert_eq!(h.status()["leader"], "b");
    assert_eq!(h.status()["term"].as_i64(), Some(term + 1));
}

#[tokio::test]
async fn a_failover_without_a_usable_reservation_records_status_first() {
    let mut h = Harness::elected(json!({})).await;
    // The successor changed since it was reserved: its reservation may not be labelled first.
    h.edit("pods/b", |p| {
        p["metadata"]["labels"]["touched"] = json!("yes")
    });
    h.delete("a");
    let sent = h.reconcile(true).await;
    assert_eq!(
        sent,
        strings(&["PATCH electiongroups/g/status", "PATCH pods/b role=leader",])
    );
    assert_eq!(h.status()["leader"], "b");
}

/// An elected group asked to hand over to c; the requests that made it.
async fn handoff_to_c(spec: Value) -> (Harness, Vec<String>) {
    let mut h = Harness::elected(spec).await;
    h.edit("electiongroups/g", |g| {
        g["metadata"]["annotations"] = json!({HANDOFF_ANNOTATION: "c"});
    });
    let sent = h.reconcile(false).await;
    (h, sent)
}

#[tokio::test]
async fn a_handoff_demotes_before_it_promotes_by_default() {
    let (h, sent) = handoff_to_c(json!({})).await;
    assert_eq!(
        sent,
        strings(&[
            "PATCH electiongroups/g/status",
            "PATCH electiongroups/g",
            // b's reserved term is given up: b is written first (the next pass labels it again).
            "PATCH pods/b role=released",
            "PATCH pods/a role=follower",
            "PATCH pods/c role=leader",
        ])
    );
    assert_eq!(h.status()["leader"], "c");
    assert_eq!(h.status()["abandoned"][0]["pod"], "b");
}

#[tokio::test]
async fn a_make_before_break_handoff_promotes_before_it_demotes() {
    let (_, sent) = handoff_to_c(json!({"handoff": {"mode": "MakeBeforeBreak"}})).await;
    assert_eq!(
        sent,
        strings(&[
            "PATCH electiongroups/g/status",
            "PATCH electiongroups/g",
            "PATCH pods/b role=released",
            "PATCH pods/c role=leader",
            "PATCH pods/a role=follower",
        ])
    );
}

#[tokio::test]
async fn an_abandoned_promotion_is_fenced_before_anyone_is_promoted() {
    let mut h = Harness::elected(json!({})).await;
    h.delete("a");
    // b turned unready, and a controller recorded b's promotion in status but never labelled
    // it: the promotion is abandoned, and status lists b; b is written (its version moves, so a
    // stale copy of the promotion fails) before c is promoted.
    h.edit("pods/b", |p| {
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    });
    let b_version =
        h.server.lock().unwrap().objects["pods/b"]["metadata"]["resourceVersion"].clone();
    let term = h.status()["term"].as_i64().unwrap() + 1;
    h.edit("electiongroups/g", |g| {
        let s = &mut g["status"];
        s["leader"] = json!("b");
        s["leaderUID"] = json!("b-uid");
        s["leaderResourceVersion"] = b_version;
        s["term"] = json!(term);
        s["successor"] = Value::Null;
    });
    let sent = h.reconcile(false).await;
    assert_eq!(
        sent,
        strings(&[
            "PATCH electiongroups/g/status",
            // Labelled follower already: its labels come off (the next pass puts them back).
            "PATCH pods/b role=released",
            "PATCH pods/c role=leader",
        ])
    );
    assert_eq!(h.status()["leader"], "c");
    assert_eq!(h.status()["abandoned"][0]["pod"], "b");
}

#[tokio::test]
async fn a_forged_leader_label_is_put_back_in_one_write() {
    let mut h = Harness::elected(json!({})).await;
    h.edit("pods/c", |p| {
        p["metadata"]["labels"]["podium.dev/role"] = json!("leader")
    });
    let sent = h.reconcile(true).await;
    assert_eq!(sent, strings(&["PATCH pods/c role=follower"]));
    assert_eq!(h.status()["leader"], "a");
}

fn with_service() -> Value {
    json!({"service": {"ports": [{"name": "web", "port": 80, "targetPort": "http"}]}})
}

impl Harness {
    /// What the server's slice of that name lists.
    fn slice(&self, name: &str) -> Vec<String> {
        let s = self.server.lock().unwrap();
        described(
            &format!("endpointslices/{name}"),
            &s.objects[&format!("endpointslices/{name}")],
        )
        .split_once(' ')
        .map(|(_, a)| {
            a.trim_matches(['[', ']'])
                .split_whitespace()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
    }

    fn has(&self, key: &str) -> bool {
        self.server.lock().unwrap().objects.contains_key(key)
    }
}

#[tokio::test]
async fn a_group_with_a_service_creates_it_and_its_slice_after_the_labels() {
    let mut h = Harness::new(with_service());
    let sent = h.reconcile(false).await;
    // The Service and its slice right after the leader's label, before the other follower.
    let mut want = NEW_GROUP.to_vec();
    want.splice(
        4..4,
        [
            "POST services/g-leader",
            "POST endpointslices/g-leader [10.0.0.1]",
        ],
    );
    assert_eq!(sent, strings(&want));
    let s = h.server.lock().unwrap().objects["services/g-leader"].clone();
    assert_eq!(s["spec"]["selector"], Value::Null);
    assert_eq!(s["metadata"]["ownerReferences"][0]["uid"], "g-uid");
    let slice = h.server.lock().unwrap().objects["endpointslices/g-leader"].clone();
    assert_eq!(
        slice["ports"][0]["port"], 8080,
        "the named target port is resolved"
    );
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "g-leader"
    );
    // Settled: nothing more to write.
    assert_eq!(h.reconcile(false).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_failover_moves_the_slice_in_one_write_after_the_label() {
    let mut h = Harness::elected(with_service()).await;
    assert_eq!(h.slice("g-leader"), ["10.0.0.1"]);
    h.delete("a");
    let sent = h.reconcile(true).await;
    assert_eq!(
        sent,
        strings(&[
            "PATCH pods/b role=leader",
            "PUT endpointslices/g-leader [10.0.0.2]",
            "PATCH electiongroups/g/status",
        ])
    );
    assert_eq!(h.slice("g-leader"), ["10.0.0.2"]);
}

#[tokio::test]
async fn a_leader_deleted_with_no_candidate_empties_the_slice() {
    let mut h = Harness::elected(with_service()).await;
    for p in ["pods/b", "pods/c"] {
        h.edit(p, |p| {
            p["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
        });
    }
    // The followers turning unready changes nothing of the leader's slice.
    assert_eq!(
        h.reconcile(false)
            .await
            .iter()
            .filter(|r| r.contains("endpointslices"))
            .count(),
        0
    );
    h.delete("a");
    let sent = h.reconcile(true).await;
    let slices: Vec<&String> = sent
        .iter()
        .filter(|r| r.contains("endpointslices"))
        .collect();
    assert_eq!(slices, ["PUT endpointslices/g-leader []"], "{sent:?}");
    assert_eq!(h.status()["leader"], Value::Null);
    assert!(h.slice("g-leader").is_empty());
}

#[tokio::test]
async fn a_foreign_service_of_that_name_is_a_conflict_and_is_never_written() {
    let mut h = Harness::new(with_service());
    let foreign = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "g-leader", "namespace": NS, "uid": "theirs"},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 1}]}});
    h.server
        .lock()
        .unwrap()
        .put("services/g-leader", foreign.clone());
    let sent = h.reconcile(false).await;
    let route: Vec<&String> = sent
        .iter()
        .filter(|r| r.contains("services/") || r.contains("endpointslices/"))
        .collect();
    assert_eq!(
        route,
        ["POST services/g-leader (exists)", "GET services/g-leader"],
        "{sent:?}"
    );
    let conflict = h.status()["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Conflict")
        .cloned()
        .unwrap();
    assert_eq!(conflict["status"], "True");
    assert_eq!(conflict["reason"], "ForeignService");
    assert_eq!(h.status()["leader"], "a", "the election goes on");
    // Known foreign: not tried again at once, and nothing else is written.
    assert_eq!(h.reconcile(false).await, Vec::<String>::new());
    let stored = h.server.lock().unwrap().objects["services/g-leader"].clone();
    assert_eq!(stored["spec"], foreign["spec"]);
    assert!(!h.has("endpointslices/g-leader"));
}

#[tokio::test]
async fn followers_get_their_own_service_and_a_removed_service_is_deleted() {
    let mut spec = with_service();
    spec["service"]["followers"] = json!({});
    let mut h = Harness::elected(spec).await;
    assert_eq!(h.slice("g-followers"), ["10.0.0.2", "10.0.0.3"]);
    h.edit("electiongroups/g", |g| {
        g["spec"].as_object_mut().unwrap().remove("service");
    });
    let sent = h.reconcile(false).await;
    assert_eq!(
        sent,
        strings(&[
            "DELETE services/g-followers",
            "DELETE services/g-leader",
            "DELETE endpointslices/g-followers",
            "DELETE endpointslices/g-leader",
        ])
    );
    assert_eq!(h.reconcile(false).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_group_without_a_service_sends_nothing_for_one() {
    let mut h = Harness::new(json!({}));
    let sent = h.reconcile(false).await;
    assert!(
        !sent
            .iter()
            .any(|r| r.contains("services") || r.contains("endpointslices")),
        "{sent:?}"
    );
}

#[tokio::test]
async fn a_failing_slice_write_holds_back_none_of_the_plan_s_other_writes() {
    let mut h = Harness::elected(with_service()).await;
    h.server.lock().unwrap().refuse = Some("endpointslices/".into());
    h.delete("a");
    let key = ObjectRef::<Guarded>::new("g").within(NS);
    let group = h.ctx.groups.get(&key).unwrap().0.as_ref().unwrap().clone();
    let (_tx, waiting) = watch::channel(0);
    let lane = Lane::new(key, waiting, Some(None));
    h.server.lock().unwrap().log.clear();
    let result = reconcile_group(&group, &h.ctx, &lane).await;
    assert!(
        matches!(result, Err(crate::error::Error::Route { .. })),
        "{result:?}"
    );
    let sent = std::mem::take(&mut h.server.lock().unwrap().log);
    assert_eq!(
        sent,
        strings(&[
            "PATCH pods/b role=leader",
            "PUT endpointslices/g-leader [10.0.0.2] (refused)",
            "PATCH electiongroups/g/status",
        ])
    );
    assert_eq!(h.status()["leader"], "b");
}
