//! `impl Trait for DualWrite<Old, New>`: the associated items, the
//! methods' signatures, the stores as each receiver names them, and the
//! bodies of `skip` methods.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{parse_quote, FnArg, Ident};

use super::context::{mixed, Context};
use crate::ast::{Form, Method, Receiver, Role};

impl Context<'_, '_> {
    pub(super) fn wrapper_impl(&self) -> TokenStream {
        let private = &self.private;
        let (old, new) = (&self.old, &self.new);
        let trait_path = self.trait_path();
        let as_old = self.as_trait(old);
        let item = self.model.item;
        let mut generics = self.impl_generics(&[old, new]);
        let assoc_equalities = self.model.types.iter().map(|ty| {
            let ident = &ty.ident;
            quote!(#ident = #as_old::#ident)
        });
        let new_bound = self.trait_with(assoc_equalities);
        let op_type = self.op_type_for(old);
        let predicates = &mut generics.make_where_clause().predicates;
        predicates.push(parse_quote!(#old: #trait_path));
        predicates.push(parse_quote!(#new: #new_bound));
        predicates.push(parse_quote!(for<'__dualwrite_check> #op_type: #private::Operation));
        predicates.extend(self.clone_bounds(old));
        predicates.extend(self.payload_bounds(false));
        predicates.extend(self.payload_bounds(true));
        if self.model.has_supertraits() {
            // A supertrait's blanket impl may ask `'static` of the wrapper
            // (`impl<T: Db + Clone + 'static> CloneDb for T`); a wrapper of
            // stores that borrow is of little use, so ask it of the stores.
            predicates.push(parse_quote!(#old: 'static));
            predicates.push(parse_quote!(#new: 'static));
        }
        predicates.extend(self.error_display_bounds(old));
        predicates.extend(self.read_bounds(old));
        if self
            .model
            .implemented()
            .any(|method| method.role == Role::Read && method.detached)
        {
            // A detached comparison calls the other store from a task of
            // its own.
            let shared = quote!(::core::marker::Send + ::core::marker::Sync + 'static);
            predicates.push(parse_quote!(#old: #shared));
            predicates.push(parse_quote!(#new: #shared));
        }
        let (impl_generics, _, where_clause) = generics.split_for_impl();
        let unsafety = &item.unsafety;
        let async_trait = self.model.async_trait;
        let types = self.model.types.iter().map(|ty| {
            let ident = &ty.ident;
            let cfgs = ty.attrs.iter().filter(|attr| attr.path().is_ident("cfg"));
            quote!(#(#cfgs)* type #ident = #as_old::#ident;)
        });
        let consts = self
            .model
            .consts
            .iter()
            .filter(|constant| constant.default.is_none())
            .map(|constant| {
                let ident = &constant.ident;
                let ty = &constant.ty;
                let cfgs = constant
                    .attrs
                    .iter()
                    .filter(|attr| attr.path().is_ident("cfg"));
                quote!(#(#cfgs)* const #ident: #ty = #as_old::#ident;)
            });
        let methods = self
            .model
            .implemented()
            .map(|method| self.wrapper_method(method));
        quote! {
            #[automatically_derived]
            #async_trait
            #unsafety impl #impl_generics #trait_path for #private::DualWrite<#old, #new> #where_clause {
                #(#types)*
                #(#consts)*
                #(#methods)*
            }
        }
    }

    fn wrapper_method(&self, method: &Method<'_>) -> TokenStream {
        let mut sig = method.item.sig.clone();
        let mut names = method.args.iter().map(|arg| &arg.name);
        for input in &mut sig.inputs {
            if let FnArg::Typed(typed) = input {
                typed.attrs.clear();
                if let Some(name) = names.next() {
                    *typed.pat = parse_quote!(#name);
                }
            }
        }
        let cfgs = &method.cfgs;
        let body = match method.role {
            Role::Write => self.write_body(method),
            _ => self.read_body(method),
        };
        let body = match method.form {
            Form::ImplFuture(_) => quote!(async move { #body }),
            _ => body,
        };
        quote! {
            #(#cfgs)*
            #[allow(clippy::manual_async_fn)]
            #sig {
                #body
            }
        }
    }

    /// `self` as `&DualWrite`, and the two stores as this receiver's body
    /// names them, old first.
    pub(super) fn stores(&self, method: &Method<'_>) -> (TokenStream, [Store; 2]) {
        let private = &self.private;
        let this = match method.receiver {
            Receiver::Ref => quote!(self),
            Receiver::Arc => quote!(&*self),
        };
        let store = |ident: &Ident, name: &str, side: TokenStream| {
            let [by_ref, by_arc] = [format_ident!("__{name}"), format_ident!("__{name}_arc")];
            let arc = quote!(#private::DualWrite::#by_arc(#this));
            Store {
                side: quote!(#private::Side::#side),
                as_trait: self.as_trait(ident),
                receiver: match method.receiver {
                    Receiver::Ref => quote!(#private::DualWrite::#by_ref(#this)),
                    Receiver::Arc => arc.clone(),
                },
                arc,
                local: mixed(&format!("__dualwrite_{name}")),
            }
        };
        let stores = [
            store(&self.old, "old", quote!(Old)),
            store(&self.new, "new", quote!(New)),
        ];
        (this, stores)
    }

    /// A `skip` method: forwarded to the serving store, never compared.
    pub(super) fn skip_body(&self, method: &Method<'_>) -> TokenStream {
        let private = &self.private;
        let (this, stores) = self.stores(method);
        let ident = method.ident();
        let namespace = &self.namespace;
        let name = Self::method_name(method);
        let args: Vec<&Ident> = method.args.iter().map(|arg| &arg.name).collect();
        let await_ = method.form.is_async().then(|| quote!(.await));
        let arms = stores.iter().map(|store| {
            let Store {
                side,
                as_trait,
                receiver,
                ..
            } = store;
            quote!(#side => #as_trait::#ident(#receiver, #(#args),*) #await_,)
        });
        in_unsafe(
            method,
            quote! {
                match #private::DualWrite::__read_side(#this, #namespace, #name) {
                    #(#arms)*
                }
            },
        )
    }
}

/// One of the two stores, as the body of a wrapper method names it.
pub(super) struct Store {
    /// `Side::Old` or `Side::New`.
    pub(super) side: TokenStream,
    /// `<Old as Trait<..>>`
    pub(super) as_trait: TokenStream,
    /// The store as the method's receiver: `&Old`, or `Arc<Old>`.
    pub(super) receiver: TokenStream,
    /// The store as an `Arc`, for a call that outlives the method's.
    pub(super) arc: TokenStream,
    /// The local that a blocking read moves the store into.
    pub(super) local: Ident,
}

/// `body` in the method's `unsafe` block, if it is an `unsafe fn`. The
/// caller of an `unsafe fn` upholds its contract; forwarding the call passes
/// the same obligation on. (The block is needed under
/// `unsafe_op_in_unsafe_fn`, and never linted as unused.)
pub(super) fn in_unsafe(method: &Method<'_>, body: TokenStream) -> TokenStream {
    match method.item.sig.unsafety {
        Some(unsafety) => quote!(#unsafety { #body }),
        None => body,
    }
}
