//! A rollout by key moves the same keys on every instance and after every
//! restart, widening only adds keys, keyless methods follow the base stage,
//! and rolling the base stage back takes every key back.

mod reads_support;

use std::collections::BTreeSet;

use dualwrite_runtime::{Key, Rollout, Stage};
use reads_support::{get, seed, wrapper, Repo};

const KEYS: u32 = 2_000;
/// The new store holds `key + OFFSET`, so a value tells which store served.
const OFFSET: u64 = 1_000_000;

async fn instance(rollout: Option<Rollout>) -> Repo {
    let (repo, _collector) = wrapper(Stage::Shadow);
    for key in 0..KEYS {
        seed(repo.old_store(), key, u64::from(key)).await;
        seed(repo.new_store(), key, u64::from(key) + OFFSET).await;
    }
    repo.stage().set_rollout(rollout).await.unwrap();
    repo
}

async fn keys_served_by_new(repo: &Repo) -> BTreeSet<u32> {
    let mut keys = BTreeSet::new();
    for key in 0..KEYS {
        if get(repo, key).await.unwrap() == Some(u64::from(key) + OFFSET) {
            keys.insert(key);
        }
    }
    keys
}

fn live(percent: f64) -> Option<Rollout> {
    Some(Rollout::new(Stage::Live, percent).unwrap())
}

#[tokio::test]
async fn two_instances_put_the_same_keys_in_the_rollout() {
    let first = keys_served_by_new(&instance(live(10.0)).await).await;
    let second = keys_served_by_new(&instance(live(10.0)).await).await;
    assert_eq!(first, second);
    // About 10% of 2000 keys.
    assert!((120..280).contains(&first.len()), "{}", first.len());
    for key in &first {
        assert!(Rollout::new(Stage::Live, 10.0)
            .unwrap()
            .includes(&Key::from_display(key)));
    }
}

#[tokio::test]
async fn widening_a_rollout_only_adds_keys() {
    let narrow = keys_served_by_new(&instance(live(10.0)).await).await;
    let wide = keys_served_by_new(&instance(live(30.0)).await).await;
    assert!(narrow.is_subset(&wide));
    assert!(wide.len() > narrow.len());
}

#[tokio::test]
async fn a_keyless_read_follows_the_base_stage() {
    let repo = instance(live(100.0)).await;
    let plan = repo.__read("kv", "count", || None);
    assert_eq!(plan.stage(), Stage::Shadow);
    let keyed = repo.__read("kv", "get", || Some(Key::from("1")));
    assert_eq!(keyed.stage(), Stage::Live);
}

#[tokio::test]
async fn rolling_the_base_stage_back_takes_every_key_back() {
    let repo = instance(live(100.0)).await;
    assert_eq!(keys_served_by_new(&repo).await.len(), KEYS as usize);
    repo.stage().set(Stage::DualWrite).await.unwrap();
    assert!(keys_served_by_new(&repo).await.is_empty());
}
