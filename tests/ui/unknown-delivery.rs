use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Accounts {
    #[dual_write(write, key = id, delivery = eventually)]
    fn put_balance(&self, id: u64, cents: i64) -> Result<(), String>;
}

fn main() {}
