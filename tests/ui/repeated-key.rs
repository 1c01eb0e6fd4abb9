use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Orders {
    #[dual_write(write, key = id, key = tenant)]
    async fn put(&self, tenant: u32, id: u64) -> Result<(), String>;
}

fn main() {}
