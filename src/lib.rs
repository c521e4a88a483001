//! podium: a Kubernetes operator that gives a set of pods exactly one leader.

pub mod crd;
pub mod election;
pub mod schedule;
pub mod validation;
