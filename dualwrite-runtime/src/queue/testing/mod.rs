//! Suites that hold a [`ReconciliationQueue`](super::ReconciliationQueue)
//! backend to the semantics every backend shares (feature `testing`).
//!
//! A third-party backend runs them from its own tests with one call each.

pub mod model;
