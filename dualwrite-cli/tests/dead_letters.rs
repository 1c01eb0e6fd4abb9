//! `dualwrite dead list | show | retry | drop` and `dualwrite queue key`.

mod support;

use serde_json::json;
use support::Fixture;

#[test]
fn dead_list_shows_each_letter_with_its_error() {
    let (fixture, queued) = Fixture::with_work();
    let letters = fixture.run("dead list --json").succeeds().json();
    let letters = letters.as_array().expect("an array");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["id"], queued.dead.0);
    assert_eq!(letters[0]["key"], "c");
    assert_eq!(letters[0]["target"], "new");
    assert_eq!(letters[0]["method"], "update_status");
    assert_eq!(letters[0]["error"], "UNIQUE constraint failed: orders.id");

    let text = fixture.run("dead list");
    assert!(
        text.stdout.contains("UNIQUE constraint failed"),
        "{}",
        text.stdout
    );
    let other = fixture.run("dead list --json --namespace users");
    assert_eq!(other.json(), json!([]));
}

#[test]
fn dead_show_prints_the_operation() {
    let (fixture, queued) = Fixture::with_work();
    let id = queued.dead.0;
    let letter = fixture
        .run(&format!("dead show {id} --json"))
        .succeeds()
        .json();
    assert_eq!(letter["payload"]["method"], "update_status");
    assert_eq!(letter["payload"]["args"]["id"], "c");
    let text = fixture.run(&format!("dead show {id}"));
    assert!(
        text.stdout.contains("\"method\": \"update_status\""),
        "{}",
        text.stdout
    );
}

#[test]
fn dead_retry_makes_the_letter_pending_again() {
    let (fixture, queued) = Fixture::with_work();
    let id = queued.dead.0;
    let retried = fixture
        .run(&format!("dead retry {id} --json"))
        .succeeds()
        .json();
    assert_eq!(retried["ids"], json!([id]));
    let status = fixture.run("status --json").succeeds().json();
    assert_eq!(status["new"]["pending"], 4);
}

#[test]
fn dead_retry_all_retries_every_letter_of_the_namespace() {
    let (fixture, _) = Fixture::with_work();
    let elsewhere = fixture.run("dead retry --all --namespace users --json");
    assert_eq!(elsewhere.json()["retried"], 0);
    let retried = fixture.run("dead retry --all --namespace orders --json");
    assert_eq!(retried.succeeds().json()["retried"], 1);
    assert_eq!(fixture.run("dead list --json").json(), json!([]));
}

#[test]
fn dead_drop_needs_yes_then_deletes_the_letter() {
    let (fixture, queued) = Fixture::with_work();
    let id = queued.dead.0;
    let before = fixture.snapshot();
    fixture
        .run(&format!("dead drop {id}"))
        .fails_with(2, "--yes");
    assert_eq!(fixture.snapshot(), before, "nothing dropped without --yes");

    fixture
        .run(&format!("dead drop {id} --yes --json"))
        .succeeds();
    let status = fixture.run("status --json").json();
    assert_eq!(status["dead_letters"], 0);
    assert_eq!(status["new"]["pending"], 3, "the pending work is untouched");
}

#[test]
fn an_id_that_is_not_dead_is_refused_and_no_other_id_is_acted_on() {
    let (fixture, queued) = Fixture::with_work();
    let before = fixture.snapshot();
    let (dead, pending) = (queued.dead.0, queued.pending_new[0].0);
    for command in [
        format!("dead retry {dead} 999"),
        format!("dead retry {pending}"),
        format!("dead drop {dead} {pending} --yes"),
        "dead show 999".to_owned(),
    ] {
        fixture.run(&command).fails_with(4, "is not a dead letter");
        assert_eq!(fixture.snapshot(), before, "{command} changed the queue");
    }
}

#[test]
fn queue_key_lists_a_keys_entries_in_the_order_they_apply() {
    let (fixture, queued) = Fixture::with_work();
    let entries = fixture
        .run("queue key orders new a --json")
        .succeeds()
        .json();
    let ids: Vec<u64> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [queued.pending_new[0].0, queued.pending_new[1].0]);
    assert_eq!(entries[0]["state"], "pending");
    assert_eq!(entries[1]["method"], "update_status");

    let dead = fixture.run("queue key orders new c --json").json();
    assert_eq!(dead[0]["state"], "dead");
    let none = fixture.run("queue key orders old a");
    assert!(none.stdout.contains("nothing queued"), "{}", none.stdout);
    fixture
        .run("queue key orders sideways a")
        .fails_with(2, "expected `old` or `new`");
}
