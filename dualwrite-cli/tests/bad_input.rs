//! Bad input: one line naming the problem, a non-zero exit, and no change
//! to any store (a missing file is not created).

mod support;

use dualwrite_runtime::Stage;
use support::{run, snapshot, Fixture};

#[test]
fn an_unknown_stage_is_named() {
    let fixture = Fixture::empty();
    fixture.store_stage(Stage::Shadow);
    let before = fixture.snapshot();
    run(&["stage", "set", "sideways", "--queue", &fixture.url()])
        .fails_with(2, "unknown stage `sideways`");
    assert_eq!(fixture.snapshot(), before);
}

#[test]
fn a_malformed_url_is_named() {
    run(&["status", "--queue", "queue.db"]).fails_with(2, "`queue.db` is not a store URL");
    run(&["status", "--queue", "redis://cache"]).fails_with(2, "unknown scheme");
    run(&["status", "--queue", "sqlite:"]).fails_with(2, "needs the path");
    let output = support::dualwrite()
        .args(["status"])
        .env("DUALWRITE_QUEUE", "nonsense")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("`nonsense` is not a store URL"));
}

#[cfg(all(feature = "postgres", feature = "mysql"))]
#[test]
fn a_server_queues_password_is_never_shown() {
    let port = closed_port();
    for url in [
        format!("postgres://app:secret@127.0.0.1:{port}/orders"),
        format!("mysql://app:secret@127.0.0.1:{port}/orders"),
    ] {
        for command in [&["status"][..], &["dead", "list"], &["stage", "get"]] {
            let mut args = command.to_vec();
            args.extend(["--queue", &url]);
            let ran = run(&args);
            ran.fails_with(3, "cannot connect");
            assert!(!ran.stderr.contains("secret"), "{}", ran.stderr);
        }
    }
}

#[test]
fn no_queue_at_all_is_a_usage_error() {
    run(&["status"]).fails_with(2, "no queue given");
    run(&["dead", "list"]).fails_with(2, "no queue given");
    run(&["stage", "get"]).fails_with(2, "no stage source given");
}

#[test]
fn a_missing_file_is_reported_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.db");
    let url = format!("sqlite:{}", path.display());
    for args in [
        vec!["status"],
        vec!["dead", "list"],
        vec!["dead", "retry", "1"],
        vec!["queue", "key", "orders", "new", "a"],
        vec!["stage", "get"],
        vec!["stage", "set", "shadow", "--force", "--reason", "x"],
    ] {
        let mut args = args.clone();
        args.extend(["--queue", &url]);
        run(&args).fails_with(3, "the file does not exist");
        assert!(!path.exists(), "{args:?} created the file");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{args:?} left files"
        );
    }
    let in_missing_dir = format!("sqlite:{}", dir.path().join("no/such/dir/q.db").display());
    run(&["status", "--queue", &in_missing_dir]).fails_with(3, "does not exist");
    run(&[
        "status",
        "--queue",
        &format!("sqlite:{}", dir.path().display()),
    ])
    .fails_with(3, "not a file");
}

#[test]
fn a_file_that_is_not_ours_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, b"these are not the rows you are looking for\n").unwrap();
    let corrupt = dir.path().join("corrupt.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(std::iter::repeat_n(0xA5u8, 8192));
    std::fs::write(&corrupt, bytes).unwrap();
    let app = dir.path().join("app.db");
    support::block_on(async {
        use sqlx::ConnectOptions;
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&app)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO users VALUES (1, 'ada')")
            .execute(&mut conn)
            .await
            .unwrap();
    });
    for (path, needle) in [
        (&empty, "the file is empty"),
        (&text, "not a SQLite database"),
        (&app, "not a dualwrite queue"),
        (&corrupt, "cannot read the file"),
    ] {
        let bytes = std::fs::read(path).unwrap();
        let url = format!("sqlite:{}", path.display());
        for args in [
            vec!["status"],
            vec!["dead", "drop", "1", "--yes"],
            vec!["stage", "get"],
            vec!["stage", "set", "live", "--force", "--reason", "x"],
        ] {
            let mut args = args.clone();
            args.extend(["--queue", &url]);
            run(&args).fails_with(3, needle);
            assert_eq!(
                std::fs::read(path).unwrap(),
                bytes,
                "{args:?} changed {}",
                path.display()
            );
        }
    }
    assert!(snapshot(&app).contains("ada"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| {
            name.ends_with("-wal") || name.ends_with("-shm") || name.ends_with("-journal")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn help_documents_the_exit_codes() {
    let ran = run(&["--help"]);
    assert_eq!(ran.code, 0);
    for needle in [
        "Exit codes:",
        "differences found",
        "could not run",
        "refused",
    ] {
        assert!(ran.stdout.contains(needle), "{needle}: {}", ran.stdout);
    }
}

/// A port nothing listens on: bound, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

#[cfg(all(feature = "postgres", feature = "mysql"))]
#[test]
fn an_unreachable_server_is_named_at_once_with_its_reason() {
    let port = closed_port();
    let started = std::time::Instant::now();
    for url in [
        format!("postgres://postgres@127.0.0.1:{port}/test"),
        format!("mysql://root@127.0.0.1:{port}/test"),
    ] {
        let ran = run(&["status", "--queue", &url]);
        ran.fails_with(3, &format!("queue {url}: cannot connect"));
        assert!(
            ran.stderr.contains("refused"),
            "the server's own reason: {}",
            ran.stderr
        );
        run(&[
            "verify",
            "--old",
            &url,
            "--new",
            "sqlite:/nonexistent.db",
            "--table",
            "t",
            "--key",
            "id",
        ])
        .fails_with(3, "cannot connect");
    }
    // Refused connections are not retried for the whole connect timeout
    // (10 s each) before being reported.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
