//! The pointer layouts: one adapter of the [`Pointer`] port per way a
//! target says which user is active. Both are built on the
//! [`ParameterStore`] and [`SecretStore`] ports, so they run on the AWS
//! adapters in Lambda and on the fakes in unit tests.
//!
//! - [`ParameterPointer`]: an SSM parameter names the active user; one
//!   secret per user (`POINTER_LAYOUT=parameter`, the default).
//! - [`AlternatingSecretPointer`]: one secret whose `AWSCURRENT` names the
//!   active user (`POINTER_LAYOUT=alternating-secret`).

mod alternating_secret;
mod parameter;

pub use alternating_secret::AlternatingSecretPointer;
pub use parameter::ParameterPointer;

use crate::config::TargetConfig;
use crate::domain::{Connection, FlipRequest, Plan, PointerLayout, UserKeys};
use crate::ports::{ParameterStore, Pointer, SecretStore};

/// The stores a pointer is built on.
#[derive(Clone, Copy)]
pub struct Stores<'a> {
    pub parameters: &'a dyn ParameterStore,
    pub secrets: &'a dyn SecretStore,
}

/// The pointer of a layout. `parameter_name` is the active-user parameter
/// (parameter layout); `secret_ids` pairs each user with its secret (the
/// flip needs none).
pub fn bind<'a>(
    layout: &'a PointerLayout,
    parameter_name: &'a str,
    users: UserKeys,
    secret_ids: Vec<(&'a str, &'a str)>,
    connection: &'a Connection,
    stores: Stores<'a>,
) -> Box<dyn Pointer + 'a> {
    match layout {
        PointerLayout::Parameter => Box::new(ParameterPointer {
            stores,
            parameter_name,
            users,
            secret_ids,
            connection,
        }),
        PointerLayout::AlternatingSecret {
            secret_id,
            active_user_parameter,
        } => Box::new(AlternatingSecretPointer {
            stores,
            secret_id,
            parameter: active_user_parameter.as_deref(),
            users,
        }),
    }
}

/// The pointer of a configured target.
pub fn for_target<'a>(config: &'a TargetConfig, stores: Stores<'a>) -> Box<dyn Pointer + 'a> {
    bind(
        &config.layout,
        &config.parameter_name,
        config.users(),
        vec![
            (&config.blue_user, &config.blue_secret_id),
            (&config.green_user, &config.green_secret_id),
        ],
        &config.connection,
        stores,
    )
}

/// The pointer of a plan (the steps after `select-user`).
pub fn for_plan<'a>(plan: &'a Plan, stores: Stores<'a>) -> Box<dyn Pointer + 'a> {
    bind(
        &plan.pointer,
        &plan.parameter_name,
        plan.users.clone(),
        vec![
            (&plan.target_user, &plan.target_secret_id),
            (&plan.previous_user, &plan.previous_secret_id),
        ],
        &plan.connection,
        stores,
    )
}

/// The pointer `flip-parameter` moves.
pub fn for_flip<'a>(request: &'a FlipRequest, stores: Stores<'a>) -> Box<dyn Pointer + 'a> {
    const NO_CONNECTION: &Connection = &Connection {
        host: None,
        port: None,
        dbname: None,
    };
    bind(
        &request.pointer,
        &request.parameter_name,
        request.users.clone(),
        vec![],
        NO_CONNECTION,
        stores,
    )
}

/// `to` must be one of the two users (`InvalidInput` otherwise).
pub(crate) fn check_user(users: &UserKeys, to: &str) -> Result<(), crate::errors::RotationError> {
    if users.contains(to) {
        return Ok(());
    }
    Err(crate::errors::RotationError::InvalidInput(format!(
        "field \"to\" must be {:?} or {:?}, got {:?}",
        users.blue, users.green, to
    )))
}
