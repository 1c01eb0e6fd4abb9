//! `dualwrite dead list | show | retry | drop` and `dualwrite queue key`.

mod support;

use support::{run, Fixture};

#[test]
fn dead_list_shows_each_letter_with_its_error() {
    let (fixture, queued) = Fixture::with_work();
    let ran = run(&["dead", "list", "--json", "--queue", &fixture.url()]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let letters = ran.json();
    let letters = letters.as_array().expect("an array");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["id"], queued.dead.0);
    assert_eq!(letters[0]["key"], "c");
    assert_eq!(letters[0]["target"], "new");
    assert_eq!(letters[0]["method"], "update_status");
    assert_eq!(letters[0]["error"], "UNIQUE constraint failed: orders.id");

    let text = run(&["dead", "list", "--queue", &fixture.url()]);
    assert!(
        text.stdout.contains("UNIQUE constraint failed"),
        "{}",
        text.stdout
    );
    let other = run(&[
        "dead",
        "list",
        "--json",
        "--namespace",
        "users",
        "--queue",
        &fixture.url(),
    ]);
    assert_eq!(other.json(), serde_json::json!([]));
}

#[test]
fn dead_show_prints_the_operation() {
    let (fixture, queued) = Fixture::with_work();
    let id = queued.dead.0.to_string();
    let ran = run(&["dead", "show", &id, "--json", "--queue", &fixture.url()]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let letter = ran.json();
    assert_eq!(letter["payload"]["method"], "update_status");
    assert_eq!(letter["payload"]["args"]["id"], "c");
    let text = run(&["dead", "show", &id, "--queue", &fixture.url()]);
    assert!(
        text.stdout.contains("\"method\": \"update_status\""),
        "{}",
        text.stdout
    );
}

#[test]
fn dead_retry_makes_the_letter_pending_again() {
    let (fixture, queued) = Fixture::with_work();
    let ran = run(&[
        "dead",
        "retry",
        &queued.dead.0.to_string(),
        "--json",
        "--queue",
        &fixture.url(),
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.json()["ids"], serde_json::json!([queued.dead.0]));
    let status = run(&["status", "--json", "--queue", &fixture.url()]);
    assert_eq!(status.code, 0, "no dead letters left");
    assert_eq!(status.json()["new"]["pending"], 4);
}

#[test]
fn dead_retry_all_retries_every_letter_of_the_namespace() {
    let (fixture, _) = Fixture::with_work();
    let elsewhere = run(&[
        "dead",
        "retry",
        "--all",
        "--namespace",
        "users",
        "--json",
        "--queue",
        &fixture.url(),
    ]);
    assert_eq!(elsewhere.json()["retried"], 0);
    let ran = run(&[
        "dead",
        "retry",
        "--all",
        "--namespace",
        "orders",
        "--json",
        "--queue",
        &fixture.url(),
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.json()["retried"], 1);
    assert_eq!(
        run(&["dead", "list", "--json", "--queue", &fixture.url()]).json(),
        serde_json::json!([])
    );
}

#[test]
fn dead_drop_needs_yes_then_deletes_the_letter() {
    let (fixture, queued) = Fixture::with_work();
    let id = queued.dead.0.to_string();
    let before = fixture.snapshot();
    let unconfirmed = run(&["dead", "drop", &id, "--queue", &fixture.url()]);
    unconfirmed.fails_with(2, "--yes");
    assert_eq!(fixture.snapshot(), before, "nothing dropped without --yes");

    let ran = run(&[
        "dead",
        "drop",
        &id,
        "--yes",
        "--json",
        "--queue",
        &fixture.url(),
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let status = run(&["status", "--json", "--queue", &fixture.url()]).json();
    assert_eq!(status["dead_letters"], 0);
    assert_eq!(status["new"]["pending"], 3, "the pending work is untouched");
}

#[test]
fn an_id_that_is_not_dead_is_refused_and_no_other_id_is_acted_on() {
    let (fixture, queued) = Fixture::with_work();
    let before = fixture.snapshot();
    let pending = queued.pending_new[0].0.to_string();
    let dead = queued.dead.0.to_string();
    let url = fixture.url();
    for args in [
        vec!["dead", "retry", &dead, "999"],
        vec!["dead", "retry", &pending],
        vec!["dead", "drop", &dead, &pending, "--yes"],
        vec!["dead", "show", "999"],
    ] {
        let mut args = args.clone();
        args.extend(["--queue", &url]);
        let ran = run(&args);
        ran.fails_with(4, "is not a dead letter");
        assert_eq!(fixture.snapshot(), before, "{args:?} changed the queue");
    }
}

#[test]
fn queue_key_lists_a_keys_entries_in_the_order_they_apply() {
    let (fixture, queued) = Fixture::with_work();
    let ran = run(&[
        "queue",
        "key",
        "orders",
        "new",
        "a",
        "--json",
        "--queue",
        &fixture.url(),
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let entries = ran.json();
    let ids: Vec<u64> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [queued.pending_new[0].0, queued.pending_new[1].0]);
    assert_eq!(entries[0]["state"], "pending");
    assert_eq!(entries[1]["method"], "update_status");

    let dead = run(&[
        "queue",
        "key",
        "orders",
        "new",
        "c",
        "--json",
        "--queue",
        &fixture.url(),
    ])
    .json();
    assert_eq!(dead[0]["state"], "dead");
    let none = run(&[
        "queue",
        "key",
        "orders",
        "old",
        "a",
        "--queue",
        &fixture.url(),
    ]);
    assert!(none.stdout.contains("nothing queued"), "{}", none.stdout);
    run(&[
        "queue",
        "key",
        "orders",
        "sideways",
        "a",
        "--queue",
        &fixture.url(),
    ])
    .fails_with(2, "expected `old` or `new`");
}
