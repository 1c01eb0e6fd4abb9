//! A forum store of typed tables, one `BTreeMap` per entity, behind one lock.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::*;

#[derive(Default)]
struct Tables {
    users: BTreeMap<u64, User>,
    sessions: BTreeMap<String, Session>,
    posts: BTreeMap<u64, Post>,
    comments: BTreeMap<u64, Comment>,
    tags: BTreeMap<String, Tag>,
    tokens: BTreeMap<String, Token>,
    reports: BTreeMap<u64, Report>,
    /// The last report id given out (a serial column starting at 1).
    report_serial: u64,
    /// The operation ids of the increments applied (the inbox).
    applied: BTreeSet<dualwrite_runtime::OperationId>,
}

/// Clones share the tables.
#[derive(Clone, Default)]
pub struct Maps {
    tables: Arc<Mutex<Tables>>,
    pub down: Arc<AtomicBool>,
}

impl Maps {
    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap()
    }

    /// The tables, for a write: refused while the store is down.
    fn writable(&self) -> Result<MutexGuard<'_, Tables>, ForumError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ForumError::Down);
        }
        Ok(self.tables())
    }
}

fn missing(what: &str, id: impl std::fmt::Display) -> ForumError {
    ForumError::NotFound(format!("{what} {id}"))
}

fn user_mut(tables: &mut Tables, id: u64) -> Result<&mut User, ForumError> {
    tables.users.get_mut(&id).ok_or_else(|| missing("user", id))
}

fn post_mut(tables: &mut Tables, id: u64) -> Result<&mut Post, ForumError> {
    tables.posts.get_mut(&id).ok_or_else(|| missing("post", id))
}

fn comment_mut(tables: &mut Tables, id: u64) -> Result<&mut Comment, ForumError> {
    tables
        .comments
        .get_mut(&id)
        .ok_or_else(|| missing("comment", id))
}

#[async_trait::async_trait]
impl Forum for Maps {
    type PostId = u64;

    async fn create_user(&self, id: u64, form: &NewUser<'_>) -> Result<(), ForumError> {
        let mut tables = self.writable()?;
        if tables
            .users
            .values()
            .any(|user| user.username == form.username)
        {
            return Err(ForumError::Conflict(form.username.to_owned()));
        }
        let user = User {
            id,
            username: form.username.to_owned(),
            email: form.email.to_owned(),
            display_name: form.display_name.map(str::to_owned),
            bio: form.bio.to_string(),
            website: None,
            password_hash: None,
            avatar: None,
        };
        tables.users.insert(id, user);
        Ok(())
    }
    async fn get_user(&self, id: u64) -> Result<Option<User>, ForumError> {
        Ok(self.tables().users.get(&id).cloned())
    }
    async fn find_user_by_username(&self, username: &str) -> Result<Option<User>, ForumError> {
        let tables = self.tables();
        Ok(tables
            .users
            .values()
            .find(|user| user.username == username)
            .cloned())
    }
    async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, ForumError> {
        let tables = self.tables();
        Ok(tables
            .users
            .values()
            .find(|user| user.email == email)
            .cloned())
    }
    async fn username_exists(&self, username: &str) -> Result<bool, ForumError> {
        Ok(self.find_user_by_username(username).await?.is_some())
    }
    async fn email_exists(&self, email: &str) -> Result<bool, ForumError> {
        Ok(self.find_user_by_email(email).await?.is_some())
    }
    async fn update_display_name(&self, id: u64, name: Option<&str>) -> Result<(), ForumError> {
        user_mut(&mut *self.writable()?, id)?.display_name = name.map(str::to_owned);
        Ok(())
    }
    async fn set_password_hash(&self, id: u64, hash: &str) -> Result<(), ForumError> {
        user_mut(&mut *self.writable()?, id)?.password_hash = Some(hash.to_owned());
        Ok(())
    }
    async fn set_avatar(&self, id: u64, avatar: Option<&[u8]>) -> Result<(), ForumError> {
        user_mut(&mut *self.writable()?, id)?.avatar = avatar.map(<[u8]>::to_vec);
        Ok(())
    }
    async fn update_profile(&self, id: u64, patch: &ProfilePatch<'_>) -> Result<(), ForumError> {
        let mut tables = self.writable()?;
        let user = user_mut(&mut tables, id)?;
        if let Some(name) = patch.display_name {
            user.display_name = Some(name.to_owned());
        }
        if let Some(bio) = patch.bio {
            bio.clone_into(&mut user.bio);
        }
        if let Some(website) = patch.website {
            user.website = Some(website.to_owned());
        }
        Ok(())
    }
    async fn delete_user(&self, id: u64) -> Result<bool, ForumError> {
        Ok(self.writable()?.users.remove(&id).is_some())
    }
    async fn list_users(&self, limit: usize, offset: usize) -> Result<Vec<User>, ForumError> {
        let tables = self.tables();
        Ok(tables
            .users
            .values()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect())
    }
    async fn count_users(&self) -> Result<u64, ForumError> {
        Ok(self.tables().users.len() as u64)
    }
    async fn verify_password(&self, id: u64, hash: &str) -> Result<bool, ForumError> {
        let tables = self.tables();
        let stored = tables
            .users
            .get(&id)
            .and_then(|user| user.password_hash.as_deref());
        Ok(stored == Some(hash))
    }

    async fn create_session<'a>(
        &self,
        token: &'a str,
        user: u64,
        agent: Option<&'a str>,
    ) -> Result<(), ForumError> {
        let session = Session {
            token: token.to_owned(),
            user,
            agent: agent.map(str::to_owned),
            last_seen: 0,
        };
        self.writable()?.sessions.insert(token.to_owned(), session);
        Ok(())
    }
    async fn get_session(&self, token: &str) -> Result<Option<Session>, ForumError> {
        Ok(self.tables().sessions.get(token).cloned())
    }
    async fn touch_session(&self, token: &str, at: u64) -> Result<(), ForumError> {
        let mut tables = self.writable()?;
        let session = tables
            .sessions
            .get_mut(token)
            .ok_or_else(|| missing("session", token))?;
        session.last_seen = session.last_seen.max(at);
        Ok(())
    }
    async fn delete_session(&self, token: &str) -> Result<bool, ForumError> {
        Ok(self.writable()?.sessions.remove(token).is_some())
    }
    async fn delete_sessions_for_user(&self, user: u64) -> Result<u64, ForumError> {
        let mut tables = self.writable()?;
        let before = tables.sessions.len();
        tables.sessions.retain(|_, session| session.user != user);
        Ok((before - tables.sessions.len()) as u64)
    }
    async fn list_sessions_for_user(&self, user: u64) -> Result<Vec<Session>, ForumError> {
        let tables = self.tables();
        Ok(tables
            .sessions
            .values()
            .filter(|session| session.user == user)
            .cloned()
            .collect())
    }

    async fn create_post(&self, id: u64, form: &NewPost<'_>) -> Result<(), ForumError> {
        let mut tables = self.writable()?;
        if tables.posts.values().any(|post| post.slug == form.slug) {
            return Err(ForumError::Conflict(form.slug.to_owned()));
        }
        let post = Post {
            id,
            author: form.author,
            slug: form.slug.to_owned(),
            title: form.title.to_owned(),
            body: form.body.to_owned(),
            published_at: None,
            views: 0,
            tags: form.tags.iter().map(|tag| (*tag).to_owned()).collect(),
        };
        tables.posts.insert(id, post);
        Ok(())
    }
    async fn get_post(&self, id: u64) -> Result<Option<Post>, ForumError> {
        Ok(self.tables().posts.get(&id).cloned())
    }
    async fn get_post_by_slug(&self, slug: &str) -> Result<Option<Post>, ForumError> {
        Ok(self
            .tables()
            .posts
            .values()
            .find(|post| post.slug == slug)
            .cloned())
    }
    async fn list_posts(
        &self,
        author: Option<&u64>,
        tag: Option<&str>,
    ) -> Result<Vec<Post>, ForumError> {
        let tables = self.tables();
        Ok(tables
            .posts
            .values()
            .filter(|post| author.is_none_or(|author| post.author == *author))
            .filter(|post| tag.is_none_or(|tag| post.tags.contains(tag)))
            .cloned()
            .collect())
    }
    async fn update_post_body(&self, id: u64, body: Cow<'_, str>) -> Result<(), ForumError> {
        post_mut(&mut *self.writable()?, id)?.body = body.into_owned();
        Ok(())
    }
    async fn publish_post(&self, id: u64, at: u64) -> Result<(), ForumError> {
        post_mut(&mut *self.writable()?, id)?.published_at = Some(at);
        Ok(())
    }
    async fn delete_post(&self, id: u64) -> Result<bool, ForumError> {
        let mut tables = self.writable()?;
        tables.comments.retain(|_, comment| comment.post != id);
        Ok(tables.posts.remove(&id).is_some())
    }
    async fn increment_view_count(&self, id: u64) -> Result<u64, ForumError> {
        let mut tables = self.writable()?;
        // The inbox: a repeat of an applied operation changes nothing.
        let repeat = dualwrite_runtime::operation_id().is_some_and(|op| !tables.applied.insert(op));
        let post = post_mut(&mut tables, id)?;
        if !repeat {
            post.views += 1;
        }
        Ok(post.views)
    }
    async fn count_posts(&self, author: Option<&u64>) -> Result<u64, ForumError> {
        Ok(self.list_posts(author, None).await?.len() as u64)
    }
    async fn post_stats(&self) -> Result<PostStats, ForumError> {
        let tables = self.tables();
        Ok(PostStats {
            posts: tables.posts.len() as u64,
            published: tables
                .posts
                .values()
                .filter(|post| post.published_at.is_some())
                .count() as u64,
            views: tables.posts.values().map(|post| post.views).sum(),
        })
    }

    async fn add_comment(
        &self,
        id: u64,
        post: u64,
        author: u64,
        body: &str,
        parent: &Option<u64>,
    ) -> Result<(), ForumError> {
        let mut tables = self.writable()?;
        post_mut(&mut tables, post)?;
        let comment = Comment {
            id,
            post,
            author,
            body: body.to_owned(),
            parent: *parent,
            read_by: BTreeSet::from([author]),
        };
        tables.comments.insert(id, comment);
        Ok(())
    }
    async fn edit_comment(&self, id: u64, body: Cow<'_, str>) -> Result<(), ForumError> {
        comment_mut(&mut *self.writable()?, id)?.body = body.into_owned();
        Ok(())
    }
    async fn remove_comment(&self, id: u64) -> Result<bool, ForumError> {
        Ok(self.writable()?.comments.remove(&id).is_some())
    }
    async fn list_comments_for_post(&self, post: u64) -> Result<Vec<Comment>, ForumError> {
        let tables = self.tables();
        Ok(tables
            .comments
            .values()
            .filter(|comment| comment.post == post)
            .cloned()
            .collect())
    }
    async fn comment_count(&self, post: u64) -> Result<u64, ForumError> {
        Ok(self.list_comments_for_post(post).await?.len() as u64)
    }
    async fn mark_comment_read(&self, id: u64, by: u64) -> Result<(), ForumError> {
        comment_mut(&mut *self.writable()?, id)?.read_by.insert(by);
        Ok(())
    }
    async fn has_unread_comments(&self, user: u64, post: u64) -> Result<bool, ForumError> {
        let comments = self.list_comments_for_post(post).await?;
        Ok(comments
            .iter()
            .any(|comment| !comment.read_by.contains(&user)))
    }

    async fn upsert_tag(&self, name: &str, description: Option<&str>) -> Result<(), ForumError> {
        let tag = Tag {
            name: name.to_owned(),
            description: description.map(str::to_owned),
        };
        self.writable()?.tags.insert(name.to_owned(), tag);
        Ok(())
    }
    async fn tag_post(&self, post: u64, tags: &[&str]) -> Result<(), ForumError> {
        let mut tables = self.writable()?;
        let post = post_mut(&mut tables, post)?;
        post.tags.extend(tags.iter().map(|tag| (*tag).to_owned()));
        Ok(())
    }
    async fn untag_post(&self, post: u64, tag: &str) -> Result<bool, ForumError> {
        Ok(post_mut(&mut *self.writable()?, post)?.tags.remove(tag))
    }
    async fn list_tags(&self) -> Result<Vec<Tag>, ForumError> {
        Ok(self.tables().tags.values().cloned().collect())
    }
    async fn find_posts_tagged(&self, tags: Option<&[String]>) -> Result<Vec<u64>, ForumError> {
        let tables = self.tables();
        Ok(tables
            .posts
            .values()
            .filter(|post| tags.is_none_or(|tags| tags.iter().all(|tag| post.tags.contains(tag))))
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
        let token = Token {
            token: token.to_owned(),
            user,
            scopes: scopes.to_vec(),
            expires_at,
            revoked: false,
        };
        self.writable()?.tokens.insert(token.token.clone(), token);
        Ok(())
    }
    async fn get_token(&self, token: &str) -> Result<Option<Token>, ForumError> {
        Ok(self.tables().tokens.get(token).cloned())
    }
    async fn revoke_token(&self, token: &str) -> Result<(), ForumError> {
        let mut tables = self.writable()?;
        tables
            .tokens
            .get_mut(token)
            .ok_or_else(|| missing("token", token))?
            .revoked = true;
        Ok(())
    }
    async fn is_token_revoked(&self, token: &str) -> Result<bool, ForumError> {
        Ok(self
            .tables()
            .tokens
            .get(token)
            .is_some_and(|token| token.revoked))
    }

    async fn create_report(&self, reporter: u64, reason: &str) -> Result<Report, ForumError> {
        let mut tables = self.writable()?;
        tables.report_serial += 1;
        let report = Report {
            id: tables.report_serial,
            reporter,
            reason: reason.to_owned(),
            resolved: false,
        };
        tables.reports.insert(report.id, report.clone());
        Ok(report)
    }
    async fn import_report(&self, report: &Report) -> Result<(), ForumError> {
        let mut tables = self.writable()?;
        tables.report_serial = tables.report_serial.max(report.id);
        tables.reports.insert(report.id, report.clone());
        Ok(())
    }
    async fn mark_report_resolved(&self, id: u64) -> Result<(), ForumError> {
        let mut tables = self.writable()?;
        let report = tables
            .reports
            .get_mut(&id)
            .ok_or_else(|| missing("report", id))?;
        report.resolved = true;
        Ok(())
    }
    async fn list_reports(&self) -> Result<Vec<Report>, ForumError> {
        Ok(self.tables().reports.values().cloned().collect())
    }
}
