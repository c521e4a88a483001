//! Which groups may claim a pod: every group's selector parsed once per generation, kept per
//! namespace and indexed by the label it requires, so that a pod event finds its groups without
//! parsing or scanning every selector of the namespace.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use kube::ResourceExt;
use kube::runtime::watcher;

use crate::cache::Anchor;
use crate::membership::Claim;
use podium_api::Guarded;

/// The claims of one namespace.
#[derive(Default)]
struct Namespace {
    claims: HashMap<String, Arc<Claim>>,
    /// Group names by the label key and value their selector requires.
    by_label: HashMap<String, HashMap<String, HashSet<String>>>,
    /// Groups whose selector requires no particular value: checked against every pod.
    scan: HashSet<String>,
}

impl Namespace {
    fn anchors(claim: &Claim) -> Vec<(&str, &str)> {
        match &claim.anchor {
            Anchor::Equal(k, v) => vec![(k.as_str(), v.as_str())],
            Anchor::In(k, vs) => vs.iter().map(|v| (k.as_str(), v.as_str())).collect(),
            Anchor::Scan => vec![],
        }
    }

    fn insert(&mut self, claim: Arc<Claim>) {
        self.remove(&claim.name);
        if claim.selector.is_some() {
            let anchors = Self::anchors(&claim);
            if anchors.is_empty() {
                self.scan.insert(claim.name.clone());
            }
            for (k, v) in anchors {
                self.by_label
                    .entry(k.to_string())
                    .or_default()
                    .entry(v.to_string())
                    .or_default()
                    .insert(claim.name.clone());
            }
        }
        self.claims.insert(claim.name.clone(), claim);
    }

    fn remove(&mut self, name: &str) {
        let Some(old) = self.claims.remove(name) else {
            return;
        };
        self.scan.remove(name);
        for (k, v) in Self::anchors(&old) {
            if let Some(values) = self.by_label.get_mut(k) {
                if let Some(names) = values.get_mut(v) {
                    names.remove(name);
                    if names.is_empty() {
                        values.remove(v);
                    }
                }
                if values.is_empty() {
                    self.by_label.remove(k);
                }
            }
        }
    }

    fn selecting(&self, labels: &BTreeMap<String, String>) -> Vec<Arc<Claim>> {
        let anchored = labels.iter().filter_map(|(k, v)| {
            self.by_label
                .get(k.as_str())
                .and_then(|values| values.get(v.as_str()))
        });
        let mut names: Vec<&String> = anchored.flatten().chain(self.scan.iter()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|n| self.claims.get(n))
            .filter(|c| c.selects(labels))
            .cloned()
            .collect()
    }
}

#[derive(Default)]
struct State {
    namespaces: HashMap<String, Namespace>,
    /// A relist in progress: the groups listed so far.
    relisting: Option<Vec<Arc<Claim>>>,
}

impl State {
    /// The claim of a group as cached, parsed again only for a new UID or generation.
    fn claim_of(&self, obj: &Guarded) -> Option<Arc<Claim>> {
        let group = obj.0.as_ref().ok()?;
        let ns = group.namespace().unwrap_or_default();
        let key = (group.uid(), group.metadata.generation);
        let cached = self
            .namespaces
            .get(&ns)
            .and_then(|n| n.claims.get(&group.name_any()))
            .filter(|c| c.parsed_from == key);
        Some(
            cached
                .cloned()
                .unwrap_or_else(|| Arc::new(Claim::of(group))),
        )
    }

    fn upsert(&mut self, obj: &Guarded) {
        let ns = obj.namespace().unwrap_or_default();
        match self.claim_of(obj) {
            Some(claim) => self.namespaces.entry(ns).or_default().insert(claim),
            // A group podium cannot read claims nothing.
            None => self.delete(&ns, &obj.name_any()),
        }
    }

    fn delete(&mut self, ns: &str, name: &str) {
        if let Some(n) = self.namespaces.get_mut(ns) {
            n.remove(name);
            if n.claims.is_empty() {
                self.namespaces.remove(ns);
            }
        }
    }
}

/// The claims of every group in scope; filled from the group watch by [`Claims::apply`].
#[derive(Default)]
pub struct Claims {
    state: RwLock<State>,
}

impl Claims {
    /// Applies one watch event of the group watch.
    pub fn apply(&self, event: &watcher::Event<Guarded>) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(obj) => state.upsert(obj),
            watcher::Event::Delete(obj) => {
                state.delete(&obj.namespace().unwrap_or_default(), &obj.name_any())
            }
            watcher::Event::Init => state.relisting = Some(vec![]),
            watcher::Event::InitApply(obj) => {
                let claim = state.claim_of(obj);
                match (state.relisting.as_mut(), claim) {
                    (Some(listed), Some(claim)) => listed.push(claim),
                    (Some(_), None) => {}
                    (None, _) => state.upsert(obj),
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = state.relisting.take() {
                    state.namespaces.clear();
                    for claim in listed {
                        let ns = claim.namespace.clone();
                        state.namespaces.entry(ns).or_default().insert(claim);
                    }
                }
            }
        }
    }

    /// The groups of a namespace whose selector matches these labels.
    pub fn selecting(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Vec<Arc<Claim>> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state
            .namespaces
            .get(namespace)
            .map(|n| n.selecting(labels))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::error_boundary::DeserializeGuard;
    use podium_api::ElectionGroup;
    use serde_json::json;

    fn group(name: &str, generation: i64, selector: serde_json::Value) -> Guarded {
        let g: ElectionGroup = serde_json::from_value(json!({
            "apiVersion": "podium.dev/v1alpha1", "kind": "ElectionGroup",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"), "generation": generation},
            "spec": {"selector": selector}
        }))
        .unwrap();
        DeserializeGuard(Ok(g))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn names(claims: Vec<Arc<Claim>>) -> Vec<String> {
        claims.iter().map(|c| c.name.clone()).collect()
    }

    #[test]
    fn finds_the_groups_that_select_a_pod() {
        let c = Claims::default();
        for (name, selector) in [
            ("a", json!({"matchLabels": {"app": "x"}})),
            (
                "b",
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "db"]}]}),
            ),
            (
                "c",
                json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
            ),
            ("d", json!({"matchLabels": {"app": "x", "tier": "db"}})),
        ] {
            c.apply(&watcher::Event::Apply(group(name, 1, selector)));
        }
        assert_eq!(names(c.selecting("ns", &labels(&[("app", "x")]))), ["a"]);
        assert_eq!(
            names(c.selecting("ns", &labels(&[("app", "x"), ("tier", "db")]))),
            ["a", "b", "c", "d"]
        );
        assert_eq!(
            names(c.selecting("ns", &labels(&[("tier", "other")]))),
            ["c"]
        );
        assert!(c.selecting("other", &labels(&[("app", "x")])).is_empty());
        // A new generation moves the group in the index.
        c.apply(&watcher::Event::Apply(group(
            "a",
            2,
            json!({"matchLabels": {"app": "y"}}),
        )));
        assert!(c.selecting("ns", &labels(&[("app", "x")])).is_empty());
        c.apply(&watcher::Event::Delete(group("c", 1, json!({}))));
        assert!(c.selecting("ns", &labels(&[("tier", "other")])).is_empty());
    }

    #[test]
    fn parses_a_selector_once_per_generation() {
        let c = Claims::default();
        let g = group("a", 1, json!({"matchLabels": {"app": "x"}}));
        c.apply(&watcher::Event::Apply(g.clone()));
        let first = c.selecting("ns", &labels(&[("app", "x")]));
        c.apply(&watcher::Event::Apply(g));
        let second = c.selecting("ns", &labels(&[("app", "x")]));
        assert!(Arc::ptr_eq(&first[0], &second[0]));
    }

    #[test]
    fn a_relist_replaces_every_claim() {
        let c = Claims::default();
        c.apply(&watcher::Event::Apply(group(
            "a",
            1,
            json!({"matchLabels": {"app": "x"}}),
        )));
        c.apply(&watcher::Event::Init);
        c.apply(&watcher::Event::InitApply(group(
            "b",
            1,
            json!({"matchLabels": {"app": "x"}}),
        )));
        assert_eq!(names(c.selecting("ns", &labels(&[("app", "x")]))), ["a"]);
        c.apply(&watcher::Event::InitDone);
        assert_eq!(names(c.selecting("ns", &labels(&[("app", "x")]))), ["b"]);
    }
}
