//! The six rotation steps, one module each, named like its Lambda crate and
//! ASL state, and `report_outcome`, which reports an execution once it
//! ended. Each is a plain async function over the ports, so the Lambda
//! binaries stay a few lines and unit tests run them on fakes.

pub mod consumers;
mod flip_parameter;
mod generate_and_set_password;
mod guard;
pub mod plan_sweep;
mod preflight;
pub(crate) mod read;
mod redeploy_ecs;
pub mod registry;
pub mod report_outcome;
mod select_user;
mod verify_login;
mod wait_for_stable;

pub use flip_parameter::flip_parameter;
pub use generate_and_set_password::{client_request_token, generate_and_set_password};
pub use guard::now_ms;
pub use plan_sweep::{plan_sweep, SweepPlan, SweepRequest};
pub use read::{password_dates, PasswordDates};
pub use redeploy_ecs::redeploy_ecs;
pub use report_outcome::{report_outcome, report_password_ages, report_sweep, ReportRequest};
pub use select_user::{
    choose_mode, resolve_target, select_user, ModeFacts, Rotated, SelectRequest,
};
pub use verify_login::{verify_login, VerifyRequest};
pub use wait_for_stable::wait_for_stable;

#[cfg(test)]
mod tests;
