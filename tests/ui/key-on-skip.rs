use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Orders {
    #[dual_write(skip, key = id)]
    async fn ping(&self, id: u64) -> Result<(), String>;
}

fn main() {}
