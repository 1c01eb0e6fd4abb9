//! `dualwrite stage get | set`: the shared stage the services poll, moved
//! under their guardrails.

mod support;

use dualwrite_runtime::Stage;
use support::{run, stored_stage, Fixture};

#[test]
fn stage_get_reports_the_stored_stage_or_that_there_is_none() {
    let fixture = Fixture::empty();
    let none = run(&["stage", "get", "--json", "--queue", &fixture.url()]);
    assert_eq!(none.code, 0, "{}", none.stderr);
    assert!(none.json().is_null());
    let before = fixture.snapshot();
    let text = run(&["stage", "get", "--queue", &fixture.url()]);
    assert!(text.stdout.contains("no stage stored"), "{}", text.stdout);
    assert_eq!(fixture.snapshot(), before, "reading made no stage table");

    fixture.store_stage(Stage::DualWrite);
    let stored = run(&["stage", "get", "--json", "--queue", &fixture.url()]).json();
    assert_eq!(stored["stage"], "dual_write");
    assert_eq!(stored["version"], 1);
    assert!(stored["changed_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn stage_set_stores_the_move_for_every_instance() {
    let fixture = Fixture::empty();
    fixture.store_stage(Stage::DualWrite);
    let ran = run(&[
        "stage",
        "set",
        "shadow",
        "--json",
        "--queue",
        &fixture.url(),
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let moved = ran.json();
    assert_eq!(moved["from"], "dual_write");
    assert_eq!(moved["to"], "shadow");
    assert_eq!(moved["version"], 2);
    assert_eq!(stored_stage(&fixture.path), Some((Stage::Shadow, 2, None)));

    let again = run(&["stage", "set", "shadow", "--queue", &fixture.url()]);
    assert!(again.stdout.contains("nothing changed"), "{}", again.stdout);
    assert_eq!(stored_stage(&fixture.path).unwrap().1, 2);
}

#[test]
fn a_move_that_makes_a_store_with_queued_work_authoritative_is_refused() {
    let (fixture, _) = Fixture::with_work();
    fixture.store_stage(Stage::Shadow);
    let before = fixture.snapshot();
    let ran = run(&[
        "stage",
        "set",
        "live",
        "--observed-mismatch-rate",
        "0",
        "--queue",
        &fixture.url(),
    ]);
    ran.fails_with(
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
    run(&["stage", "set", "live", "--queue", &fixture.url()])
        .fails_with(4, "--observed-mismatch-rate");
    run(&[
        "stage",
        "set",
        "live",
        "--observed-mismatch-rate",
        "0.05",
        "--queue",
        &fixture.url(),
    ])
    .fails_with(4, "5.00% is above the bound of 1.00%");
    assert_eq!(fixture.snapshot(), before);
    let ran = run(&[
        "stage",
        "set",
        "live",
        "--observed-mismatch-rate",
        "0.002",
        "--queue",
        &fixture.url(),
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(stored_stage(&fixture.path).unwrap().0, Stage::Live);
}

#[test]
fn force_overrides_the_guardrails_and_stores_its_reason() {
    let (fixture, _) = Fixture::with_work();
    fixture.store_stage(Stage::Live);
    let ran = run(&[
        "stage",
        "set",
        "dual_write",
        "--force",
        "--reason",
        "INC-2211 stale rows",
        "--json",
        "--queue",
        &fixture.url(),
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.json()["forced"], true);
    assert_eq!(
        stored_stage(&fixture.path),
        Some((Stage::DualWrite, 2, Some("INC-2211 stale rows".to_owned())))
    );
    let shown = run(&["stage", "get", "--queue", &fixture.url()]);
    assert!(
        shown.stdout.contains("forced: INC-2211 stale rows"),
        "{}",
        shown.stdout
    );
}

#[test]
fn force_without_a_reason_is_a_usage_error() {
    let fixture = Fixture::empty();
    fixture.store_stage(Stage::Shadow);
    let before = fixture.snapshot();
    let ran = run(&["stage", "set", "live", "--force", "--queue", &fixture.url()]);
    ran.fails_with(2, "--reason");
    let blank = run(&[
        "stage",
        "set",
        "live",
        "--force",
        "--reason",
        " ",
        "--queue",
        &fixture.url(),
    ]);
    blank.fails_with(2, "--reason");
    assert_eq!(fixture.snapshot(), before);
}

#[test]
fn leaving_complete_is_refused() {
    let fixture = Fixture::empty();
    fixture.store_stage(Stage::Complete);
    let before = fixture.snapshot();
    run(&["stage", "set", "ramp_down", "--queue", &fixture.url()])
        .fails_with(4, "refusing to move from `complete`");
    assert_eq!(fixture.snapshot(), before);
}

#[test]
fn with_no_stored_stage_only_a_forced_move_stores_one() {
    let fixture = Fixture::empty();
    let before = fixture.snapshot();
    run(&["stage", "set", "dual_write", "--queue", &fixture.url()])
        .fails_with(4, "no stage is stored");
    assert_eq!(fixture.snapshot(), before, "no stage table was made");
    let ran = run(&[
        "stage",
        "set",
        "dual_write",
        "--force",
        "--reason",
        "first start",
        "--queue",
        &fixture.url(),
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(stored_stage(&fixture.path).unwrap().0, Stage::DualWrite);
}

#[test]
fn a_separate_stage_source_file_is_used_for_the_stage() {
    let queue = Fixture::empty();
    let stage = Fixture::empty();
    stage.store_stage(Stage::Shadow);
    let ran = run(&[
        "stage",
        "get",
        "--json",
        "--queue",
        &queue.url(),
        "--stage-source",
        &stage.url(),
    ]);
    assert_eq!(ran.json()["stage"], "shadow");
    let status = run(&[
        "status",
        "--json",
        "--queue",
        &queue.url(),
        "--stage-source",
        &stage.url(),
    ]);
    assert_eq!(status.json()["stage"]["stage"], "shadow");
}

#[test]
fn a_reason_without_force_is_a_usage_error() {
    let fixture = Fixture::empty();
    fixture.store_stage(Stage::DualWrite);
    let before = fixture.snapshot();
    run(&[
        "stage",
        "set",
        "shadow",
        "--reason",
        "why not",
        "--queue",
        &fixture.url(),
    ])
    .fails_with(2, "--reason goes with --force");
    assert_eq!(fixture.snapshot(), before);
}
