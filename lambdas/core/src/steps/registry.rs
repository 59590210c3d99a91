//! Where targets are defined: the environment's, the targets document
//! (`TARGETS_PARAMETER`, one JSON object of entries), and the registry of
//! one SSM parameter per target under `TARGETS_PATH` (`<path><name>`, one
//! entry each), which scales past a document's 4 KB / 8 KB.

use serde_json::Value;

use crate::config::{TargetConfig, Targets};
use crate::errors::RotationError;
use crate::input::DEFAULT_TARGET;
use crate::ports::ParameterStore;

/// A target name the registry accepts: what an SSM parameter name's last
/// segment may hold (letters, digits, `_`, `.`, `-`).
fn registrable(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The target `name`: its own parameter under the path (one
/// `ssm:GetParameter` of `<path><name>`), else its entry in the document
/// (`ssm:GetParameter` of the document). A name neither defines is
/// `InvalidInput` naming both sources; a bad entry is `ConfigurationError`
/// naming its parameter and field, and fails only that target.
pub async fn find_target(
    targets: &Targets,
    default: &TargetConfig,
    name: &str,
    parameters: &dyn ParameterStore,
) -> Result<TargetConfig, RotationError> {
    if let Some(path) = &targets.path {
        if registrable(name) {
            let parameter = format!("{path}{name}");
            match parameters.get(&parameter).await {
                Ok(raw) => return entry_of(&parameter, &raw.value, name, default),
                Err(RotationError::ParameterNotFound(_)) => {}
                Err(other) => return Err(other),
            }
        } else if targets.parameter_name.is_none() {
            return Err(RotationError::InvalidInput(format!(
                "field \"target\" names {name:?}: a target name holds only letters, digits, '_', '.' and '-'"
            )));
        }
    }
    let Some(document) = &targets.parameter_name else {
        return Err(RotationError::InvalidInput(match &targets.path {
            Some(path) => format!(
                "field \"target\" names {name:?}, which the registry {path} does not define (no parameter {path}{name})"
            ),
            None => format!(
                "field \"target\" names {name:?}, but no targets are configured (TARGETS_PATH or TARGETS_PARAMETER)"
            ),
        }));
    };
    let raw = parameters.get(document).await.map_err(|e| match e {
        RotationError::ParameterNotFound(p) => {
            RotationError::Configuration(format!("the targets document {p} does not exist"))
        }
        other => other,
    })?;
    TargetConfig::from_document(document, &raw.value, name, default)
}

fn entry_of(
    parameter: &str,
    raw: &str,
    name: &str,
    default: &TargetConfig,
) -> Result<TargetConfig, RotationError> {
    let source = format!("target parameter {parameter}");
    let value: Value = serde_json::from_str(raw).map_err(|_| {
        RotationError::Configuration(format!("{source}: not a JSON object (a target entry)"))
    })?;
    TargetConfig::from_entry(&source, value, name, default)
}

/// Every target, by name, with its configuration or what is wrong with it:
/// the environment's (`default`), each parameter under the path by name
/// (`ssm:GetParametersByPath`, paginated) and each entry of the document
/// (a name under the path wins). A missing document lists none of its own.
pub async fn all_targets(
    targets: &Targets,
    default: &TargetConfig,
    parameters: &dyn ParameterStore,
) -> Result<Vec<(String, Result<TargetConfig, RotationError>)>, RotationError> {
    let mut out = vec![(DEFAULT_TARGET.to_string(), Ok(default.clone()))];
    if let Some(path) = &targets.path {
        let mut listed = parameters.list(path).await?;
        listed.sort();
        for (parameter, raw) in listed {
            let name = parameter.rsplit('/').next().unwrap_or_default().to_string();
            let config = if name == DEFAULT_TARGET {
                // `{"target": "default"}` is the environment's target: an
                // entry of that name could never be rotated, and a sweep
                // would rotate the environment's twice.
                Err(RotationError::Configuration(format!(
                    "target parameter {parameter}: \"{DEFAULT_TARGET}\" is the reserved name of the target the environment describes; rename the parameter"
                )))
            } else {
                entry_of(&parameter, &raw, &name, default)
            };
            out.push((name, config));
        }
    }
    if let Some(document) = &targets.parameter_name {
        let raw = match parameters.get(document).await {
            Ok(raw) => raw,
            Err(RotationError::ParameterNotFound(_)) => return Ok(out),
            Err(e) => return Err(e),
        };
        let names: Vec<String> =
            match serde_json::from_str::<serde_json::Map<String, Value>>(&raw.value) {
                Ok(entries) => entries.keys().cloned().collect(),
                Err(e) => {
                    out.push((
                        format!("(targets document {document})"),
                        Err(RotationError::Configuration(format!(
                            "targets document {document}: not a JSON object of targets: {e}"
                        ))),
                    ));
                    return Ok(out);
                }
            };
        for name in names {
            if out.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let config = TargetConfig::from_document(document, &raw.value, &name, default);
            out.push((name, config));
        }
    }
    Ok(out)
}
