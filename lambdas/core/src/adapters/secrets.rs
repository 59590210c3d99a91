//! [`SecretStore`] on AWS Secrets Manager.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;

use super::aws::{classify, classify_or, error_code};
use crate::domain::{DbSecret, SecretVersion, AWSCURRENT, AWSPENDING, AWSPREVIOUS};
use crate::errors::RotationError;
use crate::password::Password;
use crate::ports::{CurrentVersion, FlipRecord, SecretStore, FLIPPED_AT_TAG};

pub struct SecretsManager {
    client: Client,
}

impl SecretsManager {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// `secretsmanager:DescribeSecret` (a missing secret: `SecretNotFound`).
    async fn describe(
        &self,
        secret_id: &str,
    ) -> Result<
        aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput,
        RotationError,
    > {
        self.client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| {
                classify_or("secretsmanager:DescribeSecret", e, |c| {
                    missing(secret_id, c)
                })
            })
    }

    /// Version id → staging labels.
    async fn versions(
        &self,
        secret_id: &str,
    ) -> Result<HashMap<String, Vec<String>>, RotationError> {
        Ok(self
            .describe(secret_id)
            .await?
            .version_ids_to_stages
            .unwrap_or_default())
    }

    /// The version carrying `stage`, without its value
    /// (`secretsmanager:ListSecretVersionIds`, paginated).
    async fn stage_version(
        &self,
        secret_id: &str,
        stage: &str,
    ) -> Result<Option<CurrentVersion>, RotationError> {
        let pages: Vec<_> = self
            .client
            .list_secret_version_ids()
            .secret_id(secret_id)
            .into_paginator()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| {
                classify_or("secretsmanager:ListSecretVersionIds", e, |c| {
                    missing(secret_id, c)
                })
            })?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.versions.unwrap_or_default())
            .find(|v| {
                v.version_stages
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|s| s == stage)
            })
            .map(|v| CurrentVersion {
                created_ms: v.created_date.and_then(|d| d.to_millis().ok()),
                version_id: v.version_id.unwrap_or_default(),
            }))
    }

    async fn move_stage(
        &self,
        secret_id: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), RotationError> {
        self.client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(stage)
            .set_move_to_version_id(to.map(str::to_string))
            .set_remove_from_version_id(from.map(str::to_string))
            .send()
            .await
            .map_err(|e| {
                classify_or("secretsmanager:UpdateSecretVersionStage", e, |c| {
                    missing(secret_id, c)
                })
            })?;
        Ok(())
    }
}

/// `ResourceNotFoundException` means the secret is missing.
fn missing(secret_id: &str, code: &str) -> Option<RotationError> {
    (code == "ResourceNotFoundException")
        .then(|| RotationError::SecretNotFound(secret_id.to_string()))
}

fn stage_of<'a>(versions: &'a HashMap<String, Vec<String>>, stage: &str) -> Option<&'a str> {
    versions
        .iter()
        .find(|(_, stages)| stages.iter().any(|s| s == stage))
        .map(|(id, _)| id.as_str())
}

#[async_trait]
impl SecretStore for SecretsManager {
    async fn get_stage(
        &self,
        secret_id: &str,
        stage: &str,
    ) -> Result<Option<SecretVersion>, RotationError> {
        let result = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .version_stage(stage)
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {
                // Either the secret is missing or no version has this label.
                self.versions(secret_id).await?;
                return Ok(None);
            }
            Err(e) => return Err(classify("secretsmanager:GetSecretValue", e)),
        };
        let version_id = out.version_id.unwrap_or_default();
        let created_ms = out.created_date.and_then(|d| d.to_millis().ok());
        let raw = out
            .secret_string
            .ok_or_else(|| RotationError::SecretMalformed {
                secret: secret_id.to_string(),
                reason: "the version holds binary data, not a JSON string".into(),
            })?;
        Ok(Some(SecretVersion {
            version_id,
            secret: DbSecret::parse(secret_id, &raw)?,
            created_ms,
        }))
    }

    async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        secret_string: &Password,
    ) -> Result<String, RotationError> {
        let out = self
            .client
            .put_secret_value()
            .secret_id(secret_id)
            .client_request_token(token)
            .secret_string(secret_string.expose())
            .version_stages(AWSPENDING)
            .send()
            .await
            .map_err(|e| {
                classify_or("secretsmanager:PutSecretValue", e, |c| {
                    missing(secret_id, c)
                })
            })?;
        Ok(out.version_id.unwrap_or_else(|| token.to_string()))
    }

    async fn promote(&self, secret_id: &str, version_id: &str) -> Result<(), RotationError> {
        let versions = self.versions(secret_id).await?;
        if !versions.contains_key(version_id) {
            return Err(RotationError::SecretNotFound(format!(
                "{secret_id} has no version {version_id}"
            )));
        }
        let current = stage_of(&versions, AWSCURRENT);
        if current != Some(version_id) {
            self.move_stage(secret_id, AWSCURRENT, Some(version_id), current)
                .await?;
        }
        if versions[version_id].iter().any(|s| s == AWSPENDING) {
            self.move_stage(secret_id, AWSPENDING, None, Some(version_id))
                .await?;
        }
        Ok(())
    }

    async fn discard_pending(
        &self,
        secret_id: &str,
        version_id: &str,
    ) -> Result<(), RotationError> {
        let versions = self.versions(secret_id).await?;
        let labelled = versions
            .get(version_id)
            .is_some_and(|stages| stages.iter().any(|s| s == AWSPENDING));
        if labelled {
            self.move_stage(secret_id, AWSPENDING, None, Some(version_id))
                .await?;
        }
        Ok(())
    }

    async fn flipped_at(&self, secret_id: &str) -> Result<Option<FlipRecord>, RotationError> {
        Ok(self
            .describe(secret_id)
            .await?
            .tags
            .unwrap_or_default()
            .iter()
            .find(|t| t.key() == Some(FLIPPED_AT_TAG))
            .and_then(|t| t.value())
            .and_then(FlipRecord::parse))
    }

    async fn record_flip(
        &self,
        secret_id: &str,
        at_ms: i64,
        version_id: &str,
    ) -> Result<(), RotationError> {
        let record = FlipRecord {
            at_ms,
            version_id: version_id.to_string(),
        };
        let tag = aws_sdk_secretsmanager::types::Tag::builder()
            .key(FLIPPED_AT_TAG)
            .value(record.render())
            .build();
        self.client
            .tag_resource()
            .secret_id(secret_id)
            .tags(tag)
            .send()
            .await
            .map_err(|e| classify_or("secretsmanager:TagResource", e, |c| missing(secret_id, c)))?;
        Ok(())
    }

    async fn label(
        &self,
        secret_id: &str,
        stage: &str,
        version_id: &str,
    ) -> Result<(), RotationError> {
        let versions = self.versions(secret_id).await?;
        let holder = stage_of(&versions, stage);
        if holder != Some(version_id) {
            self.move_stage(secret_id, stage, Some(version_id), holder)
                .await?;
        }
        Ok(())
    }

    async fn current_version(
        &self,
        secret_id: &str,
    ) -> Result<Option<CurrentVersion>, RotationError> {
        self.stage_version(secret_id, AWSCURRENT).await
    }

    async fn previous_version(
        &self,
        secret_id: &str,
    ) -> Result<Option<CurrentVersion>, RotationError> {
        self.stage_version(secret_id, AWSPREVIOUS).await
    }
}
