//! `#[json_schema]`: derives `schemars::JsonSchema` through mcpmqtt's re-export.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{parse_quote, Attribute, Item};

/// Re-emits a struct or enum with `#[derive(JsonSchema)]` and
/// `#[schemars(crate = ...)]` in front of its attributes, so that the derive
/// comes before any helper attribute (`#[schemars(...)]`, `#[serde(...)]`)
/// the user wrote.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    if !attr.is_empty() {
        return Err(syn::Error::new_spanned(
            attr,
            "`#[json_schema]` takes no arguments: write `#[mcpmqtt::json_schema]` (and `#[schemars(...)]` for schema options)",
        ));
    }
    let mut item: Item = syn::parse2(item.clone()).map_err(|_| not_a_type(&item))?;
    let attrs = match &mut item {
        Item::Struct(s) => &mut s.attrs,
        Item::Enum(e) => &mut e.attrs,
        other => return Err(not_a_type(other)),
    };
    let added: [Attribute; 2] = [
        parse_quote!(#[derive(::mcpmqtt::__private::schemars::JsonSchema)]),
        parse_quote!(#[schemars(crate = "::mcpmqtt::__private::schemars")]),
    ];
    attrs.splice(0..0, added);
    Ok(item.into_token_stream())
}

fn not_a_type(tokens: &dyn ToTokens) -> syn::Error {
    syn::Error::new_spanned(
        tokens,
        "`#[json_schema]` applies to a struct or an enum: it derives `schemars::JsonSchema` for it",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn pretty(tokens: TokenStream) -> String {
        prettyplease::unparse(&syn::parse2(tokens).unwrap())
    }

    #[test]
    fn derives_in_front() {
        let out = expand(
            quote!(),
            quote! {
                /// A platform.
                #[derive(Debug, serde::Deserialize)]
                #[serde(rename_all = "lowercase")]
                pub enum Platform { Reddit, X }
            },
        )
        .unwrap();
        assert_eq!(
            pretty(out),
            r#"#[derive(::mcpmqtt::__private::schemars::JsonSchema)]
#[schemars(crate = "::mcpmqtt::__private::schemars")]
/// A platform.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Reddit,
    X,
}
"#
        );
    }

    #[test]
    fn structs_too() {
        let out = expand(
            quote!(),
            quote!(
                struct Window<T> {
                    from: T,
                }
            ),
        )
        .unwrap();
        assert!(pretty(out).starts_with("#[derive(::mcpmqtt::__private::schemars::JsonSchema)]"));
    }

    #[test]
    fn errors() {
        let err = |attr, item| expand(attr, item).unwrap_err().to_string();
        assert!(err(
            quote!(rename_all = "x"),
            quote!(
                struct A;
            )
        )
        .starts_with("`#[json_schema]` takes no arguments"));
        assert!(err(
            quote!(),
            quote!(
                fn f() {}
            )
        )
        .starts_with("`#[json_schema]` applies to a struct or an enum"));
        assert!(
            err(quote!(), quote!(union U { a: u32 })).starts_with("`#[json_schema]` applies to a struct or an enum")
        );
    }
}
