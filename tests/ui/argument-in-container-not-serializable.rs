use dualwrite_runtime::dual_write;

#[derive(Clone)]
pub struct Entry {
    pub id: u64,
}

#[dual_write]
pub trait Ledger {
    async fn append_entries(&self, entries: Vec<Entry>) -> Result<(), String>;
}

fn main() {}
