//! [`SecretStore`] on SSM Parameter Store: one SecureString parameter per
//! user, as setup (a) keeps its password. The value is the RDS JSON shape or
//! the bare password (its user and endpoint then come from the target's
//! configuration); a new version is written in the same form.
//!
//! Secrets Manager's stages map to parameter version labels (a label may not
//! start with `aws` or `ssm`): `AWSPENDING` is `pgflip-pending`, `AWSCURRENT`
//! is `pgflip-current`, and the version it replaces keeps `pgflip-previous`.
//! A parameter pgflip has never written has no labels: its latest version is
//! current, and pgflip labels it so before it writes a new one.
//!
//! Readers that ask for the parameter without a label get its latest
//! version. For the active user that is always the current one: a new
//! version is only written for the inactive user, and the parameter is
//! flipped to that user only after the version is verified and labelled
//! current.

use async_trait::async_trait;
use aws_sdk_ssm::types::ParameterType;
use aws_sdk_ssm::Client;

use super::aws::classify_or;
use crate::domain::{DbSecret, SecretVersion, AWSCURRENT, AWSPENDING};
use crate::errors::RotationError;
use crate::password::Password;
use crate::ports::{CurrentVersion, SecretStore};

pub const CURRENT_LABEL: &str = "pgflip-current";
pub const PENDING_LABEL: &str = "pgflip-pending";
pub const PREVIOUS_LABEL: &str = "pgflip-previous";

pub struct SsmPasswordStore {
    client: Client,
}

/// One version of a parameter, without its value.
struct Version {
    number: i64,
    labels: Vec<String>,
    modified_ms: Option<i64>,
    secure: bool,
    key_id: Option<String>,
}

impl Version {
    fn has(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }
}

fn label_of(stage: &str) -> Result<&'static str, RotationError> {
    match stage {
        AWSCURRENT => Ok(CURRENT_LABEL),
        AWSPENDING => Ok(PENDING_LABEL),
        other => Err(RotationError::Configuration(format!(
            "the SSM password store knows no stage {other:?}"
        ))),
    }
}

/// The current version: the one labelled so, or (a parameter pgflip never
/// wrote) the latest, unless that is a pending one.
fn current_of(history: &[Version]) -> Option<&Version> {
    history
        .iter()
        .find(|v| v.has(CURRENT_LABEL))
        .or_else(|| history.last().filter(|v| !v.has(PENDING_LABEL)))
}

/// A missing parameter, or a version of it that is gone.
fn missing(name: &str, code: &str) -> Option<RotationError> {
    match code {
        "ParameterNotFound" => Some(RotationError::SecretNotFound(name.to_string())),
        "ParameterVersionNotFound" => Some(RotationError::SecretNotFound(format!(
            "{name}: a version it needs is gone"
        ))),
        _ => None,
    }
}

impl SsmPasswordStore {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Every version, oldest first, labels and dates but no values.
    async fn history(&self, name: &str) -> Result<Vec<Version>, RotationError> {
        let mut pages = self
            .client
            .get_parameter_history()
            .name(name)
            .with_decryption(false)
            .into_paginator()
            .send();
        let mut versions = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| classify_or("ssm:GetParameterHistory", e, |c| missing(name, c)))?;
            for p in page.parameters.unwrap_or_default() {
                versions.push(Version {
                    number: p.version,
                    labels: p.labels.unwrap_or_default(),
                    modified_ms: p.last_modified_date.and_then(|d| d.to_millis().ok()),
                    secure: p.r#type == Some(ParameterType::SecureString),
                    key_id: p.key_id,
                });
            }
        }
        if versions.is_empty() {
            return Err(RotationError::SecretNotFound(name.to_string()));
        }
        versions.sort_by_key(|v| v.number);
        if let Some(v) = versions.iter().find(|v| !v.secure) {
            return Err(RotationError::Configuration(format!(
                "{name} (version {}) is not a SecureString parameter: passwords must be encrypted",
                v.number
            )));
        }
        Ok(versions)
    }

    async fn unlabel_pending(&self, name: &str, version: i64) -> Result<(), RotationError> {
        self.client
            .unlabel_parameter_version()
            .name(name)
            .parameter_version(version)
            .labels(PENDING_LABEL)
            .send()
            .await
            .map_err(|e| classify_or("ssm:UnlabelParameterVersion", e, |c| missing(name, c)))?;
        Ok(())
    }

    async fn label(&self, name: &str, version: i64, label: &str) -> Result<(), RotationError> {
        self.client
            .label_parameter_version()
            .name(name)
            .parameter_version(version)
            .labels(label)
            .send()
            .await
            .map_err(|e| classify_or("ssm:LabelParameterVersion", e, |c| missing(name, c)))?;
        Ok(())
    }
}

#[async_trait]
impl SecretStore for SsmPasswordStore {
    async fn get_stage(
        &self,
        secret_id: &str,
        stage: &str,
    ) -> Result<Option<SecretVersion>, RotationError> {
        let label = label_of(stage)?;
        let history = self.history(secret_id).await?;
        let found = if label == CURRENT_LABEL {
            current_of(&history)
        } else {
            history.iter().find(|v| v.has(label))
        };
        let Some(version) = found else {
            return Ok(None);
        };
        let out = self
            .client
            .get_parameter()
            .name(format!("{secret_id}:{}", version.number))
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| classify_or("ssm:GetParameter", e, |c| missing(secret_id, c)))?;
        let value = out
            .parameter
            .and_then(|p| p.value)
            .ok_or_else(|| RotationError::SecretNotFound(secret_id.to_string()))?;
        Ok(Some(SecretVersion {
            version_id: version.number.to_string(),
            secret: DbSecret::parse_or_bare(secret_id, &value)?,
            created_ms: version.modified_ms,
        }))
    }

    /// SSM has no request token: a retried step finds the version by its
    /// `pgflip-pending` label instead (the step resumes it).
    async fn put_pending(
        &self,
        secret_id: &str,
        _token: &str,
        secret_string: &Password,
    ) -> Result<String, RotationError> {
        let history = self.history(secret_id).await?;
        // First time: mark what the application reads today as current, so
        // the new version cannot be mistaken for it.
        if !history.iter().any(|v| v.has(CURRENT_LABEL)) {
            if let Some(current) = current_of(&history) {
                self.label(secret_id, current.number, CURRENT_LABEL).await?;
            }
        }
        let key_id = history.last().and_then(|v| v.key_id.clone());
        let out = self
            .client
            .put_parameter()
            .name(secret_id)
            .value(secret_string.expose())
            .r#type(ParameterType::SecureString)
            .set_key_id(key_id)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| classify_or("ssm:PutParameter", e, |c| missing(secret_id, c)))?;
        self.label(secret_id, out.version, PENDING_LABEL).await?;
        Ok(out.version.to_string())
    }

    /// SecureString parameters keep no previous label.
    async fn previous_version(
        &self,
        _secret_id: &str,
    ) -> Result<Option<CurrentVersion>, RotationError> {
        Ok(None)
    }

    /// SecureString parameters hold one user each: never a pointer.
    async fn flipped_at(
        &self,
        secret_id: &str,
    ) -> Result<Option<crate::ports::FlipRecord>, RotationError> {
        Err(crate::ports::unsupported_pointer(secret_id))
    }

    async fn record_flip(
        &self,
        secret_id: &str,
        _at_ms: i64,
        _version_id: &str,
    ) -> Result<(), RotationError> {
        Err(crate::ports::unsupported_pointer(secret_id))
    }

    async fn label(
        &self,
        secret_id: &str,
        _stage: &str,
        _version_id: &str,
    ) -> Result<(), RotationError> {
        Err(crate::ports::unsupported_pointer(secret_id))
    }

    async fn promote(&self, secret_id: &str, version_id: &str) -> Result<(), RotationError> {
        let history = self.history(secret_id).await?;
        let wanted = version_id
            .parse::<i64>()
            .ok()
            .and_then(|n| history.iter().find(|v| v.number == n))
            .ok_or_else(|| {
                RotationError::SecretNotFound(format!("{secret_id} has no version {version_id}"))
            })?;
        let current = current_of(&history).map(|v| v.number);
        if current != Some(wanted.number) {
            self.label(secret_id, wanted.number, CURRENT_LABEL).await?;
            if let Some(previous) = current {
                self.label(secret_id, previous, PREVIOUS_LABEL).await?;
            }
        }
        if wanted.has(PENDING_LABEL) {
            self.unlabel_pending(secret_id, wanted.number).await?;
        }
        Ok(())
    }

    async fn discard_pending(
        &self,
        secret_id: &str,
        version_id: &str,
    ) -> Result<(), RotationError> {
        let history = self.history(secret_id).await?;
        let labelled = version_id
            .parse::<i64>()
            .ok()
            .and_then(|n| history.iter().find(|v| v.number == n))
            .filter(|v| v.has(PENDING_LABEL));
        if let Some(v) = labelled {
            self.unlabel_pending(secret_id, v.number).await?;
        }
        Ok(())
    }

    async fn current_version(
        &self,
        secret_id: &str,
    ) -> Result<Option<CurrentVersion>, RotationError> {
        let history = self.history(secret_id).await?;
        Ok(current_of(&history).map(|v| CurrentVersion {
            version_id: v.number.to_string(),
            created_ms: v.modified_ms,
        }))
    }
}
