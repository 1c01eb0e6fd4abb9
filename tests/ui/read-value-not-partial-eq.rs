use dualwrite_runtime::dual_write;

pub struct Report {
    pub lines: Vec<String>,
}

#[dual_write]
pub trait Reports: Send + Sync {
    #[dual_write(read, key = id)]
    async fn report(&self, id: u64) -> Result<Report, String>;
}

fn main() {}
