use dualwrite_runtime::dual_write;

pub struct Query {
    pub prefix: String,
}

#[dual_write]
pub trait Search: Send + Sync {
    #[dual_write(read)]
    async fn find(&self, query: Query) -> Result<Vec<u64>, String>;
}

fn main() {}
