//! The admission policy that keeps podium's keys to podium (config/admission, rendered from
//! charts/podium): installed as shipped, but bound to this test's namespace only and with this
//! test's ServiceAccount as podium's, since every other e2e test runs its operator as a host
//! process with the admin's credentials, which the policy refuses.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Pod;
use kube::Config;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::cluster::create_service;
use crate::groups::*;
use crate::support::*;
use podium_testkit::slices::SliceWatch;

/// podium's ServiceAccount in the shipped manifests (config/rbac).
const SHIPPED_SA: &str = "system:serviceaccount:podium-system:podium";
/// A custom role label key, listed in the policy's ConfigMap.
const CUSTOM_ROLE: &str = "example.com/role";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cluster-scoped objects a test created, deleted when it ends, pass or fail.
struct ClusterObjects(Vec<String>);

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        for o in &self.0 {
            let _ = std::process::Command::new(kubectl_path())
                .args(["--kubeconfig", kubeconfig_path().to_str().unwrap()])
                .args(["delete", o, "--ignore-not-found"])
                .output();
        }
    }
}

/// Applies a list of objects with kubectl.
fn apply(name: &str, items: Vec<Value>) {
    let file = std::env::temp_dir().join(format!("{name}.json"));
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(&file, list.to_string()).unwrap();
    kubectl(&["apply", "-f", file.to_str().unwrap()]);
}

/// Installs config/admission for the namespace `ns`: podium's ServiceAccount is `podium` in
/// `ns` (with the rights of config/rbac's ClusterRole), the binding selects `ns` only, and the
/// ConfigMap of extra role keys, in `ns`, lists [`CUSTOM_ROLE`].
fn install_policy(ns: &str) -> ClusterObjects {
    let sa = format!("system:serviceaccount:{ns}:podium");
    let text = std::fs::read_to_string(root().join("config/admission/admission_policy.yaml"))
        .expect("config/admission/admission_policy.yaml");
    assert!(
        text.contains(SHIPPED_SA),
        "the shipped policy does not name {SHIPPED_SA}"
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text.replace(SHIPPED_SA, &sa))
        .expect("config/admission/admission_policy.yaml is YAML");
    let name = format!("podium-role-keys-{ns}");
    let mut items = Vec::new();
    for mut doc in docs {
        match doc["kind"].as_str().unwrap() {
            "ConfigMap" => {
                doc["metadata"]["namespace"] = json!(ns);
                doc["data"]["keys"] = json!(format!(" {CUSTOM_ROLE} "));
            }
            "ValidatingAdmissionPolicy" => doc["metadata"]["name"] = json!(name),
            "ValidatingAdmissionPolicyBinding" => {
                doc["metadata"]["name"] = json!(name);
                doc["spec"]["policyName"] = json!(name);
                doc["spec"]["paramRef"]["namespace"] = json!(ns);
                doc["spec"]["matchResources"] = json!({"namespaceSelector":
                    {"matchLabels": {"kubernetes.io/metadata.name": ns}}});
            }
            kind => panic!("unexpected {kind} in config/admission"),
        }
        items.push(doc);
    }
    assert_eq!(
        items.len(),
        3,
        "config/admission: ConfigMap, policy, binding"
    );

    let role = std::fs::read_to_string(root().join("config/rbac/role.yaml")).unwrap();
    let role: Value = serde_saphyr::from_str(&role).expect("config/rbac/role.yaml");
    items.extend([
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "podium", "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name}, "rules": role["rules"]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": "podium", "namespace": ns}]}),
    ]);
    let objects = ClusterObjects(vec![
        format!("validatingadmissionpolicybinding/{name}"),
        format!("validatingadmissionpolicy/{name}"),
        format!("clusterrolebinding/{name}"),
        format!("clusterrole/{name}"),
    ]);
    apply(&name, items);
    objects
}

/// Asserts that a request was refused with a message containing `want`.
fn assert_refused<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>, want: &str) {
    match r {
        Err(kube::Error::Api(e)) => assert!(
            e.message.contains(want),
            "{what}: refused, but not by the policy: {e:?}"
        ),
        other => panic!("{what}: not refused by the policy: {other:?}"),
    }
}

/// Runs kubectl as the admin and asserts that it fails with `want` in its output.
fn kubectl_refused(args: &[&str], want: &str) {
    let out = std::process::Command::new(kubectl_path())
        .args(["--kubeconfig", kubeconfig_path().to_str().unwrap()])
        .args(args)
        .output()
        .expect("run kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "kubectl {args:?} was allowed: {text}"
    );
    assert!(
        text.contains(want),
        "kubectl {args:?} failed, but not with {want:?}: {text}"
    );
    println!("refused: kubectl {}: {}", args.join(" "), text.trim());
}

/// A Deployment (one replica, on the fake nodes) whose pod template carries `labels`.
fn deployment(name: &str, labels: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn only_podium_writes_its_keys_where_the_policy_is_installed() {
    install_crd().await;
    let ns = TestNs::new("admission").await;
    let _installed = install_policy(&ns.name);
    let sa = format!("system:serviceaccount:{}:podium", ns.name);
    let label_msg = |key: &str, on: &str| {
        format!(
            "label {key} is podium's role label: only {sa} may add, change or remove it on {on}"
        )
    };
    let pods = ns.api::<Pod>();

    // The API server enforces a new policy once its informers have it: until a dry run of a
    // pod carrying the role label is refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    let forged = pod_manifest("forged", &[(ROLE, "leader")], &[]);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    loop {
        match pods.create(&dry_run, &forged).await {
            Err(kube::Error::Api(e)) if e.message.contains(&label_msg(ROLE, "a pod")) => break,
            r => assert!(
                Instant::now() < deadline,
                "the policy did not take effect within 30 s: {r:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // podium, as its ServiceAccount, elects as usual.
    let kc = service_account_kubeconfig(&ns.name, "podium", &format!("{}-podium", ns.name)).await;
    let mut s = Setup { ns, operator: None };
    s.operator = Some(Operator::start_with(&s.ns.name, &kc, &[]).await);
    s.pods(&["p0", "p1"], &[("app", "x")]).await;
    s.apply_group("api", json!({"selector": {"matchLabels": {"app": "x"}}}))
        .await
        .unwrap();
    let g = s.wait_leader("api", "app=x", "p0").await;
    let term = status(&g).term.to_string();
    let ns = &s.ns;
    // The label route: what the forgeries below would add a second address to.
    create_service(ns, "leader", json!({"app": "x", ROLE: "leader"})).await;
    let leader_route = SliceWatch::start(ns, "leader");
    let p0_ip = pod_ip(&ns.api::<Pod>().get("p0").await.unwrap()).unwrap();
    leader_route
        .wait_only(&p0_ip, Duration::from_secs(30))
        .await;
    let forging = Instant::now();

    // The admin may not promote, demote, or touch the term.
    kubectl_refused(
        &[
            "-n",
            &ns.name,
            "label",
            "pod",
            "p1",
            &format!("{ROLE}=leader"),
            "--overwrite",
        ],
        &label_msg(ROLE, "a pod"),
    );
    kubectl_refused(
        &["-n", &ns.name, "label", "pod", "p0", &format!("{ROLE}-")],
        &label_msg(ROLE, "a pod"),
    );
    kubectl_refused(
        &[
            "-n",
            &ns.name,
            "annotate",
            "pod",
            "p0",
            "podium.dev/term=99",
            "--overwrite",
        ],
        &format!(
            "annotation podium.dev/term is podium's: only {sa} may add, change or remove it on a pod"
        ),
    );
    // Other labels of a member, and its status (what a kubelet writes), are the admin's.
    kubectl(&["-n", &ns.name, "label", "pod", "p0", "tier=db"]);
    ns.set_ready("p1", true).await;

    // Pods are refused with any of podium's keys, including a custom role key listed in the
    // ConfigMap; a pod without them is created, and podium labels it.
    assert_refused(
        "a pod with the role label",
        pods.create(&PostParams::default(), &forged).await,
        &label_msg(ROLE, "a pod"),
    );
    assert_refused(
        "a pod with the group annotation",
        pods.create(
            &PostParams::default(),
            &pod_manifest("grouped", &[], &[("podium.dev/group", "api")]),
        )
        .await,
        "annotation podium.dev/group is podium's",
    );
    assert_refused(
        "a pod with the custom role label",
        pods.create(
            &PostParams::default(),
            &pod_manifest("custom", &[(CUSTOM_ROLE, "leader")], &[]),
        )
        .await,
        &label_msg(CUSTOM_ROLE, "a pod"),
    );
    ns.create_pod("p2", &[("app", "x")]).await;
    ns.wait_running("p2").await;
    let g = s.wait_leader("api", "app=x", "p0").await;
    assert_eq!(status(&g).term.to_string(), term, "the leader changed");
    assert_eq!(
        term_on(&s.ns, "p0").await.map(|t| t.to_string()),
        Some(term)
    );
    let ns = &s.ns;

    // Workloads: refused at the template; one without the keys runs, its pods created by the
    // ReplicaSet controller.
    let deployments = ns.api::<Deployment>();
    assert_refused(
        "a Deployment whose template carries the role label",
        deployments
            .create(
                &PostParams::default(),
                &deployment("forger", json!({"app": "forger", ROLE: "leader"})),
            )
            .await,
        &label_msg(ROLE, "the pod template of a Deployment"),
    );
    let cronjob: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "forger"},
        "spec": {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {"template": {
            "metadata": {"labels": {ROLE: "leader"}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "app", "image": "registry.example/app:1"}]}
        }}}}
    }))
    .unwrap();
    assert_refused(
        "a CronJob whose job template carries the role label",
        ns.api::<CronJob>()
            .create(&PostParams::default(), &cronjob)
            .await,
        &label_msg(ROLE, "the pod template of a CronJob"),
    );
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", json!({"app": "web"})),
        )
        .await
        .expect("a Deployment without podium's keys");
    wait_for_list(
        &pods,
        kube::runtime::watcher::Config::default().labels("app=web"),
        Duration::from_secs(60),
        "the Deployment's pod",
        |p| !p.is_empty(),
    )
    .await;
    assert_refused(
        "adding the role label to the Deployment's template",
        deployments
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"template": {"metadata": {"labels": {ROLE: "leader"}}}}}),
                ),
            )
            .await,
        &label_msg(ROLE, "the pod template of a Deployment"),
    );

    // podium's ServiceAccount may write the keys (on a pod no group selects).
    ns.create_pod("loner", &[]).await;
    let kc = kube::config::Kubeconfig::read_from(&kc).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let as_podium: Api<Pod> =
        Api::namespaced(podium_member::client::build(config).unwrap(), &ns.name);
    as_podium
        .patch(
            "loner",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {ROLE: "follower"}}})),
        )
        .await
        .expect("podium's ServiceAccount labels a pod");

    // No forgery put a second address behind the leader Service: a refused one never reached
    // the pod. (kube-controller-manager lists a pod within tens of milliseconds; wait longer.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    let most = leader_route.most_since(forging);
    assert!(
        most <= 1,
        "the leader Service listed {most} addresses at once"
    );
    assert_eq!(leader_route.now().all, [p0_ip]);
    // Nothing the admin tried changed the members.
    for (pod, role) in [("p0", "leader"), ("p1", "follower"), ("p2", "follower")] {
        let p = pods.get(pod).await.unwrap();
        assert_eq!(label(&p, ROLE).as_deref(), Some(role), "{pod}");
    }
    assert!(s.operator.as_mut().unwrap().alive());
}
