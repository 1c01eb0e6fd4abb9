//! Code generation. Everything generated names the runtime through
//! `<runtime>::__private` and the standard library through `::core` and
//! `::std`; locals carry a `__dualwrite_` prefix and mixed-site hygiene.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{
    parse_quote, FnArg, GenericArgument, GenericParam, Generics, Ident, ItemTrait, PathArguments,
    Type, WherePredicate,
};

use crate::args::{MethodOptions, TraitOptions};
use crate::ast::{Form, Method, Passing, Receiver, Role, Trait};
use crate::fallback;
use crate::valid;

/// The attribute's entry point: a trait is expanded; a method is a left-over
/// method attribute from a trait whose attribute was removed, and passes
/// through; anything else is an error.
pub(crate) fn dual_write(args: TokenStream, input: TokenStream) -> TokenStream {
    if let Ok(item) = syn::parse2::<ItemTrait>(input.clone()) {
        return expand_trait(args, &item);
    }
    if syn::parse2::<syn::TraitItemFn>(input.clone()).is_ok() {
        // Inert on purpose: once the trait attribute is deleted at cutover,
        // the method attributes it used to read must not break the build.
        return match MethodOptions::parse_standalone(args) {
            Ok(_) => input,
            Err(errors) => fallback::tokens_with_errors(input, errors),
        };
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
    let replay = context.replay_impl();
    let wrapper = context.wrapper_impl();
    quote! {
        #stripped
        #op_enum
        #op_impls
        #replay
        #wrapper
    }
}

/// Names and paths shared by every generated item.
struct Context<'m, 'a> {
    model: &'m Trait<'a>,
    /// `::dualwrite_runtime::__private`, or wherever the runtime is.
    private: TokenStream,
    /// The enum of write operations.
    op: Ident,
    namespace: String,
    version: u32,
    /// `<'a, T, N>`: the trait's parameters as arguments.
    trait_args: TokenStream,
    /// `<T, N>`: the enum's parameters (the trait's, minus lifetimes).
    op_args: TokenStream,
    /// Whether the enum has type parameters (and so a marker variant).
    op_is_generic: bool,
    old: Ident,
    new: Ident,
    store: Ident,
}

fn mixed(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

impl<'m, 'a> Context<'m, 'a> {
    fn new(model: &'m Trait<'a>) -> Self {
        let item = model.item;
        let runtime = runtime_path(&model.options);
        let op = model
            .options
            .op
            .clone()
            .unwrap_or_else(|| format_ident!("{}Op", item.ident));
        let namespace = model
            .options
            .namespace
            .as_ref()
            .map_or_else(|| item.ident.to_string(), |name| name.value());
        let params = &item.generics.params;
        let trait_args = if params.is_empty() {
            TokenStream::new()
        } else {
            let args = params.iter().map(|param| match param {
                GenericParam::Lifetime(lifetime) => lifetime.lifetime.to_token_stream(),
                GenericParam::Type(ty) => ty.ident.to_token_stream(),
                GenericParam::Const(constant) => constant.ident.to_token_stream(),
            });
            quote!(<#(#args),*>)
        };
        let op_params: Vec<&Ident> = params
            .iter()
            .filter_map(|param| match param {
                GenericParam::Type(ty) => Some(&ty.ident),
                GenericParam::Const(constant) => Some(&constant.ident),
                GenericParam::Lifetime(_) => None,
            })
            .collect();
        let op_args = if op_params.is_empty() {
            TokenStream::new()
        } else {
            quote!(<#(#op_params),*>)
        };
        let op_is_generic = params
            .iter()
            .any(|param| matches!(param, GenericParam::Type(_)));
        Context {
            model,
            private: quote!(#runtime::__private),
            op,
            namespace,
            version: model.options.version.unwrap_or(1),
            trait_args,
            op_args,
            op_is_generic,
            old: format_ident!("__DualwriteOld"),
            new: format_ident!("__DualwriteNew"),
            store: format_ident!("__DualwriteStore"),
        }
    }

    fn trait_path(&self) -> TokenStream {
        let ident = &self.model.item.ident;
        let args = &self.trait_args;
        quote!(#ident #args)
    }

    /// `<#store as Trait<..>>`
    fn as_trait(&self, store: &Ident) -> TokenStream {
        let path = self.trait_path();
        quote!(<#store as #path>)
    }

    fn op_type(&self) -> TokenStream {
        let op = &self.op;
        let args = &self.op_args;
        quote!(#op #args)
    }

    /// The enum's generic parameters: the trait's type and const parameters,
    /// with their trait bounds, without defaults or lifetime bounds.
    fn op_generics(&self) -> Generics {
        let mut generics = Generics::default();
        for param in &self.model.item.generics.params {
            match param {
                GenericParam::Type(ty) => {
                    let mut ty = ty.clone();
                    ty.eq_token = None;
                    ty.default = None;
                    ty.bounds = ty
                        .bounds
                        .into_iter()
                        .filter(|bound| matches!(bound, syn::TypeParamBound::Trait(_)))
                        .collect();
                    generics.params.push(GenericParam::Type(ty));
                }
                GenericParam::Const(constant) => {
                    let mut constant = constant.clone();
                    constant.eq_token = None;
                    constant.default = None;
                    generics.params.push(GenericParam::Const(constant));
                }
                GenericParam::Lifetime(_) => {}
            }
        }
        generics
    }

    /// The trait's generics (without defaults) plus `extra` type parameters,
    /// and the trait's where clause.
    fn impl_generics(&self, extra: &[&Ident]) -> Generics {
        let mut generics = self.model.item.generics.clone();
        for param in &mut generics.params {
            match param {
                GenericParam::Type(ty) => {
                    ty.eq_token = None;
                    ty.default = None;
                }
                GenericParam::Const(constant) => {
                    constant.eq_token = None;
                    constant.default = None;
                }
                GenericParam::Lifetime(_) => {}
            }
        }
        for ident in extra {
            generics.params.push(parse_quote!(#ident));
        }
        generics.make_where_clause();
        generics
    }

    fn variant(&self, method: &Method<'_>) -> Ident {
        let name = method.ident().to_string();
        let camel: String = name
            .trim_start_matches("r#")
            .split('_')
            .filter(|word| !word.is_empty())
            .map(|word| {
                let mut chars = word.chars();
                chars
                    .next()
                    .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                    .unwrap_or_default()
            })
            .collect();
        Ident::new(&camel, method.ident().span())
    }

    fn method_name(method: &Method<'_>) -> String {
        method
            .ident()
            .to_string()
            .trim_start_matches("r#")
            .to_owned()
    }

    /// The type an argument is kept as in the operation.
    fn field_type(passing: &Passing<'_>, ty: &Type) -> TokenStream {
        match passing {
            Passing::Value => ty.to_token_stream(),
            Passing::Str => quote!(::std::string::String),
            Passing::Slice(elem) => quote!(::std::vec::Vec<#elem>),
            Passing::Ref(elem) => elem.to_token_stream(),
        }
    }

    fn marker_variant(&self) -> Option<TokenStream> {
        if !self.op_is_generic {
            return None;
        }
        let params = self
            .model
            .item
            .generics
            .params
            .iter()
            .filter_map(|param| match param {
                GenericParam::Type(ty) => Some(&ty.ident),
                _ => None,
            });
        Some(quote! {
            #[doc(hidden)]
            #[serde(skip)]
            __DualwriteMarker(::core::marker::PhantomData<fn() -> (#(#params,)*)>, ::core::convert::Infallible),
        })
    }

    /// The arm that makes a `match` over the enum exhaustive despite the marker.
    fn marker_arm(&self) -> Option<TokenStream> {
        let never = mixed("__dualwrite_never");
        self.op_is_generic
            .then(|| quote!(Self::__DualwriteMarker(_, #never) => match *#never {},))
    }

    fn op_enum(&self) -> TokenStream {
        let private = &self.private;
        let trait_ident = &self.model.item.ident;
        let vis = &self.model.item.vis;
        let op = &self.op;
        let generics = self.op_generics();
        let (_, _, where_clause) = generics.split_for_impl();
        let serde_crate = format!("{}::serde", self.private).replace(' ', "");
        let mut serialize_bounds = Vec::new();
        let mut deserialize_bounds = Vec::new();
        let variants = self.model.writes().map(|method| {
            let variant = self.variant(method);
            let cfgs = &method.cfgs;
            let name = Self::method_name(method);
            let doc = format!(" A call of [`{trait_ident}::{name}`].");
            let fields = method.args.iter().map(|arg| {
                let field = &arg.name;
                let ty = Self::field_type(&arg.passing, arg.ty);
                if self.op_is_generic {
                    serialize_bounds.push(format!("{ty}: {private}::serde::Serialize"));
                    deserialize_bounds
                        .push(format!("{ty}: {private}::serde::de::DeserializeOwned"));
                }
                let doc = format!(" The `{field}` argument.");
                quote!(#[doc = #doc] #field: #ty)
            });
            quote! {
                #(#cfgs)*
                #[doc = #doc]
                #[serde(rename = #name)]
                #variant { #(#fields),* }
            }
        });
        let variants: Vec<TokenStream> = variants.collect();
        let bound = if self.op_is_generic {
            let serialize = serialize_bounds.join(", ");
            let deserialize = deserialize_bounds.join(", ");
            quote!(#[serde(bound(serialize = #serialize, deserialize = #deserialize))])
        } else {
            TokenStream::new()
        };
        let marker = self.marker_variant();
        let doc = format!(
            " The write operations of [`{trait_ident}`], generated by `#[dual_write]`: what the reconciliation queue stores and the worker replays."
        );
        quote! {
            #[doc = #doc]
            #[derive(#private::serde::Serialize, #private::serde::Deserialize)]
            #[serde(crate = #serde_crate, tag = "method", content = "args")]
            #bound
            #vis enum #op #generics #where_clause {
                #(#variants,)*
                #marker
            }
        }
    }

    /// `match self { Self::Create { .. } => "create", .. }`
    fn method_match(&self) -> TokenStream {
        let arms = self.model.writes().map(|method| {
            let variant = self.variant(method);
            let cfgs = &method.cfgs;
            let name = Self::method_name(method);
            quote!(#(#cfgs)* Self::#variant { .. } => #name,)
        });
        let marker = self.marker_arm();
        quote!(match self { #(#arms)* #marker })
    }

    fn op_impls(&self) -> TokenStream {
        let private = &self.private;
        let op_type = self.op_type();
        let op_name = self.op.to_string();
        let generics = self.op_generics();
        let (impl_generics, _, where_clause) = generics.split_for_impl();
        let mut operation_generics = generics.clone();
        if self.op_is_generic {
            operation_generics
                .make_where_clause()
                .predicates
                .push(parse_quote!(
                    Self: #private::serde::Serialize + #private::serde::de::DeserializeOwned
                        + ::core::marker::Send + ::core::marker::Sync + 'static
                ));
        }
        let operation_where = &operation_generics.where_clause;
        let mut clone_generics = generics.clone();
        for param in &self.model.item.generics.params {
            if let GenericParam::Type(ty) = param {
                let ident = &ty.ident;
                clone_generics
                    .make_where_clause()
                    .predicates
                    .push(parse_quote!(#ident: ::core::clone::Clone));
            }
        }
        let clone_where = &clone_generics.where_clause;
        let namespace = &self.namespace;
        let version = self.version;
        let method_match = self.method_match();
        let clone_arms = self.model.writes().map(|method| {
            let variant = self.variant(method);
            let cfgs = &method.cfgs;
            let names: Vec<&Ident> = method.args.iter().map(|arg| &arg.name).collect();
            quote! {
                #(#cfgs)*
                Self::#variant { #(#names),* } => Self::#variant { #(#names: ::core::clone::Clone::clone(#names)),* },
            }
        });
        let marker = self.marker_arm();
        let formatter = mixed("__dualwrite_formatter");
        quote! {
            #[automatically_derived]
            impl #impl_generics #private::Operation for #op_type #operation_where {
                const NAMESPACE: &'static str = #namespace;
                const VERSION: u32 = #version;

                fn method(&self) -> &'static str {
                    #method_match
                }
            }

            #[automatically_derived]
            impl #impl_generics ::core::clone::Clone for #op_type #clone_where {
                fn clone(&self) -> Self {
                    match self { #(#clone_arms)* #marker }
                }
            }

            /// Shows the method only: argument values stay out of logs.
            #[automatically_derived]
            impl #impl_generics ::core::fmt::Debug for #op_type #where_clause {
                fn fmt(&self, #formatter: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    let method: &'static str = #method_match;
                    ::core::write!(#formatter, "{}::{} {{ .. }}", #op_name, method)
                }
            }
        }
    }

    /// Where-predicates that make each write's error displayable for
    /// `store`, when the trait does not say so itself (`Self::Error`).
    fn error_display_bounds(&self, store: &Ident) -> Vec<WherePredicate> {
        let as_trait = self.as_trait(store);
        let mut bounds = Vec::new();
        for method in self.model.writes() {
            let Some(error) = method.output().and_then(result_error_type) else {
                continue;
            };
            if valid::mentions_self(error).is_none() {
                continue;
            }
            let mut error = error.clone();
            ReplaceSelf { with: &as_trait }.visit_type_mut(&mut error);
            // A predicate cannot carry #[cfg]; the error type of a cfg'd-out
            // method still exists, so its bound stays harmless.
            bounds.push(parse_quote!(#error: ::core::fmt::Display));
        }
        bounds
    }

    fn replay_impl(&self) -> TokenStream {
        let private = &self.private;
        let store = &self.store;
        let op_type = self.op_type();
        let trait_path = self.trait_path();
        let mut generics = self.impl_generics(&[store]);
        let predicates = &mut generics.make_where_clause().predicates;
        predicates.push(parse_quote!(#store: #trait_path));
        if self.op_is_generic {
            predicates.push(parse_quote!(Self: #private::Operation));
        }
        predicates.extend(self.error_display_bounds(store));
        let (impl_generics, _, where_clause) = generics.split_for_impl();
        let store_arg = mixed("__dualwrite_store");
        let error = mixed("__dualwrite_error");
        let as_trait = self.as_trait(store);
        let arms = self.model.writes().map(|method| {
            let variant = self.variant(method);
            let cfgs = &method.cfgs;
            let ident = method.ident();
            let names: Vec<&Ident> = method.args.iter().map(|arg| &arg.name).collect();
            let call_args = method.args.iter().map(|arg| follower_argument(&arg.name, &arg.passing));
            let receiver = match method.receiver {
                Receiver::Ref => quote!(&**#store_arg),
                Receiver::Arc => quote!(::std::sync::Arc::clone(#store_arg)),
            };
            let call = quote!(#as_trait::#ident(#receiver, #(#call_args),*));
            let call = match method.form {
                Form::Blocking => quote!(#private::run_blocking(|| #call)),
                _ => quote!(#call.await),
            };
            quote! {
                #(#cfgs)*
                Self::#variant { #(#names),* } => match #call {
                    ::core::result::Result::Ok(_) => ::core::result::Result::Ok(()),
                    ::core::result::Result::Err(#error) => ::core::result::Result::Err(#private::error_text(#error)),
                },
            }
        });
        let marker = self.marker_arm();
        quote! {
            #[automatically_derived]
            impl #impl_generics #private::Replay<#store> for #op_type #where_clause {
                #[allow(clippy::manual_async_fn)]
                fn replay<'__dualwrite>(
                    &'__dualwrite self,
                    #store_arg: &'__dualwrite ::std::sync::Arc<#store>,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<(), ::std::string::String>,
                > + '__dualwrite {
                    async move {
                        match self { #(#arms)* #marker }
                    }
                }
            }
        }
    }

    fn wrapper_impl(&self) -> TokenStream {
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
        let new_bound = {
            let ident = &item.ident;
            let mut args: Vec<TokenStream> = item
                .generics
                .params
                .iter()
                .map(|param| match param {
                    GenericParam::Lifetime(lifetime) => lifetime.lifetime.to_token_stream(),
                    GenericParam::Type(ty) => ty.ident.to_token_stream(),
                    GenericParam::Const(constant) => constant.ident.to_token_stream(),
                })
                .collect();
            args.extend(assoc_equalities);
            if args.is_empty() {
                quote!(#ident)
            } else {
                quote!(#ident<#(#args),*>)
            }
        };
        let op_type = self.op_type();
        let predicates = &mut generics.make_where_clause().predicates;
        predicates.push(parse_quote!(#old: #trait_path));
        predicates.push(parse_quote!(#new: #new_bound));
        if self.op_is_generic {
            predicates.push(parse_quote!(#op_type: #private::Operation));
        }
        predicates.extend(self.error_display_bounds(old));
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

    /// `self` as `&DualWrite`, and the two stores, for this receiver.
    fn receivers(&self, method: &Method<'_>) -> (TokenStream, TokenStream, TokenStream) {
        let private = &self.private;
        match method.receiver {
            Receiver::Ref => (
                quote!(self),
                quote!(#private::DualWrite::__old(self)),
                quote!(#private::DualWrite::__new(self)),
            ),
            Receiver::Arc => (
                quote!(&*self),
                quote!(#private::DualWrite::__old_arc(&*self)),
                quote!(#private::DualWrite::__new_arc(&*self)),
            ),
        }
    }

    fn read_body(&self, method: &Method<'_>) -> TokenStream {
        let private = &self.private;
        let (this, old_store, new_store) = self.receivers(method);
        let (as_old, as_new) = (self.as_trait(&self.old), self.as_trait(&self.new));
        let ident = method.ident();
        let namespace = &self.namespace;
        let name = Self::method_name(method);
        let args: Vec<&Ident> = method.args.iter().map(|arg| &arg.name).collect();
        let await_ = method.form.is_async().then(|| quote!(.await));
        // The key and comparator are type-checked now; reads use them once
        // shadow comparison and rollout by key land.
        let key_check = method.options.key.as_ref().map(
            |key| quote_spanned!(key.span()=> let _ = || #private::Key::from_display(&(#key));),
        );
        let compare_check = method.options.compare.as_ref().and_then(|compare| {
            let value = method.output().map(read_value_type)?;
            Some(quote_spanned!(compare.span()=> let _: fn(&#value, &#value) -> bool = #compare;))
        });
        quote! {
            #key_check
            #compare_check
            match #private::DualWrite::__read_side(#this, #namespace, #name) {
                #private::Side::Old => #as_old::#ident(#old_store, #(#args),*) #await_,
                #private::Side::New => #as_new::#ident(#new_store, #(#args),*) #await_,
            }
        }
    }

    fn write_body(&self, method: &Method<'_>) -> TokenStream {
        let private = &self.private;
        let (this, old_store, new_store) = self.receivers(method);
        let (as_old, as_new) = (self.as_trait(&self.old), self.as_trait(&self.new));
        let ident = method.ident();
        let namespace = &self.namespace;
        let name = Self::method_name(method);
        let op = &self.op;
        let variant = self.variant(method);
        let is_async = method.form.is_async();
        let await_ = is_async.then(|| quote!(.await));
        let names: Vec<&Ident> = method.args.iter().map(|arg| &arg.name).collect();
        let [guard, op_value, result, side, outcome, reason] = [
            "__dualwrite_guard",
            "__dualwrite_op",
            "__dualwrite_result",
            "__dualwrite_side",
            "__dualwrite_outcome",
            "__dualwrite_reason",
        ]
        .map(mixed);

        let assertions = method.args.iter().map(|arg| {
            let ty = arg.ty;
            let cloned = match arg.passing {
                Passing::Value => {
                    Some(quote_spanned!(ty.span()=> #private::assert_cloned_argument::<#ty>();))
                }
                Passing::Ref(elem) => {
                    Some(quote_spanned!(elem.span()=> #private::assert_cloned_argument::<#elem>();))
                }
                Passing::Str | Passing::Slice(_) => None,
            };
            let field = Self::field_type(&arg.passing, ty);
            let queued = quote_spanned!(ty.span()=> #private::assert_queued_argument::<#field>(););
            quote!(#cloned #queued)
        });
        let key = match &method.options.key {
            Some(key) => quote_spanned!(key.span()=> #private::Key::from_display(&(#key))),
            None => quote!(#private::Key::unkeyed()),
        };
        let begin = if is_async {
            quote!(#private::DualWrite::__begin_write(#this, #namespace, #name, #key).await)
        } else {
            quote!(#private::DualWrite::__begin_write_blocking(#this, #namespace, #name, #key))
        };
        let captured = method.args.iter().map(|arg| {
            let field = &arg.name;
            match arg.passing {
                Passing::Value => quote!(#field: ::core::clone::Clone::clone(&#field)),
                _ => quote!(#field: ::std::borrow::ToOwned::to_owned(#field)),
            }
        });
        let follower_args: Vec<TokenStream> = method
            .args
            .iter()
            .map(|arg| follower_argument(&arg.name, &arg.passing))
            .collect();
        let (plan, call_old, call_new, enqueue) = if is_async {
            (
                quote!(#guard.follower_plan().await),
                quote!(#guard.call_follower(#as_old::#ident(#old_store, #(#follower_args),*)).await),
                quote!(#guard.call_follower(#as_new::#ident(#new_store, #(#follower_args),*)).await),
                quote!(enqueue),
            )
        } else {
            (
                quote!(#guard.follower_plan_blocking()),
                quote!(#guard.call_follower_blocking(|| #as_old::#ident(#old_store, #(#follower_args),*))),
                quote!(#guard.call_follower_blocking(|| #as_new::#ident(#new_store, #(#follower_args),*))),
                quote!(enqueue_blocking),
            )
        };
        quote! {
            #(#assertions)*
            let #guard = #begin;
            let #op_value = if #guard.has_follower() {
                ::core::option::Option::Some(#op::#variant { #(#captured),* })
            } else {
                ::core::option::Option::None
            };
            let #result = match #guard.authoritative() {
                #private::Side::Old => #as_old::#ident(#old_store, #(#names),*) #await_,
                #private::Side::New => #as_new::#ident(#new_store, #(#names),*) #await_,
            };
            if ::core::result::Result::is_err(&#result) {
                #guard.authoritative_failed();
            } else if let ::core::option::Option::Some(#op_value) = #op_value {
                match #plan {
                    #private::FollowerPlan::Call(#side) => {
                        let #outcome = match (#side, &#op_value) {
                            (#private::Side::Old, #op::#variant { #(#names),* }) => #call_old,
                            (#private::Side::New, #op::#variant { #(#names),* }) => #call_new,
                            #[allow(unreachable_patterns)]
                            _ => ::core::unreachable!("the operation was built for this method"),
                        };
                        if let ::core::result::Result::Err(#reason) = #outcome {
                            #guard.#enqueue(#side, &#op_value, #reason) #await_;
                        }
                    }
                    #private::FollowerPlan::Queue(#side, #reason) => {
                        #guard.#enqueue(#side, &#op_value, #reason) #await_;
                    }
                }
            }
            #result
        }
    }
}

/// How a field borrowed from the operation is passed to a store.
fn follower_argument(name: &Ident, passing: &Passing<'_>) -> TokenStream {
    match passing {
        Passing::Value => quote!(::core::clone::Clone::clone(#name)),
        // `&String`, `&Vec<T>` and `&T` coerce to the declared `&str`, `&[T]`, `&T`.
        _ => quote!(#name),
    }
}

/// Where the runtime crate is: the `crate` option, or the dependency named
/// in the user's Cargo.toml (renamed or not).
fn runtime_path(options: &TraitOptions) -> TokenStream {
    if let Some(path) = &options.krate {
        return path.to_token_stream();
    }
    match proc_macro_crate::crate_name("dualwrite-runtime") {
        Ok(proc_macro_crate::FoundCrate::Name(name)) => {
            let ident = Ident::new(&name, Span::call_site());
            quote!(::#ident)
        }
        // Inside the runtime itself, `extern crate self as dualwrite_runtime`
        // makes the usual name work for its unit tests, doctests and examples.
        Ok(proc_macro_crate::FoundCrate::Itself) | Err(_) => quote!(::dualwrite_runtime),
    }
}

/// `E` of `Result<T, E>` (two arguments).
fn result_error_type(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    let _ok = types.next()?;
    types.next()
}

/// What a read's comparator compares: `T` of `Result<T, ..>`, else the output.
fn read_value_type(ty: &Type) -> &Type {
    if let Type::Path(path) = ty {
        if let Some(last) = path.path.segments.last() {
            if last.ident.to_string().ends_with("Result") {
                if let PathArguments::AngleBracketed(args) = &last.arguments {
                    if let Some(GenericArgument::Type(ok)) = args.args.first() {
                        return ok;
                    }
                }
            }
        }
    }
    ty
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

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(args: &str, input: &str) -> String {
        dual_write(args.parse().unwrap(), input.parse().unwrap()).to_string()
    }

    const REPO: &str = r#"
        pub trait Repo<T: Clone> {
            type Error: core::fmt::Display;
            #[dual_write(write, key = id)]
            async fn put(&self, id: u64, value: T, note: &str) -> Result<(), Self::Error>;
            #[dual_write(read, key = id)]
            async fn get(&self, id: u64) -> Result<Option<T>, Self::Error>;
            fn delete_all(&self) -> Result<(), Self::Error>;
        }
    "#;

    #[test]
    fn expansion_is_deterministic() {
        assert_eq!(expand_str("", REPO), expand_str("", REPO));
    }

    #[test]
    fn expansion_emits_no_errors_for_a_valid_trait() {
        let out = expand_str("namespace = \"repo\", version = 3", REPO);
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains("enum RepoOp"), "{out}");
        assert!(out.contains("const VERSION : u32 = 3u32"), "{out}");
        assert!(
            !out.contains("dual_write ("),
            "method attributes are consumed: {out}"
        );
    }

    #[test]
    fn invalid_input_still_emits_the_trait() {
        let out = expand_str("", "trait Repo { fn frobnicate(&self); }");
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("trait Repo"), "{out}");
    }

    #[test]
    fn method_level_attribute_alone_is_inert() {
        let input = "async fn put(&self, id: u64) -> Result<(), String>;";
        assert_eq!(
            expand_str("write, key = id", input),
            input.parse::<TokenStream>().unwrap().to_string()
        );
    }
}
