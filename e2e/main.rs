//! End-to-end tests against the local control plane; `make e2e` starts it first.

mod admission;
mod chaos;
mod cluster;
mod election;
mod fake_kubelet;
mod handoff;
mod hostile;
mod invalid;
mod member;
mod nodes;
mod operations;
mod plugin;
mod real_node;
mod routing;
mod safety;

use podium_testkit::{groups, support};
