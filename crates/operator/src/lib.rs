//! podium's controller: caches, routing, fenced writers, reconcile, the controller Lease, metrics.

pub mod apply;
pub mod cache;
pub mod claims;
pub mod context;
pub mod error;
pub mod events;
pub mod lane;
pub mod leadership;
pub mod membership;
pub mod metrics;
pub mod nodes;
pub mod overlay;
pub mod promotions;
pub mod reconcile;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod slots;
pub mod writer;
