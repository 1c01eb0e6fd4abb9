//! The `const _` checks: one per method, each spanned on the user's type it
//! checks, so that rustc reports a missing trait once, on the user's tokens.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::bounds::Requirement;
use super::context::Context;
use crate::ast::{Passing, Role};
use crate::shape;
use crate::valid;

impl Context<'_, '_> {
    /// One `const _` per write method holding the checks of its concrete
    /// types, each spanned on the type it checks, so that a type missing a
    /// trait is one error on the user's tokens with the reason. Types that
    /// name the trait's parameters are checked by the impls' bounds instead.
    pub(super) fn checks(&self) -> TokenStream {
        let private = &self.private;
        let methods = self.model.writes().map(|method| {
            let mut checks = Vec::new();
            for arg in &method.args {
                if self.mentions_generics(arg.ty) {
                    continue;
                }
                if let Passing::Payload { checked, .. } = &arg.passing {
                    checks.push(quote_spanned!(checked.span()=> #private::assert_borrowed_argument::<#checked>();));
                    continue;
                }
                // A check of `Vec<Entry>` names `Entry`, the type to change.
                if let Some(cloned) = Self::cloned_type(&arg.passing, arg.ty) {
                    for leaf in shape::leaves(cloned, shape::OWNED_CONTAINERS) {
                        let leaf = self.statically(leaf);
                        checks.push(quote_spanned!(leaf.span()=> #private::assert_cloned_argument::<#leaf>();));
                    }
                }
                // `&[T]` is queued as `Vec<T>`: check (and name) `T`.
                let queued = match arg.passing {
                    Passing::Value => Some(arg.ty),
                    Passing::Ref(elem)
                    | Passing::Slice(elem)
                    | Passing::OptionRef(elem)
                    | Passing::OptionSlice(elem) => Some(elem),
                    Passing::Cow(syn::Type::Slice(slice)) => Some(&*slice.elem),
                    _ => None,
                };
                for queued in queued.map_or_else(Vec::new, |queued| shape::leaves(queued, shape::OWNED_CONTAINERS)) {
                    let queued = self.statically(queued);
                    checks.push(quote_spanned!(queued.span()=> #private::assert_queued_argument::<#queued>();));
                    checks.push(quote_spanned!(queued.span()=> #private::assert_shared_argument::<#queued>();));
                }
            }
            if let Some(output) = method.output() {
                match method.error_type {
                    Some(error) if !self.mentions_generics(error) => {
                        checks.push(quote_spanned!(error.span()=> #private::assert_write_error::<#error>();));
                    }
                    Some(_) => {}
                    None if !self.mentions_generics(output) => {
                        checks.push(quote_spanned!(output.span()=> #private::assert_write_result::<#output>();));
                    }
                    None => {}
                }
            }
            checks_item(&method.cfgs, &checks)
        });
        quote!(#(#methods)*)
    }

    /// One `const _` per read holding the checks of its concrete types,
    /// spanned on each type (as `checks()` does for writes).
    pub(super) fn read_checks(&self) -> TokenStream {
        let private = &self.private;
        let methods = self
            .model
            .implemented()
            .filter(|method| method.role == Role::Read)
            .map(|method| {
                let checks: Vec<TokenStream> = Self::read_requirements(method)
                    .into_iter()
                    .filter(|(ty, _)| {
                        !self.mentions_generics(ty) && valid::mentions_self(ty).is_none()
                    })
                    .flat_map(|(ty, need)| {
                        let (check, through) = match need {
                            Requirement::Clone => {
                                (quote!(assert_compared_argument), shape::OWNED_CONTAINERS)
                            }
                            Requirement::PartialEq => {
                                (quote!(assert_compared_value), shape::COMPARED_CONTAINERS)
                            }
                            Requirement::Detached => (quote!(assert_detached_value), &[][..]),
                        };
                        // `Option<Arc<Url>>` is compared if `Url` is: name `Url`.
                        shape::leaves(ty, through)
                            .into_iter()
                            .map(|leaf| {
                                let leaf = self.statically(leaf);
                                quote_spanned!(leaf.span()=> #private::#check::<#leaf>();)
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                checks_item(&method.cfgs, &checks)
            });
        quote!(#(#methods)*)
    }
}

/// A `const _` item running a method's compile-time checks, under the
/// method's `#[cfg]`s (nothing when there are no checks).
fn checks_item(cfgs: &[&syn::Attribute], checks: &[TokenStream]) -> TokenStream {
    if checks.is_empty() {
        return TokenStream::new();
    }
    quote! {
        #(#cfgs)*
        const _: () = {
            #(#checks)*
        };
    }
}
