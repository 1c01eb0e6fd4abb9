use dualwrite_runtime::dual_write;

macro_rules! methods {
    () => {};
}

#[dual_write]
pub trait Orders {
    methods!();
}

fn main() {}
