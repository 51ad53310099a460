//! `#[tool]`: checks an `async fn` and generates its `mcpmqtt::Tool` impl.
//!
//! # What it generates
//!
//! For `async fn crawl_site(ctx: &CallContext, url: String) -> Result<Report, ToolError>`:
//!
//! ```text
//! <the fn, with the doc comments and #[arg] of its arguments removed>
//!
//! pub struct crawl_site {}                  // the type namespace: coexists with the fn
//!
//! const _: () = {
//!     #[derive(Deserialize, JsonSchema)] #[serde(deny_unknown_fields)]
//!     struct __ToolArgs<__A0> { /// The first URL.
//!                               url: __A0 }
//!
//!     fn __tool<__A0: ToolArgument, __O: ToolOutput, __E: ToolErrorType, __F, __Fut>(
//!         output_schema: Option<Value>, call: __F) -> ToolDef
//!     where __F: Fn(CallContext, __A0) -> __Fut + Copy + Send + Sync + 'static,
//!           __Fut: Future<Output = Result<__O, __E>> + Send + 'static
//!     { ToolDef::builder("crawl_site")...handler(...).build().expect(...) }
//!
//!     impl Tool for crawl_site {
//!         fn definition() -> ToolDef {
//!             __tool::<String, Report, ToolError, _, _>(
//!                 <Report's output schema, if it has one>,
//!                 |ctx, a0| async move { crawl_site(&ctx, a0).await })
//!         }
//!     }
//! };
//! ```
//!
//! A `db: State<Db>` argument is not a field of `__ToolArgs`: it becomes a
//! type parameter `__S0: StateType` of `__tool` (`Db` in the turbofish, with
//! the user's span), a `.needs_state::<__S0>()` on the builder (so the
//! server's `build()` checks it is registered), and a
//! `let __s0 = state::<__S0>(&__ctx)?;` in the handler, passed in its place.
//!
//! `ToolArgument`, `ToolOutput`, `ToolErrorType` and `StateType` live in
//! `mcpmqtt::__private`, each with its `#[diagnostic::on_unimplemented]`.
//!
//! Why the generic `__tool`: every requirement on the user's types is then a
//! bound of `__tool`, checked at exactly one place, the turbofish, where each
//! type is written with the span of the user's own type. A type that is not
//! `Deserialize` gives one error, on that argument's type, with the
//! `on_unimplemented` message; deriving `Deserialize` on a struct holding the
//! concrete types would instead add an error from each derive.

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::visit::Visit;
use syn::{
    Attribute, Expr, ExprLit, FnArg, GenericArgument, Ident, Item, ItemFn, Lit, LitStr, Meta, Pat, PathArguments,
    ReturnType, Signature, Type, TypeReference,
};

use crate::attr::{ArgAttr, ToolAttr};
use crate::errors::Errors;
use crate::names::{name_problem, shown_name};

/// Expands `#[tool(attr)] item`, or says everything that is wrong with it.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut func = parse_fn(item)?;
    // Both are checked, so that the errors of both are reported at once.
    let (attr, sig) = Errors::both(ToolAttr::parse(attr), analyze_signature(&func.sig))?;
    let tool = Tool::new(attr, sig, &func)?;
    strip_argument_attributes(&mut func);
    Ok(tool.generate(&func))
}

/// What is emitted when `expand` fails: the errors, the item as it was
/// (less the argument attributes only `#[tool]` understands, which rustc
/// would reject) so that the function itself still resolves, and, for a free
/// function, a stand-in registration type so that `.tool::<name>()` does not
/// add "cannot find type" errors.
pub(crate) fn error_output(error: syn::Error, item: TokenStream) -> TokenStream {
    let mut out = error.to_compile_error();
    match syn::parse2::<ItemFn>(item.clone()) {
        Ok(mut func) => {
            strip_argument_attributes(&mut func);
            func.to_tokens(&mut out);
            // A method would put a struct inside an `impl` block: no stand-in.
            if func.sig.receiver().is_none() {
                let ident = &func.sig.ident;
                let registration = registration_struct(&func);
                out.extend(quote! {
                    #registration
                    impl ::mcpmqtt::Tool for #ident {
                        fn definition() -> ::mcpmqtt::ToolDef {
                            ::core::unreachable!("this `#[tool]` function did not compile")
                        }
                    }
                });
            }
        }
        Err(_) => out.extend(item),
    }
    out
}

fn parse_fn(item: TokenStream) -> syn::Result<ItemFn> {
    match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(func)) => Ok(func),
        _ => Err(syn::Error::new_spanned(
            item_head(item),
            "`#[tool]` applies to an `async fn`: write `#[tool] async fn name(...) { ... }`",
        )),
    }
}

/// The first two tokens of an item after its attributes and visibility
/// (`struct Ping`, `impl Crawler`): where to report that it is not a
/// function, rather than under the whole item.
fn item_head(item: TokenStream) -> TokenStream {
    use proc_macro2::{Delimiter, TokenTree};
    let mut tokens = item.clone().into_iter().peekable();
    loop {
        match tokens.peek() {
            // `#[...]`, or `#![...]`
            Some(TokenTree::Punct(p)) if p.as_char() == '#' => {
                tokens.next();
                if matches!(tokens.peek(), Some(TokenTree::Punct(p)) if p.as_char() == '!') {
                    tokens.next();
                }
                tokens.next();
            }
            // `pub`, `pub(crate)`
            Some(TokenTree::Ident(i)) if i == "pub" => {
                tokens.next();
                if matches!(tokens.peek(), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis) {
                    tokens.next();
                }
            }
            _ => break,
        }
    }
    let head: TokenStream = tokens.take(2).collect();
    if head.is_empty() {
        item
    } else {
        head
    }
}

/// Removes the doc comments and `#[arg]` of the arguments: rustc rejects doc
/// comments on function parameters, and `#[arg]` is only for the macro.
fn strip_argument_attributes(func: &mut ItemFn) {
    for input in &mut func.sig.inputs {
        let attrs = match input {
            FnArg::Typed(pat_type) => &mut pat_type.attrs,
            FnArg::Receiver(receiver) => &mut receiver.attrs,
        };
        attrs.retain(|a| !is_helper_attribute(a));
    }
}

fn is_helper_attribute(attr: &Attribute) -> bool {
    attr.path().is_ident("doc") || attr.path().is_ident("arg")
}

/// One parameter of the tool function.
enum Param {
    /// `ctx: &CallContext`: passed through, not part of the schema.
    Context,
    /// `db: State<Db>`: taken from the server's registered state, not part
    /// of the schema. Holds the state's type (`Db`), with the user's spans.
    State(Box<Type>),
    /// An argument read from the call's JSON arguments.
    Arg(Box<Arg>),
}

/// An argument read from JSON.
struct Arg {
    /// Its binding (and the field of the generated arguments struct).
    ident: Ident,
    /// The `Option` and `Vec` its type is wrapped in, outermost first.
    wrappers: Vec<Wrapper>,
    /// Its type inside those wrappers, with the user's spans: the type that
    /// is checked, so that an error names (and points at) `Window` rather
    /// than `Option<Window>`.
    inner: Type,
    /// Its doc comments: the description in the schema.
    docs: Vec<Attribute>,
    /// `#[arg(rename = "...")]`.
    rename: Option<LitStr>,
}

/// How the function's result becomes the call's result.
enum Output {
    /// No return type, or `()`: the result is `null`.
    Unit,
    /// A type that is not a `Result`: serialised as it is.
    Plain(Box<Type>),
    /// `Result<T, E>` (or `Result<T>` of an alias): `Ok` is serialised, `Err`
    /// converted into a `ToolError`.
    Result { ok: Box<Type>, err: Option<Box<Type>> },
    /// A `Result` whose type arguments cannot be read (a non-generic alias):
    /// converted by `IntoToolResult` without an output schema.
    Opaque,
}

struct SignatureInfo {
    params: Vec<Param>,
    /// The context parameter's type, if the function takes one.
    context: Option<Type>,
    output: Output,
}

/// Checks everything about the signature that can be checked without types.
fn analyze_signature(sig: &Signature) -> syn::Result<SignatureInfo> {
    let mut errors = Errors::default();
    let ident = &sig.ident;
    if let Some(constness) = &sig.constness {
        // rustc reports `const async fn` itself; a `const fn` that is not
        // async is reported below as not async.
        if sig.asyncness.is_none() {
            errors.push(syn::Error::new_spanned(
                constness,
                format!("tool functions must be `async fn`, not `const fn`: write `async fn {ident}(...)`"),
            ));
        }
    } else if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            format!("tool functions must be `async fn`: write `async fn {ident}(...)`"),
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(
            unsafety,
            "tool functions cannot be `unsafe`: the server calls them with whatever arguments arrive; remove `unsafe` (an `unsafe` block inside is fine)",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "tool functions cannot be `extern`: remove the ABI",
        ));
    }
    if !sig.generics.params.is_empty() {
        let only_lifetimes = sig
            .generics
            .params
            .iter()
            .all(|p| matches!(p, syn::GenericParam::Lifetime(_)));
        let message = if only_lifetimes {
            "tool functions cannot have lifetime parameters: take the context as `ctx: &CallContext` and every other argument by value"
        } else {
            "tool functions cannot be generic: the argument and result types must be concrete so that their JSON schemas are known; remove the type parameters"
        };
        errors.push(syn::Error::new_spanned(&sig.generics, message));
    } else if let Some(where_clause) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            where_clause,
            "tool functions cannot have a `where` clause: remove it",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            "tool functions cannot be variadic: remove `...`",
        ));
    }

    let mut params = Vec::new();
    // The context's argument name and type.
    let mut context: Option<(String, Type)> = None;
    // The JSON property names so far, with the arguments that have them.
    let mut json_names: Vec<(String, Ident)> = Vec::new();
    // The state arguments so far: their names and types, as written.
    let mut states: Vec<(String, String)> = Vec::new();
    for input in &sig.inputs {
        let pat_type = match input {
            FnArg::Receiver(receiver) => {
                errors.push(syn::Error::new_spanned(
                    receiver,
                    format!("tool functions cannot take `self`: write `{ident}` as a free `async fn`, outside the `impl` block (it may call methods from there)"),
                ));
                continue;
            }
            FnArg::Typed(pat_type) => pat_type,
        };
        let mut arg_attr = ArgAttr::default();
        let mut docs = Vec::new();
        for attr in &pat_type.attrs {
            if attr.path().is_ident("doc") {
                docs.push(attr.clone());
            } else if attr.path().is_ident("arg") {
                if let Err(e) = arg_attr.add(attr) {
                    errors.push(e);
                }
            } else if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
                errors.push(syn::Error::new_spanned(
                    attr,
                    "`#[cfg]` is not supported on the arguments of a tool: the argument would leave the function but not its JSON schema",
                ));
            }
        }

        // The argument's name, for the fixes the messages suggest.
        let arg_name = match &*pat_type.pat {
            Pat::Ident(p) => p.ident.unraw().to_string(),
            _ => "ctx".to_owned(),
        };
        match context_kind(&pat_type.ty, &arg_name) {
            Some(ContextKind::Shared(reference)) => {
                // A declared lifetime is already reported with the generics.
                let lifetime = reference.lifetime.as_ref().filter(|l| l.ident != "_");
                if let Some(lifetime) = lifetime.filter(|_| sig.generics.params.is_empty()) {
                    errors.push(syn::Error::new_spanned(
                        lifetime,
                        "write `&CallContext` without a lifetime: the context is lent for the call only",
                    ));
                }
                if let Some((first, _)) = &context {
                    errors.push(syn::Error::new_spanned(
                        pat_type,
                        format!("the tool already takes the context as `{first}`: remove this second context argument"),
                    ));
                } else {
                    context = Some((arg_name, (*pat_type.ty).clone()));
                }
                if let Some(attr) = pat_type.attrs.iter().find(|a| a.path().is_ident("arg")) {
                    errors.push(syn::Error::new_spanned(
                        attr,
                        "`#[arg]` applies to the arguments read from JSON, not to the context: remove it",
                    ));
                }
                params.push(Param::Context);
                continue;
            }
            Some(ContextKind::Mutable(reference)) => {
                errors.push(syn::Error::new_spanned(
                    reference,
                    format!(
                        "take the context by shared reference: `{arg_name}: &CallContext` (its methods take `&self`)"
                    ),
                ));
                continue;
            }
            Some(ContextKind::ByValue) => {
                errors.push(syn::Error::new_spanned(
                    &pat_type.ty,
                    format!("take the context by reference: `{arg_name}: &CallContext`"),
                ));
                continue;
            }
            Some(ContextKind::Wrapped) => {
                errors.push(syn::Error::new_spanned(
                    &pat_type.ty,
                    format!(
                        "`{}` cannot be the context: take it as `{arg_name}: &CallContext`, lent for the call (it is `Clone`: clone it in the body to keep it longer)",
                        type_to_string(&pat_type.ty)
                    ),
                ));
                continue;
            }
            Some(ContextKind::Lookalike) => {
                errors.push(syn::Error::new_spanned(
                    &pat_type.ty,
                    format!(
                        "`{}` is not the call context: write `{arg_name}: &CallContext`, with `mcpmqtt::CallContext` (the macro recognises the context by that type name)",
                        type_to_string(&pat_type.ty)
                    ),
                ));
                continue;
            }
            None => {}
        }

        match state_kind(&pat_type.ty) {
            Some(StateKind::Typed(state_type)) => {
                let shown = type_to_string(state_type);
                if let Some((first, _)) = states.iter().find(|(_, ty)| *ty == shown) {
                    errors.push(syn::Error::new_spanned(
                        &pat_type.ty,
                        format!("the tool already takes `State<{shown}>` as `{first}`: remove this second one (both would be the same value)"),
                    ));
                    continue;
                }
                if let Some(attr) = pat_type.attrs.iter().find(|a| a.path().is_ident("arg")) {
                    errors.push(syn::Error::new_spanned(
                        attr,
                        "`#[arg]` applies to the arguments read from JSON, not to a `State`: remove it",
                    ));
                }
                states.push((arg_name, shown));
                params.push(Param::State(Box::new(state_type.clone())));
                continue;
            }
            Some(StateKind::Untyped(path)) => {
                errors.push(syn::Error::new_spanned(
                    path,
                    format!("`State` needs the type of the state: write `{arg_name}: State<T>`, where `T` is the type of the value registered with `.state(...)` on the server builder (for example `db: State<Db>`); if `State` is a type of your own, import it under another name"),
                ));
                continue;
            }
            Some(StateKind::Borrowed(reference, state_type)) => {
                let ty = state_type.map_or_else(|| "T".to_owned(), type_to_string);
                errors.push(syn::Error::new_spanned(
                    reference,
                    format!("take the state by value: `{arg_name}: State<{ty}>` (it is an `Arc` inside: cheap to clone, and it dereferences to `{ty}`)"),
                ));
                continue;
            }
            Some(StateKind::Nested(state, state_type)) => {
                let ty = type_to_string(state_type);
                errors.push(syn::Error::new_spanned(
                    state,
                    format!("`State<{ty}>` must be the whole type of its argument: write `{arg_name}: State<{ty}>` (a tool always gets its state: the server's `build()` fails if no `{ty}` was registered)"),
                ));
                continue;
            }
            None => {}
        }

        let ident = match &*pat_type.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
            other => {
                errors.push(syn::Error::new_spanned(
                    other,
                    format!(
                        "use a plain identifier for this argument: its name is the argument's JSON property name (write `name: {}` and destructure it in the body)",
                        type_to_string(&pat_type.ty)
                    ),
                ));
                continue;
            }
        };
        if let Some(e) = argument_type_problem(&pat_type.ty) {
            errors.push(e);
            continue;
        }
        let json_name = match &arg_attr.rename {
            Some(lit) => lit.value(),
            None => ident.unraw().to_string(),
        };
        if let Some((_, other)) = json_names.iter().find(|(name, _)| *name == json_name) {
            let culprit: &dyn ToTokens = match &arg_attr.rename {
                Some(lit) => lit,
                None => &ident,
            };
            errors.push(syn::Error::new_spanned(
                culprit,
                format!(
                    "`{}` and `{}` both have the JSON property name `{json_name}`: give one of them another with `#[arg(rename = \"...\")]`",
                    other.unraw(),
                    ident.unraw()
                ),
            ));
            continue;
        }
        json_names.push((json_name, ident.clone()));
        let (wrappers, inner) = peel(&pat_type.ty);
        params.push(Param::Arg(Box::new(Arg {
            ident,
            wrappers,
            inner: inner.clone(),
            docs,
            rename: arg_attr.rename,
        })));
    }

    let output = errors.take(analyze_output(&sig.output));
    errors.finish()?;
    Ok(SignatureInfo {
        params,
        context: context.map(|(_, ty)| ty),
        output: output.unwrap_or(Output::Unit),
    })
}

enum ContextKind<'a> {
    /// `&CallContext`: right.
    Shared(&'a TypeReference),
    /// `&mut CallContext`.
    Mutable(&'a TypeReference),
    /// `CallContext`.
    ByValue,
    /// `CallContext` inside another type: `Arc<CallContext>`, `Option<&CallContext>`.
    Wrapped,
    /// Meant as the context, but not `CallContext`: a reference to a type
    /// named `...Context` or named `ctx`, or a `...Context` named `ctx`.
    Lookalike,
}

/// Whether a type is the context: a path ending in `CallContext`, by
/// reference or not; or looks meant to be.
fn context_kind<'a>(ty: &'a Type, arg_name: &str) -> Option<ContextKind<'a>> {
    match ungroup(ty) {
        Type::Reference(reference) if is_call_context(&reference.elem) => {
            return Some(if reference.mutability.is_some() {
                ContextKind::Mutable(reference)
            } else {
                ContextKind::Shared(reference)
            })
        }
        other if is_call_context(other) => return Some(ContextKind::ByValue),
        _ => {}
    }
    #[derive(Default)]
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_path_segment(&mut self, segment: &'ast syn::PathSegment) {
            self.0 |= segment.ident == "CallContext";
            syn::visit::visit_path_segment(self, segment);
        }
    }
    let mut finder = Finder::default();
    finder.visit_type(ty);
    if finder.0 {
        return Some(ContextKind::Wrapped);
    }
    let named_like_context = |ty: &Type| match ungroup(ty) {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident.to_string().ends_with("Context")),
        _ => false,
    };
    // A reference is never a valid argument, so this only picks the message;
    // an owned `...Context` could be a JSON argument unless it is `ctx`.
    let name = arg_name.trim_start_matches('_');
    let lookalike = match ungroup(ty) {
        // Not `context`: `context: &str` is more likely meant as a JSON string.
        Type::Reference(reference) => matches!(name, "ctx" | "cx") || named_like_context(&reference.elem),
        other => matches!(name, "ctx" | "cx") && named_like_context(other),
    };
    lookalike.then_some(ContextKind::Lookalike)
}

fn is_call_context(ty: &Type) -> bool {
    match ungroup(ty) {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "CallContext" && s.arguments.is_none()),
        _ => false,
    }
}

enum StateKind<'a> {
    /// `State<T>`: right; holds `T`.
    Typed(&'a Type),
    /// `State`, or `State<'a>`: no type of state.
    Untyped(&'a syn::Path),
    /// `&State<T>` or `&mut State<T>`; `T` if there is one.
    Borrowed(&'a TypeReference, Option<&'a Type>),
    /// `State<T>` inside another type (`Option<State<T>>`): the `State<T>`
    /// and its `T`.
    Nested(&'a syn::TypePath, &'a Type),
}

/// Whether a type is a state argument, or looks meant to be one. `State` is
/// recognised by name: written alone (imported), or as `mcpmqtt::State`.
fn state_kind(ty: &Type) -> Option<StateKind<'_>> {
    match ungroup(ty) {
        Type::Path(path) if is_state_path(path) => Some(match state_type(path) {
            Some(inner) => StateKind::Typed(inner),
            None => StateKind::Untyped(&path.path),
        }),
        Type::Reference(reference) => match ungroup(&reference.elem) {
            Type::Path(path) if is_state_path(path) => Some(StateKind::Borrowed(reference, state_type(path))),
            _ => None,
        },
        _ => {
            // Only a `State` with a type argument counts when nested: a JSON
            // argument may well be a `Vec<State>` of the user's own `State`.
            struct Finder<'a>(Option<StateKind<'a>>);
            impl<'a> Visit<'a> for Finder<'a> {
                fn visit_type_path(&mut self, path: &'a syn::TypePath) {
                    if self.0.is_none() && is_state_path(path) {
                        if let Some(inner) = state_type(path) {
                            self.0 = Some(StateKind::Nested(path, inner));
                            return;
                        }
                    }
                    syn::visit::visit_type_path(self, path);
                }
            }
            let mut finder = Finder(None);
            finder.visit_type(ty);
            finder.0
        }
    }
}

/// `State` or `mcpmqtt::State` (`::mcpmqtt::State`), with any arguments.
fn is_state_path(path: &syn::TypePath) -> bool {
    if path.qself.is_some() {
        return false;
    }
    let segments = &path.path.segments;
    match segments.len() {
        1 => path.path.leading_colon.is_none() && segments[0].ident == "State",
        2 => segments[0].ident == "mcpmqtt" && segments[0].arguments.is_none() && segments[1].ident == "State",
        _ => false,
    }
}

/// The `T` of `State<T>`, when it has exactly one type argument.
fn state_type(path: &syn::TypePath) -> Option<&Type> {
    let PathArguments::AngleBracketed(args) = &path.path.segments.last()?.arguments else {
        return None;
    };
    match (args.args.len(), args.args.first()) {
        (1, Some(GenericArgument::Type(ty))) => Some(ty),
        _ => None,
    }
}

fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => ungroup(&g.elem),
        Type::Paren(p) => ungroup(&p.elem),
        other => other,
    }
}

/// A standard container whose `Deserialize` and `JsonSchema` impls need
/// only those of its element.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Wrapper {
    Option,
    Vec,
}

impl Wrapper {
    fn wrap(self, inner: TokenStream) -> TokenStream {
        match self {
            Wrapper::Option => quote!(::core::option::Option<#inner>),
            Wrapper::Vec => quote!(::std::vec::Vec<#inner>),
        }
    }
}

/// Splits `Option<Vec<T>>` into `[Option, Vec]` and `T`. Only paths that
/// name the standard types are peeled: `Option`, `Vec`, or a path to them
/// through `std`, `core` or `alloc`.
fn peel(ty: &Type) -> (Vec<Wrapper>, &Type) {
    let mut wrappers = Vec::new();
    let mut ty = ty;
    while let Type::Path(path) = ungroup(ty) {
        if path.qself.is_some() {
            break;
        }
        let segments = &path.path.segments;
        let Some(last) = segments.last() else { break };
        let wrapper = match last.ident.to_string().as_str() {
            "Option" => Wrapper::Option,
            "Vec" => Wrapper::Vec,
            _ => break,
        };
        let std_path = segments.len() == 1
            || (["std", "core", "alloc"].iter().any(|root| segments[0].ident == root)
                && segments.iter().rev().skip(1).all(|s| s.arguments.is_none()));
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            break;
        };
        if !std_path || args.args.len() != 1 {
            break;
        }
        let Some(GenericArgument::Type(elem)) = args.args.first() else {
            break;
        };
        wrappers.push(wrapper);
        ty = elem;
    }
    (wrappers, ty)
}

/// Borrowed and `impl Trait` argument types, which cannot be read from JSON.
fn argument_type_problem(ty: &Type) -> Option<syn::Error> {
    #[derive(Default)]
    struct Finder(Option<syn::Error>);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_reference(&mut self, reference: &'ast TypeReference) {
            if self.0.is_none() {
                let owned = owned_version(&reference.elem);
                self.0 = Some(syn::Error::new_spanned(
                    reference,
                    format!(
                        "`{}` is borrowed, but tool arguments are deserialized from JSON, so they must be owned: take `{owned}`",
                        type_to_string(&Type::Reference(reference.clone()))
                    ),
                ));
            }
        }
        fn visit_type_impl_trait(&mut self, impl_trait: &'ast syn::TypeImplTrait) {
            if self.0.is_none() {
                let fix = match concrete_for(impl_trait) {
                    Some(ty) => format!("take `{ty}`"),
                    None => "take a concrete type that implements `serde::Deserialize`".to_owned(),
                };
                self.0 = Some(syn::Error::new_spanned(
                    impl_trait,
                    format!(
                        "`{}` cannot be a tool argument: arguments are deserialized from JSON, into a concrete type; {fix}",
                        type_to_string(&Type::ImplTrait(impl_trait.clone()))
                    ),
                ));
            }
        }
        fn visit_lifetime(&mut self, lifetime: &'ast syn::Lifetime) {
            if self.0.is_none() && lifetime.ident != "static" {
                self.0 = Some(syn::Error::new_spanned(
                    lifetime,
                    "tool arguments are deserialized from JSON, so they cannot borrow: use an owned type (or `'static`)",
                ));
            }
        }
    }
    let mut finder = Finder::default();
    finder.visit_type(ty);
    finder.0
}

/// The owned type an `impl Trait` argument most likely stands for:
/// `String` for `impl Into<String>`, `impl AsRef<str>` or `impl Display`,
/// `Vec<T>` for `impl IntoIterator<Item = T>`.
fn concrete_for(impl_trait: &syn::TypeImplTrait) -> Option<String> {
    impl_trait.bounds.iter().find_map(|bound| {
        let syn::TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let last = bound.path.segments.last()?;
        let args: Vec<&GenericArgument> = match &last.arguments {
            PathArguments::AngleBracketed(args) => args.args.iter().collect(),
            PathArguments::None => Vec::new(),
            PathArguments::Parenthesized(_) => return None,
        };
        match (last.ident.to_string().as_str(), args.as_slice()) {
            ("Into" | "AsRef" | "Borrow", [GenericArgument::Type(ty)]) => Some(owned_version(ty)),
            ("IntoIterator" | "Iterator", [GenericArgument::AssocType(item)]) if item.ident == "Item" => {
                Some(format!("Vec<{}>", owned_version(&item.ty)))
            }
            ("ToString" | "Display", []) => Some("String".to_owned()),
            _ => None,
        }
    })
}

/// The owned type for a borrowed one: `String` for `str`, `Vec<T>` for `[T]`,
/// `PathBuf` for `Path`, `T` for `&T`.
fn owned_version(ty: &Type) -> String {
    match ungroup(ty) {
        Type::Reference(reference) => owned_version(&reference.elem),
        Type::Path(p) if p.path.is_ident("str") => "String".to_owned(),
        Type::Path(p) if p.path.is_ident("Path") => "PathBuf".to_owned(),
        Type::Slice(slice) => format!("Vec<{}>", type_to_string(&slice.elem)),
        other => type_to_string(other),
    }
}

fn analyze_output(output: &ReturnType) -> syn::Result<Output> {
    let ty = match output {
        ReturnType::Default => return Ok(Output::Unit),
        ReturnType::Type(_, ty) => &**ty,
    };
    #[derive(Default)]
    struct ImplFinder(Option<syn::Error>);
    impl<'ast> Visit<'ast> for ImplFinder {
        fn visit_type_impl_trait(&mut self, impl_trait: &'ast syn::TypeImplTrait) {
            if self.0.is_none() {
                self.0 = Some(syn::Error::new_spanned(
                    impl_trait,
                    "`impl Trait` cannot be the result of a tool: name the type, so that its JSON schema can be published",
                ));
            }
        }
    }
    let mut finder = ImplFinder::default();
    finder.visit_type(ty);
    if let Some(e) = finder.0 {
        return Err(e);
    }
    Ok(match ungroup(ty) {
        Type::Tuple(tuple) if tuple.elems.is_empty() => Output::Unit,
        Type::Path(path) if path.qself.is_none() && path.path.segments.last().is_some_and(|s| s.ident == "Result") => {
            let last = path.path.segments.last().expect("checked above");
            let types: Vec<&Type> = match &last.arguments {
                PathArguments::AngleBracketed(args) => args
                    .args
                    .iter()
                    .filter_map(|a| match a {
                        GenericArgument::Type(t) => Some(t),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            match types.as_slice() {
                [ok] => Output::Result {
                    ok: Box::new((*ok).clone()),
                    err: None,
                },
                [ok, err, ..] => Output::Result {
                    ok: Box::new((*ok).clone()),
                    err: Some(Box::new((*err).clone())),
                },
                [] => Output::Opaque,
            }
        }
        _ => Output::Plain(Box::new(ty.clone())),
    })
}

/// A type as a user would write it, for messages: `Vec<u8>`, not `Vec < u8 >`.
fn type_to_string(ty: &Type) -> String {
    let raw = ty.to_token_stream().to_string();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ' ' {
            let prev = out.chars().last();
            let next = chars.peek().copied();
            let glue_after = matches!(prev, Some('<' | '&' | ':' | '(' | '[' | '\''));
            // `Fn(u32)`, but `&mut (u8, u8)`.
            let call_parens = next == Some('(') && {
                let word_start = out
                    .char_indices()
                    .rev()
                    .take_while(|(_, c)| c.is_alphanumeric() || *c == '_')
                    .last()
                    .map(|(i, _)| i);
                word_start.is_some_and(|i| !["mut", "dyn", "impl", "const"].contains(&&out[i..]))
            };
            let glue_before = call_parens || matches!(next, Some('<' | '>' | ',' | ':' | ')' | ']' | ';'));
            if glue_after || glue_before {
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The text of `#[doc = "..."]` attributes: each line trimmed, joined with
/// `\n`, without leading or trailing blank lines.
fn doc_text(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        if let Meta::NameValue(nv) = &attr.meta {
            if let Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) = &nv.value {
                // `split`, not `lines`: an empty `///` is a paragraph break.
                lines.extend(s.value().split('\n').map(|l| l.trim().to_owned()));
            }
        }
    }
    lines.join("\n").trim().to_owned()
}

/// The registration type: a braced struct, so it lives in the type namespace
/// only and coexists with the function of the same name.
fn registration_struct(func: &ItemFn) -> TokenStream {
    let vis = &func.vis;
    let ident = &func.sig.ident;
    let plain = ident.unraw();
    let doc = format!("The `#[tool]` registration of [`{plain}`](fn@{ident}): register it with `.tool::<{ident}>()`.");
    quote! {
        #[doc = #doc]
        #[allow(non_camel_case_types, dead_code)]
        #[derive(Debug)]
        #vis struct #ident {}
    }
}

/// Everything needed to generate the code.
struct Tool {
    name: LitStr,
    description: String,
    attr: ToolAttr,
    sig: SignatureInfo,
}

impl Tool {
    fn new(attr: ToolAttr, sig: SignatureInfo, func: &ItemFn) -> syn::Result<Self> {
        let mut errors = Errors::default();
        let ident = &func.sig.ident;
        let name = match &attr.name {
            Some(name) => name.clone(),
            None => {
                let name = ident.unraw().to_string();
                if let Some(reason) = name_problem(&name) {
                    errors.push(syn::Error::new(
                        ident.span(),
                        format!("the function's name {} is not a valid tool name: {reason}; set a shorter one with `#[tool(name = \"...\")]`, or rename the function", shown_name(&name)),
                    ));
                }
                LitStr::new(&name, ident.span())
            }
        };
        if let (Some(streaming), None) = (&attr.streaming, &sig.context) {
            errors.push(syn::Error::new_spanned(
                streaming,
                format!("a `streaming` tool emits its partials through its context: add `ctx: &CallContext` to the arguments of `{ident}`"),
            ));
        }
        errors.finish()?;
        let description = match &attr.description {
            Some(d) => d.value(),
            None => doc_text(&func.attrs),
        };
        Ok(Tool {
            name,
            description,
            attr,
            sig,
        })
    }

    fn generate(&self, func: &ItemFn) -> TokenStream {
        let ident = &func.sig.ident;
        let registration = registration_struct(func);
        let args: Vec<&Arg> = self
            .sig
            .params
            .iter()
            .filter_map(|p| match p {
                Param::Arg(a) => Some(&**a),
                Param::Context | Param::State(_) => None,
            })
            .collect();
        // The state types, in order: `__S0` for the first.
        let state_types: Vec<&Type> = self
            .sig
            .params
            .iter()
            .filter_map(|p| match p {
                Param::State(ty) => Some(&**ty),
                Param::Context | Param::Arg(_) => None,
            })
            .collect();
        let state_params: Vec<Ident> = (0..state_types.len()).map(|i| format_ident!("__S{}", i)).collect();
        let state_values: Vec<Ident> = (0..state_types.len()).map(|i| format_ident!("__s{}", i)).collect();
        let type_params: Vec<Ident> = (0..args.len()).map(|i| format_ident!("__A{}", i)).collect();
        let values: Vec<Ident> = (0..args.len()).map(|i| format_ident!("__a{}", i)).collect();
        let arg_types = args.iter().map(|a| &a.inner);
        // The argument types as `__tool` sees them: `__A0`, `Option<__A1>`.
        let wrapped_params: Vec<TokenStream> = args
            .iter()
            .zip(&type_params)
            .map(|(arg, param)| {
                arg.wrappers
                    .iter()
                    .rev()
                    .fold(param.to_token_stream(), |inner, w| w.wrap(inner))
            })
            .collect();
        let field_idents: Vec<&Ident> = args.iter().map(|a| &a.ident).collect();
        let fields = args.iter().zip(&wrapped_params).map(|(arg, param)| {
            let docs = &arg.docs;
            let ident = &arg.ident;
            let rename = arg.rename.as_ref().map(|r| quote!(#[serde(rename = #r)]));
            quote!(#(#docs)* #rename #ident: #param)
        });
        let struct_generics = if args.is_empty() {
            quote!()
        } else {
            quote!(<#(#type_params),*>)
        };

        // The output: the bounds of `__tool`, what it is given, what the
        // future returns, how it becomes JSON, and its schema's type.
        let (output_params, output_types, future_output, wrap_plain, schema_type) = match &self.sig.output {
            Output::Unit => (quote!(), quote!(), quote!(()), true, None),
            Output::Plain(ty) => (
                quote!(__O: ::mcpmqtt::__private::ToolOutput,),
                quote!(#ty,),
                quote!(__O),
                true,
                Some(ty),
            ),
            Output::Result { ok, err } => {
                let err = match err {
                    Some(err) => err.to_token_stream(),
                    None => quote!(_),
                };
                let unit = matches!(ungroup(ok), Type::Tuple(t) if t.elems.is_empty());
                (
                    quote!(__O: ::mcpmqtt::__private::ToolOutput, __E: ::mcpmqtt::__private::ToolErrorType,),
                    quote!(#ok, #err,),
                    quote!(::core::result::Result<__O, __E>),
                    false,
                    (!unit).then_some(ok),
                )
            }
            Output::Opaque => (
                quote!(__R: ::mcpmqtt::__private::IntoToolResult,),
                quote!(_,),
                quote!(__R),
                false,
                None,
            ),
        };
        let call_result = quote!(__call(__ctx #(, #state_values)* #(, #values)*).await);
        let convert = if wrap_plain {
            quote!(::mcpmqtt::__private::IntoToolResult::into_tool_result(::mcpmqtt::__private::Plain(#call_result)))
        } else {
            quote!(::mcpmqtt::__private::IntoToolResult::into_tool_result(#call_result))
        };
        let output_schema = match schema_type {
            Some(ty) => quote! {{
                #[allow(unused_imports)]
                use ::mcpmqtt::__private::{HasOutputSchema as _, NoOutputSchema as _};
                (&&::mcpmqtt::__private::OutputSchema::<#ty>::new()).output_schema()
            }},
            None => quote!(::core::option::Option::None),
        };

        let name = &self.name;
        let description = (!self.description.is_empty()).then(|| {
            let d = &self.description;
            quote!(.description(#d))
        });
        let callers = &self.attr.allowed_callers;
        let callers = (!callers.is_empty()).then(|| quote!(.allowed_callers([#(#callers),*])));
        let streaming = self.attr.streaming.as_ref().map(|_| quote!(.streaming(true)));
        let version = match &self.attr.version {
            Some(v) => quote!(.version(#v)),
            None => quote!(.version(::core::env!("CARGO_PKG_VERSION"))),
        };
        let timeout = self.attr.timeout_ms.map(|ms| {
            let ms = Literal::u64_unsuffixed(ms);
            quote!(.timeout(::core::time::Duration::from_millis(#ms)))
        });

        let title = self.attr.title.as_ref().map(|t| quote!(.title(#t)));
        let hints = [
            (&self.attr.read_only, quote!(read_only)),
            (&self.attr.destructive, quote!(destructive)),
            (&self.attr.idempotent, quote!(idempotent)),
            (&self.attr.open_world, quote!(open_world)),
        ];
        let hints: Vec<TokenStream> = hints
            .into_iter()
            .filter_map(|(hint, setter)| {
                hint.as_ref().map(|h| {
                    let value = h.value;
                    quote!(.#setter(#value))
                })
            })
            .collect();
        let annotations =
            (!hints.is_empty()).then(|| quote!(.annotations(::mcpmqtt::ToolAnnotations::default() #(#hints)*)));

        // The function as `__tool` calls it: the context, the states and
        // the JSON arguments, each in its place.
        let call_args = {
            let mut next = values.iter();
            let mut next_state = state_values.iter();
            self.sig.params.iter().map(move |p| match p {
                Param::Context => quote!(&__ctx),
                Param::State(_) => next_state.next().expect("one value per state").to_token_stream(),
                Param::Arg(_) => next.next().expect("one value per argument").to_token_stream(),
            })
        };
        let closure = if self.sig.context.is_some() {
            quote_spanned! {ident.span()=>
                |__ctx: ::mcpmqtt::CallContext #(, #state_values)* #(, #values)*| async move { #ident(#(#call_args),*).await }
            }
        } else {
            quote_spanned! {ident.span()=>
                |_: ::mcpmqtt::CallContext #(, #state_values)* #(, #values)*| #ident(#(#call_args),*)
            }
        };
        // `__tool` and the inferred `__F, __Fut` are spanned on the name too:
        // a future that is not `Send` is reported on the function's name.
        let tool_fn = quote_spanned!(ident.span()=> __tool);
        let inferred = quote_spanned!(ident.span()=> _, _);

        quote! {
            #func

            #registration

            const _: () = {
                #[derive(::mcpmqtt::__private::serde::Deserialize, ::mcpmqtt::__private::schemars::JsonSchema)]
                #[serde(crate = "::mcpmqtt::__private::serde", deny_unknown_fields)]
                #[schemars(crate = "::mcpmqtt::__private::schemars")]
                struct __ToolArgs #struct_generics {
                    #(#fields,)*
                }

                fn __tool<#(#state_params: ::mcpmqtt::__private::StateType,)* #(#type_params: ::mcpmqtt::__private::ToolArgument,)* #output_params __F, __Fut>(
                    __output_schema: ::core::option::Option<::mcpmqtt::__private::serde_json::Value>,
                    __call: __F,
                ) -> ::mcpmqtt::ToolDef
                where
                    __F: ::core::ops::Fn(::mcpmqtt::CallContext #(, ::mcpmqtt::State<#state_params>)* #(, #wrapped_params)*) -> __Fut
                        + ::core::marker::Copy
                        + ::core::marker::Send
                        + ::core::marker::Sync
                        + 'static,
                    __Fut: ::core::future::Future<Output = #future_output> + ::core::marker::Send + 'static,
                {
                    let __builder = ::mcpmqtt::ToolDef::builder(#name)
                        #description
                        .input_schema(::mcpmqtt::__private::input_schema::<__ToolArgs #struct_generics>())
                        #callers
                        #streaming
                        #version
                        #timeout
                        #title
                        #annotations
                        #(.needs_state::<#state_params>())*
                        .handler(move |__ctx: ::mcpmqtt::CallContext, __args: ::mcpmqtt::__private::serde_json::Value| async move {
                            #(let #state_values = ::mcpmqtt::__private::state::<#state_params>(&__ctx)?;)*
                            let __ToolArgs { #(#field_idents: #values),* } =
                                ::mcpmqtt::__private::parse_arguments::<__ToolArgs #struct_generics>(__args)?;
                            #convert
                        });
                    let __builder = match __output_schema {
                        ::core::option::Option::Some(__schema) => __builder.output_schema(__schema),
                        ::core::option::Option::None => __builder,
                    };
                    __builder
                        .build()
                        .expect("`#[tool]` checked this tool's name and callers at compile time")
                }

                impl ::mcpmqtt::Tool for #ident {
                    fn definition() -> ::mcpmqtt::ToolDef {
                        #tool_fn::<#(#state_types,)* #(#arg_types,)* #output_types #inferred>(#output_schema, #closure)
                    }
                }
            };
        }
    }
}

#[cfg(test)]
mod tests;
