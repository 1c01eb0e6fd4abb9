use dualwrite_runtime::dual_write;

fn same_error(a: &String, b: &String) -> bool {
    a == b
}

#[dual_write]
pub trait Counters: Send + Sync {
    #[dual_write(read, key = id, compare_errors = same_error)]
    async fn count(&self, id: u64) -> u64;
}

fn main() {}
