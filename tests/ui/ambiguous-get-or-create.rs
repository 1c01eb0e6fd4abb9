use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Orders {
    async fn get_or_create(&self, id: u64) -> Result<u64, String>;
}

fn main() {}
