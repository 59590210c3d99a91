//! verify-login: log in with the pending password, then promote it to current.

use lambda_runtime::{service_fn, LambdaEvent};
use pgflip_core::adapters::{
    postgres::Postgres, secrets::SecretsManager, ssm::SsmParameters,
    ssm_passwords::SsmPasswordStore, PasswordStores,
};
use pgflip_core::config::{DbConfig, ProcessEnv};
use pgflip_core::runtime::{aws_config, init_tracing, or_exit, parse_payload};
use pgflip_core::steps::{self, VerifyRequest};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let database = or_exit(DbConfig::from_env(&ProcessEnv).and_then(Postgres::new));
    let aws = aws_config().await;
    // Only to check that the pointer did not move since select-user.
    let parameters = SsmParameters::new(aws_sdk_ssm::Client::new(&aws));
    let stores = PasswordStores {
        secrets_manager: SecretsManager::new(aws_sdk_secretsmanager::Client::new(&aws)),
        ssm: SsmPasswordStore::new(aws_sdk_ssm::Client::new(&aws)),
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async {
        let request: VerifyRequest = parse_payload(event.payload)?;
        let secrets = stores.get(request.plan.password_store);
        steps::verify_login(
            &request.plan,
            &request.pending,
            &parameters,
            secrets,
            &database,
        )
        .await
    }))
    .await
}
