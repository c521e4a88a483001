//! What counts as a renewal, and when the watch's measure can be trusted.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::time::Instant;

use super::*;

fn lease(version: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("node-a".into()),
            resource_version: Some(version.into()),
            ..ObjectMeta::default()
        },
        ..Lease::default()
    }
}

fn listed(seen: &mut Seen, version: Option<&str>, at: Instant) {
    apply(seen, Ok(watcher::Event::Init), at);
    if let Some(v) = version {
        apply(seen, Ok(watcher::Event::InitApply(lease(v))), at);
    }
    apply(seen, Ok(watcher::Event::InitDone), at);
}

const S: Duration = Duration::from_secs(1);

#[test]
fn silence_counts_from_the_last_new_version_the_watch_saw() {
    let t0 = Instant::now();
    let mut seen = Seen::default();
    assert_eq!(seen.silence(t0), None, "nothing before the first list");
    listed(&mut seen, Some("1"), t0);
    assert_eq!(seen.silence(t0 + 4 * S), Some(4 * S));
    apply(
        &mut seen,
        Ok(watcher::Event::Apply(lease("2"))),
        t0 + 10 * S,
    );
    assert_eq!(seen.silence(t0 + 12 * S), Some(2 * S));
    // The same version again (a relist, a resync) is no renewal.
    apply(
        &mut seen,
        Ok(watcher::Event::Apply(lease("2"))),
        t0 + 20 * S,
    );
    assert_eq!(seen.silence(t0 + 21 * S), Some(11 * S));
}

#[test]
fn no_measure_while_the_watch_fails_and_a_relist_tells_whether_the_node_renewed() {
    let t0 = Instant::now();
    let mut seen = Seen::default();
    listed(&mut seen, Some("1"), t0);
    apply(&mut seen, Err(watcher::Error::NoResourceVersion), t0 + S);
    assert_eq!(
        seen.silence(t0 + 30 * S),
        None,
        "a broken watch proves nothing"
    );
    assert_eq!(seen.next_deadline(), None);
    // Back, and the Lease is still at version 1: the node did not renew through the outage.
    listed(&mut seen, Some("1"), t0 + 30 * S);
    assert_eq!(seen.silence(t0 + 30 * S), Some(30 * S));
    // Had it renewed meanwhile, the renewal counts from when the list saw it.
    apply(
        &mut seen,
        Err(watcher::Error::NoResourceVersion),
        t0 + 31 * S,
    );
    listed(&mut seen, Some("7"), t0 + 40 * S);
    assert_eq!(seen.silence(t0 + 41 * S), Some(S));
}

#[test]
fn a_node_whose_lease_was_never_seen_is_never_lost() {
    let t0 = Instant::now();
    let mut seen = Seen::default();
    listed(&mut seen, None, t0);
    assert!(seen.healthy);
    assert_eq!(seen.silence(t0 + 3600 * S), None);
}

#[test]
fn each_group_is_woken_at_its_own_loss_deadline_once() {
    let t0 = Instant::now();
    let mut seen = Seen::default();
    let (a, b) = (
        ObjectRef::<Guarded>::new("a").within("ns"),
        ObjectRef::<Guarded>::new("b").within("ns"),
    );
    seen.askers.insert(a, 15 * S);
    seen.askers.insert(b, 40 * S);
    assert_eq!(seen.next_deadline(), None, "no renewal seen yet");
    listed(&mut seen, Some("1"), t0);
    assert_eq!(seen.next_deadline(), Some(t0 + 15 * S));
    seen.woken = Some(t0 + 15 * S);
    assert_eq!(seen.next_deadline(), Some(t0 + 40 * S));
    seen.woken = Some(t0 + 40 * S);
    assert_eq!(seen.next_deadline(), None);
    // A renewal starts the clocks again.
    apply(
        &mut seen,
        Ok(watcher::Event::Apply(lease("2"))),
        t0 + 50 * S,
    );
    assert_eq!(seen.next_deadline(), Some(t0 + 65 * S));
}

/// A tracker whose client reaches no API server: its watches fail, which tests set aside by
/// writing what a watch would have seen.
fn offline() -> NodeLeases {
    let service = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
        Err::<http::Response<kube::client::Body>, _>(std::io::Error::other("offline"))
    });
    NodeLeases::new(kube::Client::new(service, "default")).0
}

fn set_renewed(nodes: &NodeLeases, node: &str, renewed: Instant) {
    let watched = nodes.nodes.lock().unwrap();
    let mut seen = watched[node].seen.lock().unwrap();
    seen.healthy = true;
    seen.version = Some("1".into());
    seen.renewed = Some(renewed);
}

#[tokio::test]
async fn a_lost_node_stays_watched_for_its_group_until_it_renews() {
    let nodes = offline();
    let g = ObjectRef::<Guarded>::new("g").within("ns");
    let loss = 15 * S;
    assert!(
        nodes.observe(&g, &[("n1".into(), loss)]).is_empty(),
        "no measure yet"
    );
    set_renewed(&nodes, "n1", Instant::now() - 20 * S);
    // The leader moved to n2: n1, lost, is still reported, so its pods are no candidates.
    let silences = nodes.observe(&g, &[("n2".into(), loss)]);
    assert!(
        silences.get("n1").is_some_and(|s| *s >= loss),
        "{silences:?}"
    );
    assert_eq!(nodes.watched().0, 2);
    // n1 renews: it is let go.
    set_renewed(&nodes, "n1", Instant::now());
    let silences = nodes.observe(&g, &[("n2".into(), loss)]);
    assert!(!silences.contains_key("n1"));
    assert_eq!(nodes.watched().0, 1);
    nodes.forget(&g);
    assert_eq!(nodes.watched().0, 0);
}

#[tokio::test]
async fn a_confirmed_loss_is_not_read_again_until_the_lease_moves() {
    let nodes = offline();
    let g = ObjectRef::<Guarded>::new("g").within("ns");
    nodes.observe(&g, &[("n1".into(), 15 * S)]);
    set_renewed(&nodes, "n1", Instant::now() - 20 * S);
    // The offline client fails every read, and a failed read confirms nothing.
    assert!(!nodes.confirm_lost("n1").await);
    let seen = nodes.nodes.lock().unwrap()["n1"].seen.clone();
    seen.lock().unwrap().confirmed = Some("1".into());
    assert!(
        nodes.confirm_lost("n1").await,
        "version 1 was confirmed: no read"
    );
    apply(
        &mut seen.lock().unwrap(),
        Ok(watcher::Event::Apply(lease("2"))),
        Instant::now(),
    );
    assert!(
        !nodes.confirm_lost("n1").await,
        "a new version needs a new read"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_node_that_renews_wakes_the_groups_that_found_it_lost() {
    use futures::FutureExt;
    let (events, rx) = mpsc::unbounded();
    let (wake, mut woken) = mpsc::unbounded();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let g = ObjectRef::<Guarded>::new("g").within("ns");
    seen.lock().unwrap().askers.insert(g.clone(), 15 * S);
    let task = tokio::spawn(follow(
        "node-a".into(),
        rx.boxed(),
        seen.clone(),
        Arc::new(tokio::sync::Notify::new()),
        wake,
    ));
    for e in [
        watcher::Event::Init,
        watcher::Event::InitApply(lease("1")),
        watcher::Event::InitDone,
    ] {
        events.unbounded_send(Ok(e)).unwrap();
    }
    assert_eq!(woken.next().await, Some(g.clone()), "the watch answers");
    // Paused time runs on to the loss deadline.
    assert_eq!(woken.next().await, Some(g.clone()), "the node is lost");
    assert!(seen.lock().unwrap().silence(Instant::now()) >= Some(15 * S));
    events
        .unbounded_send(Ok(watcher::Event::Apply(lease("2"))))
        .unwrap();
    // At once: not at the next loss deadline, 15 s on.
    let at_once = tokio::time::timeout(Duration::from_millis(1), woken.next()).await;
    assert_eq!(at_once, Ok(Some(g.clone())), "the node renewed");
    // A renewal of a node nobody found lost wakes nobody.
    tokio::time::sleep(S).await;
    events
        .unbounded_send(Ok(watcher::Event::Apply(lease("3"))))
        .unwrap();
    tokio::time::sleep(S).await;
    assert_eq!(seen.lock().unwrap().version.as_deref(), Some("3"));
    assert!(woken.next().now_or_never().is_none());
    task.abort();
}
