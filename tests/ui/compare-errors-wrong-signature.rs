use std::future::Future;

use dualwrite_runtime::dual_write;

fn same_error(a: &u32, b: &u32) -> bool {
    a == b
}

#[dual_write]
pub trait Lookups: Send + Sync {
    #[dual_write(read, key = id, compare_errors = same_error)]
    fn find(&self, id: u64) -> impl Future<Output = Result<u64, String>> + Send;
}

fn main() {}
