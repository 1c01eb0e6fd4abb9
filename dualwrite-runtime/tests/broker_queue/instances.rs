//! Several instances of a service appending at once: entry ids must be
//! unique across the handles.

use std::collections::BTreeMap;
use std::time::Duration;

use dualwrite_runtime::{Key, ReconciliationQueue};

use super::{drain, entry, unique_prefix, url, Broker};

/// Handles opened the same instant (as instances of a service deployed
/// together are) append to the same keys in lockstep; a consumer gets
/// every entry, each once, each instance's in its order per key. Entry ids
/// must be unique across the handles: the consumer tells its held messages
/// apart by id, and two messages under one id would hand one payload out
/// and acknowledge the other unread.
pub async fn instances_appending_at_once<B: Broker>() {
    const INSTANCES: usize = 3;
    const KEYS: u32 = 4;
    const ROUNDS: u32 = 40;
    let prefix = unique_prefix::<B>("instances");
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        instances.push(
            B::open(url::<B>(), prefix.clone(), 2, Some("ns"))
                .await
                .unwrap(),
        );
    }
    for round in 0..ROUNDS {
        let appends = instances.iter().enumerate().flat_map(|(n, queue)| {
            (0..KEYS).map(move |key| {
                queue.append(entry(
                    "ns",
                    &Key::from(format!("k{key}")),
                    format!("{n}/{round}").into_bytes(),
                ))
            })
        });
        for appended in futures::future::join_all(appends).await {
            appended.unwrap();
        }
    }

    let consumer = B::open(url::<B>(), prefix, 2, Some("ns")).await.unwrap();
    let expected = INSTANCES * (KEYS * ROUNDS) as usize;
    let mut delivered: BTreeMap<(String, usize), Vec<u32>> = BTreeMap::new();
    let count = drain(
        &consumer,
        "ns",
        expected,
        Duration::from_secs(30),
        |claimed| {
            let text = String::from_utf8(claimed.payload).unwrap();
            let (instance, round) = text.split_once('/').unwrap();
            delivered
                .entry((claimed.key.as_str().to_owned(), instance.parse().unwrap()))
                .or_default()
                .push(round.parse().unwrap());
            true
        },
    )
    .await;
    for ((key, instance), rounds) in &delivered {
        assert_eq!(
            rounds,
            &(0..ROUNDS).collect::<Vec<_>>(),
            "key {key}: instance {instance}'s entries, delivered in this order"
        );
    }
    assert_eq!(
        count,
        expected,
        "{count} entries delivered of the {expected} appended (by key and instance: {:?})",
        delivered
            .iter()
            .map(|(at, rounds)| (at.clone(), rounds.len()))
            .collect::<Vec<_>>()
    );
    drop(instances);
    B::destroy(consumer).await.unwrap();
}
