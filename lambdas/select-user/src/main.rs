//! select-user: resolve the target, concurrency guard, read the active-user
//! parameter, pick the inactive user (or finish an interrupted flip), preflight.

use lambda_runtime::{service_fn, LambdaEvent};
use pgflip_core::adapters::{
    ecs::EcsDeployments, postgres::Postgres, rds::RdsProxies, secrets::SecretsManager,
    sfn::StepFunctions, ssm::SsmParameters, ssm_passwords::SsmPasswordStore, PasswordStores,
};
use pgflip_core::config::{DbConfig, ProcessEnv, TargetConfig, Targets};
use pgflip_core::runtime::{aws_config, init_tracing, or_exit, parse_payload};
use pgflip_core::steps;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let default_target = or_exit(TargetConfig::from_env(&ProcessEnv));
    let targets = Targets::from_env(&ProcessEnv);
    let database = or_exit(DbConfig::from_env(&ProcessEnv).and_then(Postgres::new));
    let aws = aws_config().await;
    let parameters = SsmParameters::new(aws_sdk_ssm::Client::new(&aws));
    let stores = PasswordStores {
        secrets_manager: SecretsManager::new(aws_sdk_secretsmanager::Client::new(&aws)),
        ssm: SsmPasswordStore::new(aws_sdk_ssm::Client::new(&aws)),
    };
    let deployments = EcsDeployments::new(aws_sdk_ecs::Client::new(&aws));
    let executions = StepFunctions::new(aws_sdk_sfn::Client::new(&aws));
    let proxies = RdsProxies::new(aws_sdk_rds::Client::new(&aws));
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async {
        let request = parse_payload(event.payload)?;
        let target =
            steps::resolve_target(&targets, &default_target, &request, &parameters).await?;
        steps::select_user(
            &target,
            &request,
            &parameters,
            stores.get(target.password_store),
            &database,
            &deployments,
            &executions,
            &proxies,
            &deployments,
        )
        .await
    }))
    .await
}
