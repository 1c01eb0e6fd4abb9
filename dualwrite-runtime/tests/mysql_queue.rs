//! The MySQL/MariaDB queue (feature `mysql`), against the server at `DUALWRITE_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306/test`): the shared server-queue tests of
//! `server_queue/mod.rs`.

#[macro_use]
mod server_queue;

server_queue_tests!(
    MySqlQueue,
    sqlx::mysql,
    MySqlPool,
    MySqlPoolOptions,
    "DUALWRITE_MYSQL_URL",
    "mysql://root@127.0.0.1:3306/test"
);
