//! A forum's repository trait as services write them, taken unchanged by
//! `#[dual_write]`: 46 `#[async_trait]` methods over users, sessions, posts,
//! comments, tags and tokens, with borrowed arguments (`&str`, `&[&str]`),
//! option references (`Option<&str>`, `Option<&u64>`, `Option<&[String]>`,
//! `&Option<u64>`), structs that borrow (`&NewUser<'_>`, `&ProfilePatch<'_>`,
//! `&NewPost<'_>`), `Cow<'_, str>`, a method lifetime, an associated type
//! in write arguments (`Self::PostId`) and a supertrait whose blanket impl
//! needs `'static`. Two stores implement it (`maps`, `documents`); `suite`
//! is the behaviour suite every implementation passes.

// Each test file uses a different part of it.
#![allow(dead_code)]

pub mod documents;
pub mod maps;
pub mod suite;

use std::any::Any;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

use dualwrite_runtime::dual_write;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForumError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the store is down")]
    Down,
}

/// A sign-up, borrowing from the request.
#[derive(Debug, Serialize, Deserialize)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub email: &'a str,
    pub display_name: Option<&'a str>,
    #[serde(borrow)]
    pub bio: Cow<'a, str>,
}

/// A partial profile update: `None` leaves a field as it is.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProfilePatch<'a> {
    pub display_name: Option<&'a str>,
    pub bio: Option<&'a str>,
    pub website: Option<&'a str>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NewPost<'a> {
    pub author: u64,
    pub slug: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    #[serde(borrow)]
    pub tags: Vec<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub username: String,
    pub email: String,
    pub display_name: Option<String>,
    pub bio: String,
    pub website: Option<String>,
    pub password_hash: Option<String>,
    pub avatar: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub token: String,
    pub user: u64,
    pub agent: Option<String>,
    pub last_seen: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    pub id: u64,
    pub author: u64,
    pub slug: String,
    pub title: String,
    pub body: String,
    pub published_at: Option<u64>,
    pub views: u64,
    pub tags: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub id: u64,
    pub post: u64,
    pub author: u64,
    pub body: String,
    pub parent: Option<u64>,
    pub read_by: BTreeSet<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub name: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub token: String,
    pub user: u64,
    pub scopes: Vec<String>,
    pub expires_at: Option<u64>,
    pub revoked: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostStats {
    pub posts: u64,
    pub published: u64,
    pub views: u64,
}

/// Shares a handle to any store as `Arc<dyn Any>`: the blanket impl needs
/// `'static`, as such helper traits usually do.
pub trait Shared {
    fn shared(&self) -> Arc<dyn Any + Send + Sync>;
}

impl<T: Clone + Send + Sync + 'static> Shared for T {
    fn shared(&self) -> Arc<dyn Any + Send + Sync> {
        Arc::new(self.clone())
    }
}

// Most ids are made before the call (by the caller), so that both stores
// get the same ones. Reports are numbered by the store itself (a serial
// column, starting elsewhere in each store): `create_report` hands the
// authoritative store's row to the follower (`follower = follow_report`),
// so the stores agree on the ids and `mark_report_resolved(id)` marks the
// same report in both.
#[dual_write(namespace = "forum")]
#[async_trait::async_trait]
pub trait Forum: Send + Sync + Shared {
    /// How the store identifies posts.
    type PostId: Copy + Ord + Debug + From<u64> + Serialize + DeserializeOwned + Send + Sync;

    // Users.
    async fn create_user(&self, id: u64, form: &NewUser<'_>) -> Result<(), ForumError>;
    async fn get_user(&self, id: u64) -> Result<Option<User>, ForumError>;
    async fn find_user_by_username(&self, username: &str) -> Result<Option<User>, ForumError>;
    async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, ForumError>;
    async fn username_exists(&self, username: &str) -> Result<bool, ForumError>;
    async fn email_exists(&self, email: &str) -> Result<bool, ForumError>;
    async fn update_display_name(&self, id: u64, name: Option<&str>) -> Result<(), ForumError>;
    async fn set_password_hash(&self, id: u64, hash: &str) -> Result<(), ForumError>;
    async fn set_avatar(&self, id: u64, avatar: Option<&[u8]>) -> Result<(), ForumError>;
    async fn update_profile(&self, id: u64, patch: &ProfilePatch<'_>) -> Result<(), ForumError>;
    async fn delete_user(&self, id: u64) -> Result<bool, ForumError>;
    async fn list_users(&self, limit: usize, offset: usize) -> Result<Vec<User>, ForumError>;
    async fn count_users(&self) -> Result<u64, ForumError>;
    #[dual_write(read)]
    async fn verify_password(&self, id: u64, hash: &str) -> Result<bool, ForumError>;

    // Sessions.
    async fn create_session<'a>(
        &self,
        token: &'a str,
        user: u64,
        agent: Option<&'a str>,
    ) -> Result<(), ForumError>;
    async fn get_session(&self, token: &str) -> Result<Option<Session>, ForumError>;
    async fn touch_session(&self, token: &str, at: u64) -> Result<(), ForumError>;
    async fn delete_session(&self, token: &str) -> Result<bool, ForumError>;
    async fn delete_sessions_for_user(&self, user: u64) -> Result<u64, ForumError>;
    async fn list_sessions_for_user(&self, user: u64) -> Result<Vec<Session>, ForumError>;

    // Posts.
    async fn create_post(&self, id: Self::PostId, form: &NewPost<'_>) -> Result<(), ForumError>;
    async fn get_post(&self, id: Self::PostId) -> Result<Option<Post>, ForumError>;
    async fn get_post_by_slug(&self, slug: &str) -> Result<Option<Post>, ForumError>;
    async fn list_posts(
        &self,
        author: Option<&u64>,
        tag: Option<&str>,
    ) -> Result<Vec<Post>, ForumError>;
    async fn update_post_body(
        &self,
        id: Self::PostId,
        body: Cow<'_, str>,
    ) -> Result<(), ForumError>;
    async fn publish_post(&self, id: Self::PostId, at: u64) -> Result<(), ForumError>;
    async fn delete_post(&self, id: Self::PostId) -> Result<bool, ForumError>;
    /// Not safe to replay twice (delivery is at least once): both stores
    /// skip an operation id they have applied (the inbox pattern).
    #[dual_write(write, idempotent = false)]
    async fn increment_view_count(&self, id: Self::PostId) -> Result<u64, ForumError>;
    async fn count_posts(&self, author: Option<&u64>) -> Result<u64, ForumError>;
    async fn post_stats(&self) -> Result<PostStats, ForumError>;

    // Comments.
    async fn add_comment(
        &self,
        id: u64,
        post: Self::PostId,
        author: u64,
        body: &str,
        parent: &Option<u64>,
    ) -> Result<(), ForumError>;
    async fn edit_comment(&self, id: u64, body: Cow<'_, str>) -> Result<(), ForumError>;
    async fn remove_comment(&self, id: u64) -> Result<bool, ForumError>;
    async fn list_comments_for_post(&self, post: Self::PostId) -> Result<Vec<Comment>, ForumError>;
    async fn comment_count(&self, post: Self::PostId) -> Result<u64, ForumError>;
    async fn mark_comment_read(&self, id: u64, by: u64) -> Result<(), ForumError>;
    async fn has_unread_comments(&self, user: u64, post: Self::PostId) -> Result<bool, ForumError>;

    // Tags.
    async fn upsert_tag(&self, name: &str, description: Option<&str>) -> Result<(), ForumError>;
    async fn tag_post(&self, post: Self::PostId, tags: &[&str]) -> Result<(), ForumError>;
    async fn untag_post(&self, post: Self::PostId, tag: &str) -> Result<bool, ForumError>;
    async fn list_tags(&self) -> Result<Vec<Tag>, ForumError>;
    async fn find_posts_tagged(&self, tags: Option<&[String]>) -> Result<Vec<u64>, ForumError>;

    // Tokens.
    async fn create_token(
        &self,
        token: &str,
        user: u64,
        scopes: &[String],
        expires_at: Option<u64>,
    ) -> Result<(), ForumError>;
    async fn get_token(&self, token: &str) -> Result<Option<Token>, ForumError>;
    async fn revoke_token(&self, token: &str) -> Result<(), ForumError>;
    async fn is_token_revoked(&self, token: &str) -> Result<bool, ForumError>;

    // Reports: the store assigns the id.
    #[dual_write(write, follower = follow_report)]
    async fn create_report(&self, reporter: u64, reason: &str) -> Result<Report, ForumError>;
    /// Writes a report with its id as given (what the follower receives).
    #[dual_write(write, key = report.id)]
    async fn import_report(&self, report: &Report) -> Result<(), ForumError>;
    #[dual_write(write, key = id)]
    async fn mark_report_resolved(&self, id: u64) -> Result<(), ForumError>;
    async fn list_reports(&self) -> Result<Vec<Report>, ForumError>;
}

/// The follower of `create_report` imports the row the authoritative store
/// made, with its id.
pub fn follow_report<P>(_reporter: &u64, _reason: &str, created: &Report) -> ForumOp<P> {
    ForumOp::ImportReport {
        report: created.clone(),
    }
}

/// A report of abuse, numbered by the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub id: u64,
    pub reporter: u64,
    pub reason: String,
    pub resolved: bool,
}
