use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Orders {
    #[dual_write(write)]
    async fn put_all(&self, ids: &mut Vec<u64>) -> Result<(), String>;
}

fn main() {}
