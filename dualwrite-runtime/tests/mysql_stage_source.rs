//! The shared stage in MySQL or MariaDB (`stage::MySqlStageSource`, feature
//! `mysql`, server at `DUALWRITE_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`): the suite of `stage_source_suite`.

mod stage_source_suite;

use std::time::Duration;

use dualwrite_runtime::queue::MySqlQueue;
use dualwrite_runtime::stage::{Fence, MySqlStageSource, StageSource};
use dualwrite_runtime::{Stage, StageHandle};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

stage_source_suite::stage_source_suite! {
    queue: MySqlQueue,
    source: MySqlStageSource,
    pool: MySqlPool,
    pool_options: MySqlPoolOptions,
    server: "MySQL",
    url_variable: "DUALWRITE_MYSQL_URL",
    default_url: "mysql://root@127.0.0.1:3306/test",
}
