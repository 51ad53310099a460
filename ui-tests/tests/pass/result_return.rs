//! The shapes of result: `Result<T, ToolError>`, `Result<T, E: Display>`, a
//! `Result` alias, a plain value, `()`, and a type without a schema.
#![deny(warnings)]

use std::fmt;

use mcpmqtt::{tool, Tool, ToolError};

#[derive(Debug)]
pub struct MyError(String);

impl fmt::Display for MyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "my error: {}", self.0)
    }
}

type Result<T, E = MyError> = std::result::Result<T, E>;

/// Tool error.
#[tool]
async fn with_tool_error(fail: bool) -> std::result::Result<u32, ToolError> {
    if fail {
        Err(ToolError::new("failed").with_code("E1"))
    } else {
        Ok(1)
    }
}

/// Any `Display` error.
#[tool]
async fn with_display_error(text: String) -> std::result::Result<u32, std::num::ParseIntError> {
    text.parse()
}

/// An alias with a default error type.
#[tool]
async fn with_alias(text: String) -> Result<String> {
    if text.is_empty() {
        Err(MyError("empty".into()))
    } else {
        Ok(text)
    }
}

/// A plain value.
#[tool]
async fn plain(values: Vec<i64>) -> Option<i64> {
    values.into_iter().max()
}

/// A unit `Ok`.
#[tool]
async fn unit_ok() -> Result<(), ToolError> {
    Ok(())
}

/// A result that serialises but has no schema.
#[tool]
async fn no_schema() -> NoSchema {
    NoSchema { n: 1 }
}

#[derive(serde::Serialize)]
pub struct NoSchema {
    n: u32,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(
        with_tool_error::definition().output_schema().unwrap()["type"],
        "integer"
    );
    assert_eq!(
        with_display_error::definition().output_schema().unwrap()["type"],
        "integer"
    );
    assert_eq!(with_alias::definition().output_schema().unwrap()["type"], "string");
    assert!(plain::definition().output_schema().is_some());
    assert!(unit_ok::definition().output_schema().is_none());
    assert!(no_schema::definition().output_schema().is_none());

    assert_eq!(with_tool_error(false).await.unwrap(), 1);
    assert_eq!(with_tool_error(true).await.unwrap_err().code(), Some("E1"));
    assert!(with_display_error("x".into()).await.is_err());
    assert_eq!(with_alias("a".into()).await.unwrap(), "a");
    assert_eq!(plain(vec![3, 9, 4]).await, Some(9));
    unit_ok().await.unwrap();
    assert_eq!(no_schema().await.n, 1);
}
