//! Helpers and checks for the code `#[dual_write]` generates for reads.
//! Not part of the API; re-exported through `__private`.

/// The results of a `report_values` read, as text for mismatch reports.
pub fn debug_values<R: core::fmt::Debug>() -> Option<fn(&R) -> String> {
    Some(|result| format!("{result:?}"))
}

/// No values in reports (the default).
pub fn no_values<R>() -> Option<fn(&R) -> String> {
    None
}

/// A by-value argument of a compared read goes to both stores.
#[diagnostic::on_unimplemented(
    message = "`{Self}` must implement `Clone` to be an argument of a read method",
    label = "in `Shadow` and `Live` dualwrite passes this argument to both stores",
    note = "derive or implement `Clone` for `{Self}`, take it by reference, or mark the method `#[dual_write(skip)]`"
)]
pub trait ComparedArgument: Clone {}
#[diagnostic::do_not_recommend]
impl<T: Clone> ComparedArgument for T {}

/// The value of a read is compared with `PartialEq` unless the method says how.
#[diagnostic::on_unimplemented(
    message = "`{Self}` must implement `PartialEq` to be compared between the two stores",
    label = "dualwrite compares the value this read returns from both stores",
    note = "derive `PartialEq` for `{Self}`, or give the method `compare = path` or `normalize = path`, or mark it `#[dual_write(skip)]`"
)]
pub trait ComparedValue: PartialEq {}
#[diagnostic::do_not_recommend]
impl<T: PartialEq + ?Sized> ComparedValue for T {}

/// A detached comparison keeps the serving value after the call returns.
#[diagnostic::on_unimplemented(
    message = "`{Self}` must be `Clone + Send + 'static` to be the value of a `detached` read",
    label = "a detached comparison keeps a copy of this value after the call returns",
    note = "return an owned, thread-safe value, or remove `detached` (the comparison then runs within the call)"
)]
pub trait DetachedValue: Clone + Send + 'static {}
#[diagnostic::do_not_recommend]
impl<T: Clone + Send + 'static> DetachedValue for T {}

/// Checks, with the error on the argument's type, that it can be cloned.
pub const fn assert_compared_argument<T: ComparedArgument>() {}

/// Checks, with the error on the value's type, that it can be compared.
pub const fn assert_compared_value<T: ComparedValue + ?Sized>() {}

/// Checks, with the error on the value's type, that it can outlive the call.
pub const fn assert_detached_value<T: DetachedValue>() {}
