//! The bodies of write methods: the authoritative store's call, then the
//! follower's, or the operation queued for the worker.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::Ident;

use super::context::{form_fn, key_call, mixed, Context};
use super::shapes::{follower_argument, owned_copy};
use super::wrapper::Store;
use crate::ast::{Adapt, Arg, Method, Passing};

impl Context<'_, '_> {
    /// A write: begun with the runtime (key, delivery), the operation built
    /// when there is a follower, the authoritative store called, then the
    /// follower called or the operation queued.
    pub(super) fn write_body(&self, method: &Method<'_>) -> TokenStream {
        let private = &self.private;
        let (this, stores) = self.stores(method);
        let ident = method.ident();
        let namespace = &self.namespace;
        let name = Self::method_name(method);
        let op = &self.op;
        let variant = self.variant(method);
        let is_async = method.form.is_async();
        // The runtime's steps of a write are async; a blocking method waits
        // for each with the one `block_on` helper.
        let finish = |step: TokenStream| {
            if is_async {
                quote!(#step.await)
            } else {
                quote!(#private::block_on(#step))
            }
        };
        let in_form = |name: &str| form_fn(name, is_async);
        let names: Vec<&Ident> = method.args.iter().map(|arg| &arg.name).collect();
        let [guard, op_value, result, side, outcome, reason, prepared, refusal] = [
            "__dualwrite_guard",
            "__dualwrite_op",
            "__dualwrite_result",
            "__dualwrite_side",
            "__dualwrite_outcome",
            "__dualwrite_reason",
            "__dualwrite_prepared",
            "__dualwrite_refusal",
        ]
        .map(mixed);

        let key = match &method.options.key {
            Some(key) => key_call(private, key),
            None => quote!(#private::Key::unkeyed()),
        };
        let begin =
            finish(quote!(#private::DualWrite::__begin_write(#this, #namespace, #name, #key)));
        let begin = match &method.options.delivery {
            Some(delivery) if delivery == "journaled" => {
                quote!(#begin.deliver_by(#private::Delivery::Journaled))
            }
            Some(_) => quote!(#begin.deliver_by(#private::Delivery::Sync)),
            // The follower's operation is built from the result, which a
            // journaled write-ahead cannot wait for: always in the request.
            None if method.options.follower.is_some() => {
                quote!(#begin.deliver_by(#private::Delivery::Sync))
            }
            None => begin,
        };
        let captured = method.args.iter().map(|arg| {
            let field = &arg.name;
            let copy = owned_copy(private, field, &arg.passing);
            quote!(#field: #copy)
        });
        // The follower is called with the operation's copies, but for a
        // payload of a reference: the caller's argument (a shared reference,
        // still valid) saves reading it back. A payload of a value that
        // borrows (moved into the authoritative call) is read back.
        let caller_lends = |arg: &Arg<'_>| matches!(&arg.passing, Passing::Payload { adapt, .. } if !matches!(adapt, Adapt::Value));
        let follower_args: Vec<TokenStream> = method
            .args
            .iter()
            .map(|arg| {
                let name = &arg.name;
                if caller_lends(arg) {
                    quote!(#name)
                } else {
                    follower_argument(name, &arg.passing)
                }
            })
            .collect();
        let follower_fields = method.args.iter().map(|arg| {
            let name = &arg.name;
            if caller_lends(arg) {
                quote!(#name: _)
            } else {
                quote!(#name)
            }
        });
        // Fail-open writes go on when the queue refuses (it was logged and
        // counted); fail-closed writes return the refusal as their error.
        // The conversion is called with method syntax and the option's span,
        // so a missing `From<QueueRefused>` is reported on `fail_closed`.
        let into_error = |span: Span| {
            let method = Ident::new("into_method_error", span);
            quote_spanned! {span=> {
                use #private::RefusalInto as _;
                #refusal.#method()
            }}
        };
        let refusable = |call: TokenStream| match method.fail_closed {
            Some(span) => {
                let into_error = into_error(span);
                quote! {
                    if let ::core::result::Result::Err(#refusal) = #call {
                        return ::core::result::Result::Err(#into_error);
                    }
                }
            }
            None => quote!(let _ = #call;),
        };
        let enqueue = refusable(finish(quote!(#guard.enqueue(#side, &#op_value, #reason))));
        let prepare = finish(quote!(#guard.prepare(#op_value)));
        let abort = finish(quote!(#guard.abort(#prepared)));
        let commit = finish(quote!(#guard.commit(#prepared)));
        let follower_plan = finish(quote!(#guard.follower_plan()));
        let take_prepared = match method.fail_closed {
            Some(span) => {
                let into_error = into_error(span);
                quote! {
                    let #prepared = match #prepared {
                        ::core::result::Result::Ok(#prepared) => #prepared,
                        ::core::result::Result::Err(#refusal) => {
                            return ::core::result::Result::Err(#into_error);
                        }
                    };
                }
            }
            None => {
                quote!(let #prepared = ::core::result::Result::unwrap_or(#prepared, ::core::option::Option::None);)
            }
        };
        // `guard.<function>(<first>, <the store's call>)`, awaited, or its
        // `_blocking` twin with the call in a closure.
        let guard_call =
            |function: &str, first: Option<TokenStream>, store: &Store, args: &[TokenStream]| {
                let Store {
                    as_trait, receiver, ..
                } = store;
                let call = quote!(#as_trait::#ident(#receiver, #(#args),*));
                let function = in_form(function);
                let first = first.map(|first| quote!(#first,));
                if is_async {
                    quote!(#guard.#function(#first #call).await)
                } else {
                    quote!(#guard.#function(#first || #call))
                }
            };
        let names_passed: Vec<TokenStream> = names.iter().map(|name| quote!(#name)).collect();
        let authoritative = stores.iter().map(|store| {
            let side = &store.side;
            let first = quote!(::core::option::Option::as_ref(&#op_value));
            let call = guard_call("authoritative_call", Some(first), store, &names_passed);
            quote!(#side => #call,)
        });
        let follower_fields: Vec<TokenStream> = follower_fields.collect();
        let follower = stores.iter().map(|store| {
            let side = &store.side;
            let call = guard_call("call_follower", None, store, &follower_args);
            let read_back = method.args.iter().filter(|arg| !caller_lends(arg));
            let call = self.with_read_back(read_back, call);
            quote!((#side, #op::#variant { #(#follower_fields),* }) => #call,)
        });
        let deliver = match &method.options.follower {
            Some(path) => self.built_delivery(method, path, &this, &refusable),
            None => quote! {
                if let ::core::option::Option::Some(#prepared) = #prepared {
                    #commit;
                } else { match #follower_plan {
                    #private::FollowerPlan::Call(#side) => {
                        let #outcome = match (#side, &#op_value) {
                            #(#follower)*
                            #[allow(unreachable_patterns)]
                            _ => ::core::unreachable!("the operation was built for this method"),
                        };
                        if let ::core::result::Result::Err(#reason) = #outcome {
                            #enqueue
                        }
                    }
                    #private::FollowerPlan::Queue(#side, #reason) => {
                        #enqueue
                    }
                } }
            },
        };
        quote! {
            let #guard = #begin;
            let #op_value = if #guard.has_follower() {
                ::core::option::Option::Some(#op::#variant { #(#captured),* })
            } else {
                ::core::option::Option::None
            };
            // Journaled delivery writes the operation ahead, so that a crash
            // between the two stores cannot lose it.
            let #prepared = match &#op_value {
                ::core::option::Option::Some(#op_value) => #prepare,
                ::core::option::Option::None => ::core::result::Result::Ok(::core::option::Option::None),
            };
            #take_prepared
            let #result = match #guard.authoritative() {
                #(#authoritative)*
            };
            if ::core::result::Result::is_err(&#result) {
                #abort;
            } else if let ::core::option::Option::Some(#op_value) = #op_value {
                #deliver
            }
            #result
        }
    }
}
