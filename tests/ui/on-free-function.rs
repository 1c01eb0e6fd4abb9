use dualwrite_runtime::dual_write;

#[dual_write]
pub async fn save_order(id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

fn main() {}
