//! Offline cross-check of `infra/template.yaml` against the code (no stack, no
//! AWS). Every expectation is derived from the sources, so the test fails as
//! soon as the template and the code drift apart:
//!
//! - the functions: one per crate under `lambdas/`, built from that crate
//!   with cargo-lambda, and every ASL Task calls one of them;
//! - IAM: the actions a function may call are exactly the AWS SDK operations
//!   its code reaches. `main.rs` names the `steps::` function it runs; the
//!   steps call port methods (`secrets.get_stage(…)`); each port is
//!   implemented by an adapter in `lambdas/core/src/adapters/`, whose methods
//!   call `self.client.<operation>()`. The `Pointer` port's adapters (the
//!   layouts in `lambdas/core/src/layouts/`) call the store ports in turn,
//!   and either layout may run in any function. Resources are the
//!   configured ARNs, never `"*"`;
//! - the environment: exactly the variables of the config parsers `main.rs`
//!   calls (`pgflip_core::config::ENV_VARS`, kept honest by a unit test);
//! - the network: the functions that link the `postgres` adapter run in the
//!   VPC and get the CA bundle.
//!
//! The Rust sources are read as text with comments and literals blanked out;
//! the patterns are narrow and every miss fails loudly with what to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pgflip_core::config::ENV_VARS;
use pgflip_core::password::{PasswordPolicy, DEFAULT_EXCLUDED, MAX_LENGTH, MIN_LENGTH};
use pgflip_tests::repo_root;
use serde_json::{json, Map, Value};

// ------------------------------------------------------------------ template

/// `infra/template.yaml` as JSON, CloudFormation short tags in long form
/// (`!Ref X` → `{"Ref": "X"}`, `!GetAtt A.B` → `{"Fn::GetAtt": ["A", "B"]}`).
fn template() -> Value {
    let text = std::fs::read_to_string(repo_root().join("infra/template.yaml")).unwrap();
    let yaml: serde_norway::Value = serde_norway::from_str(&text).expect("template.yaml is YAML");
    to_json(yaml)
}

fn to_json(yaml: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).unwrap(),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let tag = tag.trim_start_matches('!');
            let value = to_json(tagged.value);
            match (tag, value) {
                ("GetAtt", Value::String(s)) => {
                    let (resource, attribute) = s.split_once('.').unwrap();
                    json!({ "Fn::GetAtt": [resource, attribute] })
                }
                ("Ref" | "Condition", v) => json!({ tag: v }),
                (_, v) => json!({ format!("Fn::{tag}"): v }),
            }
        }
    }
}

fn resources(t: &Value) -> &Map<String, Value> {
    t["Resources"].as_object().expect("Resources")
}

fn of_type<'a>(t: &'a Value, kind: &str) -> BTreeMap<&'a str, &'a Value> {
    resources(t)
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(k, r)| (k.as_str(), r))
        .collect()
}

/// A function's property, or the one from `Globals.Function`.
fn prop<'a>(t: &'a Value, function: &'a Value, key: &str) -> &'a Value {
    match &function["Properties"][key] {
        Value::Null => &t["Globals"]["Function"][key],
        v => v,
    }
}

/// A function's environment with `Globals` merged in, as SAM merges it.
fn environment(t: &Value, function: &Value) -> BTreeMap<String, Value> {
    let mut env = BTreeMap::new();
    for source in [
        &t["Globals"]["Function"]["Environment"]["Variables"],
        &function["Properties"]["Environment"]["Variables"],
    ] {
        for (k, v) in source.as_object().into_iter().flatten() {
            env.insert(k.clone(), v.clone());
        }
    }
    env
}

/// The parameter a value is `!Ref`, if it is one.
fn ref_param<'a>(t: &Value, v: &'a Value) -> Option<&'a str> {
    let name = v["Ref"].as_str()?;
    t["Parameters"].get(name).map(|_| name)
}

/// The template parameters a resource value refers to (`!Ref P`, `${P}` in `!Sub`).
fn params_in(t: &Value, v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(p) = ref_param(t, v) {
        out.insert(p.to_string());
    }
    let sub = match &v["Fn::Sub"] {
        Value::String(s) => Some(s.as_str()),
        Value::Array(a) => a.first().and_then(Value::as_str),
        _ => None,
    };
    for name in sub.map(placeholders).into_iter().flatten() {
        if t["Parameters"].get(&name).is_some() {
            out.insert(name);
        }
    }
    out
}

fn placeholders(s: &str) -> Vec<String> {
    s.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_string()))
        .collect()
}

fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Null => vec![],
        other => vec![other],
    }
}

struct Statement<'a> {
    sid: String,
    actions: Vec<String>,
    resources: Vec<&'a Value>,
    /// Inside an `!If`: only there when a condition holds.
    conditional: bool,
    /// The condition of the innermost `!If` around it.
    condition: Option<String>,
    value: &'a Value,
}

/// The `Allow` statements of a SAM `Policies` list, both branches of each `!If`.
fn statements<'a>(owner: &str, policies: &'a Value) -> Vec<Statement<'a>> {
    fn walk<'a>(
        owner: &str,
        v: &'a Value,
        condition: Option<String>,
        out: &mut Vec<Statement<'a>>,
    ) {
        if let Some(branches) = v["Fn::If"].as_array() {
            let name = branches[0].as_str().map(String::from);
            for b in &branches[1..] {
                walk(owner, b, name.clone(), out);
            }
            return;
        }
        if v["Ref"] == "AWS::NoValue" {
            return;
        }
        let Some(list) = v.get("Statement") else {
            panic!(
                "{owner}: policy {v} is not an inline statement list; write the statements \
                 out so this test can compare their actions with the code"
            );
        };
        for s in as_list(list) {
            statement(owner, s, condition.clone(), out);
        }
    }
    fn statement<'a>(
        owner: &str,
        s: &'a Value,
        condition: Option<String>,
        out: &mut Vec<Statement<'a>>,
    ) {
        if let Some(branches) = s["Fn::If"].as_array() {
            let name = branches[0].as_str().map(String::from);
            for b in &branches[1..] {
                statement(owner, b, name.clone(), out);
            }
            return;
        }
        if s["Ref"] == "AWS::NoValue" {
            return;
        }
        assert_eq!(
            s["Effect"], "Allow",
            "{owner}: only Allow statements, got {s}"
        );
        assert!(
            s.get("NotAction").is_none() && s.get("NotResource").is_none(),
            "{owner}: NotAction/NotResource in {s}"
        );
        out.push(Statement {
            sid: s["Sid"].as_str().unwrap_or("?").to_string(),
            actions: as_list(&s["Action"])
                .into_iter()
                .map(|a| a.as_str().expect("actions are strings").to_string())
                .collect(),
            resources: as_list(&s["Resource"]),
            conditional: condition.is_some(),
            condition,
            value: s,
        });
    }
    let mut out = vec![];
    for p in as_list(policies) {
        walk(owner, p, None, &mut out);
    }
    out
}

/// Conditions of optional features whose calls the code makes only when the
/// feature is configured for the whole deployment (the registry: a targets
/// document to read, a path to list): granted under them alone. Nothing a
/// single target chooses (its layout, store, proxy) is a condition: the
/// targets of one deployment may each choose differently.
const FEATURE_CONDITIONS: &[&str] = &["HasTargetsDocument", "HasTargetsPath"];

// ------------------------------------------------------------ the Lambdas

struct Lambda {
    /// `select-user`
    name: String,
    /// `SelectUserFunction`
    logical_id: String,
    bin: String,
    features: BTreeSet<String>,
    main: String,
}

fn pascal(kebab_or_snake: &str) -> String {
    kebab_or_snake
        .split(['-', '_'])
        .map(|w| w[..1].to_uppercase() + &w[1..])
        .collect()
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn lambdas() -> Vec<Lambda> {
    let dir = repo_root().join("lambdas");
    let mut out: Vec<Lambda> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("src/main.rs").exists())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let manifest = read(p.join("Cargo.toml"));
            let bin = manifest
                .split("[[bin]]")
                .nth(1)
                .and_then(|section| section.lines().find(|l| l.trim_start().starts_with("name")))
                .and_then(|l| l.split('"').nth(1))
                .unwrap_or_else(|| panic!("lambdas/{name}/Cargo.toml has no [[bin]] name"))
                .to_string();
            let core = manifest
                .lines()
                .find(|l| l.trim_start().starts_with("pgflip-core"))
                .unwrap_or_else(|| panic!("lambdas/{name}/Cargo.toml does not use pgflip-core"));
            let features = core
                .split_once("features")
                .and_then(|(_, f)| f.split('[').nth(1))
                .and_then(|list| list.split(']').next())
                .unwrap_or("")
                .split(',')
                .map(|f| f.trim().trim_matches('"').to_string())
                .filter(|f| !f.is_empty())
                .collect();
            Lambda {
                logical_id: format!("{}Function", pascal(&name)),
                main: read(p.join("src/main.rs")),
                name,
                bin,
                features,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    // The six steps, plan-sweep and report-outcome.
    assert_eq!(out.len(), 8, "eight Lambda crates under lambdas/");
    out
}

// ------------------------------------------------------- reading Rust source

/// The code of a Rust file with comments removed and the contents of string
/// and char literals blanked, so braces and names in them do not count.
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
            continue;
        }
        let starts_word = i == 0 || !ident(b[i - 1]);
        if starts_word && (c == 'r' || (c == 'b' && next == Some('r'))) {
            let mut j = i + if c == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) == Some(&'"') {
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == '"' && (1..=hashes).all(|h| b.get(j + h) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
                continue;
            }
        }
        if c == '"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != '"' {
                j += if b[j] == '\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = j + 1;
            continue;
        }
        if c == '\'' {
            if next == Some('\\') {
                let mut j = i + 3;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                out.push_str("' '");
                i = j + 1;
                continue;
            }
            if b.get(i + 2) == Some(&'\'') {
                out.push_str("' '");
                i += 3;
                continue;
            }
            // A lifetime.
        }
        out.push(c);
        i += 1;
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

fn ident_at(b: &[u8], i: usize) -> Option<(String, usize)> {
    let mut j = i;
    while j < b.len() && is_ident(b[j]) {
        j += 1;
    }
    (j > i).then(|| (String::from_utf8_lossy(&b[i..j]).to_string(), j))
}

/// Positions where `word` occurs as a whole word.
fn words(code: &str, word: &str) -> Vec<usize> {
    let b = code.as_bytes();
    code.match_indices(word)
        .map(|(i, _)| i)
        .filter(|&i| {
            (i == 0 || !is_ident(b[i - 1])) && b.get(i + word.len()).is_none_or(|&c| !is_ident(c))
        })
        .collect()
}

/// The end (exclusive) of the `{…}` block that opens at `open`.
fn block_end(b: &[u8], open: usize) -> usize {
    let mut depth = 0;
    for (i, &c) in b.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced braces")
}

struct Func {
    name: String,
    signature: String,
    body: String,
    /// Byte range in the file's code.
    span: (usize, usize),
}

/// Every `fn` with a body.
fn functions(code: &str) -> Vec<Func> {
    let b = code.as_bytes();
    let mut out = vec![];
    for at in words(code, "fn") {
        let Some((name, after)) = ident_at(b, skip_ws(b, at + 2)) else {
            continue; // `fn(` pointer types
        };
        let mut depth = 0i32;
        let mut i = after;
        while i < b.len() {
            match b[i] {
                b'(' => depth += 1,
                b')' => depth -= 1,
                b'{' | b';' if depth == 0 => break,
                _ => {}
            }
            i += 1;
        }
        if i >= b.len() || b[i] == b';' {
            continue;
        }
        let end = block_end(b, i);
        out.push(Func {
            name,
            signature: code[after..i].to_string(),
            body: code[i..end].to_string(),
            span: (at, end),
        });
    }
    out
}

/// Methods called on `receiver` (`receiver.method(`, across lines). With
/// `field`, the receiver is a field (`self.client.op(`), else a variable.
fn calls_on(body: &str, receiver: &str, field: bool) -> BTreeSet<String> {
    let b = body.as_bytes();
    let mut out = BTreeSet::new();
    for at in words(body, receiver) {
        // A field (`self.client`) follows a dot; a variable does not
        // (`rollout.deployments` is not the `deployments` port).
        if body[..at].trim_end().ends_with('.') != field {
            continue;
        }
        let i = skip_ws(b, at + receiver.len());
        if b.get(i) != Some(&b'.') {
            continue;
        }
        let Some((method, j)) = ident_at(b, skip_ws(b, i + 1)) else {
            continue;
        };
        if b.get(skip_ws(b, j)) == Some(&b'(') {
            out.insert(method);
        }
    }
    out
}

/// Free functions called by name (`name(`, not `.name(`), among `known`.
fn free_calls(body: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let b = body.as_bytes();
    known
        .iter()
        .filter(|name| {
            words(body, name).into_iter().any(|at| {
                let before = body[..at].trim_end();
                !before.ends_with('.')
                    && !before.ends_with("fn")
                    && b.get(skip_ws(b, at + name.len())) == Some(&b'(')
            })
        })
        .cloned()
        .collect()
}

/// `name: &dyn Trait` / `name: &impl Trait` parameters of a signature.
fn port_params(signature: &str) -> Vec<(String, String)> {
    signature
        .split([',', '('])
        .filter_map(|part| {
            let (name, ty) = part.split_once(':')?;
            let ty = ty.trim();
            let mut rest = ty.strip_prefix('&')?.trim_start();
            if let Some(lifetime) = rest.strip_prefix('\'') {
                rest = lifetime.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
            }
            let rest = rest.trim_start();
            let rest = rest.strip_prefix("mut ").unwrap_or(rest).trim_start();
            let rest = rest
                .strip_prefix("dyn ")
                .or_else(|| rest.strip_prefix("impl "))?;
            let name = name.trim().trim_start_matches("mut ").trim();
            let (tr, _) = ident_at(rest.trim().as_bytes(), 0)?;
            Some((name.to_string(), tr))
        })
        .collect()
}

/// ECS list calls that name no service or task: `"*"` with the condition
/// `ecs:cluster` equal to the target's cluster.
const HELD_TO_CLUSTER: &[&str] = &["ecs:ListServices", "ecs:ListTasks"];

/// Actions whose API has no resource-level permissions: `"*"` is the only
/// Resource IAM accepts for them (state-machine log delivery, X-Ray, what an
/// ECS task definition takes).
const UNSCOPABLE: &[&str] = &[
    "ecs:DescribeTaskDefinition",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
];

const STEPS: &str = "lambdas/core/src/steps.rs";
const ADAPTERS: &str = "lambdas/core/src/adapters";

/// The port methods (trait, method) a step function reaches, through the
/// helpers it calls in the steps module and the pointer layouts.
fn port_calls_of_step(step: &str) -> BTreeSet<(String, String)> {
    port_calls_in_layout(step, None)
}

/// The same with one layout only (`parameter`, `alternating_secret`: the
/// file stem of its adapter), or both.
fn port_calls_in_layout(step: &str, layout: Option<&str>) -> BTreeSet<(String, String)> {
    let mut out = direct_port_calls(step);
    // Through the Pointer port: what each layout's method calls on the stores.
    let layouts = layout_calls(layout);
    let through: Vec<(String, String)> = out
        .iter()
        .filter(|(tr, _)| tr == "Pointer")
        .cloned()
        .collect();
    for (_, method) in through {
        let reached = layouts
            .get(&method)
            .unwrap_or_else(|| panic!("no layout implements Pointer::{method}"));
        out.extend(reached.iter().cloned());
    }
    out
}

/// The port methods a step function reaches in the steps module.
fn direct_port_calls(step: &str) -> BTreeSet<(String, String)> {
    let root = repo_root();
    let mut files = vec![root.join(STEPS)];
    // The steps' modules and their submodules (report_outcome/sweep.rs),
    // not the unit tests.
    let mut dirs = vec![root.join("lambdas/core/src/steps")];
    while let Some(dir) = dirs.pop() {
        for path in std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().path())
        {
            if path.file_stem().is_some_and(|s| s == "tests") {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let funcs: Vec<Func> = files
        .iter()
        .flat_map(|f| functions(&code_only(&read(f))))
        .collect();
    let names: BTreeSet<String> = funcs.iter().map(|f| f.name.clone()).collect();
    assert!(names.contains(step), "{STEPS} has no fn {step}");
    let mut out = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![step.to_string()];
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        for f in funcs.iter().filter(|f| f.name == name) {
            for (param, tr) in port_params(&f.signature) {
                for method in calls_on(&f.body, &param, false) {
                    out.insert((tr.clone(), method));
                }
            }
            // A pointer bound by `layouts::for_…` in the body.
            if f.body.contains("layouts::for_") {
                for method in calls_on(&f.body, "pointer", false) {
                    if method == "as_ref" {
                        continue; // the Box, not the port
                    }
                    out.insert(("Pointer".to_string(), method));
                }
            }
            todo.extend(free_calls(&f.body, &names));
        }
    }
    out
}

/// Per `Pointer` method, the store port methods (trait, method) the layout
/// adapters in `lambdas/core/src/layouts/` reach: `self.stores.secrets.m(`,
/// `self.stores.parameters.m(`, the steps' helpers they call (`read_stage`),
/// closed over their own `self.helper(` calls. Union of the layouts.
fn layout_calls(only: Option<&str>) -> BTreeMap<String, BTreeSet<(String, String)>> {
    let dir = repo_root().join("lambdas/core/src/layouts");
    let steps_dir = repo_root().join("lambdas/core/src/steps");
    let helpers: BTreeSet<String> = std::fs::read_dir(&steps_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .flat_map(|p| functions(&code_only(&read(p))))
        .map(|f| f.name)
        .collect();
    let mut out: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut layouts = 0;
    for path in std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()) {
        let code = code_only(&read(&path));
        if !code.contains("impl Pointer for") {
            continue;
        }
        layouts += 1;
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        if only.is_some_and(|o| o != stem) {
            continue;
        }
        let funcs = functions(&code);
        let direct = |f: &Func| -> BTreeSet<(String, String)> {
            let mut calls = BTreeSet::new();
            for m in calls_on(&f.body, "secrets", true) {
                calls.insert(("SecretStore".to_string(), m));
            }
            for m in calls_on(&f.body, "parameters", true) {
                calls.insert(("ParameterStore".to_string(), m));
            }
            for helper in free_calls(&f.body, &helpers) {
                calls.extend(
                    direct_port_calls(&helper)
                        .into_iter()
                        .filter(|(tr, _)| tr != "Pointer"),
                );
            }
            calls
        };
        for f in &funcs {
            let mut reached = BTreeSet::new();
            let mut seen = BTreeSet::new();
            let mut todo = vec![f.name.clone()];
            while let Some(n) = todo.pop() {
                if !seen.insert(n.clone()) {
                    continue;
                }
                for g in funcs.iter().filter(|g| g.name == n) {
                    reached.extend(direct(g));
                    todo.extend(calls_on(&g.body, "self", false));
                }
            }
            out.entry(f.name.clone()).or_default().extend(reached);
        }
    }
    assert_eq!(
        layouts,
        2,
        "two layouts implement Pointer in {}",
        dir.display()
    );
    out
}

struct Adapter {
    file: PathBuf,
    /// The type that implements the port (`SecretsManager`).
    type_name: String,
    /// Port trait → its methods → the IAM actions each reaches.
    actions: BTreeMap<String, BTreeSet<String>>,
    feature: String,
}

/// The AWS adapters: per implemented port trait, per method, the IAM actions
/// (`service:Operation`) of the `self.client.<operation>()` calls it reaches.
fn aws_adapters() -> BTreeMap<String, Vec<Adapter>> {
    let dir = repo_root().join(ADAPTERS);
    // `#[cfg(feature = "ecs")] pub mod ecs;` → module ecs needs feature ecs.
    let raw_mod = read(dir.join("mod.rs"));
    let mut feature_of = BTreeMap::new();
    for (i, _) in raw_mod.match_indices("#[cfg(feature = \"") {
        let rest = &raw_mod[i + 17..];
        let feature = rest.split('"').next().unwrap().to_string();
        let after = rest.split_once(")]").unwrap().1.trim_start();
        let module = after
            .trim_start_matches("pub ")
            .strip_prefix("mod ")
            .and_then(|m| m.split(';').next());
        if let Some(m) = module {
            feature_of.insert(m.trim().to_string(), feature);
        }
    }
    assert!(
        !feature_of.is_empty(),
        "{ADAPTERS}/mod.rs: no cfg(feature) modules"
    );
    let ports = code_only(&read(repo_root().join("lambdas/core/src/ports.rs")));
    let port_traits: BTreeSet<String> = words(&ports, "trait")
        .into_iter()
        .filter_map(|i| ident_at(ports.as_bytes(), skip_ws(ports.as_bytes(), i + 5)))
        .map(|(name, _)| name)
        .collect();

    let mut out = BTreeMap::new();
    for path in std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()) {
        let raw = read(&path);
        if !raw.contains("aws_sdk_") {
            continue; // not an AWS adapter (postgres, the shared error helpers)
        }
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let code = code_only(&raw);
        let b = code.as_bytes();
        let funcs = functions(&code);
        let crate_service = raw
            .split("aws_sdk_")
            .nth(1)
            .and_then(|s| ident_at(s.as_bytes(), 0))
            .map(|(s, _)| s)
            .unwrap();

        // Each fn's operations, then closed over `self.helper(` calls.
        let direct = |f: &Func| -> (BTreeSet<String>, BTreeSet<String>) {
            (
                calls_on(&f.body, "client", true),
                calls_on(&f.body, "self", false),
            )
        };
        let ops_of = |name: &str| -> BTreeSet<String> {
            let mut ops = BTreeSet::new();
            let mut seen = BTreeSet::new();
            let mut todo = vec![name.to_string()];
            while let Some(n) = todo.pop() {
                if !seen.insert(n.clone()) {
                    continue;
                }
                for f in funcs.iter().filter(|f| f.name == n) {
                    let (o, helpers) = direct(f);
                    ops.extend(o);
                    todo.extend(helpers);
                }
            }
            ops
        };
        let action = |op: &str| -> String {
            let op = pascal(op);
            // The adapters name each call's IAM action when they classify its
            // errors (`classify("states:ListExecutions", e)`); else the SDK crate.
            // IAM action names are case-insensitive; the adapter's spelling
            // (`rds:DescribeDBProxies`, not the SDK's `describe_db_proxies`) wins.
            let lower = raw.to_ascii_lowercase();
            let named = lower
                .match_indices(&format!(":{}\"", op.to_ascii_lowercase()))
                .find_map(|(i, _)| {
                    let prefix = raw[..i].rsplit('"').next()?;
                    (!prefix.is_empty()
                        && prefix.bytes().all(|c| c.is_ascii_lowercase() || c == b'-'))
                    .then(|| (prefix.to_string(), raw[i + 1..i + 1 + op.len()].to_string()))
                });
            let (service, op) = named.unwrap_or_else(|| {
                let service = match crate_service.as_str() {
                    "sfn" => "states".into(),
                    s => s.into(),
                };
                (service, op)
            });
            format!("{service}:{op}")
        };

        for at in words(&code, "impl") {
            let Some((tr, j)) = ident_at(b, skip_ws(b, at + 4)) else {
                continue;
            };
            let j = skip_ws(b, j);
            if !code[j..].starts_with("for ") || !port_traits.contains(&tr) {
                continue;
            }
            let type_name = ident_at(b, skip_ws(b, j + 4))
                .map(|(t, _)| t)
                .unwrap_or_default();
            let open = j + code[j..].find('{').unwrap();
            let end = block_end(b, open);
            let mut methods = BTreeMap::new();
            for f in funcs.iter().filter(|f| f.span.0 > open && f.span.1 <= end) {
                let actions: BTreeSet<String> = ops_of(&f.name).iter().map(|o| action(o)).collect();
                methods.insert(f.name.clone(), actions);
            }
            let feature = feature_of
                .get(&stem)
                .unwrap_or_else(|| panic!("{ADAPTERS}/mod.rs gates no module {stem} by a feature"))
                .clone();
            // A port may have several adapters (the two password stores): a
            // function that uses the port may reach each of them.
            out.entry(tr.clone())
                .or_insert_with(Vec::new)
                .push(Adapter {
                    file: path.clone(),
                    type_name,
                    actions: methods,
                    feature,
                });
        }
    }
    assert!(!out.is_empty(), "no AWS adapters found in {ADAPTERS}");
    out
}

/// The IAM actions a Lambda's code can call, derived as described at the top.
fn actions_of(lambda: &Lambda, adapters: &BTreeMap<String, Vec<Adapter>>) -> BTreeSet<String> {
    actions_in(lambda, adapters, None, None)
}

/// The IAM actions a Lambda's code can call with one layout and one
/// password store (the adapter type of that store, `SecretsManager` or
/// `SsmPasswordStore`), or with any.
fn actions_in(
    lambda: &Lambda,
    adapters: &BTreeMap<String, Vec<Adapter>>,
    layout: Option<&str>,
    store: Option<&str>,
) -> BTreeSet<String> {
    let main = code_only(&lambda.main);
    let steps: Vec<String> = main
        .match_indices("steps::")
        .filter_map(|(i, _)| ident_at(main.as_bytes(), i + 7).map(|(n, _)| n))
        .filter(|n| n.chars().next().is_some_and(|c| c.is_lowercase()))
        .collect();
    assert!(
        !steps.is_empty(),
        "lambdas/{}/src/main.rs calls no steps:: function",
        lambda.name
    );
    let mut actions = BTreeSet::new();
    for step in steps {
        for (tr, method) in port_calls_in_layout(&step, layout) {
            let Some(implementations) = adapters.get(&tr) else {
                continue; // a port without an AWS adapter (Database)
            };
            // An adapter the function never constructs is never reached
            // (flip-parameter builds only the Secrets Manager store: the
            // alternating secret lives there).
            for adapter in implementations
                .iter()
                .filter(|a| main.contains(&a.type_name))
                .filter(|a| tr != "SecretStore" || store.is_none_or(|s| s == a.type_name))
            {
                assert!(
                    lambda.features.contains(&adapter.feature),
                    "{}: steps::{step} uses {tr}, whose adapter {} needs pgflip-core's \"{}\" feature",
                    lambda.name,
                    adapter.file.display(),
                    adapter.feature
                );
                let reached = adapter.actions.get(&method).unwrap_or_else(|| {
                    panic!("{} implements no {tr}::{method}", adapter.file.display())
                });
                actions.extend(reached.iter().cloned());
            }
        }
    }
    actions
}

/// The `SecretStore` methods a Lambda's steps reach.
fn secret_store_methods(lambda: &Lambda) -> BTreeSet<String> {
    let main = code_only(&lambda.main);
    main.match_indices("steps::")
        .filter_map(|(i, _)| ident_at(main.as_bytes(), i + 7).map(|(n, _)| n))
        .filter(|n| n.chars().next().is_some_and(|c| c.is_lowercase()))
        .flat_map(|step| port_calls_of_step(&step))
        .filter(|(tr, _)| tr == "SecretStore")
        .map(|(_, method)| method)
        .collect()
}

/// The config parsers a Lambda's `main.rs` calls, and the variables they read.
fn env_vars_of(lambda: &Lambda) -> BTreeSet<String> {
    let main = code_only(&lambda.main);
    let b = main.as_bytes();
    let called = |path: &str| {
        words(&main, path.rsplit("::").next().unwrap())
            .into_iter()
            .any(|i| b.get(skip_ws(b, i + path.rsplit("::").next().unwrap().len())) == Some(&b'('))
            && (!path.contains("::") || main.contains(&format!("{path}(")))
    };
    // Every parser main.rs calls must be in the table.
    for (i, _) in main.match_indices("from_env(") {
        let path: String = main[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let call = format!("{path}from_env");
        assert!(
            ENV_VARS.iter().any(|(p, _)| call.ends_with(p)),
            "lambdas/{}/src/main.rs calls {call}, which pgflip_core::config::ENV_VARS does not list",
            lambda.name
        );
    }
    ENV_VARS
        .iter()
        .filter(|(parser, _)| called(parser))
        .flat_map(|(_, vars)| vars.iter().map(|v| v.to_string()))
        .collect()
}

// ------------------------------------------------------------------- tests

#[test]
fn every_lambda_crate_is_a_function_built_with_cargo_lambda() {
    let t = template();
    let functions = of_type(&t, "AWS::Serverless::Function");
    let lambdas = lambdas();
    let expected: BTreeSet<&str> = lambdas.iter().map(|l| l.logical_id.as_str()).collect();
    let actual: BTreeSet<&str> = functions.keys().copied().collect();
    assert_eq!(
        actual, expected,
        "one AWS::Serverless::Function per crate under lambdas/"
    );
    for l in &lambdas {
        let f = functions[l.logical_id.as_str()];
        let id = &l.logical_id;
        assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda", "{id}");
        assert_eq!(
            f["Metadata"]["BuildProperties"]["Binary"], l.bin,
            "{id}: Binary is the crate's [[bin]] name"
        );
        let code_uri = f["Properties"]["CodeUri"].as_str().unwrap();
        assert_eq!(
            code_uri,
            format!("../lambdas/{}", l.name),
            "{id}: CodeUri is the crate"
        );
        assert!(
            repo_root()
                .join("infra")
                .join(code_uri)
                .join("Cargo.toml")
                .exists(),
            "{id}: {code_uri} has no Cargo.toml"
        );
        assert_eq!(prop(&t, f, "Runtime"), "provided.al2023", "{id}");
        assert_eq!(prop(&t, f, "Architectures"), &json!(["arm64"]), "{id}");
        assert_eq!(prop(&t, f, "Handler"), "bootstrap", "{id}");
        let logging = match &f["Properties"]["LoggingConfig"]["LogFormat"] {
            Value::Null => &t["Globals"]["Function"]["LoggingConfig"]["LogFormat"],
            v => v,
        };
        assert_eq!(
            logging, "JSON",
            "{id}: JSON logs (lambda_runtime reads AWS_LAMBDA_LOG_FORMAT)"
        );
        // Below the TimeoutSeconds of every Task that invokes it, so a
        // slow call ends as a Lambda error the Retry/Catch rules see.
        let timeout = prop(&t, f, "Timeout").as_u64().unwrap();
        let task_timeout = task_timeouts(&format!("${{{id}Arn}}"))
            .into_iter()
            .min()
            .unwrap_or(60);
        assert!(
            timeout < task_timeout,
            "{id}: Timeout below its Tasks' TimeoutSeconds ({task_timeout})"
        );
        let log_group = &f["Properties"]["LoggingConfig"]["LogGroup"]["Ref"];
        let lg = &resources(&t)[log_group
            .as_str()
            .expect("LoggingConfig.LogGroup is a !Ref")];
        assert_eq!(lg["Type"], "AWS::Logs::LogGroup", "{id}");
        assert!(
            lg["Properties"]["RetentionInDays"].is_object(),
            "{id}: log retention"
        );
    }
}

/// The `TimeoutSeconds` (60 when unset) of every Task of the state machines
/// whose Resource is `resource`.
fn task_timeouts(resource: &str) -> Vec<u64> {
    let mut out = vec![];
    for name in ["rotation", "sweep"] {
        let asl: Value = serde_json::from_str(&read(
            repo_root().join(format!("statemachine/{name}.asl.json")),
        ))
        .unwrap();
        let mut todo = vec![asl["States"].clone()];
        while let Some(states) = todo.pop() {
            for state in states.as_object().into_iter().flat_map(|m| m.values()) {
                if let Some(inner) = state["ItemProcessor"]["States"].as_object() {
                    todo.push(Value::Object(inner.clone()));
                }
                if state["Type"] == "Task" && state["Resource"] == resource {
                    out.push(state["TimeoutSeconds"].as_u64().unwrap_or(60));
                }
            }
        }
    }
    out
}

/// The state machine defined by `statemachine/<name>.asl.json`.
fn machine<'a>(t: &'a Value, name: &str) -> (&'a str, &'a Value) {
    let uri = format!("../statemachine/{name}.asl.json");
    let found: Vec<(&str, &Value)> = of_type(t, "AWS::Serverless::StateMachine")
        .into_iter()
        .filter(|(_, sm)| sm["Properties"]["DefinitionUri"] == uri.as_str())
        .collect();
    assert_eq!(found.len(), 1, "one state machine defined by {uri}");
    found[0]
}

#[test]
fn the_sweep_plans_lanes_and_starts_rotations_of_this_stack() {
    let t = template();
    let (id, sm) = machine(&t, "sweep");
    let props = &sm["Properties"];
    assert_eq!(
        props["DefinitionSubstitutions"],
        json!({
            "RotationStateMachineArn": {"Ref": machine(&t, "rotation").0},
            "PlanSweepFunctionArn": {"Fn::GetAtt": ["PlanSweepFunction", "Arn"]},
            "ReportOutcomeFunctionArn": {"Fn::GetAtt": ["ReportOutcomeFunction", "Arn"]},
        }),
        "{id}"
    );
    let text = read(repo_root().join("statemachine/sweep.asl.json"));
    let used: BTreeSet<String> = placeholders(&text).into_iter().collect();
    let keys: BTreeSet<String> = props["DefinitionSubstitutions"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, used, "the sweep's placeholders are substituted");
    let asl: Value = serde_json::from_str(&text).unwrap();
    let lanes = &asl["States"]["RotateEachLane"];
    assert_eq!(lanes["Type"], "Map");
    assert_eq!(
        lanes["ItemProcessor"]["ProcessorConfig"]["Mode"],
        "DISTRIBUTED"
    );
    let each = &lanes["ItemProcessor"]["States"]["RotateEachTarget"];
    assert_eq!(each["MaxConcurrency"], 1, "a lane's targets one at a time");
    let task = &each["ItemProcessor"]["States"]["RotateTarget"];
    assert_eq!(
        task["Resource"],
        "arn:aws:states:::states:startExecution.sync:2"
    );
    assert_eq!(
        task["Parameters"]["StateMachineArn"],
        "${RotationStateMachineArn}"
    );
    assert_eq!(
        task["Catch"][0]["ErrorEquals"],
        json!(["States.ALL"]),
        "a failed target does not stop the others"
    );
    // The sweep's environment: its limits are the template's parameters.
    let env = &t["Resources"]["PlanSweepFunction"]["Properties"]["Environment"]["Variables"];
    for (var, param) in [
        ("SWEEP_MAX_CONCURRENCY", "SweepMaxConcurrency"),
        ("SWEEP_PER_CLUSTER", "SweepPerCluster"),
        ("SWEEP_JITTER_SECONDS", "SweepJitterSeconds"),
    ] {
        assert_eq!(env[var], json!({"Ref": param}), "{var}");
    }
    // Exactly what its Tasks, its Distributed Map and startExecution.sync
    // need, on this stack's functions, rotations and lanes only.
    let granted: BTreeSet<String> = statements(id, &props["Policies"])
        .into_iter()
        .filter(|s| {
            !s.actions
                .iter()
                .any(|a| a.starts_with("logs:") || a.starts_with("xray:"))
        })
        .flat_map(|s| s.actions)
        .collect();
    let want: BTreeSet<String> = [
        "lambda:InvokeFunction",
        "states:StartExecution",
        "states:DescribeExecution",
        "states:StopExecution",
        "states:RedriveExecution",
        "events:PutTargets",
        "events:PutRule",
        "events:DescribeRule",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    assert_eq!(granted, want, "{id}");
    // One schedule runs: the rotation's without SweepTargets, the sweep's with them.
    let rotation_state = &machine(&t, "rotation").1["Properties"]["Events"]["RotationSchedule"]
        ["Properties"]["State"]["Fn::If"][0];
    let sweep_state = &props["Events"]["SweepSchedule"]["Properties"]["State"]["Fn::If"][0];
    assert_eq!(rotation_state, "RotationScheduleIsEnabled");
    assert_eq!(sweep_state, "SweepScheduleIsEnabled");
    let c = &t["Conditions"];
    assert_eq!(
        c["RotationScheduleIsEnabled"]["Fn::And"][1],
        json!({"Fn::Not": [{"Condition": "HasSweepTargets"}]})
    );
    assert_eq!(
        c["SweepScheduleIsEnabled"]["Fn::And"][1],
        json!({"Condition": "HasSweepTargets"})
    );
}

#[test]
fn every_task_calls_a_function_of_the_template() {
    let t = template();
    let (id, sm) = machine(&t, "rotation");
    let props = &sm["Properties"];
    let uri = props["DefinitionUri"].as_str().unwrap();
    let asl_text = read(repo_root().join("infra").join(uri));
    let asl: Value = serde_json::from_str(&asl_text).unwrap();

    let subs = props["DefinitionSubstitutions"].as_object().unwrap();
    let used: BTreeSet<String> = placeholders(&asl_text).into_iter().collect();
    let keys: BTreeSet<String> = subs.keys().cloned().collect();
    assert_eq!(
        keys, used,
        "DefinitionSubstitutions keys = the ASL's ${{…}} placeholders"
    );

    let functions = of_type(&t, "AWS::Serverless::Function");
    let mut called = BTreeSet::new();
    for (name, state) in asl["States"].as_object().unwrap() {
        if state["Type"] != "Task" {
            continue;
        }
        let resource = state["Resource"].as_str().unwrap();
        let key = resource
            .strip_prefix("${")
            .and_then(|r| r.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{name}: Resource {resource} is not a substitution"));
        let target = &subs[key]["Fn::GetAtt"];
        let logical = target[0]
            .as_str()
            .unwrap_or_else(|| panic!("{key} is not !GetAtt X.Arn"));
        assert_eq!(target[1], "Arn", "{key}");
        assert!(
            functions.contains_key(logical),
            "{name} calls {logical}, not a function of the template"
        );
        assert_eq!(
            key,
            format!("{logical}Arn"),
            "placeholder named after its resource"
        );
        called.insert(logical);
    }
    // Every function but report-outcome, which EventBridge invokes once an
    // execution has ended (and a schedule), and plan-sweep, the sweep's
    // (the_sweep_plans_lanes_and_starts_rotations_of_this_stack).
    let all: BTreeSet<&str> = functions
        .keys()
        .copied()
        .filter(|f| *f != "ReportOutcomeFunction" && *f != "PlanSweepFunction")
        .collect();
    assert_eq!(called, all, "every step's function is called by a Task");
    let report = functions["ReportOutcomeFunction"];
    let events = &report["Properties"]["Events"];
    assert_eq!(
        events["ExecutionEnded"]["Properties"]["Pattern"]["detail"]["stateMachineArn"][0]["Ref"],
        id,
        "report-outcome hears of this state machine's executions"
    );
    assert_eq!(
        as_list(&events["ExecutionEnded"]["Properties"]["Pattern"]["detail"]["status"]).len(),
        4,
        "every terminal status"
    );

    // The state machine may invoke exactly these functions.
    let invoke: Vec<Statement> = statements(id, &props["Policies"])
        .into_iter()
        .filter(|s| s.actions.iter().any(|a| a.starts_with("lambda:")))
        .collect();
    assert_eq!(invoke.len(), 1, "{id}: one lambda statement");
    assert_eq!(invoke[0].actions, ["lambda:InvokeFunction"]);
    let invoked: BTreeSet<&str> = invoke[0]
        .resources
        .iter()
        .map(|r| r["Fn::GetAtt"][0].as_str().expect("!GetAtt X.Arn"))
        .collect();
    assert_eq!(invoked, all, "{id} invokes exactly the six functions");
}

#[test]
fn each_function_may_make_exactly_the_aws_calls_its_code_makes() {
    let t = template();
    let functions = of_type(&t, "AWS::Serverless::Function");
    let adapters = aws_adapters();
    let mut report = vec![];
    let mut errors = vec![];
    for l in lambdas() {
        let f = functions[l.logical_id.as_str()];
        let code = actions_of(&l, &adapters);
        // A customer managed KMS key (optional) is used through the password
        // store: reading a password needs Decrypt, writing a version also
        // GenerateDataKey. Dates and labels (report-outcome) need neither.
        let store = secret_store_methods(&l);
        let mut kms = BTreeSet::new();
        if store.contains("get_stage") {
            kms.insert("kms:Decrypt".to_string());
        }
        if store.contains("put_pending") {
            kms.insert("kms:Decrypt".to_string());
            kms.insert("kms:GenerateDataKey".to_string());
        }
        let st = statements(&l.logical_id, &f["Properties"]["Policies"]);
        let granted: BTreeSet<String> = st
            .iter()
            .filter(|s| !s.conditional)
            .flat_map(|s| s.actions.clone())
            .collect();
        // The registry's calls are granted under its feature's condition.
        let by_feature: BTreeSet<String> = st
            .iter()
            .filter(|s| {
                let c = s.condition.as_deref().unwrap_or_default();
                FEATURE_CONDITIONS.contains(&c)
            })
            .flat_map(|s| s.actions.clone())
            .collect();
        let covered: BTreeSet<String> = granted.union(&by_feature).cloned().collect();
        let conditional: BTreeSet<String> = st
            .iter()
            .filter(|s| s.conditional)
            .flat_map(|s| s.actions.clone())
            .collect();
        let kms_granted: BTreeSet<String> = st
            .iter()
            .flat_map(|s| s.actions.clone())
            .filter(|a| a.starts_with("kms:"))
            .collect();
        report.push(format!("{}: {:?}", l.name, code));
        let id = &l.logical_id;
        // Grants are exactly the code's calls, plus the KMS ones a customer
        // managed key of a target's store needs (any target may use one; the
        // statements hold them to the stores, see iam_is_scoped_…). Grants
        // inside an !If (an optional feature) may only repeat those calls.
        for extra in granted.difference(&code).filter(|a| !a.starts_with("kms:")) {
            errors.push(format!(
                "{id} may call {extra}, which its code does not call"
            ));
        }
        for missing in code.difference(&covered) {
            errors.push(format!("{id} may not call {missing}, which its code needs"));
        }
        for extra in conditional
            .iter()
            .filter(|a| !code.contains(*a) && !kms.contains(*a))
        {
            errors.push(format!(
                "{id} may call {extra} (conditionally), which its code does not call"
            ));
        }
        for missing in kms.difference(&kms_granted) {
            errors.push(format!(
                "{id} lacks {missing} for a customer managed key of its password store"
            ));
        }
        for extra in kms_granted.difference(&kms) {
            errors.push(format!(
                "{id} may call {extra}, which no password store call of its code needs"
            ));
        }
    }
    eprintln!("derived from the code:\n  {}", report.join("\n  "));
    assert!(
        errors.is_empty(),
        "the template's IAM and the code differ:\n  {}",
        errors.join("\n  ")
    );
}

// ------------------------------------------------------- the tag convention

/// The tag every resource pgflip may touch carries, equal to the stack name.
const DEPLOYMENT_TAG: &str = "aws:ResourceTag/pgflip:deployment";
/// The tag that says what a secret or parameter is to pgflip.
const KIND_TAG: &str = "aws:ResourceTag/pgflip:kind";
const KINDS: &[&str] = &[
    "password",
    "alternating-secret",
    "admin-secret",
    "active-user-parameter",
];

/// Actions whose resource type takes `aws:ResourceTag` in the Service
/// Authorization Reference (secret, parameter, service, task, key,
/// execution). `ssm:PutParameter` is not one: it lists no resource-tag key.
const TAGGABLE: &[&str] = &[
    "secretsmanager:GetSecretValue",
    "secretsmanager:DescribeSecret",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
    "secretsmanager:ListSecretVersionIds",
    "secretsmanager:TagResource",
    "ssm:GetParameter",
    "ssm:GetParameterHistory",
    "ssm:LabelParameterVersion",
    "ssm:UnlabelParameterVersion",
    "ecs:UpdateService",
    "ecs:DescribeServices",
    "ecs:DescribeServiceDeployments",
    "ecs:DescribeTasks",
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "states:DescribeExecution",
    "states:GetExecutionHistory",
];

/// Reads granted on every such resource of the account and region without a
/// tag condition, and why: select-user's consumer discovery and
/// unlisted-consumer check must see the cluster's untagged services and
/// their tasks (tasks carry tags only when a service propagates them); a
/// service deployment has no tags of its own (its service is tag-checked
/// where only tagged services are read).
const UNTAGGED_READS: &[(&str, &str, &str)] = &[
    ("SelectUserFunction", "ecs:DescribeServices", "service"),
    (
        "SelectUserFunction",
        "ecs:DescribeServiceDeployments",
        "service",
    ),
    ("SelectUserFunction", "ecs:DescribeTasks", "task"),
    ("*", "ecs:DescribeServiceDeployments", "service-deployment"),
];

/// `arn:${AWS::Partition}:<service>:${AWS::Region}:${AWS::AccountId}:<rest>`.
fn account_arn(service: &str, rest: &str) -> String {
    format!("arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{rest}")
}

/// A resource's text: the literal, or the `!Sub` string.
fn resource_text(r: &Value) -> Option<&str> {
    r.as_str().or_else(|| match &r["Fn::Sub"] {
        Value::String(s) => Some(s.as_str()),
        _ => None,
    })
}

/// `(type, name)` of a resource ARN: `service/*` → `("service", "*")`,
/// `parameter${TargetsPath}/*` → `("parameter", "${TargetsPath}/*")`,
/// `secret:*` → `("secret", "*")`; `"*"` → `("*", "*")`.
fn resource_parts(text: &str) -> (String, String) {
    if text == "*" {
        return ("*".into(), "*".into());
    }
    // arn:partition:service:region:account:<resource>, where a `!Sub`
    // writes the account as ${AWS::AccountId} (whose `::` is no separator).
    let resource = match text.split_once("${AWS::AccountId}:") {
        Some((_, rest)) => rest,
        None => text.splitn(6, ':').nth(5).unwrap_or(""),
    };
    let end = resource.find(['/', ':', '$']).unwrap_or(resource.len());
    let (kind, name) = resource.split_at(end);
    let name = name.strip_prefix(['/', ':']).unwrap_or(name);
    (kind.to_string(), name.to_string())
}

fn held_to_deployment(s: &Statement) -> bool {
    s.value["Condition"]["StringEquals"][DEPLOYMENT_TAG] == json!({"Ref": "AWS::StackName"})
}

/// The `pgflip:kind` values a statement's condition admits.
fn kinds_of(s: &Statement) -> BTreeSet<String> {
    as_list(&s.value["Condition"]["StringEquals"][KIND_TAG])
        .into_iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// Every template parameter a value mentions (`!Ref P`, `${P}` in a `!Sub`),
/// at any depth.
fn params_anywhere(t: &Value, v: &Value) -> BTreeSet<String> {
    let mut out = params_in(t, v);
    match v {
        Value::Array(items) => items.iter().for_each(|i| out.extend(params_anywhere(t, i))),
        Value::Object(map) => map.values().for_each(|i| out.extend(params_anywhere(t, i))),
        _ => {}
    }
    out
}

/// The parameters a template condition depends on, through other conditions.
fn condition_params(t: &Value, name: &str) -> BTreeSet<String> {
    fn walk(t: &Value, v: &Value, out: &mut BTreeSet<String>) {
        if let Some(c) = v["Condition"].as_str() {
            walk(t, &t["Conditions"][c], out);
        }
        out.extend(params_in(t, v));
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(t, i, out)),
            Value::Object(map) => map.values().for_each(|i| walk(t, i, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(t, &t["Conditions"][name], &mut out);
    out
}

/// IAM's wildcard match: `*` any run of characters (`/` too), `?` one.
fn iam_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

/// Every statement of every role of the template: the functions' and the
/// state machines'.
fn all_statements(t: &Value) -> Vec<(String, Statement<'_>)> {
    let mut out = vec![];
    for kind in ["AWS::Serverless::Function", "AWS::Serverless::StateMachine"] {
        for (id, r) in of_type(t, kind) {
            for s in statements(id, &r["Properties"]["Policies"]) {
                out.push((id.to_string(), s));
            }
        }
    }
    out
}

#[test]
fn iam_is_scoped_by_tag_name_pattern_or_stack() {
    let t = template();
    // The sweep may start and follow rotations, and its own lanes (the
    // Distributed Map's child workflow executions).
    let name_of = |m: &str| {
        machine(&t, m).1["Properties"]["Name"]["Fn::Sub"]
            .as_str()
            .expect("the state machine has a !Sub Name")
            .to_string()
    };
    let machine_name = name_of("rotation");
    let sweep_name = name_of("sweep");
    let mut errors = vec![];
    for (owner, s) in all_statements(&t) {
        let sid = &s.sid;
        let here = format!("{owner}/{sid}");
        for a in &s.actions {
            assert!(!a.contains('*'), "{here}: wildcard action {a}");
        }
        let services: BTreeSet<&str> = s
            .actions
            .iter()
            .map(|a| a.split(':').next().unwrap())
            .collect();
        assert_eq!(services.len(), 1, "{here}: one service per statement");
        let service = *services.iter().next().unwrap();
        assert!(!s.resources.is_empty(), "{here}: no Resource");
        let texts: Vec<&str> = s
            .resources
            .iter()
            .map(|r| resource_text(r).unwrap_or(""))
            .collect();
        let only = |want: &[String]| -> bool {
            let got: BTreeSet<&str> = texts.iter().copied().collect();
            got == want.iter().map(String::as_str).collect()
        };
        if texts.contains(&"*") {
            // Only the APIs that have no resource-level permissions, or the
            // ECS list calls, held to this account's clusters by ecs:cluster.
            let cluster = &s.value["Condition"]["ArnLike"]["ecs:cluster"]["Fn::Sub"];
            let held = *cluster == Value::String(account_arn("ecs", "cluster/*"));
            if !(s.actions.iter().all(|a| UNSCOPABLE.contains(&a.as_str()))
                || (held
                    && s.actions
                        .iter()
                        .all(|a| HELD_TO_CLUSTER.contains(&a.as_str()))))
            {
                errors.push(format!(
                    "{here}: Resource \"*\" for {:?}, which can be scoped",
                    s.actions
                ));
            }
            continue;
        }
        let tagged = |kinds: &[&str]| -> Option<String> {
            if !held_to_deployment(&s) {
                return Some(format!("{here}: no {DEPLOYMENT_TAG} = the stack name"));
            }
            let got = kinds_of(&s);
            if got.is_empty() || !got.iter().all(|k| kinds.contains(&k.as_str())) {
                return Some(format!("{here}: {KIND_TAG} {got:?} not among {kinds:?}"));
            }
            None
        };
        let problem: Option<String> = match service {
            "secretsmanager" => {
                let kinds = &KINDS[..3];
                if !only(&[account_arn("secretsmanager", "secret:*")]) {
                    Some(format!(
                        "{here}: the account's secrets, by tag; got {texts:?}"
                    ))
                } else if let Some(p) = tagged(kinds) {
                    Some(p)
                } else if s.actions.iter().any(|a| a == "secretsmanager:TagResource")
                    && s.value["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]
                        != json!([pgflip_core::ports::FLIPPED_AT_TAG])
                {
                    Some(format!(
                        "{here}: TagResource may write only {}",
                        pgflip_core::ports::FLIPPED_AT_TAG
                    ))
                } else {
                    None
                }
            }
            "ssm" if s.condition.as_deref() == Some("HasTargetsPath") => {
                // The registry: one target's parameter under the path, or
                // (listing) the path itself.
                let listing = s.actions == ["ssm:GetParametersByPath"];
                let want = if listing {
                    "parameter${TargetsPath}"
                } else {
                    "parameter${TargetsPath}/*"
                };
                (!only(&[account_arn("ssm", want)]))
                    .then(|| format!("{here}: the registry path, got {texts:?}"))
            }
            "ssm" if s.condition.as_deref() == Some("HasTargetsDocument") => {
                (!only(&[account_arn("ssm", "parameter${TargetsParameterName}")]))
                    .then(|| format!("{here}: the targets document, got {texts:?}"))
            }
            "ssm" if s.actions == ["ssm:PutParameter"] => {
                // No resource-tag key for PutParameter: a name pattern,
                // overwriting an existing parameter only.
                let patterns = [
                    account_arn("ssm", "parameter${ActiveUserParameterPattern}"),
                    account_arn("ssm", "parameter${PasswordParameterPattern}"),
                ];
                if texts.len() != 1 || !patterns.iter().any(|p| p == texts[0]) {
                    Some(format!("{here}: a name pattern parameter, got {texts:?}"))
                } else if s.value["Condition"]["StringEquals"]["ssm:Overwrite"] != "true" {
                    Some(format!("{here}: only with ssm:Overwrite = \"true\""))
                } else {
                    None
                }
            }
            "ssm" => {
                if s.actions.iter().any(|a| a == "ssm:PutParameter") {
                    Some(format!("{here}: PutParameter in its own statement"))
                } else if !only(&[account_arn("ssm", "parameter/*")]) {
                    Some(format!(
                        "{here}: the account's parameters, by tag; got {texts:?}"
                    ))
                } else {
                    tagged(&["password", "active-user-parameter"])
                }
            }
            "ecs" => {
                let mut p = None;
                for text in &texts {
                    let (kind, name) = resource_parts(text);
                    if *text != account_arn("ecs", &format!("{kind}/*"))
                        || name != "*"
                        || !["service", "service-deployment", "task"].contains(&kind.as_str())
                    {
                        p = Some(format!("{here}: {text} is not this account's {kind}s"));
                        continue;
                    }
                    for a in &s.actions {
                        let exempt = UNTAGGED_READS.iter().any(|(o, act, k)| {
                            (*o == "*" || *o == owner) && act == a && k == &kind
                        });
                        if !exempt && !held_to_deployment(&s) {
                            p = Some(format!("{here}: {a} on {kind}s without {DEPLOYMENT_TAG}"));
                        }
                    }
                }
                p
            }
            "kms" => {
                let via = &s.value["Condition"]["StringEquals"]["kms:ViaService"]["Fn::Sub"];
                let context = &s.value["Condition"]["StringLike"];
                let (store, key, want) = match via.as_str() {
                    Some("secretsmanager.${AWS::Region}.amazonaws.com") => (
                        "secretsmanager",
                        "kms:EncryptionContext:SecretARN",
                        account_arn("secretsmanager", "secret:*"),
                    ),
                    Some("ssm.${AWS::Region}.amazonaws.com") => (
                        "ssm",
                        "kms:EncryptionContext:PARAMETER_ARN",
                        account_arn("ssm", "parameter${PasswordParameterPattern}"),
                    ),
                    _ => ("", "", String::new()),
                };
                if store.is_empty() {
                    Some(format!(
                        "{here}: only through a password store (kms:ViaService)"
                    ))
                } else if !only(&[account_arn("kms", "key/*")]) {
                    Some(format!("{here}: the account's keys, got {texts:?}"))
                } else if context[key]["Fn::Sub"] != want.as_str() {
                    Some(format!("{here}: {key} like {want}"))
                } else {
                    None
                }
            }
            "states" => {
                let lanes = owner == machine(&t, "sweep").0
                    && (texts[0].ends_with(&format!(":stateMachine:{sweep_name}"))
                        || texts[0].ends_with(&format!(":execution:{sweep_name}/*")));
                // plan-sweep's guard lists the running sweeps.
                let sweeps = owner == "PlanSweepFunction"
                    && s.actions == ["states:ListExecutions"]
                    && texts[0].ends_with(&format!(":stateMachine:{sweep_name}"));
                let ok = texts.len() == 1
                    && (texts[0].ends_with(&format!(":stateMachine:{machine_name}"))
                        || texts[0].ends_with(&format!(":execution:{machine_name}:*"))
                        || lanes
                        || sweeps);
                (!ok).then(|| {
                    format!("{here}: the rotation state machine ({machine_name}), got {texts:?}")
                })
            }
            "events" => {
                // The managed rule through which startExecution.sync learns
                // that a rotation ended.
                let ok = texts.len() == 1
                    && texts[0]
                        .ends_with(":rule/StepFunctionsGetEventsForStepFunctionsExecutionRule");
                (!ok).then(|| format!("{here}: only Step Functions' managed rule, got {texts:?}"))
            }
            "lambda" => (!s.resources.iter().all(|r| r["Fn::GetAtt"][1] == "Arn"))
                .then(|| format!("{here}: functions of the template")),
            "rds" => {
                // A proxy's ARN carries its resource id (prx-…), not the name
                // a target gives: this account's proxies, DescribeDBProxies only.
                let ok = s.actions == ["rds:DescribeDBProxies"]
                    && only(&[account_arn("rds", "db-proxy:*")]);
                (!ok).then(|| {
                    format!("{here}: DescribeDBProxies on the account's proxies, got {texts:?}")
                })
            }
            "sns" => {
                let ok = s.actions == ["sns:Publish"]
                    && s.resources.len() == 1
                    && s.resources[0]["Ref"]
                        .as_str()
                        .is_some_and(|r| t["Resources"][r]["Type"] == "AWS::SNS::Topic");
                (!ok).then(|| format!("{here}: sns:Publish to the stack's topic, got {texts:?}"))
            }
            other => Some(format!("{here}: no rule for {other} here: add one")),
        };
        errors.extend(problem);
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// No taggable action on a wildcard (`"*"`, or an ARN pattern whose name is
/// `*`: every secret, parameter, service… of the account) without a
/// condition, except the reads listed (and explained) in `UNTAGGED_READS`.
/// A prefix (`${TargetsPath}/*`, `${AWS::StackName}-rotation:*`) scopes by
/// itself.
#[test]
fn no_taggable_action_on_a_wildcard_without_a_condition() {
    let t = template();
    let mut errors = vec![];
    for (owner, s) in all_statements(&t) {
        let unconditioned = s
            .value
            .get("Condition")
            .is_none_or(|c| c.as_object().is_none_or(|m| m.is_empty()));
        for a in s.actions.iter().filter(|a| TAGGABLE.contains(&a.as_str())) {
            for r in &s.resources {
                let text = resource_text(r).unwrap_or("");
                let (kind, name) = resource_parts(text);
                if !name.starts_with('*') || !unconditioned {
                    continue;
                }
                let exempt = UNTAGGED_READS
                    .iter()
                    .any(|(o, act, k)| (*o == "*" || *o == owner) && act == a && *k == kind);
                if !exempt {
                    errors.push(format!(
                        "{owner}/{}: {a} on {text} with no condition (tag it: {DEPLOYMENT_TAG})",
                        s.sid
                    ));
                }
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Adding a target changes no template: no grant mentions a parameter that
/// describes one target (those `TargetConfig::from_env` reads, which a
/// registry entry replaces), and none is held back by a condition on one
/// (a target's store, layout or proxy is its own). The default target
/// follows the same convention: its active-user parameter matches the
/// pattern flip-parameter may write.
#[test]
fn no_grant_names_a_targets_resource() {
    let t = template();
    let target_vars: BTreeSet<&str> = ENV_VARS
        .iter()
        .find(|(parser, _)| *parser == "TargetConfig::from_env")
        .expect("ENV_VARS lists TargetConfig::from_env")
        .1
        .iter()
        .copied()
        .collect();
    let mut per_target = BTreeSet::new();
    for f in of_type(&t, "AWS::Serverless::Function").values() {
        for (var, v) in environment(&t, f) {
            if target_vars.contains(var.as_str()) {
                per_target.extend(ref_param(&t, &v).map(String::from));
            }
        }
    }
    assert!(
        per_target.contains("BlueSecretArn") && per_target.contains("EcsClusterName"),
        "the default target's parameters: {per_target:?}"
    );
    let mut errors = vec![];
    for (owner, s) in all_statements(&t) {
        let named: Vec<String> = params_anywhere(&t, s.value)
            .intersection(&per_target)
            .cloned()
            .collect();
        if !named.is_empty() {
            errors.push(format!(
                "{owner}/{}: names the default target's {named:?}; scope it by tag instead",
                s.sid
            ));
        }
        if let Some(c) = &s.condition {
            let on: Vec<String> = condition_params(&t, c)
                .intersection(&per_target)
                .cloned()
                .collect();
            if !on.is_empty() {
                errors.push(format!(
                    "{owner}/{}: granted only if {c}, which depends on the default target's {on:?}",
                    s.sid
                ));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let p = &t["Parameters"];
    let (pattern, name) = (
        p["ActiveUserParameterPattern"]["Default"].as_str().unwrap(),
        p["ActiveUserParameterName"]["Default"].as_str().unwrap(),
    );
    assert!(
        iam_match(pattern, name),
        "the default {name} must match ActiveUserParameterPattern {pattern}"
    );
    assert!(iam_match("/*/password*", "/legacy/db/password-green") && !iam_match("/a?", "/abc"));
}

/// What each function may do to each kind of resource (the README's threat
/// model): only flip-parameter moves an alternating secret's labels, tags it
/// or writes an active-user parameter; only generate-and-set-password writes
/// a password; nobody writes an administrator's secret; report-outcome reads
/// no password.
#[test]
fn each_kind_of_resource_is_touched_only_as_the_threat_model_says() {
    let t = template();
    let mut by: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut writers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (owner, s) in all_statements(&t) {
        for kind in kinds_of(&s) {
            by.entry((owner.clone(), kind))
                .or_default()
                .extend(s.actions.iter().cloned());
        }
        if s.actions == ["ssm:PutParameter"] {
            let text = resource_text(s.resources[0]).unwrap_or("").to_string();
            writers.entry(text).or_default().insert(owner.clone());
        }
    }
    let may = |owner: &str, kind: &str| -> BTreeSet<String> {
        by.get(&(owner.to_string(), kind.to_string()))
            .cloned()
            .unwrap_or_default()
    };
    let holders = |action: &str, kind: &str| -> BTreeSet<String> {
        by.iter()
            .filter(|((_, k), acts)| k == kind && acts.contains(action))
            .map(|((o, _), _)| o.clone())
            .collect()
    };
    let one = |id: &str| BTreeSet::from([id.to_string()]);
    assert_eq!(
        holders(
            "secretsmanager:UpdateSecretVersionStage",
            "alternating-secret"
        ),
        one("FlipParameterFunction"),
        "only the step that flips may move an alternating secret's labels"
    );
    // The flip time: written by the flip, and by select-user when it first
    // sees an AWSCURRENT another rotator set (the tag key alone, checked
    // for every TagResource grant elsewhere).
    assert_eq!(
        holders("secretsmanager:TagResource", "alternating-secret"),
        BTreeSet::from([
            "FlipParameterFunction".to_string(),
            "SelectUserFunction".to_string()
        ]),
        "only the flip and select-user may record when AWSCURRENT moved"
    );
    assert_eq!(
        holders("secretsmanager:PutSecretValue", "password"),
        one("GenerateAndSetPasswordFunction")
    );
    assert_eq!(
        holders("ssm:LabelParameterVersion", "password"),
        BTreeSet::from([
            "GenerateAndSetPasswordFunction".to_string(),
            "VerifyLoginFunction".to_string()
        ])
    );
    assert_eq!(
        may("GenerateAndSetPasswordFunction", "admin-secret"),
        BTreeSet::from([
            "secretsmanager:GetSecretValue".to_string(),
            "secretsmanager:DescribeSecret".to_string()
        ]),
        "the administrator's secret is read, never written"
    );
    assert!(
        may("ReportOutcomeFunction", "password")
            .iter()
            .chain(&may("ReportOutcomeFunction", "alternating-secret"))
            .all(|a| a == "secretsmanager:ListSecretVersionIds" || a == "ssm:GetParameterHistory"),
        "report-outcome reads dates and labels, never a password"
    );
    assert!(
        holders("ssm:GetParameter", "active-user-parameter").len() >= 4,
        "the steps that read the pointer"
    );
    assert_eq!(
        writers.get(&account_arn(
            "ssm",
            "parameter${ActiveUserParameterPattern}"
        )),
        Some(&one("FlipParameterFunction")),
        "only flip-parameter writes an active-user parameter"
    );
    assert_eq!(
        writers.get(&account_arn("ssm", "parameter${PasswordParameterPattern}")),
        Some(&one("GenerateAndSetPasswordFunction")),
        "only generate-and-set-password writes a password parameter"
    );
    // The layout is a parameter; each layout's rule names what it needs.
    let rules = &t["Rules"];
    for rule in [
        "ParameterLayoutNeedsTheParameterAndBothSecrets",
        "AlternatingSecretNeedsOneSecretsManagerSecret",
    ] {
        assert!(rules[rule]["Assertions"].is_array(), "Rules.{rule}");
    }
    assert_eq!(
        t["Parameters"]["PointerLayout"]["AllowedValues"],
        json!(["parameter", "alternating-secret"])
    );
}

#[test]
fn each_function_gets_exactly_the_environment_its_code_reads() {
    let t = template();
    let functions = of_type(&t, "AWS::Serverless::Function");
    let mut errors = vec![];
    for l in lambdas() {
        let f = functions[l.logical_id.as_str()];
        let id = &l.logical_id;
        let env = environment(&t, f);
        let set: BTreeSet<String> = env.keys().cloned().collect();
        let read = env_vars_of(&l);
        for extra in set.difference(&read) {
            errors.push(format!(
                "{id} sets {extra}, which its config parsers do not read"
            ));
        }
        for missing in read.difference(&set) {
            errors.push(format!(
                "{id} does not set {missing}, which its config parsers read"
            ));
        }
        for (var, v) in env {
            // A parameter, or something of the stack itself (its alert
            // topic, a name made of its own name): never a literal.
            let of_the_stack = v["Ref"]
                .as_str()
                .is_some_and(|r| resources(&t).contains_key(r))
                || v["Fn::Sub"].as_str().is_some_and(|sub| {
                    placeholders(sub).iter().all(|p| p.starts_with("AWS::"))
                        && !placeholders(sub).is_empty()
                });
            if ref_param(&t, &v).is_none() && !of_the_stack {
                errors.push(format!(
                    "{id}: {var} should come from a template parameter, got {v}"
                ));
            }
        }
    }
    assert!(
        errors.is_empty(),
        "the template's environment and the code differ:\n  {}",
        errors.join("\n  ")
    );
}

#[test]
fn parameter_defaults_and_bounds_match_the_code() {
    let t = template();
    let functions = of_type(&t, "AWS::Serverless::Function");
    let config = read(repo_root().join("lambdas/core/src/config.rs"));
    let compact: String = config.chars().filter(|c| !c.is_whitespace()).collect();
    let mut checked = 0;
    let mut seen = BTreeSet::new();
    for f in functions.values() {
        for (var, v) in environment(&t, f) {
            let Some(p) = ref_param(&t, &v) else { continue };
            if !seen.insert(var.clone()) {
                continue;
            }
            let param = &t["Parameters"][p];
            let number = |v: &Value| -> Option<u64> {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            };
            // number(env, "KEY", default, min, max) in config.rs.
            if let Some(args) = compact.split(&format!("number(env,\"{var}\",")).nth(1) {
                let args: Vec<Option<u64>> = args
                    .split(')')
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|a| a.replace('_', "").parse().ok())
                    .collect();
                if let [Some(default), min, max] = args.as_slice() {
                    assert_eq!(
                        number(&param["Default"]),
                        Some(*default),
                        "{p}: Default = the code's default of {var}"
                    );
                    let lo = number(&param["MinValue"]).unwrap_or_else(|| panic!("{p}: MinValue"));
                    let hi = number(&param["MaxValue"]).unwrap_or_else(|| panic!("{p}: MaxValue"));
                    assert!(
                        min.is_none_or(|m| lo >= m) && max.is_none_or(|m| hi <= m),
                        "{p}: bounds within the code's for {var}"
                    );
                    checked += 1;
                }
            }
            match var.as_str() {
                "PASSWORD_EXCLUDE_CHARACTERS" => {
                    assert_eq!(param["Default"], DEFAULT_EXCLUDED, "{p}");
                    checked += 1;
                }
                "PASSWORD_LENGTH" => {
                    assert_eq!(
                        number(&param["Default"]),
                        Some(PasswordPolicy::default().length() as u64),
                        "{p}"
                    );
                    assert_eq!(number(&param["MinValue"]), Some(MIN_LENGTH as u64), "{p}");
                    assert_eq!(number(&param["MaxValue"]), Some(MAX_LENGTH as u64), "{p}");
                }
                "UNLISTED_CONSUMERS" => {
                    assert_eq!(
                        Some(pgflip_core::domain::UnlistedConsumers::default()),
                        param["Default"]
                            .as_str()
                            .and_then(pgflip_core::domain::UnlistedConsumers::parse),
                        "{p}: the code's default"
                    );
                    for v in as_list(&param["AllowedValues"]) {
                        assert!(
                            pgflip_core::domain::UnlistedConsumers::parse(v.as_str().unwrap())
                                .is_some(),
                            "{p}: {v} is not a value the code accepts"
                        );
                    }
                }
                "DB_SSLMODE" => {
                    assert_eq!(param["Default"], "verify-full", "{p}: TLS by default");
                    for mode in as_list(&param["AllowedValues"]) {
                        assert!(
                            config.contains(&format!("Some(\"{}\")", mode.as_str().unwrap())),
                            "{p}: {mode} is not a mode the code accepts"
                        );
                    }
                }
                _ => {}
            }
        }
    }
    assert!(
        checked >= 4,
        "found the numeric defaults in config.rs ({checked})"
    );
}

#[test]
fn database_functions_run_in_the_vpc_with_the_ca_bundle() {
    let t = template();
    let functions = of_type(&t, "AWS::Serverless::Function");
    for l in lambdas() {
        let f = functions[l.logical_id.as_str()];
        let id = &l.logical_id;
        let vpc = prop(&t, f, "VpcConfig");
        if l.features.contains("postgres") {
            for (key, kind) in [
                ("SubnetIds", "List<AWS::EC2::Subnet::Id>"),
                ("SecurityGroupIds", "List<AWS::EC2::SecurityGroup::Id>"),
            ] {
                let p = ref_param(&t, &vpc[key])
                    .unwrap_or_else(|| panic!("{id}: VpcConfig.{key} from a parameter"));
                assert_eq!(t["Parameters"][p]["Type"], kind, "{id}: {p}");
            }
            let env = environment(&t, f);
            let cert = ref_param(&t, &env["DB_SSL_ROOT_CERT"]).unwrap();
            let path = t["Parameters"][cert]["Default"].as_str().unwrap();
            if path.starts_with("/opt/") {
                let layers = as_list(prop(&t, f, "Layers"));
                let layer = layers
                    .iter()
                    .find_map(|l| l["Ref"].as_str())
                    .unwrap_or_else(|| panic!("{id}: {path} is in /opt, so a layer must bring it"));
                let layer = &resources(&t)[layer];
                assert_eq!(layer["Type"], "AWS::Serverless::LayerVersion", "{id}");
                let dir = layer["Properties"]["ContentUri"].as_str().unwrap();
                assert!(
                    repo_root().join("infra").join(dir).is_dir(),
                    "{id}: layer directory infra/{dir}"
                );
            }
        } else {
            assert!(
                vpc.is_null(),
                "{id} does not reach the database: keep it out of the VPC"
            );
            assert!(prop(&t, f, "Layers").is_null(), "{id}: no CA bundle needed");
        }
    }
}

#[test]
fn the_rotation_is_scheduled_logged_and_alarmed() {
    let t = template();
    let (id, sm) = of_type(&t, "AWS::Serverless::StateMachine")
        .into_iter()
        .next()
        .unwrap();
    let props = &sm["Properties"];
    assert_eq!(
        props["Type"], "STANDARD",
        "{id}: Standard workflows can be redriven"
    );
    let dest =
        &props["Logging"]["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"];
    let lg = &resources(&t)[dest[0]
        .as_str()
        .expect("logs to a log group of the template")];
    assert!(
        lg["Properties"]["RetentionInDays"].is_object(),
        "{id}: log retention"
    );
    assert!(
        props["Tracing"]["Enabled"].is_object(),
        "{id}: tracing follows a parameter"
    );

    let schedules: Vec<&Value> = props["Events"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, e)| e)
        .filter(|e| e["Type"] == "ScheduleV2")
        .collect();
    assert_eq!(
        schedules.len(),
        1,
        "{id}: one EventBridge Scheduler schedule"
    );
    let s = &schedules[0]["Properties"];
    assert!(
        ref_param(&t, &s["ScheduleExpression"]).is_some(),
        "schedule expression is a parameter"
    );
    assert!(
        s["State"]["Fn::If"].is_array(),
        "schedule has an enabled flag"
    );

    let alarms = of_type(&t, "AWS::CloudWatch::Alarm");
    let topics = of_type(&t, "AWS::SNS::Topic");
    let watched = alarms.values().any(|a| {
        let text = a.to_string();
        text.contains("ExecutionsFailed")
            && text.contains(&json!({ "Ref": id }).to_string())
            && as_list(&a["Properties"]["AlarmActions"])
                .iter()
                .any(|r| r["Ref"].as_str().is_some_and(|r| topics.contains_key(r)))
    });
    assert!(
        watched,
        "an alarm on the state machine's ExecutionsFailed notifies an SNS topic"
    );
    // Staleness: the metric report-outcome emits, missing data breaching,
    // within CloudWatch's 7-day evaluation range, notifying the topic.
    let stale = &alarms["RotationStalenessAlarm"]["Properties"];
    assert_eq!(stale["MetricName"], "DaysSinceLastRotation");
    assert_eq!(stale["TreatMissingData"], "breaching");
    assert_eq!(stale["Threshold"]["Ref"], "StaleAfterDays");
    let range = stale["Period"].as_u64().unwrap() * stale["EvaluationPeriods"].as_u64().unwrap();
    assert!(range <= 7 * 86_400, "evaluation range {range} s");
    let code = read(repo_root().join("lambdas/core/src/steps/report_outcome.rs"));
    let dashboard = of_type(&t, "AWS::CloudWatch::Dashboard")["Dashboard"]["Properties"]
        ["DashboardBody"]
        .to_string();
    for metric in [
        "DaysSinceLastRotation",
        "PasswordAgeDays",
        "Executions",
        "DurationSeconds",
        "StateTransitions",
    ] {
        assert!(
            code.contains(&format!("\"{metric}\"")),
            "report-outcome emits {metric}"
        );
        assert!(dashboard.contains(metric), "the dashboard shows {metric}");
    }
    let outputs = t["Outputs"].as_object().unwrap();
    assert_eq!(outputs["StateMachineArn"]["Value"], json!({ "Ref": id }));
    assert!(outputs["StateMachineConsoleUrl"]["Value"]["Fn::Sub"]
        .as_str()
        .is_some_and(|u| u.contains("console.aws.amazon.com/states")));
}

#[test]
fn source_reader_sees_through_comments_and_literals() {
    let src = r##"
        // fn commented() { a.client.ignored() }
        fn real(secrets: &dyn SecretStore, n: &[u8]) -> String {
            let s = "fn fake() { self.client.nope() }";
            let n = other.secrets.promote();
            let r = r#"}{"#;
            let c = '{';
            let q = '\'';
            secrets
                .get_stage(x)
                .await;
            helper(secrets);
            format!("{s}{r}{c}{q}")
        }
        fn helper<'a>(secrets: &'a dyn SecretStore) { secrets.promote(); }
    "##;
    let code = code_only(src);
    let funcs = functions(&code);
    let names: Vec<&str> = funcs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["real", "helper"]);
    assert_eq!(
        calls_on(&funcs[0].body, "secrets", false),
        BTreeSet::from(["get_stage".to_string()])
    );
    assert_eq!(
        port_params(&funcs[0].signature),
        [("secrets".to_string(), "SecretStore".to_string())]
    );
    let known = BTreeSet::from(["helper".to_string(), "real".to_string()]);
    assert_eq!(
        free_calls(&funcs[0].body, &known),
        BTreeSet::from(["helper".to_string()])
    );
    assert!(calls_on(&code, "client", true).is_empty());
}

/// The RotationSucceeded rule matches the event that `ExecutionInput::parse`
/// recognises (the same shape the state-machine tests send), for exactly the
/// two users' secrets, and starts this state machine with a role that may do
/// nothing else.
#[test]
fn secrets_managers_rotation_event_starts_the_workflow() {
    let t = template();
    let rules = of_type(&t, "AWS::Events::Rule");
    let (id, rule) = rules
        .iter()
        .find(|(_, r)| {
            r["Properties"]["EventPattern"]["detail"]["eventName"]
                == serde_json::json!(["RotationSucceeded"])
        })
        .expect("a rule on Secrets Manager's RotationSucceeded event");
    let props = &rule["Properties"];
    let pattern = &props["EventPattern"];
    assert_eq!(
        pattern["source"],
        serde_json::json!(["aws.secretsmanager"]),
        "{id}"
    );
    assert_eq!(
        pattern["detail-type"],
        serde_json::json!(["AWS Service Event via CloudTrail"]),
        "{id}"
    );
    let secrets: BTreeSet<String> = as_list(&pattern["detail"]["additionalEventData"]["SecretId"])
        .into_iter()
        .filter_map(|v| ref_param(&t, v).map(str::to_string))
        .collect();
    assert_eq!(
        secrets,
        BTreeSet::from(["BlueSecretArn".to_string(), "GreenSecretArn".to_string()]),
        "{id}: the rule must match exactly the two users' secrets"
    );
    // The pattern's event, fed to the parser, names the rotated secret.
    let event = serde_json::json!({
        "source": "aws.secretsmanager", "detail-type": "AWS Service Event via CloudTrail",
        "detail": {"eventSource": "secretsmanager.amazonaws.com", "eventName": "RotationSucceeded",
                   "additionalEventData": {"SecretId": "arn:aws:secretsmanager:r:1:secret:x-AbCdEf"}}
    });
    let parsed = pgflip_core::input::ExecutionInput::parse(&event).unwrap();
    assert_eq!(
        parsed.rotated_secret.as_deref(),
        Some("arn:aws:secretsmanager:r:1:secret:x-AbCdEf")
    );

    let target = &props["Targets"][0];
    assert_eq!(
        target["Arn"]["Ref"], "RotationStateMachine",
        "{id}: starts the rotation"
    );
    let role_id = target["RoleArn"]["Fn::GetAtt"][0]
        .as_str()
        .expect("a role of the template");
    let role = &resources(&t)[role_id];
    let statements = &role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"];
    assert_eq!(statements.as_array().map(Vec::len), Some(1), "{role_id}");
    assert_eq!(
        statements[0]["Action"], "states:StartExecution",
        "{role_id}"
    );
    assert_eq!(
        statements[0]["Resource"]["Ref"], "RotationStateMachine",
        "{role_id}"
    );
}

/// Per target choice (layout × password store), every call a function's
/// code can make is granted by a statement without a condition (or under a
/// registry feature's): one deployment's targets may each choose another
/// layout and store, so no grant may depend on the default target's choice.
#[test]
fn each_layout_and_store_grants_every_call_its_code_makes() {
    let t = template();
    let functions = of_type(&t, "AWS::Serverless::Function");
    let adapters = aws_adapters();
    let choices: [(&str, &str); 3] = [
        ("parameter", "SecretsManager"),
        ("parameter", "SsmPasswordStore"),
        ("alternating_secret", "SecretsManager"),
    ];
    let mut errors = vec![];
    for (layout, store) in choices {
        for l in lambdas() {
            let f = functions[l.logical_id.as_str()];
            let code = actions_in(&l, &adapters, Some(layout), Some(store));
            let granted: BTreeSet<String> = statements(&l.logical_id, &f["Properties"]["Policies"])
                .iter()
                .filter(|s| {
                    s.condition
                        .as_deref()
                        .is_none_or(|c| FEATURE_CONDITIONS.contains(&c))
                })
                .flat_map(|s| s.actions.clone())
                .collect();
            for missing in code.difference(&granted) {
                errors.push(format!(
                    "{layout} layout, {store}: {} may not call {missing}, which its code needs",
                    l.logical_id
                ));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
