//! `impl HasOperations<TraitOp> for DualWrite<Old, New>`: lets
//! `repo.spawn_worker()` find the operation enum without a turbofish.
//!
//! An impl of a public trait for `DualWrite` that names the enum makes the
//! enum, and through its replay impl the user's trait, reachable in rustc's
//! eyes, even when the trait is `pub` inside a private module. rustc would
//! then lint the trait's native `async fn`s as if the trait were published
//! (`async_fn_in_trait`), a warning the user did not have before the
//! attribute; [`lint_allowance`](Context::lint_allowance) puts it back.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{GenericParam, Visibility};

use super::context::Context;
use crate::ast::Form;

impl Context<'_, '_> {
    pub(super) fn operations_impl(&self) -> TokenStream {
        let private = &self.private;
        let (old, new) = (&self.old, &self.new);
        // With associated types in write arguments the enum has parameters
        // for them, taken here as the old store's.
        let op_type = self.op_type_for(old);
        // As for the replay impl: the enum is owned, so the trait's
        // lifetime parameters are taken at `'static`.
        let mut generics = self.impl_generics(&[old, new]);
        generics.params = generics
            .params
            .into_iter()
            .filter(|param| !matches!(param, GenericParam::Lifetime(_)))
            .collect();
        if !self.assoc_params.is_empty() {
            let trait_path = self.trait_path();
            generics
                .make_where_clause()
                .predicates
                .push(syn::parse_quote!(#old: #trait_path));
        }
        let (impl_generics, _, where_clause) = generics.split_for_impl();
        let tokens = quote! {
            #[automatically_derived]
            impl #impl_generics #private::HasOperations<#op_type>
                for #private::DualWrite<#old, #new> #where_clause {}
        };
        self.at_static_lifetimes(tokens)
    }

    /// `#[allow(async_fn_in_trait)]` for a `pub` trait with native `async
    /// fn`s (see the module docs). A trait that is not `pub` is never
    /// linted, so it gets nothing; a trait published to other crates had
    /// the warning before, and its docs say why it is allowed here.
    pub(super) fn lint_allowance(&self) -> TokenStream {
        let native = self
            .model
            .methods
            .iter()
            .any(|method| matches!(method.form, Form::NativeAsync));
        if native && matches!(self.model.item.vis, Visibility::Public(_)) {
            quote!(#[allow(async_fn_in_trait)])
        } else {
            TokenStream::new()
        }
    }
}
