use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Orders {
    #[dual_write(write, key = id, detached)]
    async fn put(&self, id: u64) -> Result<(), String>;
}

fn main() {}
