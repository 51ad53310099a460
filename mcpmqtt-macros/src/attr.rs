//! The options of `#[tool(...)]` and of `#[arg(...)]` on arguments.

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitInt, LitStr, Token};

use crate::errors::Errors;
use crate::names::{closest, name_problem, one_of, repaired_name, shown_name};

/// The options `#[tool]` knows, in the order the docs list them.
pub(crate) const TOOL_KEYS: &[&str] = &[
    "name",
    "description",
    "allowed_callers",
    "streaming",
    "version",
    "timeout_ms",
    "title",
    "read_only",
    "destructive",
    "idempotent",
    "open_world",
];

/// The flags `#[tool]` turns into MCP's annotations: the key, its hint's
/// default in MCP, and what the hint says.
const HINTS: &[(&str, bool)] = &[
    ("read_only", false),
    ("destructive", true),
    ("idempotent", false),
    ("open_world", true),
];

/// The options `#[arg]` knows.
pub(crate) const ARG_KEYS: &[&str] = &["rename"];

/// What `#[tool(...)]` said. Every value is checked; absent options are `None`.
#[derive(Default)]
pub(crate) struct ToolAttr {
    /// `name = "..."`, checked against the topic-level rules.
    pub name: Option<LitStr>,
    /// `description = "..."`.
    pub description: Option<LitStr>,
    /// `allowed_callers = [...]`, each checked, no duplicates.
    pub allowed_callers: Vec<LitStr>,
    /// The `streaming` key, when the tool streams (for error spans).
    pub streaming: Option<Ident>,
    /// `version = "..."`.
    pub version: Option<LitStr>,
    /// `timeout_ms = N`, N > 0.
    pub timeout_ms: Option<u64>,
    /// `title = "..."`, not empty.
    pub title: Option<LitStr>,
    /// `read_only` or `read_only = bool`: MCP's `readOnlyHint`.
    pub read_only: Option<Hint>,
    /// `destructive` or `destructive = bool`: MCP's `destructiveHint`.
    pub destructive: Option<Hint>,
    /// `idempotent` or `idempotent = bool`: MCP's `idempotentHint`.
    pub idempotent: Option<Hint>,
    /// `open_world` or `open_world = bool`: MCP's `openWorldHint`.
    pub open_world: Option<Hint>,
}

/// One annotation flag as written: its key (for error spans) and its value.
#[derive(Clone)]
pub(crate) struct Hint {
    pub key: Ident,
    pub value: bool,
}

/// One `key` or `key = value` of the attribute, before it is checked.
struct Entry {
    key: Ident,
    value: Option<Expr>,
}

impl Parse for Entry {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // `parse_any` so that a keyword (`type`, `crate`) gets the "unknown
        // option" error instead of a bare "expected identifier".
        let key = Ident::parse_any(input)?;
        if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            let value = input.parse::<Expr>()?;
            Ok(Entry {
                key,
                value: Some(value),
            })
        } else if input.peek(syn::token::Paren) {
            let group: proc_macro2::Group = input.parse()?;
            Err(syn::Error::new(
                group.span(),
                format!("write `{key} = ...` to set an option, not `{key}(...)`"),
            ))
        } else {
            Ok(Entry { key, value: None })
        }
    }
}

impl ToolAttr {
    /// Parses and checks `#[tool(...)]`'s tokens, reporting every problem found.
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Self> {
        let entries = Punctuated::<Entry, Token![,]>::parse_terminated.parse2(tokens)?;
        let mut attr = ToolAttr::default();
        let mut errors = Errors::default();
        let mut seen: Vec<String> = Vec::new();
        for Entry { key, value } in entries {
            let key_name = key.unraw().to_string();
            if !TOOL_KEYS.contains(&key_name.as_str()) {
                errors.push(unknown_key(&key, "#[tool]", TOOL_KEYS));
                continue;
            }
            if seen.contains(&key_name) {
                errors.push(syn::Error::new_spanned(
                    &key,
                    format!("`{key_name}` is set twice: remove this one"),
                ));
                continue;
            }
            seen.push(key_name.clone());
            if let Err(e) = attr.set(&key, &key_name, value) {
                errors.push(e);
            }
        }
        if let (Some(read_only), Some(destructive)) = (&attr.read_only, &attr.destructive) {
            if read_only.value && destructive.value {
                errors.push(syn::Error::new_spanned(
                    &destructive.key,
                    "a `read_only` tool cannot be `destructive` (MCP reads `destructiveHint` only when a tool is not read-only): remove `destructive`, or `read_only` if the tool changes things",
                ));
            }
        }
        errors.finish()?;
        Ok(attr)
    }

    fn set(&mut self, key: &Ident, key_name: &str, value: Option<Expr>) -> syn::Result<()> {
        if key_name == "streaming" {
            return match value.as_ref().map(unwrap_group) {
                None => {
                    self.streaming = Some(key.clone());
                    Ok(())
                }
                Some(Expr::Lit(ExprLit { lit: Lit::Bool(b), .. })) => {
                    self.streaming = b.value.then(|| key.clone());
                    Ok(())
                }
                Some(other) => Err(syn::Error::new_spanned(
                    other,
                    "`streaming` is a flag: write `streaming` (or `streaming = true`)",
                )),
            };
        }
        if let Some(&(_, default)) = HINTS.iter().find(|(k, _)| *k == key_name) {
            let value = match value.as_ref().map(unwrap_group) {
                None => true,
                Some(Expr::Lit(ExprLit { lit: Lit::Bool(b), .. })) => b.value,
                Some(other) => {
                    // For a hint MCP takes as true, the useful form is `= false`.
                    let fix = if default {
                        format!("`{key_name}` (or `{key_name} = false`)")
                    } else {
                        format!("`{key_name}` (or `{key_name} = true`)")
                    };
                    return Err(syn::Error::new_spanned(
                        other,
                        format!("`{key_name}` is a flag: write {fix}"),
                    ));
                }
            };
            let hint = Some(Hint {
                key: key.clone(),
                value,
            });
            match key_name {
                "read_only" => self.read_only = hint,
                "destructive" => self.destructive = hint,
                "idempotent" => self.idempotent = hint,
                _ => self.open_world = hint,
            }
            return Ok(());
        }
        let example = match key_name {
            "name" => "name = \"crawl_site\"",
            "description" => "description = \"Crawl a site\"",
            "allowed_callers" => "allowed_callers = [\"scout\", \"operator\"]",
            "version" => "version = \"1.2.0\"",
            "title" => "title = \"Crawl a site\"",
            _ => "timeout_ms = 5000",
        };
        let Some(value) = value else {
            return Err(syn::Error::new_spanned(
                key,
                format!("`{key_name}` needs a value: write `{example}`"),
            ));
        };
        let value = unwrap_group(&value);
        match key_name {
            "name" => {
                let lit = expect_str(value, key_name, example)?;
                check_name("tool", &lit)?;
                self.name = Some(lit);
            }
            "description" => self.description = Some(expect_str(value, key_name, example)?),
            "version" => self.version = Some(expect_str(value, key_name, example)?),
            "allowed_callers" => self.allowed_callers = parse_callers(value, example)?,
            "title" => {
                let lit = expect_str(value, key_name, example)?;
                if lit.value().trim().is_empty() {
                    return Err(syn::Error::new_spanned(
                        &lit,
                        format!("the title must not be empty: write `{example}`, or leave `title` out"),
                    ));
                }
                self.title = Some(lit);
            }
            _ => self.timeout_ms = Some(parse_timeout(value, example)?),
        }
        Ok(())
    }
}

/// Sees through the invisible groups `macro_rules!` wraps fragments in.
fn unwrap_group(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(g) => unwrap_group(&g.expr),
        other => other,
    }
}

fn expect_str(value: &Expr, key: &str, example: &str) -> syn::Result<LitStr> {
    match value {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Ok(s.clone()),
        other => {
            let fix = match quotable(other) {
                Some(text) => format!("{key} = {text:?}"),
                None => example.to_owned(),
            };
            Err(syn::Error::new_spanned(
                other,
                format!("`{key}` takes a string literal: write `{fix}`"),
            ))
        }
    }
}

/// The text of a value that was surely meant as a string: a bare identifier
/// (`crawl_site`) or a number, bool or char literal (`1`, `1.2`).
fn quotable(value: &Expr) -> Option<String> {
    match value {
        Expr::Path(path) if path.qself.is_none() => path.path.get_ident().map(|i| i.unraw().to_string()),
        Expr::Lit(ExprLit { lit, .. }) => match lit {
            Lit::Int(i) => Some(i.base10_digits().to_owned()),
            Lit::Float(f) => Some(f.base10_digits().to_owned()),
            Lit::Bool(b) => Some(b.value.to_string()),
            Lit::Char(c) => Some(c.value().to_string()),
            _ => None,
        },
        _ => None,
    }
}

fn parse_callers(value: &Expr, example: &str) -> syn::Result<Vec<LitStr>> {
    let Expr::Array(array) = value else {
        // One caller written without the brackets: put them around it.
        let fix = match value {
            Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => format!("allowed_callers = [{:?}]", s.value()),
            other => match quotable(other) {
                Some(text) => format!("allowed_callers = [{text:?}]"),
                None => example.to_owned(),
            },
        };
        return Err(syn::Error::new_spanned(
            value,
            format!("`allowed_callers` takes an array of string literals: write `{fix}`"),
        ));
    };
    let mut errors = Errors::default();
    let mut callers: Vec<LitStr> = Vec::new();
    for element in &array.elems {
        let element = unwrap_group(element);
        let Expr::Lit(ExprLit { lit: Lit::Str(lit), .. }) = element else {
            let message = match quotable(element) {
                Some(text) => format!("each allowed caller is a string literal: write `{text:?}`"),
                None => format!(
                    "each allowed caller is a string literal, which the macro checks at compile time (not a constant or an expression): write `{example}`"
                ),
            };
            errors.push(syn::Error::new_spanned(element, message));
            continue;
        };
        if let Err(e) = check_name("caller", lit) {
            errors.push(e);
        } else if callers.iter().any(|c| c.value() == lit.value()) {
            errors.push(syn::Error::new_spanned(
                lit,
                format!(
                    "caller {:?} is listed twice in `allowed_callers`: remove this one",
                    lit.value()
                ),
            ));
        } else {
            callers.push(lit.clone());
        }
    }
    errors.finish()?;
    Ok(callers)
}

fn parse_timeout(value: &Expr, example: &str) -> syn::Result<u64> {
    let message = |fix: &str| format!("`timeout_ms` takes a positive integer literal, in milliseconds: write `{fix}`");
    let int = match value {
        Expr::Lit(ExprLit { lit: Lit::Int(int), .. }) => int,
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => {
            // `"5000"`, `"5000ms"` or `"5s"`: the number it means.
            let fix = match duration_in_ms(&s.value()) {
                Some(ms) => format!("timeout_ms = {ms}"),
                None => example.to_owned(),
            };
            return Err(syn::Error::new_spanned(value, message(&fix)));
        }
        other => return Err(syn::Error::new_spanned(other, message(example))),
    };
    let ms = parse_u64(int).map_err(|_| syn::Error::new_spanned(int, message(example)))?;
    if ms == 0 {
        return Err(syn::Error::new_spanned(
            int,
            format!(
                "`timeout_ms` must be greater than 0: write `{example}`, or leave it out for no timeout of the tool's own"
            ),
        ));
    }
    Ok(ms)
}

/// `"5000"`, `"5000ms"`, `"5s"` in milliseconds, if positive.
fn duration_in_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    let ms = if let Some(ms) = text.strip_suffix("ms") {
        ms.trim().parse::<u64>().ok()?
    } else if let Some(s) = text.strip_suffix('s') {
        s.trim().parse::<u64>().ok()?.checked_mul(1000)?
    } else {
        text.parse::<u64>().ok()?
    };
    (ms > 0).then_some(ms)
}

fn parse_u64(int: &LitInt) -> syn::Result<u64> {
    match int.suffix() {
        "" | "u8" | "u16" | "u32" | "u64" | "usize" => int.base10_parse::<u64>(),
        _ => Err(syn::Error::new_spanned(int, "not an unsigned integer")),
    }
}

/// Checks a tool or caller name written in the attribute, on its literal.
pub(crate) fn check_name(kind: &str, lit: &LitStr) -> syn::Result<()> {
    check_name_at(kind, &lit.value(), lit.span())
}

/// Checks a name, reporting at `span`, with the runtime's wording for what
/// is wrong and a fix for this kind of name.
pub(crate) fn check_name_at(kind: &str, name: &str, span: Span) -> syn::Result<()> {
    match name_problem(name) {
        None => Ok(()),
        Some(reason) => {
            let fix = if kind == "tool" {
                tool_name_fix(name)
            } else {
                caller_name_fix(name)
            };
            Err(syn::Error::new(
                span,
                format!("invalid {kind} name {}: {reason}; {fix}", shown_name(name)),
            ))
        }
    }
}

fn tool_name_fix(name: &str) -> String {
    if name.is_empty() {
        return "write a name, e.g. `name = \"crawl_site\"`, or leave `name` out to use the function's name".to_owned();
    }
    if name.len() > crate::names::MAX_NAME_LEN {
        return "shorten it to at most 128 bytes: a tool name is one MQTT topic level".to_owned();
    }
    match repaired_name(name) {
        Some(repaired) => format!("a tool name is one MQTT topic level: write `name = {repaired:?}`"),
        None => "a tool name is one MQTT topic level: write e.g. `name = \"crawl_site\"`".to_owned(),
    }
}

fn caller_name_fix(name: &str) -> String {
    let generic = "a caller is the MQTT client id the calling agent connects with, one topic level, e.g. `\"scout\"`";
    if name.is_empty() {
        "remove it, or write the caller's MQTT client id, e.g. `\"scout\"`".to_owned()
    } else if name.len() > crate::names::MAX_NAME_LEN || name.contains('/') {
        generic.to_owned()
    } else if name.contains(['+', '#']) {
        "a caller is one exact MQTT client id, and wildcards do not match several: list each caller, e.g. `allowed_callers = [\"scout\", \"operator\"]`".to_owned()
    } else {
        generic.to_owned()
    }
}

/// "unknown option `x`", with the closest known one or the list of them.
pub(crate) fn unknown_key(key: &Ident, attribute: &str, known: &[&str]) -> syn::Error {
    let name = key.unraw().to_string();
    let message = match closest(&name, known) {
        Some(suggestion) => {
            format!("unknown `{attribute}` option `{name}`: did you mean `{suggestion}`?")
        }
        None => format!("unknown `{attribute}` option `{name}`: expected {}", one_of(known)),
    };
    syn::Error::new_spanned(key, message)
}

/// What `#[arg(...)]` on one argument said.
#[derive(Default)]
pub(crate) struct ArgAttr {
    /// `rename = "jsonName"`: the argument's JSON property name.
    pub rename: Option<LitStr>,
}

impl ArgAttr {
    /// Adds the options of one `#[arg(...)]` attribute.
    pub(crate) fn add(&mut self, attr: &syn::Attribute) -> syn::Result<()> {
        let example = "#[arg(rename = \"jsonName\")]";
        let list = match &attr.meta {
            syn::Meta::List(list) => list,
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    format!("`#[arg]` takes options: write `{example}`"),
                ))
            }
        };
        let entries = Punctuated::<Entry, Token![,]>::parse_terminated.parse2(list.tokens.clone())?;
        let mut errors = Errors::default();
        for Entry { key, value } in entries {
            if key != "rename" {
                errors.push(unknown_key(&key, "#[arg]", ARG_KEYS));
                continue;
            }
            if self.rename.is_some() {
                errors.push(syn::Error::new_spanned(&key, "`rename` is set twice: remove this one"));
                continue;
            }
            let Some(value) = value else {
                errors.push(syn::Error::new_spanned(
                    &key,
                    format!("`rename` needs a value: write `{example}`"),
                ));
                continue;
            };
            match expect_str(unwrap_group(&value), "rename", "rename = \"jsonName\"") {
                Ok(lit) if lit.value().is_empty() => errors.push(syn::Error::new_spanned(
                    &lit,
                    "the JSON property name must not be empty: write `rename = \"jsonName\"`",
                )),
                Ok(lit) => self.rename = Some(lit),
                Err(e) => errors.push(e),
            }
        }
        errors.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: TokenStream) -> syn::Result<ToolAttr> {
        ToolAttr::parse(tokens)
    }

    fn error(tokens: TokenStream) -> String {
        match parse(tokens) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"),
        }
    }

    #[test]
    fn empty_attribute() {
        let attr = parse(quote!()).unwrap();
        assert!(attr.name.is_none());
        assert!(attr.description.is_none());
        assert!(attr.allowed_callers.is_empty());
        assert!(attr.streaming.is_none());
        assert!(attr.version.is_none());
        assert!(attr.timeout_ms.is_none());
        assert!(attr.title.is_none());
        assert!(attr.read_only.is_none() && attr.destructive.is_none());
        assert!(attr.idempotent.is_none() && attr.open_world.is_none());
    }

    #[test]
    fn every_key() {
        let attr = parse(quote!(
            name = "crawl_site",
            description = "Crawl.",
            allowed_callers = ["scout", "operator"],
            streaming,
            version = "1.2.0",
            timeout_ms = 5_000,
            title = "Crawl a site",
            read_only,
            destructive = false,
            idempotent = true,
            open_world = false,
        ))
        .unwrap();
        assert_eq!(attr.title.unwrap().value(), "Crawl a site");
        assert!(attr.read_only.unwrap().value);
        assert!(!attr.destructive.unwrap().value);
        assert!(attr.idempotent.unwrap().value);
        assert!(!attr.open_world.unwrap().value);
        assert_eq!(attr.name.unwrap().value(), "crawl_site");
        assert_eq!(attr.description.unwrap().value(), "Crawl.");
        let callers: Vec<String> = attr.allowed_callers.iter().map(LitStr::value).collect();
        assert_eq!(callers, ["scout", "operator"]);
        assert!(attr.streaming.is_some());
        assert_eq!(attr.version.unwrap().value(), "1.2.0");
        assert_eq!(attr.timeout_ms, Some(5000));
    }

    #[test]
    fn streaming_as_bool() {
        assert!(parse(quote!(streaming = true)).unwrap().streaming.is_some());
        assert!(parse(quote!(streaming = false)).unwrap().streaming.is_none());
        assert_eq!(
            error(quote!(streaming = "yes")),
            "`streaming` is a flag: write `streaming` (or `streaming = true`)"
        );
    }

    #[test]
    fn annotations() {
        let attr = parse(quote!(destructive = false, open_world = false)).unwrap();
        assert!(attr.read_only.is_none() && attr.idempotent.is_none());
        assert!(!attr.destructive.unwrap().value);
        assert!(!attr.open_world.unwrap().value);
        // Read-only and explicitly not destructive agree; so do idempotent and read-only.
        assert!(parse(quote!(read_only, destructive = false, idempotent)).is_ok());
        assert!(parse(quote!(read_only = false, destructive)).is_ok());
        assert_eq!(
            error(quote!(read_only, destructive)),
            "a `read_only` tool cannot be `destructive` (MCP reads `destructiveHint` only when a tool is not read-only): remove `destructive`, or `read_only` if the tool changes things"
        );
        assert!(error(quote!(destructive = true, read_only = true)).starts_with("a `read_only` tool cannot be"));
        assert_eq!(
            error(quote!(read_only = "yes")),
            "`read_only` is a flag: write `read_only` (or `read_only = true`)"
        );
        assert_eq!(
            error(quote!(open_world = no)),
            "`open_world` is a flag: write `open_world` (or `open_world = false`)"
        );
        assert_eq!(
            error(quote!(idempotent, idempotent = false)),
            "`idempotent` is set twice: remove this one"
        );
        assert_eq!(
            error(quote!(destructive(false))),
            "write `destructive = ...` to set an option, not `destructive(...)`"
        );
    }

    #[test]
    fn title() {
        assert_eq!(
            parse(quote!(title = "Crawl a site")).unwrap().title.unwrap().value(),
            "Crawl a site"
        );
        assert_eq!(
            error(quote!(title = "")),
            "the title must not be empty: write `title = \"Crawl a site\"`, or leave `title` out"
        );
        assert!(error(quote!(title = "  ")).starts_with("the title must not be empty"));
        assert_eq!(
            error(quote!(title)),
            "`title` needs a value: write `title = \"Crawl a site\"`"
        );
        assert_eq!(
            error(quote!(title = Crawl)),
            "`title` takes a string literal: write `title = \"Crawl\"`"
        );
    }

    #[test]
    fn unknown_keys_get_suggestions() {
        assert_eq!(
            error(quote!(allowed_caller = ["scout"])),
            "unknown `#[tool]` option `allowed_caller`: did you mean `allowed_callers`?"
        );
        assert_eq!(
            error(quote!(timeout = 5)),
            "unknown `#[tool]` option `timeout`: did you mean `timeout_ms`?"
        );
        assert_eq!(
            error(quote!(crate = "x")),
            "unknown `#[tool]` option `crate`: expected `name`, `description`, `allowed_callers`, `streaming`, `version`, `timeout_ms`, `title`, `read_only`, `destructive`, `idempotent` or `open_world`"
        );
        assert_eq!(
            error(quote!(readonly)),
            "unknown `#[tool]` option `readonly`: did you mean `read_only`?"
        );
        assert_eq!(
            error(quote!(read_only_hint)),
            "unknown `#[tool]` option `read_only_hint`: did you mean `read_only`?"
        );
    }

    #[test]
    fn duplicate_keys() {
        assert_eq!(
            error(quote!(name = "a", name = "b")),
            "`name` is set twice: remove this one"
        );
        assert_eq!(
            error(quote!(streaming, streaming)),
            "`streaming` is set twice: remove this one"
        );
    }

    #[test]
    fn wrong_value_kinds() {
        assert_eq!(
            error(quote!(name = crawl_site)),
            "`name` takes a string literal: write `name = \"crawl_site\"`"
        );
        assert_eq!(
            error(quote!(name = r#crawl)),
            "`name` takes a string literal: write `name = \"crawl\"`"
        );
        assert_eq!(
            error(quote!(name = concat!("a", "b"))),
            "`name` takes a string literal: write `name = \"crawl_site\"`"
        );
        assert_eq!(
            error(quote!(description)),
            "`description` needs a value: write `description = \"Crawl a site\"`"
        );
        assert_eq!(
            error(quote!(version = 1)),
            "`version` takes a string literal: write `version = \"1\"`"
        );
        assert_eq!(
            error(quote!(version = 1.2)),
            "`version` takes a string literal: write `version = \"1.2\"`"
        );
        assert_eq!(
            error(quote!(allowed_callers = "scout")),
            "`allowed_callers` takes an array of string literals: write `allowed_callers = [\"scout\"]`"
        );
        assert_eq!(
            error(quote!(allowed_callers = scout)),
            "`allowed_callers` takes an array of string literals: write `allowed_callers = [\"scout\"]`"
        );
        assert_eq!(
            error(quote!(allowed_callers = CALLERS.to_vec())),
            "`allowed_callers` takes an array of string literals: write `allowed_callers = [\"scout\", \"operator\"]`"
        );
        assert_eq!(
            error(quote!(allowed_callers = [scout])),
            "each allowed caller is a string literal: write `\"scout\"`"
        );
        assert_eq!(
            error(quote!(allowed_callers = ["a", crate::SCOUT])),
            "each allowed caller is a string literal, which the macro checks at compile time (not a constant or an expression): write `allowed_callers = [\"scout\", \"operator\"]`"
        );
        assert_eq!(
            error(quote!(timeout_ms = "5s")),
            "`timeout_ms` takes a positive integer literal, in milliseconds: write `timeout_ms = 5000`"
        );
        assert_eq!(
            error(quote!(timeout_ms = "250ms")),
            "`timeout_ms` takes a positive integer literal, in milliseconds: write `timeout_ms = 250`"
        );
        assert_eq!(
            error(quote!(timeout_ms = "soon")),
            "`timeout_ms` takes a positive integer literal, in milliseconds: write `timeout_ms = 5000`"
        );
        assert_eq!(
            error(quote!(timeout_ms = -5)),
            "`timeout_ms` takes a positive integer literal, in milliseconds: write `timeout_ms = 5000`"
        );
        assert_eq!(
            error(quote!(timeout_ms = 5i32)),
            "`timeout_ms` takes a positive integer literal, in milliseconds: write `timeout_ms = 5000`"
        );
        assert!(error(quote!(timeout_ms = 0)).starts_with("`timeout_ms` must be greater than 0"));
        assert_eq!(
            error(quote!(allowed_callers("scout"))),
            "write `allowed_callers = ...` to set an option, not `allowed_callers(...)`"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration_in_ms("5000"), Some(5000));
        assert_eq!(duration_in_ms(" 5 s"), Some(5000));
        assert_eq!(duration_in_ms("40ms"), Some(40));
        assert_eq!(duration_in_ms("0"), None);
        assert_eq!(duration_in_ms("1.5s"), None);
        assert_eq!(duration_in_ms("5m"), None);
    }

    #[test]
    fn names_are_checked() {
        let tool_name = |name: &str| {
            let lit = LitStr::new(name, Span::call_site());
            error(quote!(name = #lit))
        };
        assert_eq!(
            tool_name("crawl/site"),
            "invalid tool name \"crawl/site\": it contains `/`, which separates topic levels; a tool name is one MQTT topic level: write `name = \"crawl_site\"`"
        );
        assert_eq!(
            tool_name("crawl site"),
            "invalid tool name \"crawl site\": it contains whitespace; a tool name is one MQTT topic level: write `name = \"crawl_site\"`"
        );
        assert_eq!(
            tool_name("crawl+"),
            "invalid tool name \"crawl+\": it contains an MQTT wildcard (`+` or `#`); a tool name is one MQTT topic level: write `name = \"crawl\"`"
        );
        assert_eq!(
            tool_name("#"),
            "invalid tool name \"#\": it contains an MQTT wildcard (`+` or `#`); a tool name is one MQTT topic level: write e.g. `name = \"crawl_site\"`"
        );
        assert_eq!(
            tool_name("$crawl"),
            "invalid tool name \"$crawl\": it starts with `$`, which brokers reserve; a tool name is one MQTT topic level: write `name = \"crawl\"`"
        );
        assert_eq!(
            tool_name(""),
            "invalid tool name \"\": it is empty; write a name, e.g. `name = \"crawl_site\"`, or leave `name` out to use the function's name"
        );
        assert_eq!(
            tool_name(&"a".repeat(129)),
            format!(
                "invalid tool name \"{}…\" (129 bytes): it is longer than 128 bytes; shorten it to at most 128 bytes: a tool name is one MQTT topic level",
                "a".repeat(32)
            )
        );
        let longest = LitStr::new(&"a".repeat(128), Span::call_site());
        assert!(parse(quote!(name = #longest)).is_ok());

        assert_eq!(
            error(quote!(allowed_callers = ["scout", "$SYS"])),
            "invalid caller name \"$SYS\": it starts with `$`, which brokers reserve; a caller is the MQTT client id the calling agent connects with, one topic level, e.g. `\"scout\"`"
        );
        assert_eq!(
            error(quote!(allowed_callers = ["scout", ""])),
            "invalid caller name \"\": it is empty; remove it, or write the caller's MQTT client id, e.g. `\"scout\"`"
        );
        assert_eq!(
            error(quote!(allowed_callers = ["+"])),
            "invalid caller name \"+\": it contains an MQTT wildcard (`+` or `#`); a caller is one exact MQTT client id, and wildcards do not match several: list each caller, e.g. `allowed_callers = [\"scout\", \"operator\"]`"
        );
        assert_eq!(
            error(quote!(allowed_callers = ["team/scout"])),
            "invalid caller name \"team/scout\": it contains `/`, which separates topic levels; a caller is the MQTT client id the calling agent connects with, one topic level, e.g. `\"scout\"`"
        );
        assert_eq!(
            error(quote!(allowed_callers = ["scout", "operator", "scout"])),
            "caller \"scout\" is listed twice in `allowed_callers`: remove this one"
        );
    }

    #[test]
    fn errors_accumulate() {
        let all = error(quote!(
            nmae = "x",
            name = "a b",
            allowed_callers = ["a", "a"],
            timeout_ms = 0
        ));
        let lines: Vec<&str> = all.lines().collect();
        assert_eq!(lines.len(), 4, "{all}");
        assert!(lines[0].contains("did you mean `name`"));
        assert!(lines[1].contains("whitespace"));
        assert!(lines[2].contains("listed twice"));
        assert!(lines[3].contains("greater than 0"));
    }

    #[test]
    fn syntax_errors() {
        assert!(parse(quote!(name = )).is_err());
        assert!(parse(quote!(name "x")).is_err());
    }

    fn arg_attr(attr: syn::Attribute) -> syn::Result<ArgAttr> {
        let mut a = ArgAttr::default();
        a.add(&attr)?;
        Ok(a)
    }

    #[test]
    fn arg_rename() {
        let a = arg_attr(syn::parse_quote!(#[arg(rename = "firstUrl")])).unwrap();
        assert_eq!(a.rename.unwrap().value(), "firstUrl");
        let err = |attr| arg_attr(attr).err().unwrap().to_string();
        assert_eq!(
            err(syn::parse_quote!(#[arg(renam = "x")])),
            "unknown `#[arg]` option `renam`: did you mean `rename`?"
        );
        assert_eq!(
            err(syn::parse_quote!(#[arg(rename)])),
            "`rename` needs a value: write `#[arg(rename = \"jsonName\")]`"
        );
        assert_eq!(
            err(syn::parse_quote!(#[arg(rename = "")])),
            "the JSON property name must not be empty: write `rename = \"jsonName\"`"
        );
        assert_eq!(
            err(syn::parse_quote!(#[arg])),
            "`#[arg]` takes options: write `#[arg(rename = \"jsonName\")]`"
        );
        assert_eq!(
            err(syn::parse_quote!(#[arg(rename = "a", rename = "b")])),
            "`rename` is set twice: remove this one"
        );
    }
}
