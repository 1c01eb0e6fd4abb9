//! What every part of the expansion shares: the paths into the runtime,
//! the names of the generated items, the trait's generics as the impls
//! need them, and the hygiene of generated locals.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{parse_quote, GenericParam, Generics, Ident};

use crate::args::TraitOptions;
use crate::ast::{Method, Trait};

/// Names and paths shared by every generated item.
pub(super) struct Context<'m, 'a> {
    pub(super) model: &'m Trait<'a>,
    /// `::dualwrite_runtime::__private`, or wherever the runtime is.
    pub(super) private: TokenStream,
    /// The enum of write operations.
    pub(super) op: Ident,
    pub(super) namespace: String,
    pub(super) version: u32,
    /// `<'a, T, N>`: the trait's parameters as arguments.
    pub(super) trait_args: TokenStream,
    /// `<T, N>`: the enum's parameters (the trait's, minus lifetimes).
    pub(super) op_args: TokenStream,
    /// Whether the enum has type parameters (and so a marker variant).
    pub(super) op_is_generic: bool,
    /// The associated types that write arguments name as `Self::X`: the
    /// enum takes a type parameter `X` for each, after the trait's.
    pub(super) assoc_params: Vec<Ident>,
    pub(super) old: Ident,
    pub(super) new: Ident,
    pub(super) store: Ident,
}

/// A local of the generated code: `__dualwrite_` names with mixed-site
/// hygiene, which the user's tokens cannot see.
pub(super) fn mixed(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// `name` for an async method, `name_blocking` for a blocking one: the
/// runtime's functions come in such pairs.
pub(super) fn form_fn(name: &str, is_async: bool) -> Ident {
    if is_async {
        format_ident!("{name}")
    } else {
        format_ident!("{name}_blocking")
    }
}

impl<'m, 'a> Context<'m, 'a> {
    pub(super) fn new(model: &'m Trait<'a>) -> Self {
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
            let args = params.iter().map(param_argument);
            quote!(<#(#args),*>)
        };
        let assoc_params = model.write_assoc_types();
        let op_params: Vec<&Ident> = params
            .iter()
            .filter_map(|param| match param {
                GenericParam::Type(ty) => Some(&ty.ident),
                GenericParam::Const(constant) => Some(&constant.ident),
                GenericParam::Lifetime(_) => None,
            })
            .chain(&assoc_params)
            .collect();
        let op_args = if op_params.is_empty() {
            TokenStream::new()
        } else {
            quote!(<#(#op_params),*>)
        };
        let op_is_generic = !assoc_params.is_empty()
            || params
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
            assoc_params,
            old: unused_name(item, "Old", "__DualwriteOld"),
            new: unused_name(item, "New", "__DualwriteNew"),
            store: unused_name(item, "Store", "__DualwriteStore"),
        }
    }

    pub(super) fn trait_path(&self) -> TokenStream {
        let ident = &self.model.item.ident;
        let args = &self.trait_args;
        quote!(#ident #args)
    }

    /// `<#store as Trait<..>>`
    pub(super) fn as_trait(&self, store: &Ident) -> TokenStream {
        let path = self.trait_path();
        quote!(<#store as #path>)
    }

    pub(super) fn op_type(&self) -> TokenStream {
        let op = &self.op;
        let args = &self.op_args;
        quote!(#op #args)
    }

    /// The enum's generic parameters: the trait's type and const parameters,
    /// with their trait bounds, without defaults or lifetime bounds.
    pub(super) fn op_generics(&self) -> Generics {
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
        for ident in &self.assoc_params {
            generics.params.push(parse_quote!(#ident));
        }
        generics
    }

    /// The enum's type with its parameters for associated types as `store`'s
    /// (`Op<T, <Old as Trait<T>>::Id>`).
    pub(super) fn op_type_for(&self, store: &Ident) -> TokenStream {
        let op = &self.op;
        let as_trait = self.as_trait(store);
        let params = self.model.item.generics.params.iter();
        let params = params
            .filter(|param| !matches!(param, GenericParam::Lifetime(_)))
            .map(param_argument);
        let assoc = self
            .assoc_params
            .iter()
            .map(|ident| quote!(#as_trait::#ident));
        let args: Vec<TokenStream> = params.chain(assoc).collect();
        if args.is_empty() {
            quote!(#op)
        } else {
            quote!(#op<#(#args),*>)
        }
    }

    /// `Trait<'a, T, ..>` with `extra` arguments after the trait's own
    /// (associated type equalities).
    pub(super) fn trait_with(&self, extra: impl IntoIterator<Item = TokenStream>) -> TokenStream {
        let ident = &self.model.item.ident;
        let params = self.model.item.generics.params.iter().map(param_argument);
        let args: Vec<TokenStream> = params.chain(extra).collect();
        if args.is_empty() {
            quote!(#ident)
        } else {
            quote!(#ident<#(#args),*>)
        }
    }

    /// `Trait<'a, T, X = X, ..>`: the trait with each of the enum's
    /// associated-type parameters equated to the store's associated type.
    pub(super) fn trait_path_with_assoc(&self) -> TokenStream {
        self.trait_with(
            self.assoc_params
                .iter()
                .map(|ident| quote!(#ident = #ident)),
        )
    }

    /// The trait's generics (without defaults) plus `extra` type parameters,
    /// and the trait's where clause.
    pub(super) fn impl_generics(&self, extra: &[&Ident]) -> Generics {
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

    pub(super) fn variant(&self, method: &Method<'_>) -> Ident {
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

    pub(super) fn method_name(method: &Method<'_>) -> String {
        method
            .ident()
            .to_string()
            .trim_start_matches("r#")
            .to_owned()
    }

    /// What a `match` over the enum matches on: `self`, or `*self` when the
    /// trait has no write methods (an empty enum, matched with no arms).
    pub(super) fn match_scrutinee(&self) -> TokenStream {
        if self.model.writes().next().is_none() && !self.op_is_generic {
            quote!(*self)
        } else {
            quote!(self)
        }
    }

    pub(super) fn marker_variant(&self) -> Option<TokenStream> {
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
            })
            .chain(&self.assoc_params);
        Some(quote! {
            #[doc(hidden)]
            #[serde(skip)]
            __DualwriteMarker(::core::marker::PhantomData<fn() -> (#(#params,)*)>, ::core::convert::Infallible),
        })
    }

    /// The arm that makes a `match` over the enum exhaustive despite the marker.
    pub(super) fn marker_arm(&self) -> Option<TokenStream> {
        let never = mixed("__dualwrite_never");
        self.op_is_generic
            .then(|| quote!(Self::__DualwriteMarker(_, #never) => match *#never {},))
    }
}

/// `<runtime>::__private::key(&<key>)`, spanned so that a key whose type
/// is not `Display` is reported on the whole key expression: the `&` takes
/// the key's first span, and the key is parenthesised only when it must be
/// (parentheses made here would end the reported span at its first token).
pub(super) fn key_call(private: &TokenStream, key: &syn::Expr) -> TokenStream {
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

/// A generic parameter as an argument: `'a`, `T`, `N`.
fn param_argument(param: &GenericParam) -> TokenStream {
    match param {
        GenericParam::Lifetime(lifetime) => lifetime.lifetime.to_token_stream(),
        GenericParam::Type(ty) => ty.ident.to_token_stream(),
        GenericParam::Const(constant) => constant.ident.to_token_stream(),
    }
}

/// `name`, the readable name of a generated type parameter (which rustc
/// shows in errors, as in `DualWrite<Old, New>: Trait`), unless the trait
/// names it anywhere: a type parameter resolves like the user's own names,
/// so it would shadow their `Old`; then `fallback`.
fn unused_name(item: &syn::ItemTrait, name: &str, fallback: &str) -> Ident {
    fn names(tokens: TokenStream, name: &str) -> bool {
        tokens.into_iter().any(|token| match token {
            proc_macro2::TokenTree::Ident(ident) => ident == name,
            proc_macro2::TokenTree::Group(group) => names(group.stream(), name),
            _ => false,
        })
    }
    if names(item.to_token_stream(), name) {
        format_ident!("{fallback}")
    } else {
        format_ident!("{name}")
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
