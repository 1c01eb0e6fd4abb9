//! The generated code names everything by absolute path and keeps its
//! locals to itself: it compiles next to items that shadow the names it
//! uses (`mod core`, `type Result<T>`, `struct Option`, ...), with arguments
//! named like its own locals, and triggers no lint under `deny(warnings)` and
//! `deny(missing_docs)`.

#![deny(warnings)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

/// The error of the ledger stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oops(pub &'static str);

impl ::core::fmt::Display for Oops {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.write_str(self.0)
    }
}

/// Two store errors agree when their texts do.
fn same_oops(serving: &Oops, other: &Oops) -> bool {
    serving.0 == other.0
}

/// A trait declared among items that shadow every name the generated code
/// could pick up by accident.
pub mod shadowed {
    #[allow(dead_code)]
    mod core {}
    #[allow(dead_code)]
    mod std {}
    #[allow(dead_code)]
    mod serde {}
    #[allow(dead_code)]
    mod dualwrite_runtime {}
    #[allow(dead_code)]
    mod __private {}

    /// The usual one-parameter `Result` alias of a crate.
    pub type Result<T> = ::core::result::Result<T, super::Oops>;

    #[allow(dead_code)]
    struct Option;
    #[allow(dead_code)]
    struct Some;
    #[allow(dead_code)]
    struct None;
    #[allow(dead_code)]
    struct Ok;
    #[allow(dead_code)]
    struct Err;
    #[allow(dead_code)]
    struct String;
    #[allow(dead_code)]
    struct Vec;
    #[allow(dead_code)]
    struct Box;
    #[allow(dead_code)]
    struct Arc;
    #[allow(dead_code)]
    struct Key;
    #[allow(dead_code)]
    struct Side;
    #[allow(dead_code)]
    struct DualWrite;
    #[allow(dead_code)]
    struct PhantomData;
    #[allow(dead_code)]
    trait Clone {}
    #[allow(dead_code)]
    trait Send {}
    #[allow(dead_code)]
    trait Sync {}
    #[allow(dead_code)]
    trait Sized {}
    #[allow(dead_code)]
    trait Future {}
    #[allow(dead_code)]
    trait Display {}
    #[allow(dead_code)]
    trait Serialize {}
    #[allow(dead_code)]
    trait Deserialize {}
    #[allow(unused_macros)]
    macro_rules! unreachable {
        ($($t:tt)*) => {
            compile_error!("the generated code used a shadowed `unreachable!`")
        };
    }
    #[allow(unused_macros)]
    macro_rules! write {
        ($($t:tt)*) => {
            compile_error!("the generated code used a shadowed `write!`")
        };
    }
    #[allow(unused_macros)]
    macro_rules! matches {
        ($($t:tt)*) => {
            compile_error!("the generated code used a shadowed `matches!`")
        };
    }

    use ::dualwrite_runtime::dual_write;

    /// Account balances. The arguments are named like the generated code's
    /// own locals and helpers.
    #[dual_write(namespace = "ledger")]
    pub trait Ledger: ::core::marker::Send + ::core::marker::Sync {
        /// Sets a balance.
        #[dual_write(write, key = guard)]
        fn set_balance(
            &self,
            guard: u64,
            result: i64,
        ) -> impl ::core::future::Future<Output = Result<()>> + ::core::marker::Send;

        /// Moves money; the key is built with `format!` (through `::std`).
        #[dual_write(write, key = ::std::format!("{side}->{op}"))]
        fn transfer(
            &self,
            side: u64,
            op: u64,
            store: &(i64, i64),
        ) -> impl ::core::future::Future<Output = Result<()>> + ::core::marker::Send;

        /// Reads a balance.
        #[dual_write(read, key = outcome)]
        fn balance(
            &self,
            outcome: u64,
        ) -> impl ::core::future::Future<Output = Result<::core::option::Option<i64>>>
               + ::core::marker::Send;

        /// Sums two balances: no key (reported by its arguments' hash),
        /// detached, with an error comparator; arguments named like the
        /// generated closures' own.
        #[dual_write(read, detached, report_values, compare_errors = super::same_oops)]
        fn total(
            &self,
            serving_error: u64,
            other_error: &str,
        ) -> impl ::core::future::Future<Output = Result<i64>> + ::core::marker::Send;
    }

    /// A generic trait: the generated enum gets a hidden marker variant,
    /// which must not trip `missing_docs` either.
    #[dual_write]
    pub trait Cache<V>: ::core::marker::Send + ::core::marker::Sync
    where
        V: ::serde::Serialize
            + ::serde::de::DeserializeOwned
            + ::core::clone::Clone
            + ::core::marker::Send
            + ::core::marker::Sync
            + 'static,
    {
        /// Stores a value.
        #[dual_write(write, key = reason)]
        fn put_value(
            &self,
            reason: u64,
            never: V,
        ) -> impl ::core::future::Future<Output = Result<()>> + ::core::marker::Send;
    }
}

use std::collections::BTreeMap;
use std::sync::Mutex;

use dualwrite_runtime::{DualWrite, InMemoryQueue, Stage};
use shadowed::{Cache, CacheOp, Ledger, LedgerOp};

#[derive(Default)]
struct Books {
    balances: Mutex<BTreeMap<u64, i64>>,
    down: Mutex<bool>,
}

impl Books {
    fn check(&self) -> shadowed::Result<()> {
        if *self.down.lock().unwrap() {
            Err(Oops("down"))
        } else {
            Ok(())
        }
    }
}

impl Ledger for Books {
    async fn set_balance(&self, guard: u64, result: i64) -> shadowed::Result<()> {
        self.check()?;
        self.balances.lock().unwrap().insert(guard, result);
        Ok(())
    }

    async fn transfer(&self, side: u64, op: u64, store: &(i64, i64)) -> shadowed::Result<()> {
        self.check()?;
        let amount = store.0 + store.1;
        let mut balances = self.balances.lock().unwrap();
        *balances.entry(side).or_default() -= amount;
        *balances.entry(op).or_default() += amount;
        Ok(())
    }

    async fn balance(&self, outcome: u64) -> shadowed::Result<Option<i64>> {
        Ok(self.balances.lock().unwrap().get(&outcome).copied())
    }

    async fn total(&self, serving_error: u64, other_error: &str) -> shadowed::Result<i64> {
        let balances = self.balances.lock().unwrap();
        let other: u64 = other_error.parse().map_err(|_| Oops("not an id"))?;
        Ok(balances.get(&serving_error).copied().unwrap_or_default()
            + balances.get(&other).copied().unwrap_or_default())
    }
}

impl Cache<String> for Books {
    async fn put_value(&self, reason: u64, never: String) -> shadowed::Result<()> {
        self.check()?;
        self.balances
            .lock()
            .unwrap()
            .insert(reason, never.len() as i64);
        Ok(())
    }
}

#[tokio::test]
async fn the_generated_code_ignores_shadowing_items() {
    let repo = DualWrite::builder(Books::default(), Books::default())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .build()
        .unwrap();
    repo.set_balance(1, 100).await.unwrap();
    repo.set_balance(2, 0).await.unwrap();
    *repo.new_store().down.lock().unwrap() = true;
    repo.transfer(1, 2, &(30, 5)).await.unwrap();
    repo.put_value(3, "abc".to_owned()).await.unwrap();
    assert_eq!(repo.balance(1).await.unwrap(), Some(65));
    assert_eq!(repo.total(1, "2").await.unwrap(), 65 + 35);

    *repo.new_store().down.lock().unwrap() = false;
    assert_eq!(repo.worker::<LedgerOp>().drain().await.applied, 1);
    assert_eq!(repo.worker::<CacheOp<String>>().drain().await.applied, 1);
    assert_eq!(
        *repo.new_store().balances.lock().unwrap(),
        *repo.old_store().balances.lock().unwrap()
    );
}

#[test]
fn a_trait_declared_inside_a_function_expands_too() {
    use dualwrite_runtime::dual_write;

    #[dual_write]
    trait Local {
        #[dual_write(write, key = id)]
        fn put(&self, id: u32) -> Result<(), Oops>;
    }

    struct Nothing;
    impl Local for Nothing {
        fn put(&self, _id: u32) -> Result<(), Oops> {
            Ok(())
        }
    }

    let repo = DualWrite::builder(Nothing, Nothing)
        .queue(InMemoryQueue::new())
        .build()
        .unwrap();
    repo.put(1).unwrap();
    let _worker = repo.worker::<LocalOp>();
}

/// A private trait whose wrapper is used but whose operation enum is never
/// named (no worker): the generated items must not be reported as dead.
mod private_trait {
    use dualwrite_runtime::{dual_write, DualWrite, InMemoryQueue};

    #[dual_write]
    trait Quiet {
        #[dual_write(write, key = id)]
        fn put(&self, id: u32, text: &str) -> Result<(), super::Oops>;

        fn get(&self, id: u32) -> Result<u32, super::Oops>;
    }

    struct Silent;

    impl Quiet for Silent {
        fn put(&self, _id: u32, _text: &str) -> Result<(), super::Oops> {
            Ok(())
        }

        fn get(&self, id: u32) -> Result<u32, super::Oops> {
            Ok(id)
        }
    }

    pub(super) fn run() -> u32 {
        let repo = DualWrite::builder(Silent, Silent)
            .queue(InMemoryQueue::new())
            .build()
            .unwrap();
        repo.put(1, "one").unwrap();
        repo.get(2).unwrap()
    }
}

#[test]
fn a_private_trait_without_a_worker_compiles_without_warnings() {
    assert_eq!(private_trait::run(), 2);
}
