use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Orders {
    #[dual_write(write, key = id)]
    async fn put<T: serde::Serialize>(&self, id: u64, value: T) -> Result<(), String>;
}

fn main() {}
