use dualwrite_runtime::dual_write;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
}

#[dual_write]
pub trait Orders {
    #[dual_write(write, key = order.id)]
    async fn put(&self, order: Order) -> Result<(), String>;
}

fn main() {}
