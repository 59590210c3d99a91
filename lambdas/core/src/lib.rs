//! pgflip core: the domain, ports, adapters, configuration and error names
//! shared by the six rotation Lambdas.
//!
//! The binaries in `lambdas/<name>/` are a few lines each: they parse their
//! configuration once, build the adapters once and hand each invocation to a
//! step function in [`steps`].

pub mod adapters;
pub mod config;
pub mod domain;
pub mod errors;
#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
pub mod input;
pub mod layouts;
pub mod password;
pub mod ports;
pub mod rollout;
pub mod runtime;
pub mod steps;

pub use errors::RotationError;
