//! The new profiles service: an `axum` HTTP API over its own SQLite
//! database, started in process on a loopback port.
//!
//! | request | answer |
//! |---|---|
//! | `GET /profiles` | `200` and every profile |
//! | `GET /profiles/{id}` | `200` and the profile, or `404` |
//! | `PUT /profiles/{id}` `{email, name}` | `204`; `422` if the email has no `@` or the name is empty |
//! | `DELETE /profiles/{id}` | `204`, also when there was none |
//! | `POST /profiles/{id}/points` `{points}` | `204`; `404` if there is no such profile |
//!
//! The three writes take an `Idempotency-Key` header. The key of a write
//! that succeeded is stored in the transaction that made the write; a
//! request that repeats it gets `204` again and changes nothing. That is
//! what makes the monolith's at-least-once replays safe for the increment.
//!
//! For the example's faults, [`ProfilesService`] can answer `503` to
//! everything (a deploy draining the old version), stop and restart its
//! listener on the same port (the deploy itself), and answer writes late
//! (a write that lands after the caller gave up).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteRow};
use sqlx::{Row, Sqlite, Transaction};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::profiles::Profile;

/// The header the service's writes read their idempotency key from.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The body of `PUT /profiles/{id}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProfileBody {
    pub email: String,
    pub name: String,
}

/// The body of `POST /profiles/{id}/points`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PointsBody {
    pub points: i64,
}

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// What the handlers share.
struct Inner {
    db: SqlitePool,
    /// `false` while "deploying": every request gets `503`.
    ready: AtomicBool,
    /// How long a write waits after committing before it answers.
    answer_delay_ms: AtomicU64,
    /// Writes that repeated an idempotency key and were skipped.
    repeats_skipped: AtomicU64,
}

/// The service, and the listener it serves on while it runs.
pub struct ProfilesService {
    inner: Arc<Inner>,
    address: SocketAddr,
    running: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl ProfilesService {
    /// Opens (creating) the service's database in `dir` and starts serving
    /// on a free loopback port.
    pub async fn start(dir: &Path) -> Result<ProfilesService, Box<dyn std::error::Error>> {
        let options = SqliteConnectOptions::new()
            .filename(dir.join("profiles-service.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let db = SqlitePool::connect_with(options).await?;
        for statement in SCHEMA.split(';') {
            sqlx::query(statement).execute(&db).await?;
        }
        let inner = Arc::new(Inner {
            db,
            ready: AtomicBool::new(true),
            answer_delay_ms: AtomicU64::new(0),
            repeats_skipped: AtomicU64::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let service = ProfilesService {
            inner,
            address,
            running: Mutex::new(None),
        };
        service.serve(listener);
        Ok(service)
    }

    /// Where the service listens, as the client's base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `false`: answer `503 Service Unavailable` to every request, as a
    /// version being replaced does; `true`: serve again.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
    }

    /// Writes commit, then wait this long before they answer.
    pub fn set_answer_delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.inner.answer_delay_ms.store(millis, Ordering::SeqCst);
    }

    /// How many writes repeated an idempotency key and changed nothing.
    pub fn repeats_skipped(&self) -> u64 {
        self.inner.repeats_skipped.load(Ordering::SeqCst)
    }

    /// Stops the listener (requests in progress finish); connections are
    /// refused until [`restart`](Self::restart).
    pub async fn stop(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some((stop, serving)) = running {
            let _ = stop.send(());
            let _ = serving.await;
        }
    }

    /// Listens again on the same port, with the same database.
    pub async fn restart(&self) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.address).await?;
        self.serve(listener);
        Ok(())
    }

    /// Stops the listener and closes the database.
    pub async fn close(&self) {
        self.stop().await;
        self.inner.db.close().await;
    }

    fn serve(&self, listener: TcpListener) {
        let state = Arc::clone(&self.inner);
        let routes = Router::new()
            .route("/profiles", get(list_profiles))
            .route(
                "/profiles/{id}",
                get(get_profile).put(put_profile).delete(delete_profile),
            )
            .route("/profiles/{id}/points", post(add_points))
            .layer(middleware::from_fn_with_state(
                Arc::clone(&state),
                readiness,
            ))
            .with_state(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let served = axum::serve(listener, routes).with_graceful_shutdown(shutdown);
            if let Err(error) = served.await {
                eprintln!("the profiles service stopped on an error: {error}");
            }
        });
        *self.running.lock().unwrap() = Some((stop, serving));
    }
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS profiles (id INTEGER PRIMARY KEY,
        email TEXT NOT NULL, name TEXT NOT NULL, points INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE IF NOT EXISTS idempotency_keys (key TEXT PRIMARY KEY,
        request TEXT NOT NULL, at TEXT NOT NULL DEFAULT (datetime('now')))";

type Shared = State<Arc<Inner>>;

/// An error answer: a status and a message in [`ErrorBody`].
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(error: sqlx::Error) -> Refusal {
        Refusal(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

async fn readiness(State(state): Shared, request: Request, next: Next) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        return next.run(request).await;
    }
    let mut answer = Refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "the profiles service is being deployed".into(),
    )
    .into_response();
    let retry_after = HeaderValue::from_static("1");
    answer.headers_mut().insert("retry-after", retry_after);
    answer
}

fn from_row(row: SqliteRow) -> Result<Profile, sqlx::Error> {
    Ok(Profile {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        points: row.try_get("points")?,
    })
}

async fn list_profiles(State(state): Shared) -> Result<Json<Vec<Profile>>, Refusal> {
    let rows = sqlx::query("SELECT * FROM profiles ORDER BY id")
        .fetch_all(&state.db)
        .await?;
    let profiles = rows.into_iter().map(from_row).collect::<Result<_, _>>()?;
    Ok(Json(profiles))
}

async fn get_profile(State(state): Shared, UrlPath(id): UrlPath<i64>) -> Result<Response, Refusal> {
    let row = sqlx::query("SELECT * FROM profiles WHERE id = ?")
        .bind(id)
        .fetch_optional(&state.db)
        .await?;
    match row {
        Some(row) => Ok(Json(from_row(row)?).into_response()),
        None => Err(Refusal(StatusCode::NOT_FOUND, format!("no profile {id}"))),
    }
}

/// A write's transaction, begun by recording its idempotency key (if the
/// request has one). `None`: the key was recorded before, the write was
/// applied then, and the request is answered as it was.
async fn begin_write(
    state: &Inner,
    headers: &HeaderMap,
    request: String,
) -> Result<Option<Transaction<'static, Sqlite>>, Refusal> {
    let mut tx = state.db.begin().await?;
    let Some(key) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(Some(tx));
    };
    let key = key.to_str().map_err(|_| {
        let message = "the Idempotency-Key header is not text".to_owned();
        Refusal(StatusCode::BAD_REQUEST, message)
    })?;
    let recorded = sqlx::query(
        "INSERT INTO idempotency_keys (key, request) VALUES (?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(key)
    .bind(&request)
    .execute(&mut *tx)
    .await?;
    if recorded.rows_affected() == 1 {
        return Ok(Some(tx));
    }
    // The same key for another request is the client's bug: say so rather
    // than answer for a write that was not this one.
    let earlier: String = sqlx::query_scalar("SELECT request FROM idempotency_keys WHERE key = ?")
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
    if earlier != request {
        let message = format!("Idempotency-Key {key} was used for {earlier}, not {request}");
        return Err(Refusal(StatusCode::UNPROCESSABLE_ENTITY, message));
    }
    state.repeats_skipped.fetch_add(1, Ordering::SeqCst);
    Ok(None)
}

/// Commits a write and answers `204`, after the configured delay.
async fn finish_write(
    state: &Inner,
    tx: Option<Transaction<'static, Sqlite>>,
) -> Result<StatusCode, Refusal> {
    if let Some(tx) = tx {
        tx.commit().await?;
        let delay = state.answer_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn put_profile(
    State(state): Shared,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    Json(body): Json<ProfileBody>,
) -> Result<StatusCode, Refusal> {
    if !body.email.contains('@') {
        let message = format!("email {:?} is not an address", body.email);
        return Err(Refusal(StatusCode::UNPROCESSABLE_ENTITY, message));
    }
    if body.name.trim().is_empty() {
        let message = "name must not be empty".to_owned();
        return Err(Refusal(StatusCode::UNPROCESSABLE_ENTITY, message));
    }
    let request = format!("PUT /profiles/{id} {} {}", body.email, body.name);
    let mut tx = begin_write(&state, &headers, request).await?;
    if let Some(tx) = tx.as_mut() {
        sqlx::query(
            "INSERT INTO profiles (id, email, name) VALUES (?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET email = excluded.email, name = excluded.name",
        )
        .bind(id)
        .bind(&body.email)
        .bind(&body.name)
        .execute(&mut **tx)
        .await?;
    }
    finish_write(&state, tx).await
}

async fn delete_profile(
    State(state): Shared,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
) -> Result<StatusCode, Refusal> {
    let mut tx = begin_write(&state, &headers, format!("DELETE /profiles/{id}")).await?;
    if let Some(tx) = tx.as_mut() {
        sqlx::query("DELETE FROM profiles WHERE id = ?")
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    finish_write(&state, tx).await
}

async fn add_points(
    State(state): Shared,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    Json(body): Json<PointsBody>,
) -> Result<StatusCode, Refusal> {
    let request = format!("POST /profiles/{id}/points {}", body.points);
    let mut tx = begin_write(&state, &headers, request).await?;
    if let Some(tx) = tx.as_mut() {
        let added = sqlx::query("UPDATE profiles SET points = points + ? WHERE id = ?")
            .bind(body.points)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        if added.rows_affected() == 0 {
            // Dropping the transaction forgets the key with the write.
            return Err(Refusal(StatusCode::NOT_FOUND, format!("no profile {id}")));
        }
    }
    finish_write(&state, tx).await
}
