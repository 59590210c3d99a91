//! Where the command line finds what it reads: the targets (from the
//! Lambdas' environment), the state machine and its executions, the
//! schedule. Two places: AWS (the standard credential chain) and the local
//! stack (`source $STACK_DIR/stack.env`: moto, and the local runner's
//! journal of finished executions, since moto only knows them as stopped).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use pgflip_core::adapters::{
    secrets::SecretsManager, sfn::StepFunctions, ssm::SsmParameters,
    ssm_passwords::SsmPasswordStore,
};
use pgflip_core::config::{Env, TargetConfig, Targets};
use pgflip_core::domain::StoreKind;
use pgflip_core::input::DEFAULT_TARGET;
use pgflip_core::ports::{ExecutionRecord, ExecutionRecords, SecretStore};
use serde_json::Value;

/// The Lambdas' environment, as read from a file or this process.
pub struct EnvMap(pub HashMap<String, String>);

impl Env for EnvMap {
    fn var(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

/// `KEY=VALUE` lines (a `.env` file, shell quotes allowed) or a JSON object
/// (what `aws lambda get-function-configuration --query
/// Environment.Variables` prints).
pub fn read_env_file(path: &Path) -> Result<EnvMap> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the environment file {}", path.display()))?;
    if text.trim_start().starts_with(['{', '[']) {
        let map: BTreeMap<String, Value> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON object of variables", path.display()))?;
        return Ok(EnvMap(
            map.into_iter()
                .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect(),
        ));
    }
    let mut vars = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .unwrap_or(v);
        vars.insert(k.trim().to_string(), v.to_string());
    }
    if vars.is_empty() {
        bail!(
            "{} holds no KEY=VALUE line (nor a JSON object): it is not the Lambdas' environment",
            path.display()
        );
    }
    Ok(EnvMap(vars))
}

/// Everything a command needs.
pub struct Context {
    pub local: Option<Local>,
    pub stack: String,
    pub default_target: TargetConfig,
    pub targets: Targets,
    pub parameters: SsmParameters,
    pub secrets_manager: SecretsManager,
    pub ssm: SsmPasswordStore,
    pub sfn: StepFunctions,
    pub sfn_client: aws_sdk_sfn::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    pub region: String,
}

/// The local stack (`PGFLIP_STACK_DIR` and `PGFLIP_LAMBDA_ENDPOINT` set by
/// its stack.env): executions run in the local runner.
pub struct Local {
    pub stack_dir: PathBuf,
    pub repo: PathBuf,
}

/// The local runner registers its executions under this state machine.
pub const LOCAL_MACHINE: &str = "pgflip-rotation";

impl Context {
    pub async fn new(stack: Option<String>, env_file: Option<PathBuf>) -> Result<Self> {
        let local = match (
            std::env::var_os("PGFLIP_STACK_DIR"),
            std::env::var_os("PGFLIP_LAMBDA_ENDPOINT"),
        ) {
            (Some(dir), Some(_)) => Some(Local {
                stack_dir: PathBuf::from(dir),
                repo: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .expect("the workspace root")
                    .to_path_buf(),
            }),
            _ => None,
        };
        let env = match (&env_file, &local) {
            (Some(path), _) => read_env_file(path)?,
            (None, Some(l)) => read_env_file(&l.stack_dir.join("lambda.env"))?,
            (None, None) => EnvMap(std::env::vars().collect()),
        };
        let default_target = TargetConfig::from_env(&env).map_err(|e| {
            if env_file.is_none() && local.is_none() {
                anyhow!(
                    "{e}: this is neither the local stack (source $STACK_DIR/stack.env first) nor a described stack: give --stack NAME and the Lambdas' environment with --env-file (for example the output of `aws lambda get-function-configuration --function-name <select-user> --query Environment.Variables`)"
                )
            } else {
                anyhow!("{e} (in the Lambdas' environment this command read)")
            }
        })?;
        let targets = Targets::from_env(&env);
        let stack = match (stack, &local) {
            (Some(s), _) => s,
            (None, Some(_)) => "pgflip".into(),
            (None, None) => bail!("name the stack with --stack (or PGFLIP_STACK): its state machine is <stack>-rotation"),
        };
        let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let region = aws
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        let sfn_client = aws_sdk_sfn::Client::new(&aws);
        Ok(Self {
            local,
            stack,
            default_target,
            targets,
            parameters: SsmParameters::new(aws_sdk_ssm::Client::new(&aws)),
            secrets_manager: SecretsManager::new(aws_sdk_secretsmanager::Client::new(&aws)),
            ssm: SsmPasswordStore::new(aws_sdk_ssm::Client::new(&aws)),
            sfn: StepFunctions::new(sfn_client.clone()),
            sfn_client,
            scheduler: aws_sdk_scheduler::Client::new(&aws),
            region,
        })
    }

    /// The target `name` (`None` or `default`: the environment's), from
    /// the registry under `TARGETS_PATH` or the targets document.
    pub async fn target(&self, name: Option<&str>) -> Result<TargetConfig> {
        let Some(name) = name.filter(|n| *n != DEFAULT_TARGET) else {
            return Ok(self.default_target.clone());
        };
        pgflip_core::steps::registry::find_target(
            &self.targets,
            &self.default_target,
            name,
            &self.parameters,
        )
        .await
        .map_err(|e| match e {
            pgflip_core::errors::RotationError::InvalidInput(m) => anyhow!(
                "no target named {name:?}: {}",
                m.split_once(", which ")
                    .or_else(|| m.split_once(", but "))
                    .map_or(m.as_str(), |(_, rest)| rest)
            ),
            other => other.into(),
        })
    }

    /// Every target: the environment's, each of the registry and each of
    /// the targets document, each with its configuration or what is wrong
    /// with it.
    pub async fn all_targets(&self) -> Result<Vec<(String, Result<TargetConfig, String>)>> {
        Ok(pgflip_core::steps::registry::all_targets(
            &self.targets,
            &self.default_target,
            &self.parameters,
        )
        .await?
        .into_iter()
        .map(|(name, config)| (name, config.map_err(|e| format!("{}: {e}", e.name()))))
        .collect())
    }

    pub fn store(&self, t: &TargetConfig) -> &dyn SecretStore {
        match t.password_store {
            StoreKind::SecretsManager => &self.secrets_manager,
            StoreKind::Ssm => &self.ssm,
        }
    }

    /// The rotation state machine's ARN.
    pub async fn state_machine_arn(&self) -> Result<String> {
        let name = if self.local.is_some() {
            LOCAL_MACHINE.to_string()
        } else {
            format!("{}-rotation", self.stack)
        };
        let mut pages = self
            .sfn_client
            .list_state_machines()
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.context("states:ListStateMachines")?;
            if let Some(m) = page.state_machines.into_iter().find(|m| m.name == name) {
                return Ok(m.state_machine_arn);
            }
        }
        if self.local.is_some() {
            // Nothing has run on this stack yet.
            return Ok(format!(
                "arn:aws:states:{}:123456789012:stateMachine:{name}",
                self.region
            ));
        }
        bail!(
            "no state machine named {name} (is the stack called {:?}?)",
            self.stack
        )
    }

    /// The newest executions, at most `max`, newest first.
    pub async fn executions(&self, max: usize) -> Result<Vec<ExecutionRecord>> {
        let machine = self.state_machine_arn().await?;
        let Some(local) = &self.local else {
            return Ok(self.sfn.recent(&machine, max).await?);
        };
        // Finished ones from the runner's journal; running ones from moto,
        // where the runner registers them while they run.
        let path = local.stack_dir.join("executions.jsonl");
        let mut out: Vec<ExecutionRecord> = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["stateMachine"] == LOCAL_MACHINE)
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect(),
            Err(_) => Vec::new(),
        };
        if let Ok(registered) = self.sfn.recent(&machine, 100).await {
            out.extend(registered.into_iter().filter(|r| r.status == "RUNNING"));
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.start_ms));
        out.truncate(max);
        Ok(out)
    }
}

/// The target an execution's input names (`default` when none).
pub fn target_of(record: &ExecutionRecord) -> String {
    record
        .input
        .as_deref()
        .and_then(|i| serde_json::from_str::<Value>(i).ok())
        .and_then(|v| {
            v.get("target")
                .or_else(|| v.get("detail").and_then(|d| d.get("target")))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| DEFAULT_TARGET.into())
}

/// Whether an execution's input asked for a dry run.
pub fn is_dry_run(record: &ExecutionRecord) -> bool {
    record
        .input
        .as_deref()
        .and_then(|i| serde_json::from_str::<Value>(i).ok())
        .is_some_and(|v| v["dryRun"] == true)
}

/// `Succeeded`, `DryRun`, `Running`, the error name, `TimedOut`, `Aborted`.
pub fn outcome_of(record: &ExecutionRecord) -> String {
    match record.status.as_str() {
        "SUCCEEDED" if is_dry_run(record) => "DryRun".into(),
        "SUCCEEDED" => "Succeeded".into(),
        "RUNNING" => "Running".into(),
        "TIMED_OUT" => "TimedOut".into(),
        "ABORTED" => "Aborted".into(),
        _ => record
            .error
            .clone()
            .unwrap_or_else(|| record.status.clone()),
    }
}

/// The name a target goes by.
pub fn name_of(t: &TargetConfig) -> String {
    t.name.clone().unwrap_or_else(|| DEFAULT_TARGET.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_file_is_dotenv_lines_or_the_json_lambda_prints() {
        let dir = std::env::temp_dir().join(format!("pgflip-cli-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lines = dir.join("lambda.env");
        std::fs::write(
            &lines,
            "# comment\nexport ACTIVE_USER_PARAMETER='/app/active'\nECS_SERVICES=web,worker\nEMPTY=\n",
        )
        .unwrap();
        let env = read_env_file(&lines).unwrap();
        assert_eq!(
            env.var("ACTIVE_USER_PARAMETER").as_deref(),
            Some("/app/active")
        );
        assert_eq!(env.var("ECS_SERVICES").as_deref(), Some("web,worker"));
        let json = dir.join("lambda.json");
        std::fs::write(
            &json,
            r#"{"ACTIVE_USER_PARAMETER": "/app/active", "DB_PORT": "5432"}"#,
        )
        .unwrap();
        let env = read_env_file(&json).unwrap();
        assert_eq!(env.var("DB_PORT").as_deref(), Some("5432"));
        assert!(read_env_file(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
