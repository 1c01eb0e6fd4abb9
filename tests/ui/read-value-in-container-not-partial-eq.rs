use std::sync::Arc;

use dualwrite_runtime::dual_write;

pub struct Url(pub String);

#[dual_write]
pub trait Links {
    async fn get_link(&self, id: u64) -> Result<Option<Arc<Url>>, String>;
}

fn main() {}
