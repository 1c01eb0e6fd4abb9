//! `dualwrite status`: what the queue file says, as text and as JSON.

mod support;

use dualwrite_runtime::Stage;
use support::Fixture;

#[test]
fn status_counts_queued_work_per_store_and_exits_1_on_dead_letters() {
    let (fixture, _) = Fixture::with_work();
    let ran = fixture.run("status");
    assert_eq!(ran.code, 1, "dead letters are differences: {}", ran.stderr);
    let new_line = ran
        .stdout
        .lines()
        .find(|line| line.starts_with("new store"))
        .expect("a line for the new store");
    let figures: Vec<&str> = new_line.split_whitespace().collect();
    // new store, pending 3, in flight 0, dead 1, blocked keys 1, oldest age
    assert_eq!(&figures[2..6], ["3", "0", "1", "1"], "{}", ran.stdout);
    for needle in ["dead letters 1", "none stored", "mismatches   unknown here"] {
        assert!(ran.stdout.contains(needle), "{needle}: {}", ran.stdout);
    }
}

#[test]
fn status_json_has_the_counts_the_stage_and_no_invented_mismatch_rate() {
    let (fixture, _) = Fixture::with_work();
    fixture.store_stage(Stage::Shadow);
    let ran = fixture.run("status --json");
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    let status = ran.json();
    assert_eq!(status["new"]["pending"], 3);
    assert_eq!(status["new"]["dead"], 1);
    assert_eq!(status["new"]["blocked_keys"], 1);
    assert_eq!(status["old"]["pending"], 0);
    assert!(status["old"]["oldest_pending_age_seconds"].is_null());
    let age = &status["new"]["oldest_pending_age_seconds"];
    assert!(age.as_f64().expect("an age") >= 0.0);
    assert_eq!(status["dead_letters"], 1);
    assert_eq!(status["stage"]["stage"], "shadow");
    assert_eq!(status["stage"]["version"], 1);
    assert!(status["mismatch_rate"].is_null());
    let note = status["mismatch_rate_note"].as_str().unwrap();
    assert!(note.contains("dualwrite_mismatches_total"), "{note}");
}

#[test]
fn status_of_a_drained_queue_exits_0() {
    let fixture = Fixture::empty();
    let status = fixture.run("status --json").succeeds().json();
    assert_eq!(status["dead_letters"], 0);
}

#[test]
fn status_reads_the_queue_from_the_environment() {
    let fixture = Fixture::empty();
    let output = support::dualwrite()
        .args(["status", "--json"])
        .env("DUALWRITE_QUEUE", fixture.url())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
}

#[test]
fn status_watch_prints_one_snapshot_per_refresh_when_not_on_a_terminal() {
    let (fixture, _) = Fixture::with_work();
    let ran = fixture.run("status --watch --count 3 --interval 10ms --json");
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    let snapshots: Vec<serde_json::Value> = ran
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(snapshots.len(), 3);
    assert!(snapshots
        .iter()
        .all(|snapshot| snapshot["new"]["pending"] == 3));

    let text = fixture.run("status --watch --count 2 --interval 10ms");
    assert_eq!(
        text.stdout.matches("taken at").count(),
        2,
        "{}",
        text.stdout
    );
    assert!(
        !text.stdout.contains('\x1b'),
        "no terminal codes into a pipe"
    );
}

#[test]
fn status_sums_the_mismatch_rate_over_every_instances_metrics() {
    let fixture = Fixture::empty();
    let one = support::serve_metrics(vec![support::comparisons(600, 3)]);
    let two = support::serve_metrics(vec![support::comparisons(400, 7)]);
    let status = fixture
        .run(&format!("status --json --metrics {one} --metrics {two}"))
        .succeeds()
        .json();
    assert_eq!(status["compared"], 1000.0, "{status}");
    assert_eq!(status["mismatched"], 10.0, "{status}");
    assert_eq!(status["mismatch_rate"], 0.01, "{status}");
    let note = status["mismatch_rate_note"].as_str().unwrap();
    assert!(note.contains("since the instances started"), "{note}");

    let text = fixture.run(&format!("status --metrics {one},{two}"));
    assert!(
        text.stdout
            .contains("mismatches   1.00% (10 of 1000 compared reads)"),
        "{}",
        text.stdout
    );
}

#[test]
fn status_watch_shows_the_mismatch_rate_of_each_interval() {
    let fixture = Fixture::empty();
    // 1% until the first refresh, then 20 of the next 100 reads.
    let instance = support::serve_metrics(vec![
        support::comparisons(1000, 10),
        support::comparisons(1100, 30),
    ]);
    let ran = fixture
        .run(&format!(
            "status --json --watch --count 2 --interval 50ms --metrics {instance}"
        ))
        .succeeds()
        .stdout
        .clone();
    let snapshots: Vec<serde_json::Value> = ran
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(snapshots[0]["mismatch_rate"], 0.01);
    assert_eq!(snapshots[1]["mismatch_rate"], 0.2);
    assert_eq!(snapshots[1]["compared"], 100.0);
    let note = snapshots[1]["mismatch_rate_note"].as_str().unwrap();
    assert!(note.contains("over the last 50ms"), "{note}");
}

#[test]
fn an_unreachable_metrics_endpoint_is_named() {
    let fixture = Fixture::empty();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{closed}/metrics");
    fixture
        .run(&format!("status --metrics {url}"))
        .fails_with(3, &format!("metrics {url}: cannot scrape"));
}
