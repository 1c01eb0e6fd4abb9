//! The behaviour suite of a `Forum`: a scenario of writes over every
//! method, then reads that check what a forum must hold afterwards. It runs
//! against each store directly and against the wrapper; nothing in it knows
//! which it has.

use std::borrow::Cow;
use std::collections::BTreeSet;

use super::*;

/// How many writes `writes` makes that succeed (so that a wrapper whose
/// follower is down queues that many).
pub const SUCCESSFUL_WRITES: u64 = 44;

/// The writes of the scenario, with the borrowed data in locals as a
/// request handler would have it.
pub async fn writes<F: Forum>(forum: &F) {
    let post = F::PostId::from;
    let signup = String::from("ada ada@example.com");
    let (username, email) = signup.split_once(' ').unwrap();
    let ada = NewUser {
        username,
        email,
        display_name: Some("Ada"),
        bio: Cow::Borrowed("counts \"things\""),
    };
    forum.create_user(1, &ada).await.unwrap();
    for (id, name) in [(2, "bob"), (3, "cy"), (4, "dan")] {
        let email = format!("{name}@example.com");
        let form = NewUser {
            username: name,
            email: &email,
            display_name: None,
            bio: Cow::Owned(format!("I am {name}")),
        };
        forum.create_user(id, &form).await.unwrap();
    }
    let taken = NewUser {
        username: "ada",
        email: "other@example.com",
        display_name: None,
        bio: Cow::Borrowed(""),
    };
    assert_eq!(
        forum.create_user(5, &taken).await,
        Err(ForumError::Conflict("ada".into()))
    );
    forum.update_display_name(2, Some("Bobby")).await.unwrap();
    forum.update_display_name(1, None).await.unwrap();
    forum.set_password_hash(1, "h1").await.unwrap();
    forum.set_avatar(1, Some(&[1, 2, 3])).await.unwrap();
    forum.set_avatar(2, None).await.unwrap();
    let website = String::from("https://bob.example");
    let patch = ProfilePatch {
        display_name: None,
        bio: Some("new bio"),
        website: Some(&website),
    };
    forum.update_profile(2, &patch).await.unwrap();
    assert!(forum.delete_user(4).await.unwrap());

    let agent = String::from("curl/8");
    forum
        .create_session("s1", 1, Some("firefox"))
        .await
        .unwrap();
    forum.create_session("s2", 1, None).await.unwrap();
    forum.create_session("s3", 2, Some(&agent)).await.unwrap();
    forum.touch_session("s1", 50).await.unwrap();
    assert!(forum.delete_session("s2").await.unwrap());
    assert_eq!(forum.delete_sessions_for_user(2).await.unwrap(), 1);

    let hello = NewPost {
        author: 1,
        slug: "hello",
        title: "Hello",
        body: "first",
        tags: vec!["intro", "rust"],
    };
    forum.create_post(post(10), &hello).await.unwrap();
    let body = String::from("second body");
    let second = NewPost {
        author: 2,
        slug: "second",
        title: "Second",
        body: &body,
        tags: Vec::new(),
    };
    forum.create_post(post(11), &second).await.unwrap();
    let draft = NewPost {
        author: 1,
        slug: "draft",
        title: "Draft",
        body: "",
        tags: vec!["wip"],
    };
    forum.create_post(post(12), &draft).await.unwrap();
    forum
        .update_post_body(post(10), Cow::Borrowed("edited"))
        .await
        .unwrap();
    forum.publish_post(post(10), 100).await.unwrap();
    forum.publish_post(post(11), 120).await.unwrap();
    forum.increment_view_count(post(10)).await.unwrap();
    forum.increment_view_count(post(10)).await.unwrap();
    // The store numbers reports; the caller learns the id from the result.
    let spam = forum.create_report(2, "spam").await.unwrap();
    forum.create_report(3, "rude").await.unwrap();
    forum.mark_report_resolved(spam.id).await.unwrap();
    forum
        .add_comment(103, post(12), 2, "soon?", &None)
        .await
        .unwrap();
    assert!(forum.delete_post(post(12)).await.unwrap());

    forum
        .add_comment(100, post(10), 2, "nice", &None)
        .await
        .unwrap();
    forum
        .add_comment(101, post(10), 1, "thanks", &Some(100))
        .await
        .unwrap();
    forum
        .add_comment(102, post(11), 1, "typo", &None)
        .await
        .unwrap();
    forum
        .edit_comment(100, Cow::Owned("very nice".into()))
        .await
        .unwrap();
    forum.mark_comment_read(100, 1).await.unwrap();
    assert!(forum.remove_comment(102).await.unwrap());

    forum
        .upsert_tag("rust", Some("the language"))
        .await
        .unwrap();
    forum.upsert_tag("intro", None).await.unwrap();
    forum.upsert_tag("rust", Some("Rust")).await.unwrap();
    let news = String::from("news");
    forum.tag_post(post(11), &["rust", &news]).await.unwrap();
    assert!(forum.untag_post(post(10), "intro").await.unwrap());

    let scopes = ["read".to_owned(), "write".to_owned()];
    forum
        .create_token("t1", 1, &scopes, Some(1000))
        .await
        .unwrap();
    forum.create_token("t2", 2, &[], None).await.unwrap();
    forum.revoke_token("t2").await.unwrap();
}

/// What the forum holds after `writes`, read through every read method.
pub async fn check<F: Forum>(forum: &F) {
    let post = F::PostId::from;
    let reports = forum.list_reports().await.unwrap();
    let shown: Vec<(u64, &str, bool)> = reports
        .iter()
        .map(|report| (report.reporter, report.reason.as_str(), report.resolved))
        .collect();
    assert_eq!(shown, [(2, "spam", true), (3, "rude", false)]);
    assert_eq!(reports[1].id, reports[0].id + 1, "one serial numbers both");
    let ada = forum.get_user(1).await.unwrap().expect("ada");
    assert_eq!(
        (ada.username.as_str(), ada.email.as_str(), ada.display_name),
        ("ada", "ada@example.com", None)
    );
    assert_eq!(ada.bio, "counts \"things\"");
    assert_eq!(ada.avatar.as_deref(), Some(&[1, 2, 3][..]));
    let bob = forum
        .find_user_by_username("bob")
        .await
        .unwrap()
        .expect("bob");
    assert_eq!(bob.display_name.as_deref(), Some("Bobby"));
    assert_eq!(
        (bob.bio.as_str(), bob.website.as_deref()),
        ("new bio", Some("https://bob.example"))
    );
    let cy = forum.find_user_by_email("cy@example.com").await.unwrap();
    assert_eq!(cy.map(|cy| cy.id), Some(3));
    assert!(forum.username_exists("ada").await.unwrap());
    assert!(!forum.username_exists("dan").await.unwrap());
    assert!(forum.email_exists("bob@example.com").await.unwrap());
    assert!(!forum.email_exists("other@example.com").await.unwrap());
    let page: Vec<u64> = forum
        .list_users(2, 1)
        .await
        .unwrap()
        .iter()
        .map(|user| user.id)
        .collect();
    assert_eq!(page, [2, 3]);
    assert_eq!(forum.count_users().await.unwrap(), 3);
    assert!(forum.verify_password(1, "h1").await.unwrap());
    assert!(!forum.verify_password(2, "h1").await.unwrap());

    let s1 = forum.get_session("s1").await.unwrap().expect("s1");
    assert_eq!(
        (s1.user, s1.agent.as_deref(), s1.last_seen),
        (1, Some("firefox"), 50)
    );
    assert_eq!(forum.get_session("s2").await.unwrap(), None);
    let sessions = forum.list_sessions_for_user(1).await.unwrap();
    assert_eq!(sessions, [s1]);
    assert_eq!(forum.list_sessions_for_user(2).await.unwrap(), []);

    let hello = forum.get_post(post(10)).await.unwrap().expect("hello");
    assert_eq!(
        (hello.body.as_str(), hello.views, hello.published_at),
        ("edited", 2, Some(100))
    );
    assert_eq!(hello.tags, BTreeSet::from(["rust".to_owned()]));
    let second = forum
        .get_post_by_slug("second")
        .await
        .unwrap()
        .expect("second");
    assert_eq!(
        second.tags,
        BTreeSet::from(["news".to_owned(), "rust".to_owned()])
    );
    assert_eq!(forum.get_post(post(12)).await.unwrap(), None);
    let ids = |posts: Vec<Post>| posts.iter().map(|post| post.id).collect::<Vec<_>>();
    assert_eq!(ids(forum.list_posts(Some(&1), None).await.unwrap()), [10]);
    assert_eq!(
        ids(forum.list_posts(None, Some("rust")).await.unwrap()),
        [10, 11]
    );
    assert_eq!(
        ids(forum.list_posts(Some(&2), Some("intro")).await.unwrap()),
        [0; 0]
    );
    assert_eq!(forum.count_posts(None).await.unwrap(), 2);
    assert_eq!(forum.count_posts(Some(&2)).await.unwrap(), 1);
    let stats = PostStats {
        posts: 2,
        published: 2,
        views: 2,
    };
    assert_eq!(forum.post_stats().await.unwrap(), stats);

    let comments = forum.list_comments_for_post(post(10)).await.unwrap();
    let shown: Vec<(u64, &str, Option<u64>)> = comments
        .iter()
        .map(|comment| (comment.id, comment.body.as_str(), comment.parent))
        .collect();
    assert_eq!(
        shown,
        [(100, "very nice", None), (101, "thanks", Some(100))]
    );
    assert_eq!(forum.comment_count(post(10)).await.unwrap(), 2);
    assert_eq!(forum.comment_count(post(11)).await.unwrap(), 0);
    assert!(!forum.has_unread_comments(1, post(10)).await.unwrap());
    assert!(forum.has_unread_comments(2, post(10)).await.unwrap());

    let tags = forum.list_tags().await.unwrap();
    let shown: Vec<(&str, Option<&str>)> = tags
        .iter()
        .map(|tag| (tag.name.as_str(), tag.description.as_deref()))
        .collect();
    assert_eq!(shown, [("intro", None), ("rust", Some("Rust"))]);
    let rust = ["rust".to_owned()];
    assert_eq!(
        forum.find_posts_tagged(Some(&rust)).await.unwrap(),
        [10, 11]
    );
    let both = ["rust".to_owned(), "news".to_owned()];
    assert_eq!(forum.find_posts_tagged(Some(&both)).await.unwrap(), [11]);
    assert_eq!(forum.find_posts_tagged(None).await.unwrap(), [10, 11]);

    let t1 = forum.get_token("t1").await.unwrap().expect("t1");
    assert_eq!(
        (t1.user, t1.scopes.as_slice(), t1.expires_at),
        (1, &["read".to_owned(), "write".to_owned()][..], Some(1000))
    );
    assert!(forum.is_token_revoked("t2").await.unwrap());
    assert!(!forum.is_token_revoked("t1").await.unwrap());
    assert!(!forum.is_token_revoked("none").await.unwrap());
}
