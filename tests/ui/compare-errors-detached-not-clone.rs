use std::future::Future;

use dualwrite_runtime::dual_write;

/// An error that cannot be copied.
#[derive(Debug, PartialEq)]
pub struct LookupError(String);

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn same_error(a: &LookupError, b: &LookupError) -> bool {
    a == b
}

#[dual_write]
pub trait Lookups: Send + Sync {
    #[dual_write(read, key = id, detached, compare_errors = same_error)]
    fn find(&self, id: u64) -> impl Future<Output = Result<u64, LookupError>> + Send;
}

fn main() {}
