//! flip-parameter: point the pointer at a user (also used by the rollback):
//! write the active-user parameter, or move the alternating secret's
//! AWSCURRENT (see `pgflip_core::layouts`).

use lambda_runtime::{service_fn, LambdaEvent};
use pgflip_core::adapters::{secrets::SecretsManager, ssm::SsmParameters};
use pgflip_core::runtime::{aws_config, init_tracing, parse_payload};
use pgflip_core::steps;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let aws = aws_config().await;
    let parameters = SsmParameters::new(aws_sdk_ssm::Client::new(&aws));
    let secrets = SecretsManager::new(aws_sdk_secretsmanager::Client::new(&aws));
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async {
        let request = parse_payload(event.payload)?;
        steps::flip_parameter(&request, &parameters, &secrets).await
    }))
    .await
}
