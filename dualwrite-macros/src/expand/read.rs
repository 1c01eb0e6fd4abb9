//! The bodies of read methods: planned by the runtime, then served by one
//! store, compared across both, or compared by a detached call.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Ident;

use super::context::{key_call, mixed, Context};
use super::shapes::{lent, owned_copy};
use super::wrapper::{in_unsafe, Store};
use crate::ast::{Method, Passing, Receiver, Role};

impl Context<'_, '_> {
    /// A read: planned by the runtime (stage after rollout, sampling), then
    /// served by one store or compared across both (see the runtime's
    /// `read` module for what each form does).
    pub(super) fn read_body(&self, method: &Method<'_>) -> TokenStream {
        if method.role == Role::Skip {
            return self.skip_body(method);
        }
        let private = &self.private;
        let (this, stores) = self.stores(method);
        let namespace = &self.namespace;
        let name = Self::method_name(method);
        let args: Vec<&Ident> = method.args.iter().map(|arg| &arg.name).collect();
        let [plan, store] = ["__dualwrite_plan", "__dualwrite_store"].map(mixed);
        let copies: Vec<Ident> = args
            .iter()
            .map(|arg| mixed(&format!("__dualwrite_copy_{arg}")))
            .collect();
        let owned: Vec<Ident> = args
            .iter()
            .map(|arg| mixed(&format!("__dualwrite_owned_{arg}")))
            .collect();
        let options = &method.options;
        let key = match &options.key {
            Some(key) => {
                let key = key_call(private, key);
                quote!(|| ::core::option::Option::Some(#key))
            }
            None => quote!(|| ::core::option::Option::None),
        };
        let view = if method.returns_result() {
            quote!(#private::result_view)
        } else {
            quote!(#private::plain_view)
        };
        let compare_check = options.compare.as_ref().and_then(|compare| {
            let value = method.read_value?;
            Some(quote_spanned!(compare.span()=> let _: fn(&#value, &#value) -> bool = #compare;))
        });
        let comparator = match (&options.compare, &options.normalize) {
            (Some(compare), _) => quote!(#compare),
            (None, Some(normalize)) => {
                quote_spanned!(normalize.span()=> #private::normalized(#normalize))
            }
            (None, None) => quote!(#private::equal),
        };
        let show = match options.report_values {
            Some(span) => quote_spanned!(span=> #private::debug_values()),
            None => quote!(#private::no_values()),
        };
        // Two errors: the method's `compare_errors`, else the first of
        // `PartialEq`, `Display` text, `Debug` text that the error type has
        // (autoref specialisation, decided where the type is known).
        let [serving_error, other_error] =
            ["__dualwrite_serving_error", "__dualwrite_other_error"].map(mixed);
        // With `compare_errors`, the generated closures have macro hygiene
        // at the path's location: a comparator of the wrong type, or an
        // error that is not `Clone` for a detached read, is reported on the
        // path, once, and lints of the closures stay quiet.
        let at_path = options
            .compare_errors
            .as_ref()
            .map(|path| (path, Span::mixed_site().located_at(path.span())));
        let error_comparator = match at_path {
            Some((compare_errors, span)) => {
                let [serving_error, other_error] =
                    [&serving_error, &other_error].map(|name| Ident::new(&name.to_string(), span));
                quote_spanned! {span=>
                    |#serving_error, #other_error| #compare_errors(#serving_error, #other_error)
                }
            }
            None => quote! {
                |#serving_error, #other_error| {
                    use #private::error_probes::*;
                    (&&&&#private::ErrorPair(#serving_error, #other_error)).errors_agree()
                }
            },
        };
        let compared_with = quote!(#view, #comparator, #error_comparator);
        // A detached comparison keeps the serving error for later: a copy
        // for `compare_errors` (which must then be `Clone`), else a copy or
        // its text, whichever the error type allows.
        let keep_error = match at_path {
            Some((_, span)) => {
                let keep = Ident::new("__dualwrite_keep_cloned_error", span);
                let error = Ident::new(&serving_error.to_string(), span);
                quote_spanned! {span=>
                    |#error| {
                        use #private::keep_cloned_error as #keep;
                        #keep(#error)
                    }
                }
            }
            None => quote! {
                |#serving_error| {
                    use #private::error_probes::*;
                    (&&&&#private::ErrorKeep(#serving_error)).keep()
                }
            },
        };
        // A compared read without `key` is reported by its arguments' hash.
        let arguments = options.key.is_none().then(|| {
            let reveal = options.report_values.is_some();
            quote! {
                let #plan = #private::ReadPlan::with_arguments(#plan, #reveal, || {
                    use #private::argument_probes::*;
                    [#((&&&#private::ArgumentProbe(&#args)).argument_text()),*]
                });
            }
        });
        let call = ReadCall {
            method,
            private,
            plan: &plan,
        };
        let serve = stores.iter().map(|store| {
            let side = &store.side;
            let serve = call.plan("serve", &[call.store(store, &args), quote!(#view)]);
            quote!(#side => #serve,)
        });
        let compared = if method.detached {
            // Owned copies of the arguments, moved into the other store's
            // call, which outlives this one.
            let owned_args = method.args.iter().zip(&owned).map(|(arg, owned)| {
                let copy = owned_copy(private, &arg.name, &arg.owned);
                quote!(let #owned = #copy;)
            });
            let owned_args = quote!(#(#owned_args)*);
            let owned_pass: Vec<TokenStream> = owned
                .iter()
                .zip(&method.args)
                .map(|(owned, arg)| match arg.owned {
                    Passing::Value => quote!(#owned),
                    _ => lent(quote!(&#owned), &arg.owned),
                })
                .collect();
            let receiver_of_store = match method.receiver {
                Receiver::Ref => quote!(&*#store),
                Receiver::Arc => quote!(#store),
            };
            // The arm for the side that is compared, while the other serves.
            let detach = |serving: &Store, other: &Store| {
                let Store { side, arc, .. } = other;
                let detached = call.detached(other, &receiver_of_store, &owned_pass);
                let detach = call.plan(
                    "detach",
                    &[
                        call.store(serving, &args),
                        detached,
                        compared_with.clone(),
                        keep_error.clone(),
                        show.clone(),
                    ],
                );
                quote! {
                    ::core::option::Option::Some(#side) => {
                        let #store = #arc;
                        #owned_args
                        #detach
                    }
                }
            };
            let [old, new] = &stores;
            let (compare_new, compare_old) = (detach(old, new), detach(new, old));
            quote!(#compare_new #compare_old)
        } else {
            let [old, new] = &stores;
            let compare = call.plan(
                "compare",
                &[
                    call.store(old, &copies),
                    call.store(new, &args),
                    compared_with,
                    show,
                ],
            );
            quote! {
                ::core::option::Option::Some(_) => {
                    #(let #copies = ::core::clone::Clone::clone(&#args);)*
                    #compare
                }
            }
        };
        // A blocking read moves the stores into its closures.
        let locals = (!method.form.is_async()).then(|| {
            let locals = stores.iter().map(
                |Store {
                     local, receiver, ..
                 }| { quote!(let #local = #receiver;) },
            );
            quote!(#(#locals)*)
        });
        let body = in_unsafe(
            method,
            quote! {
                let #plan = #private::DualWrite::__read(#this, #namespace, #name, #key);
                #arguments
                #locals
                match #private::ReadPlan::compared(&#plan) {
                    ::core::option::Option::None => match #private::ReadPlan::serving(&#plan) {
                        #(#serve)*
                    },
                    #compared
                }
            },
        );
        quote! {
            #compare_check
            #body
        }
    }
}

/// The calls of a read's body, in its form: a future awaited, or a closure
/// for the runtime's blocking functions.
struct ReadCall<'r> {
    method: &'r Method<'r>,
    private: &'r TokenStream,
    plan: &'r Ident,
}

impl ReadCall<'_> {
    fn is_async(&self) -> bool {
        self.method.form.is_async()
    }

    /// `ReadPlan::<function>(plan, <arguments>)`, or its `_blocking` twin.
    fn plan(&self, function: &str, arguments: &[TokenStream]) -> TokenStream {
        let (private, plan) = (self.private, self.plan);
        if self.is_async() {
            let function = format_ident!("{function}");
            quote!(#private::ReadPlan::#function(#plan, #(#arguments),*).await)
        } else {
            let function = format_ident!("{function}_blocking");
            quote!(#private::ReadPlan::#function(#plan, #(#arguments),*))
        }
    }

    /// The method called on `store` with `args`: the future, or a closure
    /// over the store's local.
    fn store(&self, store: &Store, args: &[impl quote::ToTokens]) -> TokenStream {
        let ident = self.method.ident();
        let as_trait = &store.as_trait;
        if self.is_async() {
            let receiver = &store.receiver;
            quote!(#as_trait::#ident(#receiver, #(#args),*))
        } else {
            let local = &store.local;
            quote!(move || #as_trait::#ident(#local, #(#args),*))
        }
    }

    /// The detached call of `store`, on its `Arc` with owned arguments.
    fn detached(&self, store: &Store, receiver: &TokenStream, args: &[TokenStream]) -> TokenStream {
        let ident = self.method.ident();
        let as_trait = &store.as_trait;
        let call = quote!(#as_trait::#ident(#receiver, #(#args),*));
        if self.is_async() {
            quote!(async move { #call.await })
        } else {
            quote!(move || #call)
        }
    }
}
