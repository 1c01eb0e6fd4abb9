//! The PostgreSQL queue (feature `postgres`), against the server at `DUALWRITE_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`): the shared server-queue tests of
//! `server_queue/mod.rs`.

#[macro_use]
mod server_queue;

server_queue_tests!(
    PostgresQueue,
    sqlx::postgres,
    PgPool,
    PgPoolOptions,
    "DUALWRITE_PG_URL",
    "postgres://postgres@127.0.0.1:5432/test"
);
