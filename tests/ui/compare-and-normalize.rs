use dualwrite_runtime::dual_write;

fn same(a: &Option<u64>, b: &Option<u64>) -> bool {
    a == b
}

fn rounded(value: &Option<u64>) -> Option<u64> {
    value.map(|value| value / 10)
}

#[dual_write]
pub trait Balances: Send + Sync {
    #[dual_write(read, key = id, compare = same, normalize = rounded)]
    async fn balance(&self, id: u64) -> Result<Option<u64>, String>;
}

fn main() {}
