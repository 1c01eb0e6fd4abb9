use dualwrite_runtime::dual_write;

/// Implemented by each store, with no blanket impl the wrapper could use.
pub trait Named {
    fn name(&self) -> &str;
}

#[dual_write]
pub trait Orders: Named {
    async fn put(&self, id: u64) -> Result<(), String>;
}

fn main() {}
