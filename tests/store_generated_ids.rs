//! A write whose authoritative store generates part of the data (a serial
//! id) gives its follower an operation built from the result
//! (`follower = path`): the new store ends with the old store's ids, so a
//! later `mark_read(id)` marks the same row in both, whether the follower
//! took the import in the request or from the queue. A queued call of such
//! a write (its caller went away mid-call) is dead-lettered, never replayed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dualwrite_runtime::{dual_write, DualWrite, InMemoryQueue, ReconciliationQueue, Stage};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(String);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: u64,
    pub text: String,
    pub read: bool,
}

#[dual_write]
trait Inbox: Send + Sync {
    /// The store assigns the id.
    #[dual_write(write, follower = import_created)]
    async fn create_message(&self, text: &str) -> Result<Message, StoreError>;

    /// Writes a message with its id as given.
    #[dual_write(write, key = message.id)]
    async fn import_message(&self, message: &Message) -> Result<(), StoreError>;

    #[dual_write(write, key = id)]
    async fn mark_read(&self, id: u64) -> Result<(), StoreError>;

    #[dual_write(read)]
    async fn messages(&self) -> Result<Vec<Message>, StoreError>;
}

/// The follower gets the row the authoritative store made.
fn import_created(_text: &str, created: &Message) -> InboxOp {
    InboxOp::ImportMessage {
        message: created.clone(),
    }
}

#[derive(Default)]
struct State {
    rows: BTreeMap<u64, Message>,
    next_id: u64,
    down: bool,
    /// Calls of `create_message` that stall after committing.
    stall_creates: bool,
}

#[derive(Clone)]
struct SerialStore(Arc<Mutex<State>>);

impl SerialStore {
    /// A table whose serial starts at `first`.
    fn starting_at(first: u64) -> Self {
        SerialStore(Arc::new(Mutex::new(State {
            next_id: first,
            ..State::default()
        })))
    }
    fn rows(&self) -> Vec<Message> {
        self.0.lock().unwrap().rows.values().cloned().collect()
    }
    fn set_down(&self, down: bool) {
        self.0.lock().unwrap().down = down;
    }
    fn check_up(&self) -> Result<(), StoreError> {
        if self.0.lock().unwrap().down {
            Err(StoreError("down".into()))
        } else {
            Ok(())
        }
    }
}

impl Inbox for SerialStore {
    async fn create_message(&self, text: &str) -> Result<Message, StoreError> {
        self.check_up()?;
        let (message, stall) = {
            let mut state = self.0.lock().unwrap();
            let id = state.next_id;
            state.next_id += 1;
            let message = Message {
                id,
                text: text.to_owned(),
                read: false,
            };
            state.rows.insert(id, message.clone());
            (message, state.stall_creates)
        };
        if stall {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Ok(message)
    }

    async fn import_message(&self, message: &Message) -> Result<(), StoreError> {
        self.check_up()?;
        let mut state = self.0.lock().unwrap();
        state.next_id = state.next_id.max(message.id + 1);
        state.rows.insert(message.id, message.clone());
        Ok(())
    }

    async fn mark_read(&self, id: u64) -> Result<(), StoreError> {
        self.check_up()?;
        match self.0.lock().unwrap().rows.get_mut(&id) {
            Some(message) => {
                message.read = true;
                Ok(())
            }
            None => Err(StoreError(format!("no message {id}"))),
        }
    }

    async fn messages(&self) -> Result<Vec<Message>, StoreError> {
        Ok(self.rows())
    }
}

fn wrapper(
    old: &SerialStore,
    new: &SerialStore,
    queue: Arc<dyn ReconciliationQueue>,
) -> DualWrite<SerialStore, SerialStore> {
    DualWrite::builder(old.clone(), new.clone())
        .shared_queue(queue)
        .stage(Stage::DualWrite)
        .follower_timeout(Duration::from_millis(50))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_new_store_gets_the_old_stores_ids_and_marks_the_same_row() {
    // The new table's serial is elsewhere: replaying `create_message` there
    // would number the rows 100, 101, ...
    let (old, new) = (SerialStore::starting_at(1), SerialStore::starting_at(100));
    let repo = wrapper(&old, &new, Arc::new(InMemoryQueue::new()));
    let worker = repo.worker::<InboxOp>();
    let first = repo.create_message("hello").await.unwrap();
    // The follower is down: the import is queued under its own key, and
    // the `mark_read` of that key waits behind it.
    new.set_down(true);
    let second = repo.create_message("again").await.unwrap();
    repo.mark_read(second.id).await.unwrap();
    new.set_down(false);
    repo.mark_read(first.id).await.unwrap();
    worker.drain().await;
    assert_eq!((first.id, second.id), (1, 2));
    assert_eq!(old.rows(), new.rows());
    assert_eq!(repo.messages().await.unwrap(), new.rows());
    assert!(new.rows().iter().all(|message| message.read));
    assert_eq!(worker.report().dead_lettered, 0);
}

#[tokio::test]
async fn a_create_whose_caller_went_away_is_dead_lettered_not_replayed() {
    let (old, new) = (SerialStore::starting_at(1), SerialStore::starting_at(100));
    let queue = Arc::new(InMemoryQueue::new());
    let repo = wrapper(&old, &new, queue.clone());
    old.0.lock().unwrap().stall_creates = true;
    let call = tokio::spawn({
        let repo = Arc::new(repo);
        let handle = Arc::clone(&repo);
        async move {
            let _ = tokio::time::timeout(
                Duration::from_millis(20),
                handle.create_message("lost caller"),
            )
            .await;
            repo
        }
    });
    let repo = call.await.unwrap();
    old.0.lock().unwrap().stall_creates = false;
    let report = repo.worker::<InboxOp>().drain().await;
    // Replaying the call would have made row 2 in the old store.
    assert_eq!(old.rows().len(), 1);
    assert_eq!(new.rows().len(), 0);
    assert_eq!(report.dead_lettered, 1);
    let dead = queue.dead_letters().await.unwrap();
    assert!(
        dead[0].error.contains("follower = import_created"),
        "{}",
        dead[0].error
    );
}
