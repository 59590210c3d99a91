//! report-outcome: after each execution of the rotation state machine, its
//! metrics (EMF) and, unless it succeeded, a notification; on a schedule,
//! every target's password ages; at the end of a sweep, its summary.

use lambda_runtime::{service_fn, LambdaEvent};
use pgflip_core::adapters::{
    secrets::SecretsManager, sfn::StepFunctions, sns::SnsTopic, ssm::SsmParameters,
    ssm_passwords::SsmPasswordStore,
};
use pgflip_core::config::{ProcessEnv, ReportConfig, TargetConfig, Targets};
use pgflip_core::errors::RotationError;
use pgflip_core::runtime::{aws_config, init_tracing, or_exit};
use pgflip_core::steps::{self, ReportRequest};
use serde_json::{json, Value};

struct Context {
    default_target: TargetConfig,
    targets: Targets,
    report: ReportConfig,
    parameters: SsmParameters,
    secrets_manager: SecretsManager,
    ssm: SsmPasswordStore,
    history: StepFunctions,
    notifier: SnsTopic,
}

async fn handle(payload: Value, c: &Context) -> Result<Value, RotationError> {
    let now = steps::now_ms();
    let metrics = match ReportRequest::parse(&payload)? {
        ReportRequest::Ended(ended) => {
            steps::report_outcome(
                &ended,
                &c.targets,
                &c.default_target,
                &c.parameters,
                &c.secrets_manager,
                &c.ssm,
                &c.history,
                &c.notifier,
                &c.report.metrics_namespace,
                now,
            )
            .await?
            .metrics
        }
        ReportRequest::Sweep(ended) => {
            let (summary, _) = steps::report_sweep(&ended, &c.history, &c.notifier).await?;
            return serde_json::to_value(summary)
                .map_err(|e| RotationError::InvalidInput(format!("the sweep's summary: {e}")));
        }
        ReportRequest::PasswordAges => {
            steps::report_password_ages(
                &c.targets,
                &c.default_target,
                &c.parameters,
                &c.secrets_manager,
                &c.ssm,
                &c.report.metrics_namespace,
                now,
            )
            .await?
        }
    };
    // Embedded metric format: one JSON document per line on stdout, which
    // CloudWatch Logs turns into metrics.
    for doc in &metrics {
        println!("{doc}");
    }
    Ok(json!({"metrics": metrics.len()}))
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let report = or_exit(ReportConfig::from_env(&ProcessEnv));
    let aws = aws_config().await;
    let context = Context {
        default_target: or_exit(TargetConfig::from_env(&ProcessEnv)),
        targets: Targets::from_env(&ProcessEnv),
        parameters: SsmParameters::new(aws_sdk_ssm::Client::new(&aws)),
        secrets_manager: SecretsManager::new(aws_sdk_secretsmanager::Client::new(&aws)),
        ssm: SsmPasswordStore::new(aws_sdk_ssm::Client::new(&aws)),
        history: StepFunctions::new(aws_sdk_sfn::Client::new(&aws)),
        notifier: SnsTopic::new(
            aws_sdk_sns::Client::new(&aws),
            report.alert_topic_arn.clone(),
        ),
        report,
    };
    let context = &context;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        handle(event.payload, context)
    }))
    .await
}
