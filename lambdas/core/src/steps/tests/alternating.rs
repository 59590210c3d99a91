//! The alternating-secret layout on the fakes: one secret whose AWSCURRENT
//! names the active user, the same steps as the parameter layout.

use serde_json::json;

use super::*;

const SECRET: &str = "app/db/alternating";
const OBSERVED: &str = "/app/db/active-user";
const ADMIN_SECRET: &str = "app/db/master";

fn alternating_json(user: &str, password: &str) -> String {
    json!({"engine": "postgres", "host": "127.0.0.1", "port": 5432, "dbname": "app",
           "username": user, "password": password, "masterarn": ADMIN_SECRET})
    .to_string()
}

/// AWS's alternating users after one rotation: AWSCURRENT names blue,
/// AWSPREVIOUS green; the optional parameter names blue too.
fn alternating_world() -> World {
    let mut w = world();
    w.config.layout = PointerLayout::AlternatingSecret {
        secret_id: SECRET.into(),
        active_user_parameter: Some(OBSERVED.into()),
    };
    w.config.parameter_name = OBSERVED.into();
    w.config.blue_secret_id = SECRET.into();
    w.config.green_secret_id = SECRET.into();
    w.secrets.add_staged(
        SECRET,
        "v-green-1",
        &alternating_json("green", "green-pass-1"),
        &["AWSPREVIOUS"],
    );
    w.secrets
        .add(SECRET, "v-blue-1", &alternating_json("blue", "blue-pass-1"));
    made_long_ago(&w);
    seen_long_ago(&w);
    w
}

/// pgflip recorded long ago that AWSCURRENT names blue (as its first run
/// does, before redeploying): the services deployed since hold blue.
fn seen_long_ago(w: &World) {
    w.secrets.flips.lock().unwrap().insert(
        SECRET.into(),
        FlipRecord {
            at_ms: 1,
            version_id: "v-blue-1".into(),
        },
    );
}

/// The secret's versions predate the services' deployments (adopted long
/// ago, the services deployed since).
fn made_long_ago(w: &World) {
    for versions in w.secrets.secrets.lock().unwrap().values_mut() {
        for v in versions.iter_mut() {
            v.created_ms = 1;
        }
    }
}

impl World {
    async fn flip_alternating(
        &self,
        to: &str,
        version_id: Option<&str>,
    ) -> Result<Flipped, RotationError> {
        flip_parameter(
            &FlipRequest {
                parameter_name: SECRET.into(),
                users: self.config.users(),
                to: to.into(),
                pointer: self.config.layout.clone(),
                version_id: version_id.map(str::to_string),
            },
            &self.parameters,
            &self.secrets,
        )
        .await
    }

    /// The layout's invariant: the user AWSCURRENT names logs in with
    /// AWSCURRENT's password.
    fn alternating_invariant_holds(&self) -> bool {
        self.logs_in_at(AWSCURRENT)
    }

    /// The user a stage's version names logs in with its password (after
    /// a flip or a rollback, AWSPREVIOUS too: old tasks hold it).
    fn logs_in_at(&self, stage: &str) -> bool {
        match (
            self.secrets.user_at(SECRET, stage),
            self.secrets.password_at(SECRET, stage),
        ) {
            (Some(user), Some(password)) => self.database.logs_in(&user, &password),
            _ => false,
        }
    }

    async fn rotate_alternating(&self) -> Plan {
        let plan = self.select(json!({})).await.unwrap();
        let pending = self.generate(&plan).await.unwrap();
        let verified = self.verify(&plan, &pending).await.unwrap();
        self.flip_alternating(&plan.target_user, Some(&verified.version_id))
            .await
            .unwrap();
        plan
    }
}

#[tokio::test]
async fn a_rotation_stages_verifies_and_flips_by_promoting() {
    let w = alternating_world();
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(
        (
            plan.previous_user.as_str(),
            plan.target_user.as_str(),
            plan.mode
        ),
        ("blue", "green", Mode::Rotate)
    );
    assert_eq!(plan.parameter_name, SECRET);
    assert_eq!(plan.target_secret_id, SECRET);

    let pending = w.generate(&plan).await.unwrap();
    assert_eq!(
        w.secrets.user_at(SECRET, AWSPENDING).as_deref(),
        Some("green")
    );
    assert!(w.alternating_invariant_holds());
    // Green changed its own password, logged in with the AWSPREVIOUS one.
    assert_ne!(
        w.database.password_of("green").as_deref(),
        Some("green-pass-1")
    );
    assert_eq!(
        w.database.password_of("blue").as_deref(),
        Some("blue-pass-1")
    );

    let verified = w.verify(&plan, &pending).await.unwrap();
    // Verifying does not promote: in this layout the promotion is the flip.
    assert_eq!(
        w.secrets.user_at(SECRET, AWSCURRENT).as_deref(),
        Some("blue")
    );
    assert_eq!(verified.version_id, pending.version_id);

    let flipped = w
        .flip_alternating("green", Some(&verified.version_id))
        .await
        .unwrap();
    assert_eq!((flipped.was.as_str(), flipped.changed), ("blue", true));
    assert_eq!(
        w.secrets.user_at(SECRET, AWSCURRENT).as_deref(),
        Some("green")
    );
    assert_eq!(
        w.secrets.user_at(SECRET, AWSPREVIOUS).as_deref(),
        Some("blue")
    );
    assert_eq!(w.secrets.version_at(SECRET, AWSPENDING), None);
    assert_eq!(w.parameters.value(OBSERVED).as_deref(), Some("green"));
    assert!(w.alternating_invariant_holds() && w.logs_in_at(AWSPREVIOUS));
    // Replayed: nothing moves.
    let again = w
        .flip_alternating("green", Some(&verified.version_id))
        .await
        .unwrap();
    assert!(!again.changed);

    // The next rotation (another execution) rotates blue, whose password
    // AWSPREVIOUS holds.
    w.redeploy(&plan).await.unwrap();
    w.deployments.set_primary_state("app", "COMPLETED");
    w.executions.stop(ME);
    let next_execution = format!("{ME}-next");
    w.executions.start(&next_execution);
    let next = w
        .select_as(SelectRequest {
            input: json!({}),
            execution_id: next_execution,
            execution_name: "exec-next".into(),
        })
        .await
        .unwrap();
    let pending = w.generate(&next).await.unwrap();
    w.verify(&next, &pending).await.unwrap();
    w.flip_alternating("blue", Some(&pending.version_id))
        .await
        .unwrap();
    assert_eq!(next.target_user, "blue");
    assert_eq!(
        w.secrets.user_at(SECRET, AWSCURRENT).as_deref(),
        Some("blue")
    );
    assert!(w.alternating_invariant_holds());
}

#[tokio::test]
async fn the_rollback_moves_awscurrent_back_to_the_previous_user() {
    let w = alternating_world();
    let plan = w.rotate_alternating().await;
    let green_password = w.secrets.password_at(SECRET, AWSCURRENT).unwrap();
    let back = w.flip_alternating(&plan.previous_user, None).await.unwrap();
    assert_eq!((back.was.as_str(), back.changed), ("green", true));
    assert_eq!(
        w.secrets.user_at(SECRET, AWSCURRENT).as_deref(),
        Some("blue")
    );
    assert_eq!(
        w.secrets.password_at(SECRET, AWSCURRENT).as_deref(),
        Some("blue-pass-1")
    );
    // Green's new password stays in AWSPREVIOUS, and still logs in.
    assert_eq!(
        w.secrets.password_at(SECRET, AWSPREVIOUS),
        Some(green_password)
    );
    assert_eq!(w.parameters.value(OBSERVED).as_deref(), Some("blue"));
    assert!(w.alternating_invariant_holds() && w.logs_in_at(AWSPREVIOUS));
    // The rollback is a flip like any other: the next run finishes it
    // (services deployed before it get redeployed), not a new rotation.
    let finish = w.select(json!({})).await.unwrap();
    assert_eq!(finish.mode, Mode::Redeploy);
    assert_eq!(finish.target_user, "blue");
}

#[tokio::test]
async fn a_flip_moves_nothing_it_cannot_justify() {
    let w = alternating_world();
    // Forward: only the verified pending version may be promoted.
    let err = w
        .flip_alternating("green", Some("not-staged"))
        .await
        .unwrap_err();
    assert_eq!(err.name(), "SecretNotFound");
    assert!(
        err.to_string().contains("AWSPENDING version not-staged"),
        "{err}"
    );
    // Back: AWSPREVIOUS must name the user.
    let w = alternating_world();
    w.secrets.add_staged(
        SECRET,
        "v-someone",
        &alternating_json("someone", "x-pass"),
        &["AWSPREVIOUS"],
    );
    let err = w.flip_alternating("green", None).await.unwrap_err();
    assert_eq!(err.name(), "SecretNotFound");
    assert_eq!(
        w.flip_alternating("purple", None).await.unwrap_err().name(),
        "InvalidInput"
    );
    assert_eq!(
        w.secrets.user_at(SECRET, AWSCURRENT).as_deref(),
        Some("blue")
    );
    assert_eq!(w.parameters.value(OBSERVED).as_deref(), Some("blue"));
}

#[tokio::test]
async fn a_secret_naming_neither_user_is_refused_with_nothing_changed() {
    let w = alternating_world();
    w.secrets.add_staged(
        SECRET,
        "v-carol",
        &alternating_json("carol", "carol-pass"),
        &[AWSPENDING],
    );
    w.secrets.promote(SECRET, "v-carol").await.unwrap();
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "InvalidActiveUser");
    assert!(err.to_string().contains("carol"), "{err}");
    assert!(err.to_string().contains(SECRET), "{err}");
    assert_eq!(*w.database.password_changes.lock().unwrap(), 0);
}

#[tokio::test]
async fn the_first_rotation_after_adoption_needs_an_administrator() {
    // Only AWSCURRENT: no version holds green's password.
    let lone = || {
        let w = alternating_world();
        w.secrets.secrets.lock().unwrap().remove(SECRET);
        w.secrets
            .add(SECRET, "v-blue-1", &alternating_json("blue", "blue-pass-1"));
        made_long_ago(&w);
        w
    };
    // masterarn names a secret that does not exist.
    let w = lone();
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "SecretNotFound");
    assert!(
        err.to_string().contains(ADMIN_SECRET) && err.to_string().contains("masterarn"),
        "{err}"
    );
    assert_eq!(*w.database.password_changes.lock().unwrap(), 0);

    // No masterarn and no DB_ADMIN_SECRET_ID.
    let w = lone();
    w.secrets.secrets.lock().unwrap().remove(SECRET);
    w.secrets
        .add(SECRET, "v-blue-1", &secret_json("blue", "blue-pass-1"));
    made_long_ago(&w);
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "SecretNotFound");
    assert!(err.to_string().contains("DB_ADMIN_SECRET_ID"), "{err}");
    assert_eq!(w.secrets.version_count(SECRET), 1);

    // With the administrator: it sets green's first password.
    let w = lone();
    w.secrets.add(
        ADMIN_SECRET,
        "admin-1",
        &secret_json("postgres", "admin-pass"),
    );
    w.database
        .add_user("postgres", "admin-pass", &["attribute CREATEROLE"]);
    let plan = w.rotate_alternating().await;
    assert_eq!(plan.target_user, "green");
    assert_eq!(
        w.secrets.user_at(SECRET, AWSCURRENT).as_deref(),
        Some("green")
    );
    assert!(w.alternating_invariant_holds());
}

#[tokio::test]
async fn resume_after_a_crash_at_each_step() {
    // After generate: the pending version is resumed, not made again.
    let w = alternating_world();
    let plan = w.select(json!({})).await.unwrap();
    let first = w.generate(&plan).await.unwrap();
    let again = w.select(json!({})).await.unwrap();
    assert_eq!(again.mode, Mode::Rotate);
    let resumed = w.generate(&again).await.unwrap();
    assert!(resumed.resumed);
    assert_eq!(resumed.version_id, first.version_id);

    // After verify, before the flip: the same version is verified and flipped.
    let verified = w.verify(&again, &resumed).await.unwrap();
    let third = w.select(json!({})).await.unwrap();
    assert_eq!(third.mode, Mode::Rotate);
    let pending = w.generate(&third).await.unwrap();
    assert_eq!(pending.version_id, verified.version_id);
    w.verify(&third, &pending).await.unwrap();
    w.flip_alternating("green", Some(&pending.version_id))
        .await
        .unwrap();
    assert!(w.alternating_invariant_holds());

    // After the flip, before the redeploy: finish it (redeploy), rotate nothing.
    let finish = w.select(json!({})).await.unwrap();
    assert_eq!(finish.mode, Mode::Redeploy);
    assert_eq!(
        (finish.previous_user.as_str(), finish.target_user.as_str()),
        ("blue", "green")
    );
    w.redeploy(&finish).await.unwrap();
    w.deployments.set_primary_state("app", "COMPLETED");
    // Redeployed after the flip: the next run rotates blue.
    let next = w.select(json!({})).await.unwrap();
    assert_eq!(
        (next.mode, next.target_user.as_str()),
        (Mode::Rotate, "blue")
    );
}

#[tokio::test]
async fn a_stale_pending_version_is_replaced_by_the_next_stage() {
    let w = alternating_world();
    // A pending version from another rotator, naming the active user.
    w.secrets.add_staged(
        SECRET,
        "v-stale",
        &alternating_json("blue", "stale-pass-1"),
        &[AWSPENDING],
    );
    let plan = w.select(json!({})).await.unwrap();
    let pending = w.generate(&plan).await.unwrap();
    assert!(!pending.resumed);
    assert_ne!(pending.version_id, "v-stale");
    assert_eq!(
        w.secrets.version_at(SECRET, AWSPENDING).as_deref(),
        Some(pending.version_id.as_str())
    );
    assert_eq!(
        w.secrets.user_at(SECRET, AWSPENDING).as_deref(),
        Some("green")
    );
    assert_eq!(
        w.database.password_of("blue").as_deref(),
        Some("blue-pass-1")
    );
}

#[tokio::test]
async fn secrets_managers_own_rotation_of_the_secret_is_verified_and_redeployed() {
    let w = alternating_world();
    // Secrets Manager's alternating rotation: green gets a new password and
    // becomes AWSCURRENT.
    w.secrets.add_staged(
        SECRET,
        "sm-1",
        &alternating_json("green", "sm-pass-1"),
        &[AWSPENDING],
    );
    w.secrets.promote(SECRET, "sm-1").await.unwrap();
    w.database.set_password("green", "sm-pass-1");
    let plan = w
        .select(json!({"source": "aws.secretsmanager", "detail": {"eventName": "RotationSucceeded",
            "additionalEventData": {"SecretId": format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{SECRET}-AbCdEf")}}}))
        .await
        .unwrap();
    assert_eq!(plan.mode, Mode::Redeploy);
    assert_eq!(plan.alert, None);
    assert_eq!(
        (plan.previous_user.as_str(), plan.target_user.as_str()),
        ("blue", "green")
    );
    // A failed rollout flips back to blue, whose password AWSPREVIOUS holds.
    w.flip_alternating(&plan.previous_user, None).await.unwrap();
    assert_eq!(
        w.secrets.user_at(SECRET, AWSCURRENT).as_deref(),
        Some("blue")
    );
    assert!(w.alternating_invariant_holds());
}

#[tokio::test]
async fn password_dates_name_the_roles_without_reading_a_value() {
    let w = alternating_world();
    // The observer parameter names blue, written after AWSCURRENT was made.
    w.parameters.set(OBSERVED, "blue");
    let dates = crate::steps::password_dates(&w.config, &w.parameters, &w.secrets)
        .await
        .unwrap();
    assert_eq!(dates.active.as_deref(), Some("blue"));
    let users: Vec<(&str, Option<&str>)> = dates
        .passwords
        .iter()
        .map(|(u, v)| (u.as_str(), v.as_ref().map(|v| v.version_id.as_str())))
        .collect();
    assert_eq!(
        users,
        [("blue", Some("v-blue-1")), ("green", Some("v-green-1"))]
    );

    // Another rotator promoted a newer version after the parameter was
    // written: the parameter no longer says who is active.
    w.secrets.add_staged(
        SECRET,
        "sm-2",
        &alternating_json("green", "sm-pass"),
        &[AWSPENDING],
    );
    w.secrets.promote(SECRET, "sm-2").await.unwrap();
    let dates = crate::steps::password_dates(&w.config, &w.parameters, &w.secrets)
        .await
        .unwrap();
    assert_eq!(dates.active, None);
    assert_eq!(dates.passwords[0].0, AWSCURRENT);
    assert_eq!(
        dates.passwords[0].1.as_ref().map(|v| v.version_id.as_str()),
        Some("sm-2")
    );
}

#[tokio::test]
async fn a_dry_run_changes_nothing() {
    let w = alternating_world();
    let plan = w.select(json!({"dryRun": true})).await.unwrap();
    assert!(plan.dry_run);
    assert_eq!(plan.target_user, "green");
    assert_eq!(w.secrets.version_count(SECRET), 2);
    assert_eq!(*w.database.password_changes.lock().unwrap(), 0);
}

/// Another execution of the same target, for the redrive cases.
fn other_execution(w: &World, tag: &str) -> SelectRequest {
    let arn = format!("{ME}-{tag}");
    w.executions.stop(ME);
    w.executions.start(&arn);
    SelectRequest {
        input: json!({}),
        execution_id: arn,
        execution_name: format!("exec-{tag}"),
    }
}

#[tokio::test]
async fn an_old_plan_redriven_after_a_newer_rotation_changes_nothing() {
    // Both layouts: E1 planned blue -> green and failed; E2 rotated green
    // and flipped to it; a redrive of E1 must not touch green's password.
    for alternating in [false, true] {
        let w = if alternating {
            alternating_world()
        } else {
            world()
        };
        let old = w.select(json!({})).await.unwrap();
        let newer = w.select_as(other_execution(&w, "e2")).await.unwrap();
        let pending = w.generate(&newer).await.unwrap();
        let verified = w.verify(&newer, &pending).await.unwrap();
        if alternating {
            w.flip_alternating("green", Some(&verified.version_id))
                .await
                .unwrap();
        } else {
            w.flip("green").await.unwrap();
        }
        let green = w.database.password_of("green");
        let changes = *w.database.password_changes.lock().unwrap();
        let err = w.generate(&old).await.unwrap_err();
        assert_eq!(err.name(), "PointerMoved", "{err}");
        let err = w
            .verify(
                &old,
                &PendingPassword {
                    version_id: "x".into(),
                    resumed: false,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.name(), "PointerMoved", "{err}");
        assert_eq!(w.database.password_of("green"), green);
        assert_eq!(*w.database.password_changes.lock().unwrap(), changes);
        if alternating {
            // The flip of a version that is not AWSCURRENT's, to the user
            // AWSCURRENT names already, is refused too.
            let err = w
                .flip_alternating("green", Some("an-older-version"))
                .await
                .unwrap_err();
            assert_eq!(err.name(), "PointerMoved", "{err}");
            assert!(w.alternating_invariant_holds());
        } else {
            assert!(w.invariant_holds());
        }
    }
}

#[tokio::test]
async fn an_operators_edit_of_awscurrent_keeps_the_other_roles_password() {
    let w = alternating_world();
    let plan = w.rotate_alternating().await;
    assert_eq!(plan.target_user, "green");
    // The database moved: an operator writes a new AWSCURRENT (green, same
    // password, a new field); Secrets Manager moves AWSPREVIOUS onto the
    // old green version, and blue's version keeps only its role label.
    let current = w.secrets.value_at(SECRET, AWSCURRENT).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&current).unwrap();
    edited["dbClusterIdentifier"] = json!("moved");
    w.secrets
        .add_staged(SECRET, "v-edit", &edited.to_string(), &[AWSPENDING]);
    w.secrets.promote(SECRET, "v-edit").await.unwrap();
    assert_eq!(
        w.secrets.user_at(SECRET, AWSPREVIOUS).as_deref(),
        Some("green")
    );
    // Services deployed before the edit: finish it by redeploying first,
    // with blue's password still found (a failed rollout flips back to it).
    let finish = w.select(json!({})).await.unwrap();
    assert_eq!(finish.mode, Mode::Redeploy);
    w.redeploy(&finish).await.unwrap();
    w.deployments.set_primary_state("app", "COMPLETED");
    let back = w.flip_alternating("blue", None).await.unwrap();
    assert!(back.changed);
    assert_eq!(
        w.secrets.user_at(SECRET, AWSCURRENT).as_deref(),
        Some("blue")
    );
    assert!(w.alternating_invariant_holds() && w.logs_in_at(AWSPREVIOUS));
}

#[tokio::test]
async fn the_flip_time_is_trusted_only_for_the_version_it_names() {
    let w = alternating_world();
    w.rotate_alternating().await;
    let finish = w.select(json!({})).await.unwrap();
    w.redeploy(&finish).await.unwrap();
    let pointer = crate::layouts::for_target(
        &w.config,
        crate::layouts::Stores {
            parameters: &w.parameters,
            secrets: &w.secrets,
        },
    );
    let tagged = w.secrets.flipped_at(SECRET).await.unwrap().unwrap();
    let read = pointer.read().await.unwrap();
    assert_eq!(read.moved_ms, Some(tagged.at_ms));
    // AWSCURRENT moved back by hand (older than the record, another
    // version): when is unknown, so now, later than every deployment.
    let before = crate::steps::now_ms();
    let previous = w.secrets.version_at(SECRET, AWSPREVIOUS).unwrap();
    w.secrets.promote(SECRET, &previous).await.unwrap();
    let read = pointer.read().await.unwrap();
    assert!(read.moved_ms.unwrap() >= before);
}

/// Secrets Manager's createSecret and setSecret for green: a version
/// `version_id` staged `AWSPENDING` with `password`, set in the database.
fn staged_for_green(w: &World, version_id: &str, password: &str) {
    w.secrets.add_staged(
        SECRET,
        version_id,
        &alternating_json("green", password),
        &[AWSPENDING],
    );
    w.database.set_password("green", password);
}

/// Seed 11, scenario 415 of the chaos soak, and its kind: AWSCURRENT moved
/// to green by someone else, and the services were deployed after the new
/// version was *created* but before it was *promoted*, so their tasks hold
/// blue. A version's creation said when it moved, so the next run rotated
/// blue under them. Now the move is dated when pgflip first sees it: that
/// run redeploys (and records the time), and the run after it rotates blue.
#[tokio::test]
async fn awscurrent_another_rotator_moved_is_redeployed_for_before_anything_is_rotated() {
    for mover in [
        "Secrets Manager after a flip",
        "Secrets Manager before adoption",
        "an operator, by hand",
    ] {
        let w = alternating_world();
        match mover {
            "an operator, by hand" => {
                // Back to green's version (UpdateSecretVersionStage), after
                // a release: the version is older than the move.
                w.release().await;
                w.secrets.promote(SECRET, "v-green-1").await.unwrap();
            }
            _ => {
                if mover.ends_with("adoption") {
                    w.secrets.flips.lock().unwrap().clear();
                }
                // createSecret, setSecret; a release starts its tasks with
                // blue, still AWSCURRENT; then finishSecret.
                staged_for_green(&w, "sm-1", "sm-pass-1");
                w.release().await;
                w.secrets.promote(SECRET, "sm-1").await.unwrap();
            }
        }
        let current = w.secrets.version_at(SECRET, AWSCURRENT).unwrap();
        // A dry run says so and records nothing.
        let dry = w.select(json!({"dryRun": true})).await.unwrap();
        assert_eq!(dry.mode, Mode::Redeploy, "{mover}");
        assert!(
            w.secrets
                .flips
                .lock()
                .unwrap()
                .get(SECRET)
                .is_none_or(|r| r.version_id != current),
            "{mover}: a dry run recorded the move"
        );
        let finish = w.select(json!({})).await.unwrap();
        assert_eq!(
            (finish.mode, finish.target_user.as_str()),
            (Mode::Redeploy, "green"),
            "{mover}: blue is still held by the release's tasks"
        );
        let recorded = w.secrets.flips.lock().unwrap().get(SECRET).cloned();
        assert_eq!(
            recorded.map(|r| r.version_id),
            Some(current.clone()),
            "{mover}"
        );
        // Until the redeploy, still redeploy: the record is no earlier than
        // the release.
        assert_eq!(
            w.select(json!({})).await.unwrap().mode,
            Mode::Redeploy,
            "{mover}"
        );
        w.redeploy(&finish).await.unwrap();
        w.deployments.set_primary_state("app", "COMPLETED");
        let next = w.select(json!({})).await.unwrap();
        assert_eq!(
            (next.mode, next.target_user.as_str()),
            (Mode::Rotate, "blue"),
            "{mover}"
        );
        assert!(w.alternating_invariant_holds(), "{mover}");
    }
}

#[tokio::test]
async fn a_version_seen_is_not_recorded_once_awscurrent_moved_again() {
    let w = alternating_world();
    w.secrets.promote(SECRET, "v-green-1").await.unwrap();
    let pointer = crate::layouts::for_target(
        &w.config,
        crate::layouts::Stores {
            parameters: &w.parameters,
            secrets: &w.secrets,
        },
    );
    let seen = pointer.read().await.unwrap();
    assert_eq!(seen.unrecorded.as_deref(), Some("v-green-1"));
    // Moved again (back to blue) between the read and the record.
    w.secrets.promote(SECRET, "v-blue-1").await.unwrap();
    pointer.record_seen(&seen).await.unwrap();
    let recorded = w.secrets.flipped_at(SECRET).await.unwrap().unwrap();
    assert_eq!(recorded.version_id, "v-blue-1", "the older record stands");
    // Recorded: the read gives that time, and nothing to record.
    w.secrets.promote(SECRET, "v-green-1").await.unwrap();
    let seen = pointer.read().await.unwrap();
    pointer.record_seen(&seen).await.unwrap();
    let read = pointer.read().await.unwrap();
    let recorded = w.secrets.flipped_at(SECRET).await.unwrap().unwrap();
    assert_eq!(
        (read.unrecorded, read.moved_ms, recorded.version_id.as_str()),
        (None, Some(recorded.at_ms), "v-green-1")
    );
    assert!(recorded.at_ms >= seen.moved_ms.unwrap());
}

/// Adoption after Secrets Manager's rotation stopped after setSecret (found
/// by a review): green's AWSPENDING holds the password that works, the
/// version labelled for it an old one. The first run cannot redeploy (a
/// failed rollout would flip back to green's labelled version, which no
/// longer logs in) and says so; it has recorded when it saw blue, so once
/// the services are redeployed the next run rotates green, with its
/// AWSPENDING password. It used to fail again on every run.
#[tokio::test]
async fn a_refused_first_run_still_records_when_it_saw_awscurrent() {
    let w = alternating_world();
    w.secrets.flips.lock().unwrap().clear();
    staged_for_green(&w, "sm-2", "sm-pass-2");
    let err = w.select(json!({})).await.unwrap_err();
    assert_eq!(err.name(), "LoginRejected", "{err}");
    assert_eq!(
        w.secrets
            .flipped_at(SECRET)
            .await
            .unwrap()
            .map(|r| r.version_id),
        Some("v-blue-1".to_string())
    );
    w.release().await;
    let plan = w.select(json!({})).await.unwrap();
    assert_eq!(
        (plan.mode, plan.target_user.as_str()),
        (Mode::Rotate, "green")
    );
    let pending = w.generate(&plan).await.unwrap();
    w.verify(&plan, &pending).await.unwrap();
    assert!(w.alternating_invariant_holds());
}
