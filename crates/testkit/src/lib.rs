//! What podium's end-to-end tests (`e2e/`) and its bench (`benches/`) share: a client for the
//! local control plane, test namespaces, the operator process, ElectionGroup helpers, and
//! watches of leaders and EndpointSlices that keep every state they saw.

pub mod groups;
pub mod operator;
pub mod paths;
pub mod slices;
pub mod support;
