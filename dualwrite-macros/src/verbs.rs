//! Reads and writes told apart by the words of a method's name.
//!
//! A name's words (split at `_`) are looked up among the verbs of each
//! kind. A word in verb position (the first word, or one after `or`, `and`,
//! `then`) always counts, and so does an unambiguous verb anywhere
//! (`username_exists` reads). Words that are as often nouns (`record`,
//! `count`, `read`, `list`) count elsewhere only when nothing else does: so
//! `mark_read` and `get_record` are classified by their first word, and
//! `user_count` reads. When words pull both ways (`get_or_create`,
//! `record_fetch`), the name is ambiguous and the error says which words
//! pulled which way.

use proc_macro2::Ident;

use crate::ast::Role;

const READ_VERBS: &[&str] = &[
    "get", "find", "fetch", "list", "load", "read", "count", "exists", "exist", "search", "query",
    "select", "lookup", "is", "has", "can", "scan", "peek", "contains", "check", "stats",
    "retrieve", "show", "browse",
];

const WRITE_VERBS: &[&str] = &[
    "create",
    "insert",
    "update",
    "upsert",
    "delete",
    "remove",
    "save",
    "put",
    "set",
    "store",
    "write",
    "add",
    "append",
    "mark",
    "replace",
    "patch",
    "archive",
    "increment",
    "decrement",
    "incr",
    "decr",
    "bump",
    "clear",
    "destroy",
    "purge",
    "record",
    "register",
    "enqueue",
    "push",
    "modify",
    "merge",
    "move",
    "rename",
    "assign",
    "unassign",
    "cancel",
    "revoke",
    "reset",
    "expire",
    "prune",
    "touch",
    "ban",
    "unban",
    "approve",
    "reject",
    "publish",
    "unpublish",
    "restore",
    "attach",
    "detach",
    "like",
    "unlike",
    "follow",
    "unfollow",
    "block",
    "unblock",
    "subscribe",
    "unsubscribe",
    "invalidate",
    "rotate",
    "change",
    "edit",
    "grant",
    "activate",
    "deactivate",
    "enable",
    "disable",
    "lock",
    "unlock",
    "upload",
    "import",
    "truncate",
    "drop",
    "link",
    "unlink",
    "log",
    "pin",
    "unpin",
    "vote",
    "upvote",
    "downvote",
    "flag",
    "unflag",
    "acknowledge",
    "confirm",
    "close",
    "reopen",
    "complete",
    "consume",
    "claim",
    "release",
    "refresh",
    "renew",
    "sync",
    "tag",
    "untag",
    "apply",
    "commit",
    "submit",
    "send",
];

/// Verbs that are as often nouns (`get_record`, `mark_read`, `update_list`),
/// or only hint at a question (`user_is_admin`): outside verb position they
/// count only when no other verb does.
const NOUN_LIKE: &[&str] = &[
    "record", "set", "count", "read", "write", "list", "store", "search", "query", "check",
    "update", "lock", "block", "link", "log", "mark", "stats", "like", "follow", "change", "is",
    "has", "can", "push", "move", "select", "scan", "peek", "drop", "flag", "vote", "tag", "pin",
    "close", "complete", "import", "upload", "release", "claim", "commit", "show", "sync", "apply",
    "send", "submit", "refresh", "contains",
];

/// Words after which the next word is in verb position again.
const CONJUNCTIONS: &[&str] = &["or", "and", "then", "else"];

/// What a method's name says it does.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Role(Role),
    /// Words pulled both ways: the read words, the write words.
    Mixed(Vec<String>, Vec<String>),
    /// No word is a verb of either kind.
    Unknown,
}

pub(crate) fn classify(name: &str) -> Verdict {
    let words: Vec<&str> = name
        .trim_start_matches("r#")
        .split('_')
        .filter(|word| !word.is_empty())
        .collect();
    let mut strong = (Vec::new(), Vec::new());
    let mut weak = (Vec::new(), Vec::new());
    let mut verb_position = true;
    for word in &words {
        let lower = word.to_ascii_lowercase();
        let word = lower.as_str();
        let unambiguous = verb_position || !NOUN_LIKE.contains(&word);
        let (reads, writes) = if unambiguous { &mut strong } else { &mut weak };
        if READ_VERBS.contains(&word) {
            reads.push(word.to_owned());
        }
        if WRITE_VERBS.contains(&word) {
            writes.push(word.to_owned());
        }
        verb_position = CONJUNCTIONS.contains(&word);
    }
    let (reads, writes) = if strong.0.is_empty() && strong.1.is_empty() {
        weak
    } else {
        strong
    };
    match (reads.is_empty(), writes.is_empty()) {
        (false, true) => Verdict::Role(Role::Read),
        (true, false) => Verdict::Role(Role::Write),
        (false, false) => Verdict::Mixed(reads, writes),
        (true, true) => Verdict::Unknown,
    }
}

/// The role of a method without a role option, or the error that says why
/// the name cannot tell.
pub(crate) fn infer_role(ident: &Ident) -> syn::Result<Role> {
    let name = ident.to_string();
    let name = name.trim_start_matches("r#");
    let reason = match classify(name) {
        Verdict::Role(role) => return Ok(role),
        Verdict::Mixed(reads, writes) => format!(
            "{} {} and {} {}",
            quoted(&reads),
            if reads.len() == 1 { "reads" } else { "read" },
            quoted(&writes),
            if writes.len() == 1 { "writes" } else { "write" },
        ),
        Verdict::Unknown => "none of its words is a read or write verb dualwrite knows".to_owned(),
    };
    Err(syn::Error::new(
        ident.span(),
        format!(
            "cannot tell whether `{name}` reads or writes ({reason}); say which with #[dual_write(read)] or #[dual_write(write, key = ..)] (or #[dual_write(skip)] to forward it untouched)"
        ),
    ))
}

fn quoted(words: &[String]) -> String {
    words
        .iter()
        .map(|word| format!("`{word}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str) -> Option<Role> {
        match classify(name) {
            Verdict::Role(role) => Some(role),
            _ => None,
        }
    }

    #[test]
    fn verbs_anywhere_decide_when_unambiguous() {
        assert_eq!(role("username_exists"), Some(Role::Read));
        assert_eq!(role("user_count"), Some(Role::Read));
        assert_eq!(role("post_stats"), Some(Role::Read));
        assert_eq!(role("is_token_revoked"), Some(Role::Read));
        assert_eq!(role("mark_read"), Some(Role::Write));
        assert_eq!(role("get_record"), Some(Role::Read));
        assert_eq!(role("increment_view_count"), Some(Role::Write));
        assert_eq!(role("update_list"), Some(Role::Write));
        assert_eq!(role("delete_search_history"), Some(Role::Write));
    }

    #[test]
    fn names_pulled_both_ways_say_by_which_words() {
        assert_eq!(
            classify("get_or_create"),
            Verdict::Mixed(vec!["get".into()], vec!["create".into()])
        );
        assert_eq!(
            classify("record_fetch"),
            Verdict::Mixed(vec!["fetch".into()], vec!["record".into()])
        );
        assert_eq!(
            classify("check_and_set"),
            Verdict::Mixed(vec!["check".into()], vec!["set".into()])
        );
        assert_eq!(classify("frobnicate"), Verdict::Unknown);
    }

    /// The methods of a typical repository of users, sessions, posts,
    /// comments, tags and tokens; the names the rules cannot classify are
    /// the ones a user annotates.
    #[test]
    fn a_realistic_repository_needs_few_annotations() {
        const READS: &[&str] = &[
            "get_user",
            "get_user_by_email",
            "find_user_by_username",
            "username_exists",
            "email_exists",
            "list_users",
            "count_users",
            "get_session",
            "list_sessions_for_user",
            "get_post",
            "get_post_by_slug",
            "list_posts",
            "list_posts_by_author",
            "list_posts_by_tag",
            "count_posts",
            "post_stats",
            "get_comment",
            "list_comments_for_post",
            "comment_count",
            "list_tags",
            "find_tag_by_name",
            "get_token",
            "is_token_revoked",
            "has_unread_notifications",
        ];
        const WRITES: &[&str] = &[
            "create_user",
            "update_user",
            "delete_user",
            "set_password",
            "update_last_login",
            "create_session",
            "delete_session",
            "delete_expired_sessions",
            "create_post",
            "update_post",
            "publish_post",
            "delete_post",
            "increment_view_count",
            "add_comment",
            "record_login_attempt",
            "remove_comment",
            "mark_comment_read",
            "upsert_tag",
            "tag_post",
            "untag_post",
            "create_token",
            "revoke_token",
        ];
        // Names a reader cannot classify without the method's body either.
        const UNCLEAR: &[&str] = &["verify_password", "get_or_create_tag", "authenticate"];
        assert_eq!(READS.len() + WRITES.len() + UNCLEAR.len(), 49);
        for name in READS {
            assert_eq!(role(name), Some(Role::Read), "{name}");
        }
        for name in WRITES {
            assert_eq!(role(name), Some(Role::Write), "{name}");
        }
        for name in UNCLEAR {
            assert_eq!(role(name), None, "{name}");
        }
    }
}
