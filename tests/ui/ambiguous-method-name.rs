use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Orders {
    async fn frobnicate(&self, id: u64) -> Result<(), String>;
}

fn main() {}
