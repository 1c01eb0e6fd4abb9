use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Orders {
    type Rows<'a>
    where
        Self: 'a;

    #[dual_write(read)]
    async fn list(&self) -> Result<Vec<u64>, String>;
}

fn main() {}
