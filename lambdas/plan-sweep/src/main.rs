//! plan-sweep: the sweep's first state. Lists the registered targets the
//! sweep's input selects and splits them into lanes (one database server
//! per lane, at most `SWEEP_PER_CLUSTER` lanes per ECS cluster, each lane
//! delayed by up to `SWEEP_JITTER_SECONDS`); the sweep's Map runs the
//! lanes side by side, at most `SWEEP_MAX_CONCURRENCY` at once. One sweep
//! at a time: a later one started while another runs starts nothing.

use lambda_runtime::{service_fn, LambdaEvent};
use pgflip_core::adapters::{
    secrets::SecretsManager, sfn::StepFunctions, ssm::SsmParameters,
    ssm_passwords::SsmPasswordStore,
};
use pgflip_core::config::{ProcessEnv, SweepConfig, TargetConfig, Targets};
use pgflip_core::errors::RotationError;
use pgflip_core::runtime::{aws_config, init_tracing, or_exit};
use pgflip_core::steps::{self, SweepRequest};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let default_target = or_exit(TargetConfig::from_env(&ProcessEnv));
    let targets = Targets::from_env(&ProcessEnv);
    let sweep = or_exit(SweepConfig::from_env(&ProcessEnv));
    let aws = aws_config().await;
    let parameters = SsmParameters::new(aws_sdk_ssm::Client::new(&aws));
    let secrets_manager = SecretsManager::new(aws_sdk_secretsmanager::Client::new(&aws));
    let ssm = SsmPasswordStore::new(aws_sdk_ssm::Client::new(&aws));
    let executions = StepFunctions::new(aws_sdk_sfn::Client::new(&aws));
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let request = SweepRequest::parse(&event.payload);
        let (targets, default_target) = (&targets, &default_target);
        let (sweep, parameters) = (&sweep, &parameters);
        let (secrets_manager, ssm, executions) = (&secrets_manager, &ssm, &executions);
        async move {
            let request = request?;
            let plan = steps::plan_sweep(
                &request,
                sweep,
                targets,
                default_target,
                parameters,
                secrets_manager,
                ssm,
                executions,
            )
            .await?;
            serde_json::to_value(plan)
                .map_err(|e| RotationError::InvalidInput(format!("the sweep's plan: {e}")))
        }
    }))
    .await
}
