//! The tests every server queue runs (PostgreSQL and MySQL/MariaDB): the
//! conformance and model-based suites unchanged, several queue handles on
//! separate pools claiming at once, a missing and a newer schema. Each test
//! file instantiates them with [`server_queue_tests!`] for its backend.

/// The shared server-queue tests for one backend: the queue type, the
/// sqlx driver module, its pool and pool options types, the environment
/// variable with the server's URL and the default URL.
#[macro_export]
macro_rules! server_queue_tests {
    ($queue:ident, $driver:path, $pool:ident, $pool_options:ident, $url_var:literal, $default_url:literal) => {
        use std::collections::{BTreeMap, HashSet};
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        use std::time::Duration;

        use dualwrite_runtime::queue::testing::conformance::check_conformance;
        use dualwrite_runtime::queue::testing::model::{check_backend, ModelBackend, ModelConfig};
        use dualwrite_runtime::queue::SchemaError;
        use dualwrite_runtime::queue::{$queue, NewEntry, PoisonPolicy};
        use dualwrite_runtime::{Key, QueueError, ReconciliationQueue, Side};
        use $driver::{$pool, $pool_options};

        fn url() -> String {
            std::env::var($url_var).unwrap_or_else(|_| $default_url.to_owned())
        }

        async fn pool() -> $pool {
            $pool_options::new()
                .max_connections(4)
                .connect(&url())
                .await
                .unwrap_or_else(|error| {
                    panic!("connect to {} (set {}): {error}", $default_url, $url_var)
                })
        }

        /// A table prefix no other run uses.
        fn unique_prefix(suite: &str) -> String {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|since| since.as_nanos() % 1_000_000_000)
                .unwrap_or(0);
            format!(
                "dwq_{suite}_{}_{nanos}_{}_",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
        }

        /// Fresh tables per case, dropped when the case finishes.
        struct ServerBackend {
            suite: &'static str,
        }

        impl ServerBackend {
            async fn fresh(&self, policy: PoisonPolicy) -> Result<$queue, QueueError> {
                $queue::options(pool().await)
                    .table_prefix(unique_prefix(self.suite))
                    .poison_policy(policy)
                    .create_schema(true)
                    .open()
                    .await
            }
        }

        impl ModelBackend for ServerBackend {
            type Queue = $queue;

            async fn open(&mut self) -> Result<$queue, QueueError> {
                self.fresh(PoisonPolicy::Block).await
            }

            async fn open_with_policy(
                &mut self,
                policy: PoisonPolicy,
            ) -> Result<Option<$queue>, QueueError> {
                self.fresh(policy).await.map(Some)
            }

            fn durable(&self) -> bool {
                true
            }

            async fn reopen(&mut self, queue: $queue) -> Result<$queue, QueueError> {
                let prefix = queue.table_prefix().to_owned();
                queue.pool().close().await;
                $queue::options(pool().await)
                    .table_prefix(prefix)
                    .open()
                    .await
            }

            async fn finish(&mut self, queue: $queue) {
                let _ = $queue::uninstall_schema(queue.pool(), queue.table_prefix()).await;
                queue.pool().close().await;
            }
        }

        #[test]
        fn queue_conforms() {
            match check_conformance(ServerBackend { suite: "conf" }) {
                Ok(report) => {
                    assert!(report.skipped().is_empty(), "{:?}", report.skipped());
                    assert_eq!(report.passed().len(), 43, "{:?}", report.passed());
                }
                Err(failure) => panic!("{failure}"),
            }
        }

        #[test]
        fn queue_matches_the_model() {
            let config = ModelConfig::new()
                .cases(24)
                .max_steps(40)
                .short_deadline(Duration::from_millis(30))
                .time_step(Duration::from_millis(45))
                .max_shrink_time(Duration::from_secs(20))
                .with_env();
            if let Err(failure) = check_backend(&config, ServerBackend { suite: "model" }) {
                panic!("{failure}");
            }
        }

        fn entry(key: &str, value: String) -> NewEntry {
            NewEntry {
                namespace: "multi".to_owned(),
                target: Side::New,
                key: Key::from(key),
                method: "put".to_owned(),
                version: 1,
                payload: value.into_bytes(),
                reason: "follower down".to_owned(),
                uncertain: false,
            }
        }

        /// Four handles, each on its own pool (as four processes would be),
        /// drain 8 keys x 40 entries together: no key is ever leased to two
        /// handles at once, and every key's entries are applied in order.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn claimers_on_separate_pools_never_share_a_key_and_keep_its_order() {
            let prefix = unique_prefix("multi");
            let setup = pool().await;
            $queue::install_schema(&setup, &prefix)
                .await
                .expect("install");
            let writer = $queue::options(setup.clone())
                .table_prefix(prefix.clone())
                .open()
                .await
                .expect("open");
            for n in 0..40 {
                for key in 0..8 {
                    writer
                        .append(entry(&format!("k{key}"), format!("{n:03}")))
                        .await
                        .expect("append");
                }
            }
            let held: Arc<Mutex<HashSet<String>>> = Arc::default();
            let applied: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
            let mut claimers = Vec::new();
            for _ in 0..4 {
                let queue = $queue::options(pool().await)
                    .table_prefix(prefix.clone())
                    .open()
                    .await
                    .expect("open");
                let (held, applied) = (Arc::clone(&held), Arc::clone(&applied));
                claimers.push(tokio::spawn(async move {
                    loop {
                        let claim = queue
                            .claim("multi", 3, Duration::from_secs(60))
                            .await
                            .expect("claim");
                        if claim.entries.is_empty() {
                            if queue.stats().await.expect("stats").is_empty() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                        for claimed in &claim.entries {
                            let key = claimed.key.to_string();
                            assert!(
                                held.lock().unwrap().insert(key.clone()),
                                "key {key} leased to two claimers at once"
                            );
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        for claimed in &claim.entries {
                            let key = claimed.key.to_string();
                            applied
                                .lock()
                                .unwrap()
                                .entry(key.clone())
                                .or_default()
                                .push(String::from_utf8(claimed.payload.clone()).unwrap());
                            held.lock().unwrap().remove(&key);
                            queue.complete(claimed.lease).await.expect("complete");
                        }
                    }
                }));
            }
            for claimer in claimers {
                claimer.await.expect("claimer");
            }
            let expected: Vec<String> = (0..40).map(|n| format!("{n:03}")).collect();
            let applied = applied.lock().unwrap().clone();
            assert_eq!(applied.len(), 8);
            for (key, values) in applied.iter() {
                assert_eq!(values, &expected, "key {key} out of order");
            }
            $queue::uninstall_schema(&setup, &prefix)
                .await
                .expect("drop");
        }

        #[tokio::test]
        async fn opening_without_the_schema_names_what_is_missing_and_how_to_install_it() {
            let prefix = unique_prefix("missing");
            let error = $queue::options(pool().await)
                .table_prefix(prefix.clone())
                .open()
                .await
                .expect_err("no schema");
            let QueueError::Backend(source) = &error else {
                panic!("{error}");
            };
            let schema = source.downcast_ref::<SchemaError>().expect("a SchemaError");
            assert!(
                schema.message().contains(&format!("{prefix}entries")),
                "{schema}"
            );
            assert!(schema.message().contains("install_schema"), "{schema}");
        }

        #[tokio::test]
        async fn a_newer_schema_version_is_refused() {
            let prefix = unique_prefix("newer");
            let pool = pool().await;
            $queue::install_schema(&pool, &prefix)
                .await
                .expect("install");
            sqlx::query(&format!(
                "UPDATE {prefix}meta SET value = value + 1 WHERE name = 'schema_version'"
            ))
            .execute(&pool)
            .await
            .expect("bump");
            let error = $queue::options(pool.clone())
                .table_prefix(prefix.clone())
                .open()
                .await
                .expect_err("newer schema");
            assert!(error.to_string().contains("newer release"), "{error}");
            $queue::uninstall_schema(&pool, &prefix)
                .await
                .expect("drop");
        }
    };
}
