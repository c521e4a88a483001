//! podium's controller: caches, routing, fenced writers, reconcile, the controller Lease, metrics.

mod apply;
pub mod cache;
pub mod claims;
mod context;
mod error;
mod events;
mod lane;
pub mod leadership;
pub mod lists;
mod membership;
pub mod metrics;
mod nodes;
mod overlay;
mod owned;
mod promotions;
mod reconcile;
pub mod routing;
pub mod runtime;
pub mod server;
mod slots;
mod writer;
