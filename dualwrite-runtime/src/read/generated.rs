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

/// A detached read's serving error, kept for the comparison that runs after
/// the caller has its result: a copy when the error type is `Clone` (then
/// compared as a concurrent read's is), else its `Display` (or `Debug`)
/// text, else nothing to compare by.
pub enum KeptError<E> {
    /// A copy, compared with the method's error comparator.
    Value(E),
    /// The error's text, compared with the other error's text.
    Text(String),
    /// The error type can be neither copied nor shown: errors count as equal.
    Opaque,
}

/// How the generated code compares two errors: `(&&&&ErrorPair(a, b))
/// .errors_agree()` with the traits of [`error_probes`] in scope picks
/// `PartialEq`, else `Display` text, else `Debug` text, else "equal" (the
/// first that the error type implements, decided at compile time).
pub struct ErrorPair<'e, E: ?Sized>(pub &'e E, pub &'e E);

/// How the generated code keeps a detached read's serving error:
/// `(&&&&ErrorKeep(error)).keep()` with the traits of [`error_probes`] in
/// scope makes a [`KeptError`].
pub struct ErrorKeep<'e, E>(pub &'e E);

/// A read argument, rendered for the argument hash of a read without `key`:
/// `(&&&ArgumentProbe(&argument)).argument_text()` with the traits of
/// [`argument_probes`] in scope gives its JSON (`serde::Serialize`), else its
/// `Debug` text as a JSON string, else `null`.
pub struct ArgumentProbe<'a, A: ?Sized>(pub &'a A);

/// The traits that pick how two errors are compared and how a detached
/// read keeps its serving error (autoref specialisation: the most deref
/// steps the receiver needs, the more preferred the impl).
pub mod error_probes {
    use super::{ErrorKeep, ErrorPair, KeptError};
    use core::fmt::{Debug, Display};

    /// Errors with `PartialEq` are compared with it.
    pub trait ErrorsByPartialEq {
        /// Whether the two errors are equal.
        fn errors_agree(&self) -> bool;
    }
    impl<E: PartialEq + ?Sized> ErrorsByPartialEq for &&&ErrorPair<'_, E> {
        fn errors_agree(&self) -> bool {
            self.0 == self.1
        }
    }

    /// Else errors with `Display` are compared by their text.
    pub trait ErrorsByDisplay {
        /// Whether the two errors' `Display` texts are equal.
        fn errors_agree(&self) -> bool;
    }
    impl<E: Display + ?Sized> ErrorsByDisplay for &&ErrorPair<'_, E> {
        fn errors_agree(&self) -> bool {
            self.0.to_string() == self.1.to_string()
        }
    }

    /// Else errors with `Debug` are compared by their `Debug` text.
    pub trait ErrorsByDebug {
        /// Whether the two errors' `Debug` texts are equal.
        fn errors_agree(&self) -> bool;
    }
    impl<E: Debug + ?Sized> ErrorsByDebug for &ErrorPair<'_, E> {
        fn errors_agree(&self) -> bool {
            format!("{:?}", self.0) == format!("{:?}", self.1)
        }
    }

    /// Else two errors cannot be told apart and count as equal.
    pub trait ErrorsOpaque {
        /// Always `true`.
        fn errors_agree(&self) -> bool;
    }
    impl<E: ?Sized> ErrorsOpaque for ErrorPair<'_, E> {
        fn errors_agree(&self) -> bool {
            true
        }
    }

    /// A `Clone` error is kept as a copy.
    pub trait KeepByClone<E> {
        /// A copy of the error.
        fn keep(&self) -> KeptError<E>;
    }
    impl<E: Clone> KeepByClone<E> for &&&ErrorKeep<'_, E> {
        fn keep(&self) -> KeptError<E> {
            KeptError::Value(self.0.clone())
        }
    }

    /// Else an error with `Display` is kept as its text.
    pub trait KeepByDisplay<E> {
        /// The error's `Display` text.
        fn keep(&self) -> KeptError<E>;
    }
    impl<E: Display> KeepByDisplay<E> for &&ErrorKeep<'_, E> {
        fn keep(&self) -> KeptError<E> {
            KeptError::Text(self.0.to_string())
        }
    }

    /// Else an error with `Debug` is kept as its `Debug` text.
    pub trait KeepByDebug<E> {
        /// The error's `Debug` text.
        fn keep(&self) -> KeptError<E>;
    }
    impl<E: Debug> KeepByDebug<E> for &ErrorKeep<'_, E> {
        fn keep(&self) -> KeptError<E> {
            KeptError::Text(format!("{:?}", self.0))
        }
    }

    /// Else nothing is kept.
    pub trait KeepOpaque<E> {
        /// [`KeptError::Opaque`].
        fn keep(&self) -> KeptError<E>;
    }
    impl<E> KeepOpaque<E> for ErrorKeep<'_, E> {
        fn keep(&self) -> KeptError<E> {
            KeptError::Opaque
        }
    }
}

/// The traits that pick how a read argument is rendered for its hash.
pub mod argument_probes {
    use super::ArgumentProbe;

    /// An argument that is `Serialize` is its JSON.
    pub trait ArgumentBySerialize {
        /// The argument's JSON (`null` if it fails to serialise).
        fn argument_text(&self) -> String;
    }
    impl<A: serde::Serialize + ?Sized> ArgumentBySerialize for &&ArgumentProbe<'_, A> {
        fn argument_text(&self) -> String {
            serde_json::to_string(self.0).unwrap_or_else(|_| "null".to_owned())
        }
    }

    /// Else an argument that is `Debug` is its `Debug` text, as a JSON string.
    pub trait ArgumentByDebug {
        /// The argument's `Debug` text as a JSON string.
        fn argument_text(&self) -> String;
    }
    impl<A: core::fmt::Debug + ?Sized> ArgumentByDebug for &ArgumentProbe<'_, A> {
        fn argument_text(&self) -> String {
            serde_json::Value::String(format!("{:?}", self.0)).to_string()
        }
    }

    /// Else an argument is `null`: it does not contribute to the hash.
    pub trait ArgumentOpaque {
        /// `null`.
        fn argument_text(&self) -> String;
    }
    impl<A: ?Sized> ArgumentOpaque for ArgumentProbe<'_, A> {
        fn argument_text(&self) -> String {
            "null".to_owned()
        }
    }
}

/// A detached read that names `compare_errors` keeps a copy of its serving
/// error for the comparator.
#[diagnostic::on_unimplemented(
    message = "`{Self}` must implement `Clone` for `compare_errors` on a `detached` read",
    label = "a detached comparison keeps a copy of the serving store's error for `compare_errors`",
    note = "implement `Clone` for `{Self}`, or remove `compare_errors` (errors are then compared by their text), or remove `detached`"
)]
pub trait KeptForComparator: Clone {}
#[diagnostic::do_not_recommend]
impl<T: Clone> KeptForComparator for T {}

/// Keeps a copy of a detached read's serving error, for `compare_errors`.
pub fn keep_cloned_error<E: KeptForComparator>(error: &E) -> KeptError<E> {
    KeptError::Value(error.clone())
}
