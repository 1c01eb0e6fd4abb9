use async_trait::async_trait;
use dualwrite_runtime::dual_write;

#[async_trait]
#[dual_write]
pub trait Orders {
    #[dual_write(write, key = id)]
    async fn put(&self, id: u64) -> Result<(), String>;
}

fn main() {}
