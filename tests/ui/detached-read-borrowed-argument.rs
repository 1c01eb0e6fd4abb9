use dualwrite_runtime::dual_write;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Query<'a> {
    pub name: &'a str,
}

#[dual_write]
pub trait Accounts: Send + Sync {
    #[dual_write(read, detached)]
    fn find_users(&self, query: &Query<'_>) -> Result<Vec<String>, String>;
}

fn main() {}
