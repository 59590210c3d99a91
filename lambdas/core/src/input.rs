//! The execution input, as users send it.
//!
//! `{}`, `null`, the Step Functions console's default `{"Comment": "…"}` and an
//! EventBridge event envelope all mean "rotate with the configured defaults".
//! Unknown fields are ignored; a known field with a wrong type or value is an
//! `InvalidInput` error naming the field.

use serde_json::Value;

use crate::errors::RotationError;

/// The name a sweep (or an execution input) uses for the target the
/// Lambdas' environment describes.
pub const DEFAULT_TARGET: &str = "default";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionInput {
    pub dry_run: bool,
    /// Overrides the configured services: a list, or `"auto"`.
    pub services: Option<crate::domain::Services>,
    /// Overrides the target's `unlistedConsumers` for this execution.
    pub unlisted_consumers: Option<crate::domain::UnlistedConsumers>,
    pub reason: Option<String>,
    /// The secret (ARN) that Secrets Manager's own rotation just changed,
    /// when the execution was started by its `RotationSucceeded` event.
    pub rotated_secret: Option<String>,
    /// The configured target to rotate (absent, or the reserved name
    /// `default`: the environment's).
    pub target: Option<String>,
    /// A sweep: the state machine starts one execution per target, one
    /// after another. Never reaches `select-user` itself.
    pub targets: Option<Vec<String>>,
}

impl ExecutionInput {
    pub fn parse(raw: &Value) -> Result<Self, RotationError> {
        let top = match raw {
            Value::Null => return Ok(Self::default()),
            Value::Object(map) => map,
            other => {
                return Err(RotationError::InvalidInput(format!(
                    "the execution input must be a JSON object, got {}",
                    kind(other)
                )))
            }
        };
        // An EventBridge event (a rule target without an input transformer)
        // carries its payload in `detail`; fields at the top level win.
        let detail = match (top.get("detail-type"), top.get("detail")) {
            (Some(_), Some(Value::Object(d))) => Some(d),
            _ => None,
        };
        let field = |name: &str| top.get(name).or_else(|| detail.and_then(|d| d.get(name)));

        let dry_run = match field("dryRun") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(RotationError::InvalidInput(format!(
                    "field \"dryRun\" must be true or false, got {}",
                    kind(other)
                )))
            }
        };
        let services = match field("services") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let mut services = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if !s.trim().is_empty() => {
                            services.push(s.trim().to_string())
                        }
                        other => {
                            return Err(RotationError::InvalidInput(format!(
                                "field \"services\"[{i}] must be a non-empty service name, got {}",
                                kind(other)
                            )))
                        }
                    }
                }
                // A service named twice is redeployed (and watched) once.
                let services = crate::domain::dedup(services.iter().map(String::as_str));
                if services.is_empty() {
                    return Err(RotationError::InvalidInput(
                        "field \"services\" must name at least one service (omit it to use the configured list)".into(),
                    ));
                }
                Some(crate::domain::Services::Listed(services))
            }
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("auto") => {
                Some(crate::domain::Services::Auto)
            }
            Some(other) => {
                return Err(RotationError::InvalidInput(format!(
                    "field \"services\" must be a list of service names or \"auto\", got {}",
                    kind(other)
                )))
            }
        };
        let unlisted_consumers = match field("unlistedConsumers") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if crate::domain::UnlistedConsumers::parse(s).is_some() => {
                crate::domain::UnlistedConsumers::parse(s)
            }
            Some(other) => {
                return Err(RotationError::InvalidInput(format!(
                    "field \"unlistedConsumers\" must be \"error\" or \"warn\", got {}",
                    kind(other)
                )))
            }
        };
        let reason = match field("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.chars().take(256).collect()),
            Some(other) => {
                return Err(RotationError::InvalidInput(format!(
                    "field \"reason\" must be a string, got {}",
                    kind(other)
                )))
            }
        };
        let target = match field("target") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim() == DEFAULT_TARGET => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(other) => {
                return Err(RotationError::InvalidInput(format!(
                    "field \"target\" must be the name of a configured target, got {}",
                    kind(other)
                )))
            }
        };
        let targets = match field("targets") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items))
                if !items.is_empty()
                    && items
                        .iter()
                        .all(|i| i.as_str().is_some_and(|s| !s.trim().is_empty())) =>
            {
                Some(
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|s| s.trim().to_string())
                        .collect(),
                )
            }
            Some(other) => {
                return Err(RotationError::InvalidInput(format!(
                    "field \"targets\" must be a non-empty list of target names, got {}",
                    kind(other)
                )))
            }
        };
        Ok(Self {
            dry_run,
            services,
            unlisted_consumers,
            reason,
            rotated_secret: rotation_succeeded(top),
            target,
            targets,
        })
    }
}

/// The secret of a Secrets Manager `RotationSucceeded` event (delivered
/// through CloudTrail to EventBridge), if `top` is one.
fn rotation_succeeded(top: &serde_json::Map<String, Value>) -> Option<String> {
    let detail = top.get("detail")?;
    let from_secrets_manager = top.get("source").and_then(Value::as_str)
        == Some("aws.secretsmanager")
        || detail.get("eventSource").and_then(Value::as_str)
            == Some("secretsmanager.amazonaws.com");
    if !from_secrets_manager
        || detail.get("eventName").and_then(Value::as_str) != Some("RotationSucceeded")
    {
        return None;
    }
    detail
        .get("additionalEventData")
        .and_then(|d| d.get("SecretId"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(s) if s.trim().is_empty() => "an empty string",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_inputs_users_send_start_a_normal_rotation() {
        for raw in [
            json!(null),
            json!({}),
            json!({"Comment": "Insert your JSON here"}),
            json!({"version": "0", "id": "e", "detail-type": "Scheduled Event", "source": "aws.scheduler", "detail": {}}),
            json!({"somethingElse": [1, 2]}),
        ] {
            assert_eq!(
                ExecutionInput::parse(&raw).unwrap(),
                ExecutionInput::default(),
                "{raw}"
            );
        }
    }

    #[test]
    fn known_fields_are_read() {
        let i =
            ExecutionInput::parse(&json!({"dryRun": true, "services": ["web"], "reason": "audit"}))
                .unwrap();
        assert!(i.dry_run);
        assert_eq!(
            i.services,
            Some(crate::domain::Services::Listed(vec!["web".to_string()]))
        );
        let auto = ExecutionInput::parse(&json!({"services": "auto", "unlistedConsumers": "warn"}))
            .unwrap();
        assert_eq!(auto.services, Some(crate::domain::Services::Auto));
        assert_eq!(
            auto.unlisted_consumers,
            Some(crate::domain::UnlistedConsumers::Warn)
        );
        assert_eq!(i.reason.as_deref(), Some("audit"));
        let e = ExecutionInput::parse(&json!({"detail-type": "x", "detail": {"dryRun": true}}))
            .unwrap();
        assert!(e.dry_run);
        let t = ExecutionInput::parse(&json!({"target": " orders "})).unwrap();
        assert_eq!(t.target.as_deref(), Some("orders"));
        let d = ExecutionInput::parse(&json!({"target": "default"})).unwrap();
        assert_eq!(d.target, None, "the environment's target");
        let sweep = ExecutionInput::parse(&json!({"targets": ["orders", "billing"]})).unwrap();
        assert_eq!(
            sweep.targets,
            Some(vec!["orders".to_string(), "billing".to_string()])
        );
    }

    #[test]
    fn a_secrets_manager_rotation_event_names_the_secret() {
        let event = json!({
            "version": "0", "id": "1", "detail-type": "AWS Service Event via CloudTrail",
            "source": "aws.secretsmanager", "account": "123456789012", "region": "us-east-1",
            "detail": {
                "eventSource": "secretsmanager.amazonaws.com", "eventName": "RotationSucceeded",
                "eventType": "AwsServiceEvent",
                "additionalEventData": {"SecretId": "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db/green-AbCdEf"}
            }
        });
        let i = ExecutionInput::parse(&event).unwrap();
        assert_eq!(
            i.rotated_secret.as_deref(),
            Some("arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db/green-AbCdEf")
        );
        assert!(!i.dry_run);
        let mut other = event.clone();
        other["detail"]["eventName"] = json!("RotationStarted");
        assert_eq!(ExecutionInput::parse(&other).unwrap().rotated_secret, None);
    }

    #[test]
    fn bad_known_fields_name_the_field() {
        for (raw, field) in [
            (json!({"dryRun": "yes"}), "dryRun"),
            (json!({"services": []}), "services"),
            (json!({"services": "web"}), "services"),
            (json!({"services": ["web", 3]}), "services\"[1]"),
            (json!({"services": [""]}), "services\"[0]"),
            (json!({"services": "everything"}), "services"),
            (json!({"unlistedConsumers": "ignore"}), "unlistedConsumers"),
            (json!({"unlistedConsumers": true}), "unlistedConsumers"),
            (json!({"reason": 5}), "reason"),
            (json!({"target": 5}), "target"),
            (json!({"target": " "}), "target"),
            (json!({"targets": []}), "targets"),
            (json!({"targets": ["a", 1]}), "targets"),
            (json!([1, 2]), "JSON object"),
        ] {
            let err = ExecutionInput::parse(&raw).unwrap_err();
            assert_eq!(err.name(), "InvalidInput");
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
    }
}
