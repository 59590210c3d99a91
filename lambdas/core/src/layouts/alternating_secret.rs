//! The alternating-secret layout (AWS's alternating-users convention): one
//! Secrets Manager secret whose `AWSCURRENT` version names the active user.
//! The inactive user's password is in the version that last named it
//! (`AWSPREVIOUS`). A new password is staged as `AWSPENDING` of the same
//! secret; the flip promotes it; the rollback moves `AWSCURRENT` back to the
//! version naming the previous user. ECS injects `AWSCURRENT` at task start,
//! so the application changes nothing, and a task that started before the
//! flip keeps the previous user, whose password did not change.
//!
//! The flip also keeps a custom label per role, `pgflip-<role>`, on the
//! version holding that role's password: an operator's new `AWSCURRENT`
//! (say, a new host) then pushes `AWSPREVIOUS` onto the same role's old
//! version, and the other role's password is still found, and never
//! deprecated (deleted) by Secrets Manager.

use async_trait::async_trait;
use tracing::{info, warn};

use super::{check_user, Stores};
use crate::domain::{
    Connection, Flipped, SecretVersion, UserKeys, AWSCURRENT, AWSPENDING, AWSPREVIOUS,
};
use crate::errors::RotationError;
use crate::password::Password;
use crate::ports::{Pointer, PointerState};
use crate::steps::read::{read_stage, Owner};

pub struct AlternatingSecretPointer<'a> {
    pub stores: Stores<'a>,
    pub secret_id: &'a str,
    /// An active-user parameter kept equal to the secret's active user, for
    /// observers (optional).
    pub parameter: Option<&'a str>,
    pub users: UserKeys,
}

/// The secret must hold the RDS JSON shape: a bare password names no user.
const JSON_ONLY: Owner<'static> = Owner {
    user: None,
    connection: &Connection {
        host: None,
        port: None,
        dbname: None,
    },
};

/// The custom staging label on the version holding `user`'s password.
pub fn role_label(user: &str) -> String {
    let safe: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("pgflip-{safe}")
}

impl AlternatingSecretPointer<'_> {
    /// The version that last named `user` apart from `AWSCURRENT`: of the
    /// one its role label is on and `AWSPREVIOUS`, the newer that names
    /// `user` (an operator's edit after the label moved is newer).
    async fn last_of(&self, user: &str) -> Result<Option<SecretVersion>, RotationError> {
        let mut found: Option<SecretVersion> = None;
        for stage in [role_label(user).as_str(), AWSPREVIOUS] {
            let Some(v) = self
                .at(stage)
                .await?
                .filter(|v| v.secret.username() == user)
            else {
                continue;
            };
            if found
                .as_ref()
                .is_none_or(|f| v.created_ms.unwrap_or(0) > f.created_ms.unwrap_or(0))
            {
                found = Some(v);
            }
        }
        Ok(found)
    }

    async fn at(&self, stage: &str) -> Result<Option<SecretVersion>, RotationError> {
        read_stage(self.stores.secrets, self.secret_id, stage, JSON_ONLY).await
    }

    /// The `AWSCURRENT` version, which must exist and name one of the users.
    async fn active_version(&self) -> Result<SecretVersion, RotationError> {
        let current = self.at(AWSCURRENT).await?.ok_or_else(|| {
            RotationError::SecretNotFound(format!("{} has no {AWSCURRENT} version", self.secret_id))
        })?;
        let user = current.secret.username();
        if !self.users.contains(user) {
            return Err(RotationError::InvalidActiveUser {
                parameter: format!("{} ({AWSCURRENT} username)", self.secret_id),
                value: user.to_string(),
                blue: self.users.blue.clone(),
                green: self.users.green.clone(),
            });
        }
        Ok(current)
    }
}

#[async_trait]
impl Pointer for AlternatingSecretPointer<'_> {
    fn name(&self) -> &str {
        self.secret_id
    }

    fn secret_of(&self, user: &str) -> Option<&str> {
        self.users.contains(user).then_some(self.secret_id)
    }

    /// `secretsmanager:GetSecretValue` (`AWSCURRENT`), and the time it
    /// moved, from the tag pgflip writes when it moves `AWSCURRENT` or
    /// first sees a version it did not promote
    /// (`secretsmanager:DescribeSecret`):
    /// - the tag names `AWSCURRENT`'s version: its time;
    /// - any other version (Secrets Manager's own rotation, an operator's
    ///   edit, a move back by hand, a rollback that stopped before its
    ///   tag): when is unknown, so now, with the version as `unrecorded`
    ///   (the services get redeployed before anything is rotated). Its
    ///   creation time is no answer: Secrets Manager creates the version
    ///   (`createSecret`) before `finishSecret` promotes it, minutes or,
    ///   after a failed rotation, days later, and a deployment in between
    ///   still injects the old role (seed 11, scenario 415 of the chaos
    ///   soak; moto also rounds creation down to the second);
    /// - except with no version naming the other user (before the first
    ///   rotation): no task can hold another role, so the version's
    ///   creation.
    ///
    /// Not seen: `AWSCURRENT` moved away and back to the version the tag
    /// names between two runs (by hand twice, or a flip and its rollback
    /// that both stopped before their tag). The tag's time is then
    /// trusted, though tasks started in between hold the other role; only
    /// the history of the labels (CloudTrail) would tell.
    async fn read(&self) -> Result<PointerState, RotationError> {
        let current = self.active_version().await?;
        let tagged = self.stores.secrets.flipped_at(self.secret_id).await?;
        let created = current.created_ms;
        let state = |moved_ms, unrecorded| PointerState {
            active: current.secret.username().to_string(),
            moved_ms,
            unrecorded,
        };
        if let Some(t) = tagged.filter(|t| t.version_id == current.version_id) {
            return Ok(state(Some(t.at_ms.max(created.unwrap_or(0))), None));
        }
        let other = self
            .users
            .other(current.secret.username())
            .unwrap_or_default();
        if self.last_of(other).await?.is_none() {
            return Ok(state(created, None));
        }
        Ok(state(
            Some(crate::steps::now_ms()),
            Some(current.version_id.clone()),
        ))
    }

    /// Tags `state.unrecorded` as moved at `state.moved_ms`
    /// (`secretsmanager:TagResource`), unless `AWSCURRENT` moved again
    /// since the read (the newer version stays unrecorded, and is
    /// redeployed for by the next run).
    async fn record_seen(&self, state: &PointerState) -> Result<(), RotationError> {
        let (Some(version_id), Some(at_ms)) = (&state.unrecorded, state.moved_ms) else {
            return Ok(());
        };
        if self.active_version().await?.version_id != *version_id {
            warn!(secret = %self.secret_id, %version_id, "AWSCURRENT moved again since it was read; not recording when");
            return Ok(());
        }
        self.stores
            .secrets
            .record_flip(self.secret_id, at_ms, version_id)
            .await?;
        info!(secret = %self.secret_id, %version_id, active_user = %state.active, "recorded when pgflip first saw this AWSCURRENT version, which another rotator promoted");
        Ok(())
    }

    async fn current(&self, user: &str) -> Result<Option<SecretVersion>, RotationError> {
        if !self.users.contains(user) {
            return Ok(None);
        }
        let active = self.active_version().await?;
        if active.secret.username() == user {
            return Ok(Some(active));
        }
        // The version that last named the user holds its password; the
        // server and database are the active version's (an operator edits
        // AWSCURRENT when the database moves).
        Ok(self.last_of(user).await?.map(|p| SecretVersion {
            version_id: p.version_id,
            secret: active
                .secret
                .for_user(user)
                .with_password(p.secret.password().clone()),
            created_ms: p.created_ms,
        }))
    }

    async fn template(&self, user: &str) -> Result<SecretVersion, RotationError> {
        match self.current(user).await? {
            Some(v) => Ok(v),
            None => {
                let active = self.active_version().await?;
                Ok(SecretVersion {
                    version_id: active.version_id,
                    secret: active.secret.for_user(user),
                    created_ms: active.created_ms,
                })
            }
        }
    }

    async fn pending(&self, _user: &str) -> Result<Option<SecretVersion>, RotationError> {
        self.at(AWSPENDING).await
    }

    async fn stage(
        &self,
        _user: &str,
        token: &str,
        value: &Password,
    ) -> Result<String, RotationError> {
        self.stores
            .secrets
            .put_pending(self.secret_id, token, value)
            .await
    }

    async fn discard(&self, _user: &str, version_id: &str) -> Result<(), RotationError> {
        // The next staged version takes the label (PutSecretValue moves
        // AWSPENDING), so this layout's labels move only in the flip.
        info!(secret = %self.secret_id, %version_id, "the stale pending version keeps its label until the fresh one is staged");
        Ok(())
    }

    async fn settle(&self, _user: &str, _version_id: &str) -> Result<bool, RotationError> {
        Ok(false)
    }

    /// Moves `AWSCURRENT` to the version naming `to`: the verified
    /// `AWSPENDING` version `version_id` (the forward flip), or without one
    /// the version that last named `to` (its role label, else
    /// `AWSPREVIOUS`: the rollback), with `secretsmanager:UpdateSecretVersionStage`.
    /// Then each role's label goes on its version, the flip is recorded
    /// (`secretsmanager:TagResource`), and the optional parameter follows
    /// (`ssm:PutParameter`). No version naming `to` is `SecretNotFound`;
    /// `AWSCURRENT` already naming `to` in another version than the
    /// verified one is `PointerMoved` (an old execution redriven after a
    /// newer rotation); both with nothing moved.
    async fn flip(&self, to: &str, version_id: Option<&str>) -> Result<Flipped, RotationError> {
        check_user(&self.users, to)?;
        let active = self.active_version().await?;
        let was = active.secret.username().to_string();
        let changed = was != to;
        if !changed {
            if let Some(id) = version_id.filter(|id| *id != active.version_id) {
                return Err(RotationError::PointerMoved(format!(
                    "{}: {AWSCURRENT} already names {to:?}, in version {}, not in the version {id} this execution verified",
                    self.secret_id, active.version_id
                )));
            }
        }
        let promoted = if changed {
            let version = match version_id {
                Some(id) => self
                    .at(AWSPENDING)
                    .await?
                    .filter(|p| p.version_id == id && p.secret.username() == to),
                None => self.last_of(to).await?,
            };
            let version = version.ok_or_else(|| {
                RotationError::SecretNotFound(format!(
                    "{}: no {} names {to:?}, so the pointer cannot move to it; {AWSCURRENT} still names {was:?}",
                    self.secret_id,
                    match version_id {
                        Some(v) => format!("{AWSPENDING} version {v}"),
                        None => format!("version labelled {} or {AWSPREVIOUS}", role_label(to)),
                    }
                ))
            })?;
            self.stores
                .secrets
                .promote(self.secret_id, &version.version_id)
                .await?;
            version.version_id
        } else {
            active.version_id.clone()
        };
        // Each role's label on its version (idempotent: a replay finishes it).
        self.stores
            .secrets
            .label(self.secret_id, &role_label(to), &promoted)
            .await?;
        if changed {
            self.stores
                .secrets
                .label(self.secret_id, &role_label(&was), &active.version_id)
                .await?;
        }
        let recorded = self.stores.secrets.flipped_at(self.secret_id).await?;
        if changed || recorded.is_none_or(|r| r.version_id != promoted) {
            self.stores
                .secrets
                .record_flip(self.secret_id, crate::steps::now_ms(), &promoted)
                .await?;
        }
        if let Some(parameter) = self.parameter {
            let shown = self.stores.parameters.get(parameter).await?.value;
            if shown.trim() != to {
                self.stores.parameters.put(parameter, to).await?;
                if !changed {
                    warn!(%parameter, active_user = %to, "the active-user parameter disagreed with the secret; set it to the secret's active user");
                }
            }
        }
        info!(secret = %self.secret_id, %was, active_user = %to, changed, "flipped the active user ({AWSCURRENT})");
        Ok(Flipped {
            active_user: to.to_string(),
            was,
            changed,
        })
    }

    /// The `masterarn` field of the `AWSCURRENT` version.
    async fn admin_secret(&self) -> Result<Option<String>, RotationError> {
        Ok(self
            .active_version()
            .await?
            .secret
            .field("masterarn")
            .filter(|m| !m.trim().is_empty())
            .map(str::to_string))
    }
}
