// Runs the real statemachine/rotation.asl.json in aws-local-stepfunctions, every
// Task forwarded to the Lambda invoke API that `cargo lambda watch` serves.
//
//   node --require ./polyfill.cjs run.mjs [options]
//
// Options:
//   --definition PATH        ASL file (default: statemachine/rotation.asl.json)
//   --lambda-endpoint URL    cargo lambda watch (default: $PGFLIP_LAMBDA_ENDPOINT)
//   --input JSON             execution input (default: {})
//   --name NAME              execution name (default: local-<time>-<random>)
//   --scenario PATH          JSON test overrides, see below
//   --start-at STATE         start at this state (how a redrive restarts a failed state)
//   --state-input JSON       the input of --start-at's state (default: --input)
//   --history PATH           write every event (with state inputs and outputs) as JSON
//   --quiet                  no progress lines
//
// Progress goes to stderr; one JSON summary line goes to stdout. Exit status:
// 0 succeeded, 2 the execution failed, 1 the runner itself failed.
//
// Scenario file: {"waitMs": 0, "retryIntervalMs": 0, "tasks": {"<State>": [action, ...]}}
// Actions apply to that state's invocations in order, then calls go to the real Lambda:
//   {"throw": {"error": "DatabaseUnavailable", "cause": "…"}}  fail without calling the Lambda
//   {"merge": {...}}            call the real Lambda, then overwrite fields of its result
//   {"afterCommand": [argv...]} call the real Lambda, then run a command (a crash hook)
//   {"throwAfter": {"error": "…"}} call the real Lambda, then fail as if it had crashed
//   {"abortAfter": true}        call the real Lambda, then abort the execution (a crash
//                               after the side effect: the result is never recorded)
//   {"delayMs": N}              wait N ms, then call the real Lambda
//   "repeat": true on an action keeps applying it to every later call.
//
// Sweep (statemachine/sweep.asl.json, --definition): its
// states:startExecution.sync:2 Task runs the rotation as a child execution
// of this same runner (a separate node process, registered like any other),
// returns the child's output or fails with States.TaskFailed as Step
// Functions does. Scenario: "children": {"<target>": scenario} gives one
// target's child run a scenario of its own (waits inherit the sweep's).
// The sweep's summary lists them in "children" (target, name, status, error,
// startedMs, endedMs, and the child's transitions, invocations, abortedIn,
// durationMs: its execution alone, without its runner process's start).
//
// When AWS_ENDPOINT_URL is set (the local stack), the execution is also
// registered with moto's Step Functions API (StartExecution, StopExecution at
// the end) under the same name, so that `states:ListExecutions` (the
// concurrency guard in select-user) sees what runs locally. A redrive
// (--start-at with the name of an earlier execution) reuses that record.

import { appendFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawn, spawnSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StateMachine, ExecutionError } from 'aws-local-stepfunctions';

const here = dirname(fileURLToPath(import.meta.url));
const ACCOUNT = '123456789012';
const REGION = process.env.AWS_REGION || 'us-east-1';
const ROTATION_MACHINE = 'pgflip-rotation';
const ROTATION_DEFINITION = resolve(here, '../../statemachine/rotation.asl.json');
// statemachine/<name>.asl.json runs as the state machine pgflip-<name>.
let MACHINE = ROTATION_MACHINE;

function parseArgs(argv) {
  const args = { definition: resolve(here, '../../statemachine/rotation.asl.json'), input: '{}' };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i];
    if (!key.startsWith('--')) throw new Error(`unexpected argument ${key}`);
    const name = key.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (name === 'quiet') {
      args.quiet = true;
    } else {
      if (i + 1 >= argv.length) throw new Error(`${key} needs a value`);
      args[name] = argv[++i];
    }
  }
  args.lambdaEndpoint ??= process.env.PGFLIP_LAMBDA_ENDPOINT;
  if (!args.lambdaEndpoint) throw new Error('--lambda-endpoint or PGFLIP_LAMBDA_ENDPOINT is required');
  args.name ??= `local-${new Date().toISOString().replace(/[-:.TZ]/g, '')}-${Math.random().toString(16).slice(2, 8)}`;
  return args;
}

/// The ARNs the template would substitute, derived from each placeholder's name:
/// ${SelectUserFunctionArn} -> arn:aws:lambda:…:function:select-user
function substitute(text) {
  text = text.replace(/\$\{RotationStateMachineArn\}/g, `arn:aws:states:${REGION}:${ACCOUNT}:stateMachine:${ROTATION_MACHINE}`);
  return text.replace(/\$\{([A-Za-z0-9]+)FunctionArn\}/g, (_, logical) => {
    const kebab = logical.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();
    return `arn:aws:lambda:${REGION}:${ACCOUNT}:function:${kebab}`;
  });
}

/// Invokes a function on cargo lambda watch and turns a function error into a
/// thrown Error named by its errorType, as Step Functions does. cargo-lambda
/// wants the bare function name, and reports function errors as HTTP 5xx
/// without X-Amz-Function-Error, so both are handled here.
async function invoke(endpoint, functionArn, payload, counts) {
  const name = functionArn.split(':').pop();
  counts[name] = (counts[name] || 0) + 1;
  let response;
  try {
    response = await fetch(`${endpoint}/2015-03-31/functions/${name}/invocations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(payload),
    });
  } catch (e) {
    throw named('Lambda.ServiceException', `could not reach ${endpoint}: ${e.cause?.code || e.message}`);
  }
  const text = await response.text();
  let body;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const functionError = response.headers.get('x-amz-function-error');
  if (functionError || response.status >= 400) {
    if (body && typeof body.errorType === 'string') {
      throw named(body.errorType, body.errorMessage ?? '');
    }
    throw named('Lambda.ServiceException', `HTTP ${response.status} from ${name}: ${text.slice(0, 500)}`);
  }
  return body;
}

function named(name, message) {
  const e = new Error(message);
  e.name = name;
  return e;
}

/// Minimal client of moto's Step Functions API (AWS JSON 1.0). moto does not
/// check signatures; the Authorization header only names the service.
async function sfnCall(action, body) {
  const endpoint = process.env.AWS_ENDPOINT_URL;
  const response = await fetch(endpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-amz-json-1.0',
      'x-amz-target': `AWSStepFunctions.${action}`,
      authorization: `AWS4-HMAC-SHA256 Credential=${process.env.AWS_ACCESS_KEY_ID || 'testing'}/20260101/${REGION}/states/aws4_request, SignedHeaders=host, Signature=0`,
    },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const type = String(data.__type || data.code || response.status).split('#').pop();
    throw named(type, data.message || data.Message || `HTTP ${response.status}`);
  }
  return data;
}

/// Registers the execution with moto; returns its ARN (or null without a local stack).
async function register(definitionText, name, input) {
  if (!process.env.AWS_ENDPOINT_URL) return null;
  const machineArn = `arn:aws:states:${REGION}:${ACCOUNT}:stateMachine:${MACHINE}`;
  try {
    await sfnCall('CreateStateMachine', { name: MACHINE, definition: definitionText, roleArn: `arn:aws:iam::${ACCOUNT}:role/${MACHINE}` });
  } catch (e) {
    if (e.name !== 'StateMachineAlreadyExists') throw e;
  }
  try {
    const started = await sfnCall('StartExecution', { stateMachineArn: machineArn, name, input });
    return started.executionArn;
  } catch (e) {
    if (e.name !== 'ExecutionAlreadyExists') throw e;
    // A redrive of an earlier execution: same name, same ARN.
    return `arn:aws:states:${REGION}:${ACCOUNT}:execution:${MACHINE}:${name}`;
  }
}

async function unregister(executionArn) {
  if (!executionArn) return;
  await sfnCall('StopExecution', { executionArn }).catch(() => {});
}

/// The local stack's record of finished executions (moto's Step Functions
/// only knows them as stopped): one JSON line each in
/// $PGFLIP_STACK_DIR/executions.jsonl, read by `pgflip status` and
/// `pgflip history`. Names, states and errors only, as the history holds.
function journal(summary, started, input) {
  if (!process.env.PGFLIP_STACK_DIR) return;
  const record = {
    stateMachine: MACHINE,
    executionArn: summary.executionArn,
    name: summary.name,
    status: summary.status,
    startMs: started,
    stopMs: Date.now(),
    input,
    ...(summary.output !== undefined ? { output: JSON.stringify(summary.output) } : {}),
    ...(summary.error ? { error: summary.error, cause: summary.cause } : {}),
  };
  appendFileSync(`${process.env.PGFLIP_STACK_DIR}/executions.jsonl`, `${JSON.stringify(record)}\n`, { mode: 0o600 });
}

let currentExecution = null;
let aborted = null;

// The child executions' scenario files: in the local stack's directory when
// there is one (deleted with the stack), each removed when its child ends,
// and any still there when this runner exits (process.exit included).
const scenarioDir = process.env.PGFLIP_STACK_DIR || process.env.TMPDIR || tmpdir();
const scenarioFiles = new Set();
let scenarioSeq = 0;
process.on('exit', () => {
  for (const file of scenarioFiles) rmSync(file, { force: true });
});

/// Every state, those inside Map and Parallel states included.
function allStates(states) {
  const out = [];
  for (const [name, state] of Object.entries(states)) {
    out.push([name, state]);
    const nested = state.ItemProcessor ?? state.Iterator;
    if (nested) out.push(...allStates(nested.States));
    for (const branch of state.Branches ?? []) out.push(...allStates(branch.States));
  }
  return out;
}

/// Runs a command, resolving to {status, stdout, stderr}: asynchronous, so
/// children of a Map with MaxConcurrency > 1 would really overlap.
function runAsync(cmd, argv) {
  return new Promise((resolveRun, reject) => {
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (status) => resolveRun({ status, stdout, stderr }));
  });
}

/// Runs one rotation as a child execution (startExecution.sync:2).
async function startChild(args, scenario, request, counts) {
  const input = request.Input ?? {};
  const target = input.target ?? 'default';
  const childScenario = {
    waitMs: scenario.waitMs,
    retryIntervalMs: scenario.retryIntervalMs,
    ...(scenario.children?.[target] ?? {}),
  };
  const scenarioFile = resolve(scenarioDir, `pgflip-child-${process.pid}-${Date.now()}-${++scenarioSeq}.json`);
  // The name the Task gives (StartExecution's Name), else one of our own.
  const name = (request.Name ?? `${args.name}-${target}`).slice(0, 80);
  counts['startExecution'] = (counts['startExecution'] || 0) + 1;
  const startedMs = Date.now();
  let run;
  scenarioFiles.add(scenarioFile);
  try {
    writeFileSync(scenarioFile, JSON.stringify(childScenario), { mode: 0o600 });
    run = await runAsync(
      process.execPath,
      ['--require', resolve(here, 'polyfill.cjs'), resolve(here, 'run.mjs'), '--definition', ROTATION_DEFINITION,
        '--lambda-endpoint', args.lambdaEndpoint, '--name', name, '--input', JSON.stringify(input), '--scenario', scenarioFile],
    );
  } finally {
    rmSync(scenarioFile, { force: true });
    scenarioFiles.delete(scenarioFile);
  }
  if (!args.quiet) process.stderr.write(run.stderr.replace(/^/gm, `    [${target}] `));
  const line = run.stdout.trim().split('\n').pop();
  let summary;
  try {
    summary = JSON.parse(line);
  } catch {
    throw named('States.TaskFailed', `the child runner of ${target} printed no summary (status ${run.status})`);
  }
  (globalThis.children ??= []).push({
    target, name: summary.name, status: summary.status, error: summary.error, startedMs, endedMs: Date.now(),
    transitions: summary.transitions, invocations: summary.invocations, abortedIn: summary.abortedIn,
    durationMs: summary.durationMs,
  });
  if (summary.status !== 'SUCCEEDED') {
    throw named('States.TaskFailed', JSON.stringify({ ExecutionArn: summary.executionArn, Status: summary.status, Error: summary.error, Cause: summary.cause }));
  }
  return { ExecutionArn: summary.executionArn, Name: summary.name, Status: 'SUCCEEDED', Output: summary.output };
}

function buildHandlers(definition, args, scenario, counts) {
  const handlers = {};
  const taskStates = allStates(definition.States).filter(([, s]) => s.Type === 'Task');
  for (const [stateName, state] of taskStates) {
    if (state.Resource.startsWith('arn:aws:states:::states:startExecution')) {
      handlers[stateName] = async (input) => startChild(args, scenario, input, counts);
      continue;
    }
    const actions = [...(scenario.tasks?.[stateName] ?? [])];
    handlers[stateName] = async (input) => {
      const action = actions[0]?.repeat ? actions[0] : actions.shift();
      const real = () => invoke(args.lambdaEndpoint, state.Resource, input, counts);
      if (!action) return real();
      if (action.throw) throw named(action.throw.error, action.throw.cause ?? 'injected by the test scenario');
      if (action.delayMs) await new Promise((r) => setTimeout(r, action.delayMs));
      const result = await real();
      if (action.abortAfter) {
        aborted = stateName;
        currentExecution.abort();
        // Never resolves: the execution is gone, as after a crash.
        return new Promise(() => {});
      }
      if (action.merge) return { ...result, ...action.merge };
      if (action.afterCommand) {
        const [cmd, ...rest] = action.afterCommand;
        const run = spawnSync(cmd, rest, { stdio: ['ignore', 'ignore', 'inherit'] });
        if (run.status !== 0) throw new Error(`afterCommand failed with status ${run.status}`);
        return result;
      }
      if (action.throwAfter) throw named(action.throwAfter.error, action.throwAfter.cause ?? 'injected after the real step ran');
      return result;
    };
  }
  return handlers;
}

function forEveryState(definition, type, value) {
  return Object.fromEntries(
    allStates(definition.States)
      .filter(([, s]) => s.Type === type)
      .map(([name]) => [name, value]),
  );
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  MACHINE = `pgflip-${args.definition.split('/').pop().replace(/\.asl\.json$/, '')}`;
  const definitionText = substitute(readFileSync(args.definition, 'utf8'));
  const definition = JSON.parse(definitionText);
  if (args.startAt) {
    if (!definition.States[args.startAt]) throw new Error(`no state named ${args.startAt}`);
    definition.StartAt = args.startAt;
  }
  const scenario = args.scenario ? JSON.parse(readFileSync(args.scenario, 'utf8')) : {};
  const input = JSON.parse(args.stateInput ?? args.input);
  const counts = {};
  const overrides = { taskResourceLocalHandlers: buildHandlers(definition, args, scenario, counts) };
  if (scenario.waitMs !== undefined) overrides.waitTimeOverrides = forEveryState(definition, 'Wait', scenario.waitMs);
  if (scenario.retryIntervalMs !== undefined) {
    overrides.retryIntervalOverrides = forEveryState(definition, 'Task', scenario.retryIntervalMs);
  }
  // A redrive starts mid-machine, which leaves the real start unreachable:
  // the interpreter's validator refuses that, so skip it there (every normal
  // run validates the same definition).
  const validationOptions = args.startAt ? { noValidate: true } : { checkArn: true };
  const machine = new StateMachine(definition, { validationOptions });
  const registered = await register(definitionText, args.name, args.input);
  const executionArn = registered ?? `arn:aws:states:${REGION}:${ACCOUNT}:execution:${MACHINE}:${args.name}`;
  const started = Date.now();
  // Interrupted (Ctrl-C, a kill): the execution dies with this process, so
  // it is recorded as aborted, not left RUNNING where the concurrency guard
  // would see it for good. A redrive or the next run resumes its work.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(signal, () => {
      journal(
        { name: args.name, executionArn, status: 'ABORTED', error: 'Interrupted', cause: `the local runner got ${signal}` },
        started,
        args.input,
      );
      unregister(registered).finally(() => process.exit(130));
    });
  }
  const execution = machine.run(input, {
    noThrowOnAbort: true,
    overrides,
    context: {
      Execution: {
        Id: executionArn,
        Name: args.name,
        Input: JSON.parse(args.input),
        StartTime: new Date(started).toISOString(),
        RoleArn: `arn:aws:iam::${ACCOUNT}:role/${MACHINE}`,
      },
      StateMachine: { Id: `arn:aws:states:${REGION}:${ACCOUNT}:stateMachine:${MACHINE}`, Name: MACHINE },
    },
  });

  const events = [];
  const entered = [];
  const log = (line) => {
    if (!args.quiet) process.stderr.write(`${line}\n`);
  };
  const enteredAt = {};
  const consume = (async () => {
    for await (const event of execution.eventLogs) {
      events.push(event);
      const name = event.state?.name;
      const ms = () => `${event.timestamp - (enteredAt[name] ?? event.timestamp)} ms`;
      switch (event.type) {
        case 'StateEntered':
          entered.push(name);
          enteredAt[name] = event.timestamp;
          log(`  -> ${name}`);
          break;
        case 'StateExited':
          log(`  <- ${name} (${ms()})`);
          break;
        case 'StateRetried':
          log(`  !! ${name} retry #${event.retry.attempt} after ${events.at(-2)?.Error ?? 'an error'}`);
          break;
        case 'StateFailed':
          log(`  xx ${name} failed: ${event.Error} (${ms()})`);
          break;
        case 'StateCaught':
          log(`  >> ${name} caught, continuing at ${event.catch.catcher.Next}`);
          break;
        default:
          break;
      }
    }
  })();
  currentExecution = execution;

  let summary;
  try {
    const output = await execution.result;
    summary = aborted ? { status: 'ABORTED', abortedIn: aborted } : { status: 'SUCCEEDED', output };
  } catch (e) {
    if (!(e instanceof ExecutionError)) throw e;
    summary = { status: 'FAILED', error: e.name === 'ExecutionError' ? e.cause?.name ?? e.name : e.name, cause: e.message };
    const failed = events.findLast((ev) => ev.type === 'ExecutionFailed');
    if (failed) {
      summary.error = failed.Error;
      summary.cause = failed.Cause;
    }
  }
  await unregister(registered);
  await Promise.race([consume, new Promise((r) => setTimeout(r, 200))]);
  const failedEvent = events.findLast((ev) => ev.type === 'ExecutionFailed');
  if (failedEvent) {
    summary.error = failedEvent.Error;
    summary.cause = failedEvent.Cause;
  }
  summary = {
    name: args.name,
    executionArn,
    ...summary,
    transitions: entered.length,
    states: entered,
    invocations: counts,
    ...(globalThis.children ? { children: globalThis.children } : {}),
    durationMs: Date.now() - started,
  };
  if (args.history) writeFileSync(args.history, JSON.stringify(events, null, 1));
  journal(summary, started, args.input);
  log(`  == ${summary.status}${summary.error ? ` (${summary.error})` : ''} after ${summary.transitions} state transitions in ${summary.durationMs} ms`);
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  // Exit now: an aborted execution leaves the interpreter's task timeout
  // timer armed, which would keep Node alive for up to TimeoutSeconds.
  // (stdout and stderr are synchronous for files and pipes on Linux.)
  process.exit(summary.status === 'SUCCEEDED' ? 0 : 2);
}

main().catch((e) => {
  process.stderr.write(`sfn runner: ${e.stack || e}\n`);
  process.exitCode = 1;
});
