//! A model of the annotated trait that borrows the input: which methods read,
//! which write, in which form, with which arguments.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, Pat, PathArguments, ReturnType, TraitItem,
    TraitItemConst, TraitItemFn, TraitItemType, Type, TypeParamBound,
};

use crate::args::{is_async_trait_attr, MethodOptions, RoleOption, TraitOptions};
use crate::valid::combine;

pub(crate) struct Trait<'a> {
    pub(crate) item: &'a ItemTrait,
    pub(crate) options: TraitOptions,
    /// The `#[async_trait]` attribute below ours, repeated on the generated impl.
    pub(crate) async_trait: Option<&'a Attribute>,
    pub(crate) methods: Vec<Method<'a>>,
    pub(crate) types: Vec<&'a TraitItemType>,
    pub(crate) consts: Vec<&'a TraitItemConst>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Role {
    Read,
    Write,
    /// Forwarded to the serving store untouched.
    Skip,
    /// A default method without options: the generated impl leaves it out, so
    /// its default body runs against the wrapper.
    Inherit,
}

#[derive(Clone, Copy)]
pub(crate) enum Form<'a> {
    /// `async fn` in a trait without `#[async_trait]`.
    NativeAsync,
    /// `async fn` under `#[async_trait]`.
    AsyncTrait,
    /// `fn .. -> impl Future<Output = T> (+ Send)`; `T` is kept.
    ImplFuture(&'a Type),
    /// A plain blocking `fn`.
    Blocking,
}

impl Form<'_> {
    pub(crate) fn is_async(&self) -> bool {
        !matches!(self, Form::Blocking)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver {
    /// `&self` or `self: &Self`.
    Ref,
    /// `self: Arc<Self>`.
    Arc,
}

pub(crate) struct Method<'a> {
    pub(crate) item: &'a TraitItemFn,
    pub(crate) options: MethodOptions,
    pub(crate) role: Role,
    pub(crate) form: Form<'a>,
    pub(crate) receiver: Receiver,
    pub(crate) args: Vec<Arg<'a>>,
    /// `#[cfg]` and `#[cfg_attr]` on the method, repeated on everything
    /// generated for it.
    pub(crate) cfgs: Vec<&'a Attribute>,
    /// `E` of a `Result<T, E>` output.
    pub(crate) error_type: Option<&'a Type>,
    /// What a read's comparator compares: `T` of a `..Result<T, ..>`
    /// output, else the output itself.
    pub(crate) read_value: Option<&'a Type>,
    /// Whether a read marked `detached` can spawn its other-store call:
    /// its future must be known to be `Send`. Native `async fn` cannot say
    /// so, and `impl Future` without `+ Send` does not; they compare
    /// concurrently instead (documented in the runtime's `read` module).
    pub(crate) detached: bool,
    /// The `fail_closed` option on the method or the trait, if given.
    pub(crate) fail_closed: Option<Span>,
}

impl<'a> Method<'a> {
    pub(crate) fn ident(&self) -> &'a Ident {
        &self.item.sig.ident
    }

    /// The type the method's call produces (after `.await` for async forms).
    pub(crate) fn output(&self) -> Option<&'a Type> {
        match (self.form, &self.item.sig.output) {
            (Form::ImplFuture(output), _) => Some(output),
            (_, ReturnType::Type(_, ty)) => Some(ty),
            (_, ReturnType::Default) => None,
        }
    }

    /// Whether the output is a `..Result<T, ..>`, compared on its `Ok` value.
    pub(crate) fn returns_result(&self) -> bool {
        self.output()
            .zip(self.read_value)
            .is_some_and(|(output, value)| !std::ptr::eq(value, output))
    }
}

pub(crate) struct Arg<'a> {
    /// The argument's name, or `argN` for a pattern.
    pub(crate) name: Ident,
    pub(crate) ty: &'a Type,
    pub(crate) passing: Passing<'a>,
    /// How a read keeps the argument for a detached call.
    pub(crate) owned: Passing<'a>,
}

/// How an argument of a write method is kept in the operation (see
/// `shape.rs`).
pub(crate) enum Passing<'a> {
    /// `T`: kept as `T`, cloned for the second store.
    Value,
    /// `&str`: kept as `String`.
    Str,
    /// `&[T]`: kept as `Vec<T>`.
    Slice(&'a Type),
    /// `&T`: kept as `T`, cloned from the reference.
    Ref(&'a Type),
    /// `Option<&str>`: kept as `Option<String>`.
    OptionStr,
    /// `Option<&[T]>`: kept as `Option<Vec<T>>`.
    OptionSlice(&'a Type),
    /// `Option<&T>`: kept as `Option<T>`.
    OptionRef(&'a Type),
    /// `Cow<'_, X>`: kept as `X`'s owned form, lent back as `Cow::Borrowed`.
    Cow(&'a Type),
    /// `&X` or `Option<&X>` where `X` borrows too (`&Register<'_>`), or a
    /// write's argument of a type that borrows (`Register<'a>`): kept
    /// serialised; replay reads `target` back from it and passes it on as
    /// `adapt` says. `checked` is `X` (the element, for `&[X]`), with the
    /// user's spans, for the check that names it.
    Payload {
        target: Box<Type>,
        adapt: Adapt,
        checked: Box<Type>,
    },
    /// A read's argument of a type that borrows (`Vec<&str>`), which a
    /// detached read cannot copy (a write keeps it as a payload).
    Borrowing,
}

/// How the value read back from a payload is passed to the store.
#[derive(Clone, Copy)]
pub(crate) enum Adapt {
    /// `value`, for an argument taken by value
    Value,
    /// `&value` (`&Vec<X>` coerces to `&[X]`)
    Borrow,
    /// `value.as_ref()`, for `Option<&X>`
    OptionRef,
    /// `value.as_deref()`, for `Option<&[X]>`
    OptionDeref,
}

impl<'a> Trait<'a> {
    pub(crate) fn from_syn(item: &'a ItemTrait, options: TraitOptions) -> syn::Result<Self> {
        let mut errors = None;
        let async_trait = item.attrs.iter().find(|attr| is_async_trait_attr(attr));
        let fail_closed = options.fail_closed;
        let mut model = Trait {
            item,
            options,
            async_trait,
            methods: Vec::new(),
            types: Vec::new(),
            consts: Vec::new(),
        };
        for trait_item in &item.items {
            match trait_item {
                TraitItem::Fn(method) => match Method::from_syn(method, async_trait.is_some(), fail_closed) {
                    Ok(method) => model.methods.push(method),
                    Err(error) => combine(&mut errors, error),
                },
                TraitItem::Type(ty) => model.types.push(ty),
                TraitItem::Const(constant) => model.consts.push(constant),
                TraitItem::Macro(mac) => combine(
                    &mut errors,
                    syn::Error::new_spanned(
                        &mac.mac,
                        "#[dual_write] cannot see what a macro in a trait expands to; write the items it produces directly in the trait",
                    ),
                ),
                other => combine(
                    &mut errors,
                    syn::Error::new_spanned(other, "#[dual_write] does not understand this trait item"),
                ),
            }
        }
        match errors {
            Some(errors) => Err(errors),
            None => Ok(model),
        }
    }

    /// The methods the generated impl defines.
    pub(crate) fn implemented(&self) -> impl Iterator<Item = &Method<'a>> {
        self.methods
            .iter()
            .filter(|method| method.role != Role::Inherit)
    }

    pub(crate) fn writes(&self) -> impl Iterator<Item = &Method<'a>> {
        self.methods
            .iter()
            .filter(|method| method.role == Role::Write)
    }

    /// Whether the trait has a supertrait besides the auto traits (whose
    /// blanket impls may ask more of the wrapper than the trait does).
    pub(crate) fn has_supertraits(&self) -> bool {
        self.item.supertraits.iter().any(|bound| match bound {
            TypeParamBound::Trait(bound) => !bound.path.segments.last().is_some_and(|last| {
                ["Send", "Sync", "Sized", "Unpin"]
                    .iter()
                    .any(|name| last.ident == name)
            }),
            _ => false,
        })
    }

    /// The associated types that write arguments name as `Self::X`, in the
    /// trait's order: the operation enum carries each as a type parameter.
    pub(crate) fn write_assoc_types(&self) -> Vec<Ident> {
        let named: Vec<Ident> = self
            .writes()
            .flat_map(|method| &method.args)
            .flat_map(|arg| crate::valid::self_assoc_types(arg.ty))
            .collect();
        self.types
            .iter()
            .filter(|ty| named.contains(&ty.ident))
            .map(|ty| ty.ident.clone())
            .collect()
    }
}

impl<'a> Method<'a> {
    fn from_syn(
        item: &'a TraitItemFn,
        under_async_trait: bool,
        trait_fail_closed: Option<Span>,
    ) -> syn::Result<Self> {
        let options = MethodOptions::from_attrs(&item.attrs)?;
        let sig = &item.sig;
        if let Some(span) = expanded_async_trait(item) {
            return Err(syn::Error::new(
                span,
                "this method was already expanded by #[async_trait]: write #[dual_write] above #[async_trait], not below it",
            ));
        }
        let form = if sig.asyncness.is_some() {
            if under_async_trait {
                Form::AsyncTrait
            } else {
                Form::NativeAsync
            }
        } else if let Some(output) = impl_future_output(&sig.output) {
            Form::ImplFuture(output)
        } else {
            Form::Blocking
        };
        let role = match options.role {
            Some((RoleOption::Read, _)) => Role::Read,
            Some((RoleOption::Write, _)) => Role::Write,
            Some((RoleOption::Skip, _)) => Role::Skip,
            None if item.default.is_some() => Role::Inherit,
            None => crate::verbs::infer_role(&sig.ident)?,
        };
        let receiver = match sig.inputs.first() {
            Some(FnArg::Receiver(receiver)) => receiver_kind(receiver, role)?,
            _ if role == Role::Inherit => Receiver::Ref,
            _ => {
                return Err(syn::Error::new(
                    sig.ident.span(),
                    format!(
                        "`{}` has no `self` receiver, so there is no store to route it to; give it a default body, or take `&self`",
                        sig.ident
                    ),
                ))
            }
        };
        let mut args = Vec::new();
        let mut errors = None;
        for (index, input) in sig.inputs.iter().enumerate() {
            let FnArg::Typed(typed) = input else { continue };
            let name = match &*typed.pat {
                Pat::Ident(pat) if pat.subpat.is_none() => pat.ident.clone(),
                _ => Ident::new(&format!("arg{index}"), typed.pat.span()),
            };
            let passing = if role == Role::Write {
                match crate::shape::write_passing(&typed.ty) {
                    Ok(passing) => passing,
                    Err(error) => {
                        combine(&mut errors, error);
                        continue;
                    }
                }
            } else {
                Passing::Value
            };
            args.push(Arg {
                name,
                ty: &typed.ty,
                passing,
                owned: crate::shape::passing(&typed.ty),
            });
        }
        if let Some(errors) = errors {
            return Err(errors);
        }
        let cfgs = item
            .attrs
            .iter()
            .filter(|attr| attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr"))
            .collect();
        let detached = options.detached.is_some()
            && match form {
                Form::AsyncTrait | Form::Blocking => true,
                Form::NativeAsync => false,
                Form::ImplFuture(_) => returns_send_future(&sig.output),
            };
        let fail_closed = options.fail_closed.or(trait_fail_closed);
        let mut method = Method {
            item,
            options,
            role,
            form,
            receiver,
            args,
            cfgs,
            error_type: None,
            read_value: None,
            detached,
            fail_closed,
        };
        method.error_type = method.output().and_then(result_error_type);
        method.read_value = method.output().map(read_value_type);
        Ok(method)
    }
}

fn receiver_kind(receiver: &syn::Receiver, role: Role) -> syn::Result<Receiver> {
    if receiver.reference.is_some() || matches!(&*receiver.ty, Type::Reference(_)) {
        if receiver.mutability.is_some()
            || matches!(&*receiver.ty, Type::Reference(r) if r.mutability.is_some())
        {
            return Err(syn::Error::new_spanned(
                receiver,
                "`&mut self` cannot be dual-written: the wrapper shares both stores between its clones and the worker; take `&self` and keep mutable state behind a pool or a lock",
            ));
        }
        return Ok(Receiver::Ref);
    }
    if is_arc_self(&receiver.ty) {
        return Ok(Receiver::Arc);
    }
    if role == Role::Inherit {
        return Ok(Receiver::Ref);
    }
    Err(syn::Error::new_spanned(
        receiver,
        "this receiver cannot be dual-written; expected `&self`, `self: &Self` or `self: Arc<Self>` (the wrapper cannot hand out its stores by value)",
    ))
}

fn is_arc_self(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    if last.ident != "Arc" {
        return false;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    matches!(args.args.first(), Some(GenericArgument::Type(Type::Path(inner))) if inner.path.is_ident("Self"))
}

/// `impl Future<Output = T> (+ ..)` gives `T`.
fn impl_future_output(output: &ReturnType) -> Option<&Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let Type::ImplTrait(impl_trait) = &**ty else {
        return None;
    };
    impl_trait.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let last = bound.path.segments.last()?;
        if last.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(&assoc.ty),
            _ => None,
        })
    })
}

/// A method that `#[async_trait]` already rewrote: it has the `'async_trait`
/// lifetime in its generics. That lifetime carries the span of the
/// `#[async_trait]` attribute, which is where the error belongs.
fn expanded_async_trait(item: &TraitItemFn) -> Option<Span> {
    item.sig
        .generics
        .lifetimes()
        .find(|lifetime| lifetime.lifetime.ident == "async_trait")
        .map(|lifetime| lifetime.lifetime.span())
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

/// Whether `-> impl Future<..> + Send` names `Send`.
fn returns_send_future(output: &ReturnType) -> bool {
    let ReturnType::Type(_, ty) = output else {
        return false;
    };
    let Type::ImplTrait(bounds) = &**ty else {
        return false;
    };
    bounds.bounds.iter().any(|bound| match bound {
        TypeParamBound::Trait(bound) => bound
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Send"),
        _ => false,
    })
}
