use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Crawler {
    async fn record_fetch(&self, url: &str) -> Result<(), String>;
}

fn main() {}
