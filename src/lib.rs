//! podium: a Kubernetes operator that gives a set of pods exactly one leader.

pub mod apply;
pub mod cache;
pub mod claims;
pub mod client;
pub mod crd;
pub mod election;
pub mod events;
pub mod leadership;
pub mod member;
pub mod membership;
pub mod metrics;
pub mod nodes;
pub mod overlay;
pub mod reconcile;
pub mod routing;
pub mod schedule;
pub mod server;
pub mod signals;
pub mod slots;
pub mod validation;
pub mod watches;
