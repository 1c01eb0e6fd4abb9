//! A forum store of JSON documents under path keys (`user/00..07`,
//! `session/<token>`), as a document database would hold them: lookups by
//! anything but the key scan a collection.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::*;

/// Clones share the documents.
#[derive(Clone, Default)]
pub struct Documents {
    docs: Arc<Mutex<BTreeMap<String, Value>>>,
    pub down: Arc<AtomicBool>,
}

/// Numeric ids are zero-padded, so that keys sort as the ids do.
fn numbered(collection: &str, id: u64) -> String {
    format!("{collection}/{id:020}")
}

fn named(collection: &str, name: impl Display) -> String {
    format!("{collection}/{name}")
}

impl Documents {
    fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let docs = self.docs.lock().unwrap();
        docs.get(key)
            .map(|doc| serde_json::from_value(doc.clone()).unwrap())
    }

    fn scan<T: DeserializeOwned>(&self, collection: &str) -> Vec<T> {
        let prefix = format!("{collection}/");
        let docs = self.docs.lock().unwrap();
        docs.range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(_, doc)| serde_json::from_value(doc.clone()).unwrap())
            .collect()
    }

    fn check_up(&self) -> Result<(), ForumError> {
        if self.down.load(Ordering::SeqCst) {
            Err(ForumError::Down)
        } else {
            Ok(())
        }
    }

    fn put<T: Serialize>(&self, key: String, doc: &T) -> Result<(), ForumError> {
        self.check_up()?;
        let doc = serde_json::to_value(doc).unwrap();
        self.docs.lock().unwrap().insert(key, doc);
        Ok(())
    }

    /// Changes the document under `key`, which must exist.
    fn change<T: Serialize + DeserializeOwned, R>(
        &self,
        key: String,
        change: impl FnOnce(&mut T) -> R,
    ) -> Result<R, ForumError> {
        self.check_up()?;
        let mut doc: T = self.get(&key).ok_or(ForumError::NotFound(key.clone()))?;
        let result = change(&mut doc);
        self.put(key, &doc)?;
        Ok(result)
    }

    fn delete(&self, key: &str) -> Result<bool, ForumError> {
        self.check_up()?;
        Ok(self.docs.lock().unwrap().remove(key).is_some())
    }

    fn users(&self) -> Vec<User> {
        self.scan("user")
    }

    fn posts(&self) -> Vec<Post> {
        self.scan("post")
    }

    fn comments_of(&self, post: u64) -> Vec<Comment> {
        let comments: Vec<Comment> = self.scan("comment");
        comments
            .into_iter()
            .filter(|comment| comment.post == post)
            .collect()
    }
}

#[async_trait::async_trait]
impl Forum for Documents {
    type PostId = u64;

    async fn create_user(&self, id: u64, form: &NewUser<'_>) -> Result<(), ForumError> {
        if self.username_exists(form.username).await? {
            return Err(ForumError::Conflict(form.username.to_owned()));
        }
        let doc = serde_json::json!({
            "id": id, "username": form.username, "email": form.email,
            "display_name": form.display_name, "bio": form.bio,
            "website": null, "password_hash": null, "avatar": null,
        });
        self.put(numbered("user", id), &doc)
    }
    async fn get_user(&self, id: u64) -> Result<Option<User>, ForumError> {
        Ok(self.get(&numbered("user", id)))
    }
    async fn find_user_by_username(&self, username: &str) -> Result<Option<User>, ForumError> {
        Ok(self
            .users()
            .into_iter()
            .find(|user| user.username == username))
    }
    async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, ForumError> {
        Ok(self.users().into_iter().find(|user| user.email == email))
    }
    async fn username_exists(&self, username: &str) -> Result<bool, ForumError> {
        Ok(self.users().iter().any(|user| user.username == username))
    }
    async fn email_exists(&self, email: &str) -> Result<bool, ForumError> {
        Ok(self.users().iter().any(|user| user.email == email))
    }
    async fn update_display_name(&self, id: u64, name: Option<&str>) -> Result<(), ForumError> {
        self.change(numbered("user", id), |user: &mut User| {
            user.display_name = name.map(Into::into);
        })
    }
    async fn set_password_hash(&self, id: u64, hash: &str) -> Result<(), ForumError> {
        self.change(numbered("user", id), |user: &mut User| {
            user.password_hash = Some(hash.into());
        })
    }
    async fn set_avatar(&self, id: u64, avatar: Option<&[u8]>) -> Result<(), ForumError> {
        self.change(numbered("user", id), |user: &mut User| {
            user.avatar = avatar.map(Vec::from);
        })
    }
    async fn update_profile(&self, id: u64, patch: &ProfilePatch<'_>) -> Result<(), ForumError> {
        self.change(numbered("user", id), |user: &mut User| {
            user.display_name = patch
                .display_name
                .map(Into::into)
                .or(user.display_name.take());
            user.bio = patch.bio.map_or_else(|| user.bio.clone(), Into::into);
            user.website = patch.website.map(Into::into).or(user.website.take());
        })
    }
    async fn delete_user(&self, id: u64) -> Result<bool, ForumError> {
        self.delete(&numbered("user", id))
    }
    async fn list_users(&self, limit: usize, offset: usize) -> Result<Vec<User>, ForumError> {
        let users = self.users();
        Ok(users
            .get(offset.min(users.len())..)
            .unwrap_or_default()
            .iter()
            .take(limit)
            .cloned()
            .collect())
    }
    async fn count_users(&self) -> Result<u64, ForumError> {
        Ok(self.users().len() as u64)
    }
    async fn verify_password(&self, id: u64, hash: &str) -> Result<bool, ForumError> {
        let user: Option<User> = self.get(&numbered("user", id));
        Ok(user
            .and_then(|user| user.password_hash)
            .is_some_and(|stored| stored == hash))
    }

    async fn create_session<'a>(
        &self,
        token: &'a str,
        user: u64,
        agent: Option<&'a str>,
    ) -> Result<(), ForumError> {
        let doc = serde_json::json!({"token": token, "user": user, "agent": agent, "last_seen": 0});
        self.put(named("session", token), &doc)
    }
    async fn get_session(&self, token: &str) -> Result<Option<Session>, ForumError> {
        Ok(self.get(&named("session", token)))
    }
    async fn touch_session(&self, token: &str, at: u64) -> Result<(), ForumError> {
        self.change(named("session", token), |session: &mut Session| {
            session.last_seen = at.max(session.last_seen);
        })
    }
    async fn delete_session(&self, token: &str) -> Result<bool, ForumError> {
        self.delete(&named("session", token))
    }
    async fn delete_sessions_for_user(&self, user: u64) -> Result<u64, ForumError> {
        let mut deleted = 0;
        for session in self.list_sessions_for_user(user).await? {
            deleted += u64::from(self.delete(&named("session", &session.token))?);
        }
        Ok(deleted)
    }
    async fn list_sessions_for_user(&self, user: u64) -> Result<Vec<Session>, ForumError> {
        let sessions: Vec<Session> = self.scan("session");
        Ok(sessions
            .into_iter()
            .filter(|session| session.user == user)
            .collect())
    }

    async fn create_post(&self, id: u64, form: &NewPost<'_>) -> Result<(), ForumError> {
        if self.posts().iter().any(|post| post.slug == form.slug) {
            return Err(ForumError::Conflict(form.slug.to_owned()));
        }
        let tags: BTreeSet<&str> = form.tags.iter().copied().collect();
        let doc = serde_json::json!({
            "id": id, "author": form.author, "slug": form.slug, "title": form.title,
            "body": form.body, "published_at": null, "views": 0, "tags": tags,
        });
        self.put(numbered("post", id), &doc)
    }
    async fn get_post(&self, id: u64) -> Result<Option<Post>, ForumError> {
        Ok(self.get(&numbered("post", id)))
    }
    async fn get_post_by_slug(&self, slug: &str) -> Result<Option<Post>, ForumError> {
        Ok(self.posts().into_iter().find(|post| post.slug == slug))
    }
    async fn list_posts(
        &self,
        author: Option<&u64>,
        tag: Option<&str>,
    ) -> Result<Vec<Post>, ForumError> {
        let mut posts = self.posts();
        if let Some(author) = author {
            posts.retain(|post| post.author == *author);
        }
        if let Some(tag) = tag {
            posts.retain(|post| post.tags.contains(tag));
        }
        Ok(posts)
    }
    async fn update_post_body(&self, id: u64, body: Cow<'_, str>) -> Result<(), ForumError> {
        self.change(numbered("post", id), |post: &mut Post| {
            post.body = body.into()
        })
    }
    async fn publish_post(&self, id: u64, at: u64) -> Result<(), ForumError> {
        self.change(numbered("post", id), |post: &mut Post| {
            post.published_at = Some(at)
        })
    }
    async fn delete_post(&self, id: u64) -> Result<bool, ForumError> {
        for comment in self.comments_of(id) {
            self.delete(&numbered("comment", comment.id))?;
        }
        self.delete(&numbered("post", id))
    }
    async fn increment_view_count(&self, id: u64) -> Result<u64, ForumError> {
        self.check_up()?;
        let key = numbered("post", id);
        let mut docs = self.docs.lock().unwrap();
        let doc = docs.get(&key).ok_or(ForumError::NotFound(key.clone()))?;
        let mut post: Post = serde_json::from_value(doc.clone()).unwrap();
        // The inbox, under the same lock as the write: a repeat of an
        // applied operation changes nothing.
        if let Some(op) = dualwrite_runtime::operation_id() {
            if docs
                .insert(named("applied", op), Value::Bool(true))
                .is_some()
            {
                return Ok(post.views);
            }
        }
        post.views += 1;
        docs.insert(key, serde_json::to_value(&post).unwrap());
        Ok(post.views)
    }
    async fn count_posts(&self, author: Option<&u64>) -> Result<u64, ForumError> {
        let posts = self.posts();
        Ok(posts
            .iter()
            .filter(|post| author.is_none_or(|author| post.author == *author))
            .count() as u64)
    }
    async fn post_stats(&self) -> Result<PostStats, ForumError> {
        let mut stats = PostStats::default();
        for post in self.posts() {
            stats.posts += 1;
            stats.published += u64::from(post.published_at.is_some());
            stats.views += post.views;
        }
        Ok(stats)
    }

    async fn add_comment(
        &self,
        id: u64,
        post: u64,
        author: u64,
        body: &str,
        parent: &Option<u64>,
    ) -> Result<(), ForumError> {
        if self.get_post(post).await?.is_none() {
            return Err(ForumError::NotFound(numbered("post", post)));
        }
        let doc = serde_json::json!({
            "id": id, "post": post, "author": author, "body": body,
            "parent": parent, "read_by": [author],
        });
        self.put(numbered("comment", id), &doc)
    }
    async fn edit_comment(&self, id: u64, body: Cow<'_, str>) -> Result<(), ForumError> {
        self.change(numbered("comment", id), |comment: &mut Comment| {
            comment.body = body.into()
        })
    }
    async fn remove_comment(&self, id: u64) -> Result<bool, ForumError> {
        self.delete(&numbered("comment", id))
    }
    async fn list_comments_for_post(&self, post: u64) -> Result<Vec<Comment>, ForumError> {
        Ok(self.comments_of(post))
    }
    async fn comment_count(&self, post: u64) -> Result<u64, ForumError> {
        Ok(self.comments_of(post).len() as u64)
    }
    async fn mark_comment_read(&self, id: u64, by: u64) -> Result<(), ForumError> {
        self.change(numbered("comment", id), |comment: &mut Comment| {
            comment.read_by.insert(by);
        })
    }
    async fn has_unread_comments(&self, user: u64, post: u64) -> Result<bool, ForumError> {
        Ok(!self
            .comments_of(post)
            .iter()
            .all(|comment| comment.read_by.contains(&user)))
    }

    async fn upsert_tag(&self, name: &str, description: Option<&str>) -> Result<(), ForumError> {
        let doc = serde_json::json!({"name": name, "description": description});
        self.put(named("tag", name), &doc)
    }
    async fn tag_post(&self, post: u64, tags: &[&str]) -> Result<(), ForumError> {
        self.change(numbered("post", post), |post: &mut Post| {
            for tag in tags {
                post.tags.insert((*tag).into());
            }
        })
    }
    async fn untag_post(&self, post: u64, tag: &str) -> Result<bool, ForumError> {
        self.change(numbered("post", post), |post: &mut Post| {
            post.tags.remove(tag)
        })
    }
    async fn list_tags(&self) -> Result<Vec<Tag>, ForumError> {
        Ok(self.scan("tag"))
    }
    async fn find_posts_tagged(&self, tags: Option<&[String]>) -> Result<Vec<u64>, ForumError> {
        let wanted: BTreeSet<String> = tags.unwrap_or_default().iter().cloned().collect();
        let posts = self.posts().into_iter();
        Ok(posts
            .filter(|post| post.tags.is_superset(&wanted))
            .map(|post| post.id)
            .collect())
    }

    async fn create_token(
        &self,
        token: &str,
        user: u64,
        scopes: &[String],
        expires_at: Option<u64>,
    ) -> Result<(), ForumError> {
        let doc = serde_json::json!({
            "token": token, "user": user, "scopes": scopes,
            "expires_at": expires_at, "revoked": false,
        });
        self.put(named("token", token), &doc)
    }
    async fn get_token(&self, token: &str) -> Result<Option<Token>, ForumError> {
        Ok(self.get(&named("token", token)))
    }
    async fn revoke_token(&self, token: &str) -> Result<(), ForumError> {
        self.change(named("token", token), |token: &mut Token| {
            token.revoked = true
        })
    }
    async fn is_token_revoked(&self, token: &str) -> Result<bool, ForumError> {
        let token: Option<Token> = self.get(&named("token", token));
        Ok(token.is_some_and(|token| token.revoked))
    }

    async fn create_report(&self, reporter: u64, reason: &str) -> Result<Report, ForumError> {
        self.check_up()?;
        let mut docs = self.docs.lock().unwrap();
        // A serial of its own, starting where the other store's never is.
        let serial = docs
            .get("serial/report")
            .and_then(Value::as_u64)
            .unwrap_or(999)
            + 1;
        docs.insert("serial/report".to_owned(), Value::from(serial));
        let report = Report {
            id: serial,
            reporter,
            reason: reason.to_owned(),
            resolved: false,
        };
        docs.insert(
            numbered("report", serial),
            serde_json::to_value(&report).unwrap(),
        );
        Ok(report)
    }
    async fn import_report(&self, report: &Report) -> Result<(), ForumError> {
        self.put(numbered("report", report.id), report)
    }
    async fn mark_report_resolved(&self, id: u64) -> Result<(), ForumError> {
        self.change(numbered("report", id), |report: &mut Report| {
            report.resolved = true
        })
    }
    async fn list_reports(&self) -> Result<Vec<Report>, ForumError> {
        Ok(self.scan("report"))
    }
}
