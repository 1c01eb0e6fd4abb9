//! `dualwrite backfill | verify | repair` between two SQLite databases with
//! different schemas: the old one's columns are renamed by a query.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{block_on, run, snapshot, Fixture, Ran};

const RECORDS: i64 = 2_500;
const OLD_QUERY: &str =
    "SELECT order_no AS id, amount AS total_cents, status, updated_at FROM legacy_orders";

struct Databases {
    dir: tempfile::TempDir,
    old: PathBuf,
    new: PathBuf,
}

fn execute(path: &Path, statements: &[&str]) {
    block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        for statement in statements {
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
    });
}

impl Databases {
    /// The old database with its history, and an empty new one.
    fn new() -> Databases {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.db");
        let new = dir.path().join("new.db");
        let rows: Vec<String> = (1..=RECORDS)
            .map(|n| {
                format!(
                    "({n}, {}, 'paid', '2026-01-01T00:00:{:02}.123456Z')",
                    n * 100,
                    n % 60
                )
            })
            .collect();
        execute(
            &old,
            &[
                "CREATE TABLE legacy_orders (order_no INTEGER PRIMARY KEY, amount INTEGER, status TEXT, updated_at TEXT)",
                &format!("INSERT INTO legacy_orders VALUES {}", rows.join(",")),
            ],
        );
        execute(
            &new,
            &["CREATE TABLE orders (id INTEGER PRIMARY KEY, total_cents INTEGER, status TEXT, updated_at TEXT)"],
        );
        Databases { dir, old, new }
    }

    /// Runs `command` on both databases, the old side through the query.
    fn run(&self, command: &[&str]) -> Ran {
        let (old, new) = (self.url(&self.old), self.url(&self.new));
        let mut args = command.to_vec();
        args.extend([
            "--old",
            &old,
            "--new",
            &new,
            "--old-query",
            OLD_QUERY,
            "--new-table",
            "orders",
            "--key",
            "id",
        ]);
        run(&args)
    }

    fn url(&self, path: &Path) -> String {
        format!("sqlite:{}", path.display())
    }

    fn keys_file(&self) -> String {
        self.dir
            .path()
            .join("differences.jsonl")
            .display()
            .to_string()
    }

    fn snapshots(&self) -> (String, String) {
        (snapshot(&self.old), snapshot(&self.new))
    }
}

fn backfilled() -> Databases {
    let databases = Databases::new();
    let ran = databases.run(&[
        "backfill",
        "--json",
        "--batch-size",
        "500",
        "--version-column",
        "updated_at",
    ]);
    let report = ran.succeeds().json();
    assert_eq!(report["read"], RECORDS);
    assert_eq!(report["written"], RECORDS);
    databases
}

#[test]
fn backfill_copies_every_record_across_schemas_and_verify_finds_them_equal() {
    let databases = backfilled();
    let report = databases.run(&["verify", "--json"]).succeeds().json();
    assert_eq!(report["matching"], RECORDS);
    assert_eq!(report["different"], 0);
    assert_eq!(report["missing_in_new"], 0);
    assert_eq!(report["extra_in_new"], 0);
    // A second backfill finds the new store up to date.
    let again = databases.run(&["backfill", "--json", "--version-column", "updated_at"]);
    let again = again.succeeds().json();
    assert_eq!(again["written"], 0);
    assert_eq!(again["skipped"], RECORDS);
}

#[test]
fn verify_reports_each_kind_of_difference_and_repair_fixes_them() {
    let databases = backfilled();
    execute(
        &databases.new,
        &[
            "UPDATE orders SET total_cents = 1 WHERE id = 5",
            "DELETE FROM orders WHERE id = 6",
            "INSERT INTO orders VALUES (9999, 1, 'paid', 'x')",
            "UPDATE orders SET status = 'PAID  ' WHERE id = 7",
            "UPDATE orders SET updated_at = '2026-01-01T00:00:08.123Z' WHERE id = 8",
        ],
    );
    let raw = databases.run(&["verify", "--json"]);
    assert_eq!(raw.code, 1, "differences found: {}", raw.stderr);
    assert_eq!(
        raw.json()["different"],
        3,
        "5, and 7 and 8 without normalising"
    );

    let keys = databases.keys_file();
    let normalised = databases.run(&[
        "verify",
        "--json",
        "--keys-to",
        &keys,
        "--trim-end",
        "status",
        "--lowercase",
        "status",
        "--timestamp-precision",
        "updated_at=3",
    ]);
    assert_eq!(normalised.code, 1, "{}", normalised.stderr);
    let report = normalised.json();
    assert_eq!(report["different"], 1);
    assert_eq!(report["missing_in_new"], 1);
    assert_eq!(report["extra_in_new"], 1);
    let lines: Vec<Value> = std::fs::read_to_string(&keys)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let found: Vec<(i64, &str)> = lines
        .iter()
        .map(|line| {
            (
                line["key"].as_i64().unwrap(),
                line["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (5, "different"),
            (6, "missing_in_new"),
            (9999, "extra_in_new")
        ]
    );

    let text = databases.run(&[
        "verify",
        "--trim-end-all",
        "--lowercase",
        "status",
        "--ignore",
        "updated_at",
    ]);
    assert!(
        text.stdout.contains("key 5: different (total_cents)"),
        "{}",
        text.stdout
    );

    let repaired = databases
        .run(&["repair", "--json", "--keys", &keys])
        .succeeds()
        .json();
    assert_eq!(repaired["written"], 2);
    assert_eq!(repaired["deleted"], 1);
    let clean = databases.run(&[
        "verify",
        "--json",
        "--trim-end",
        "status",
        "--lowercase",
        "status",
        "--timestamp-precision",
        "updated_at=3",
    ]);
    assert_eq!(clean.succeeds().json()["matching"], RECORDS);
}

#[test]
fn repair_beside_a_live_service_queues_key_level_syncs() {
    let databases = backfilled();
    execute(&databases.new, &["DELETE FROM orders WHERE id IN (10, 11)"]);
    let queue = Fixture::empty();
    let before = databases.snapshots();
    let live = [
        "--queue",
        &queue.url(),
        "--namespace",
        "orders",
        "--records",
        "orders",
    ];
    let mut command = vec!["repair", "--json", "10", "11"];
    command.extend(live);
    let report = databases.run(&command).succeeds().json();
    assert_eq!(report["queued"], 2);
    assert_eq!(
        databases.snapshots(),
        before,
        "the worker applies them, not the tool"
    );
    let status = queue.run("status --json").json();
    assert_eq!(status["new"]["pending"], 2);
    let line = queue.run("queue key orders new 10 --json").json();
    assert_eq!(line[0]["method"], "dualwrite:sync_key");
}

#[test]
fn a_killed_backfill_resumes_from_its_checkpoint() {
    let databases = Databases::new();
    let checkpoint = databases.dir.path().join("backfill.json");
    let shown = checkpoint.display().to_string();
    let (old, new) = (databases.url(&databases.old), databases.url(&databases.new));
    // 2 500 records at 500 a second: killed after about half of them,
    // once the checkpoint (saved every second) has been written.
    let killed = support::dualwrite()
        .args([
            "backfill",
            "--old",
            &old,
            "--new",
            &new,
            "--old-query",
            OLD_QUERY,
        ])
        .args([
            "--new-table",
            "orders",
            "--key",
            "id",
            "--batch-size",
            "100",
        ])
        .args(["--rate", "500", "--checkpoint", &shown])
        .timeout(std::time::Duration::from_millis(2_500))
        .output()
        .unwrap();
    assert!(
        !killed.status.success(),
        "the first run was killed before the end"
    );
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
    assert_eq!(saved["finished"], false);
    let stopped_at = saved["state"]["cursor"].as_i64().expect("a cursor");
    assert!((1..RECORDS).contains(&stopped_at), "{saved}");

    let resumed = databases.run(&["backfill", "--json", "--checkpoint", &shown]);
    let resumed = resumed.succeeds().json();
    assert_eq!(resumed["resumed_after"], stopped_at);
    assert_eq!(
        resumed["read"], RECORDS,
        "the counts include the killed run's"
    );
    let verified = databases.run(&["verify", "--json"]).succeeds().json();
    assert_eq!(verified["matching"], RECORDS);
}

#[test]
fn progress_goes_to_stderr_as_plain_lines_when_not_on_a_terminal() {
    let databases = Databases::new();
    let ran = databases.run(&["backfill", "--batch-size", "100"]);
    ran.succeeds();
    let first = ran.stderr.lines().next().expect("a progress line");
    assert!(first.starts_with("backfill: "), "{}", ran.stderr);
    assert!(first.contains("records,"), "{}", ran.stderr);
    assert!(
        !ran.stderr.contains('\x1b'),
        "no terminal codes into a pipe"
    );
    assert!(
        ran.stdout.starts_with("backfill: read 2500, wrote 2500"),
        "{}",
        ran.stdout
    );
}

#[test]
fn a_missing_table_or_column_is_named_and_nothing_is_written() {
    let databases = Databases::new();
    let before = databases.snapshots();
    let (old, new) = (databases.url(&databases.old), databases.url(&databases.new));
    let base = ["backfill", "--old", &old, "--new", &new, "--key", "id"];
    let mut missing_table = base.to_vec();
    missing_table.extend(["--old-query", OLD_QUERY, "--new-table", "nosuch"]);
    run(&missing_table).fails_with(3, "nosuch");
    let mut missing_column = base.to_vec();
    missing_column.extend([
        "--old-query",
        OLD_QUERY,
        "--new-table",
        "orders",
        "--columns",
        "total_cents,nosuch",
    ]);
    run(&missing_column).fails_with(3, "nosuch");
    let mut bad_query = base.to_vec();
    bad_query.extend([
        "--old-query",
        "SELECT nothing FROM legacy_orders",
        "--new-table",
        "orders",
    ]);
    run(&bad_query).fails_with(3, "old database");
    let mut read_only_target = base.to_vec();
    read_only_target.extend([
        "--old-query",
        OLD_QUERY,
        "--new-query",
        "SELECT * FROM orders",
    ]);
    run(&read_only_target).fails_with(2, "--new-table");
    assert_eq!(databases.snapshots(), before);
}

#[test]
fn a_missing_database_is_not_created_and_bad_options_are_named() {
    let databases = Databases::new();
    let before = databases.snapshots();
    let typo = databases.dir.path().join("nwe.db");
    let old = databases.url(&databases.old);
    let typo_url = databases.url(&typo);
    let verify = [
        "verify",
        "--old",
        &old,
        "--old-query",
        OLD_QUERY,
        "--new-table",
        "orders",
        "--key",
        "id",
    ];
    let mut missing = verify.to_vec();
    missing.extend(["--new", &typo_url]);
    run(&missing).fails_with(3, "does not exist");
    assert!(!typo.exists(), "the typo was not created");
    let mut malformed = verify.to_vec();
    malformed.extend(["--new", "new.db"]);
    run(&malformed).fails_with(2, "`new.db` is not a store URL");
    // Nothing listens on port 1: the server is named as unreachable, its
    // password never shown.
    for url in [
        "postgres://app:secret@127.0.0.1:1/orders",
        "mysql://app:secret@127.0.0.1:1/orders",
    ] {
        let mut unreachable = verify.to_vec();
        unreachable.extend(["--new", url]);
        let ran = run(&unreachable);
        ran.fails_with(3, "cannot connect");
        assert!(!ran.stderr.contains("secret"), "{}", ran.stderr);
    }
    let mut bad_port = verify.to_vec();
    bad_port.extend(["--new", "postgres://app@127.0.0.1:port/orders"]);
    run(&bad_port).fails_with(2, "new database");
    databases
        .run(&["verify", "--namespace", "orders"])
        .fails_with(2, "--records");
    databases
        .run(&["repair"])
        .fails_with(2, "no keys to repair");
    databases
        .run(&["repair", "--keys", "/nonexistent/keys.jsonl"])
        .fails_with(3, "keys file");
    databases
        .run(&["backfill", "--target", "old"])
        .fails_with(2, "--target old");
    run(&["verify", "--new", &old, "--old", &old]).fails_with(2, "--key");
    assert_eq!(databases.snapshots(), before);
}
