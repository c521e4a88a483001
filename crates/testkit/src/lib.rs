//! What podium's end-to-end tests (`e2e/`) and its bench (`benches/`) share: a client for the
//! local control plane, test namespaces, the operator process, ElectionGroup helpers.

pub mod groups;
pub mod operator;
pub mod paths;
pub mod support;
