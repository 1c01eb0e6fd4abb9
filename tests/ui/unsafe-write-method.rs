use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Orders {
    #[dual_write(write, key = id)]
    unsafe fn put_raw(&self, id: u64, bytes: Vec<u8>) -> Result<(), String>;
}

fn main() {}
