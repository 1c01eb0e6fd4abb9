//! Suites that hold a [`ReconciliationQueue`](super::ReconciliationQueue)
//! backend to the semantics every backend shares (feature `testing`).
//!
//! A third-party backend runs them from its own tests with one call each,
//! from plain `#[test]` functions (each suite builds its own tokio
//! runtime), with one [`ModelBackend`](model::ModelBackend) implementation
//! that opens fresh queues for both:
//!
//! - [`model::check_backend`]: random sequences of operations checked
//!   against a reference model, shrunk to the smallest failing one;
//! - [`conformance::check_conformance`]: fixed, named cases of each
//!   behaviour, reporting every failing case.
//!
//! See [`conformance`] for an example running both.

pub mod conformance;
pub mod model;
