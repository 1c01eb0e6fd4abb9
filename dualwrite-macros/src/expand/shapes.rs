//! The code of each argument shape (see `shape.rs`): the type an operation
//! keeps it as, the owned copy taken from the caller's argument, and the
//! argument handed back to a store from that copy.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::visit_mut::VisitMut;
use syn::{parse_quote, Ident, Type};

use super::context::{mixed, Context};
use crate::ast::{Adapt, Arg, Passing};

impl Context<'_, '_> {
    /// The type an argument is kept as in the operation, with `Self::X`
    /// written as the enum's parameter `X`.
    pub(super) fn field_type(&self, passing: &Passing<'_>, ty: &Type) -> Type {
        let private = &self.private;
        let mut field: Type = match passing {
            Passing::Value | Passing::Borrowing => ty.clone(),
            Passing::Str => parse_quote!(::std::string::String),
            Passing::Slice(elem) => parse_quote!(::std::vec::Vec<#elem>),
            Passing::Ref(elem) => (*elem).clone(),
            Passing::OptionStr => {
                parse_quote!(::core::option::Option<::std::string::String>)
            }
            Passing::OptionSlice(elem) => {
                parse_quote!(::core::option::Option<::std::vec::Vec<#elem>>)
            }
            Passing::OptionRef(elem) => parse_quote!(::core::option::Option<#elem>),
            Passing::Cow(owned) => cow_owned(owned),
            Passing::Payload { .. } => parse_quote!(#private::Payload),
        };
        self.on_enum(&mut field);
        field
    }

    /// `ty` as the enum's items name it: `Self::X` is its parameter `X`.
    pub(super) fn on_enum(&self, ty: &mut Type) {
        if !self.assoc_params.is_empty() {
            SelfAssocAsParam {
                params: &self.assoc_params,
            }
            .visit_type_mut(ty);
        }
    }

    /// `inner`, in a scope where each payload argument of `args` named in
    /// `names` is read back (as a `&` to it, or by value for a by-value
    /// argument) under its own name; a payload that does not read back makes
    /// the whole an `Err` with the reason.
    pub(super) fn with_read_back<'n>(
        &self,
        args: impl Iterator<Item = &'n Arg<'n>>,
        inner: TokenStream,
    ) -> TokenStream {
        let private = &self.private;
        let error = mixed("__dualwrite_error");
        let mut body = inner;
        for arg in args {
            let Passing::Payload { target, adapt, .. } = &arg.passing else {
                continue;
            };
            let name = &arg.name;
            let mut target = (**target).clone();
            self.on_enum(&mut target);
            let binding = match adapt {
                Adapt::Value => quote!(#name),
                _ => quote!(ref #name),
            };
            body = quote! {
                match #private::Payload::read::<#target>(#name) {
                    ::core::result::Result::Ok(#binding) => #body,
                    ::core::result::Result::Err(#error) => ::core::result::Result::Err(#error),
                }
            };
        }
        body
    }
}

/// `X`'s owned form: `String` for `str`, `Vec<T>` for `[T]`, else
/// `<X as ToOwned>::Owned`.
fn cow_owned(owned: &Type) -> Type {
    match owned {
        Type::Path(path) if path.qself.is_none() && path.path.is_ident("str") => {
            parse_quote!(::std::string::String)
        }
        Type::Slice(slice) => {
            let elem = &slice.elem;
            parse_quote!(::std::vec::Vec<#elem>)
        }
        other => parse_quote!(<#other as ::std::borrow::ToOwned>::Owned),
    }
}

/// An owned copy of the caller's argument `name`, as the operation keeps
/// it (a detached read keeps the same copies, without payloads).
pub(super) fn owned_copy(
    private: &TokenStream,
    name: &Ident,
    passing: &Passing<'_>,
) -> TokenStream {
    match passing {
        Passing::Value | Passing::Borrowing => quote!(::core::clone::Clone::clone(&#name)),
        Passing::Str | Passing::Slice(_) | Passing::Ref(_) => {
            quote!(::std::borrow::ToOwned::to_owned(#name))
        }
        Passing::OptionStr | Passing::OptionSlice(_) | Passing::OptionRef(_) => {
            quote!(::core::option::Option::map(#name, ::std::borrow::ToOwned::to_owned))
        }
        Passing::Cow(_) => quote!(::std::borrow::ToOwned::to_owned(&*#name)),
        Passing::Payload { .. } => quote!(#private::Payload::capture(&#name)),
    }
}

/// The argument handed to a store from `place`, a `&` to the owned copy
/// (for a payload: to the value read back from it).
pub(super) fn lent(place: TokenStream, passing: &Passing<'_>) -> TokenStream {
    match passing {
        Passing::Value | Passing::Borrowing => quote!(::core::clone::Clone::clone(#place)),
        // `&String`, `&Vec<T>` and `&T` coerce to the declared `&str`, `&[T]`, `&T`.
        Passing::Str | Passing::Slice(_) | Passing::Ref(_) => place,
        Passing::OptionStr | Passing::OptionSlice(_) => {
            quote!(::core::option::Option::as_deref(#place))
        }
        Passing::OptionRef(_) => quote!(::core::option::Option::as_ref(#place)),
        Passing::Cow(_) => {
            quote!(::std::borrow::Cow::Borrowed(::std::borrow::Borrow::borrow(#place)))
        }
        Passing::Payload { adapt, .. } => match adapt {
            Adapt::Value | Adapt::Borrow => place,
            Adapt::OptionRef => quote!(::core::option::Option::as_ref(#place)),
            Adapt::OptionDeref => quote!(::core::option::Option::as_deref(#place)),
        },
    }
}

/// How a field borrowed from the operation is passed to a store.
pub(super) fn follower_argument(name: &Ident, passing: &Passing<'_>) -> TokenStream {
    lent(name.to_token_stream(), passing)
}

/// Rewrites `Self::X` into `X`, the enum's parameter for the associated
/// type `X`.
struct SelfAssocAsParam<'p> {
    params: &'p [Ident],
}

impl VisitMut for SelfAssocAsParam<'_> {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::Path(path) = ty {
            let segments = &path.path.segments;
            if path.qself.is_none()
                && segments.len() == 2
                && segments[0].ident == "Self"
                && segments[1].arguments.is_none()
            {
                if let Some(param) = self
                    .params
                    .iter()
                    .find(|param| **param == segments[1].ident)
                {
                    *ty = parse_quote!(#param);
                    return;
                }
            }
        }
        syn::visit_mut::visit_type_mut(self, ty);
    }
}
