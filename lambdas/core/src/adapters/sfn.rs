//! [`Executions`] on AWS Step Functions: the concurrency guard.
//!
//! The guard needs no lock of its own: Step Functions already knows which
//! executions are running. An execution that crashed, failed or was stopped
//! is not RUNNING, so it never blocks the next one; a redriven execution is
//! RUNNING again with its original start date.

use async_trait::async_trait;
use aws_sdk_sfn::types::ExecutionStatus;
use aws_sdk_sfn::Client;

use super::aws::classify;
use crate::errors::RotationError;
use crate::ports::{Executions, RunningExecution};

pub struct StepFunctions {
    client: Client,
}

impl StepFunctions {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// `arn:aws:states:r:a:execution:<machine>:<name>` -> `arn:aws:states:r:a:stateMachine:<machine>`.
pub fn state_machine_arn(execution_arn: &str) -> Result<String, RotationError> {
    let parts: Vec<&str> = execution_arn.split(':').collect();
    match parts.as_slice() {
        ["arn", partition, "states", region, account, "execution", machine, _name, ..] => Ok(
            format!("arn:{partition}:states:{region}:{account}:stateMachine:{machine}"),
        ),
        _ => Err(RotationError::InvalidInput(format!(
            "not a Step Functions execution ARN: {execution_arn}"
        ))),
    }
}

#[async_trait]
impl Executions for StepFunctions {
    async fn running(&self, execution_arn: &str) -> Result<Vec<RunningExecution>, RotationError> {
        let machine = state_machine_arn(execution_arn)?;
        let mut pages = self
            .client
            .list_executions()
            .state_machine_arn(&machine)
            .status_filter(ExecutionStatus::Running)
            .into_paginator()
            .send();
        let mut running = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("states:ListExecutions", e))?;
            for e in page.executions {
                running.push(RunningExecution {
                    arn: e.execution_arn,
                    started_ms: e.start_date.to_millis().unwrap_or(i64::MAX),
                });
            }
        }
        Ok(running)
    }

    async fn input(&self, execution_arn: &str) -> Result<Option<String>, RotationError> {
        let out = self
            .client
            .describe_execution()
            .execution_arn(execution_arn)
            .send()
            .await
            .map_err(|e| classify("states:DescribeExecution", e))?;
        Ok(out.input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_the_state_machine_from_the_execution() {
        assert_eq!(
            state_machine_arn(
                "arn:aws:states:eu-west-1:123456789012:execution:pgflip-rotation:run-1"
            )
            .unwrap(),
            "arn:aws:states:eu-west-1:123456789012:stateMachine:pgflip-rotation"
        );
        assert!(state_machine_arn("local-run").is_err());
    }
}
