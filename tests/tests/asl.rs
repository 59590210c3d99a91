//! Offline checks of `statemachine/rotation.asl.json` (no stack needed): the
//! graph is sound, every Task retries and catches, and the error names it
//! uses are exactly the ones the Lambdas raise (`pgflip_core::errors::ALL`).

use std::collections::{BTreeSet, HashMap};

use pgflip_core::errors::ALL;
use pgflip_tests::repo_root;
use serde_json::Value;

const LAMBDA_SERVICE_ERRORS: &[&str] = &[
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
];

fn definition() -> Value {
    let text = std::fs::read_to_string(repo_root().join("statemachine/rotation.asl.json")).unwrap();
    serde_json::from_str(&text).expect("the ASL file is JSON")
}

fn states(d: &Value) -> &serde_json::Map<String, Value> {
    d["States"].as_object().unwrap()
}

fn targets(state: &Value) -> Vec<&str> {
    let mut out = vec![];
    for key in ["Next", "Default"] {
        if let Some(n) = state[key].as_str() {
            out.push(n);
        }
    }
    for list in ["Choices", "Catch"] {
        for item in state[list].as_array().into_iter().flatten() {
            if let Some(n) = item["Next"].as_str() {
                out.push(n);
            }
        }
    }
    out
}

#[test]
fn every_transition_targets_a_state_and_every_state_is_reachable() {
    let d = definition();
    let states = states(&d);
    let start = d["StartAt"].as_str().unwrap();
    assert!(states.contains_key(start));
    let mut seen = BTreeSet::from([start]);
    let mut todo = vec![start];
    while let Some(name) = todo.pop() {
        for next in targets(&states[name]) {
            assert!(states.contains_key(next), "{name} -> {next}: no such state");
            if seen.insert(next) {
                todo.push(next);
            }
        }
    }
    let all: BTreeSet<&str> = states.keys().map(String::as_str).collect();
    assert_eq!(seen, all, "unreachable states");
    for (name, s) in states {
        let terminal = matches!(s["Type"].as_str(), Some("Succeed" | "Fail" | "Choice"));
        assert!(
            terminal || s["Next"].is_string() || s["End"] == true,
            "{name} has no Next"
        );
    }
}

#[test]
fn every_task_retries_and_only_post_flip_tasks_catch() {
    let d = definition();
    for (name, s) in states(&d).iter().filter(|(_, s)| s["Type"] == "Task") {
        let retriers = s["Retry"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no Retry"));
        let retried: BTreeSet<&str> = retriers
            .iter()
            .flat_map(|r| r["ErrorEquals"].as_array().unwrap())
            .map(|e| e.as_str().unwrap())
            .collect();
        for e in LAMBDA_SERVICE_ERRORS {
            assert!(retried.contains(e), "{name} does not retry {e}");
        }
        // Retryable errors that only one step raises are retried there.
        let only_at = |error: &str| match error {
            "InactiveUserInUse" => Some("SelectUser"),
            "ReaderLagging" => Some("VerifyLogin"),
            _ => None,
        };
        for (error, retryable) in ALL {
            let here = only_at(error).is_none_or(|state| state == name);
            if *retryable && here {
                assert!(retried.contains(error), "{name} does not retry {error}");
            }
            if only_at(error).is_some_and(|state| state != name) {
                assert!(
                    !retried.contains(error),
                    "{name} retries {error}, which it never raises"
                );
            }
        }
        for r in retriers {
            assert!(
                r["BackoffRate"].is_f64(),
                "{name}: write BackoffRate as a float (statelint)"
            );
        }
        // After the flip, any error rolls back. Before it (nothing to undo)
        // and inside the rollback, an error ends the execution at that Task,
        // so that a redrive re-runs exactly that step.
        // (Through ChooseRollback, which rolls back whenever this execution
        // flipped the parameter, that is in every mode but wait.)
        let catches_to_rollback = s["Catch"].as_array().is_some_and(|c| {
            c.iter().any(|c| {
                c["ErrorEquals"] == serde_json::json!(["States.ALL"])
                    && (c["Next"] == "RollbackFlipParameter" || c["Next"] == "ChooseRollback")
            })
        });
        let after_flip = ["FlipParameter", "RedeployEcs", "WaitForStable"].contains(&name.as_str());
        assert_eq!(catches_to_rollback, after_flip, "{name}: Catch");
        if !after_flip {
            // The rollback's wait may catch only the rollout's own outcomes.
            let caught: Vec<&Value> = s["Catch"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ErrorEquals"].as_array().unwrap())
                .collect();
            let allowed = ["RolloutFailed", "RolloutTimedOut"];
            assert!(
                caught
                    .iter()
                    .all(|e| name == "RollbackWaitForStable"
                        && allowed.contains(&e.as_str().unwrap())),
                "{name} must not catch {caught:?} (a redrive re-runs it)"
            );
        }
        assert!(s["TimeoutSeconds"].is_u64(), "{name} has no TimeoutSeconds");
    }
}

#[test]
fn error_names_are_the_ones_the_lambdas_raise() {
    let d = definition();
    let known: BTreeSet<&str> = ALL.iter().map(|(n, _)| *n).collect();
    let mut used = BTreeSet::new();
    for (name, s) in states(&d) {
        for list in ["Retry", "Catch"] {
            for item in s[list].as_array().into_iter().flatten() {
                for e in item["ErrorEquals"].as_array().unwrap() {
                    let e = e.as_str().unwrap();
                    if !e.starts_with("States.") && !e.starts_with("Lambda.") {
                        assert!(known.contains(e), "{name} matches unknown error {e}");
                        used.insert(e);
                    }
                }
            }
        }
        for source in [&s["Error"], &s["Parameters"]["Error"]] {
            if let Some(e) = source.as_str() {
                assert!(known.contains(e), "{name} raises unknown error {e}");
                used.insert(e);
            }
        }
    }
    // Raised by the state machine itself, or acted on by it.
    for e in [
        "RotationRolledBack",
        "RollbackFailed",
        "ActiveUserRotatedExternally",
        "RolloutFailed",
        "RolloutTimedOut",
        "InactiveUserInUse",
        "ReaderLagging",
        "ForeignRolloutFailed",
    ] {
        assert!(
            used.contains(e),
            "{e} is neither raised nor matched by the state machine"
        );
    }
}

#[test]
fn only_what_an_execution_flipped_is_rolled_back() {
    let d = definition();
    let s = states(&d);
    let choose = &s["ChooseRollback"];
    assert_eq!(choose["Default"], "RollbackFlipParameter");
    let choices = choose["Choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["Variable"], "$.mode");
    assert_eq!(choices[0]["StringEquals"], "wait");
    let stop = &s[choices[0]["Next"].as_str().unwrap()];
    assert_eq!(stop["Type"], "Fail");
    assert_eq!(
        stop["ErrorPath"], "$.failure.Error",
        "the original error is kept"
    );
    // A rollout the execution found is never a reason to move the pointer.
    let foreign = s["WaitForStable"]["Catch"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ErrorEquals"] == serde_json::json!(["ForeignRolloutFailed"]))
        .expect("WaitForStable catches ForeignRolloutFailed");
    assert_eq!(s[foreign["Next"].as_str().unwrap()]["Type"], "Fail");
}

#[test]
fn tasks_call_the_six_functions_through_substitutions() {
    let d = definition();
    let crates: BTreeSet<String> = std::fs::read_dir(repo_root().join("lambdas"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        // report-outcome runs after an execution, not as one of its states;
        // plan-sweep is the sweep's (statemachine/sweep.asl.json).
        .filter(|n| n != "core" && n != "report-outcome" && n != "plan-sweep")
        .collect();
    assert_eq!(crates.len(), 6);
    let mut resources: HashMap<String, Vec<String>> = HashMap::new();
    for (name, s) in states(&d).iter().filter(|(_, s)| s["Type"] == "Task") {
        let r = s["Resource"].as_str().unwrap();
        let logical = r
            .strip_prefix("${")
            .and_then(|r| r.strip_suffix("FunctionArn}"))
            .unwrap_or_else(|| {
                panic!("{name}: Resource {r} is not a ${{…FunctionArn}} substitution")
            });
        // PascalCase placeholder <-> kebab-case crate.
        let mut kebab = String::new();
        for (i, ch) in logical.chars().enumerate() {
            if ch.is_ascii_uppercase() && i > 0 {
                kebab.push('-');
            }
            kebab.push(ch.to_ascii_lowercase());
        }
        assert!(
            crates.contains(&kebab),
            "{name} calls {kebab}, which is not a crate under lambdas/"
        );
        resources.entry(kebab).or_default().push(name.clone());
    }
    let called: BTreeSet<String> = resources.keys().cloned().collect();
    assert_eq!(called, crates, "every Lambda is used by the state machine");
    // The main path's state for each function is its PascalCase name.
    for (function, state_names) in &resources {
        let pascal: String = function
            .split('-')
            .map(|w| w[..1].to_uppercase() + &w[1..])
            .collect();
        assert!(
            state_names.contains(&pascal),
            "no state named {pascal} for {function}"
        );
    }
}

#[test]
fn waiting_happens_in_the_state_machine_with_seconds_path() {
    let d = definition();
    let waits: Vec<&Value> = states(&d)
        .values()
        .filter(|s| s["Type"] == "Wait")
        .collect();
    assert!(!waits.is_empty());
    for w in waits {
        assert!(
            w["SecondsPath"].is_string(),
            "waits read their length from the state"
        );
    }
}

#[test]
fn the_readme_error_table_lists_every_error() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for (name, _) in ALL {
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "README.md's error table lacks {name}"
        );
    }
}

#[test]
fn a_rollout_in_progress_is_no_error_and_each_extra_look_costs_three_transitions() {
    // WaitForStable returns the rollout with its status; a Choice loops while
    // it is IN_PROGRESS: Wait -> Task -> Choice -> Wait, no error raised.
    let d = definition();
    let s = states(&d);
    for (wait, task, choice, done, path) in [
        (
            "WaitBeforePoll",
            "WaitForStable",
            "RolloutDone",
            "RotationSucceeded",
            "$.rollout",
        ),
        (
            "RollbackWaitBeforePoll",
            "RollbackWaitForStable",
            "RollbackRolloutDone",
            "DescribeRollback",
            "$.rollbackRollout",
        ),
    ] {
        assert_eq!(s[wait]["Type"], "Wait");
        assert_eq!(s[wait]["Next"], task);
        assert_eq!(s[task]["ResultPath"], path, "{task} records the look");
        assert_eq!(s[task]["Next"], choice);
        assert!(
            s[task]["Catch"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["Next"] != wait),
            "{task}: no error leads back to the wait"
        );
        assert_eq!(s[choice]["Type"], "Choice");
        let choices = s[choice]["Choices"].as_array().unwrap();
        assert_eq!(choices.len(), 1, "{choice}");
        assert_eq!(choices[0]["Variable"], format!("{path}.status"));
        assert_eq!(
            choices[0]["StringEquals"],
            serde_json::to_value(pgflip_core::domain::RolloutStatus::InProgress).unwrap()
        );
        assert_eq!(choices[0]["Next"], wait);
        assert_eq!(s[choice]["Default"], done);
    }
}

#[test]
fn the_sweep_runs_lanes_side_by_side_and_each_lanes_targets_one_at_a_time() {
    let text = std::fs::read_to_string(repo_root().join("statemachine/sweep.asl.json")).unwrap();
    let sweep: Value = serde_json::from_str(&text).unwrap();
    let known: BTreeSet<&str> = ALL.iter().map(|(n, _)| *n).collect();
    let s = states(&sweep);
    let fails: Vec<&str> = s
        .values()
        .filter(|st| st["Type"] == "Fail")
        .map(|st| st["Error"].as_str().unwrap())
        .collect();
    assert_eq!(fails, ["SweepIncomplete"]);
    assert!(fails.iter().all(|e| known.contains(e)));
    assert!(sweep["TimeoutSeconds"].is_u64());
    assert_eq!(sweep["StartAt"], "PlanSweep");
    assert_eq!(s["PlanSweep"]["Resource"], "${PlanSweepFunctionArn}");
    assert_eq!(s["PlanSweep"]["Next"], "RotateEachLane");
    // Lanes: a Distributed Map bounded by the plan's global limit, which
    // a lane's failure never fails.
    let lanes = &s["RotateEachLane"];
    assert_eq!(
        lanes["ItemProcessor"]["ProcessorConfig"]["Mode"],
        "DISTRIBUTED"
    );
    assert_eq!(
        lanes["ItemProcessor"]["ProcessorConfig"]["ExecutionType"],
        "STANDARD"
    );
    assert_eq!(lanes["ItemsPath"], "$.plan.lanes");
    assert_eq!(lanes["MaxConcurrencyPath"], "$.plan.maxConcurrency");
    assert_eq!(lanes["ToleratedFailurePercentage"], 100);
    assert_eq!(lanes["Next"], "ReportOutcome");
    // A lane: its jitter, then its targets one at a time.
    let lane = states(&lanes["ItemProcessor"]);
    assert_eq!(lane["SpreadStart"]["SecondsPath"], "$.lane.jitterSeconds");
    let each = &lane["RotateEachTarget"];
    assert_eq!(each["MaxConcurrency"], 1);
    assert_eq!(each["ItemsPath"], "$.lane.targets");
    // Every failure of a target is caught: the lane goes on.
    let target = states(&each["ItemProcessor"]);
    let rotate = &target["RotateTarget"];
    assert_eq!(
        rotate["Resource"],
        "arn:aws:states:::states:startExecution.sync:2"
    );
    let catches = rotate["Catch"].as_array().unwrap();
    assert_eq!(catches.len(), 1);
    assert_eq!(catches[0]["ErrorEquals"], serde_json::json!(["States.ALL"]));
    assert_eq!(catches[0]["Next"], "TargetFailed");
    // The summary is report-outcome's, fed the lanes and the refusals.
    let report = &s["ReportOutcome"];
    assert_eq!(report["Resource"], "${ReportOutcomeFunctionArn}");
    assert_eq!(report["Parameters"]["sweep"]["lanes.$"], "$.plan.lanes");
    // Compact results: the lanes' results replace the plan's names, a
    // rotated target is 1 (a state's payload is at most 256 KiB).
    assert_eq!(lanes["ResultPath"], "$.plan.lanes");
    assert_eq!(target["TargetRotated"]["Result"], 1);
    assert_eq!(report["Parameters"]["sweep"]["refused.$"], "$.plan.refused");
    assert_eq!(
        s["AllRotated"]["Choices"][0]["Variable"],
        "$.summary.failed"
    );
}
