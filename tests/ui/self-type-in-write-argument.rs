use dualwrite_runtime::dual_write;

pub trait Base {
    type Order;
}

/// `Self::Order` is the supertrait's: the operation enum cannot carry it.
#[dual_write]
pub trait Orders: Base {
    #[dual_write(write)]
    async fn put(&self, order: Self::Order) -> Result<(), String>;
}

fn main() {}
