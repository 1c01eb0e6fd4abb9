//! The monolith's new implementation of its trait: an HTTP client of the
//! profiles service.
//!
//! What differs from a database follower is how it fails. [`classify`] is
//! the client's one decision about that, from the answer's status code:
//!
//! | answer | [`ServiceError`] | retryable |
//! |---|---|---|
//! | no connection, reset, timed out | `Unreachable` | yes: the service is down or deploying |
//! | `5xx`, `408 Request Timeout`, `429 Too Many Requests` | `Unavailable` | yes: it is overloaded or deploying |
//! | any other `4xx` (`400`, `404`, `409`, `422`) | `Rejected` | no: the same request will be refused again |
//! | anything else unexpected | `Unexpected` | no |
//!
//! A retryable failure is one the reconciliation worker's retries will get
//! past once the service is back: the retry budget is sized to outlast the
//! longest deploy. A permanent one would fail every attempt, so the client
//! says so with [`reject_permanently()`] as it returns the error: the
//! worker dead-letters the operation on that replay instead of spending
//! the budget, with this error's text, which says `permanent` and the
//! service's reason, so the operator knows to fix the data rather than
//! simply retry.
//!
//! Every write sends the write's [`operation_id()`] as its `Idempotency-Key`:
//! the same id in the request and in every replay, so a replay of a write
//! that landed (its answer was lost or late) changes nothing.

use std::time::Duration;

use dualwrite_runtime::{operation_id, reject_permanently, RetryPolicy};
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::profiles::{Profile, ProfileError, ProfileRepository};
use crate::service::{ErrorBody, PointsBody, ProfileBody, IDEMPOTENCY_KEY};

/// The worker's retries for this client in the example and its tests:
/// quick, and a budget (8 attempts, over 2 to 5 seconds) that outlasts the
/// example's deploy; a rejected write does not spend it (it is marked
/// permanent and dead-lettered on its first replay). A real service wants
/// minutes: the budget is what a deploy may take.
pub fn retry_policy() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(8)
        .min_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(500))
}

/// Whether a failed request is worth repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The service could not take it now; the same request may succeed later.
    Retryable,
    /// The service refused the request itself; repeating it cannot help.
    Permanent,
}

/// The mapping of status codes (see the module docs).
pub fn classify(status: StatusCode) -> Disposition {
    let busy = [StatusCode::REQUEST_TIMEOUT, StatusCode::TOO_MANY_REQUESTS];
    if status.is_server_error() || busy.contains(&status) {
        Disposition::Retryable
    } else {
        Disposition::Permanent
    }
}

/// A failed call to the profiles service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No answer: refused, reset or timed out (retryable).
    #[error("the profiles service is unreachable (retryable): {0}")]
    Unreachable(reqwest::Error),
    /// A status the service is expected to recover from (retryable).
    #[error("the profiles service is unavailable (retryable): {status}: {message}")]
    Unavailable { status: StatusCode, message: String },
    /// A status saying the request itself is wrong (permanent).
    #[error(
        "the profiles service rejected the request (permanent, fix the data): {status}: {message}"
    )]
    Rejected { status: StatusCode, message: String },
    /// An answer the client does not understand (permanent).
    #[error("unexpected answer from the profiles service (permanent): {0}")]
    Unexpected(String),
}

impl ServiceError {
    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ServiceError::Unreachable(_) | ServiceError::Unavailable { .. } => true,
            ServiceError::Rejected { .. } | ServiceError::Unexpected(_) => false,
        }
    }

    /// The error for an answer with a failure status.
    async fn from_answer(answer: Response) -> ServiceError {
        let status = answer.status();
        let message = match answer.json::<ErrorBody>().await {
            Ok(body) => body.error,
            Err(_) => "(no error message)".to_owned(),
        };
        match classify(status) {
            Disposition::Retryable => ServiceError::Unavailable { status, message },
            Disposition::Permanent => {
                // Retrying the same request cannot help: a worker's replay
                // dead-letters it now.
                reject_permanently();
                ServiceError::Rejected { status, message }
            }
        }
    }
}

/// The client: one connection pool, a base URL, a timeout per request.
pub struct ProfilesClient {
    http: reqwest::Client,
    base: String,
}

impl ProfilesClient {
    /// A client of the service at `base_url`; a request without an answer
    /// within `timeout` fails as `Unreachable`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<ProfilesClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        let base = base_url.trim_end_matches('/').to_owned();
        Ok(ProfilesClient { http, base })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A write request, with the write's operation id as its idempotency key.
    fn write(&self, request: RequestBuilder) -> RequestBuilder {
        match operation_id() {
            Some(id) => request.header(IDEMPOTENCY_KEY, id.to_string()),
            // Called outside a dual write: nothing to deduplicate by.
            None => request,
        }
    }

    /// Sends a request; any answer but a success is an error.
    async fn send(&self, request: RequestBuilder) -> Result<Response, ServiceError> {
        let answer = request.send().await.map_err(ServiceError::Unreachable)?;
        match answer.status() {
            status if status.is_success() => Ok(answer),
            _ => Err(ServiceError::from_answer(answer).await),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(answer: Response) -> Result<T, ServiceError> {
        let body = answer.json().await.map_err(|error| {
            let message = format!("a body that is not the expected JSON: {error}");
            ServiceError::Unexpected(message)
        })?;
        Ok(body)
    }
}

impl ProfileRepository for ProfilesClient {
    async fn save_profile(&self, profile: Profile) -> Result<(), ProfileError> {
        let Profile {
            id, email, name, ..
        } = profile;
        let request = self.http.put(self.url(&format!("/profiles/{id}")));
        let request = self.write(request).json(&ProfileBody { email, name });
        self.send(request).await?;
        Ok(())
    }

    async fn delete_profile(&self, id: i64) -> Result<(), ProfileError> {
        let request = self.http.delete(self.url(&format!("/profiles/{id}")));
        self.send(self.write(request)).await?;
        Ok(())
    }

    async fn add_loyalty_points(&self, id: i64, points: i64) -> Result<(), ProfileError> {
        let request = self.http.post(self.url(&format!("/profiles/{id}/points")));
        let request = self.write(request).json(&PointsBody { points });
        self.send(request).await?;
        Ok(())
    }

    async fn get_profile(&self, id: i64) -> Result<Option<Profile>, ProfileError> {
        let request = self.http.get(self.url(&format!("/profiles/{id}")));
        match self.send(request).await {
            Ok(answer) => Ok(Some(Self::json(answer).await?)),
            Err(ServiceError::Rejected { status, .. }) if status == StatusCode::NOT_FOUND => {
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn list_profiles(&self) -> Result<Vec<Profile>, ProfileError> {
        let answer = self.send(self.http.get(self.url("/profiles"))).await?;
        Ok(Self::json(answer).await?)
    }
}
