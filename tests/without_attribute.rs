//! Cutover is one deleted line: the same trait and impls compile and work
//! with the trait's `#[dual_write]` removed, and the method-level
//! `#[dual_write(..)]` attributes left behind are inert (they expand to the
//! method exactly as written).
//!
//! `repository!` stamps out the trait and its implementation token for
//! token, once with the attribute and once without, so that the two are
//! provably the same code.

mod support;

use std::marker::PhantomData;

use support::{Table, TableError};

macro_rules! repository {
    ($(#[$attribute:meta])*) => {
        /// A notes repository.
        $(#[$attribute])*
        pub(crate) trait Notes: Send + Sync {
            /// Creates or replaces a note.
            #[dual_write(write, key = id)]
            async fn put_note(&self, id: u64, text: &str) -> Result<(), TableError>;

            /// Deletes a note (classified by its name when dual-written).
            #[dual_write(key = id)]
            async fn delete_note(&self, id: u64) -> Result<bool, TableError>;

            /// Reads a note.
            #[dual_write(read, key = id)]
            async fn get_note(&self, id: u64) -> Result<Option<String>, TableError>;

            /// Says which store this is.
            #[dual_write(skip)]
            fn name(&self) -> &'static str;

            /// A default method.
            async fn has_note(&self, id: u64) -> Result<bool, TableError> {
                Ok(self.get_note(id).await?.is_some())
            }
        }

        #[derive(Debug, Default)]
        pub(crate) struct Store(pub(crate) Table, pub(crate) &'static str);

        impl Notes for Store {
            async fn put_note(&self, id: u64, text: &str) -> Result<(), TableError> {
                self.0.put(id, text)
            }

            async fn delete_note(&self, id: u64) -> Result<bool, TableError> {
                self.0.delete(id)
            }

            async fn get_note(&self, id: u64) -> Result<Option<String>, TableError> {
                self.0.get(id)
            }

            fn name(&self) -> &'static str {
                self.1
            }
        }
    };
}

mod with_attribute {
    use super::{Table, TableError};
    use dualwrite_runtime::dual_write;

    repository!(#[dual_write]);
}

mod without_attribute {
    use super::{Table, TableError};
    use dualwrite_runtime::dual_write;

    repository!();
}

/// Tells at run time whether `T` implements `without_attribute::Notes`:
/// the inherent method applies only when it does, else the trait method.
struct Probe<T>(PhantomData<T>);

impl<T: without_attribute::Notes> Probe<T> {
    fn implements_notes(&self) -> bool {
        true
    }
}

trait Fallback {
    fn implements_notes(&self) -> bool {
        false
    }
}

impl<T> Fallback for Probe<T> {}

#[tokio::test]
async fn the_trait_and_its_impl_work_without_the_attribute() {
    use without_attribute::{Notes, Store};

    let store = Store(Table::new(), "plain");
    store.put_note(1, "one").await.unwrap();
    assert_eq!(store.get_note(1).await.unwrap().as_deref(), Some("one"));
    assert!(store.has_note(1).await.unwrap());
    assert!(store.delete_note(1).await.unwrap());
    assert!(!store.has_note(1).await.unwrap());
    assert_eq!(store.name(), "plain");
}

#[tokio::test]
async fn without_the_attribute_nothing_is_generated() {
    use dualwrite_runtime::DualWrite;

    assert!(Probe::<without_attribute::Store>(PhantomData).implements_notes());
    assert!(
        !Probe::<DualWrite<without_attribute::Store, without_attribute::Store>>(PhantomData)
            .implements_notes()
    );
}

#[tokio::test]
async fn with_the_attribute_the_same_code_is_dual_written() {
    use dualwrite_runtime::{DualWrite, InMemoryQueue, Stage};
    use with_attribute::{Notes, NotesOp, Store};

    let repo = DualWrite::builder(Store(Table::new(), "old"), Store(Table::new(), "new"))
        .queue(InMemoryQueue::new())
        .stage(Stage::Live)
        .build()
        .unwrap();
    repo.put_note(1, "one").await.unwrap();
    assert_eq!(repo.old_store().0.rows(), repo.new_store().0.rows());
    assert!(repo.has_note(1).await.unwrap());
    assert_eq!(repo.name(), "new", "skip forwards to the serving store");
    let _worker = repo.worker::<NotesOp>();
}
