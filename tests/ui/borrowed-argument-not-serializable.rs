use dualwrite_runtime::dual_write;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Register<'a> {
    pub username: &'a str,
}

#[dual_write]
pub trait Accounts {
    async fn register(&self, form: Option<&Register<'_>>) -> Result<(), String>;
}

fn main() {}
