//! The shapes of arguments: how a write keeps each argument in its queued
//! operation (owned, with no lifetime), and how a detached read copies it.
//!
//! A borrowed argument is kept as its owned form when the form is plain
//! (`&str` as `String`, `Option<&[T]>` as `Option<Vec<T>>`, `Cow<'_, str>`
//! as `String`), and serialised when what it points at borrows in turn
//! (`&Register<'_>`): replay reads the borrowed form back from the payload.

use syn::visit::Visit;
use syn::visit_mut::VisitMut;
use syn::{GenericArgument, Lifetime, PathArguments, Type};

use crate::ast::{Adapt, Passing};

/// How a write keeps an argument of type `ty`, or why it cannot.
pub(crate) fn write_passing(ty: &Type) -> syn::Result<Passing<'_>> {
    match ty {
        Type::Reference(reference) if reference.mutability.is_some() => Err(syn::Error::new_spanned(
            ty,
            "a write method cannot take `&mut` arguments: the operation is replayed later from a queued copy, so changes to the argument would be lost; take it by value or by `&`",
        )),
        Type::ImplTrait(_) => Err(syn::Error::new_spanned(
            ty,
            "a write method cannot take `impl Trait` arguments: the queue must know the concrete type to store and replay it; name the type",
        )),
        _ => Ok(match passing(ty) {
            // The store's method wants this very type back, borrowing:
            // replay reads it from the payload, borrowing from that.
            Passing::Borrowing => Passing::Payload {
                target: Box::new(anonymous(ty)),
                adapt: Adapt::Value,
                checked: Box::new(anonymous(ty)),
            },
            passing => passing,
        }),
    }
}

/// How an argument of type `ty` is kept and handed back.
pub(crate) fn passing(ty: &Type) -> Passing<'_> {
    match ty {
        Type::Reference(reference) if reference.mutability.is_none() => {
            match pointee(&reference.elem) {
                Some(pointee) => pointee.passing(false),
                None => {
                    // `&Vec<X>` coerces to `&[X]`: a slice needs no adapting.
                    let (target, _) = owned_target(&reference.elem);
                    Passing::Payload {
                        target: Box::new(target),
                        adapt: Adapt::Borrow,
                        checked: Box::new(checked_type(&reference.elem)),
                    }
                }
            }
        }
        Type::Group(group) => passing(&group.elem),
        Type::Paren(paren) => passing(&paren.elem),
        _ => {
            if let Some(Type::Reference(reference)) = single_argument(ty, "Option") {
                if reference.mutability.is_none() {
                    return match pointee(&reference.elem) {
                        Some(pointee) => pointee.passing(true),
                        None => {
                            let (elem, is_slice) = owned_target(&reference.elem);
                            Passing::Payload {
                                target: Box::new(syn::parse_quote!(::core::option::Option<#elem>)),
                                adapt: if is_slice {
                                    Adapt::OptionDeref
                                } else {
                                    Adapt::OptionRef
                                },
                                checked: Box::new(checked_type(&reference.elem)),
                            }
                        }
                    };
                }
            }
            if let Some(owned) = cow_target(ty) {
                let item = slice_element(owned).unwrap_or(owned);
                return if borrows(item) {
                    Passing::Borrowing
                } else {
                    Passing::Cow(owned)
                };
            }
            if borrows(ty) {
                Passing::Borrowing
            } else {
                Passing::Value
            }
        }
    }
}

/// What a shared reference points at, when its owned form has no lifetime.
enum Pointee<'a> {
    Str,
    Slice(&'a Type),
    Other(&'a Type),
}

impl<'a> Pointee<'a> {
    fn passing(self, in_option: bool) -> Passing<'a> {
        match (self, in_option) {
            (Pointee::Str, false) => Passing::Str,
            (Pointee::Slice(elem), false) => Passing::Slice(elem),
            (Pointee::Other(elem), false) => Passing::Ref(elem),
            (Pointee::Str, true) => Passing::OptionStr,
            (Pointee::Slice(elem), true) => Passing::OptionSlice(elem),
            (Pointee::Other(elem), true) => Passing::OptionRef(elem),
        }
    }
}

/// The owned form that a payload is read back as: `X` for `X`, `Vec<X>`
/// for `[X]` (and whether it was a slice), with anonymous lifetimes.
fn owned_target(elem: &Type) -> (Type, bool) {
    match slice_element(elem) {
        Some(item) => {
            let item = anonymous(item);
            (syn::parse_quote!(::std::vec::Vec<#item>), true)
        }
        None => (anonymous(elem), false),
    }
}

/// What a payload's check names: `X` of `&X`, `X` of `&[X]`.
fn checked_type(elem: &Type) -> Type {
    anonymous(slice_element(elem).unwrap_or(elem))
}

fn pointee(elem: &Type) -> Option<Pointee<'_>> {
    if is_str(elem) {
        return Some(Pointee::Str);
    }
    if let Some(item) = slice_element(elem) {
        // `&[&str]` is serialised: a `Vec<&str>` cannot be queued.
        return (!borrows(item)).then_some(Pointee::Slice(item));
    }
    (!borrows(elem)).then_some(Pointee::Other(elem))
}

fn is_str(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.qself.is_none() && path.path.is_ident("str"))
}

fn slice_element(ty: &Type) -> Option<&Type> {
    match ty {
        Type::Slice(slice) => Some(&slice.elem),
        _ => None,
    }
}

/// `X` of `Cow<'_, X>` (or `std::borrow::Cow`).
fn cow_target(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if path.qself.is_some() || last.ident != "Cow" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    })
}

/// `T` of `Name<T>`, for a one-argument type such as `Option`.
pub(crate) fn single_argument<'t>(ty: &'t Type, name: &str) -> Option<&'t Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if path.qself.is_some() || last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.iter().collect::<Vec<_>>()[..] {
        [GenericArgument::Type(inner)] => Some(inner),
        _ => None,
    }
}

/// Whether `ty` holds a reference or a lifetime other than `'static`: a
/// value of it cannot outlive the call, so it cannot be queued as it is.
pub(crate) fn borrows(ty: &Type) -> bool {
    struct Find(bool);
    impl<'ast> Visit<'ast> for Find {
        fn visit_type_reference(&mut self, reference: &'ast syn::TypeReference) {
            let is_static = reference
                .lifetime
                .as_ref()
                .is_some_and(|lifetime| lifetime.ident == "static");
            self.0 |= !is_static;
            syn::visit::visit_type_reference(self, reference);
        }
        fn visit_lifetime(&mut self, lifetime: &'ast Lifetime) {
            self.0 |= lifetime.ident != "static";
        }
    }
    let mut find = Find(false);
    find.visit_type(ty);
    find.0
}

/// `ty` with its named lifetimes made anonymous (`'_`), so that it can be
/// written where those names are not in scope and the compiler infers them:
/// the replay's `let` of a borrowed form, a `const _` check.
pub(crate) fn anonymous(ty: &Type) -> Type {
    struct Anonymous;
    impl VisitMut for Anonymous {
        fn visit_lifetime_mut(&mut self, lifetime: &mut Lifetime) {
            if lifetime.ident != "static" {
                *lifetime = Lifetime::new("'_", lifetime.span());
            }
        }
    }
    let mut ty = ty.clone();
    Anonymous.visit_type_mut(&mut ty);
    ty
}

/// `ty` with every lifetime, named or elided, made `'static`, except the
/// names in `keep` (the trait's own, in scope where the clause is): for a
/// where clause (`Option<&str>: Clone`), where neither elided lifetimes
/// nor the method's own lifetime names may appear. The traits checked this
/// way (`Clone`, `PartialEq`, `Serialize`) hold at one lifetime when they
/// hold at any.
pub(crate) fn statically(ty: &Type, keep: &[&syn::Ident]) -> Type {
    with_lifetime(ty, keep, "'static")
}

/// `ty` with each of its lifetimes, named or elided (but `'static`), made a
/// fresh one (`'de0`, `'de1`, ..), and those names: for a higher-ranked
/// bound that holds for the argument whatever its lifetimes.
pub(crate) fn with_fresh_lifetimes(ty: &Type) -> (Type, Vec<Lifetime>) {
    struct Fresh(Vec<Lifetime>);
    impl Fresh {
        fn next(&mut self, span: proc_macro2::Span) -> Lifetime {
            let lifetime = Lifetime::new(&format!("'de{}", self.0.len()), span);
            self.0.push(lifetime.clone());
            lifetime
        }
    }
    impl VisitMut for Fresh {
        fn visit_type_reference_mut(&mut self, reference: &mut syn::TypeReference) {
            if reference.lifetime.is_none() {
                reference.lifetime = Some(self.next(reference.and_token.span));
            }
            syn::visit_mut::visit_type_reference_mut(self, reference);
        }
        fn visit_lifetime_mut(&mut self, lifetime: &mut Lifetime) {
            if lifetime.ident != "static" {
                *lifetime = self.next(lifetime.span());
            }
        }
    }
    let mut ty = ty.clone();
    let mut fresh = Fresh(Vec::new());
    fresh.visit_type_mut(&mut ty);
    (ty, fresh.0)
}

/// `ty` with every lifetime but those in `keep`, named or elided, made
/// `lifetime`.
pub(crate) fn with_lifetime(ty: &Type, keep: &[&syn::Ident], lifetime: &str) -> Type {
    struct Replace<'k> {
        keep: &'k [&'k syn::Ident],
        to: &'k str,
    }
    impl VisitMut for Replace<'_> {
        fn visit_type_reference_mut(&mut self, reference: &mut syn::TypeReference) {
            if reference.lifetime.is_none() {
                reference.lifetime = Some(Lifetime::new(self.to, reference.and_token.span));
            }
            syn::visit_mut::visit_type_reference_mut(self, reference);
        }
        fn visit_lifetime_mut(&mut self, lifetime: &mut Lifetime) {
            if lifetime.ident != "static" && !self.keep.contains(&&lifetime.ident) {
                *lifetime = Lifetime::new(self.to, lifetime.span());
            }
        }
    }
    let mut ty = ty.clone();
    Replace { keep, to: lifetime }.visit_type_mut(&mut ty);
    ty
}

/// The types inside std containers whose impls of `requirement` hold exactly
/// when their elements' do: a check of `Vec<Entry>` names `Entry`, the type
/// the user must change. Anything else is its own leaf.
pub(crate) fn leaves<'t>(ty: &'t Type, through: &[&str]) -> Vec<&'t Type> {
    let mut found = Vec::new();
    collect_leaves(ty, through, &mut found);
    found
}

fn collect_leaves<'t>(ty: &'t Type, through: &[&str], found: &mut Vec<&'t Type>) {
    match ty {
        Type::Group(group) => return collect_leaves(&group.elem, through, found),
        Type::Paren(paren) => return collect_leaves(&paren.elem, through, found),
        Type::Tuple(tuple) if !tuple.elems.is_empty() && through.contains(&"tuple") => {
            for elem in &tuple.elems {
                collect_leaves(elem, through, found);
            }
            return;
        }
        Type::Array(array) if through.contains(&"array") => {
            return collect_leaves(&array.elem, through, found)
        }
        Type::Path(path) if path.qself.is_none() => {
            if let Some(last) = path.path.segments.last() {
                if through.iter().any(|name| last.ident == name) {
                    if let PathArguments::AngleBracketed(args) = &last.arguments {
                        let types: Vec<&Type> = args
                            .args
                            .iter()
                            .filter_map(|arg| match arg {
                                GenericArgument::Type(ty) => Some(ty),
                                _ => None,
                            })
                            .collect();
                        if !types.is_empty() && types.len() == args.args.len() {
                            for ty in types {
                                collect_leaves(ty, through, found);
                            }
                            return;
                        }
                    }
                }
            }
        }
        _ => {}
    }
    found.push(ty);
}

/// Containers whose `Serialize`, `Deserialize` and `Clone` follow their
/// elements'.
pub(crate) const OWNED_CONTAINERS: &[&str] = &["Option", "Vec", "VecDeque", "Box", "tuple"];

/// Containers whose `PartialEq` follows their elements'.
pub(crate) const COMPARED_CONTAINERS: &[&str] = &[
    "Option", "Vec", "VecDeque", "Box", "Arc", "Rc", "BTreeMap", "BTreeSet", "tuple", "array",
];
