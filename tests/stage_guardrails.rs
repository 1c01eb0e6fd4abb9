//! A move that makes the new store serve reads is refused while too many
//! recent comparisons disagreed; a rollback never is; a forced move carries
//! its reason to the observers.

mod reads_support;

use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::{MismatchGuard, Rollout, Stage, StageError};
use reads_support::{builder, get, seed, wrapper, Collector, Repo};

/// Ten compared reads in `Shadow`, `bad` of which disagree.
async fn shadow_traffic(repo: &Repo, bad: u32) {
    for key in 0..10 {
        seed(repo.old_store(), key, 1).await;
        seed(repo.new_store(), key, if key < bad { 2 } else { 1 }).await;
        get(repo, key).await.unwrap();
    }
}

#[tokio::test]
async fn the_move_to_live_is_refused_while_the_mismatch_rate_is_above_the_bound() {
    let (repo, _collector) = wrapper(Stage::Shadow);
    shadow_traffic(&repo, 3).await;
    let refused = repo.stage().set(Stage::Live).await.unwrap_err();
    match &refused {
        StageError::MismatchRate { from, to, rate, .. } => {
            assert_eq!((*from, *to), (Stage::Shadow, Stage::Live));
            assert_eq!((rate.comparisons, rate.disagreements), (10, 3));
        }
        other => panic!("expected a mismatch-rate refusal, got {other}"),
    }
    assert!(refused.to_string().contains("30.00%"), "{refused}");
    assert_eq!(repo.stage().get(), Stage::Shadow, "the stage is unchanged");
}

#[tokio::test]
async fn a_rollout_to_live_is_refused_like_the_move() {
    let (repo, _collector) = wrapper(Stage::Shadow);
    shadow_traffic(&repo, 3).await;
    let refused = repo
        .stage()
        .set_rollout(Some(Rollout::new(Stage::Live, 5.0).unwrap()))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StageError::MismatchRate { .. }),
        "{refused}"
    );
    assert_eq!(repo.stage().rollout(), None);
}

#[tokio::test]
async fn after_a_fix_and_a_reset_clean_comparisons_let_the_move_through() {
    let (repo, _collector) = wrapper(Stage::Shadow);
    shadow_traffic(&repo, 3).await;
    assert!(repo.stage().set(Stage::Live).await.is_err());
    repo.stage().reset_comparisons();
    shadow_traffic(&repo, 0).await;
    repo.stage().set(Stage::Live).await.unwrap();
    assert_eq!(repo.stage().get(), Stage::Live);
}

#[tokio::test(start_paused = true)]
async fn comparisons_older_than_the_window_no_longer_count() {
    let collector = Arc::new(Collector::default());
    let repo = builder(Stage::Shadow, &collector)
        .mismatch_guard(MismatchGuard::default().window(Duration::from_secs(60)))
        .build()
        .unwrap();
    shadow_traffic(&repo, 3).await;
    assert!(repo.stage().set(Stage::Live).await.is_err());
    tokio::time::advance(Duration::from_secs(61)).await;
    repo.stage().set(Stage::Live).await.unwrap();
}

#[tokio::test]
async fn a_rate_within_the_bound_is_accepted() {
    let collector = Arc::new(Collector::default());
    let repo = builder(Stage::Shadow, &collector)
        .mismatch_guard(MismatchGuard::default().max_rate(0.2))
        .build()
        .unwrap();
    shadow_traffic(&repo, 2).await;
    repo.stage().set(Stage::Live).await.unwrap();
}

#[tokio::test]
async fn rolling_back_is_never_refused_for_mismatches() {
    let (repo, _collector) = wrapper(Stage::Live);
    shadow_traffic(&repo, 10).await;
    repo.stage().set(Stage::Shadow).await.unwrap();
    repo.stage().set(Stage::DualWrite).await.unwrap();
}

#[tokio::test]
async fn a_forced_move_reaches_the_observers_with_its_reason() {
    let (repo, collector) = wrapper(Stage::Shadow);
    shadow_traffic(&repo, 3).await;
    let change = repo
        .stage()
        .force(
            Stage::Live,
            "mismatches are the known clock-skew bug, ticket 981",
        )
        .await
        .unwrap();
    assert_eq!(
        change.forced.as_deref(),
        Some("mismatches are the known clock-skew bug, ticket 981")
    );
    let seen = collector.stage_changes.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].from, seen[0].to), (Stage::Shadow, Stage::Live));
    assert_eq!(seen[0].forced, change.forced);
}

#[tokio::test]
async fn an_unforced_move_reaches_the_observers_without_a_reason() {
    let (repo, collector) = wrapper(Stage::DualWrite);
    repo.stage().set(Stage::Shadow).await.unwrap();
    let seen = collector.stage_changes.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].forced, None);
}
