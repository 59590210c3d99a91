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
use crate::ports::{
    ExecutionHistory, ExecutionRecord, ExecutionRecords, Executions, HistoryEvent, RunningExecution,
};

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

#[async_trait]
impl ExecutionHistory for StepFunctions {
    async fn history(&self, execution_arn: &str) -> Result<Vec<HistoryEvent>, RotationError> {
        let mut pages = self
            .client
            .get_execution_history()
            .execution_arn(execution_arn)
            .include_execution_data(true)
            .max_results(1000)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("states:GetExecutionHistory", e))?;
            out.extend(page.events.into_iter().filter_map(event_of));
        }
        Ok(out)
    }
}

#[async_trait]
impl ExecutionRecords for StepFunctions {
    async fn recent(
        &self,
        state_machine_arn: &str,
        max: usize,
    ) -> Result<Vec<ExecutionRecord>, RotationError> {
        let mut pages = self
            .client
            .list_executions()
            .state_machine_arn(state_machine_arn)
            .max_results(max.clamp(1, 1000) as i32)
            .into_paginator()
            .send();
        let mut listed = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("states:ListExecutions", e))?;
            listed.extend(page.executions);
            if listed.len() >= max {
                break;
            }
        }
        listed.truncate(max);
        let mut out = Vec::with_capacity(listed.len());
        for e in listed {
            let d = self
                .client
                .describe_execution()
                .execution_arn(&e.execution_arn)
                .send()
                .await
                .map_err(|e| classify("states:DescribeExecution", e))?;
            out.push(ExecutionRecord {
                execution_arn: e.execution_arn,
                name: e.name,
                status: d.status.as_str().to_string(),
                start_ms: d.start_date.to_millis().unwrap_or_default(),
                stop_ms: d.stop_date.and_then(|t| t.to_millis().ok()),
                input: d.input,
                output: d.output,
                error: d.error,
                cause: d.cause,
            });
        }
        Ok(out)
    }
}

/// The part of a history event a report reads (`None`: one it does not).
fn event_of(e: aws_sdk_sfn::types::HistoryEvent) -> Option<HistoryEvent> {
    let kind = e.r#type.as_str();
    let failed = |error: Option<String>, cause: Option<String>| HistoryEvent::Failed {
        error: error.unwrap_or_default(),
        cause: cause.unwrap_or_default(),
    };
    let ended = |status: &str, error: Option<String>, cause: Option<String>| HistoryEvent::Ended {
        status: status.into(),
        error,
        cause,
    };
    Some(match kind {
        k if k.ends_with("StateEntered") => HistoryEvent::Entered {
            state: e.state_entered_event_details?.name,
        },
        k if k.ends_with("StateExited") => {
            let d = e.state_exited_event_details?;
            HistoryEvent::Exited {
                state: d.name,
                output: d.output.and_then(|o| serde_json::from_str(&o).ok()),
            }
        }
        "TaskFailed" => {
            let d = e.task_failed_event_details?;
            failed(d.error, d.cause)
        }
        "TaskTimedOut" => {
            let d = e.task_timed_out_event_details?;
            failed(d.error, d.cause)
        }
        "LambdaFunctionFailed" => {
            let d = e.lambda_function_failed_event_details?;
            failed(d.error, d.cause)
        }
        "LambdaFunctionTimedOut" => {
            let d = e.lambda_function_timed_out_event_details?;
            failed(d.error, d.cause)
        }
        "ExecutionSucceeded" => ended("SUCCEEDED", None, None),
        "ExecutionFailed" => {
            let d = e.execution_failed_event_details;
            let (error, cause) = d.map(|d| (d.error, d.cause)).unwrap_or_default();
            ended("FAILED", error, cause)
        }
        "ExecutionTimedOut" => {
            let d = e.execution_timed_out_event_details;
            let (error, cause) = d.map(|d| (d.error, d.cause)).unwrap_or_default();
            ended("TIMED_OUT", error, cause)
        }
        "ExecutionAborted" => {
            let d = e.execution_aborted_event_details;
            let (error, cause) = d.map(|d| (d.error, d.cause)).unwrap_or_default();
            ended("ABORTED", error, cause)
        }
        "ExecutionRedriven" => HistoryEvent::Redriven,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_events_become_what_a_report_reads() {
        use aws_sdk_sfn::types::{
            ExecutionFailedEventDetails, HistoryEvent as Sdk, HistoryEventType as T,
            LambdaFunctionFailedEventDetails, StateEnteredEventDetails, StateExitedEventDetails,
        };
        let at = |t: T| {
            Sdk::builder()
                .timestamp(aws_smithy_types::DateTime::from_secs(0))
                .id(1)
                .r#type(t)
        };
        let events = vec![
            at(T::TaskStateEntered)
                .state_entered_event_details(
                    StateEnteredEventDetails::builder()
                        .name("SelectUser")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
            at(T::LambdaFunctionFailed)
                .lambda_function_failed_event_details(
                    LambdaFunctionFailedEventDetails::builder()
                        .error("PrivilegeDrift")
                        .cause("differ")
                        .build(),
                )
                .build()
                .unwrap(),
            at(T::ChoiceStateExited)
                .state_exited_event_details(
                    StateExitedEventDetails::builder()
                        .name("ChooseMode")
                        .output("{\"mode\": \"rotate\"}")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
            at(T::TaskScheduled).build().unwrap(),
            at(T::ExecutionRedriven).build().unwrap(),
            at(T::ExecutionFailed)
                .execution_failed_event_details(
                    ExecutionFailedEventDetails::builder()
                        .error("PrivilegeDrift")
                        .cause("differ")
                        .build(),
                )
                .build()
                .unwrap(),
        ];
        let mapped: Vec<HistoryEvent> = events.into_iter().filter_map(event_of).collect();
        assert_eq!(
            mapped,
            vec![
                HistoryEvent::Entered {
                    state: "SelectUser".into()
                },
                HistoryEvent::Failed {
                    error: "PrivilegeDrift".into(),
                    cause: "differ".into()
                },
                HistoryEvent::Exited {
                    state: "ChooseMode".into(),
                    output: Some(serde_json::json!({"mode": "rotate"}))
                },
                HistoryEvent::Redriven,
                HistoryEvent::Ended {
                    status: "FAILED".into(),
                    error: Some("PrivilegeDrift".into()),
                    cause: Some("differ".into())
                },
            ]
        );
    }

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
