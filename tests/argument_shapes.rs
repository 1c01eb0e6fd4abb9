//! The argument shapes repository traits use, taken unchanged: `Option<&str>`,
//! `Option<&T>`, `&Option<T>`, `Option<&[T]>`, a struct that borrows passed
//! by reference (`&Register<'_>`) or by value, `&[&str]`, `Cow<'_, str>`, `Cow<'_, [T]>`
//! and a method's own lifetime parameter. Each write is made with the
//! follower down, queued in a SQLite queue, replayed by a fresh wrapper that
//! reopens the queue (as after a restart), and then compared by reads in
//! `Shadow`; the same writes made with both stores up reach both directly.

#![allow(async_fn_in_trait)]
// The method lifetime `'o` is the shape under test, elidable or not.
#![allow(clippy::needless_lifetimes)]

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dualwrite_runtime::observe::{ComparisonReport, Observer};
use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{dual_write, DualWrite, Stage};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tag {
    pub name: String,
}

/// A sign-up form that borrows from the request it was parsed from.
#[derive(Debug, Serialize, Deserialize)]
pub struct Register<'a> {
    pub username: &'a str,
    pub email: Option<&'a str>,
    #[serde(borrow)]
    pub bio: Cow<'a, str>,
    pub age: u32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Account {
    pub email: Option<String>,
    pub bio: String,
    pub age: u32,
    pub nickname: Option<String>,
    pub tag: Option<Tag>,
    pub note: Option<String>,
    pub scores: Option<Vec<u32>>,
    pub aliases: Vec<String>,
    pub flags: Vec<u8>,
    pub invited_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("accounts: {0}")]
pub struct AccountsError(String);

#[dual_write]
pub trait Accounts: Send + Sync {
    async fn register(&self, form: &Register<'_>) -> Result<(), AccountsError>;
    async fn register_maybe(&self, form: Option<&Register<'_>>) -> Result<(), AccountsError>;
    async fn register_owned(&self, form: Register<'_>) -> Result<(), AccountsError>;
    async fn set_nickname(&self, user: &str, nickname: Option<&str>) -> Result<(), AccountsError>;
    async fn set_tag(&self, user: &str, tag: Option<&Tag>) -> Result<(), AccountsError>;
    async fn set_note(&self, user: &str, note: &Option<String>) -> Result<(), AccountsError>;
    async fn set_scores(&self, user: &str, scores: Option<&[u32]>) -> Result<(), AccountsError>;
    async fn set_aliases(&self, user: &str, aliases: &[&str]) -> Result<(), AccountsError>;
    async fn update_bio(&self, user: Cow<'_, str>, bio: Cow<'_, str>) -> Result<(), AccountsError>;
    async fn set_flags(&self, user: &str, flags: Cow<'_, [u8]>) -> Result<(), AccountsError>;
    async fn mark_invited<'o>(&self, user: &str, by: Option<&'o str>) -> Result<(), AccountsError>;

    async fn get_account(&self, user: &str) -> Result<Option<Account>, AccountsError>;
    async fn find_by_nickname(&self, nickname: Option<&str>) -> Result<Vec<String>, AccountsError>;
    async fn find_by_tag(&self, tag: Option<&Tag>) -> Result<Vec<String>, AccountsError>;
    async fn find_by_note(&self, note: &Option<String>) -> Result<Vec<String>, AccountsError>;
    async fn find_by_scores(&self, scores: Option<&[u32]>) -> Result<Vec<String>, AccountsError>;
    async fn find_by_bio(&self, bio: Cow<'_, str>) -> Result<Vec<String>, AccountsError>;
    async fn find_invited_by<'o>(&self, by: Option<&'o str>) -> Result<Vec<String>, AccountsError>;
}

/// An in-memory store; clones share the data, so a "restarted" wrapper can
/// be built over the same stores.
#[derive(Clone, Default)]
struct Store {
    accounts: Arc<Mutex<BTreeMap<String, Account>>>,
    down: Arc<AtomicBool>,
}

impl Store {
    fn update(&self, user: &str, change: impl FnOnce(&mut Account)) -> Result<(), AccountsError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(AccountsError("down".into()));
        }
        change(
            self.accounts
                .lock()
                .unwrap()
                .entry(user.to_owned())
                .or_default(),
        );
        Ok(())
    }

    fn users(&self, keep: impl Fn(&Account) -> bool) -> Result<Vec<String>, AccountsError> {
        let accounts = self.accounts.lock().unwrap();
        Ok(accounts
            .iter()
            .filter(|(_, account)| keep(account))
            .map(|(user, _)| user.clone())
            .collect())
    }

    fn snapshot(&self) -> BTreeMap<String, Account> {
        self.accounts.lock().unwrap().clone()
    }
}

impl Accounts for Store {
    async fn register(&self, form: &Register<'_>) -> Result<(), AccountsError> {
        self.update(form.username, |account| {
            account.email = form.email.map(str::to_owned);
            account.bio = form.bio.to_string();
            account.age = form.age;
        })
    }
    async fn register_maybe(&self, form: Option<&Register<'_>>) -> Result<(), AccountsError> {
        match form {
            Some(form) => self.register(form).await,
            None => Ok(()),
        }
    }
    async fn register_owned(&self, form: Register<'_>) -> Result<(), AccountsError> {
        self.register(&form).await
    }
    async fn set_nickname(&self, user: &str, nickname: Option<&str>) -> Result<(), AccountsError> {
        self.update(user, |account| {
            account.nickname = nickname.map(str::to_owned)
        })
    }
    async fn set_tag(&self, user: &str, tag: Option<&Tag>) -> Result<(), AccountsError> {
        self.update(user, |account| account.tag = tag.cloned())
    }
    async fn set_note(&self, user: &str, note: &Option<String>) -> Result<(), AccountsError> {
        self.update(user, |account| account.note = note.clone())
    }
    async fn set_scores(&self, user: &str, scores: Option<&[u32]>) -> Result<(), AccountsError> {
        self.update(user, |account| account.scores = scores.map(<[u32]>::to_vec))
    }
    async fn set_aliases(&self, user: &str, aliases: &[&str]) -> Result<(), AccountsError> {
        self.update(user, |account| {
            account.aliases = aliases.iter().map(|alias| (*alias).to_owned()).collect();
        })
    }
    async fn update_bio(&self, user: Cow<'_, str>, bio: Cow<'_, str>) -> Result<(), AccountsError> {
        self.update(&user, |account| account.bio = bio.into_owned())
    }
    async fn set_flags(&self, user: &str, flags: Cow<'_, [u8]>) -> Result<(), AccountsError> {
        self.update(user, |account| account.flags = flags.into_owned())
    }
    async fn mark_invited<'o>(&self, user: &str, by: Option<&'o str>) -> Result<(), AccountsError> {
        self.update(user, |account| account.invited_by = by.map(str::to_owned))
    }

    async fn get_account(&self, user: &str) -> Result<Option<Account>, AccountsError> {
        Ok(self.accounts.lock().unwrap().get(user).cloned())
    }
    async fn find_by_nickname(&self, nickname: Option<&str>) -> Result<Vec<String>, AccountsError> {
        self.users(|account| account.nickname.as_deref() == nickname)
    }
    async fn find_by_tag(&self, tag: Option<&Tag>) -> Result<Vec<String>, AccountsError> {
        self.users(|account| account.tag.as_ref() == tag)
    }
    async fn find_by_note(&self, note: &Option<String>) -> Result<Vec<String>, AccountsError> {
        self.users(|account| &account.note == note)
    }
    async fn find_by_scores(&self, scores: Option<&[u32]>) -> Result<Vec<String>, AccountsError> {
        self.users(|account| account.scores.as_deref() == scores)
    }
    async fn find_by_bio(&self, bio: Cow<'_, str>) -> Result<Vec<String>, AccountsError> {
        self.users(|account| account.bio == bio)
    }
    async fn find_invited_by<'o>(&self, by: Option<&'o str>) -> Result<Vec<String>, AccountsError> {
        self.users(|account| account.invited_by.as_deref() == by)
    }
}

/// Counts the comparisons that disagreed.
#[derive(Default)]
struct Mismatches(Mutex<Vec<String>>);

impl Observer for Mismatches {
    fn on_mismatch(&self, report: &ComparisonReport) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {:?}", report.method, report.outcome));
    }
}

/// The writes, one per shape and more; twelve in all. The borrowed data lives in
/// locals, as it would in a request handler.
async fn write_every_shape(repo: &impl Accounts) {
    let request = String::from("ada ada@example.com");
    let (username, email) = request.split_once(' ').unwrap();
    let form = Register {
        username,
        email: Some(email),
        bio: Cow::Borrowed("first \"quoted\" bio"),
        age: 36,
    };
    repo.register(&form).await.unwrap();
    let second = Register {
        username: "bob",
        email: None,
        bio: Cow::Owned("bob's".to_owned()),
        age: 41,
    };
    repo.register_maybe(Some(&second)).await.unwrap();
    repo.register_maybe(None).await.unwrap();
    let name = String::from("cy");
    let third = Register {
        username: &name,
        email: Some("cy@example.com"),
        bio: Cow::Borrowed("by value"),
        age: 7,
    };
    repo.register_owned(third).await.unwrap();
    let nickname = String::from("countess");
    repo.set_nickname("ada", Some(&nickname)).await.unwrap();
    repo.set_tag(
        "ada",
        Some(&Tag {
            name: "math".into(),
        }),
    )
    .await
    .unwrap();
    repo.set_note("bob", &Some("likes \u{e9}clairs".into()))
        .await
        .unwrap();
    repo.set_scores("ada", Some(&[3, 1, 4][..])).await.unwrap();
    let aliases = [String::from("lovelace"), String::from("a.a.")];
    let aliases: Vec<&str> = aliases.iter().map(String::as_str).collect();
    repo.set_aliases("ada", &aliases).await.unwrap();
    repo.update_bio(Cow::Borrowed("bob"), Cow::Owned("second bio".into()))
        .await
        .unwrap();
    repo.set_flags("bob", Cow::Borrowed(&[1, 0, 1][..]))
        .await
        .unwrap();
    let inviter = String::from("ada");
    repo.mark_invited("bob", Some(inviter.as_str()))
        .await
        .unwrap();
}

const WRITES: u64 = 12;

/// Every read of the trait, in `Shadow`: each compares the two stores.
async fn read_every_shape(repo: &impl Accounts) {
    assert_eq!(repo.get_account("ada").await.unwrap().unwrap().age, 36);
    assert!(repo.get_account("bob").await.unwrap().is_some());
    let nickname = String::from("countess");
    assert_eq!(
        repo.find_by_nickname(Some(&nickname)).await.unwrap(),
        ["ada"]
    );
    assert_eq!(repo.find_by_nickname(None).await.unwrap(), ["bob", "cy"]);
    let tag = Tag {
        name: "math".into(),
    };
    assert_eq!(repo.find_by_tag(Some(&tag)).await.unwrap(), ["ada"]);
    assert_eq!(
        repo.find_by_note(&Some("likes \u{e9}clairs".into()))
            .await
            .unwrap(),
        ["bob"]
    );
    assert_eq!(
        repo.find_by_scores(Some(&[3, 1, 4])).await.unwrap(),
        ["ada"]
    );
    assert_eq!(
        repo.find_by_bio(Cow::Borrowed("second bio")).await.unwrap(),
        ["bob"]
    );
    let inviter = String::from("ada");
    assert_eq!(repo.find_invited_by(Some(&inviter)).await.unwrap(), ["bob"]);
}

fn expected(store: &Store) {
    let accounts = store.snapshot();
    let ada = &accounts["ada"];
    assert_eq!(ada.email.as_deref(), Some("ada@example.com"));
    assert_eq!(ada.bio, "first \"quoted\" bio");
    assert_eq!(ada.nickname.as_deref(), Some("countess"));
    assert_eq!(
        ada.tag,
        Some(Tag {
            name: "math".into()
        })
    );
    assert_eq!(ada.scores.as_deref(), Some(&[3, 1, 4][..]));
    assert_eq!(ada.aliases, ["lovelace", "a.a."]);
    let bob = &accounts["bob"];
    assert_eq!((bob.email.as_deref(), bob.age), (None, 41));
    assert_eq!(bob.note.as_deref(), Some("likes \u{e9}clairs"));
    assert_eq!(bob.bio, "second bio");
    assert_eq!(bob.flags, [1, 0, 1]);
    assert_eq!(bob.invited_by.as_deref(), Some("ada"));
    let cy = &accounts["cy"];
    assert_eq!(
        (cy.email.as_deref(), cy.bio.as_str(), cy.age),
        (Some("cy@example.com"), "by value", 7)
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dualwrite-shapes-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn wrapper(old: &Store, new: &Store, dir: &Path, stage: Stage) -> DualWrite<Store, Store> {
    let queue = SqliteQueue::open(dir.join("queue.db")).await.unwrap();
    DualWrite::builder(old.clone(), new.clone())
        .queue(queue)
        .stage(stage)
        .build()
        .unwrap()
}

#[tokio::test]
async fn every_shape_reaches_both_stores_when_both_are_up() {
    let dir = scratch("sync");
    let (old, new) = (Store::default(), Store::default());
    let repo = wrapper(&old, &new, &dir, Stage::DualWrite).await;
    write_every_shape(&repo).await;
    assert_eq!(repo.queue().stats().await.unwrap().new.pending, 0);
    expected(&old);
    assert_eq!(new.snapshot(), old.snapshot());
}

#[tokio::test]
async fn every_shape_is_queued_replayed_after_a_restart_and_compares_equal() {
    let dir = scratch("replay");
    let (old, new) = (Store::default(), Store::default());
    new.down.store(true, Ordering::SeqCst);
    {
        let repo = wrapper(&old, &new, &dir, Stage::DualWrite).await;
        write_every_shape(&repo).await;
        assert_eq!(repo.queue().stats().await.unwrap().new.pending, WRITES);
    }
    expected(&old);
    assert!(new.snapshot().is_empty());

    // A fresh wrapper over the reopened queue, as after a restart.
    new.down.store(false, Ordering::SeqCst);
    let repo = wrapper(&old, &new, &dir, Stage::DualWrite).await;
    let report = repo.worker::<AccountsOp>().drain().await;
    assert_eq!(
        (report.applied, report.dead_lettered),
        (WRITES, 0),
        "{report:?}"
    );
    assert_eq!(new.snapshot(), old.snapshot());

    let mismatches = Arc::new(Mismatches::default());
    let queue = SqliteQueue::open(dir.join("queue.db")).await.unwrap();
    let shadow = DualWrite::builder(old.clone(), new.clone())
        .queue(queue)
        .stage(Stage::Shadow)
        .shared_observer(mismatches.clone())
        .build()
        .unwrap();
    read_every_shape(&shadow).await;
    assert_eq!(*mismatches.0.lock().unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_borrowed_struct_is_queued_as_its_json_and_read_back_borrowing() {
    let form = Register {
        username: "ada",
        email: None,
        bio: Cow::Borrowed("tab\there"),
        age: 36,
    };
    let op = AccountsOp::Register {
        form: dualwrite_runtime::Payload::capture(&form),
    };
    let json = serde_json::to_value(&op).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"method": "register", "args": {"form": {
            "username": "ada", "email": null, "bio": "tab\there", "age": 36,
        }}})
    );
    let back: AccountsOp = serde_json::from_value(json).unwrap();
    let AccountsOp::Register { form } = back else {
        panic!("the method is kept");
    };
    let read: Register<'_> = form.read().unwrap();
    assert_eq!((read.username, read.bio.as_ref()), ("ada", "tab\there"));
}

/// The same shapes in the blocking form, whose calls go in closures.
#[dual_write]
pub trait Journal: Send + Sync {
    fn record_signup(
        &self,
        form: &Register<'_>,
        referrer: Register<'_>,
    ) -> Result<(), AccountsError>;
    fn list_signups(&self) -> Result<Vec<String>, AccountsError>;
}

impl Journal for Store {
    fn record_signup(
        &self,
        form: &Register<'_>,
        referrer: Register<'_>,
    ) -> Result<(), AccountsError> {
        self.update(form.username, |account| {
            account.invited_by = Some(referrer.username.to_owned())
        })
    }
    fn list_signups(&self) -> Result<Vec<String>, AccountsError> {
        self.users(|_| true)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_writes_of_borrowed_structs_are_replayed() {
    let (old, new) = (Store::default(), Store::default());
    let repo = DualWrite::builder(old.clone(), new.clone())
        .queue(dualwrite_runtime::InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .build()
        .unwrap();
    let form = |username| Register {
        username,
        email: None,
        bio: Cow::Borrowed(""),
        age: 1,
    };
    repo.record_signup(&form("ada"), form("bob")).unwrap();
    new.down.store(true, Ordering::SeqCst);
    repo.record_signup(&form("cy"), form("ada")).unwrap();
    assert_eq!(repo.queue().stats().await.unwrap().new.pending, 1);
    new.down.store(false, Ordering::SeqCst);
    let report = repo.worker::<JournalOp>().drain().await;
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(new.snapshot(), old.snapshot());
    assert_eq!(new.snapshot()["cy"].invited_by.as_deref(), Some("ada"));
}
