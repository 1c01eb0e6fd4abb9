//! Code generation. Everything generated names the runtime through
//! `<runtime>::__private` and the standard library through `::core` and
//! `::std`; locals carry a `__dualwrite_` prefix and mixed-site hygiene.
//!
//! The expansion is a pipeline: [`Trait`] is the model of the input;
//! [`Context`] holds the names and paths every part shares, and each part
//! is an `impl Context` block of its own file: the operation enum and its
//! impls (`op_enum`), the `const _` checks (`checks`), the replay impl
//! (`replay`), the `HasOperations` impl that lets `spawn_worker` find the
//! enum (`worker`), the wrapper impl (`wrapper`) with its write and read
//! bodies (`write`, `read`), the code of each argument shape (`shapes`), the
//! operation ids and `follower = path` (`replay_safety`), and the where
//! clauses they need (`bounds`).

mod bounds;
mod checks;
mod context;
mod op_enum;
mod read;
mod replay;
pub(crate) mod replay_safety;
mod shapes;
mod worker;
mod wrapper;
mod write;

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::{FnArg, ItemTrait};

use crate::args::{MethodOptions, TraitOptions};
use crate::ast::Trait;
use crate::fallback;
use crate::valid;
use context::Context;
use quote::quote;

/// The attribute's entry point: a trait is expanded; a method is a left-over
/// method attribute from a trait whose attribute was removed, and passes
/// through; anything else is an error.
pub(crate) fn dual_write(args: TokenStream, input: TokenStream) -> TokenStream {
    if let Ok(item) = syn::parse2::<ItemTrait>(input.clone()) {
        return expand_trait(args, &item);
    }
    if let Ok(method) = syn::parse2::<syn::TraitItemFn>(input.clone()) {
        // A method attribute has options, and its method a receiver (in a
        // trait under the attribute, anything else is an error). Without
        // either, this is the trait attribute put on a function.
        let has_receiver = matches!(method.sig.inputs.first(), Some(FnArg::Receiver(_)));
        if !args.is_empty() && has_receiver {
            // Inert on purpose: once the trait attribute is deleted at
            // cutover, the method attributes it used to read must not break
            // the build.
            return match MethodOptions::parse_standalone(args) {
                Ok(_) => input,
                Err(errors) => fallback::tokens_with_errors(input, errors),
            };
        }
        let error = syn::Error::new_spanned(
            method.sig.fn_token,
            "#[dual_write] goes on a trait: put it on the repository trait that your old and new stores implement (on a method of that trait, it takes options: `#[dual_write(write, key = id)]`)",
        );
        return fallback::tokens_with_errors(input, error);
    }
    let span = match syn::parse2::<syn::Item>(input.clone()) {
        Ok(item) => item_keyword_span(&item),
        Err(_) => Span::call_site(),
    };
    let error = syn::Error::new(
        span,
        "#[dual_write] goes on a trait: put it on the repository trait that your old and new stores implement",
    );
    fallback::tokens_with_errors(input, error)
}

fn item_keyword_span(item: &syn::Item) -> Span {
    match item {
        syn::Item::Struct(item) => item.struct_token.span(),
        syn::Item::Enum(item) => item.enum_token.span(),
        syn::Item::Union(item) => item.union_token.span(),
        syn::Item::Impl(item) => item.impl_token.span(),
        syn::Item::Fn(item) => item.sig.fn_token.span(),
        syn::Item::Mod(item) => item.mod_token.span(),
        syn::Item::Type(item) => item.type_token.span(),
        other => other.span(),
    }
}

fn expand_trait(args: TokenStream, item: &ItemTrait) -> TokenStream {
    let options = match TraitOptions::parse(args) {
        Ok(options) => options,
        Err(errors) => return fallback::trait_with_errors(item, errors),
    };
    let model = match Trait::from_syn(item, options) {
        Ok(model) => model,
        Err(errors) => return fallback::trait_with_errors(item, errors),
    };
    if let Err(errors) = valid::check(&model) {
        return fallback::trait_with_errors(item, errors);
    }
    let context = Context::new(&model);
    let stripped = fallback::strip_method_attributes(item);
    let op_enum = context.op_enum();
    let op_impls = context.op_impls();
    let checks = context.checks();
    let read_checks = context.read_checks();
    let replay = context.replay_impl();
    let op_key = context.op_key_impl();
    let wrapper = context.wrapper_impl();
    let operations = context.operations_impl();
    let allowance = context.lint_allowance();
    quote! {
        #allowance
        #stripped
        #op_enum
        #checks
        #read_checks
        #op_impls
        #replay
        #op_key
        #wrapper
        #operations
    }
}

#[cfg(test)]
mod tests;
