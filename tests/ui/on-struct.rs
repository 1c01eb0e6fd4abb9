use dualwrite_runtime::dual_write;

#[dual_write]
pub struct OrderStore {
    pub url: String,
}

fn main() {}
