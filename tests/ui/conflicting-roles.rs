use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Orders {
    #[dual_write(read, write)]
    async fn touch(&self, id: u64) -> Result<(), String>;
}

fn main() {}
