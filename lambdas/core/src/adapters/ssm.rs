//! [`ParameterStore`] on SSM Parameter Store.

use async_trait::async_trait;
use aws_sdk_ssm::Client;

use super::aws::{classify, classify_or};
use crate::errors::RotationError;
use crate::ports::{ParameterStore, ParameterValue};

pub struct SsmParameters {
    client: Client,
}

impl SsmParameters {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl ParameterStore for SsmParameters {
    async fn get(&self, name: &str) -> Result<ParameterValue, RotationError> {
        let out = self
            .client
            .get_parameter()
            .name(name)
            .send()
            .await
            .map_err(|e| {
                classify_or("ssm:GetParameter", e, |code| {
                    (code == "ParameterNotFound")
                        .then(|| RotationError::ParameterNotFound(name.to_string()))
                })
            })?;
        let parameter = out
            .parameter
            .ok_or_else(|| RotationError::ParameterNotFound(name.to_string()))?;
        Ok(ParameterValue {
            last_modified_ms: parameter
                .last_modified_date
                .and_then(|d| d.to_millis().ok()),
            value: parameter
                .value
                .ok_or_else(|| RotationError::ParameterNotFound(name.to_string()))?,
        })
    }

    async fn put(&self, name: &str, value: &str) -> Result<(), RotationError> {
        self.client
            .put_parameter()
            .name(name)
            .value(value)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| classify("ssm:PutParameter", e))?;
        Ok(())
    }

    async fn list(&self, path: &str) -> Result<Vec<(String, String)>, RotationError> {
        let pages: Vec<_> = self
            .client
            .get_parameters_by_path()
            .path(path.trim_end_matches('/'))
            .recursive(false)
            .into_paginator()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| classify("ssm:GetParametersByPath", e))?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.parameters.unwrap_or_default())
            .filter_map(|p| Some((p.name?, p.value?)))
            .collect())
    }
}
