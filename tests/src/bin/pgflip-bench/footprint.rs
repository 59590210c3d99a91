//! Footprint of one Lambda: deployment size, cold-start (init) time and peak
//! RSS of one invocation, measured against a minimal Lambda Runtime API
//! emulator on 127.0.0.1.
//!
//! The emulator serves the runtime interface a `provided.al2023` bootstrap
//! (or a Python runtime loop) talks to: `GET …/invocation/next` hands out one
//! event, `POST …/invocation/<id>/response` (or `/error`) records the result.
//! Init time is the time from spawning the process to its first `/next`
//! request; peak RSS is `VmHWM` from `/proc/<pid>/status`, read when the
//! process asks for its second event (the invocation is over, the process is
//! still alive). The process is then killed by its pid.
//!
//! [`command`] measures the six release bootstraps and the Python/boto3
//! equivalents in `scripts/bench-py` this way, one real invocation each.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgflip_tests::{repo_root, RunOptions, Stack, Target};
use serde_json::{json, Value};

use crate::{percentile, say, usage, Args};

/// One measured cold start and invocation.
#[derive(Debug, Clone)]
pub struct Sample {
    pub init_ms: f64,
    pub invoke_ms: f64,
    pub rss_kb: u64,
    /// The function's response, or `Err(errorType: message)`.
    pub result: Result<Value, String>,
}

#[derive(Default)]
struct State {
    event: Vec<u8>,
    function_arn: String,
    nexts: u32,
    first_next: Option<Instant>,
    event_sent: Option<Instant>,
    responded: Option<Instant>,
    result: Option<Result<Value, String>>,
    /// The process asked for a second event, or reported an init error.
    done: bool,
    /// Tells parked connection threads to go away.
    shutdown: bool,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Ok(None);
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(Some(Request { method, path, body }))
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

fn serve_connection(stream: TcpStream, shared: Shared) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut reader = BufReader::new(stream);
    while let Ok(Some(request)) = read_request(&mut reader) {
        let (lock, cvar) = &*shared;
        let path = request.path.as_str();
        if request.method == "GET" && path.ends_with("/runtime/invocation/next") {
            let mut state = lock.lock().unwrap();
            state.nexts += 1;
            if state.nexts == 1 {
                state.first_next = Some(Instant::now());
                let deadline = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_millis()
                    + 60_000;
                let headers = [
                    ("Content-Type", "application/json".to_string()),
                    ("Lambda-Runtime-Aws-Request-Id", "footprint-1".to_string()),
                    ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
                    (
                        "Lambda-Runtime-Invoked-Function-Arn",
                        state.function_arn.clone(),
                    ),
                    (
                        "Lambda-Runtime-Trace-Id",
                        "Root=1-00000000-000000000000000000000000;Sampled=0".to_string(),
                    ),
                ];
                let event = state.event.clone();
                state.event_sent = Some(Instant::now());
                drop(state);
                respond(&mut writer, "200 OK", &headers, &event);
            } else {
                // The invocation is over: hold this request until the process is killed.
                state.done = true;
                cvar.notify_all();
                while !state.shutdown {
                    state = cvar.wait(state).unwrap();
                }
                return;
            }
        } else if request.method == "POST" && path.ends_with("/response") {
            let mut state = lock.lock().unwrap();
            state.responded = Some(Instant::now());
            state.result = Some(
                serde_json::from_slice(&request.body)
                    .map_err(|e| format!("unreadable response: {e}")),
            );
            drop(state);
            respond(&mut writer, "202 Accepted", &[], b"{}");
        } else if request.method == "POST" && path.ends_with("/error") {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            let error = format!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("Unknown"),
                body["errorMessage"].as_str().unwrap_or_default()
            );
            let mut state = lock.lock().unwrap();
            if path.contains("/init/error") {
                state.done = true;
            } else {
                state.responded = Some(Instant::now());
            }
            state.result = Some(Err(error));
            cvar.notify_all();
            drop(state);
            respond(&mut writer, "202 Accepted", &[], b"{}");
        } else {
            respond(&mut writer, "404 Not Found", &[], b"{}");
        }
    }
}

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
}

/// Runs `command` as a Lambda runtime process for one invocation of `event`.
/// The command gets `AWS_LAMBDA_RUNTIME_API` and the standard runtime
/// variables added to whatever environment the caller set; its output goes
/// to `log`.
pub fn measure(
    mut command: Command,
    function_name: &str,
    event: &Value,
    log: &std::path::Path,
) -> Result<Sample, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let shared: Shared = Arc::new((
        Mutex::new(State {
            event: serde_json::to_vec(event).unwrap(),
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function_name}"),
            ..State::default()
        }),
        Condvar::new(),
    ));
    let acceptor = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                if shared.0.lock().unwrap().shutdown {
                    break;
                }
                let shared = shared.clone();
                std::thread::spawn(move || serve_connection(stream, shared));
            }
        })
    };
    let log_file = std::fs::File::create(log).map_err(|e| e.to_string())?;
    command
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", function_name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function_name}"),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "footprint")
        .env("_HANDLER", "bootstrap")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file);
    let spawned = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("could not start {function_name}: {e}"))?;
    let pid = child.id();

    let (lock, cvar) = &*shared;
    let limit = Duration::from_secs(60);
    let mut state = lock.lock().unwrap();
    let mut exited = None;
    while !state.done && spawned.elapsed() < limit {
        state = cvar
            .wait_timeout(state, Duration::from_millis(50))
            .unwrap()
            .0;
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            break;
        }
    }
    let rss_kb = vm_hwm_kb(pid).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    state.shutdown = true;
    cvar.notify_all();
    let sample = (|| {
        let first_next = state.first_next.ok_or_else(|| match exited {
            Some(status) => format!("{function_name} exited ({status}) before asking for an event"),
            None => format!("{function_name} never asked for an event"),
        })?;
        let result = state.result.clone().ok_or_else(|| match exited {
            Some(status) => format!("{function_name} exited ({status}) during the invocation"),
            None => format!("{function_name} did not answer within {limit:?}"),
        })?;
        if rss_kb == 0 {
            return Err(format!("{function_name}: could not read VmHWM"));
        }
        Ok(Sample {
            init_ms: first_next.duration_since(spawned).as_secs_f64() * 1000.0,
            invoke_ms: state
                .responded
                .zip(state.event_sent)
                .map(|(r, s)| r.duration_since(s).as_secs_f64() * 1000.0)
                .unwrap_or(0.0),
            rss_kb,
            result,
        })
    })();
    drop(state);
    // Wake the acceptor so it sees the shutdown flag.
    let _ = TcpStream::connect(address);
    let _ = acceptor.join();
    sample
}

// ---------------------------------------------------------------- the command

const LAMBDAS: [&str; 6] = [
    "select-user",
    "generate-and-set-password",
    "verify-login",
    "flip-parameter",
    "redeploy-ecs",
    "wait-for-stable",
];

fn zipped_size(file: &Path, name_in_zip: &str, work: &Path) -> Result<u64, String> {
    let dir = work.join(format!(
        "zip-{name_in_zip}-{}",
        file.display().to_string().len()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::copy(file, dir.join(name_in_zip)).map_err(|e| e.to_string())?;
    let zip = dir.join("function.zip");
    let status = std::process::Command::new("zip")
        .current_dir(&dir)
        .args(["-q", "-9", "-X"])
        .arg(&zip)
        .arg(name_in_zip)
        .status()
        .map_err(|e| format!("zip: {e}"))?;
    if !status.success() {
        return Err(format!("zip failed with {status}"));
    }
    let size = std::fs::metadata(&zip).map_err(|e| e.to_string())?.len();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(size)
}

fn lambda_env() -> Vec<(String, String)> {
    let dir = std::env::var("PGFLIP_STACK_DIR").expect("PGFLIP_STACK_DIR (the local stack)");
    let text = std::fs::read_to_string(Path::new(&dir).join("lambda.env"))
        .expect("the stack's lambda.env");
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The SDKs and drivers a Lambda's Cargo.toml links.
fn linked(lambda: &str) -> String {
    let manifest =
        std::fs::read_to_string(repo_root().join("lambdas").join(lambda).join("Cargo.toml"))
            .unwrap_or_default();
    let mut parts: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("aws-sdk-"))
        .map(|l| {
            l.split(['.', ' ', '='])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    if manifest
        .lines()
        .any(|l| l.contains("pgflip-core") && l.contains("\"postgres\""))
    {
        parts.push("postgres".into());
    }
    parts.join(" + ")
}

struct Measured {
    name: String,
    runtime: String,
    links: String,
    size: u64,
    zipped: u64,
    samples: Vec<Sample>,
    note: String,
}

fn summarize(m: &Measured) -> (f64, f64, f64, String) {
    let init: Vec<f64> = m.samples.iter().map(|s| s.init_ms).collect();
    let invoke: Vec<f64> = m.samples.iter().map(|s| s.invoke_ms).collect();
    let rss = m.samples.iter().map(|s| s.rss_kb).max().unwrap_or(0) as f64 / 1024.0;
    let outcome = match m.samples.last().map(|s| &s.result) {
        Some(Ok(_)) => "ok".to_string(),
        Some(Err(e)) => e.split(':').next().unwrap_or_default().to_string(),
        None => "-".into(),
    };
    (
        percentile(&init, 50.0),
        percentile(&invoke, 50.0),
        rss,
        outcome,
    )
}

pub async fn command(args: &Args) -> bool {
    let bin_dir = PathBuf::from(
        args.text("bin-dir")
            .unwrap_or_else(|| usage("--bin-dir is required")),
    );
    let python = args
        .text("python")
        .unwrap_or_else(|| usage("--python is required"))
        .to_string();
    let py_dir = repo_root().join("scripts/bench-py");
    let samples = args.number("samples", 5).clamp(1, 50) as usize;
    let work = std::env::temp_dir().join(format!("pgflip-footprint-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("a work directory");

    let stack = Stack::from_env().await;
    let target = Target::local();
    let env = lambda_env();
    // A scratch parameter, so that every flip sample does GetParameter + PutParameter.
    let scratch = "/pgflip-bench/footprint/active-user";
    stack
        .ssm
        .put_parameter()
        .name(scratch)
        .value("blue")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .expect("create the scratch parameter");

    let command_for = |program: &Path, extra: &[&str]| {
        let mut c = std::process::Command::new(program);
        c.args(extra).env_clear();
        for (k, v) in &env {
            c.env(k, v);
        }
        // What the Lambda service sets besides the function's own variables.
        let region = env
            .iter()
            .find(|(k, _)| k == "AWS_REGION")
            .map_or("us-east-1", |(_, v)| v.as_str());
        c.env("PATH", "/usr/bin:/bin")
            .env("AWS_DEFAULT_REGION", region)
            .env("TZ", ":UTC")
            .env("LANG", "C.UTF-8");
        c
    };
    let mut rust: Vec<Measured> = LAMBDAS
        .iter()
        .map(|name| {
            let file = bin_dir.join(name);
            let size = std::fs::metadata(&file)
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: {e} (build it first: scripts/bench --footprint)",
                        file.display()
                    )
                })
                .len();
            Measured {
                name: name.to_string(),
                runtime: "Rust, provided.al2023".into(),
                links: linked(name),
                size,
                zipped: zipped_size(&file, "bootstrap", &work).expect("zip the bootstrap"),
                samples: vec![],
                note: String::new(),
            }
        })
        .collect();
    let py_size = |files: &[&str]| -> u64 {
        let dir = work.join("py");
        let _ = std::fs::create_dir_all(&dir);
        files
            .iter()
            .map(|f| zipped_size(&py_dir.join(f), f, &dir).unwrap_or(0))
            .sum()
    };
    let python_version = std::process::Command::new(&python)
        .args(["-c", "import sys, boto3; print(f'Python {sys.version_info.major}.{sys.version_info.minor} + boto3 {boto3.__version__}')"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "Python".into());
    let mut py: Vec<Measured> = ["flip-parameter", "wait-for-stable"]
        .iter()
        .map(|name| Measured {
            name: name.to_string(),
            runtime: python_version.clone(),
            links: if *name == "flip-parameter" {
                "boto3 (ssm)".into()
            } else {
                "boto3 (ecs)".into()
            },
            size: 0,
            zipped: py_size(&[&format!("{}.py", name.replace('-', "_")), "bootstrap.py"]),
            samples: vec![],
            note: String::new(),
        })
        .collect();

    // On a fresh stack (--footprint-only) nothing has seeded the target yet.
    let seeded = stack
        .ssm
        .get_parameter()
        .name(&target.parameter_name)
        .send()
        .await
        .is_ok();
    if !seeded {
        stack.seed(&target).await;
    }

    // select-user's concurrency guard lists the state machine's executions:
    // a dry run registers the state machine with the local Step Functions API.
    let dry = stack.run(&RunOptions {
        input: Some(json!({"dryRun": true, "reason": "footprint set-up"})),
        name: Some(format!("footprint-setup-{}", std::process::id())),
        ..RunOptions::default()
    });
    if dry.status != "SUCCEEDED" {
        say(format!(
            "  (the set-up dry run ended {}: {:?})",
            dry.status, dry.error
        ));
    }
    say(format!(
        "== footprint: {samples} cold starts of each function (+1 untimed), each one real invocation against the local stack"
    ));
    let log = |name: &str| work.join(format!("{name}.log"));
    let mut failures = vec![];
    for s in 0..=samples {
        let timed = s > 0;
        let execution_name = format!("footprint-{}-{s}", std::process::id());
        let mut run =
            |m: &mut Measured, command: std::process::Command, event: &Value| -> Option<Value> {
                match measure(command, &m.name, event, &log(&m.name)) {
                    Ok(sample) => {
                        let out = sample.result.clone().ok();
                        if let Err(e) = &sample.result {
                            if m.note.is_empty() {
                                m.note = e.clone();
                            }
                        }
                        if timed {
                            m.samples.push(sample);
                        }
                        out
                    }
                    Err(e) => {
                        failures.push(e);
                        None
                    }
                }
            };
        let bin = |name: &str| bin_dir.join(name);
        // select-user: a real preflight
        let select = json!({
            "input": {"reason": "footprint"},
            "executionId": format!("arn:aws:states:us-east-1:123456789012:execution:pgflip-rotation:{execution_name}"),
            "executionName": execution_name,
        });
        let plan = run(&mut rust[0], command_for(&bin("select-user"), &[]), &select);
        // generate-and-set-password and verify-login: rotate and promote the inactive user
        let pending = plan.as_ref().and_then(|p| {
            run(
                &mut rust[1],
                command_for(&bin("generate-and-set-password"), &[]),
                p,
            )
        });
        if let (Some(plan), Some(pending)) = (&plan, &pending) {
            run(
                &mut rust[2],
                command_for(&bin("verify-login"), &[]),
                &json!({"plan": plan, "pending": pending}),
            );
        }
        // flip-parameter: Rust and Python each flip the scratch parameter once
        // Rust flips it to green, Python back to blue: both do GetParameter + PutParameter.
        run(
            &mut rust[3],
            command_for(&bin("flip-parameter"), &[]),
            &json!({"parameterName": scratch, "users": {"blue": "blue", "green": "green"}, "to": "green"}),
        );
        let py_bootstrap = py_dir.join("bootstrap.py");
        let python_path = PathBuf::from(&python);
        let py_cmd = |module: &str| {
            let mut c = command_for(&python_path, &[py_bootstrap.to_str().unwrap(), module]);
            c.env("PYTHONDONTWRITEBYTECODE", "1");
            c
        };
        run(
            &mut py[0],
            py_cmd("flip_parameter"),
            &json!({"parameterName": scratch, "users": {"blue": "blue", "green": "green"}, "to": "blue"}),
        );
        // redeploy-ecs and wait-for-stable: the seeded services
        let redeploy = json!({
            "cluster": target.cluster, "services": target.services,
            "stablePollSeconds": 0, "stableTimeoutSeconds": 60, "alert": null,
        });
        let rollout = run(
            &mut rust[4],
            command_for(&bin("redeploy-ecs"), &[]),
            &redeploy,
        );
        if let Some(rollout) = rollout {
            run(
                &mut rust[5],
                command_for(&bin("wait-for-stable"), &[]),
                &rollout,
            );
            run(&mut py[1], py_cmd("wait_for_stable"), &rollout);
        }
    }
    let invariant = stack.invariant(&target).await;

    let boto3_zipped = std::process::Command::new(&python)
        .args([
            "-c",
            "import boto3, os; print(os.path.dirname(os.path.dirname(boto3.__file__)))",
        ])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .and_then(|site| {
            let zip = work.join("boto3.zip");
            let present: Vec<&str> = [
                "boto3",
                "botocore",
                "s3transfer",
                "jmespath",
                "dateutil",
                "urllib3",
                "six.py",
            ]
            .into_iter()
            .filter(|p| site.join(p).exists())
            .collect();
            let status = std::process::Command::new("zip")
                .current_dir(&site)
                .args(["-q", "-r", "-9", "-X"])
                .arg(&zip)
                .args(&present)
                .args(["-x", "*__pycache__*"])
                .status()
                .ok()?;
            status
                .success()
                .then(|| std::fs::metadata(&zip).ok().map(|m| m.len()))
                .flatten()
        });

    let mb = |b: u64| b as f64 / 1_000_000.0;
    println!();
    println!("### Footprint (release build, x86_64; median of {samples} cold starts, peak RSS = max VmHWM)");
    println!();
    println!("| function | runtime | links | binary (MB) | zipped (MB) | init (ms) | invoke (ms) | peak RSS (MB) | invocation | targets (≤ 4 MB, ≤ 30 ms, ≤ 15 MB) |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---|---|");
    let mut all_met = true;
    for m in rust.iter() {
        let (init, invoke, rss, outcome) = summarize(m);
        let met = mb(m.zipped) <= 4.0 && init <= 30.0 && rss <= 15.0;
        all_met &= met;
        println!(
            "| {} | {} | {} | {:.1} | {:.2} | {:.1} | {:.0} | {:.1} | {} | {} |",
            m.name,
            m.runtime,
            m.links,
            mb(m.size),
            mb(m.zipped),
            init,
            invoke,
            rss,
            outcome,
            if met { "met" } else { "missed" }
        );
    }
    for m in py.iter() {
        let (init, invoke, rss, outcome) = summarize(m);
        println!(
            "| {} (Python) | {} | {} | – | {:.3} (+ {} boto3 if bundled) | {:.1} | {:.0} | {:.1} | {} | – |",
            m.name,
            m.runtime,
            m.links,
            mb(m.zipped),
            boto3_zipped.map_or("?".to_string(), |b| format!("{:.1} MB", mb(b))),
            init,
            invoke,
            rss,
            outcome
        );
    }
    println!();
    println!("Init = process start to its first GET /runtime/invocation/next on a local Runtime API emulator; each sample is a real invocation against the local stack (select-user runs the preflight, generate-and-set-password and verify-login rotate and promote the inactive user, redeploy-ecs and wait-for-stable act on the seeded services, the flips act on a scratch parameter). The Python rows run the same calls under a minimal runtime loop (scripts/bench-py), which starts faster than AWS's managed Python runtime; boto3 comes with that runtime, so its zip holds only the handler.");
    println!("Built natively for x86_64: cross-compiling to arm64 (Graviton, as deployed) needs zig (cargo lambda build --arm64), which this machine cannot fetch; arm64 binaries are typically of similar size.");
    for m in rust.iter().chain(py.iter()) {
        if !m.note.is_empty() {
            println!("- {} reported {}", m.name, m.note);
        }
    }
    for f in &failures {
        println!("FAIL: {f}");
    }
    if let Err(e) = &invariant {
        println!("FAIL: invariant broken after the footprint runs: {e}");
    }
    let _ = std::fs::remove_dir_all(&work);
    if !all_met {
        println!("(one or more footprint targets missed: see the table)");
    }
    failures.is_empty() && invariant.is_ok() && rust.iter().all(|m| m.samples.len() == samples)
}
