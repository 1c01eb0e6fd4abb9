//! The options written inside `#[dual_write(...)]`, on the trait and on its
//! methods.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{Attribute, Expr, Ident, LitInt, LitStr, Path};

const TRAIT_OPTIONS: &str =
    "`namespace = \"name\"`, `version = 1`, `op = EnumName`, `crate = path` or `fail_closed`";
const METHOD_OPTIONS: &str = "`read`, `write`, `skip`, `key = <expression>`, `compare = <path>`, `normalize = <path>`, `compare_errors = <path>`, `detached`, `report_values`, `delivery = sync|journaled`, `fail_closed`, `idempotent = false` or `follower = <path>`";

/// Options on the trait: `#[dual_write(namespace = "orders", version = 2)]`.
#[derive(Default)]
pub(crate) struct TraitOptions {
    pub(crate) namespace: Option<LitStr>,
    pub(crate) version: Option<u32>,
    pub(crate) op: Option<Ident>,
    pub(crate) krate: Option<Path>,
    /// Every write method returns the queue's refusal as its error.
    pub(crate) fail_closed: Option<Span>,
}

/// What a method does, as stated by an option.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RoleOption {
    Read,
    Write,
    Skip,
}

impl RoleOption {
    pub(crate) fn name(self) -> &'static str {
        match self {
            RoleOption::Read => "read",
            RoleOption::Write => "write",
            RoleOption::Skip => "skip",
        }
    }
}

/// Options on a method: `#[dual_write(write, key = order.id)]`.
#[derive(Default)]
pub(crate) struct MethodOptions {
    /// The role option and the token that stated it.
    pub(crate) role: Option<(RoleOption, Span)>,
    pub(crate) key: Option<Expr>,
    pub(crate) compare: Option<Path>,
    /// For reads: `fn(&T) -> U`, compare what it makes of each value.
    pub(crate) normalize: Option<Path>,
    /// For reads returning `Result<T, E>`: `fn(&E, &E) -> bool`, whether two
    /// errors agree.
    pub(crate) compare_errors: Option<Path>,
    /// For reads: compare after the caller has its result.
    pub(crate) detached: Option<Span>,
    /// For reads: put both stores' results in mismatch reports.
    pub(crate) report_values: Option<Span>,
    /// `delivery = sync` or `delivery = journaled`: the write's delivery,
    /// whatever the wrapper's default.
    pub(crate) delivery: Option<Ident>,
    /// The write returns the queue's refusal as its error.
    pub(crate) fail_closed: Option<Span>,
    /// `idempotent = false`: a replay without an operation id could apply
    /// the write twice. The value and the option's span.
    pub(crate) idempotent: Option<(bool, Span)>,
    /// `follower = path`: builds the follower's operation from the arguments
    /// and the authoritative result.
    pub(crate) follower: Option<Path>,
    /// The attribute itself, for errors about the whole set of options.
    pub(crate) span: Option<Span>,
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    meta: &ParseNestedMeta,
    name: &str,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(meta.error(format_args!("`{name}` is given twice; give it once")));
    }
    *slot = Some(value);
    Ok(())
}

fn option_name(meta: &ParseNestedMeta) -> String {
    let path = &meta.path;
    path.get_ident().map_or_else(
        || quote::quote!(#path).to_string().replace(" ", ""),
        |ident| ident.to_string(),
    )
}

impl TraitOptions {
    pub(crate) fn parse(args: TokenStream) -> syn::Result<Self> {
        let mut options = TraitOptions::default();
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("namespace") {
                let value: LitStr = meta.value()?.parse()?;
                if value.value().trim().is_empty() {
                    return Err(syn::Error::new(
                        value.span(),
                        "`namespace` must not be empty",
                    ));
                }
                set_once(&mut options.namespace, value, &meta, "namespace")
            } else if meta.path.is_ident("version") {
                let value: LitInt = meta.value()?.parse()?;
                let version = value.base10_parse::<u32>().map_err(|_| {
                    syn::Error::new(
                        value.span(),
                        "`version` must be a whole number from 1 to 4294967295",
                    )
                })?;
                if version == 0 {
                    return Err(syn::Error::new(value.span(), "`version` starts at 1"));
                }
                set_once(&mut options.version, version, &meta, "version")
            } else if meta.path.is_ident("op") {
                let value: Ident = meta.value()?.parse()?;
                set_once(&mut options.op, value, &meta, "op")
            } else if meta.path.is_ident("crate") {
                let value: Path = meta.value()?.parse()?;
                set_once(&mut options.krate, value, &meta, "crate")
            } else if meta.path.is_ident("fail_closed") {
                let span = syn::spanned::Spanned::span(&meta.path);
                set_once(&mut options.fail_closed, span, &meta, "fail_closed")
            } else if is_method_option(&meta) {
                Err(meta.error(format_args!(
                    "`{}` is a method option; on the trait, the options are {TRAIT_OPTIONS}",
                    option_name(&meta)
                )))
            } else {
                Err(meta.error(format_args!(
                    "unknown option `{}`; on the trait, the options are {TRAIT_OPTIONS}",
                    option_name(&meta)
                )))
            }
        });
        parser.parse2(args)?;
        Ok(options)
    }
}

fn is_method_option(meta: &ParseNestedMeta) -> bool {
    [
        "read",
        "write",
        "skip",
        "key",
        "compare",
        "normalize",
        "compare_errors",
        "detached",
        "report_values",
        "delivery",
        "idempotent",
        "follower",
    ]
    .iter()
    .any(|name| meta.path.is_ident(name))
}

impl MethodOptions {
    /// Parses the options of the method-level attributes, which it finds by name.
    pub(crate) fn from_attrs(attrs: &[Attribute]) -> syn::Result<Self> {
        let mut options = MethodOptions::default();
        let mut errors: Option<syn::Error> = None;
        for attr in attrs.iter().filter(|attr| is_dual_write_attr(attr)) {
            if let Err(error) = options.parse_attr(attr) {
                crate::valid::combine(&mut errors, error);
            }
        }
        match errors {
            Some(errors) => Err(errors),
            None => Ok(options),
        }
    }

    /// Parses the options given to the attribute when it stands alone on a
    /// method (the trait-level attribute was removed at cutover).
    pub(crate) fn parse_standalone(args: TokenStream) -> syn::Result<Self> {
        let mut options = MethodOptions {
            span: Some(Span::call_site()),
            ..MethodOptions::default()
        };
        syn::meta::parser(|meta| options.parse_one(meta)).parse2(args)?;
        Ok(options)
    }

    fn parse_attr(&mut self, attr: &Attribute) -> syn::Result<()> {
        use syn::spanned::Spanned;
        if matches!(attr.meta, syn::Meta::Path(_)) {
            return Err(syn::Error::new_spanned(
                attr,
                format!("`#[dual_write]` on a method needs options: {METHOD_OPTIONS}, e.g. `#[dual_write(write, key = id)]`"),
            ));
        }
        self.span.get_or_insert(attr.span());
        attr.parse_nested_meta(|meta| self.parse_one(meta))
    }

    fn parse_one(&mut self, meta: ParseNestedMeta) -> syn::Result<()> {
        use syn::spanned::Spanned;
        let role = if meta.path.is_ident("read") {
            Some(RoleOption::Read)
        } else if meta.path.is_ident("write") {
            Some(RoleOption::Write)
        } else if meta.path.is_ident("skip") {
            Some(RoleOption::Skip)
        } else {
            None
        };
        if let Some(role) = role {
            if meta.input.peek(syn::Token![=]) || meta.input.peek(syn::token::Paren) {
                return Err(meta.error(format_args!(
                    "`{}` takes no value; write it alone",
                    role.name()
                )));
            }
            if let Some((earlier, _)) = self.role {
                let message = if earlier == role {
                    format!("`{}` is given twice; give it once", role.name())
                } else {
                    format!(
                        "a method is either `read`, `write` or `skip`; this one already says `{}`",
                        earlier.name()
                    )
                };
                return Err(meta.error(message));
            }
            self.role = Some((role, meta.path.span()));
            Ok(())
        } else if meta.path.is_ident("key") {
            let value: Expr = meta.value()?.parse()?;
            set_once(&mut self.key, value, &meta, "key")
        } else if meta.path.is_ident("compare") {
            let value: Path = meta.value()?.parse()?;
            set_once(&mut self.compare, value, &meta, "compare")
        } else if meta.path.is_ident("normalize") {
            let value: Path = meta.value()?.parse()?;
            set_once(&mut self.normalize, value, &meta, "normalize")
        } else if meta.path.is_ident("compare_errors") {
            let value: Path = meta.value()?.parse()?;
            set_once(&mut self.compare_errors, value, &meta, "compare_errors")
        } else if meta.path.is_ident("detached") || meta.path.is_ident("report_values") {
            let name = if meta.path.is_ident("detached") {
                "detached"
            } else {
                "report_values"
            };
            if meta.input.peek(syn::Token![=]) || meta.input.peek(syn::token::Paren) {
                return Err(meta.error(format_args!("`{name}` takes no value; write it alone")));
            }
            let slot = if name == "detached" {
                &mut self.detached
            } else {
                &mut self.report_values
            };
            set_once(slot, meta.path.span(), &meta, name)
        } else if meta.path.is_ident("delivery") {
            let value: Ident = meta.value()?.parse()?;
            if value != "sync" && value != "journaled" {
                return Err(syn::Error::new(
                    value.span(),
                    format!("unknown delivery `{value}`; expected `delivery = sync` or `delivery = journaled`"),
                ));
            }
            set_once(&mut self.delivery, value, &meta, "delivery")
        } else if meta.path.is_ident("fail_closed") {
            set_once(
                &mut self.fail_closed,
                meta.path.span(),
                &meta,
                "fail_closed",
            )
        } else if meta.path.is_ident("idempotent") {
            let value: syn::LitBool = meta.value()?.parse().map_err(|error| {
                syn::Error::new(
                    error.span(),
                    "`idempotent` takes `true` or `false`: `idempotent = false` declares a write that must not be replayed without its operation id",
                )
            })?;
            set_once(
                &mut self.idempotent,
                (value.value, meta.path.span()),
                &meta,
                "idempotent",
            )
        } else if meta.path.is_ident("follower") {
            let value: Path = meta.value()?.parse()?;
            set_once(&mut self.follower, value, &meta, "follower")
        } else if ["namespace", "version", "op", "crate"]
            .iter()
            .any(|name| meta.path.is_ident(name))
        {
            Err(meta.error(format_args!(
                "`{}` is a trait option; on a method, the options are {METHOD_OPTIONS}",
                option_name(&meta)
            )))
        } else {
            Err(meta.error(format_args!(
                "unknown option `{}`; on a method, the options are {METHOD_OPTIONS}",
                option_name(&meta)
            )))
        }
    }
}

/// `#[dual_write(...)]` or `#[dualwrite::dual_write(...)]`.
pub(crate) fn is_dual_write_attr(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|segment| segment.ident == "dual_write")
}

/// `#[async_trait]`, `#[async_trait::async_trait]` or `#[async_trait(?Send)]`.
pub(crate) fn is_async_trait_attr(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|segment| segment.ident == "async_trait")
}
