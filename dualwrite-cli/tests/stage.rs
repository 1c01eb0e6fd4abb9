//! `dualwrite stage get | set`: the shared stage the services poll, moved
//! under their guardrails.

mod support;

use dualwrite_runtime::Stage;
use support::{stored_stage, Fixture};

#[test]
fn stage_get_reports_the_stored_stage_or_that_there_is_none() {
    let fixture = Fixture::empty();
    assert!(fixture.run("stage get --json").succeeds().json().is_null());
    let before = fixture.snapshot();
    let text = fixture.run("stage get");
    assert!(text.stdout.contains("no stage stored"), "{}", text.stdout);
    assert_eq!(fixture.snapshot(), before, "reading made no stage table");

    fixture.store_stage(Stage::DualWrite);
    let stored = fixture.run("stage get --json").json();
    assert_eq!(stored["stage"], "dual_write");
    assert_eq!(stored["version"], 1);
    assert!(stored["changed_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn stage_set_stores_the_move_for_every_instance() {
    let fixture = Fixture::empty();
    fixture.store_stage(Stage::DualWrite);
    let moved = fixture.run("stage set shadow --json").succeeds().json();
    assert_eq!(moved["from"], "dual_write");
    assert_eq!(moved["to"], "shadow");
    assert_eq!(moved["version"], 2);
    assert_eq!(stored_stage(&fixture.path), Some((Stage::Shadow, 2, None)));

    let again = fixture.run("stage set shadow");
    assert!(again.stdout.contains("nothing changed"), "{}", again.stdout);
    assert_eq!(stored_stage(&fixture.path).unwrap().1, 2);
}

#[test]
fn a_move_that_makes_a_store_with_queued_work_authoritative_is_refused() {
    let (fixture, _) = Fixture::with_work();
    fixture.store_stage(Stage::Shadow);
    let before = fixture.snapshot();
    fixture
        .run("stage set live --observed-mismatch-rate 0")
        .fails_with(
            4,
            "the new store would become authoritative while 3 pending",
        );
    assert_eq!(fixture.snapshot(), before);
}

#[test]
fn serving_reads_from_the_new_store_needs_an_observed_mismatch_rate_within_the_bound() {
    let fixture = Fixture::empty();
    fixture.store_stage(Stage::Shadow);
    let before = fixture.snapshot();
    fixture
        .run("stage set live")
        .fails_with(4, "--observed-mismatch-rate");
    fixture
        .run("stage set live --observed-mismatch-rate 0.05")
        .fails_with(4, "5.00% is above the bound of 1.00%");
    assert_eq!(fixture.snapshot(), before);
    fixture
        .run("stage set live --observed-mismatch-rate 0.002")
        .succeeds();
    assert_eq!(stored_stage(&fixture.path).unwrap().0, Stage::Live);
}

#[test]
fn force_overrides_the_guardrails_and_stores_its_reason() {
    let (fixture, _) = Fixture::with_work();
    fixture.store_stage(Stage::Live);
    let reason = "INC-2211 stale rows";
    let args = [
        "stage",
        "set",
        "dual_write",
        "--force",
        "--reason",
        reason,
        "--json",
    ];
    assert_eq!(fixture.run_args(&args).succeeds().json()["forced"], true);
    let expected = Some((Stage::DualWrite, 2, Some(reason.to_owned())));
    assert_eq!(stored_stage(&fixture.path), expected);
    let shown = fixture.run("stage get");
    assert!(
        shown.stdout.contains("forced: INC-2211 stale rows"),
        "{}",
        shown.stdout
    );
}

#[test]
fn force_without_a_reason_and_a_reason_without_force_are_usage_errors() {
    let fixture = Fixture::empty();
    fixture.store_stage(Stage::Shadow);
    let before = fixture.snapshot();
    fixture
        .run("stage set live --force")
        .fails_with(2, "--reason");
    let blank = ["stage", "set", "live", "--force", "--reason", " "];
    fixture.run_args(&blank).fails_with(2, "--reason");
    fixture
        .run("stage set dual_write --reason why")
        .fails_with(2, "--reason goes with --force");
    assert_eq!(fixture.snapshot(), before);
}

#[test]
fn leaving_complete_is_refused() {
    let fixture = Fixture::empty();
    fixture.store_stage(Stage::Complete);
    let before = fixture.snapshot();
    fixture
        .run("stage set ramp_down")
        .fails_with(4, "refusing to move from `complete`");
    assert_eq!(fixture.snapshot(), before);
}

#[test]
fn with_no_stored_stage_only_a_forced_move_stores_one() {
    let fixture = Fixture::empty();
    let before = fixture.snapshot();
    fixture
        .run("stage set dual_write")
        .fails_with(4, "no stage is stored");
    assert_eq!(fixture.snapshot(), before, "no stage table was made");
    fixture
        .run("stage set dual_write --force --reason first-start")
        .succeeds();
    assert_eq!(stored_stage(&fixture.path).unwrap().0, Stage::DualWrite);
}

#[test]
fn a_separate_stage_source_file_is_used_for_the_stage() {
    let queue = Fixture::empty();
    let stage = Fixture::empty();
    stage.store_stage(Stage::Shadow);
    let source = stage.url();
    let shown = queue.run_args(&["stage", "get", "--json", "--stage-source", &source]);
    assert_eq!(shown.json()["stage"], "shadow");
    let status = queue.run_args(&["status", "--json", "--stage-source", &source]);
    assert_eq!(status.json()["stage"]["stage"], "shadow");
}

#[test]
fn each_migration_has_its_own_stage_row() {
    let fixture = Fixture::empty();
    fixture.store_stage(Stage::Live);
    fixture
        .run("stage set dual_write --force --reason billing-starts --migration billing")
        .succeeds();
    let output = support::dualwrite()
        .args(["stage", "get", "--json", "--queue", &fixture.url()])
        .env("DUALWRITE_MIGRATION", "billing")
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["stage"], "dual_write");
    let default_row = stored_stage(&fixture.path).unwrap().0;
    assert_eq!(default_row, Stage::Live, "the default row is untouched");
}

#[test]
fn the_mismatch_rate_guardrail_can_measure_the_instances_metrics() {
    let fixture = Fixture::empty();
    fixture.store_stage(Stage::Shadow);
    let before = fixture.snapshot();
    // 50 of the 1000 reads compared during the window disagreed: 5%.
    let failing = support::serve_metrics(vec![
        support::comparisons(2000, 10),
        support::comparisons(3000, 60),
    ]);
    fixture
        .run(&format!(
            "stage set live --metrics {failing} --metrics-window 50ms"
        ))
        .fails_with(
            4,
            "the observed mismatch rate 5.00% is above the bound of 1.00%",
        );
    // Nothing compared during the window: nothing to judge.
    let idle = support::serve_metrics(vec![support::comparisons(2000, 10)]);
    fixture
        .run(&format!(
            "stage set live --metrics {idle} --metrics-window 50ms"
        ))
        .fails_with(4, "no compared reads in the last 50ms");
    assert_eq!(fixture.snapshot(), before, "refused moves changed nothing");

    // 1 of 1000: within the bound.
    let passing = support::serve_metrics(vec![
        support::comparisons(2000, 10),
        support::comparisons(3000, 11),
    ]);
    let moved = fixture
        .run(&format!(
            "stage set live --json --metrics {passing} --metrics-window 50ms"
        ))
        .succeeds()
        .json();
    assert_eq!(moved["to"], "live", "{moved}");
    assert_eq!(stored_stage(&fixture.path).unwrap().0, Stage::Live);
}
