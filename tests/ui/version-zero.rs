use dualwrite_runtime::dual_write;

#[dual_write(version = 0)]
pub trait Orders {
    #[dual_write(write, key = id)]
    async fn put(&self, id: u64) -> Result<(), String>;
}

fn main() {}
