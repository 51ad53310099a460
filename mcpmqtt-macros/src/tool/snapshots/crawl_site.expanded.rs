/// Crawl a site,
///   one partial per page.
pub async fn crawl(
    ctx: &CallContext,
    url: String,
    pages: Option<u32>,
) -> Result<CrawlReport, ToolError> {
    todo!()
}
///The `#[tool]` registration of [`crawl`](fn@crawl): register it with `.tool::<crawl>()`.
#[allow(non_camel_case_types, dead_code)]
#[derive(Debug)]
pub struct crawl {}
const _: () = {
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be a tool argument",
        label = "tool arguments are read from JSON: this type must implement `serde::Deserialize` and `schemars::JsonSchema`",
        note = "derive `serde::Deserialize` on it, and add `#[mcpmqtt::json_schema]` to derive `schemars::JsonSchema`"
    )]
    trait __ToolArgument: ::mcpmqtt::__private::serde::de::DeserializeOwned + ::mcpmqtt::__private::schemars::JsonSchema {}
    impl<__T> __ToolArgument for __T
    where
        __T: ::mcpmqtt::__private::serde::de::DeserializeOwned
            + ::mcpmqtt::__private::schemars::JsonSchema,
    {}
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be returned from a tool",
        label = "the result of a tool is sent as JSON: this type must implement `serde::Serialize`",
        note = "derive `serde::Serialize` on it (and add `#[mcpmqtt::json_schema]` to publish its output schema)"
    )]
    trait __ToolOutput: ::mcpmqtt::__private::serde::Serialize {}
    impl<__T: ::mcpmqtt::__private::serde::Serialize> __ToolOutput for __T {}
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be the error of a tool",
        label = "this error must convert into `mcpmqtt::ToolError`",
        note = "any type that implements `std::fmt::Display` converts; or return `mcpmqtt::ToolError` itself"
    )]
    trait __ToolErrorType: ::core::convert::Into<::mcpmqtt::ToolError> {}
    impl<__T: ::core::convert::Into<::mcpmqtt::ToolError>> __ToolErrorType for __T {}
    #[derive(
        ::mcpmqtt::__private::serde::Deserialize,
        ::mcpmqtt::__private::schemars::JsonSchema
    )]
    #[serde(crate = "::mcpmqtt::__private::serde", deny_unknown_fields)]
    #[schemars(crate = "::mcpmqtt::__private::schemars")]
    struct __ToolArgs<__A0, __A1> {
        /// The first URL.
        url: __A0,
        /// Pages to crawl.
        #[serde(rename = "maxPages")]
        pages: ::core::option::Option<__A1>,
    }
    fn __tool<
        __A0: __ToolArgument,
        __A1: __ToolArgument,
        __O: __ToolOutput,
        __E: __ToolErrorType,
        __F,
        __Fut,
    >(
        __output_schema: ::core::option::Option<::mcpmqtt::__private::serde_json::Value>,
        __call: __F,
    ) -> ::mcpmqtt::ToolDef
    where
        __F: ::core::ops::Fn(
                ::mcpmqtt::CallContext,
                __A0,
                ::core::option::Option<__A1>,
            ) -> __Fut + ::core::marker::Copy + ::core::marker::Send
            + ::core::marker::Sync + 'static,
        __Fut: ::core::future::Future<Output = ::core::result::Result<__O, __E>>
            + ::core::marker::Send + 'static,
    {
        let __builder = ::mcpmqtt::ToolDef::builder("crawl_site")
            .description("Crawl a site,\none partial per page.")
            .input_schema(::mcpmqtt::__private::input_schema::<__ToolArgs<__A0, __A1>>())
            .allowed_callers(["scout", "operator"])
            .streaming(true)
            .version("1.2.0")
            .timeout(::core::time::Duration::from_millis(5000))
            .handler(move |
                __ctx: ::mcpmqtt::CallContext,
                __args: ::mcpmqtt::__private::serde_json::Value|
            async move {
                let __ToolArgs { url: __a0, pages: __a1 } = ::mcpmqtt::__private::parse_arguments::<
                    __ToolArgs<__A0, __A1>,
                >(__args)?;
                ::mcpmqtt::__private::IntoToolResult::into_tool_result(
                    __call(__ctx, __a0, __a1).await,
                )
            });
        let __builder = match __output_schema {
            ::core::option::Option::Some(__schema) => __builder.output_schema(__schema),
            ::core::option::Option::None => __builder,
        };
        __builder
            .build()
            .expect("`#[tool]` checked this tool's name and callers at compile time")
    }
    impl ::mcpmqtt::Tool for crawl {
        fn definition() -> ::mcpmqtt::ToolDef {
            __tool::<
                String,
                u32,
                CrawlReport,
                ToolError,
                _,
                _,
            >(
                {
                    #[allow(unused_imports)]
                    use ::mcpmqtt::__private::{
                        HasOutputSchema as _, NoOutputSchema as _,
                    };
                    (&&::mcpmqtt::__private::OutputSchema::<CrawlReport>::new())
                        .output_schema()
                },
                |__ctx: ::mcpmqtt::CallContext, __a0, __a1| async move {
                    crawl(&__ctx, __a0, __a1).await
                },
            )
        }
    }
};
