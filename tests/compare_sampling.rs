//! `compare_sampling` compares that fraction of reads; the others read the
//! serving store only.

mod reads_support;

use std::sync::Arc;

use dualwrite_runtime::Stage;
use reads_support::{builder, get, Collector};

async fn compared_reads(fraction: f64, reads: u32) -> (u64, usize) {
    let repo = builder(Stage::Shadow, &Arc::new(Collector::default()))
        .compare_sampling(fraction)
        .build()
        .unwrap();
    for key in 0..reads {
        get(&repo, key).await.unwrap();
    }
    (
        repo.stage().mismatch_rate().comparisons,
        repo.new_store().call_count(),
    )
}

#[tokio::test]
async fn sampling_one_compares_every_read() {
    assert_eq!(compared_reads(1.0, 500).await, (500, 500));
}

#[tokio::test]
async fn sampling_zero_never_reads_the_other_store() {
    assert_eq!(compared_reads(0.0, 500).await, (0, 0));
}

#[tokio::test]
async fn sampling_a_fraction_compares_about_that_share() {
    let (compared, new_reads) = compared_reads(0.3, 4_000).await;
    assert_eq!(
        compared as usize, new_reads,
        "only sampled reads touch the other store"
    );
    // Binomial(4000, 0.3): sd ~29; 300 either side is over 10 sd.
    assert!((900..1_500).contains(&compared), "{compared}");
}

#[test]
fn a_fraction_outside_zero_to_one_is_refused_at_build() {
    let error = builder(Stage::Shadow, &Arc::new(Collector::default()))
        .compare_sampling(1.5)
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("compare_sampling"), "{error}");
}
