//! On error, the item is still emitted (without our method attributes), so
//! the only errors the user sees are the real ones.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{ItemTrait, TraitItem};

use crate::args::is_dual_write_attr;

/// The trait as the user wrote it, minus the method-level `#[dual_write]`
/// attributes this macro consumes.
pub(crate) fn strip_method_attributes(item: &ItemTrait) -> ItemTrait {
    let mut item = item.clone();
    for trait_item in &mut item.items {
        if let TraitItem::Fn(method) = trait_item {
            method.attrs.retain(|attr| !is_dual_write_attr(attr));
        }
    }
    item
}

pub(crate) fn trait_with_errors(item: &ItemTrait, errors: syn::Error) -> TokenStream {
    let mut tokens = strip_method_attributes(item).into_token_stream();
    tokens.extend(errors.into_compile_error());
    tokens
}

pub(crate) fn tokens_with_errors(mut tokens: TokenStream, errors: syn::Error) -> TokenStream {
    tokens.extend(errors.into_compile_error());
    tokens
}
