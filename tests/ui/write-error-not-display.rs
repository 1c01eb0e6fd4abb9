use dualwrite_runtime::dual_write;

pub struct OpaqueError;

#[dual_write]
pub trait Orders {
    #[dual_write(write, key = id)]
    async fn put(&self, id: u64) -> Result<(), OpaqueError>;
}

fn main() {}
