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

/// The argument shapes that need an owned form or a payload.
const SHAPES: &str = r#"
    pub trait Accounts<T>: Send + Sync + CloneDb {
        type Id;
        async fn register(&self, form: &Register<'_>, maybe: Option<&Register<'_>>) -> Result<(), E>;
        async fn set_nickname<'o>(&self, user: &str, nickname: Option<&'o str>, tag: Option<&Tag>) -> Result<(), E>;
        async fn set_scores(&self, scores: Option<&[u32]>, aliases: &[&str], note: &Option<String>) -> Result<(), E>;
        async fn update_bio(&self, bio: Cow<'_, str>, flags: Cow<'_, [u8]>) -> Result<(), E>;
        async fn put(&self, id: Self::Id, value: T) -> Result<(), E>;
        async fn find_by_nickname(&self, nickname: Option<&str>) -> Result<Vec<String>, E>;
    }
"#;

#[test]
fn argument_shapes_expand_without_errors_and_deterministically() {
    let first = expand_str("", SHAPES);
    assert!(!first.contains("compile_error"), "{first}");
    // The operation enum carries `Self::Id` as its parameter `Id`.
    assert!(first.contains("pub enum AccountsOp < T , Id >"), "{first}");
    for _ in 0..3 {
        assert_eq!(first, expand_str("", SHAPES));
    }
}

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
        (
            "",
            "trait T { #[dual_write(key)] fn put(&self) -> Result<(), E>; }",
        ),
        (
            "",
            "trait T { #[dual_write(key = )] fn put(&self) -> Result<(), E>; }",
        ),
        (
            "",
            "trait T { #[dual_write(compare = 1)] fn get(&self) -> u8; }",
        ),
        (
            "",
            "trait T { #[dual_write = 1] fn put(&self) -> Result<(), E>; }",
        ),
        (
            "",
            "trait T { #[dual_write(write)] fn put(&self, x: &mut u8) -> Result<(), E>; }",
        ),
        (
            "",
            "trait T { #[dual_write(write)] fn r#put(&self, r#x: u8) -> Result<(), E>; }",
        ),
        (
            "",
            "trait T { #[dual_write(write)] fn put(&self, (a, b): (u8, u8)) -> Result<(), E>; }",
        ),
        (
            "",
            "trait T { #[dual_write(write)] fn put(&self, _: u8) -> Result<(), E>; }",
        ),
        ("", "trait T { fn _(&self); }"),
        ("", "trait T { fn put(self: Box<Self>) -> Result<(), E>; }"),
        (
            "",
            "trait T { fn put(self: Pin<&mut Self>) -> Result<(), E>; }",
        ),
        ("", "trait T { fn put(&self, ...) -> Result<(), E>; }"),
        ("", "trait T { fn put(&self) -> impl Future; }"),
        ("", "trait T { fn put(&self) -> impl Future<Output = ()>; }"),
        (
            "",
            "unsafe trait T { unsafe fn put(&self) -> Result<(), E>; }",
        ),
        ("", "trait T { const fn put(&self) -> Result<(), E>; }"),
        (
            "",
            "trait T { extern \"C\" fn put(&self) -> Result<(), E>; }",
        ),
        (
            "",
            "trait T { #[dual_write(write, key = |x| y)] fn put(&self, id: u8) -> Result<(), E>; }",
        ),
    ];
    for (args, input) in cases {
        let (Ok(arg_tokens), Ok(input_tokens)) =
            (args.parse::<TokenStream>(), input.parse::<TokenStream>())
        else {
            continue;
        };
        let outcome = std::panic::catch_unwind(|| dual_write(arg_tokens, input_tokens).to_string());
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
