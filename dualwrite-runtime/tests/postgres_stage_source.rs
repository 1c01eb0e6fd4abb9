//! The shared stage in PostgreSQL (`stage::PostgresStageSource`, feature
//! `postgres`, server at `DUALWRITE_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`): the suite of
//! `stage_source_suite`.

mod stage_source_suite;

use std::time::Duration;

use dualwrite_runtime::queue::PostgresQueue;
use dualwrite_runtime::stage::{Fence, PostgresStageSource, StageSource};
use dualwrite_runtime::{Stage, StageHandle};
use sqlx::postgres::{PgPool, PgPoolOptions};

stage_source_suite::stage_source_suite! {
    queue: PostgresQueue,
    source: PostgresStageSource,
    pool: PgPool,
    pool_options: PgPoolOptions,
    server: "PostgreSQL",
    url_variable: "DUALWRITE_PG_URL",
    default_url: "postgres://postgres@127.0.0.1:5432/test",
}
