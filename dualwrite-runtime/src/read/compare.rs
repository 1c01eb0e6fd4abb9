//! Deciding whether two stores' results agree.

use crate::observe::ComparisonOutcome;

/// What the compared store answered, as far as the comparison cares.
pub(crate) enum Answer<'v, T: ?Sized> {
    /// `Ok` (or a result that is not a `Result`), with its value.
    Value(&'v T),
    /// `Err`.
    Errored,
    /// A panic.
    Panicked,
    /// Nothing within the bound.
    TimedOut,
}

/// Compares the serving store's value (`None` when it errored) with the
/// compared store's answer, catching a panic in the comparators.
/// `errors_agree` is asked only when both stores answered `Err`.
pub(crate) fn judge<T: ?Sized>(
    serving: Option<&T>,
    other: Answer<'_, T>,
    compare: &dyn Fn(&T, &T) -> bool,
    errors_agree: &dyn Fn() -> bool,
) -> ComparisonOutcome {
    match (serving, other) {
        (_, Answer::TimedOut) => ComparisonOutcome::ComparedTimedOut,
        (Some(serving), Answer::Value(other)) => {
            match crate::guarded::caught_blocking(|| compare(serving, other)) {
                Ok(true) => ComparisonOutcome::Match,
                Ok(false) => ComparisonOutcome::ValueMismatch,
                Err(_) => ComparisonOutcome::ComparatorPanicked,
            }
        }
        (Some(_), Answer::Errored | Answer::Panicked) => ComparisonOutcome::ComparedErrored,
        (None, Answer::Value(_)) => ComparisonOutcome::ServingErrored,
        (None, Answer::Errored) => match crate::guarded::caught_blocking(errors_agree) {
            Ok(true) => ComparisonOutcome::BothErrored,
            Ok(false) => ComparisonOutcome::ErrorMismatch,
            Err(_) => ComparisonOutcome::ComparatorPanicked,
        },
        (None, Answer::Panicked) => ComparisonOutcome::ErrorMismatch,
    }
}

/// The default comparator: `PartialEq`.
pub fn equal<T: PartialEq + ?Sized>(serving: &T, other: &T) -> bool {
    serving == other
}

/// A comparator that compares what `normalize` makes of each value, to
/// ignore differences that do not matter (timestamp precision, the order of
/// a set, trailing whitespace). The `normalize = path` method option uses it.
///
/// ```
/// use dualwrite_runtime::read::normalized;
///
/// /// The old store keeps milliseconds, the new one microseconds.
/// fn to_millis(micros_or_millis: &(u64, bool)) -> u64 {
///     let (value, is_micros) = *micros_or_millis;
///     if is_micros { value / 1000 } else { value }
/// }
/// let same = normalized(to_millis);
/// assert!(same(&(1_500_123, true), &(1_500, false)));
/// ```
pub fn normalized<T: ?Sized, U: PartialEq>(
    normalize: fn(&T) -> U,
) -> impl Fn(&T, &T) -> bool + Copy + Send + Sync {
    move |serving, other| normalize(serving) == normalize(other)
}

/// Splits a `Result` output into its `Ok` value or its error.
pub fn result_view<T, E>(result: &Result<T, E>) -> Result<&T, &E> {
    result.as_ref()
}

/// Views an output that is not a `Result` as always `Ok`.
pub fn plain_view<T>(value: &T) -> Result<&T, &std::convert::Infallible> {
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_of_results_has_its_outcome() {
        use ComparisonOutcome::*;
        let eq = &equal::<u32>;
        let (same, differ) = (&|| true, &|| false);
        assert_eq!(judge(Some(&1), Answer::Value(&1), eq, same), Match);
        assert_eq!(judge(Some(&1), Answer::Value(&2), eq, same), ValueMismatch);
        assert_eq!(judge(None, Answer::Value(&2), eq, same), ServingErrored);
        assert_eq!(judge(Some(&1), Answer::Errored, eq, same), ComparedErrored);
        assert_eq!(judge(Some(&1), Answer::Panicked, eq, same), ComparedErrored);
        assert_eq!(judge(None, Answer::Errored, eq, same), BothErrored);
        assert_eq!(judge(None, Answer::Errored, eq, differ), ErrorMismatch);
        assert_eq!(judge(None, Answer::Panicked, eq, same), ErrorMismatch);
        assert_eq!(
            judge(Some(&1), Answer::TimedOut, eq, same),
            ComparedTimedOut
        );
        assert_eq!(judge(None, Answer::TimedOut, eq, same), ComparedTimedOut);
        let panicking = &|_: &u32, _: &u32| -> bool { panic!("comparator bug") };
        assert_eq!(
            judge(Some(&1), Answer::Value(&1), panicking, same),
            ComparatorPanicked
        );
        let panicking_errors = &|| -> bool { panic!("error comparator bug") };
        assert_eq!(
            judge(None, Answer::Errored, eq, panicking_errors),
            ComparatorPanicked
        );
    }

    #[test]
    fn only_a_match_and_two_equal_errors_are_agreements() {
        for outcome in ComparisonOutcome::ALL {
            let agrees = matches!(
                outcome,
                ComparisonOutcome::Match | ComparisonOutcome::BothErrored
            );
            assert_eq!(outcome.is_disagreement(), !agrees, "{outcome}");
        }
    }

    #[test]
    fn a_normaliser_decides_equality() {
        let same = normalized(|text: &String| text.trim().to_owned());
        assert!(same(&"a ".to_owned(), &"a".to_owned()));
        assert!(!same(&"a".to_owned(), &"b".to_owned()));
    }
}
