use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Users: Send + Sync {
    #[dual_write(write, follower = import_created, delivery = journaled)]
    async fn create_user(&self, name: &str) -> Result<u64, String>;

    #[dual_write(write, key = id)]
    async fn import_user(&self, id: u64, name: &str) -> Result<(), String>;
}

fn main() {}
