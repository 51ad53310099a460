//! The input schema a `#[tool]` publishes: required and optional
//! properties, no unknown properties, descriptions from doc comments, enum
//! values from serde attributes, nested types inlined (no `$ref`).
#![deny(warnings)]

use mcpmqtt::{tool, Tool, ToolError};
use serde::{Deserialize, Serialize};

/// A social platform.
#[mcpmqtt::json_schema]
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Reddit,
    X,
    Hackernews,
    Linkedin,
}

/// What to watch on a platform.
#[mcpmqtt::json_schema]
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Watch {
    /// The platform to watch.
    pub platform: Platform,
    /// The keywords.
    pub keywords: Vec<String>,
}

/// Save watch configurations.
#[tool]
async fn save_watches(
    /// The configurations to save.
    watches: Vec<Watch>,
    /// Replace the existing ones instead of adding to them.
    replace: Option<bool>,
    /// Who asked.
    #[arg(rename = "requestedBy")]
    requested_by: String,
    /// The main platform.
    r#type: Platform,
) -> Result<u32, ToolError> {
    let _ = (replace, requested_by, r#type);
    Ok(watches.len() as u32)
}

/// The values of a JSON Schema `enum`, as strings.
macro_rules! enum_values {
    ($schema:expr) => {
        $schema["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect::<Vec<&str>>()
    };
}

fn main() {
    let def = save_watches::definition();
    let schema = def.input_schema();
    let text = schema.to_string();
    for key in ["$ref", "$defs", "definitions", "$schema", "nullable"] {
        assert!(!text.contains(key), "{key} in {text}");
    }
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["additionalProperties"], false);

    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["requestedBy", "type", "watches"], "{text}");

    let props = &schema["properties"];
    assert_eq!(props.as_object().unwrap().len(), 4, "{text}");
    assert_eq!(props["watches"]["description"], "The configurations to save.");
    assert_eq!(
        props["replace"]["description"],
        "Replace the existing ones instead of adding to them."
    );
    assert_eq!(props["requestedBy"]["description"], "Who asked.");
    assert_eq!(props["requestedBy"]["type"], "string");
    assert_eq!(props["type"]["description"], "The main platform.");

    let platforms = ["reddit", "x", "hackernews", "linkedin"];
    assert_eq!(enum_values!(props["type"]), platforms, "{text}");
    let watch = &props["watches"]["items"];
    assert_eq!(watch["type"], "object");
    assert_eq!(watch["properties"]["platform"]["description"], "The platform to watch.");
    assert_eq!(enum_values!(watch["properties"]["platform"]), platforms, "{text}");
    assert_eq!(watch["properties"]["keywords"]["items"]["type"], "string");

    assert_eq!(def.output_schema().unwrap()["type"], "integer");
}
