//! The monolith's repository trait for customer profiles, which both the
//! monolith's PostgreSQL code and the new service's client implement.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use dualwrite_runtime::dual_write;
use serde::{Deserialize, Serialize};

use crate::client::ServiceError;

/// A customer profile, whichever side holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub id: i64,
    pub email: String,
    pub name: String,
    /// Loyalty points: changed only by `add_loyalty_points`, never by a save.
    pub points: i64,
}

impl Profile {
    /// A new profile with no points yet.
    pub fn new(id: i64, email: &str, name: &str) -> Profile {
        let (email, name) = (email.to_owned(), name.to_owned());
        Profile {
            id,
            email,
            name,
            points: 0,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Profile {
            id,
            email,
            name,
            points,
        } = self;
        write!(f, "profile {id}: {name} <{email}>, {points} points")
    }
}

/// Why a profile call failed, on either side.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The monolith's database.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The profiles service: whether it is worth retrying is
    /// [`ServiceError::is_retryable`].
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Points for a profile that does not exist.
    #[error("no profile {0}")]
    NotFound(i64),
}

/// The repository trait the monolith already had, plus the attribute.
#[dual_write(namespace = "profiles")]
pub trait ProfileRepository: Send + Sync {
    /// Creates the profile or replaces its email and name (an upsert, safe
    /// to replay). Its points are left as they are.
    #[dual_write(write, key = profile.id)]
    async fn save_profile(&self, profile: Profile) -> Result<(), ProfileError>;

    /// Deletes the profile; deleting one that is gone is not an error, so a
    /// replay is harmless.
    #[dual_write(write, key = id)]
    async fn delete_profile(&self, id: i64) -> Result<(), ProfileError>;

    /// Adds points: an increment, which a replay would count twice, so each
    /// side skips an operation id it has applied (the PostgreSQL side in an
    /// inbox table, the service by its `Idempotency-Key` header).
    #[dual_write(write, key = id, idempotent = false)]
    async fn add_loyalty_points(&self, id: i64, points: i64) -> Result<(), ProfileError>;

    #[dual_write(read, key = id)]
    async fn get_profile(&self, id: i64) -> Result<Option<Profile>, ProfileError>;

    #[dual_write(read)]
    async fn list_profiles(&self) -> Result<Vec<Profile>, ProfileError>;
}

/// The profiles on which two full listings differ: `(id, monolith's,
/// service's)`, by id.
pub type Differences = Vec<(i64, Option<Profile>, Option<Profile>)>;

/// Compares the two sides record by record.
pub fn differences(monolith: Vec<Profile>, service: Vec<Profile>) -> Differences {
    let by_id = |profiles: Vec<Profile>| -> BTreeMap<i64, Profile> {
        profiles.into_iter().map(|p| (p.id, p)).collect()
    };
    let (monolith, service) = (by_id(monolith), by_id(service));
    let ids: BTreeSet<i64> = monolith.keys().chain(service.keys()).copied().collect();
    ids.into_iter()
        .filter(|id| monolith.get(id) != service.get(id))
        .map(|id| (id, monolith.get(&id).cloned(), service.get(&id).cloned()))
        .collect()
}
