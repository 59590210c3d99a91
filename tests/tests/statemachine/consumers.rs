//! Consumers found, not listed by hand (issue 16): services and tasks whose
//! task definitions take the target's credentials, on the real state
//! machine, Lambdas, moto's ECS and PostgreSQL. Each test has a cluster of
//! its own, so the consumers it creates are seen by no other test.

use super::*;

/// A target of the targets document with a cluster of its own, seeded; its
/// configured services are `listed`, and every service in `consumers` takes
/// the credentials (created if it is not listed).
async fn consumer_target(stack: &Stack, tag: &str, listed: &[&str], consumers: &[&str]) -> Target {
    let mut t = Target::unique(tag);
    t.name = Some(tag.replace('_', "-"));
    t.services = listed.iter().map(|s| s.to_string()).collect();
    stack.seed(&t).await;
    for service in consumers {
        stack.take_credentials(&t, service).await;
    }
    stack.register_target(&t).await;
    t
}

/// `t`'s input with more fields.
fn input(t: &Target, more: Value) -> Value {
    let mut i = t.input();
    for (k, v) in more.as_object().unwrap() {
        i[k] = v.clone();
    }
    i
}

/// The PRIMARY deployment of each of `services`.
async fn deployments(stack: &Stack, t: &Target, services: &[&str]) -> Vec<(String, String)> {
    let mut all = t.clone();
    all.services = services.iter().map(|s| s.to_string()).collect();
    stack.primary_deployments(&all).await
}

/// After a partial run flipped to green and left `behind` on blue: the same
/// partial run again is refused (`InactiveUserInUse`, naming `behind`) at
/// SelectUser, changes nothing, and blue's password still logs in.
async fn the_next_partial_run_is_refused(stack: &Stack, t: &Target, partial: Value, behind: &str) {
    let held = stack.password_at(&t.blue_secret, AWSCURRENT).await;
    let snapshot = stack.snapshot(t).await;
    let e = run_quick(stack, partial, json!({}), RunOptions::default());
    assert_eq!(
        e.error.as_deref(),
        Some("InactiveUserInUse"),
        "{:?}",
        e.cause
    );
    assert!(e.states.iter().all(|s| s == "SelectUser"), "{:?}", e.states);
    let cause = e.cause.clone().unwrap_or_default();
    assert!(cause.contains(&format!("service {behind}")), "{cause}");
    assert_eq!(stack.snapshot(t).await, snapshot, "something changed");
    stack
        .login_at(t, "blue", &held, stack.port_of(t))
        .await
        .expect("the tasks left behind still log in as blue");
}

/// Failing before the change: two services take the active user's
/// credentials, one is configured; two rotations in a row succeeded and the
/// other one's tasks held the password the second rotation changed. Now the
/// first rotation stops before anything changes (`UnlistedConsumer`), and
/// `services: auto` redeploys both, rotation after rotation.
#[tokio::test]
async fn a_consumer_missing_from_the_services_stops_the_rotation_and_auto_redeploys_it() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::from_env().await;
    let t = consumer_target(&stack, "consumers_unlisted", &["web"], &["web", "worker"]).await;
    let before = stack.snapshot(&t).await;
    let both = deployments(&stack, &t, &["web", "worker"]).await;

    let e = run_quick(&stack, t.input(), json!({}), RunOptions::default());
    assert_eq!(
        e.error.as_deref(),
        Some("UnlistedConsumer"),
        "{:?}",
        e.cause
    );
    assert_eq!(e.states, ["SelectUser"]);
    let cause = e.cause.clone().unwrap_or_default();
    assert!(
        cause.contains("worker") && cause.contains("auto"),
        "{cause}"
    );
    assert_eq!(stack.snapshot(&t).await, before, "something changed");
    assert_eq!(deployments(&stack, &t, &["web", "worker"]).await, both);

    let mut seen = both;
    for (round, active) in [(1, "green"), (2, "blue")] {
        let e = run_quick(
            &stack,
            input(&t, json!({"services": "auto"})),
            json!({}),
            RunOptions::default(),
        );
        assert_eq!(
            e.status, "SUCCEEDED",
            "round {round}: {:?}: {:?}",
            e.error, e.cause
        );
        assert_eq!(e.output["mode"], "rotate", "round {round}");
        assert_eq!(stack.invariant(&t).await.as_deref(), Ok(active));
        // Both were redeployed after the flip: no task keeps the old user.
        let now = deployments(&stack, &t, &["web", "worker"]).await;
        for ((service, id), (_, old)) in now.iter().zip(&seen) {
            assert_ne!(id, old, "round {round}: {service} was not redeployed");
        }
        seen = now;
    }
}

/// Failing before the change: a run with `{"services": ["web"]}` left
/// `worker` on the old user, and a second such run rotated that user's
/// password while worker's tasks still held it (only an open session would
/// have stopped it). Now the second run is refused (`InactiveUserInUse`,
/// naming worker), decided over every consumer and not only the run's
/// services; a run that includes worker finishes the earlier rollout.
#[tokio::test]
async fn a_partial_run_leaves_a_consumer_behind_and_its_users_next_rotation_is_refused() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::from_env().await;
    let t = consumer_target(
        &stack,
        "consumers_partial",
        &["web", "worker"],
        &["web", "worker"],
    )
    .await;
    let partial = input(
        &t,
        json!({"services": ["web"], "unlistedConsumers": "warn"}),
    );

    let before = deployments(&stack, &t, &["web", "worker"]).await;
    let e = run_quick(&stack, partial.clone(), json!({}), RunOptions::default());
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(stack.invariant(&t).await.as_deref(), Ok("green"));
    let after = deployments(&stack, &t, &["web", "worker"]).await;
    assert_ne!(after[0], before[0], "web redeployed");
    assert_eq!(after[1], before[1], "worker left on blue");

    // worker's tasks hold blue's password: blue must not be rotated.
    the_next_partial_run_is_refused(&stack, &t, partial, "worker").await;

    // A run over the configured services (worker included) finishes the
    // earlier rollout first, then the next one rotates blue.
    let e = run_quick(&stack, t.input(), json!({}), RunOptions::default());
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(e.output["mode"], "redeploy");
    assert_ne!(deployments(&stack, &t, &["worker"]).await[0], after[1]);
    let e = run_quick(&stack, t.input(), json!({}), RunOptions::default());
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(e.output["mode"], "rotate");
    assert_eq!(stack.invariant(&t).await.as_deref(), Ok("blue"));
}

/// Seed 11, scenario 410 of the chaos soak, as a plain test: the configured
/// services' task definitions take no credentials (the application reads
/// the parameter and the secret itself), so discovery finds no consumer.
/// A run limited to worker flipped; a second run limited to worker rotated
/// the user web's tasks still held, and they failed to log in. Now the
/// second is refused (`InactiveUserInUse`, naming web) and changes nothing.
#[tokio::test]
async fn a_partial_run_leaves_a_configured_service_behind_and_its_users_next_rotation_is_refused() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::from_env().await;
    let t = consumer_target(&stack, "consumers_declared", &["web", "worker"], &[]).await;
    let partial = input(&t, json!({"services": ["worker"]}));

    let e = run_quick(&stack, partial.clone(), json!({}), RunOptions::default());
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(stack.invariant(&t).await.as_deref(), Ok("green"));

    // web's tasks hold blue's password: blue must not be rotated.
    the_next_partial_run_is_refused(&stack, &t, partial, "web").await;

    // A run over the configured services finishes the earlier rollout.
    let e = run_quick(&stack, t.input(), json!({}), RunOptions::default());
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(e.output["mode"], "redeploy");
}

/// A task no service started (a job run with `RunTask`) that takes the
/// credentials: moto's tasks carry no `createdAt`, so it may hold either
/// user and the rotation waits for it (`InactiveUserInUse`, naming it);
/// once it has stopped, the rotation runs. Its `services: auto` finds only
/// the service: no redeploy replaces a standalone task.
#[tokio::test]
async fn a_standalone_task_that_takes_the_credentials_blocks_until_it_stops() {
    let _serial = SERIAL.lock().await;
    let stack = Stack::from_env().await;
    let t = consumer_target(&stack, "consumers_task", &["web"], &["web"]).await;
    let family = stack.register_consumer(&t, "nightly").await;
    let task = stack
        .ecs
        .run_task()
        .cluster(&t.cluster)
        .task_definition(&family)
        .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
        .send()
        .await
        .expect("run the job")
        .tasks
        .unwrap_or_default()
        .into_iter()
        .next()
        .and_then(|task| task.task_arn)
        .expect("a task");
    let before = stack.snapshot(&t).await;

    let e = run_quick(
        &stack,
        input(&t, json!({"services": "auto"})),
        json!({}),
        RunOptions::default(),
    );
    assert_eq!(
        e.error.as_deref(),
        Some("InactiveUserInUse"),
        "{:?}",
        e.cause
    );
    let cause = e.cause.clone().unwrap_or_default();
    assert!(cause.contains(&task), "{cause}");
    assert_eq!(stack.snapshot(&t).await, before, "something changed");

    stack
        .ecs
        .stop_task()
        .cluster(&t.cluster)
        .task(&task)
        .send()
        .await
        .expect("stop the job");
    let e = run_quick(
        &stack,
        input(&t, json!({"services": "auto"})),
        json!({}),
        RunOptions::default(),
    );
    assert_eq!(e.status, "SUCCEEDED", "{:?}: {:?}", e.error, e.cause);
    assert_eq!(stack.invariant(&t).await.as_deref(), Ok("green"));
}
