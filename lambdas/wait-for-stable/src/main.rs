//! wait-for-stable: poll the deployments once; the state machine waits between polls.

use lambda_runtime::{service_fn, LambdaEvent};
use pgflip_core::adapters::ecs::EcsDeployments;
use pgflip_core::runtime::{aws_config, init_tracing, parse_payload};
use pgflip_core::steps;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let aws = aws_config().await;
    let deployments = EcsDeployments::new(aws_sdk_ecs::Client::new(&aws));
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async {
        let rollout = parse_payload(event.payload)?;
        steps::wait_for_stable(&rollout, &deployments, steps::now_ms()).await
    }))
    .await
}
