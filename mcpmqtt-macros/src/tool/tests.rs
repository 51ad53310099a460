use super::*;
use quote::quote;

fn pretty(tokens: TokenStream) -> String {
    prettyplease::unparse(&syn::parse2(tokens).expect("the expansion parses as a file"))
}

/// The text without whitespace or trailing commas, to look for code
/// whatever its layout.
fn squash(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    // prettyplease adds trailing commas to the lists it breaks.
    s.replace(",>", ">").replace(",)", ")").replace(",}", "}")
}

/// Asserts that `code` appears in `out`, ignoring whitespace.
#[track_caller]
fn assert_has(out: &str, code: &str) {
    assert!(squash(out).contains(&squash(code)), "`{code}` not in:\n{out}");
}

#[track_caller]
fn assert_lacks(out: &str, code: &str) {
    assert!(!squash(out).contains(&squash(code)), "`{code}` in:\n{out}");
}

fn expanded(attr: TokenStream, item: TokenStream) -> String {
    match expand(attr, item) {
        Ok(tokens) => pretty(tokens),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Every error message, in order.
fn errors(attr: TokenStream, item: TokenStream) -> Vec<String> {
    match expand(attr, item) {
        Ok(tokens) => panic!("expected errors, got:\n{}", pretty(tokens)),
        Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
    }
}

fn error(attr: TokenStream, item: TokenStream) -> String {
    let all = errors(attr, item);
    assert_eq!(all.len(), 1, "expected one error: {all:#?}");
    all.into_iter().next().unwrap()
}

#[test]
fn representative_tool() {
    let out = expanded(
        quote!(
            name = "crawl_site",
            allowed_callers = ["scout", "operator"],
            streaming,
            version = "1.2.0",
            timeout_ms = 5000,
            title = "Crawl a site",
            read_only,
            open_world = false
        ),
        quote! {
            /// Crawl a site,
            ///   one partial per page.
            pub async fn crawl(
                ctx: &CallContext,
                http: State<HttpClient>,
                /// The first URL.
                url: String,
                /// Pages to crawl.
                #[arg(rename = "maxPages")]
                pages: Option<u32>,
            ) -> Result<CrawlReport, ToolError> {
                todo!()
            }
        },
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/tool/snapshots/crawl_site.expanded.rs");
    if std::env::var_os("MCPMQTT_BLESS").is_some() {
        std::fs::write(path, &out).unwrap();
    }
    let expected = include_str!("snapshots/crawl_site.expanded.rs");
    assert!(
        out == expected,
        "the expansion changed (rerun with MCPMQTT_BLESS=1 to accept it); got:\n{out}"
    );
}

#[test]
fn minimal_tool() {
    let out = expanded(
        quote!(),
        quote!(
            async fn ping() {}
        ),
    );
    assert_has(&out, "async fn ping() {}");
    assert_has(&out, "struct __ToolArgs {}");
    assert_has(&out, "ToolDef::builder(\"ping\")");
    assert_has(&out, ".version(::core::env!(\"CARGO_PKG_VERSION\"))");
    assert_has(&out, "let __ToolArgs {} =");
    assert_has(&out, "IntoToolResult::into_tool_result(\n");
    assert_has(&out, "::mcpmqtt::__private::Plain(__call(__ctx).await)");
    assert_has(
        &out,
        "__tool::<_, _>(::core::option::Option::None, |_: ::mcpmqtt::CallContext| ping())",
    );
    // Nothing unused is emitted.
    for absent in [
        "__ToolArgument",
        "__ToolOutput",
        "__ToolErrorType",
        ".description(",
        ".allowed_callers(",
        ".streaming(",
        ".timeout(",
        ".title(",
        ".annotations(",
    ] {
        assert_lacks(&out, absent);
    }
}

#[test]
fn result_shapes() {
    let plain = expanded(
        quote!(),
        quote!(
            async fn f(x: u32) -> Vec<u32> {
                vec![x]
            }
        ),
    );
    assert_has(&plain, "__tool::<u32, Vec<u32>, _, _>(");
    assert_has(&plain, "Output = __O");
    assert_has(&plain, "Plain(__call(__ctx, __a0).await)");
    assert_has(&plain, "OutputSchema::<Vec<u32>>::new()");
    assert_lacks(&plain, "__ToolErrorType");

    let alias = expanded(
        quote!(),
        quote!(
            async fn f() -> anyhow::Result<u32> {
                Ok(1)
            }
        ),
    );
    assert_has(&alias, "__tool::<u32, _, _, _>(");
    assert_has(&alias, "OutputSchema::<u32>::new()");

    let unit_ok = expanded(
        quote!(),
        quote!(
            async fn f() -> Result<(), ToolError> {
                Ok(())
            }
        ),
    );
    assert_has(&unit_ok, "__tool::<(), ToolError, _, _>(::core::option::Option::None,");

    let unit = expanded(
        quote!(),
        quote!(
            async fn f() -> () {}
        ),
    );
    assert_has(&unit, "__tool::<_, _>(::core::option::Option::None");

    let opaque = expanded(
        quote!(),
        quote!(
            async fn f() -> MyResult {
                todo!()
            }
        ),
    );
    assert_has(&opaque, "__tool::<MyResult, _, _>(");
    let opaque = expanded(
        quote!(),
        quote!(
            async fn f() -> io::Result {
                todo!()
            }
        ),
    );
    assert_has(&opaque, "__R: ::mcpmqtt::__private::IntoToolResult");
    assert_has(&opaque, "__tool::<_, _, _>(::core::option::Option::None");
}

#[test]
fn description_from_docs_or_attribute() {
    let docs = expanded(
        quote!(),
        quote! {
            ///
            /// First line.
            ///
            ///    Second paragraph.
            ///
            async fn f() {}
        },
    );
    assert_has(&docs, ".description(\"First line.\\n\\nSecond paragraph.\")");
    let attr = expanded(
        quote!(description = "Given."),
        quote!(
            /// Ignored.
            async fn f() {}
        ),
    );
    assert_has(&attr, ".description(\"Given.\")");
    assert_has(&attr, "/// Ignored.\nasync fn f() {}");
}

#[test]
fn context_anywhere_and_any_path() {
    let out = expanded(
        quote!(streaming),
        quote!(
            async fn f(a: u32, _c: &'_ mcpmqtt::CallContext, b: u32) {}
        ),
    );
    assert_has(&out, "f(__a0, &__ctx, __a1).await");
    assert_has(
        &out,
        "struct __ToolArgs<__A0, __A1> {\n        a: __A0,\n        b: __A1,\n    }",
    );
}

#[test]
fn raw_and_mut_identifiers() {
    let out = expanded(
        quote!(),
        quote!(
            async fn r#match(r#type: String, mut n: u32) {}
        ),
    );
    assert_has(&out, "ToolDef::builder(\"match\")");
    assert_has(&out, "r#type: __A0");
    assert_has(&out, "n: __A1");
    assert_has(&out, "let __ToolArgs { r#type: __a0, n: __a1 }");
    assert_has(&out, "struct r#match {}");
}

#[test]
fn other_parameter_attributes_stay() {
    let out = expanded(
        quote!(),
        quote!(
            async fn f(
                #[allow(unused)]
                /// Doc.
                x: u32,
            ) {
            }
        ),
    );
    assert_has(&out, "async fn f(#[allow(unused)] x: u32) {}");
    assert_has(&out, "/// Doc.\n        x: __A0");
}

#[test]
fn signature_errors() {
    assert_eq!(
        error(
            quote!(),
            quote!(
                fn f() {}
            )
        ),
        "tool functions must be `async fn`: write `async fn f(...)`"
    );
    assert_eq!(
        error(quote!(), quote!(async fn f(&self) {})),
        "tool functions cannot take `self`: write `f` as a free `async fn`, outside the `impl` block (it may call methods from there)"
    );
    assert_eq!(
        error(quote!(), quote!(async fn f<T>(x: T) {})),
        "tool functions cannot be generic: the argument and result types must be concrete so that their JSON schemas are known; remove the type parameters"
    );
    assert_eq!(
        error(quote!(), quote!(async fn f<'a>(ctx: &'a CallContext) {})),
        "tool functions cannot have lifetime parameters: take the context as `ctx: &CallContext` and every other argument by value"
    );
    assert_eq!(
        error(
            quote!(),
            quote!(
                async fn f()
                where
                    u32: Copy,
                {
                }
            )
        ),
        "tool functions cannot have a `where` clause: remove it"
    );
    assert!(error(
        quote!(),
        quote!(
            async unsafe fn f() {}
        )
    )
    .starts_with("tool functions cannot be `unsafe`"));
    assert!(error(
        quote!(),
        quote!(
            async extern "C" fn f() {}
        )
    )
    .starts_with("tool functions cannot be `extern`"));
    assert!(error(
        quote!(),
        quote!(
            const fn f() {}
        )
    )
    .starts_with("tool functions must be `async fn`, not `const fn`"));
    assert_eq!(
        error(
            quote!(),
            quote!(
                struct S;
            )
        ),
        "`#[tool]` applies to an `async fn`: write `#[tool] async fn name(...) { ... }`"
    );
}

#[test]
fn not_a_function_is_reported_on_its_head() {
    let head = |item: TokenStream| item_head(item).to_string();
    assert_eq!(
        head(quote!(
            #[derive(Debug)]
            pub(crate) struct Ping {
                n: u32,
            }
        )),
        "struct Ping"
    );
    assert_eq!(head(quote!(impl Crawler { fn f() {} })), "impl Crawler");
    assert_eq!(
        head(quote!(
            pub const X: u32 = 1;
        )),
        "const X"
    );
    assert_eq!(head(quote!(#[doc = "x"])), "# [doc = \"x\"]");
}

#[test]
fn argument_errors() {
    assert_eq!(
        error(quote!(), quote!(async fn f((a, b): (i32, i32)) {})),
        "use a plain identifier for this argument: its name is the argument's JSON property name (write `name: (i32, i32)` and destructure it in the body)"
    );
    assert!(error(
        quote!(),
        quote!(
            async fn f(_: u32) {}
        )
    )
    .starts_with("use a plain identifier"));
    assert!(error(
        quote!(),
        quote!(
            async fn f(ref x: u32) {}
        )
    )
    .starts_with("use a plain identifier"));
    assert_eq!(
        error(
            quote!(),
            quote!(
                async fn f(s: &str) {}
            )
        ),
        "`&str` is borrowed, but tool arguments are deserialized from JSON, so they must be owned: take `String`"
    );
    assert_eq!(
        error(
            quote!(),
            quote!(
                async fn f(s: &[u8]) {}
            )
        ),
        "`&[u8]` is borrowed, but tool arguments are deserialized from JSON, so they must be owned: take `Vec<u8>`"
    );
    assert_eq!(
        error(quote!(), quote!(async fn f(s: Option<&'static Vec<u8>>) {})),
        "`&'static Vec<u8>` is borrowed, but tool arguments are deserialized from JSON, so they must be owned: take `Vec<u8>`"
    );
    assert_eq!(
        error(
            quote!(),
            quote!(
                async fn f(s: Cow<'_, str>) {}
            )
        ),
        "tool arguments are deserialized from JSON, so they cannot borrow: use an owned type (or `'static`)"
    );
    assert_eq!(
        error(
            quote!(),
            quote!(
                async fn f(s: impl Into<String>) {}
            )
        ),
        "`impl Into<String>` cannot be a tool argument: arguments are deserialized from JSON, into a concrete type; take `String`"
    );
    assert_eq!(
        error(
            quote!(),
            quote!(
                async fn f(ctx: CallContext) {}
            )
        ),
        "take the context by reference: `ctx: &CallContext`"
    );
    assert_eq!(
        error(
            quote!(),
            quote!(
                async fn f(ctx: &mut CallContext) {}
            )
        ),
        "take the context by shared reference: `ctx: &CallContext` (its methods take `&self`)"
    );
    assert_eq!(
        error(
            quote!(),
            quote!(
                async fn f(ctx: &'static CallContext) {}
            )
        ),
        "write `&CallContext` without a lifetime: the context is lent for the call only"
    );
    assert_eq!(
        error(
            quote!(),
            quote!(
                async fn f(a: &CallContext, b: &CallContext) {}
            )
        ),
        "the tool already takes the context as `a`: remove this second context argument"
    );
    assert_eq!(
        error(
            quote!(),
            quote!(
                async fn f(#[arg(rename = "c")] ctx: &CallContext) {}
            )
        ),
        "`#[arg]` applies to the arguments read from JSON, not to the context: remove it"
    );
    assert!(error(
        quote!(),
        quote!(
            async fn f(#[cfg(test)] x: u32) {}
        )
    )
    .starts_with("`#[cfg]` is not supported"));
    assert!(error(
        quote!(),
        quote!(
            async fn f() -> impl Serialize {}
        )
    )
    .starts_with("`impl Trait` cannot be the result of a tool"));
}

#[test]
fn impl_trait_arguments_get_a_concrete_type() {
    let message = |item: TokenStream| error(quote!(), item);
    let fix = |m: String| m.rsplit("; ").next().unwrap().to_owned();
    assert_eq!(
        fix(message(quote!(
            async fn f(s: impl AsRef<str>) {}
        ))),
        "take `String`"
    );
    assert_eq!(
        fix(message(quote!(
            async fn f(s: impl AsRef<[u8]>) {}
        ))),
        "take `Vec<u8>`"
    );
    assert_eq!(
        fix(message(quote!(
            async fn f(p: impl AsRef<Path>) {}
        ))),
        "take `PathBuf`"
    );
    assert_eq!(
        fix(message(quote!(
            async fn f(s: impl ToString + Send) {}
        ))),
        "take `String`"
    );
    assert_eq!(
        fix(message(quote!(
            async fn f(s: impl IntoIterator<Item = u32>) {}
        ))),
        "take `Vec<u32>`"
    );
    assert_eq!(
        fix(message(quote!(
            async fn f(s: impl IntoIterator<Item = &'static str>) {}
        ))),
        "take `Vec<String>`"
    );
    assert_eq!(
        message(quote!(async fn f(f: impl Fn(u32) -> u32) {})),
        "`impl Fn(u32) -> u32` cannot be a tool argument: arguments are deserialized from JSON, into a concrete type; take a concrete type that implements `serde::Deserialize`"
    );
}

#[test]
fn context_of_the_wrong_type() {
    let message = |item: TokenStream| error(quote!(), item);
    assert_eq!(
        message(quote!(async fn f(ctx: Arc<CallContext>) {})),
        "`Arc<CallContext>` cannot be the context: take it as `ctx: &CallContext`, lent for the call (it is `Clone`: clone it in the body to keep it longer)"
    );
    assert!(message(quote!(
        async fn f(ctx: Option<&CallContext>) {}
    ))
    .starts_with("`Option<&CallContext>` cannot be the context"));
    assert!(message(quote!(
        async fn f(ctx: &&CallContext) {}
    ))
    .starts_with("`&&CallContext` cannot be the context"));
    assert_eq!(
        message(quote!(async fn f(cx: &Context) {})),
        "`&Context` is not the call context: write `cx: &CallContext`, with `mcpmqtt::CallContext` (the macro recognises the context by that type name)"
    );
    assert!(message(quote!(
        async fn f(c: &mcpmqtt::ToolContext) {}
    ))
    .starts_with("`&mcpmqtt::ToolContext` is not the call context: write `c: &CallContext`"));
    // Named `ctx`: meant as the context, whatever the type.
    assert!(message(quote!(
        async fn f(_ctx: &Server) {}
    ))
    .starts_with("`&Server` is not the call context: write `_ctx: &CallContext`"));
    assert!(message(quote!(
        async fn f(ctx: RequestContext) {}
    ))
    .starts_with("`RequestContext` is not the call context"));
    // Not meant as the context: the ordinary messages.
    assert!(message(quote!(
        async fn f(c: &Server) {}
    ))
    .starts_with("`&Server` is borrowed"));
    assert!(message(quote!(
        async fn f(context: &str) {}
    ))
    .starts_with("`&str` is borrowed"));
    expanded(
        quote!(),
        quote!(
            async fn f(context: SearchContext, ctx_len: u32) {}
        ),
    );
}

#[test]
fn duplicate_json_names() {
    assert_eq!(
        error(
            quote!(),
            quote!(
                async fn f(a: u32, #[arg(rename = "a")] b: u32) {}
            )
        ),
        "`a` and `b` both have the JSON property name `a`: give one of them another with `#[arg(rename = \"...\")]`"
    );
    assert!(error(
        quote!(),
        quote!(
            async fn f(r#type: u32, #[arg(rename = "type")] b: u32) {}
        )
    )
    .contains("`type`"));
    // Renaming away from a clash is fine.
    expanded(
        quote!(),
        quote!(
            async fn f(#[arg(rename = "b")] a: u32, #[arg(rename = "a")] b: u32) {}
        ),
    );
}

#[test]
fn streaming_needs_the_context() {
    assert_eq!(
        error(
            quote!(streaming),
            quote!(
                async fn f(x: u32) {}
            )
        ),
        "a `streaming` tool emits its partials through its context: add `ctx: &CallContext` to the arguments of `f`"
    );
    expanded(
        quote!(streaming = false),
        quote!(
            async fn f(x: u32) {}
        ),
    );
}

#[test]
fn default_name_is_checked() {
    let long = "a".repeat(129);
    let ident = format_ident!("{}", long);
    assert_eq!(
        error(quote!(), quote!(async fn #ident() {})),
        format!(
            "the function's name \"{}…\" (129 bytes) is not a valid tool name: it is longer than 128 bytes; set a shorter one with `#[tool(name = \"...\")]`, or rename the function",
            "a".repeat(32)
        )
    );
    // An explicit valid name replaces it.
    expanded(quote!(name = "short"), quote!(async fn #ident() {}));
}

#[test]
fn errors_accumulate_across_attribute_and_signature() {
    let all = errors(
        quote!(nmae = "x", allowed_callers = ["a", "a"]),
        quote!(
            fn f(self, (a, b): (u32, u32), s: &str) {}
        ),
    );
    assert_eq!(all.len(), 6, "{all:#?}");
    assert!(all[0].contains("did you mean `name`"));
    assert!(all[1].contains("listed twice"));
    assert!(all[2].contains("must be `async fn`"));
    assert!(all[3].contains("cannot take `self`"));
    assert!(all[4].contains("plain identifier"));
    assert!(all[5].contains("`&str` is borrowed"));
}

#[test]
fn error_output_keeps_the_function() {
    let item = quote! {
        /// Docs.
        pub fn crawl(/// The URL.
            #[arg(rename = "u")] url: String) -> u32 { 1 }
    };
    let err = expand(quote!(), item.clone()).unwrap_err();
    let out = pretty(error_output(err, item));
    assert_has(&out, "::core::compile_error! {");
    assert_has(&out, "/// Docs.\npub fn crawl(url: String) -> u32 {\n    1\n}");
    assert_has(&out, "pub struct crawl {}");
    assert_has(&out, "impl ::mcpmqtt::Tool for crawl");

    // A method gets no stand-in struct, which could not live in an `impl`.
    let method = quote!(
        async fn crawl(
            &self,
            /// Doc.
            url: String,
        ) {
        }
    );
    let err = expand(quote!(), method.clone()).unwrap_err();
    let out = error_output(err, method).to_string();
    assert_lacks(&out, "struct");
    assert_lacks(&out, "Doc.");

    // Something that is not a function is passed through untouched.
    let item = quote!(
        struct S;
    );
    let err = expand(quote!(), item.clone()).unwrap_err();
    assert!(error_output(err, item).to_string().ends_with("struct S ;"));
}

#[test]
fn type_strings() {
    let ty = |t: TokenStream| type_to_string(&syn::parse2(t).unwrap());
    assert_eq!(ty(quote!(Vec<Option<u8>>)), "Vec<Option<u8>>");
    assert_eq!(ty(quote!(&'static str)), "&'static str");
    assert_eq!(
        ty(quote!(std::collections::HashMap<String, u32>)),
        "std::collections::HashMap<String, u32>"
    );
    assert_eq!(ty(quote!((i32, i32))), "(i32, i32)");
    assert_eq!(ty(quote!([u8; 4])), "[u8; 4]");
    assert_eq!(ty(quote!(impl Fn(u32) -> u32)), "impl Fn(u32) -> u32");
    assert_eq!(ty(quote!(&mut (u8, u8))), "&mut (u8, u8)");
    assert_eq!(ty(quote!(Box<dyn (Fn())>)), "Box<dyn (Fn())>");
}

#[test]
fn option_and_vec_are_peeled() {
    let peeled = |t: TokenStream| {
        let ty: Type = syn::parse2(t).unwrap();
        let (wrappers, inner) = peel(&ty);
        (wrappers, type_to_string(inner))
    };
    use Wrapper::{Option as O, Vec as V};
    assert_eq!(peeled(quote!(u32)), (vec![], "u32".to_owned()));
    assert_eq!(peeled(quote!(Option<u32>)), (vec![O], "u32".to_owned()));
    assert_eq!(peeled(quote!(Option<Vec<Window>>)), (vec![O, V], "Window".to_owned()));
    assert_eq!(peeled(quote!(std::option::Option<u32>)), (vec![O], "u32".to_owned()));
    assert_eq!(peeled(quote!(::alloc::vec::Vec<u32>)), (vec![V], "u32".to_owned()));
    // Not the standard types, or not one type argument: left whole.
    assert_eq!(peeled(quote!(my::Option<u32>)), (vec![], "my::Option<u32>".to_owned()));
    assert_eq!(peeled(quote!(Vec<u8, A>)), (vec![], "Vec<u8, A>".to_owned()));
    assert_eq!(peeled(quote!(Vec)), (vec![], "Vec".to_owned()));
    assert_eq!(
        peeled(quote!(HashMap<String, u32>)),
        (vec![], "HashMap<String, u32>".to_owned())
    );

    let out = expanded(
        quote!(),
        quote!(
            async fn f(a: Option<Vec<Window>>, b: Vec<u8>) {}
        ),
    );
    assert_has(
        &out,
        "a: ::core::option::Option<::std::vec::Vec<__A0>>, b: ::std::vec::Vec<__A1>",
    );
    assert_has(&out, "__F: ::core::ops::Fn(::mcpmqtt::CallContext, ::core::option::Option<::std::vec::Vec<__A0>>, ::std::vec::Vec<__A1>) -> __Fut");
    assert_has(&out, "__tool::<Window, u8, _, _>(");
}

#[test]
fn registration_type_follows_the_function() {
    for (vis, expected) in [
        (quote!(), "struct inc {}"),
        (quote!(pub), "pub struct inc {}"),
        (quote!(pub(crate)), "pub(crate) struct inc {}"),
        (quote!(pub(in crate::tools)), "pub(in crate::tools) struct inc {}"),
    ] {
        let out = expanded(quote!(), quote!(#vis async fn inc(n: i64) -> i64 { n + 1 }));
        assert_has(&out, expected);
        assert_has(&out, "impl ::mcpmqtt::Tool for inc {");
        assert_has(&out, "fn definition() -> ::mcpmqtt::ToolDef {");
        assert_has(
            &out,
            "///The `#[tool]` registration of [`inc`](fn@inc): register it with `.tool::<inc>()`.",
        );
    }
}

#[test]
fn input_schema_struct() {
    let out = expanded(
        quote!(),
        quote! {
            async fn search(
                _ctx: &CallContext,
                /// Where.
                platform: Platform,
                /// At most this many.
                #[arg(rename = "maxResults")]
                limit: Option<u32>,
                r#type: Vec<String>,
            ) {}
        },
    );
    // The context is not a property; every other argument is, in order,
    // with its docs and rename, and unknown properties are refused.
    assert_has(
        &out,
        "#[serde(crate = \"::mcpmqtt::__private::serde\", deny_unknown_fields)]",
    );
    assert_has(
        &out,
        "struct __ToolArgs<__A0, __A1, __A2> {
            /// Where.
            platform: __A0,
            /// At most this many.
            #[serde(rename = \"maxResults\")]
            limit: ::core::option::Option<__A1>,
            r#type: ::std::vec::Vec<__A2>,
        }",
    );
    assert_lacks(&out, "_ctx:__A");
    assert_has(
        &out,
        ".input_schema(::mcpmqtt::__private::input_schema::<__ToolArgs<__A0, __A1, __A2>>())",
    );
    assert_has(&out, "__tool::<Platform, u32, String, _, _>(");
    assert_has(&out, "search(&__ctx, __a0, __a1, __a2).await");
}

#[test]
fn options_reach_the_builder() {
    let out = expanded(
        quote!(
            description = "Given.",
            allowed_callers = ["scout"],
            streaming = true,
            timeout_ms = 250
        ),
        quote!(
            async fn f(ctx: &CallContext) {}
        ),
    );
    assert_has(
        &out,
        "ToolDef::builder(\"f\")
            .description(\"Given.\")
            .input_schema(::mcpmqtt::__private::input_schema::<__ToolArgs>())
            .allowed_callers([\"scout\"])
            .streaming(true)
            .version(::core::env!(\"CARGO_PKG_VERSION\"))
            .timeout(::core::time::Duration::from_millis(250))",
    );
}

#[test]
fn error_output_after_an_attribute_error() {
    // An attribute mistake still emits the function and a stand-in
    // registration, so that calls and `.tool::<crawl>()` resolve.
    let item = quote!(
        pub(crate) async fn crawl(url: String) -> String {
            url
        }
    );
    let err = expand(quote!(name = "crawl site"), item.clone()).unwrap_err();
    assert_eq!(err.to_string(), "invalid tool name \"crawl site\": it contains whitespace; a tool name is one MQTT topic level: write `name = \"crawl_site\"`");
    let out = pretty(error_output(err, item));
    assert_has(&out, "pub(crate) async fn crawl(url: String) -> String {");
    assert_has(&out, "pub(crate) struct crawl {}");
    assert_has(&out, "impl ::mcpmqtt::Tool for crawl {");
    // Only the error itself, no other item that could fail to compile.
    assert_lacks(&out, "__tool");
    assert_lacks(&out, "__ToolArgs");
}

#[test]
fn states_are_not_arguments() {
    let out = expanded(
        quote!(),
        quote!(
            async fn post(db: State<Db>, text: String, config: mcpmqtt::State<Config>) -> u32 {
                0
            }
        ),
    );
    assert_has(&out, "struct __ToolArgs<__A0> {");
    assert_has(&out, "text: __A0");
    assert_has(&out, ".needs_state::<__S0>()");
    assert_has(&out, ".needs_state::<__S1>()");
    assert_has(&out, "let __s0 = ::mcpmqtt::__private::state::<__S0>(&__ctx)?;");
    assert_has(&out, "__tool::<Db, Config, String, u32, _, _>(");
    assert_has(&out, "post(__s0, __a0, __s1)");
    // A tool without states declares none.
    let plain = expanded(
        quote!(),
        quote!(
            async fn ping() {}
        ),
    );
    assert!(!plain.contains("needs_state"), "{plain}");
}

#[test]
fn state_misuse_is_one_error_each() {
    let untyped = error(
        quote!(),
        quote!(
            async fn t(db: State) {}
        ),
    );
    assert!(untyped.contains("write `db: State<T>`"), "{untyped}");
    let borrowed = error(
        quote!(),
        quote!(
            async fn t(db: &mut State<Db>) {}
        ),
    );
    assert!(
        borrowed.contains("take the state by value: `db: State<Db>`"),
        "{borrowed}"
    );
    let twice = error(
        quote!(),
        quote!(
            async fn t(a: State<Db>, b: mcpmqtt::State<Db>) {}
        ),
    );
    assert!(twice.contains("already takes `State<Db>` as `a`"), "{twice}");
    let nested = error(
        quote!(),
        quote!(
            async fn t(db: Vec<State<Db>>) {}
        ),
    );
    assert!(nested.contains("write `db: State<Db>`"), "{nested}");
    // A user's own `State` inside a JSON argument, or through another path,
    // is an ordinary argument.
    let own = expanded(
        quote!(),
        quote!(
            async fn t(states: Vec<State>, s: us::State<u8>) {}
        ),
    );
    assert!(!own.contains("needs_state"), "{own}");
}
