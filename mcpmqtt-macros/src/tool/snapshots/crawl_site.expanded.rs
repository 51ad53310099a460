/// Crawl a site,
///   one partial per page.
pub async fn crawl(
    ctx: &CallContext,
    http: State<HttpClient>,
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
        __S0: ::mcpmqtt::__private::StateType,
        __A0: ::mcpmqtt::__private::ToolArgument,
        __A1: ::mcpmqtt::__private::ToolArgument,
        __O: ::mcpmqtt::__private::ToolOutput,
        __E: ::mcpmqtt::__private::ToolErrorType,
        __F,
        __Fut,
    >(
        __output_schema: ::core::option::Option<::mcpmqtt::__private::serde_json::Value>,
        __call: __F,
    ) -> ::mcpmqtt::ToolDef
    where
        __F: ::core::ops::Fn(
                ::mcpmqtt::CallContext,
                ::mcpmqtt::State<__S0>,
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
            .title("Crawl a site")
            .annotations(
                ::mcpmqtt::ToolAnnotations::default().read_only(true).open_world(false),
            )
            .needs_state::<__S0>()
            .handler(move |
                __ctx: ::mcpmqtt::CallContext,
                __args: ::mcpmqtt::__private::serde_json::Value|
            async move {
                let __s0 = ::mcpmqtt::__private::state::<__S0>(&__ctx)?;
                let __ToolArgs { url: __a0, pages: __a1 } = ::mcpmqtt::__private::parse_arguments::<
                    __ToolArgs<__A0, __A1>,
                >(__args)?;
                ::mcpmqtt::__private::IntoToolResult::into_tool_result(
                    __call(__ctx, __s0, __a0, __a1).await,
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
                HttpClient,
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
                |__ctx: ::mcpmqtt::CallContext, __s0, __a0, __a1| async move {
                    crawl(&__ctx, __s0, __a0, __a1).await
                },
            )
        }
    }
};
