//! The `#[dual_write]` attribute of [dualwrite]. Depend on `dualwrite-runtime`,
//! which re-exports it and documents it; this crate holds only the code
//! generation.
//!
//! [dualwrite]: https://docs.rs/dualwrite-runtime

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod args;
mod ast;
mod expand;
mod fallback;
mod shape;
mod valid;
mod verbs;

use proc_macro::TokenStream;

/// Makes a repository trait dual-writable. See the `dualwrite-runtime` crate
/// docs for the options and the generated items.
#[proc_macro_attribute]
pub fn dual_write(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::dual_write(args.into(), item.into()).into()
}
