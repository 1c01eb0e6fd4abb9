//! Writes that are not safe to replay as they are: `idempotent = false`
//! (the worker replays them only with their operation id) and
//! `follower = path` (the follower gets an operation built from the
//! authoritative result; the call itself is never replayed). Their checks,
//! the `Operation` methods that tell the worker, and the delivery of a
//! built operation.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::{Ident, Path};

use super::context::{key_call, mixed, Context};
use crate::ast::{Method, Role, Trait};
use crate::valid::combine;

/// The options' checks, once the method's role is known.
pub(crate) fn check(method: &Method<'_>) -> syn::Result<()> {
    let mut errors = None;
    let ident = method.ident();
    let options = &method.options;
    if method.role != Role::Write {
        if let Some((_, span)) = options.idempotent {
            combine(&mut errors, syn::Error::new(span, format!("`idempotent` applies to writes, which the worker replays; `{ident}` is not a write (add `write`, or remove `idempotent`)")));
        }
        if let Some(path) = &options.follower {
            combine(&mut errors, syn::Error::new_spanned(path, format!("`follower` applies to writes; `{ident}` is not a write (add `write`, or remove `follower`)")));
        }
    }
    if let (Some(path), Some(delivery)) = (&options.follower, &options.delivery) {
        if delivery == "journaled" {
            let shown = path.to_token_stream().to_string().replace(' ', "");
            combine(&mut errors, syn::Error::new_spanned(path, format!("`follower = {shown}` cannot go with `delivery = journaled`: journaled delivery writes the operation ahead before the authoritative store has made the result `{shown}` needs, and after a crash it would replay the call itself, making a second copy of whatever the store generated. Remove `delivery = journaled`: a `follower` write is delivered in the request (sync), whatever the wrapper's default")));
        }
    }
    match errors {
        Some(errors) => Err(errors),
        None => Ok(()),
    }
}

fn declares_unsafe_replay(method: &Method<'_>) -> bool {
    matches!(method.options.idempotent, Some((false, _)))
}

/// Whether any write builds its follower's operation.
pub(super) fn builds_follower_ops(model: &Trait<'_>) -> bool {
    model
        .writes()
        .any(|method| method.options.follower.is_some())
}

impl Context<'_, '_> {
    /// `needs_operation_id` and `replay_refusal` for the `Operation` impl,
    /// when some write declares them (the trait's defaults say no).
    pub(super) fn replay_safety_methods(&self) -> TokenStream {
        let arms = |select: &dyn Fn(&Method<'_>) -> Option<TokenStream>| -> Vec<TokenStream> {
            self.model
                .writes()
                .filter_map(|method| {
                    let value = select(method)?;
                    let variant = self.variant(method);
                    let cfgs = &method.cfgs;
                    Some(quote!(#(#cfgs)* Self::#variant { .. } => #value,))
                })
                .collect()
        };
        let mut methods = TokenStream::new();
        let needs_id = arms(&|method| declares_unsafe_replay(method).then(|| quote!(true)));
        if !needs_id.is_empty() {
            methods.extend(quote! {
                fn needs_operation_id(&self) -> bool {
                    #[allow(unreachable_patterns)]
                    match self { #(#needs_id)* _ => false }
                }
            });
        }
        let refusals = arms(&|method| {
            let path = method.options.follower.as_ref()?;
            let text = refusal_text(&Self::method_name(method), path);
            Some(quote!(::core::option::Option::Some(#text)))
        });
        if !refusals.is_empty() {
            methods.extend(quote! {
                fn replay_refusal(&self) -> ::core::option::Option<&'static str> {
                    #[allow(unreachable_patterns)]
                    match self { #(#refusals)* _ => ::core::option::Option::None }
                }
            });
        }
        methods
    }

    /// The operations' keys, for delivering a built operation under its own
    /// method's key: an inherent, hidden method, generated only when some
    /// write has `follower`.
    pub(super) fn op_key_impl(&self) -> TokenStream {
        if !builds_follower_ops(self.model) {
            return TokenStream::new();
        }
        let private = &self.private;
        let op_type = self.op_type();
        let generics = self.op_generics();
        let (impl_generics, _, where_clause) = generics.split_for_impl();
        let arms = self.model.writes().map(|method| {
            let variant = self.variant(method);
            let cfgs = &method.cfgs;
            let names: Vec<&Ident> = method.args.iter().map(|arg| &arg.name).collect();
            let key = match &method.options.key {
                Some(key) => key_call(private, key),
                None => quote!(#private::Key::unkeyed()),
            };
            quote!(#(#cfgs)* Self::#variant { #(#names),* } => #key,)
        });
        let marker = self.marker_arm();
        let scrutinee = self.match_scrutinee();
        quote! {
            #[automatically_derived]
            impl #impl_generics #op_type #where_clause {
                /// The ordering key of this operation, as its method's `key` says.
                #[doc(hidden)]
                #[allow(unused_variables)]
                pub fn __dualwrite_key(&self) -> #private::Key {
                    match #scrutinee { #(#arms)* #marker }
                }
            }
        }
    }

    /// What follows a successful authoritative call of a `follower = path`
    /// write: the operation `path` builds from the captured arguments and
    /// the result, delivered to the follower under its own key. `refusable`
    /// makes a queue refusal the method's error, for `fail_closed`.
    pub(super) fn built_delivery(
        &self,
        method: &Method<'_>,
        path: &Path,
        this: &TokenStream,
        refusable: &dyn Fn(TokenStream) -> TokenStream,
    ) -> TokenStream {
        let private = &self.private;
        let op = &self.op;
        let variant = self.variant(method);
        let is_async = method.form.is_async();
        let names: Vec<&Ident> = method.args.iter().map(|arg| &arg.name).collect();
        let [guard, op_value, result, built, ok] = [
            "__dualwrite_guard",
            "__dualwrite_op",
            "__dualwrite_result",
            "__dualwrite_built",
            "__dualwrite_ok",
        ]
        .map(mixed);
        let deliver = if is_async {
            quote!(#guard.deliver_built(#op::__dualwrite_key(&#built), #built, &#private::DualWrite::__old_arc(#this), &#private::DualWrite::__new_arc(#this)).await)
        } else {
            quote!(#guard.deliver_built_blocking(#op::__dualwrite_key(&#built), #built, &#private::DualWrite::__old_arc(#this), &#private::DualWrite::__new_arc(#this)))
        };
        let deliver = refusable(deliver);
        quote! {
            // The follower gets what the authoritative store made, not the call.
            let #built = match (&#op_value, &#result) {
                (#op::#variant { #(#names),* }, ::core::result::Result::Ok(#ok)) => #path(#(#names,)* #ok),
                #[allow(unreachable_patterns)]
                _ => ::core::unreachable!("the operation was built for this method, and the call succeeded"),
            };
            #deliver
        }
    }
}

/// The dead letter's text for a queued call of a `follower = path` write.
fn refusal_text(method: &str, path: &Path) -> String {
    let path = path.to_token_stream().to_string().replace(' ', "");
    format!(
        "`{method}` gives its follower an operation built from the authoritative result (`follower = {path}`), so a queued call of it is never replayed: its caller went away while the authoritative store ran it (or `{path}` panicked), so whether that store made the data is unknown, and calling it again could make a second copy of what the store generated. Check the authoritative store for this key; if the write landed, deliver what `{path}` builds from it to the follower by hand, then drop this dead letter"
    )
}
