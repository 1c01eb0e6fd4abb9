//! Checks on the model, each an error on the offending tokens.

use std::collections::BTreeSet;

use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{Expr, GenericParam, Ident, ReturnType, Type};

use crate::ast::{Method, Passing, Role, Trait};

/// Adds `error` to the errors reported together.
pub(crate) fn combine(errors: &mut Option<syn::Error>, error: syn::Error) {
    match errors {
        Some(errors) => errors.combine(error),
        None => *errors = Some(error),
    }
}

pub(crate) fn check(model: &Trait<'_>) -> syn::Result<()> {
    let mut errors = None;
    for ty in &model.types {
        if !ty.generics.params.is_empty() {
            combine(
                &mut errors,
                syn::Error::new_spanned(
                    &ty.generics,
                    "#[dual_write] does not support generic associated types: the wrapper cannot equate them between the two stores",
                ),
            );
        }
    }
    let assoc_types: Vec<&Ident> = model
        .types
        .iter()
        .filter(|ty| ty.generics.params.is_empty())
        .map(|ty| &ty.ident)
        .collect();
    for method in &model.methods {
        if let Err(error) = check_method(method, &assoc_types) {
            combine(&mut errors, error);
        }
    }
    match errors {
        Some(errors) => Err(errors),
        None => Ok(()),
    }
}

fn check_method(method: &Method<'_>, assoc_types: &[&Ident]) -> syn::Result<()> {
    let mut errors = None;
    let ident = method.ident();
    let options = &method.options;
    if let Some(compare) = &options.compare {
        if method.role != Role::Read {
            combine(
                &mut errors,
                syn::Error::new_spanned(
                    compare,
                    format!("`compare` applies to reads; `{ident}` is not a read (add `read`, or remove `compare`)"),
                ),
            );
        }
    }
    if method.role != Role::Read {
        let misplaced = [
            options
                .normalize
                .as_ref()
                .map(|path| (path.span(), "normalize")),
            options
                .compare_errors
                .as_ref()
                .map(|path| (path.span(), "compare_errors")),
            options.detached.map(|span| (span, "detached")),
            options.report_values.map(|span| (span, "report_values")),
        ];
        for (span, option) in misplaced.into_iter().flatten() {
            combine(
                &mut errors,
                syn::Error::new(
                    span,
                    format!("`{option}` applies to reads; `{ident}` is not a read (add `read`, or remove `{option}`)"),
                ),
            );
        }
    } else if let (Some(_), Some(normalize)) = (&options.compare, &options.normalize) {
        combine(
            &mut errors,
            syn::Error::new_spanned(
                normalize,
                "give `compare` or `normalize`, not both; a comparator can normalise its values itself",
            ),
        );
    }
    if method.role == Role::Read && method.detached {
        for arg in &method.args {
            if matches!(arg.owned, Passing::Payload { .. } | Passing::Borrowing) {
                combine(
                    &mut errors,
                    syn::Error::new_spanned(
                        arg.ty,
                        format!("a `detached` read keeps owned copies of its arguments for the call that outlives it, and this argument borrows data with no owned form dualwrite knows; remove `detached` from `{ident}` (the comparison then runs within the call)"),
                    ),
                );
            }
        }
    }
    if let Some(compare_errors) = &options.compare_errors {
        if method.role == Role::Read && !method.returns_result() {
            combine(
                &mut errors,
                syn::Error::new_spanned(
                    compare_errors,
                    format!("`compare_errors` compares the errors of a read returning `Result<T, E>`; `{ident}` does not return a `Result` (remove `compare_errors`)"),
                ),
            );
        }
    }
    if let Some(key) = &options.key {
        if method.role == Role::Skip || method.role == Role::Inherit {
            combine(
                &mut errors,
                syn::Error::new_spanned(key, format!("`key` orders reads and writes; `{ident}` is neither (add `read` or `write`)")),
            );
        } else if let Err(error) = check_key(key, method) {
            combine(&mut errors, error);
        }
    }
    if method.role != Role::Write {
        let misplaced = [
            options
                .delivery
                .as_ref()
                .map(|delivery| (delivery.span(), "delivery")),
            options.fail_closed.map(|span| (span, "fail_closed")),
        ];
        for (span, option) in misplaced.into_iter().flatten() {
            combine(
                &mut errors,
                syn::Error::new(span, format!("`{option}` applies to writes; `{ident}` is not a write (add `write`, or remove `{option}`)")),
            );
        }
    }
    if method.role == Role::Write {
        if let Err(error) = check_write(method, assoc_types) {
            combine(&mut errors, error);
        }
    }
    if let Err(error) = crate::expand::replay_safety::check(method) {
        combine(&mut errors, error);
    }
    match errors {
        Some(errors) => Err(errors),
        None => Ok(()),
    }
}

fn check_write(method: &Method<'_>, assoc_types: &[&Ident]) -> syn::Result<()> {
    let mut errors = None;
    let ident = method.ident();
    match method.output() {
        Some(output) if is_result(output) => {}
        Some(output) => combine(
            &mut errors,
            syn::Error::new_spanned(
                output,
                format!("write method `{ident}` must return `Result<_, _>`: dualwrite tells a failed write from a successful one by its `Err`"),
            ),
        ),
        None => {
            let span = match &method.item.sig.output {
                ReturnType::Default => method.item.sig.paren_token.span.close(),
                ReturnType::Type(arrow, _) => arrow.span(),
            };
            combine(
                &mut errors,
                syn::Error::new(
                    span,
                    format!("write method `{ident}` must return `Result<_, _>`: dualwrite tells a failed write from a successful one by its `Err`"),
                ),
            );
        }
    }
    if let Some(unsafety) = &method.item.sig.unsafety {
        combine(
            &mut errors,
            syn::Error::new_spanned(
                unsafety,
                format!("write method `{ident}` cannot be `unsafe`: the worker replays a missed write later, where no caller upholds its safety contract; make it safe, or mark it `#[dual_write(skip)]`"),
            ),
        );
    }
    for param in &method.item.sig.generics.params {
        if let GenericParam::Type(_) | GenericParam::Const(_) = param {
            combine(
                &mut errors,
                syn::Error::new_spanned(
                    param,
                    format!("write method `{ident}` cannot have type or const parameters: a queued operation must have one concrete type to be stored and replayed"),
                ),
            );
        }
    }
    for arg in &method.args {
        if let Some(span) = foreign_self(arg.ty, assoc_types) {
            combine(
                &mut errors,
                syn::Error::new(
                    span,
                    "an argument of a write method can name `Self` only as `Self::X`, for an associated type `X` of this trait: the queued operation exists apart from any store, and carries such a type as a parameter; name the type, or declare the associated type in this trait",
                ),
            );
        }
    }
    match errors {
        Some(errors) => Err(errors),
        None => Ok(()),
    }
}

/// `Result<..>`, `io::Result<..>`, or any alias whose name ends in `Result`.
fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident.to_string().ends_with("Result")),
        Type::Group(group) => is_result(&group.elem),
        Type::Paren(paren) => is_result(&paren.elem),
        _ => false,
    }
}

pub(crate) fn mentions_self(ty: &Type) -> Option<proc_macro2::Span> {
    struct FindSelf(Option<proc_macro2::Span>);
    impl<'ast> Visit<'ast> for FindSelf {
        fn visit_path(&mut self, path: &'ast syn::Path) {
            if let Some(first) = path.segments.first() {
                if first.ident == "Self" && self.0.is_none() {
                    self.0 = Some(first.ident.span());
                }
            }
            syn::visit::visit_path(self, path);
        }
    }
    let mut finder = FindSelf(None);
    finder.visit_type(ty);
    finder.0
}

/// `X` of a `Self::X` path.
fn self_assoc(path: &syn::TypePath) -> Option<&Ident> {
    let segments = &path.path.segments;
    (path.qself.is_none()
        && segments.len() == 2
        && segments[0].ident == "Self"
        && segments[1].arguments.is_none())
    .then(|| &segments[1].ident)
}

/// The `X` of each `Self::X` that `ty` names.
pub(crate) fn self_assoc_types(ty: &Type) -> Vec<Ident> {
    struct Find(Vec<Ident>);
    impl<'ast> Visit<'ast> for Find {
        fn visit_type_path(&mut self, path: &'ast syn::TypePath) {
            match self_assoc(path) {
                Some(assoc) => self.0.push(assoc.clone()),
                None => syn::visit::visit_type_path(self, path),
            }
        }
    }
    let mut find = Find(Vec::new());
    find.visit_type(ty);
    find.0
}

/// A mention of `Self` in `ty` other than `Self::X` for one of `assoc_types`
/// (`Self` alone, `<Self as Other>::X`, `Self::X::Y`).
fn foreign_self(ty: &Type, assoc_types: &[&Ident]) -> Option<proc_macro2::Span> {
    struct Find<'a> {
        assoc_types: &'a [&'a Ident],
        found: Option<proc_macro2::Span>,
    }
    impl<'ast> Visit<'ast> for Find<'_> {
        fn visit_type_path(&mut self, path: &'ast syn::TypePath) {
            if self_assoc(path).is_some_and(|assoc| self.assoc_types.contains(&assoc)) {
                return;
            }
            syn::visit::visit_type_path(self, path);
        }
        fn visit_path_segment(&mut self, segment: &'ast syn::PathSegment) {
            if segment.ident == "Self" && self.found.is_none() {
                self.found = Some(segment.ident.span());
            }
            syn::visit::visit_path_segment(self, segment);
        }
    }
    let mut find = Find {
        assoc_types,
        found: None,
    };
    find.visit_type(ty);
    find.found
}

/// The key must be computed from the arguments alone.
fn check_key(key: &Expr, method: &Method<'_>) -> syn::Result<()> {
    struct Names<'m> {
        arguments: BTreeSet<String>,
        bound_inside: Vec<BTreeSet<String>>,
        unknown: Option<syn::Error>,
        method: &'m Ident,
        listed: String,
    }
    impl Names<'_> {
        fn is_known(&self, name: &str) -> bool {
            self.arguments.contains(name)
                || self.bound_inside.iter().any(|scope| scope.contains(name))
        }
    }
    impl<'ast> Visit<'ast> for Names<'_> {
        fn visit_expr_closure(&mut self, closure: &'ast syn::ExprClosure) {
            let mut scope = BTreeSet::new();
            for input in &closure.inputs {
                collect_pattern_names(input, &mut scope);
            }
            self.bound_inside.push(scope);
            syn::visit::visit_expr_closure(self, closure);
            self.bound_inside.pop();
        }
        fn visit_expr_path(&mut self, path: &'ast syn::ExprPath) {
            if path.qself.is_none() && path.path.segments.len() == 1 {
                let ident = &path.path.segments[0].ident;
                let name = ident.to_string();
                let looks_like_value = name.starts_with(|c: char| c.is_lowercase() || c == '_');
                if name == "self" {
                    combine(
                        &mut self.unknown,
                        syn::Error::new(ident.span(), "`key` cannot use `self`: it is computed on the wrapper, from the method's arguments"),
                    );
                } else if looks_like_value && !self.is_known(&name) {
                    combine(
                        &mut self.unknown,
                        syn::Error::new(
                            ident.span(),
                            format!("`key` names `{name}`, which is not an argument of `{}`; its arguments are: {}", self.method, self.listed),
                        ),
                    );
                }
            }
            syn::visit::visit_expr_path(self, path);
        }
    }
    let arguments: BTreeSet<String> = method.args.iter().map(|arg| arg.name.to_string()).collect();
    let listed = if arguments.is_empty() {
        "none".to_owned()
    } else {
        method
            .args
            .iter()
            .map(|arg| format!("`{}`", arg.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut names = Names {
        arguments,
        bound_inside: Vec::new(),
        unknown: None,
        method: method.ident(),
        listed,
    };
    names.visit_expr(key);
    match names.unknown {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn collect_pattern_names(pat: &syn::Pat, names: &mut BTreeSet<String>) {
    struct Collect<'n>(&'n mut BTreeSet<String>);
    impl<'ast> Visit<'ast> for Collect<'_> {
        fn visit_pat_ident(&mut self, pat: &'ast syn::PatIdent) {
            self.0.insert(pat.ident.to_string());
            syn::visit::visit_pat_ident(self, pat);
        }
    }
    Collect(names).visit_pat(pat);
}
