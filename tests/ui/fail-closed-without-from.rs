use dualwrite_runtime::dual_write;

#[derive(Debug)]
pub struct RepoError;

impl std::fmt::Display for RepoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("repo error")
    }
}

#[dual_write]
pub trait Accounts {
    #[dual_write(write, key = id, fail_closed)]
    fn put_balance(&self, id: u64, cents: i64) -> Result<(), RepoError>;
}

fn main() {}
