//! Code generation. Everything generated names the runtime through
//! `<runtime>::__private` and the standard library through `::core` and
//! `::std`; locals carry a `__dualwrite_` prefix and mixed-site hygiene.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::visit::Visit;
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
    let wrapper = context.wrapper_impl();
    quote! {
        #stripped
        #op_enum
        #checks
        #read_checks
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

    /// What a `match` over the enum matches on: `self`, or `*self` when the
    /// trait has no write methods (an empty enum, matched with no arms).
    fn match_scrutinee(&self) -> TokenStream {
        if self.model.writes().next().is_none() && !self.op_is_generic {
            quote!(*self)
        } else {
            quote!(self)
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
        let variants = self.model.writes().map(|method| {
            let variant = self.variant(method);
            let cfgs = &method.cfgs;
            let name = Self::method_name(method);
            let doc = format!(" A call of [`{trait_ident}::{name}`].");
            let fields = method.args.iter().map(|arg| {
                let field = &arg.name;
                let ty = Self::field_type(&arg.passing, arg.ty);
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
        // serde's own bounds would make it check every field type in its
        // generated code and report a bad one several times; these name the
        // field types instead (higher-ranked where concrete, so that a type
        // that is not serialisable is reported once, by the check that
        // `checks()` emits on the argument's type).
        let predicates = |bound: TokenStream| {
            self.field_bounds(&bound)
                .iter()
                .map(|predicate| predicate.to_token_stream().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let serialize = predicates(quote!(#private::serde::Serialize));
        let deserialize = predicates(quote!(#private::serde::de::DeserializeOwned));
        let bound = quote!(#[serde(bound(serialize = #serialize, deserialize = #deserialize))]);
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
        let scrutinee = self.match_scrutinee();
        quote!(match #scrutinee { #(#arms)* #marker })
    }

    fn op_impls(&self) -> TokenStream {
        let private = &self.private;
        let scrutinee = self.match_scrutinee();
        let op_type = self.op_type();
        let op_name = self.op.to_string();
        let generics = self.op_generics();
        let (impl_generics, _, where_clause) = generics.split_for_impl();
        let mut operation_generics = generics.clone();
        operation_generics
            .make_where_clause()
            .predicates
            .push(parse_quote!(
                for<'__dualwrite_check> Self: #private::serde::Serialize
                    + #private::serde::de::DeserializeOwned
                    + ::core::marker::Send + ::core::marker::Sync + 'static
            ));
        let operation_where = &operation_generics.where_clause;
        let mut clone_generics = generics.clone();
        clone_generics
            .make_where_clause()
            .predicates
            .extend(self.field_bounds(&quote!(::core::clone::Clone)));
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
        // A trait without write methods has an empty enum: no value to show.
        let debug_body = if self.model.writes().next().is_none() && !self.op_is_generic {
            quote!(#method_match)
        } else {
            quote! {
                let method: &'static str = #method_match;
                ::core::write!(#formatter, "{}::{} {{ .. }}", #op_name, method)
            }
        };
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
                    match #scrutinee { #(#clone_arms)* #marker }
                }
            }

            /// Shows the method only: argument values stay out of logs.
            #[automatically_derived]
            impl #impl_generics ::core::fmt::Debug for #op_type #where_clause {
                fn fmt(&self, #formatter: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    #debug_body
                }
            }
        }
    }

    /// Whether `ty` names a generic parameter of the trait (so that it can
    /// be checked only where those parameters are in scope).
    fn mentions_generics(&self, ty: &Type) -> bool {
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
    fn bound(&self, ty: &impl ToTokens, generic: bool, bound: &TokenStream) -> WherePredicate {
        if generic {
            parse_quote!(#ty: #bound)
        } else {
            parse_quote!(for<'__dualwrite_check> #ty: #bound)
        }
    }

    /// Whether the bounds on a method's types go into where clauses. Where
    /// clauses cannot carry `#[cfg]`, and the types of a method that is
    /// configured out may not exist; so the concrete types of such methods
    /// are left to rustc's usual checks.
    fn bounds_apply(method: &Method<'_>, generic: bool) -> bool {
        generic || method.cfgs.is_empty()
    }

    /// `bound` on the type of every field of the operation enum.
    fn field_bounds(&self, bound: &TokenStream) -> Vec<WherePredicate> {
        let mut bounds = Vec::new();
        for method in self.model.writes() {
            // `&str` is kept as `String`, which needs no bound.
            for arg in method
                .args
                .iter()
                .filter(|arg| !matches!(arg.passing, Passing::Str))
            {
                let generic = self.mentions_generics(arg.ty);
                if Self::bounds_apply(method, generic) {
                    let field = Self::field_type(&arg.passing, arg.ty);
                    bounds.push(self.bound(&field, generic, bound));
                }
            }
        }
        bounds
    }

    /// `Clone` on every type the generated code clones: by-value
    /// arguments, and the targets of `&T` and `&[T]` (for `to_owned`).
    fn clone_bounds(&self) -> Vec<WherePredicate> {
        let mut bounds = Vec::new();
        for method in self.model.writes() {
            for arg in &method.args {
                let Some(cloned) = Self::cloned_type(&arg.passing, arg.ty) else {
                    continue;
                };
                let generic = self.mentions_generics(arg.ty);
                if Self::bounds_apply(method, generic) {
                    bounds.push(self.bound(cloned, generic, &quote!(::core::clone::Clone)));
                }
            }
        }
        bounds
    }

    /// The type an argument's capture clones, if any.
    fn cloned_type<'t>(passing: &Passing<'t>, ty: &'t Type) -> Option<&'t Type> {
        match passing {
            Passing::Value => Some(ty),
            Passing::Ref(elem) | Passing::Slice(elem) => Some(elem),
            Passing::Str => None,
        }
    }

    /// Where-predicates that make each write's error displayable for
    /// `store`: `Self::Error` is rewritten to `<Store as Trait>::Error`.
    fn error_display_bounds(&self, store: &Ident) -> Vec<WherePredicate> {
        let as_trait = self.as_trait(store);
        let display = quote!(::core::fmt::Display);
        let mut bounds = Vec::new();
        for method in self.model.writes() {
            let Some(error) = method.output().and_then(result_error_type) else {
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

    /// One `const _` per write method holding the checks of its concrete
    /// types, each spanned on the type it checks, so that a type missing a
    /// trait is one error on the user's tokens with the reason. Types that
    /// name the trait's parameters are checked by the impls' bounds instead.
    fn checks(&self) -> TokenStream {
        let private = &self.private;
        let methods = self.model.writes().map(|method| {
            let mut checks = Vec::new();
            for arg in &method.args {
                if self.mentions_generics(arg.ty) {
                    continue;
                }
                if let Some(cloned) = Self::cloned_type(&arg.passing, arg.ty) {
                    checks.push(quote_spanned!(cloned.span()=> #private::assert_cloned_argument::<#cloned>();));
                }
                // `&[T]` is queued as `Vec<T>`: check (and name) `T`.
                let queued = match arg.passing {
                    Passing::Value => Some(arg.ty),
                    Passing::Ref(elem) | Passing::Slice(elem) => Some(elem),
                    Passing::Str => None,
                };
                if let Some(queued) = queued {
                    checks.push(quote_spanned!(queued.span()=> #private::assert_queued_argument::<#queued>();));
                    checks.push(quote_spanned!(queued.span()=> #private::assert_shared_argument::<#queued>();));
                }
            }
            if let Some(output) = method.output() {
                match result_error_type(output) {
                    Some(error) if !self.mentions_generics(error) => {
                        checks.push(quote_spanned!(error.span()=> #private::assert_write_error::<#error>();));
                    }
                    Some(_) => {}
                    None if !self.mentions_generics(output) => {
                        checks.push(quote_spanned!(output.span()=> #private::assert_write_result::<#output>();));
                    }
                    None => {}
                }
            }
            checks_item(&method.cfgs, &checks)
        });
        quote!(#(#methods)*)
    }

    fn replay_impl(&self) -> TokenStream {
        let private = &self.private;
        let scrutinee = self.match_scrutinee();
        let store = &self.store;
        let op_type = self.op_type();
        let trait_path = self.trait_path();
        // The operation (an owned, `'static` value) has no lifetime that
        // could stand for the trait's lifetime parameters, and an impl
        // parameter that is not constrained cannot appear in `replay`'s
        // returned future. So replay uses the trait at `'static`: the
        // stores' `impl<'a> Trait<'a> for Store` covers it.
        let mut generics = self.impl_generics(&[store]);
        generics.params = generics
            .params
            .into_iter()
            .filter(|param| !matches!(param, GenericParam::Lifetime(_)))
            .collect();
        let predicates = &mut generics.make_where_clause().predicates;
        predicates.push(parse_quote!(#store: #trait_path));
        predicates.push(parse_quote!(for<'__dualwrite_check> Self: #private::Operation));
        predicates.extend(self.clone_bounds());
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
        let lifetimes: Vec<String> = self
            .model
            .item
            .generics
            .lifetimes()
            .map(|param| param.lifetime.ident.to_string())
            .collect();
        let tokens = quote! {
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
                        match #scrutinee { #(#arms)* #marker }
                    }
                }
            }
        };
        with_static_lifetimes(tokens, &lifetimes)
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
        predicates.push(parse_quote!(for<'__dualwrite_check> #op_type: #private::Operation));
        predicates.extend(self.clone_bounds());
        predicates.extend(self.error_display_bounds(old));
        predicates.extend(self.read_bounds(old));
        if self
            .model
            .implemented()
            .any(|method| method.role == Role::Read && Self::is_detached(method))
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

    /// A `skip` method: forwarded to the serving store, never compared.
    fn skip_body(&self, method: &Method<'_>) -> TokenStream {
        let private = &self.private;
        let (this, old_store, new_store) = self.receivers(method);
        let (as_old, as_new) = (self.as_trait(&self.old), self.as_trait(&self.new));
        let ident = method.ident();
        let namespace = &self.namespace;
        let name = Self::method_name(method);
        let args: Vec<&Ident> = method.args.iter().map(|arg| &arg.name).collect();
        let await_ = method.form.is_async().then(|| quote!(.await));
        let call = quote! {
            match #private::DualWrite::__read_side(#this, #namespace, #name) {
                #private::Side::Old => #as_old::#ident(#old_store, #(#args),*) #await_,
                #private::Side::New => #as_new::#ident(#new_store, #(#args),*) #await_,
            }
        };
        match method.item.sig.unsafety {
            Some(unsafety) => quote!(#unsafety { #call }),
            None => call,
        }
    }

    /// Whether a read marked `detached` can spawn its other-store call:
    /// its future must be known to be `Send`. Native `async fn` cannot say
    /// so, and `impl Future` without `+ Send` does not; they compare
    /// concurrently instead (documented in the runtime's `read` module).
    fn is_detached(method: &Method<'_>) -> bool {
        method.options.detached.is_some()
            && match method.form {
                Form::AsyncTrait | Form::Blocking => true,
                Form::NativeAsync => false,
                Form::ImplFuture(_) => returns_send_future(&method.item.sig.output),
            }
    }

    /// A read: planned by the runtime (stage after rollout, sampling), then
    /// served by one store or compared across both (see the runtime's
    /// `read` module for what each form does).
    fn read_body(&self, method: &Method<'_>) -> TokenStream {
        if method.role == Role::Skip {
            return self.skip_body(method);
        }
        let private = &self.private;
        let (this, old_store, new_store) = self.receivers(method);
        let (as_old, as_new) = (self.as_trait(&self.old), self.as_trait(&self.new));
        let ident = method.ident();
        let namespace = &self.namespace;
        let name = Self::method_name(method);
        let args: Vec<&Ident> = method.args.iter().map(|arg| &arg.name).collect();
        let [plan, old_var, new_var, store] = [
            "__dualwrite_plan",
            "__dualwrite_old",
            "__dualwrite_new",
            "__dualwrite_store",
        ]
        .map(mixed);
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
        let is_result = method
            .output()
            .is_some_and(|output| !std::ptr::eq(read_value_type(output), output));
        let view = if is_result {
            quote!(#private::result_view)
        } else {
            quote!(#private::plain_view)
        };
        let compare_check = options.compare.as_ref().and_then(|compare| {
            let value = method.output().map(read_value_type)?;
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
        let copy_args = quote!(#(let #copies = ::core::clone::Clone::clone(&#args);)*);
        // For a detached call: owned copies of the arguments, moved into the
        // other store's call, which outlives this one.
        let passings: Vec<Passing<'_>> = method
            .args
            .iter()
            .map(|arg| owned_passing(arg.ty))
            .collect();
        let owned_args = args
            .iter()
            .zip(&owned)
            .zip(&passings)
            .map(|((arg, owned), passing)| match passing {
                Passing::Value => quote!(let #owned = ::core::clone::Clone::clone(&#arg);),
                Passing::Ref(_) => quote!(let #owned = ::core::clone::Clone::clone(#arg);),
                Passing::Str | Passing::Slice(_) => {
                    quote!(let #owned = ::std::borrow::ToOwned::to_owned(#arg);)
                }
            });
        let owned_args = quote!(#(#owned_args)*);
        let owned_pass: Vec<TokenStream> = owned
            .iter()
            .zip(&passings)
            .map(|(owned, passing)| match passing {
                Passing::Value => quote!(#owned),
                _ => quote!(&#owned),
            })
            .collect();
        let detached = Self::is_detached(method);
        let arc_of = |side: &str| match side {
            "old" => quote!(#private::DualWrite::__old_arc(#this)),
            _ => quote!(#private::DualWrite::__new_arc(#this)),
        };
        let receiver_of_store = match method.receiver {
            Receiver::Ref => quote!(&*#store),
            Receiver::Arc => quote!(#store),
        };
        let body = if method.form.is_async() {
            let compared = if detached {
                let (old_arc, new_arc) = (arc_of("old"), arc_of("new"));
                quote! {
                    ::core::option::Option::Some(#private::Side::New) => {
                        let #store = #new_arc;
                        #owned_args
                        #private::ReadPlan::detach(
                            #plan,
                            #as_old::#ident(#old_store, #(#args),*),
                            async move { #as_new::#ident(#receiver_of_store, #(#owned_pass),*).await },
                            #view, #comparator, #show,
                        ).await
                    }
                    ::core::option::Option::Some(#private::Side::Old) => {
                        let #store = #old_arc;
                        #owned_args
                        #private::ReadPlan::detach(
                            #plan,
                            #as_new::#ident(#new_store, #(#args),*),
                            async move { #as_old::#ident(#receiver_of_store, #(#owned_pass),*).await },
                            #view, #comparator, #show,
                        ).await
                    }
                }
            } else {
                quote! {
                    ::core::option::Option::Some(_) => {
                        #copy_args
                        #private::ReadPlan::compare(
                            #plan,
                            #as_old::#ident(#old_store, #(#copies),*),
                            #as_new::#ident(#new_store, #(#args),*),
                            #view, #comparator, #show,
                        ).await
                    }
                }
            };
            quote! {
                match #private::ReadPlan::compared(&#plan) {
                    ::core::option::Option::None => match #private::ReadPlan::serving(&#plan) {
                        #private::Side::Old => #private::ReadPlan::serve(#plan, #as_old::#ident(#old_store, #(#args),*), #view).await,
                        #private::Side::New => #private::ReadPlan::serve(#plan, #as_new::#ident(#new_store, #(#args),*), #view).await,
                    },
                    #compared
                }
            }
        } else {
            let compared = if detached {
                let (old_arc, new_arc) = (arc_of("old"), arc_of("new"));
                quote! {
                    ::core::option::Option::Some(#private::Side::New) => {
                        let #store = #new_arc;
                        #owned_args
                        #private::ReadPlan::detach_blocking(
                            #plan,
                            move || #as_old::#ident(#old_var, #(#args),*),
                            move || #as_new::#ident(#receiver_of_store, #(#owned_pass),*),
                            #view, #comparator, #show,
                        )
                    }
                    ::core::option::Option::Some(#private::Side::Old) => {
                        let #store = #old_arc;
                        #owned_args
                        #private::ReadPlan::detach_blocking(
                            #plan,
                            move || #as_new::#ident(#new_var, #(#args),*),
                            move || #as_old::#ident(#receiver_of_store, #(#owned_pass),*),
                            #view, #comparator, #show,
                        )
                    }
                }
            } else {
                quote! {
                    ::core::option::Option::Some(_) => {
                        #copy_args
                        #private::ReadPlan::compare_blocking(
                            #plan,
                            move || #as_old::#ident(#old_var, #(#copies),*),
                            move || #as_new::#ident(#new_var, #(#args),*),
                            #view, #comparator, #show,
                        )
                    }
                }
            };
            quote! {
                let #old_var = #old_store;
                let #new_var = #new_store;
                match #private::ReadPlan::compared(&#plan) {
                    ::core::option::Option::None => match #private::ReadPlan::serving(&#plan) {
                        #private::Side::Old => #private::ReadPlan::serve_blocking(#plan, move || #as_old::#ident(#old_var, #(#args),*), #view),
                        #private::Side::New => #private::ReadPlan::serve_blocking(#plan, move || #as_new::#ident(#new_var, #(#args),*), #view),
                    },
                    #compared
                }
            }
        };
        let body = quote! {
            let #plan = #private::DualWrite::__read(#this, #namespace, #name, #key);
            #body
        };
        // The caller of an `unsafe fn` upholds its contract; forwarding the
        // call passes the same obligation on. (The block is needed under
        // `unsafe_op_in_unsafe_fn`, and never linted as unused.)
        let body = match method.item.sig.unsafety {
            Some(unsafety) => quote!(#unsafety { #body }),
            None => body,
        };
        quote! {
            #compare_check
            #body
        }
    }

    /// The types a read's comparison needs something of: by-value
    /// arguments (`Clone`, passed to both stores), the compared value
    /// (`PartialEq` unless `compare` or `normalize` is given; for a
    /// detached read also `Clone + Send + 'static`).
    fn read_requirements<'t>(method: &'t Method<'_>) -> Vec<(&'t Type, Requirement)> {
        let mut needs = Vec::new();
        for arg in &method.args {
            if matches!(owned_passing(arg.ty), Passing::Value) {
                needs.push((arg.ty, Requirement::Clone));
            }
        }
        if let Some(value) = method.output().map(read_value_type) {
            if method.options.compare.is_none() && method.options.normalize.is_none() {
                needs.push((value, Requirement::PartialEq));
            }
            if Self::is_detached(method) {
                needs.push((value, Requirement::Detached));
            }
        }
        needs
    }

    /// One `const _` per read holding the checks of its concrete types,
    /// spanned on each type (as `checks()` does for writes).
    fn read_checks(&self) -> TokenStream {
        let private = &self.private;
        let methods = self
            .model
            .implemented()
            .filter(|method| method.role == Role::Read)
            .map(|method| {
                let checks: Vec<TokenStream> = Self::read_requirements(method)
                    .into_iter()
                    .filter(|(ty, _)| {
                        !self.mentions_generics(ty) && valid::mentions_self(ty).is_none()
                    })
                    .map(|(ty, need)| {
                        let check = match need {
                            Requirement::Clone => quote!(assert_compared_argument),
                            Requirement::PartialEq => quote!(assert_compared_value),
                            Requirement::Detached => quote!(assert_detached_value),
                        };
                        quote_spanned!(ty.span()=> #private::#check::<#ty>();)
                    })
                    .collect();
                checks_item(&method.cfgs, &checks)
            });
        quote!(#(#methods)*)
    }

    /// The same requirements as where-clause predicates of the wrapper's
    /// impl: plain for the types that name the trait's parameters or
    /// `Self` (rewritten to `<Old as Trait>`), which a `const _` cannot
    /// check; higher-ranked for concrete types, so that the `const _` check
    /// is the one report of a missing trait (see `bound`).
    fn read_bounds(&self, store: &Ident) -> Vec<WherePredicate> {
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
                    bounds.push(parse_quote!(#ty: #bound));
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

    /// The `fail_closed` option on the method or the trait, if given.
    fn fail_closed(&self, method: &Method<'_>) -> Option<Span> {
        method
            .options
            .fail_closed
            .or(self.model.options.fail_closed)
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
        let fail_closed = self.fail_closed(method);

        let key = match &method.options.key {
            Some(key) => key_call(private, key),
            None => quote!(#private::Key::unkeyed()),
        };
        let begin = if is_async {
            quote!(#private::DualWrite::__begin_write(#this, #namespace, #name, #key).await)
        } else {
            quote!(#private::DualWrite::__begin_write_blocking(#this, #namespace, #name, #key))
        };
        let begin = match &method.options.delivery {
            Some(delivery) if delivery == "journaled" => {
                quote!(#begin.deliver_by(#private::Delivery::Journaled))
            }
            Some(_) => quote!(#begin.deliver_by(#private::Delivery::Sync)),
            None => begin,
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
        let (prepare, commit, abort) = if is_async {
            (quote!(prepare), quote!(commit), quote!(abort))
        } else {
            (
                quote!(prepare_blocking),
                quote!(commit_blocking),
                quote!(abort_blocking),
            )
        };
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
        let refused = |tokens: TokenStream| match &fail_closed {
            Some(span) => {
                let into_error = into_error(*span);
                quote! {
                    if let ::core::result::Result::Err(#refusal) = #tokens {
                        return ::core::result::Result::Err(#into_error);
                    }
                }
            }
            None => quote!(let _ = #tokens;),
        };
        let take_prepared = match &fail_closed {
            Some(span) => {
                let into_error = into_error(*span);
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
        let (authoritative_old, authoritative_new) = if is_async {
            (
                quote!(#guard.authoritative_call(::core::option::Option::as_ref(&#op_value), #as_old::#ident(#old_store, #(#names),*)).await),
                quote!(#guard.authoritative_call(::core::option::Option::as_ref(&#op_value), #as_new::#ident(#new_store, #(#names),*)).await),
            )
        } else {
            (
                quote!(#guard.authoritative_call_blocking(::core::option::Option::as_ref(&#op_value), || #as_old::#ident(#old_store, #(#names),*))),
                quote!(#guard.authoritative_call_blocking(::core::option::Option::as_ref(&#op_value), || #as_new::#ident(#new_store, #(#names),*))),
            )
        };
        let enqueue_after_failure =
            refused(quote!(#guard.#enqueue(#side, &#op_value, #reason) #await_));
        let enqueue_planned = refused(quote!(#guard.#enqueue(#side, &#op_value, #reason) #await_));
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
                ::core::option::Option::Some(#op_value) => #guard.#prepare(#op_value) #await_,
                ::core::option::Option::None => ::core::result::Result::Ok(::core::option::Option::None),
            };
            #take_prepared
            let #result = match #guard.authoritative() {
                #private::Side::Old => #authoritative_old,
                #private::Side::New => #authoritative_new,
            };
            if ::core::result::Result::is_err(&#result) {
                #guard.#abort(#prepared) #await_;
            } else if let ::core::option::Option::Some(#op_value) = #op_value {
                if let ::core::option::Option::Some(#prepared) = #prepared {
                    #guard.#commit(#prepared) #await_;
                } else { match #plan {
                    #private::FollowerPlan::Call(#side) => {
                        let #outcome = match (#side, &#op_value) {
                            (#private::Side::Old, #op::#variant { #(#names),* }) => #call_old,
                            (#private::Side::New, #op::#variant { #(#names),* }) => #call_new,
                            #[allow(unreachable_patterns)]
                            _ => ::core::unreachable!("the operation was built for this method"),
                        };
                        if let ::core::result::Result::Err(#reason) = #outcome {
                            #enqueue_after_failure
                        }
                    }
                    #private::FollowerPlan::Queue(#side, #reason) => {
                        #enqueue_planned
                    }
                } }
            }
            #result
        }
    }
}

/// `<runtime>::__private::key(&<key>)`, spanned so that a key whose type
/// is not `Display` is reported on the whole key expression: the `&` takes
/// the key's first span, and the key is parenthesised only when it must be
/// (parentheses made here would end the reported span at its first token).
fn key_call(private: &TokenStream, key: &syn::Expr) -> TokenStream {
    use syn::Expr;
    let postfix = matches!(
        key,
        Expr::Path(_)
            | Expr::Field(_)
            | Expr::MethodCall(_)
            | Expr::Call(_)
            | Expr::Macro(_)
            | Expr::Lit(_)
            | Expr::Index(_)
            | Expr::Paren(_)
            | Expr::Tuple(_)
    );
    let argument = if postfix {
        quote_spanned!(key.span()=> &#key)
    } else {
        quote_spanned!(key.span()=> &(#key))
    };
    quote_spanned!(key.span()=> #private::key(#argument))
}

/// `tokens` with each lifetime named in `names` replaced by `'static`.
fn with_static_lifetimes(tokens: TokenStream, names: &[String]) -> TokenStream {
    use proc_macro2::{Group, TokenTree};
    if names.is_empty() {
        return tokens;
    }
    let mut after_quote = false;
    tokens
        .into_iter()
        .map(|token| {
            let token = match token {
                TokenTree::Group(group) => {
                    let mut replaced = Group::new(
                        group.delimiter(),
                        with_static_lifetimes(group.stream(), names),
                    );
                    replaced.set_span(group.span());
                    TokenTree::Group(replaced)
                }
                TokenTree::Ident(ident) if after_quote && names.contains(&ident.to_string()) => {
                    TokenTree::Ident(Ident::new("static", ident.span()))
                }
                other => other,
            };
            after_quote = matches!(&token, TokenTree::Punct(punct) if punct.as_char() == '\'');
            token
        })
        .collect()
}

/// A `const _` item running a method's compile-time checks, under the
/// method's `#[cfg]`s (nothing when there are no checks).
fn checks_item(cfgs: &[&syn::Attribute], checks: &[TokenStream]) -> TokenStream {
    if checks.is_empty() {
        return TokenStream::new();
    }
    quote! {
        #(#cfgs)*
        const _: () = {
            #(#checks)*
        };
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

/// How a read's argument is copied into a detached call: the types of
/// `&str`, `&[T]` and `&T` are owned as `String`, `Vec<T>` and `T`.
fn owned_passing(ty: &Type) -> Passing<'_> {
    match ty {
        Type::Reference(reference) if reference.mutability.is_none() => match &*reference.elem {
            Type::Path(path) if path.path.is_ident("str") => Passing::Str,
            Type::Slice(slice) => Passing::Slice(&slice.elem),
            elem => Passing::Ref(elem),
        },
        _ => Passing::Value,
    }
}

/// Whether `-> impl Future<..> + Send` names `Send`.
fn returns_send_future(output: &syn::ReturnType) -> bool {
    let syn::ReturnType::Type(_, ty) = output else {
        return false;
    };
    let Type::ImplTrait(bounds) = &**ty else {
        return false;
    };
    bounds.bounds.iter().any(|bound| match bound {
        syn::TypeParamBound::Trait(bound) => bound
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Send"),
        _ => false,
    })
}

/// What the comparison of a read needs of a type.
#[derive(Clone, Copy)]
enum Requirement {
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

    /// A trait using most of what the macro supports.
    const FULL: &str = r#"
        /// Docs.
        pub trait Catalog<'q, T: Item + Clone = Widget, const N: usize = 4>: Send + Sync
        where
            T: Serialize,
        {
            type Error: Display;
            type Stats;
            const NAME: &'static str;
            const PAGE: usize = 10;
            #[dual_write(write, key = item.id())]
            async fn put_item(&self, item: T) -> Result<(), Self::Error>;
            #[dual_write(write, key = format!("{tag}/{}", ids.len()))]
            fn tag(&self, tag: &str, ids: &[u64], by: &Person) -> impl Future<Output = Result<usize, Self::Error>> + Send;
            #[cfg(feature = "x")]
            #[dual_write(write)]
            fn purge(&self, what: Purge) -> io::Result<()>;
            fn delete_item(&self, id: u64) -> Result<bool, Self::Error>;
            #[dual_write(read, key = id, compare = same)]
            async fn get_item(&self, id: u64) -> Result<Option<T>, Self::Error>;
            #[dual_write(read)]
            async fn find(&self, (a, b): (u64, u64), label: &'q str) -> Option<&'q str>;
            #[dual_write(read)]
            async fn stats(self: Arc<Self>) -> Self::Stats;
            async fn put_many(&self, items: Vec<T>) -> Result<(), Self::Error> {
                Ok(())
            }
            #[dual_write(skip)]
            fn describe(&self) -> String;
        }
    "#;

    #[test]
    fn expansion_is_deterministic() {
        // Two expansions in one process see differently seeded hash maps,
        // so any iteration over one would show up here.
        assert_eq!(expand_str("", REPO), expand_str("", REPO));
        for args in ["", "namespace = \"c\", version = 7, op = CatalogWrites"] {
            let first = expand_str(args, FULL);
            assert!(!first.contains("compile_error"), "{first}");
            for _ in 0..3 {
                assert_eq!(first, expand_str(args, FULL));
            }
        }
    }

    /// The first two segments of every path in `tokens` that starts with
    /// `::` (a leading `::`, not one inside `a::b` or `<T as X>::b`).
    fn absolute_paths(tokens: TokenStream) -> Vec<String> {
        use proc_macro2::{Spacing, TokenTree};
        fn flatten(tokens: TokenStream, into: &mut Vec<TokenTree>) {
            for token in tokens {
                if let TokenTree::Group(group) = &token {
                    // Delimiters stand in as puncts that start no path.
                    into.push(TokenTree::Punct(proc_macro2::Punct::new(
                        '@',
                        Spacing::Alone,
                    )));
                    flatten(group.stream(), into);
                    into.push(TokenTree::Punct(proc_macro2::Punct::new(
                        '@',
                        Spacing::Alone,
                    )));
                } else {
                    into.push(token);
                }
            }
        }
        const KEYWORDS: &[&str] = &[
            "for", "as", "impl", "dyn", "where", "in", "return", "mut", "move", "const", "static",
            "type", "let", "else", "match", "if", "pub", "use",
        ];
        let mut flat = Vec::new();
        flatten(tokens, &mut flat);
        let mut paths = Vec::new();
        for i in 0..flat.len() {
            let is_colons = matches!((&flat[i], flat.get(i + 1)),
                (TokenTree::Punct(a), Some(TokenTree::Punct(b)))
                    if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':');
            if !is_colons {
                continue;
            }
            let leading = match i.checked_sub(1).map(|p| &flat[p]) {
                None => true,
                Some(TokenTree::Ident(ident)) => KEYWORDS.contains(&ident.to_string().as_str()),
                Some(TokenTree::Punct(punct)) if punct.as_char() == '>' => {
                    // `->` is a leading position, `Vec<T>::` is not.
                    matches!(i.checked_sub(2).map(|p| &flat[p]),
                        Some(TokenTree::Punct(dash)) if dash.as_char() == '-' && dash.spacing() == Spacing::Joint)
                }
                // `a: ::b`, but not the second colon of `a::b`.
                Some(TokenTree::Punct(punct)) if punct.as_char() == ':' => {
                    punct.spacing() == Spacing::Alone
                }
                Some(_) => true,
            };
            if !leading {
                continue;
            }
            let segment = |at: usize| flat.get(at).map(ToString::to_string).unwrap_or_default();
            paths.push(format!("{}::{}", segment(i + 2), segment(i + 5)));
        }
        paths
    }

    #[test]
    fn absolute_paths_finds_leading_paths_only() {
        let tokens = quote! {
            fn f(x: ::serde::Value) -> ::anyhow::Result<a::b> {
                <T as ::x::Y>::z(); Vec::<u8>::new(); (::q::r)(); a::b::c();
            }
        };
        assert_eq!(
            absolute_paths(tokens),
            ["serde::Value", "anyhow::Result", "x::Y", "q::r"]
        );
    }

    #[test]
    fn generated_code_names_only_the_hidden_module_core_and_std() {
        for (args, input) in [("", REPO), ("", FULL), ("namespace = \"n\"", FULL)] {
            let out = dual_write(args.parse().unwrap(), input.parse().unwrap());
            let paths = absolute_paths(out);
            assert!(!paths.is_empty());
            for path in paths {
                assert!(
                    path == "dualwrite_runtime::__private"
                        || path.starts_with("core::")
                        || path.starts_with("std::"),
                    "generated code names `::{path}`"
                );
            }
        }
    }

    #[test]
    fn the_crate_option_moves_every_runtime_path() {
        let out = dual_write("crate = ::my_rt".parse().unwrap(), REPO.parse().unwrap());
        let paths = absolute_paths(out);
        assert!(
            paths.iter().any(|path| path == "my_rt::__private"),
            "{paths:?}"
        );
        assert!(
            !paths
                .iter()
                .any(|path| path.starts_with("dualwrite_runtime")),
            "{paths:?}"
        );
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let cases: &[(&str, &str)] = &[
            ("", "struct S;"),
            ("", "fn f() {}"),
            ("", "trait T { fn put(&self) -> ; }"),
            ("", "trait T {"),
            ("", ""),
            ("=", "trait T {}"),
            ("namespace", "trait T {}"),
            ("namespace = 1", "trait T {}"),
            ("namespace = \"\"", "trait T {}"),
            ("version = \"1\"", "trait T {}"),
            ("version = 99999999999", "trait T {}"),
            ("op = a::b", "trait T {}"),
            ("crate", "trait T {}"),
            ("", "trait T { #[dual_write(key)] fn put(&self) -> Result<(), E>; }"),
            ("", "trait T { #[dual_write(key = )] fn put(&self) -> Result<(), E>; }"),
            ("", "trait T { #[dual_write(compare = 1)] fn get(&self) -> u8; }"),
            ("", "trait T { #[dual_write = 1] fn put(&self) -> Result<(), E>; }"),
            ("", "trait T { #[dual_write(write)] fn put(&self, x: &mut u8) -> Result<(), E>; }"),
            ("", "trait T { #[dual_write(write)] fn r#put(&self, r#x: u8) -> Result<(), E>; }"),
            ("", "trait T { #[dual_write(write)] fn put(&self, (a, b): (u8, u8)) -> Result<(), E>; }"),
            ("", "trait T { #[dual_write(write)] fn put(&self, _: u8) -> Result<(), E>; }"),
            ("", "trait T { fn _(&self); }"),
            ("", "trait T { fn put(self: Box<Self>) -> Result<(), E>; }"),
            ("", "trait T { fn put(self: Pin<&mut Self>) -> Result<(), E>; }"),
            ("", "trait T { fn put(&self, ...) -> Result<(), E>; }"),
            ("", "trait T { fn put(&self) -> impl Future; }"),
            ("", "trait T { fn put(&self) -> impl Future<Output = ()>; }"),
            ("", "unsafe trait T { unsafe fn put(&self) -> Result<(), E>; }"),
            ("", "trait T { const fn put(&self) -> Result<(), E>; }"),
            ("", "trait T { extern \"C\" fn put(&self) -> Result<(), E>; }"),
            ("", "trait T { #[dual_write(write, key = |x| y)] fn put(&self, id: u8) -> Result<(), E>; }"),
        ];
        for (args, input) in cases {
            let (Ok(arg_tokens), Ok(input_tokens)) =
                (args.parse::<TokenStream>(), input.parse::<TokenStream>())
            else {
                continue;
            };
            let outcome =
                std::panic::catch_unwind(|| dual_write(arg_tokens, input_tokens).to_string());
            assert!(outcome.is_ok(), "panicked on `{args}` / `{input}`");
        }
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
    fn the_attribute_on_a_free_function_is_an_error() {
        for (args, input) in [
            ("", "fn main() {}"),
            ("write", "fn put(id: u64) -> Result<(), String> { Ok(()) }"),
            ("", "async fn put(&self, id: u64) -> Result<(), String>;"),
        ] {
            let out = expand_str(args, input);
            assert!(out.contains("compile_error"), "{out}");
            assert!(out.contains("goes on a trait"), "{out}");
        }
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
