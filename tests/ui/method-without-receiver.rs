use dualwrite_runtime::dual_write;

#[dual_write]
pub trait Orders {
    #[dual_write(read)]
    fn table_name() -> &'static str;
}

fn main() {}
