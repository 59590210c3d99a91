//! Step 4, `flip-parameter` (ASL states `FlipParameter`, `RollbackFlipParameter`).

use tracing::info;

use crate::domain::{FlipRequest, Flipped};
use crate::errors::RotationError;
use crate::ports::ParameterStore;

/// Step 4 (and the rollback's first step): point the parameter at a user.
pub async fn flip_parameter(
    request: &FlipRequest,
    parameters: &dyn ParameterStore,
) -> Result<Flipped, RotationError> {
    let users = &request.users;
    if !users.contains(&request.to) {
        return Err(RotationError::InvalidInput(format!(
            "field \"to\" must be {:?} or {:?}, got {:?}",
            users.blue, users.green, request.to
        )));
    }
    let was = parameters
        .get(&request.parameter_name)
        .await?
        .value
        .trim()
        .to_string();
    let changed = was != request.to;
    if changed {
        parameters.put(&request.parameter_name, &request.to).await?;
    }
    info!(parameter = %request.parameter_name, %was, active_user = %request.to, changed, "flipped the active user");
    Ok(Flipped {
        active_user: request.to.clone(),
        was,
        changed,
    })
}
