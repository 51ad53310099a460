//! Tools defined in nested modules, registered from elsewhere by path: the
//! registration type has the function's path and visibility.
#![deny(warnings)]

mod tools {
    use mcpmqtt::{tool, ToolError};

    /// Adds one.
    #[tool]
    pub async fn inc(n: i64) -> i64 {
        n + 1
    }

    pub mod text {
        use mcpmqtt::{tool, ToolError};

        /// Shouts.
        #[tool(name = "shout")]
        pub(crate) async fn upper(text: String) -> Result<String, ToolError> {
            Ok(text.to_uppercase())
        }
    }

    /// Refuses everything (uses `ToolError` from this module's imports).
    #[tool]
    pub async fn refuse() -> Result<(), ToolError> {
        Err(ToolError::new("no"))
    }
}

use tools::text;

fn main() {
    let server = mcpmqtt::Server::builder("nested")
        .broker("mqtt://127.0.0.1:1883")
        .tool::<tools::inc>()
        .tool::<text::upper>()
        .tool::<crate::tools::refuse>()
        .build()
        .unwrap();
    let mut names: Vec<&str> = server.tools().iter().map(|t| t.name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["inc", "refuse", "shout"]);

    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(rt.block_on(tools::inc(1)), 2);
    assert_eq!(rt.block_on(text::upper("a".into())).unwrap(), "A");
    assert!(rt.block_on(tools::refuse()).is_err());
}
