// The trait attribute was removed at cutover; the method attribute left
// behind is inert, but a typo in it is still reported.
use dualwrite_runtime::dual_write;

pub trait Orders {
    #[dual_write(wirte, key = id)]
    async fn put(&self, id: u64) -> Result<(), String>;
}

fn main() {}
