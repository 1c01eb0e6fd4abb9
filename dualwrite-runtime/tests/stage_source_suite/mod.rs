//! The stage-source tests every server backend runs: instances on separate
//! pools follow each other's moves, a fenced move goes on only once every
//! fenced instance acknowledged its announcement, a stale store is refused,
//! and missing tables are named with the call that installs them.

/// Expands the suite for one server: its queue and stage-source types, its
/// sqlx pool and pool options, the variable holding its URL and the URL
/// used without it.
macro_rules! stage_source_suite {
    (
        queue: $queue:ty,
        source: $source:ty,
        pool: $pool:ty,
        pool_options: $pool_options:ty,
        server: $server:literal,
        url_variable: $url_variable:literal,
        default_url: $default_url:literal $(,)?
    ) => {
        fn url() -> String {
            std::env::var($url_variable).unwrap_or_else(|_| $default_url.to_owned())
        }

        async fn pool() -> $pool {
            <$pool_options>::new()
                .max_connections(2)
                .connect(&url())
                .await
                .expect(concat!("connect to ", $server, " (set ", $url_variable, ")"))
        }

        fn unique_prefix(name: &str) -> String {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|since| since.as_nanos() % 1_000_000_000)
                .unwrap_or(0);
            format!("dws_{name}_{}_{nanos}_", std::process::id())
        }

        async fn fenced(prefix: &str, instance: &str, poll: Duration) -> StageHandle {
            let queue = <$queue>::options(pool().await)
                .table_prefix(prefix)
                .open()
                .await
                .expect("open the queue");
            let source = queue.stage_source("orders").await.expect("stage source");
            StageHandle::with_fenced_source(
                source,
                Stage::Off,
                poll,
                Fence::new(instance)
                    .lease(Duration::from_millis(600))
                    .patience(Duration::from_secs(5)),
            )
            .await
            .expect("fenced handle")
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_fenced_move_waits_for_an_instance_on_another_pool_to_acknowledge_it() {
            let prefix = unique_prefix("fence");
            let setup = pool().await;
            <$queue>::install_schema(&setup, &prefix)
                .await
                .expect("install");
            let mover = fenced(&prefix, "mover", Duration::from_millis(20)).await;
            let laggard = fenced(&prefix, "laggard", Duration::from_millis(150)).await;
            mover.set(Stage::DualWrite).await.expect("fenced move");
            let source = <$source>::open(setup.clone(), &prefix, "orders")
                .await
                .expect("open");
            let stored = source.load().await.expect("load").expect("a stage");
            assert_eq!(stored.record.stage, Stage::DualWrite);
            assert_eq!(stored.record.moving_to, None);
            // The move was stored in two steps (announce `moving_to`, then the
            // stage); it went on only once the laggard, polling another pool,
            // acknowledged the announcement, so it held its writes from then on.
            let acks = source.acknowledgements().await.expect("acks");
            let laggard_ack = acks
                .iter()
                .find(|ack| ack.instance == "laggard")
                .expect("the laggard acknowledges");
            assert!(
                laggard_ack.version >= stored.version - 1,
                "the move went on before the laggard applied its announcement: {acks:?}, stage version {}",
                stored.version
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while laggard.get() != Stage::DualWrite {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the laggard never followed the move"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // A store against a stale version is refused.
            let stale = source
                .store(Some(stored.version - 1), &stored.record)
                .await
                .expect("store");
            assert_eq!(stale, None);
            <$queue>::uninstall_schema(&setup, &prefix)
                .await
                .expect("drop");
        }

        #[tokio::test]
        async fn a_stage_source_without_its_tables_names_them_and_the_install_call() {
            let prefix = unique_prefix("missing");
            let error = <$source>::open(pool().await, &prefix, "orders")
                .await
                .expect_err("no tables");
            assert!(error.message.contains(&format!("{prefix}stage")), "{error}");
            assert!(error.message.contains("install_schema"), "{error}");
        }
    };
}
pub(crate) use stage_source_suite;
