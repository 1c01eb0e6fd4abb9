use std::rc::Rc;

use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Orders {
    #[dual_write(write, key = id)]
    async fn put(&self, id: u64, note: Rc<String>) -> Result<(), String>;
}

fn main() {}
