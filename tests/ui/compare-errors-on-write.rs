use dualwrite_runtime::dual_write;

fn same_error(a: &String, b: &String) -> bool {
    a == b
}

#[dual_write]
pub trait Orders {
    #[dual_write(write, key = id, compare_errors = same_error)]
    async fn put(&self, id: u64) -> Result<(), String>;
}

fn main() {}
