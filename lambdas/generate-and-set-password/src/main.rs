//! generate-and-set-password: stage a new password as pending on the
//! inactive user's secret (or SSM parameter) and set it in PostgreSQL (as a
//! SCRAM verifier), as the user itself or, with DB_ADMIN_SECRET_ID, as an
//! administrator.

use lambda_runtime::{service_fn, LambdaEvent};
use pgflip_core::adapters::{
    postgres::Postgres, secrets::SecretsManager, ssm::SsmParameters,
    ssm_passwords::SsmPasswordStore, PasswordStores,
};
use pgflip_core::config::{
    password_encryption_from_env, password_policy_from_env, password_setter_from_env, DbConfig,
    ProcessEnv,
};
use pgflip_core::domain::Plan;
use pgflip_core::runtime::{aws_config, init_tracing, or_exit, parse_payload};
use pgflip_core::steps;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let policy = or_exit(password_policy_from_env(&ProcessEnv));
    let setter = password_setter_from_env(&ProcessEnv);
    let database = or_exit(
        DbConfig::from_env(&ProcessEnv)
            .and_then(|db| {
                Ok(DbConfig {
                    password_encryption: password_encryption_from_env(&ProcessEnv)?,
                    ..db
                })
            })
            .and_then(Postgres::new),
    );
    let aws = aws_config().await;
    // Only to check that the pointer did not move since select-user.
    let parameters = SsmParameters::new(aws_sdk_ssm::Client::new(&aws));
    let stores = PasswordStores {
        secrets_manager: SecretsManager::new(aws_sdk_secretsmanager::Client::new(&aws)),
        ssm: SsmPasswordStore::new(aws_sdk_ssm::Client::new(&aws)),
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async {
        let plan: Plan = parse_payload(event.payload)?;
        let secrets = stores.get(plan.password_store);
        steps::generate_and_set_password(&plan, &policy, &setter, &parameters, secrets, &database)
            .await
    }))
    .await
}
