use dualwrite_runtime::dual_write;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub tags: Vec<String>,
}

#[dual_write]
pub trait Orders {
    #[dual_write(write, key = order.tags)]
    async fn put(&self, order: Order) -> Result<(), String>;
}

fn main() {}
