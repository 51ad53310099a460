//! JSON Schemas for tool cards: derived with schemars, then made
//! self-contained, because many MCP clients cannot resolve `$ref`.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{Map, Value};

/// How deep a recursive type is unrolled before the schema gives up on
/// describing it (and accepts anything at that depth).
const MAX_INLINE_DEPTH: usize = 8;

fn settings() -> SchemaSettings {
    SchemaSettings::draft07().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    })
}

/// The input schema of a tool whose arguments deserialize into `T`: an
/// object schema with no `$ref`, `$defs`, `definitions` or `nullable`.
pub fn input_schema<T: ?Sized + JsonSchema>() -> Value {
    let mut schema = settings().for_deserialize().into_generator().into_root_schema_for::<T>().to_value();
    make_self_contained(&mut schema);
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("title");
        obj.entry("properties").or_insert_with(|| Value::Object(Map::new()));
        obj.entry("additionalProperties").or_insert(Value::Bool(false));
    }
    schema
}

/// The schema of a tool's result type.
pub fn output_schema<T: ?Sized + JsonSchema>() -> Value {
    let mut schema = settings().for_serialize().into_generator().into_root_schema_for::<T>().to_value();
    make_self_contained(&mut schema);
    schema
}

/// Inlines every local `$ref` and drops the definitions and `nullable`.
pub fn make_self_contained(schema: &mut Value) {
    let mut defs = Map::new();
    if let Some(obj) = schema.as_object_mut() {
        for key in ["$defs", "definitions"] {
            if let Some(Value::Object(d)) = obj.remove(key) {
                defs.extend(d);
            }
        }
        obj.remove("$schema");
    }
    inline(schema, &defs, 0);
}

fn inline(node: &mut Value, defs: &Map<String, Value>, depth: usize) {
    match node {
        Value::Object(obj) => {
            obj.remove("nullable");
            if let Some(Value::String(reference)) = obj.get("$ref") {
                let name = reference.rsplit('/').next().unwrap_or_default();
                let mut target = if depth < MAX_INLINE_DEPTH {
                    defs.get(name).cloned().unwrap_or(Value::Object(Map::new()))
                } else {
                    Value::Object(Map::new())
                };
                inline(&mut target, defs, depth + 1);
                obj.remove("$ref");
                if let Value::Object(t) = target {
                    for (k, v) in t {
                        obj.entry(k).or_insert(v);
                    }
                }
                return;
            }
            for value in obj.values_mut() {
                inline(value, defs, depth);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| inline(v, defs, depth)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Platform {
        Reddit,
        X,
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Window {
        /// First day.
        from: String,
        platform: Platform,
    }

    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Args {
        /// The platform.
        platform: Option<Platform>,
        window: Window,
        tags: Vec<Platform>,
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Tree {
        children: Vec<Tree>,
    }

    fn has_key(v: &Value, key: &str) -> bool {
        match v {
            Value::Object(o) => o.contains_key(key) || o.values().any(|v| has_key(v, key)),
            Value::Array(a) => a.iter().any(|v| has_key(v, key)),
            _ => false,
        }
    }

    #[test]
    fn nested_types_are_inlined() {
        let s = input_schema::<Args>();
        for key in ["$ref", "$defs", "definitions", "nullable", "$schema"] {
            assert!(!has_key(&s, key), "{key} left in {s:#}");
        }
        assert_eq!(s["type"], "object");
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"], json!(["window", "tags"]));
        assert_eq!(s["properties"]["window"]["properties"]["platform"]["enum"], json!(["reddit", "x"]));
        assert_eq!(s["properties"]["window"]["properties"]["from"]["description"], "First day.");
        assert_eq!(s["properties"]["tags"]["items"]["enum"], json!(["reddit", "x"]));
        let platform = &s["properties"]["platform"];
        assert_eq!(platform["description"], "The platform.");
        assert!(platform.to_string().contains("reddit"), "{platform}");
    }

    #[test]
    fn recursive_types_terminate() {
        let s = input_schema::<Tree>();
        assert!(!has_key(&s, "$ref"));
        assert!(s.to_string().len() < 100_000);
    }
}
