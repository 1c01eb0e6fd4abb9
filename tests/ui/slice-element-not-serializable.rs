use dualwrite_runtime::dual_write;

#[derive(Clone)]
pub struct Line {
    pub sku: String,
}

#[dual_write]
pub trait Orders {
    #[dual_write(write, key = id)]
    async fn put_lines(&self, id: u64, lines: &[Line]) -> Result<(), String>;
}

fn main() {}
