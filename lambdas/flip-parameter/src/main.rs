//! flip-parameter: point the active-user parameter at a user (also used by the rollback).

use lambda_runtime::{service_fn, LambdaEvent};
use pgflip_core::adapters::ssm::SsmParameters;
use pgflip_core::runtime::{aws_config, init_tracing, parse_payload};
use pgflip_core::steps;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let aws = aws_config().await;
    let parameters = SsmParameters::new(aws_sdk_ssm::Client::new(&aws));
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async {
        let request = parse_payload(event.payload)?;
        steps::flip_parameter(&request, &parameters).await
    }))
    .await
}
