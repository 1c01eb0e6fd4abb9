use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Orders {
    type Order;

    #[dual_write(write)]
    async fn put(&self, order: Self::Order) -> Result<(), String>;
}

fn main() {}
