//! The `Replay` impl: an operation taken from the queue, applied to a store.

use proc_macro2::{Ident, TokenStream};
use quote::quote;
use syn::{parse_quote, GenericParam};

use super::context::{mixed, Context};
use super::shapes::follower_argument;
use crate::ast::{Form, Receiver};

impl Context<'_, '_> {
    pub(super) fn replay_impl(&self) -> TokenStream {
        let private = &self.private;
        let scrutinee = self.match_scrutinee();
        let store = &self.store;
        let op_type = self.op_type();
        let trait_path = self.trait_path_with_assoc();
        // The operation (an owned, `'static` value) has no lifetime that
        // could stand for the trait's lifetime parameters, and an impl
        // parameter that is not constrained cannot appear in `replay`'s
        // returned future. So replay uses the trait at `'static`: the
        // stores' `impl<'a> Trait<'a> for Store` covers it.
        let assoc: Vec<&Ident> = self.assoc_params.iter().collect();
        let mut generics = self.impl_generics(&[&assoc[..], &[store]].concat());
        generics.params = generics
            .params
            .into_iter()
            .filter(|param| !matches!(param, GenericParam::Lifetime(_)))
            .collect();
        let predicates = &mut generics.make_where_clause().predicates;
        predicates.push(parse_quote!(#store: #trait_path));
        predicates.push(parse_quote!(for<'__dualwrite_check> Self: #private::Operation));
        predicates.extend(self.clone_bounds(store));
        predicates.extend(self.error_display_bounds(store));
        predicates.extend(self.payload_bounds(true));
        let (impl_generics, _, where_clause) = generics.split_for_impl();
        let store_arg = mixed("__dualwrite_store");
        let error = mixed("__dualwrite_error");
        let as_trait = self.as_trait(store);
        let arms = self.model.writes().map(|method| {
            let variant = self.variant(method);
            let cfgs = &method.cfgs;
            let ident = method.ident();
            let names: Vec<&Ident> = method.args.iter().map(|arg| &arg.name).collect();
            let call_args = method.args.iter().map(|arg| follower_argument(&arg.name, &arg.passing));
            let receiver = match method.receiver {
                Receiver::Ref => quote!(&**#store_arg),
                Receiver::Arc => quote!(::std::sync::Arc::clone(#store_arg)),
            };
            let call = quote!(#as_trait::#ident(#receiver, #(#call_args),*));
            let call = match method.form {
                Form::Blocking => quote!(#private::run_blocking(|| #call)),
                _ => quote!(#call.await),
            };
            let applied = quote! {
                match #call {
                    ::core::result::Result::Ok(_) => ::core::result::Result::Ok(()),
                    ::core::result::Result::Err(#error) => ::core::result::Result::Err(#private::error_text(#error)),
                }
            };
            let applied = self.with_read_back(method.args.iter(), applied);
            quote! {
                #(#cfgs)*
                Self::#variant { #(#names),* } => #applied,
            }
        });
        let marker = self.marker_arm();
        let tokens = quote! {
            #[automatically_derived]
            impl #impl_generics #private::Replay<#store> for #op_type #where_clause {
                #[allow(clippy::manual_async_fn)]
                fn replay<'__dualwrite>(
                    &'__dualwrite self,
                    #store_arg: &'__dualwrite ::std::sync::Arc<#store>,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<(), ::std::string::String>,
                > + '__dualwrite {
                    async move {
                        match #scrutinee { #(#arms)* #marker }
                    }
                }
            }
        };
        self.at_static_lifetimes(tokens)
    }

    /// `tokens` with the trait's lifetime parameters replaced by `'static`,
    /// for the impls on the (owned, `'static`) operation enum.
    pub(super) fn at_static_lifetimes(&self, tokens: TokenStream) -> TokenStream {
        let lifetimes: Vec<String> = self
            .model
            .item
            .generics
            .lifetimes()
            .map(|param| param.lifetime.ident.to_string())
            .collect();
        with_static_lifetimes(tokens, &lifetimes)
    }
}

/// `tokens` with each lifetime named in `names` replaced by `'static`.
fn with_static_lifetimes(tokens: TokenStream, names: &[String]) -> TokenStream {
    use proc_macro2::{Group, TokenTree};
    if names.is_empty() {
        return tokens;
    }
    let mut after_quote = false;
    tokens
        .into_iter()
        .map(|token| {
            let token = match token {
                TokenTree::Group(group) => {
                    let mut replaced = Group::new(
                        group.delimiter(),
                        with_static_lifetimes(group.stream(), names),
                    );
                    replaced.set_span(group.span());
                    TokenTree::Group(replaced)
                }
                TokenTree::Ident(ident) if after_quote && names.contains(&ident.to_string()) => {
                    TokenTree::Ident(Ident::new("static", ident.span()))
                }
                other => other,
            };
            after_quote = matches!(&token, TokenTree::Punct(punct) if punct.as_char() == '\'');
            token
        })
        .collect()
}
