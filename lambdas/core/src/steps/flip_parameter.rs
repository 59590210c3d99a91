//! Step 4, `flip-parameter` (ASL states `FlipParameter`, `RollbackFlipParameter`).

use crate::domain::{FlipRequest, Flipped};
use crate::errors::RotationError;
use crate::layouts::{self, Stores};
use crate::ports::{ParameterStore, SecretStore};

/// Step 4 (and the rollback's first step): point the pointer at a user,
/// through its layout's adapter (`crate::layouts`): write the active-user
/// parameter, or move the alternating secret's `AWSCURRENT` to the version
/// naming the user (the verified `versionId` forward, the `AWSPREVIOUS`
/// version back). Idempotent; a user that is neither of the two is
/// `InvalidInput`.
pub async fn flip_parameter(
    request: &FlipRequest,
    parameters: &dyn ParameterStore,
    secrets: &dyn SecretStore,
) -> Result<Flipped, RotationError> {
    let stores = Stores {
        parameters,
        secrets,
    };
    let pointer = layouts::for_flip(request, stores);
    pointer
        .flip(&request.to, request.version_id.as_deref())
        .await
}
