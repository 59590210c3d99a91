//! select-user: read the active-user parameter, pick the inactive user, preflight.

use lambda_runtime::{service_fn, LambdaEvent};
use pgflip_core::adapters::{postgres::Postgres, secrets::SecretsManager, ssm::SsmParameters};
use pgflip_core::config::{DbConfig, ProcessEnv, TargetConfig};
use pgflip_core::runtime::{aws_config, init_tracing, or_exit, parse_payload};
use pgflip_core::steps;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let target = or_exit(TargetConfig::from_env(&ProcessEnv));
    let database = or_exit(DbConfig::from_env(&ProcessEnv).and_then(Postgres::new));
    let aws = aws_config().await;
    let parameters = SsmParameters::new(aws_sdk_ssm::Client::new(&aws));
    let secrets = SecretsManager::new(aws_sdk_secretsmanager::Client::new(&aws));
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async {
        let request = parse_payload(event.payload)?;
        steps::select_user(&target, &request, &parameters, &secrets, &database).await
    }))
    .await
}
