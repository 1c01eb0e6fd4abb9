//! The where clauses of the generated impls: what they need of the user's
//! types, plain where the types name the trait's parameters and
//! higher-ranked where they are concrete.

use proc_macro2::TokenStream;
use quote::quote;
use syn::visit::Visit;
use syn::visit_mut::VisitMut;
use syn::{parse_quote, GenericParam, Generics, Ident, Type, WherePredicate};

use super::context::Context;
use crate::ast::{Method, Passing, Role};
use crate::shape;
use crate::valid;

impl Context<'_, '_> {
    /// Whether `ty` names a generic parameter of the trait (so that it can
    /// be checked only where those parameters are in scope).
    pub(super) fn mentions_generics(&self, ty: &Type) -> bool {
        struct Find<'g> {
            params: &'g Generics,
            found: bool,
        }
        impl<'ast> Visit<'ast> for Find<'_> {
            fn visit_path(&mut self, path: &'ast syn::Path) {
                if let Some(first) = path.segments.first() {
                    let named = self.params.params.iter().any(|param| match param {
                        GenericParam::Type(ty) => ty.ident == first.ident,
                        GenericParam::Const(constant) => constant.ident == first.ident,
                        GenericParam::Lifetime(_) => false,
                    });
                    self.found |= named || first.ident == "Self";
                }
                syn::visit::visit_path(self, path);
            }
            fn visit_lifetime(&mut self, lifetime: &'ast syn::Lifetime) {
                self.found |= self
                    .params
                    .lifetimes()
                    .any(|param| param.lifetime.ident == lifetime.ident);
            }
        }
        let mut find = Find {
            params: &self.model.item.generics,
            found: false,
        };
        find.visit_type(ty);
        find.found
    }

    /// `ty: bound`, higher-ranked when `ty` is concrete. rustc checks a
    /// plain bound on a concrete type where it is written (and reports it
    /// there); a higher-ranked one only where the impl is used. So the
    /// generated impls can state what they need of the user's types while
    /// the one report of a missing trait comes from `checks()`.
    ///
    /// A concrete type's lifetimes, elided or the method's own, are made
    /// `'static` (a where clause can name neither).
    fn bound(&self, ty: &Type, generic: bool, bound: &TokenStream) -> WherePredicate {
        let ty = self.statically(ty);
        if generic {
            parse_quote!(#ty: #bound)
        } else {
            parse_quote!(for<'__dualwrite_check> #ty: #bound)
        }
    }

    /// `ty` with its lifetimes `'static`, but for the trait's (see
    /// `shape::statically`).
    pub(super) fn statically(&self, ty: &Type) -> Type {
        let keep: Vec<&Ident> = self
            .model
            .item
            .generics
            .lifetimes()
            .map(|param| &param.lifetime.ident)
            .collect();
        shape::statically(ty, &keep)
    }

    /// Whether the bounds on a method's types go into where clauses. Where
    /// clauses cannot carry `#[cfg]`, and the types of a method that is
    /// configured out may not exist; so the concrete types of such methods
    /// are left to rustc's usual checks.
    fn bounds_apply(method: &Method<'_>, generic: bool) -> bool {
        generic || method.cfgs.is_empty()
    }

    /// `bound` on the type of every field of the operation enum.
    pub(super) fn field_bounds(&self, bound: &TokenStream) -> Vec<WherePredicate> {
        let mut bounds = Vec::new();
        for method in self.model.writes() {
            // `String`, `Option<String>` and payloads need no bound.
            for arg in method.args.iter().filter(|arg| {
                !matches!(
                    arg.passing,
                    Passing::Str | Passing::OptionStr | Passing::Payload { .. }
                )
            }) {
                let generic = self.mentions_generics(arg.ty);
                if Self::bounds_apply(method, generic) {
                    let field = self.field_type(&arg.passing, arg.ty);
                    bounds.push(self.bound(&field, generic, bound));
                }
            }
        }
        bounds
    }

    /// `for<'de> X<'de>: Deserialize<'de>` (replay reads it back) or
    /// `Serialize` (the wrapper captures it) for every payload's concrete
    /// target: higher-ranked, so that a type that cannot be queued is
    /// reported once, by its `const _` check.
    pub(super) fn payload_bounds(&self, read_back: bool) -> Vec<WherePredicate> {
        let private = &self.private;
        let mut bounds = Vec::new();
        for method in self.model.writes() {
            for arg in &method.args {
                let Passing::Payload { target, .. } = &arg.passing else {
                    continue;
                };
                if self.mentions_generics(arg.ty) || !Self::bounds_apply(method, false) {
                    continue;
                }
                // The wrapper serialises the argument as it is, whatever its
                // lifetimes; replay reads back the owned target.
                bounds.push(if read_back {
                    let target = shape::with_lifetime(target, &[], "'de");
                    parse_quote!(for<'de> #target: #private::serde::Deserialize<'de>)
                } else {
                    let (argument, lifetimes) = shape::with_fresh_lifetimes(arg.ty);
                    parse_quote!(for<#(#lifetimes),*> #argument: #private::serde::Serialize)
                });
            }
        }
        bounds
    }

    /// `Clone` on every type the generated code clones: by-value
    /// arguments, and the targets of `&T` and `&[T]` (for `to_owned`), with
    /// `Self::X` as `store`'s.
    pub(super) fn clone_bounds(&self, store: &Ident) -> Vec<WherePredicate> {
        let as_trait = self.as_trait(store);
        let mut bounds = Vec::new();
        for method in self.model.writes() {
            for arg in &method.args {
                let Some(cloned) = Self::cloned_type(&arg.passing, arg.ty) else {
                    continue;
                };
                let generic = self.mentions_generics(arg.ty);
                if Self::bounds_apply(method, generic) {
                    let mut cloned = cloned.clone();
                    ReplaceSelf { with: &as_trait }.visit_type_mut(&mut cloned);
                    bounds.push(self.bound(&cloned, generic, &quote!(::core::clone::Clone)));
                }
            }
        }
        bounds
    }

    /// The type an argument's capture clones, if any.
    pub(super) fn cloned_type<'t>(passing: &Passing<'t>, ty: &'t Type) -> Option<&'t Type> {
        match passing {
            Passing::Value => Some(ty),
            Passing::Ref(elem)
            | Passing::Slice(elem)
            | Passing::OptionRef(elem)
            | Passing::OptionSlice(elem) => Some(elem),
            Passing::Str
            | Passing::OptionStr
            | Passing::Cow(_)
            | Passing::Payload { .. }
            | Passing::Borrowing => None,
        }
    }

    /// Where-predicates that make each write's error displayable for
    /// `store`: `Self::Error` is rewritten to `<Store as Trait>::Error`.
    pub(super) fn error_display_bounds(&self, store: &Ident) -> Vec<WherePredicate> {
        let as_trait = self.as_trait(store);
        let display = quote!(::core::fmt::Display);
        let mut bounds = Vec::new();
        for method in self.model.writes() {
            let Some(error) = method.error_type else {
                continue;
            };
            if valid::mentions_self(error).is_some() {
                let mut error = error.clone();
                ReplaceSelf { with: &as_trait }.visit_type_mut(&mut error);
                // A predicate cannot carry #[cfg]; the error type of a
                // cfg'd-out method still exists, so its bound stays harmless.
                bounds.push(parse_quote!(#error: #display));
            } else {
                let generic = self.mentions_generics(error);
                if Self::bounds_apply(method, generic) {
                    bounds.push(self.bound(error, generic, &display));
                }
            }
        }
        bounds
    }

    /// The types a read's comparison needs something of: by-value
    /// arguments (`Clone`, passed to both stores), the compared value
    /// (`PartialEq` unless `compare` or `normalize` is given; for a
    /// detached read also `Clone + Send + 'static`).
    pub(super) fn read_requirements<'t>(method: &'t Method<'_>) -> Vec<(&'t Type, Requirement)> {
        let mut needs = Vec::new();
        for arg in &method.args {
            if matches!(arg.owned, Passing::Value | Passing::Borrowing) {
                needs.push((arg.ty, Requirement::Clone));
            }
        }
        if let Some(value) = method.read_value {
            if method.options.compare.is_none() && method.options.normalize.is_none() {
                needs.push((value, Requirement::PartialEq));
            }
            if method.detached {
                needs.push((value, Requirement::Detached));
            }
        }
        needs
    }

    /// The same requirements as where-clause predicates of the wrapper's
    /// impl: plain for the types that name the trait's parameters or
    /// `Self` (rewritten to `<Old as Trait>`), which a `const _` cannot
    /// check; higher-ranked for concrete types, so that the `const _` check
    /// is the one report of a missing trait (see `bound`).
    pub(super) fn read_bounds(&self, store: &Ident) -> Vec<WherePredicate> {
        let as_trait = self.as_trait(store);
        let mut bounds = Vec::new();
        for method in self
            .model
            .implemented()
            .filter(|method| method.role == Role::Read)
        {
            for (ty, need) in Self::read_requirements(method) {
                let bound = match need {
                    Requirement::Clone => quote!(::core::clone::Clone),
                    Requirement::PartialEq => quote!(::core::cmp::PartialEq),
                    Requirement::Detached => {
                        quote!(::core::clone::Clone + ::core::marker::Send + 'static)
                    }
                };
                if valid::mentions_self(ty).is_some() {
                    let mut ty = ty.clone();
                    ReplaceSelf { with: &as_trait }.visit_type_mut(&mut ty);
                    bounds.push(self.bound(&ty, true, &bound));
                    continue;
                }
                let generic = self.mentions_generics(ty);
                if Self::bounds_apply(method, generic) {
                    bounds.push(self.bound(ty, generic, &bound));
                }
            }
        }
        bounds
    }
}

/// What the comparison of a read needs of a type.
#[derive(Clone, Copy)]
pub(super) enum Requirement {
    /// A by-value argument, passed to both stores.
    Clone,
    /// The compared value, without `compare` or `normalize`.
    PartialEq,
    /// The value of a detached read, kept after the call returns.
    Detached,
}

/// Rewrites `Self::X` into `<Store as Trait>::X`.
struct ReplaceSelf<'t> {
    with: &'t TokenStream,
}

impl VisitMut for ReplaceSelf<'_> {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::Path(path) = ty {
            if path.qself.is_none()
                && path
                    .path
                    .segments
                    .first()
                    .is_some_and(|segment| segment.ident == "Self")
            {
                let rest: Vec<_> = path.path.segments.iter().skip(1).collect();
                let with = self.with;
                *ty = parse_quote!(#with #(::#rest)*);
                return;
            }
        }
        syn::visit_mut::visit_type_mut(self, ty);
    }
}
