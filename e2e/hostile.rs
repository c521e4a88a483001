//! Hostile and malformed input (SPEC invariants 5–7): specs and pod annotations written to
//! confuse podium or to make it damage something else. Each case is rejected at admission
//! or reported on the group (a condition or a Warning Event), and nothing outside the group
//! under test changes: every case snapshots the namespace's other objects before it acts
//! and diffs them afterwards, ignoring only what podium may write (its own keys on members
//! of the group under test, that group's status, Events).
//!
//! Cases are tables; each `#[tokio::test]` runs one namespace and one operator, runs its
//! cases one after another (so a later case also checks that earlier, settled groups are
//! left alone), records every failing case, and fails at the end with the list.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use podium_api::{ElectionGroup, FINALIZER, GROUP_ANNOTATION, HANDOFF_ANNOTATION, TERM_ANNOTATION};
use serde_json::{Value, json};

use crate::cluster::create_service;
use crate::groups::*;
use crate::support::*;

/// The message the API server gives for a role label the selector uses.
const COLLISION: &str = "roleLabel must not be a key the selector uses";

// ---------------------------------------------------------------------------------------
// Snapshot of everything in the namespace a group could damage.
// ---------------------------------------------------------------------------------------

/// What podium may change while a case runs.
struct Allowed<'a> {
    /// The group under test: its status, its own finalizer and handoff annotation may change,
    /// and it may appear (it is created by the case).
    group: &'a str,
    /// Members of the group under test: podium's own keys on them may change.
    members: &'a [&'a str],
    /// Role label keys podium may write on those members.
    role_labels: &'a [&'a str],
}

/// Every pod's labels, annotations and finalizers; every group's spec and metadata;
/// every Lease, ConfigMap and Service in full.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot(BTreeMap<String, Value>);

impl Snapshot {
    async fn take(ns: &TestNs) -> Self {
        let mut m = BTreeMap::new();
        let lp = Default::default();
        for p in ns.api::<Pod>().list(&lp).await.expect("list pods") {
            m.insert(
                format!("pod/{}", p.name_any()),
                json!({"uid": p.uid(), "labels": p.labels(), "annotations": p.annotations(),
                       "finalizers": p.finalizers()}),
            );
        }
        for g in ns
            .api::<ElectionGroup>()
            .list(&lp)
            .await
            .expect("list groups")
        {
            m.insert(
                format!("electiongroup/{}", g.name_any()),
                json!({"uid": g.uid(), "spec": g.spec, "generation": g.metadata.generation,
                       "labels": g.labels(), "annotations": g.annotations(),
                       "finalizers": g.finalizers(), "ownerReferences": g.owner_references(),
                       "deletionTimestamp": g.metadata.deletion_timestamp}),
            );
        }
        for l in ns.api::<Lease>().list(&lp).await.expect("list leases") {
            let mut v = serde_json::to_value(&l).unwrap();
            v["metadata"]["managedFields"] = Value::Null;
            m.insert(format!("lease/{}", l.name_any()), v);
        }
        for c in ns
            .api::<ConfigMap>()
            .list(&lp)
            .await
            .expect("list configmaps")
        {
            let mut v = serde_json::to_value(&c).unwrap();
            v["metadata"]["managedFields"] = Value::Null;
            m.insert(format!("configmap/{}", c.name_any()), v);
        }
        for s in ns.api::<Service>().list(&lp).await.expect("list services") {
            let mut v = serde_json::to_value(&s).unwrap();
            v["metadata"]["managedFields"] = Value::Null;
            m.insert(format!("service/{}", s.name_any()), v);
        }
        Snapshot(m)
    }

    /// Removes what podium may write from one snapshot.
    fn without(&self, before: &Snapshot, allowed: &Allowed<'_>) -> BTreeMap<String, Value> {
        let mut m = self.0.clone();
        m.remove(&format!("electiongroup/{}", allowed.group));
        // The Lease named after the group is podium's to create, unless it existed before.
        let lease = format!("lease/{}", allowed.group);
        if !before.0.contains_key(&lease) {
            m.remove(&lease);
        }
        for pod in allowed.members {
            if let Some(v) = m.get_mut(&format!("pod/{pod}")) {
                for key in allowed.role_labels {
                    if let Some(l) = v["labels"].as_object_mut() {
                        l.remove(*key);
                    }
                }
                if let Some(a) = v["annotations"].as_object_mut() {
                    a.remove(TERM_ANNOTATION);
                    a.remove(GROUP_ANNOTATION);
                }
            }
        }
        m
    }

    /// Lines describing what changed between `self` (before) and `after`, beyond `allowed`.
    fn diff(&self, after: &Snapshot, allowed: &Allowed<'_>) -> Vec<String> {
        let before = self.without(self, allowed);
        let after = after.without(self, allowed);
        let mut out = Vec::new();
        for (k, v) in &before {
            match after.get(k) {
                None => out.push(format!("{k} disappeared")),
                Some(w) if w != v => out.push(format!("{k} changed:\n  before {v}\n  after  {w}")),
                _ => {}
            }
        }
        for k in after.keys().filter(|k| !before.contains_key(*k)) {
            out.push(format!("{k} appeared: {}", after[k]));
        }
        out
    }

    /// Panics, listing the changes, unless nothing beyond `allowed` changed since `self`.
    async fn assert_unchanged(&self, ns: &TestNs, allowed: &Allowed<'_>) {
        let after = Snapshot::take(ns).await;
        let diff = self.diff(&after, allowed);
        assert!(
            diff.is_empty(),
            "objects outside group {} changed:\n{}",
            allowed.group,
            diff.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------
// Running a table of cases and reporting each.
// ---------------------------------------------------------------------------------------

/// Outcomes of the cases of one test. It holds the operator while the cases run, so that
/// each case can borrow the Setup while the report checks the process after it.
struct Report {
    operator: Operator,
    namespace: String,
    log: std::path::PathBuf,
    /// How much of the log earlier cases were judged by.
    log_seen: usize,
    results: Vec<(String, Result<(), String>)>,
}

impl Report {
    fn new(s: &mut Setup) -> Self {
        Self {
            operator: s.operator.take().expect("the operator runs"),
            namespace: s.ns.name.clone(),
            log: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("target/e2e-logs/{}.log", s.ns.name)),
            log_seen: 0,
            results: Vec::new(),
        }
    }

    /// Runs one case, catching its panic so that the remaining cases still run. A case after
    /// which the operator is dead or has panicked fails; the operator is then restarted so
    /// that the next case is judged on its own.
    async fn run(&mut self, name: &str, case: impl Future<Output = ()>) {
        println!("=== case: {name}");
        let outcome = AssertUnwindSafe(case).catch_unwind().await;
        let mut result = outcome.map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into())
        });
        if let Some(e) = self.operator_broken() {
            result = Err(format!("{e}; {}", result.err().unwrap_or_default()));
            println!("=== restarting the operator after: {e}");
            let old = std::mem::replace(
                &mut self.operator,
                Operator::start(&self.namespace, &[]).await,
            );
            old.kill().await;
        }
        println!(
            "=== {name}: {}",
            if result.is_ok() { "ok" } else { "FAILED" }
        );
        self.results.push((name.to_string(), result));
    }

    /// Why the operator is not healthy: exited, or panicked in a task (its log says so, in
    /// the part written since the last check).
    fn operator_broken(&mut self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let new = text.get(self.log_seen..).unwrap_or_default().to_string();
        self.log_seen = text.len();
        if !self.operator.alive() {
            let why = new.lines().find(|l| l.contains("panicked")).unwrap_or("");
            return Some(format!("the operator exited {why}"));
        }
        new.lines()
            .find(|l| l.contains("panicked"))
            .map(|l| format!("the operator panicked: {l}"))
    }

    /// Hands the operator back and fails the test if any case failed, listing them all.
    fn finish(mut self, s: &mut Setup) {
        let broken = self.operator_broken();
        s.operator = Some(self.operator);
        let failed: Vec<_> = self.results.iter().filter(|r| r.1.is_err()).collect();
        println!("{} cases, {} failed", self.results.len(), failed.len());
        let mut text = String::new();
        for (name, r) in &failed {
            let why: String = r.as_ref().err().unwrap().chars().take(2000).collect();
            text.push_str(&format!("\n- {name}: {why}"));
        }
        assert!(failed.is_empty(), "failing cases:{text}");
        assert!(broken.is_none(), "{broken:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------

/// Key-value pairs: labels or annotations.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

/// Creates pods (name, labels, annotations) one after another (creation order is age
/// order) and waits until they run.
async fn pods(s: &Setup, specs: &[(&str, Pairs<'_>, Pairs<'_>)]) {
    for (i, (name, labels, annotations)) in specs.iter().enumerate() {
        if i > 0 {
            // Creation timestamps have one-second resolution.
            tokio::time::sleep(Duration::from_millis(1050)).await;
        }
        s.ns.create_pod_with(name, labels, annotations).await;
    }
    for (name, ..) in specs {
        s.ns.wait_running(name).await;
    }
}

/// A full condition of a group.
fn cond(
    g: &ElectionGroup,
    type_: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status(g).conditions.into_iter().find(|c| c.type_ == type_)
}

/// How long a case waits for something the operator should do.
const PATIENCE: Duration = Duration::from_secs(30);

/// The group's status in one line: leader, term, observedGeneration, conditions.
fn summary(g: Option<&ElectionGroup>) -> String {
    let Some(g) = g else {
        return "no such group".into();
    };
    let st = status(g);
    let conds: Vec<String> = st
        .conditions
        .iter()
        .map(|c| format!("{}={}/{} ({})", c.type_, c.status, c.reason, c.message))
        .collect();
    format!(
        "leader {:?}, term {}, generation {:?} observed {:?}, conditions [{}]",
        st.leader,
        st.term,
        g.metadata.generation,
        st.observed_generation,
        conds.join("; ")
    )
}

/// Polls until `ok` holds for the group, or panics after `PATIENCE` saying what it waited for
/// and what the group's status was.
async fn wait_until(
    s: &Setup,
    group: &str,
    what: &str,
    ok: impl Fn(&ElectionGroup) -> bool,
) -> ElectionGroup {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let g = s.groups().get_opt(group).await.expect("get group");
        if let Some(g) = g.as_ref().filter(|g| ok(g)) {
            return g.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{group}: no {what} within {PATIENCE:?}; {}",
            summary(g.as_ref())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the group has handled its current generation and `ok` holds.
async fn wait_observed(
    s: &Setup,
    group: &str,
    what: &str,
    ok: impl Fn(&ElectionGroup) -> bool,
) -> ElectionGroup {
    wait_until(s, group, what, |g| {
        status(g).observed_generation == g.metadata.generation && ok(g)
    })
    .await
}

/// Waits until the named pods carry exactly these role values under `role_label`
/// (other pods are not looked at) and status names `leader`.
async fn wait_roles(
    s: &Setup,
    group: &str,
    role_label: &str,
    leader: &str,
    followers: &[&str],
) -> ElectionGroup {
    let want: BTreeMap<String, Option<String>> = std::iter::once((leader, "leader"))
        .chain(followers.iter().map(|f| (*f, "follower")))
        .map(|(p, r)| (p.to_string(), Some(r.to_string())))
        .collect();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let mut seen = BTreeMap::new();
        for name in want.keys() {
            let p = s.ns.api::<Pod>().get_opt(name).await.expect("get pod");
            seen.insert(name.clone(), p.and_then(|p| label(&p, role_label)));
        }
        if seen == want {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{group}: {leader} did not lead under {role_label} within {PATIENCE:?}; roles {seen:?}; {}",
            summary(s.groups().get_opt(group).await.unwrap().as_ref())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_until(s, group, &format!("status naming {leader}"), |g| {
        status(g).leader.as_deref() == Some(leader)
    })
    .await
}

/// Polls until `ok` holds for each named pod; on timeout shows their labels and annotations.
async fn wait_pods(s: &Setup, names: &[&str], what: &str, ok: impl Fn(&Pod) -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let mut pods = Vec::new();
        for name in names {
            pods.push(s.ns.api::<Pod>().get(name).await.expect("get pod"));
        }
        if pods.iter().all(&ok) {
            return;
        }
        let seen: Vec<String> = pods
            .iter()
            .map(|p| {
                format!(
                    "{}: labels {:?} annotations {:?}",
                    p.name_any(),
                    p.labels(),
                    p.annotations()
                )
            })
            .collect();
        assert!(
            std::time::Instant::now() < deadline,
            "no {what} within {PATIENCE:?}:\n{}",
            seen.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for an Event with `reason` about the group; on timeout lists the reasons seen.
async fn wait_event(s: &Setup, group: &str, reason: &str) -> Event {
    let api = s.ns.api::<Event>();
    let lp = ListParams::default().fields(&format!("regarding.name={group}"));
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let evs = api.list(&lp).await.expect("list events").items;
        if let Some(e) = evs.iter().find(|e| e.reason.as_deref() == Some(reason)) {
            return e.clone();
        }
        let reasons: Vec<_> = evs.iter().filter_map(|e| e.reason.clone()).collect();
        assert!(
            std::time::Instant::now() < deadline,
            "{group}: no {reason} Event within {PATIENCE:?}; events seen: {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asserts a Warning Event with `reason` on the group, whose note mentions `mentions`.
async fn assert_warning(s: &Setup, group: &str, reason: &str, mentions: &str) {
    let ev = wait_event(s, group, reason).await;
    assert_eq!(
        ev.type_.as_deref(),
        Some("Warning"),
        "{reason} event: {ev:?}"
    );
    let note = ev.note.unwrap_or_default();
    assert!(
        note.contains(mentions),
        "{reason} event does not name {mentions}: {note}"
    );
}

async fn annotate_group(s: &Setup, group: &str, key: &str, value: &str) {
    s.groups()
        .patch(
            group,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("annotate {group}: {e}"));
}

async fn delete_group_and_wait(s: &Setup, group: &str) {
    s.groups()
        .delete(group, &DeleteParams::default())
        .await
        .ok();
    let gone = tokio::time::timeout(Duration::from_secs(20), async {
        while s.groups().get_opt(group).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "group {group} was not deleted within 20 s");
}

// ---------------------------------------------------------------------------------------
// 1. Admission: a roleLabel the selector uses, and malformed specs invalid.rs lacks.
// ---------------------------------------------------------------------------------------

enum Admission {
    /// The create fails with a message containing this.
    Rejected(&'static str),
    /// Rejected at admission, or admitted and reported with SpecValid=False and an
    /// InvalidSpec Warning Event (the SPEC allows either, depending on what the schema can say).
    RejectedOrReported,
}

struct AdmissionCase {
    name: &'static str,
    spec: Value,
    expect: Admission,
}

fn admission_cases() -> Vec<AdmissionCase> {
    use Admission::*;
    let bad = || json!({"matchLabels": {"app": "bad"}});
    let a63 = "a".repeat(63);
    vec![
        AdmissionCase {
            name: "roleLabel is a matchLabels key",
            spec: json!({"selector": bad(), "roleLabel": "app"}),
            expect: Rejected(COLLISION),
        },
        AdmissionCase {
            name: "roleLabel is a prefixed matchLabels key",
            spec: json!({"selector": {"matchLabels": {"example.com/tier": "db"}}, "roleLabel": "example.com/tier"}),
            expect: Rejected(COLLISION),
        },
        AdmissionCase {
            name: "roleLabel is the key of an In expression",
            spec: json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["bad"]}]},
                         "roleLabel": "app"}),
            expect: Rejected(COLLISION),
        },
        AdmissionCase {
            name: "roleLabel is the key of an Exists expression",
            spec: json!({"selector": {"matchLabels": {"app": "bad"},
                                      "matchExpressions": [{"key": "track", "operator": "Exists"}]},
                         "roleLabel": "track"}),
            expect: Rejected(COLLISION),
        },
        AdmissionCase {
            name: "roleLabel is the key of a NotIn expression",
            spec: json!({"selector": {"matchLabels": {"app": "bad"},
                                      "matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["leader"]}]},
                         "roleLabel": "role"}),
            expect: Rejected(COLLISION),
        },
        AdmissionCase {
            name: "default roleLabel used by a DoesNotExist expression (roleLabel omitted)",
            spec: json!({"selector": {"matchLabels": {"app": "bad"},
                                      "matchExpressions": [{"key": ROLE, "operator": "DoesNotExist"}]}}),
            expect: Rejected(COLLISION),
        },
        AdmissionCase {
            name: "matchLabels value that is not a label value",
            spec: json!({"selector": {"matchLabels": {"app": "bad value!"}}}),
            expect: RejectedOrReported,
        },
        AdmissionCase {
            name: "matchExpressions key that is not a label key",
            spec: json!({"selector": {"matchExpressions": [{"key": "bad key!", "operator": "Exists"}]}}),
            expect: RejectedOrReported,
        },
        AdmissionCase {
            name: "Exists expression with values",
            spec: json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["bad"]}]}}),
            expect: RejectedOrReported,
        },
        AdmissionCase {
            name: "roleLabel name part over 63 characters",
            spec: json!({"selector": bad(), "roleLabel": format!("example.com/{}", "r".repeat(64))}),
            expect: RejectedOrReported,
        },
        AdmissionCase {
            name: "roleLabel prefix over 253 characters",
            spec: json!({"selector": bad(), "roleLabel": format!("{a63}.{a63}.{a63}.{a63}/role")}),
            expect: RejectedOrReported,
        },
        AdmissionCase {
            name: "@every with a duration that overflows",
            spec: json!({"selector": bad(), "handoff": {"schedule": "@every 9999999999999999h"}}),
            expect: RejectedOrReported,
        },
        AdmissionCase {
            name: "negative maxTerm",
            spec: json!({"selector": bad(), "handoff": {"maxTerm": "-5s"}}),
            expect: RejectedOrReported,
        },
        AdmissionCase {
            name: "maxTerm that overflows",
            spec: json!({"selector": bad(), "handoff": {"maxTerm": "9999999999999999h"}}),
            expect: RejectedOrReported,
        },
    ]
}

/// Labels of the bystander pods every admission case's selector would pick.
fn bystanders() -> Vec<(&'static str, Pairs<'static>)> {
    let mut labels = vec![
        ("app", "bad"),
        ("example.com/tier", "db"),
        ("track", "stable"),
    ];
    let first = [labels.clone(), vec![("role", "x")]].concat();
    labels.truncate(3);
    vec![("bad-0", first), ("bad-1", labels)]
}

/// Puts the bystanders back as they were created, should a wrongly admitted group of an
/// earlier case have changed them, so that each case starts from the same state.
async fn restore_bystanders(s: &Setup) {
    for (name, labels) in bystanders() {
        let pod = s.ns.api::<Pod>().get(name).await.expect("bystander");
        let mut want: serde_json::Map<String, Value> = pod
            .labels()
            .keys()
            .map(|k| (k.clone(), Value::Null))
            .collect();
        for (k, v) in labels {
            want.insert(k.into(), v.into());
        }
        let annotations: serde_json::Map<String, Value> = pod
            .annotations()
            .keys()
            .map(|k| (k.clone(), Value::Null))
            .collect();
        let patch = json!({"metadata": {"labels": want, "annotations": annotations}});
        s.ns.api::<Pod>()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .expect("restore bystander");
    }
}

/// Runs one admission case, then deletes its group if it was admitted.
async fn run_admission(s: &Setup, i: usize, c: &AdmissionCase) {
    let name = format!("adm-{i}");
    restore_bystanders(s).await;
    let outcome = AssertUnwindSafe(admission_case(s, &name, c))
        .catch_unwind()
        .await;
    if s.groups().get_opt(&name).await.unwrap().is_some() {
        delete_group_and_wait(s, &name).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn admission_case(s: &Setup, name: &str, c: &AdmissionCase) {
    let name = name.to_string();
    let before = Snapshot::take(&s.ns).await;
    let allowed = Allowed {
        group: &name,
        members: &[],
        role_labels: &[],
    };
    match (s.create_raw(&name, c.spec.clone()).await, &c.expect) {
        (Err(kube::Error::Api(e)), expect) => {
            assert!(
                matches!(e.code, 400 | 422),
                "unexpected status {}: {}",
                e.code,
                e.message
            );
            if let Admission::Rejected(msg) = expect {
                assert!(
                    e.message.contains(msg),
                    "rejected, but the message lacks {msg:?}: {}",
                    e.message
                );
            }
            println!("rejected at admission: {}", e.message);
        }
        (Err(e), _) => panic!("create failed oddly: {e}"),
        (Ok(_), Admission::Rejected(_)) => {
            // Give an admitted group time to do its damage, so that the report shows it.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let diff = before.diff(&Snapshot::take(&s.ns).await, &allowed);
            panic!(
                "admitted; expected a rejection containing {COLLISION:?}; changes meanwhile:\n{}",
                diff.join("\n")
            );
        }
        (Ok(_), Admission::RejectedOrReported) => {
            let g = wait_observed(s, &name, "SpecValid=False", |g| {
                condition(g, "SpecValid").is_some_and(|c| c.0 == "False")
            })
            .await;
            println!("reported: {:?}", cond(&g, "SpecValid").map(|c| c.message));
            wait_event(s, &name, "InvalidSpec").await;
        }
    }
    before.assert_unchanged(&s.ns, &allowed).await;
}

/// A leading group updated to a roleLabel its selector uses: the update is rejected and the
/// group keeps its leader.
async fn run_admission_update(s: &Setup) {
    pods(
        s,
        &[
            ("upd-0", vec![("app", "upd")], vec![]),
            ("upd-1", vec![("app", "upd")], vec![]),
        ],
    )
    .await;
    s.apply_group("upd", json!({"selector": {"matchLabels": {"app": "upd"}}}))
        .await
        .unwrap();
    wait_roles(s, "upd", ROLE, "upd-0", &["upd-1"]).await;
    let before = Snapshot::take(&s.ns).await;
    let allowed = Allowed {
        group: "upd",
        members: &["upd-0", "upd-1"],
        role_labels: &[ROLE],
    };
    let res = s
        .apply_group(
            "upd",
            json!({"selector": {"matchLabels": {"app": "upd"}}, "roleLabel": "app"}),
        )
        .await;
    match res {
        Err(kube::Error::Api(e)) => {
            assert!(
                e.message.contains(COLLISION),
                "rejected, but the message lacks {COLLISION:?}: {}",
                e.message
            )
        }
        other => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let diff = before.diff(&Snapshot::take(&s.ns).await, &allowed);
            panic!(
                "update to roleLabel app not rejected: {:?}; changes:\n{}",
                other.map(|_| ()),
                diff.join("\n")
            )
        }
    }
    let g = s.groups().get("upd").await.unwrap();
    assert_eq!(g.spec.role_label, ROLE, "the stored spec changed");
    wait_roles(s, "upd", ROLE, "upd-0", &["upd-1"]).await;
    assert_eq!(status(&g).term, 1);
    before.assert_unchanged(&s.ns, &allowed).await;
}

/// The classic: a Deployment's own selector key as roleLabel. Rejected; the Deployment's pods
/// keep `app: web` and no extra pods appear. Runs last: when it is wrongly admitted the
/// ReplicaSet and podium fight over the pods.
async fn run_admission_deployment(s: &Setup) {
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}],
                         "terminationGracePeriodSeconds": 0}
            }
        }
    }))
    .unwrap();
    s.ns.api::<Deployment>()
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();
    let web = wait_for_list(
        &s.ns.api::<Pod>(),
        watcher::Config::default().labels("app=web"),
        Duration::from_secs(60),
        "2 ready web pods",
        |pods| pods.len() == 2 && pods.iter().all(|p| pod_ready(p)),
    )
    .await;
    let mut uids: Vec<_> = web.iter().map(|p| p.uid()).collect();
    uids.sort();
    let before = Snapshot::take(&s.ns).await;
    let allowed = Allowed {
        group: "web",
        members: &[],
        role_labels: &[],
    };
    let res = s
        .create_raw(
            "web",
            json!({"selector": {"matchLabels": {"app": "web"}}, "roleLabel": "app"}),
        )
        .await;
    // Long enough for a wrongly admitted group to relabel the pods and the ReplicaSet to react.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let diff = before.diff(&Snapshot::take(&s.ns).await, &allowed);
    let now: Vec<_> = list(&s.ns.api::<Pod>(), "")
        .await
        .iter()
        .filter(|p| p.name_any().starts_with("web-"))
        .map(|p| p.uid())
        .collect();
    let mut now = now;
    now.sort();
    match res {
        Err(kube::Error::Api(e)) => {
            assert!(
                e.message.contains(COLLISION),
                "rejected, but the message lacks {COLLISION:?}: {}",
                e.message
            );
            println!("rejected at admission: {}", e.message);
        }
        other => panic!(
            "admitted: {:?}; web pods before {uids:?}, now {now:?}; changes:\n{}",
            other.map(|_| ()),
            diff.join("\n")
        ),
    }
    assert!(diff.is_empty(), "objects changed:\n{}", diff.join("\n"));
    assert_eq!(now, uids, "the Deployment's pods changed");
}

#[tokio::test]
async fn hostile_specs_are_rejected_at_admission_or_reported() {
    let mut s = Setup::new("hostile-adm").await;
    // Bystanders every malformed selector would pick, and a working group beside them.
    let mut specs: Vec<(&str, Pairs<'_>, Pairs<'_>)> = bystanders()
        .into_iter()
        .map(|(name, labels)| (name, labels, vec![]))
        .collect();
    specs.push(("can-0", vec![("app", "canary")], vec![]));
    specs.push(("can-1", vec![("app", "canary")], vec![]));
    pods(&s, &specs).await;
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "bystander", "labels": {"app": "bad"}}, "data": {"k": "v"}}),
    )
    .unwrap();
    s.ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    create_service(&s.ns, "bad", json!({"app": "bad"})).await;
    s.apply_group(
        "canary",
        json!({"selector": {"matchLabels": {"app": "canary"}}}),
    )
    .await
    .unwrap();
    wait_roles(&s, "canary", ROLE, "can-0", &["can-1"]).await;

    let cases = admission_cases();
    let mut report = Report::new(&mut s);
    for (i, c) in cases.iter().enumerate() {
        report.run(c.name, run_admission(&s, i, c)).await;
    }
    report
        .run(
            "update of a leading group to a roleLabel its selector uses",
            run_admission_update(&s),
        )
        .await;
    report
        .run(
            "Deployment app=web with roleLabel app",
            run_admission_deployment(&s),
        )
        .await;

    // The working group still fails over while the hostile ones sit there.
    report
        .run("canary group still fails over", async {
            s.ns.delete_pod_now("can-0").await;
            let g = wait_roles(&s, "canary", ROLE, "can-1", &[]).await;
            assert_eq!(status(&g).term, 2);
        })
        .await;
    report.finish(&mut s);
}

// ---------------------------------------------------------------------------------------
// 2. Members already carrying the role key with a foreign value.
// ---------------------------------------------------------------------------------------

struct ForeignCase {
    name: &'static str,
    role_label: &'static str,
    /// Extra labels on the foreign pod (beside `app`).
    labels: Vec<(&'static str, &'static str)>,
    annotations: Vec<(&'static str, &'static str)>,
}

fn foreign_cases() -> Vec<ForeignCase> {
    let c = |name, role_label, labels, annotations| ForeignCase {
        name,
        role_label,
        labels,
        annotations,
    };
    vec![
        c(
            "foreign value primary",
            ROLE,
            vec![(ROLE, "primary")],
            vec![],
        ),
        c(
            "leader label podium did not write (no group annotation)",
            ROLE,
            vec![(ROLE, "leader")],
            vec![],
        ),
        c(
            "follower label podium did not write (no group annotation)",
            ROLE,
            vec![(ROLE, "follower")],
            vec![],
        ),
        c(
            "leader label with another group's annotation",
            ROLE,
            vec![(ROLE, "leader")],
            vec![(GROUP_ANNOTATION, "someone-else"), (TERM_ANNOTATION, "7")],
        ),
        c("empty role value", ROLE, vec![(ROLE, "")], vec![]),
        c(
            "custom roleLabel already set to a foreign value",
            "example.com/role",
            vec![("example.com/role", "primary")],
            vec![],
        ),
        c(
            "roleLabel is a well-known label the app already uses",
            "app.kubernetes.io/component",
            vec![("app.kubernetes.io/component", "api")],
            vec![],
        ),
    ]
}

/// The foreign pod is the oldest (it would lead if it were a candidate); two clean pods follow.
/// It is left alone and reported; the clean pods get a leader. Deleting the group removes
/// podium's keys from the clean pods and still leaves the foreign pod alone.
async fn run_foreign(s: &Setup, i: usize, c: &ForeignCase) {
    let app = format!("f{i}");
    let group = format!("foreign-{i}");
    let (f, c0, c1) = (
        format!("f{i}-foreign"),
        format!("f{i}-c0"),
        format!("f{i}-c1"),
    );
    let mut labels = vec![("app", app.as_str())];
    labels.extend(c.labels.iter().copied());
    pods(
        s,
        &[
            (f.as_str(), labels, c.annotations.clone()),
            (c0.as_str(), vec![("app", app.as_str())], vec![]),
            (c1.as_str(), vec![("app", app.as_str())], vec![]),
        ],
    )
    .await;
    let before = Snapshot::take(&s.ns).await;
    let members = [c0.as_str(), c1.as_str()];
    let allowed = Allowed {
        group: &group,
        members: &members,
        role_labels: &[c.role_label],
    };
    s.apply_group(
        &group,
        json!({"selector": {"matchLabels": {"app": app}}, "roleLabel": c.role_label}),
    )
    .await
    .unwrap();
    let g = wait_observed(s, &group, "Conflict ForeignRoleLabel", |g| {
        condition(g, "Conflict") == Some(("True".into(), "ForeignRoleLabel".into()))
    })
    .await;
    let message = cond(&g, "Conflict").unwrap().message;
    assert!(
        message.contains(&f),
        "the Conflict condition does not name {f}: {message}"
    );
    assert_warning(s, &group, "ForeignRoleLabel", &f).await;
    let g = wait_roles(s, &group, c.role_label, &c0, &[&c1]).await;
    assert_eq!(status(&g).term, 1);
    before.assert_unchanged(&s.ns, &allowed).await;

    // Cleanup on delete removes podium's keys only where podium wrote them.
    delete_group_and_wait(s, &group).await;
    let allowed = Allowed {
        group: &group,
        members: &[],
        role_labels: &[],
    };
    // Every pod — the clean ones with podium's keys removed, the foreign one untouched — is
    // as it was before the group existed.
    before.assert_unchanged(&s.ns, &allowed).await;
}

#[tokio::test]
async fn foreign_role_labels_are_reported_not_relabelled() {
    let mut s = Setup::new("hostile-foreign").await;
    let mut report = Report::new(&mut s);
    for (i, c) in foreign_cases().iter().enumerate() {
        report.run(c.name, run_foreign(&s, i, c)).await;
    }
    report.finish(&mut s);
}

// ---------------------------------------------------------------------------------------
// 3. Term annotations podium did not write.
// ---------------------------------------------------------------------------------------

struct TermCase {
    name: &'static str,
    /// Annotations on the oldest pod, which becomes the first leader.
    first: Vec<(&'static str, String)>,
    /// `podium.dev/term` on the second pod, which also carries `podium.dev/group: <this group>`
    /// as if podium had written it; it becomes leader on failover.
    second: Option<String>,
}

fn term_cases() -> Vec<TermCase> {
    let junk = |name, v: &str| TermCase {
        name,
        first: vec![(TERM_ANNOTATION, v.to_string())],
        second: Some(v.to_string()),
    };
    vec![
        junk("i64::MAX", "9223372036854775807"),
        junk("above 2^53", "9007199254740993"),
        junk("above u64::MAX", "18446744073709551616"),
        junk("negative", "-5"),
        junk("zero", "0"),
        junk("not a number", "banana"),
        junk("ten thousand digits", &"9".repeat(10_000)),
        junk("float", "4.5e3"),
        TermCase {
            name: "plausible term on a pod podium never managed",
            first: vec![(TERM_ANNOTATION, "41".into())],
            second: None,
        },
        TermCase {
            name: "plausible term on a pod of another group",
            first: vec![
                (TERM_ANNOTATION, "41".into()),
                (GROUP_ANNOTATION, "other-group".into()),
            ],
            second: None,
        },
    ]
}

/// What the SPEC implies: `podium.dev/term` is podium's own key on the members it manages,
/// written on the leader and carried by no follower, so podium may overwrite or remove it
/// there; the snapshot allows that. What must hold: junk never becomes (or pushes) a term —
/// the first leadership gets term 1, the next term 2, status and annotation agree — and the
/// operator survives.
///
/// Each case removes its group and pods afterwards, pass or fail, so that a group which
/// kills the operator does not kill it again for the next case.
async fn run_term(s: &Setup, i: usize, c: &TermCase) {
    let outcome = AssertUnwindSafe(term_case(s, i, c)).catch_unwind().await;
    let group = format!("term-{i}");
    let _ = s.groups().delete(&group, &DeleteParams::default()).await;
    let strip = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let _ = s
        .groups()
        .patch_metadata(&group, &PatchParams::default(), &strip)
        .await;
    for p in ["a", "b", "c"] {
        let _ =
            s.ns.api::<Pod>()
                .delete(
                    &format!("t{i}-{p}"),
                    &DeleteParams::default().grace_period(0),
                )
                .await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn term_case(s: &Setup, i: usize, c: &TermCase) {
    let app = format!("t{i}");
    let group = format!("term-{i}");
    let (a, b, c2) = (format!("t{i}-a"), format!("t{i}-b"), format!("t{i}-c"));
    let first: Vec<(&str, &str)> = c.first.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let second: Vec<(&str, &str)> = match &c.second {
        Some(v) => vec![
            (TERM_ANNOTATION, v.as_str()),
            (GROUP_ANNOTATION, group.as_str()),
        ],
        None => vec![],
    };
    pods(
        s,
        &[
            (a.as_str(), vec![("app", app.as_str())], first),
            (b.as_str(), vec![("app", app.as_str())], second),
            (c2.as_str(), vec![("app", app.as_str())], vec![]),
        ],
    )
    .await;
    let before = Snapshot::take(&s.ns).await;
    let members = [a.as_str(), b.as_str(), c2.as_str()];
    let allowed = Allowed {
        group: &group,
        members: &members,
        role_labels: &[ROLE],
    };
    s.apply_group(&group, json!({"selector": {"matchLabels": {"app": app}}}))
        .await
        .unwrap();
    let g = wait_roles(s, &group, ROLE, &a, &[&b, &c2]).await;
    assert_eq!(status(&g).term, 1, "the first leadership has term 1");
    wait_pods(s, &[&a], "term 1 on the leader", |p| {
        annotation(p, TERM_ANNOTATION).as_deref() == Some("1")
    })
    .await;
    before.assert_unchanged(&s.ns, &allowed).await;

    s.ns.delete_pod_now(&a).await;
    let g = wait_roles(s, &group, ROLE, &b, &[&c2]).await;
    assert_eq!(status(&g).term, 2, "terms rise by one");
    wait_pods(s, &[&b], "term 2 on the new leader", |p| {
        annotation(p, TERM_ANNOTATION).as_deref() == Some("2")
    })
    .await;
}

#[tokio::test]
async fn term_annotations_podium_did_not_write_are_ignored() {
    let mut s = Setup::new("hostile-term").await;
    let mut report = Report::new(&mut s);
    for (i, c) in term_cases().iter().enumerate() {
        report.run(c.name, run_term(&s, i, c)).await;
    }
    report.finish(&mut s);
}

// ---------------------------------------------------------------------------------------
// 4. Junk handoff requests and junk priorities.
// ---------------------------------------------------------------------------------------

/// A handoff target; `{other}` is a pod of another group, `{bystander}` a pod no group selects.
fn handoff_cases() -> Vec<(&'static str, String)> {
    vec![
        ("empty handoff-to", String::new()),
        ("handoff-to of 10k characters", "x".repeat(10_000)),
        ("handoff-to a pod of another group", "{other}".into()),
        ("handoff-to a non-member pod", "{bystander}".into()),
        ("handoff-to the group's own name", "{group}".into()),
    ]
}

async fn run_handoff(s: &Setup, i: usize, target: &str) {
    let app = format!("h{i}");
    let group = format!("handoff-{i}");
    let (p0, p1) = (format!("h{i}-0"), format!("h{i}-1"));
    pods(
        s,
        &[
            (p0.as_str(), vec![("app", app.as_str())], vec![]),
            (p1.as_str(), vec![("app", app.as_str())], vec![]),
        ],
    )
    .await;
    s.apply_group(&group, json!({"selector": {"matchLabels": {"app": app}}}))
        .await
        .unwrap();
    wait_roles(s, &group, ROLE, &p0, &[&p1]).await;
    let target = target
        .replace("{other}", "o-1")
        .replace("{bystander}", "by-0")
        .replace("{group}", &group);
    let before = Snapshot::take(&s.ns).await;
    let members = [p0.as_str(), p1.as_str()];
    let allowed = Allowed {
        group: &group,
        members: &members,
        role_labels: &[ROLE],
    };
    annotate_group(s, &group, HANDOFF_ANNOTATION, &target).await;
    wait_until(s, &group, "request removed", |g| {
        !g.annotations().contains_key(HANDOFF_ANNOTATION)
    })
    .await;
    let ev = wait_event(s, &group, "HandoffRejected").await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    let g = s.groups().get(&group).await.unwrap();
    assert_eq!(
        status(&g).leader.as_deref(),
        Some(p0.as_str()),
        "the leader changed"
    );
    assert_eq!(status(&g).term, 1, "the term changed");
    before.assert_unchanged(&s.ns, &allowed).await;
}

/// Priorities podium cannot read count as 0: the pod with priority 1 leads, though younger.
fn priority_cases() -> Vec<(&'static str, String)> {
    vec![
        ("priority not a number", "high".into()),
        ("priority above i64::MAX", "9223372036854775808".into()),
        ("priority above u64::MAX", "99999999999999999999".into()),
        ("priority in hex", "0x10".into()),
        ("priority empty", String::new()),
        ("priority of ten thousand digits", "9".repeat(10_000)),
        ("priority as a float", "1.5e3".into()),
    ]
}

async fn run_priority(s: &Setup, i: usize, value: &str) {
    let app = format!("pr{i}");
    let group = format!("prio-{i}");
    let (junk, ok) = (format!("pr{i}-junk"), format!("pr{i}-one"));
    pods(
        s,
        &[
            (
                junk.as_str(),
                vec![("app", app.as_str())],
                vec![("podium.dev/priority", value)],
            ),
            (
                ok.as_str(),
                vec![("app", app.as_str())],
                vec![("podium.dev/priority", "1")],
            ),
        ],
    )
    .await;
    let before = Snapshot::take(&s.ns).await;
    let members = [junk.as_str(), ok.as_str()];
    let allowed = Allowed {
        group: &group,
        members: &members,
        role_labels: &[ROLE],
    };
    s.apply_group(
        &group,
        json!({"selector": {"matchLabels": {"app": app}}, "preference": "Priority"}),
    )
    .await
    .unwrap();
    let g = wait_roles(s, &group, ROLE, &ok, &[&junk]).await;
    assert_eq!(status(&g).term, 1);
    before.assert_unchanged(&s.ns, &allowed).await;
}

#[tokio::test]
async fn junk_handoff_requests_and_priorities_change_nothing() {
    let mut s = Setup::new("hostile-junk").await;
    pods(
        &s,
        &[
            ("o-0", vec![("app", "other")], vec![]),
            ("o-1", vec![("app", "other")], vec![]),
            ("by-0", vec![("app", "bystander")], vec![]),
        ],
    )
    .await;
    s.apply_group(
        "other",
        json!({"selector": {"matchLabels": {"app": "other"}}}),
    )
    .await
    .unwrap();
    wait_roles(&s, "other", ROLE, "o-0", &["o-1"]).await;
    let mut report = Report::new(&mut s);
    for (i, (name, target)) in handoff_cases().iter().enumerate() {
        report.run(name, run_handoff(&s, i, target)).await;
    }
    for (i, (name, value)) in priority_cases().iter().enumerate() {
        report.run(name, run_priority(&s, i, value)).await;
    }
    report.finish(&mut s);
}

// ---------------------------------------------------------------------------------------
// 5. Foreign finalizers, Leases podium does not own, roleLabel changes.
// ---------------------------------------------------------------------------------------

async fn run_foreign_finalizer(s: &Setup) {
    pods(
        s,
        &[
            ("fin-0", vec![("app", "fin")], vec![]),
            ("fin-1", vec![("app", "fin")], vec![]),
        ],
    )
    .await;
    let body = json!({
        "apiVersion": "podium.dev/v1alpha1", "kind": "ElectionGroup",
        "metadata": {"name": "fin", "finalizers": ["example.com/keep"]},
        "spec": {"selector": {"matchLabels": {"app": "fin"}}},
    });
    s.groups()
        .create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
    wait_roles(s, "fin", ROLE, "fin-0", &["fin-1"]).await;
    let g = wait_until(s, "fin", "both finalizers", |g| {
        g.finalizers().iter().any(|f| f == FINALIZER)
    })
    .await;
    assert!(
        g.finalizers().iter().any(|f| f == "example.com/keep"),
        "the foreign finalizer was dropped: {:?}",
        g.finalizers()
    );
    // Deleting: podium cleans up and removes only its own finalizer.
    s.groups()
        .delete("fin", &DeleteParams::default())
        .await
        .unwrap();
    wait_pods(s, &["fin-0", "fin-1"], "cleanup of the role label", |p| {
        label(p, ROLE).is_none()
    })
    .await;
    let g = wait_until(s, "fin", "podium's finalizer gone", |g| {
        !g.finalizers().iter().any(|f| f == FINALIZER)
    })
    .await;
    assert_eq!(
        g.finalizers().to_vec(),
        vec!["example.com/keep".to_string()]
    );
    s.groups()
        .patch_metadata(
            "fin",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        while s.groups().get_opt("fin").await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "the group stayed after its last finalizer was removed"
    );
}

/// How the pre-existing Lease relates to the group.
#[derive(Clone, Copy)]
enum LeaseOwner {
    Nobody,
    /// Controlled by a bystander ConfigMap.
    ConfigMap,
    /// Owned by this group, but not as controller.
    GroupNotController,
}

async fn run_lease_not_owned(s: &Setup, i: usize, owner: LeaseOwner) {
    let app = format!("l{i}");
    let group = format!("lease-{i}");
    let (p0, p1) = (format!("l{i}-0"), format!("l{i}-1"));
    pods(
        s,
        &[
            (p0.as_str(), vec![("app", app.as_str())], vec![]),
            (p1.as_str(), vec![("app", app.as_str())], vec![]),
        ],
    )
    .await;
    let owner_refs = match owner {
        LeaseOwner::Nobody => json!([]),
        LeaseOwner::ConfigMap => {
            let cm: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": format!("owner-{i}")}}))
                    .unwrap();
            let cm =
                s.ns.api::<ConfigMap>()
                    .create(&PostParams::default(), &cm)
                    .await
                    .unwrap();
            json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": cm.name_any(), "uid": cm.uid(), "controller": true}])
        }
        LeaseOwner::GroupNotController => {
            // The group exists first (without a Lease), so its UID is known.
            let g = s
                .apply_group(&group, json!({"selector": {"matchLabels": {"app": app}}}))
                .await
                .unwrap();
            wait_roles(s, &group, ROLE, &p0, &[&p1]).await;
            json!([{"apiVersion": "podium.dev/v1alpha1", "kind": "ElectionGroup", "name": group,
                    "uid": g.uid(), "controller": false}])
        }
    };
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": group, "labels": {"owner": "someone-else"}, "ownerReferences": owner_refs},
        "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600, "leaseTransitions": 5},
    }))
    .unwrap();
    let lease =
        s.ns.api::<Lease>()
            .create(&PostParams::default(), &lease)
            .await
            .unwrap();
    let before = Snapshot::take(&s.ns).await;
    let members = [p0.as_str(), p1.as_str()];
    let allowed = Allowed {
        group: &group,
        members: &members,
        role_labels: &[ROLE],
    };
    s.apply_group(
        &group,
        json!({"selector": {"matchLabels": {"app": app}}, "publishLease": true}),
    )
    .await
    .unwrap();
    wait_observed(s, &group, "Conflict LeaseNotOwned", |g| {
        condition(g, "Conflict") == Some(("True".into(), "LeaseNotOwned".into()))
    })
    .await;
    assert_warning(s, &group, "LeaseNotOwned", "").await;
    wait_roles(s, &group, ROLE, &p0, &[&p1]).await;
    let now = s.ns.api::<Lease>().get(&group).await.unwrap();
    assert_eq!(
        now.resource_version(),
        lease.resource_version(),
        "the Lease was written: {now:?}"
    );
    assert_eq!(now.spec, lease.spec);
    assert_eq!(now.owner_references(), lease.owner_references());
    assert_eq!(now.labels(), lease.labels());
    before.assert_unchanged(&s.ns, &allowed).await;
}

/// A roleLabel change while leading moves podium's key and keeps the leader and the term.
async fn run_role_label_change(s: &Setup) {
    pods(
        s,
        &[
            ("rl-0", vec![("app", "rl"), ("keep", "me")], vec![]),
            ("rl-1", vec![("app", "rl")], vec![]),
            ("rl-2", vec![("app", "rl")], vec![]),
        ],
    )
    .await;
    s.apply_group("rl", json!({"selector": {"matchLabels": {"app": "rl"}}}))
        .await
        .unwrap();
    let g = wait_roles(s, "rl", ROLE, "rl-0", &["rl-1", "rl-2"]).await;
    let since = status(&g).leader_since;
    let before = Snapshot::take(&s.ns).await;
    let members = ["rl-0", "rl-1", "rl-2"];
    let allowed = Allowed {
        group: "rl",
        members: &members,
        role_labels: &[ROLE, "example.com/role"],
    };
    s.apply_group(
        "rl",
        json!({"selector": {"matchLabels": {"app": "rl"}}, "roleLabel": "example.com/role"}),
    )
    .await
    .unwrap();
    wait_roles(s, "rl", "example.com/role", "rl-0", &["rl-1", "rl-2"]).await;
    wait_pods(s, &members, "removal of the old role key", |p| {
        label(p, ROLE).is_none()
    })
    .await;
    let g = wait_observed(s, "rl", "new generation observed", |_| true).await;
    assert_eq!(status(&g).leader.as_deref(), Some("rl-0"));
    assert_eq!(status(&g).term, 1, "re-elected on a roleLabel change");
    assert_eq!(status(&g).leader_since, since, "leaderSince moved");
    assert_eq!(term_on(&s.ns, "rl-0").await, Some(1));
    before.assert_unchanged(&s.ns, &allowed).await;
}

/// A roleLabel change onto a key the members already use for something else: they keep it,
/// and the group reports them.
async fn run_role_label_change_onto_used_key(s: &Setup) {
    pods(
        s,
        &[
            ("tier-0", vec![("app", "tier"), ("tier", "backend")], vec![]),
            ("tier-1", vec![("app", "tier"), ("tier", "backend")], vec![]),
        ],
    )
    .await;
    s.apply_group(
        "tier",
        json!({"selector": {"matchLabels": {"app": "tier"}}}),
    )
    .await
    .unwrap();
    wait_roles(s, "tier", ROLE, "tier-0", &["tier-1"]).await;
    let before = Snapshot::take(&s.ns).await;
    let members = ["tier-0", "tier-1"];
    // podium may remove its old key; `tier` is not podium's.
    let allowed = Allowed {
        group: "tier",
        members: &members,
        role_labels: &[ROLE],
    };
    s.apply_group(
        "tier",
        json!({"selector": {"matchLabels": {"app": "tier"}}, "roleLabel": "tier"}),
    )
    .await
    .unwrap();
    wait_observed(s, "tier", "Conflict ForeignRoleLabel", |g| {
        condition(g, "Conflict") == Some(("True".into(), "ForeignRoleLabel".into()))
    })
    .await;
    assert_warning(s, "tier", "ForeignRoleLabel", "tier-").await;
    for p in members {
        let pod = s.ns.api::<Pod>().get(p).await.unwrap();
        assert_eq!(
            label(&pod, "tier").as_deref(),
            Some("backend"),
            "{p} was relabelled"
        );
    }
    before.assert_unchanged(&s.ns, &allowed).await;
}

#[tokio::test]
async fn foreign_finalizers_and_leases_survive_and_role_label_changes_move_only_podiums_key() {
    let mut s = Setup::new("hostile-owned").await;
    let mut report = Report::new(&mut s);
    report
        .run("foreign finalizer on the group", run_foreign_finalizer(&s))
        .await;
    for (i, (name, owner)) in [
        ("publishLease over a Lease nobody owns", LeaseOwner::Nobody),
        (
            "publishLease over a Lease a ConfigMap controls",
            LeaseOwner::ConfigMap,
        ),
        (
            "publishLease over a Lease the group owns but does not control",
            LeaseOwner::GroupNotController,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        report.run(name, run_lease_not_owned(&s, i, owner)).await;
    }
    report
        .run("roleLabel change while leading", run_role_label_change(&s))
        .await;
    report
        .run(
            "roleLabel change onto a key the members already use",
            run_role_label_change_onto_used_key(&s),
        )
        .await;
    report.finish(&mut s);
}

// ---------------------------------------------------------------------------------------
// 6. Selectors that reach into other groups' pods.
// ---------------------------------------------------------------------------------------

/// A selector matching every pod without a label `x`: bystanders become its members (allowed),
/// the older group's pods are not taken.
async fn run_select_everything(s: &Setup) {
    pods(
        s,
        &[
            ("web-0", vec![("app", "web")], vec![]),
            ("web-1", vec![("app", "web")], vec![]),
            ("by-0", vec![("app", "bystander"), ("keep", "me")], vec![]),
            ("by-1", vec![("app", "bystander")], vec![]),
        ],
    )
    .await;
    s.apply_group("web", json!({"selector": {"matchLabels": {"app": "web"}}}))
        .await
        .unwrap();
    wait_roles(s, "web", ROLE, "web-0", &["web-1"]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = Snapshot::take(&s.ns).await;
    let allowed = Allowed {
        group: "all",
        members: &["by-0", "by-1"],
        role_labels: &[ROLE],
    };
    s.apply_group(
        "all",
        json!({"selector": {"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}}),
    )
    .await
    .unwrap();
    let g = wait_observed(s, "all", "Conflict SelectorOverlap", |g| {
        condition(g, "Conflict") == Some(("True".into(), "SelectorOverlap".into()))
    })
    .await;
    let message = cond(&g, "Conflict").unwrap().message;
    assert!(
        message.contains("web"),
        "the Conflict does not name the older group: {message}"
    );
    wait_event(s, "all", "Conflict").await;
    wait_roles(s, "all", ROLE, "by-0", &["by-1"]).await;
    let web = s.groups().get("web").await.unwrap();
    assert_eq!(status(&web).leader.as_deref(), Some("web-0"));
    assert_eq!(status(&web).term, 1);
    before.assert_unchanged(&s.ns, &allowed).await;
}

/// Two groups with the same roleLabel whose selectors partly overlap.
async fn run_partial_overlap_same_role_label(s: &Setup) {
    pods(
        s,
        &[
            ("left-0", vec![("side", "l")], vec![]),
            ("left-1", vec![("side", "l")], vec![]),
            ("right-0", vec![("side", "r")], vec![]),
            ("right-1", vec![("side", "r")], vec![]),
        ],
    )
    .await;
    s.apply_group("left", json!({"selector": {"matchLabels": {"side": "l"}}}))
        .await
        .unwrap();
    wait_roles(s, "left", ROLE, "left-0", &["left-1"]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = Snapshot::take(&s.ns).await;
    let allowed = Allowed {
        group: "right",
        members: &["right-0", "right-1"],
        role_labels: &[ROLE],
    };
    s.apply_group(
        "right",
        json!({"selector": {"matchExpressions": [{"key": "side", "operator": "In", "values": ["l", "r"]}]}}),
    )
    .await
    .unwrap();
    wait_observed(s, "right", "Conflict SelectorOverlap", |g| {
        condition(g, "Conflict") == Some(("True".into(), "SelectorOverlap".into()))
    })
    .await;
    let g = wait_roles(s, "right", ROLE, "right-0", &["right-1"]).await;
    assert_eq!(status(&g).members, 2);
    let left = s.groups().get("left").await.unwrap();
    assert_eq!(
        (status(&left).leader.as_deref(), status(&left).term),
        (Some("left-0"), 1)
    );
    before.assert_unchanged(&s.ns, &allowed).await;
}

/// A pod nobody selects carries forged annotations naming a group that is then created.
/// The group does not take the forged term, and does not touch the pod's other keys. (Whether
/// podium removes its own keys from such a pod is not asserted: it cannot tell them from
/// keys it wrote before the pod left the selector.)
async fn run_forged_group_annotation(s: &Setup) {
    pods(
        s,
        &[
            (
                "forged",
                vec![("app", "elsewhere"), (ROLE, "leader")],
                vec![
                    (GROUP_ANNOTATION, "beta"),
                    (TERM_ANNOTATION, "99"),
                    ("note", "mine"),
                ],
            ),
            ("beta-0", vec![("app", "beta")], vec![]),
            ("beta-1", vec![("app", "beta")], vec![]),
        ],
    )
    .await;
    let before = Snapshot::take(&s.ns).await;
    let allowed = Allowed {
        group: "beta",
        members: &["beta-0", "beta-1", "forged"],
        role_labels: &[ROLE],
    };
    s.apply_group(
        "beta",
        json!({"selector": {"matchLabels": {"app": "beta"}}}),
    )
    .await
    .unwrap();
    let g = wait_roles(s, "beta", ROLE, "beta-0", &["beta-1"]).await;
    assert_eq!(status(&g).term, 1, "the forged term was taken");
    assert_eq!(status(&g).members, 2);
    before.assert_unchanged(&s.ns, &allowed).await;
}

#[tokio::test]
async fn selectors_reaching_into_other_groups_take_nothing() {
    let mut s = Setup::new("hostile-overlap").await;
    let mut report = Report::new(&mut s);
    report
        .run(
            "partial overlap with the same roleLabel",
            run_partial_overlap_same_role_label(&s),
        )
        .await;
    report
        .run(
            "forged group annotation on a pod nobody selects",
            run_forged_group_annotation(&s),
        )
        .await;
    report.finish(&mut s);
}

/// In a namespace of its own: the group selects every pod created after it, too.
#[tokio::test]
async fn a_selector_matching_everything_takes_only_free_pods() {
    let mut s = Setup::new("hostile-all").await;
    let mut report = Report::new(&mut s);
    report
        .run(
            "selector matching everything (DoesNotExist)",
            run_select_everything(&s),
        )
        .await;
    report.finish(&mut s);
}
