//! Every shape `#[dual_write]` refuses is a compile error on the offending
//! tokens, with the form it expected. Each case in `tests/ui/` holds one
//! mistake; its `.stderr` is the message the user sees.
//!
//! Regenerate the messages after a deliberate change with
//! `TRYBUILD=overwrite cargo test --test ui`, then read every diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
