//! JSON Schemas for tool cards: derived with schemars, then made
//! self-contained, because many MCP clients cannot resolve `$ref`. Pure
//! functions on JSON values; validating arguments is the dispatcher's job.

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
    let mut schema = settings()
        .for_deserialize()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
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
    let mut schema = settings()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    make_self_contained(&mut schema);
    schema
}

/// Inlines every local `$ref` and drops the definitions and `nullable`.
///
/// An optional property (`Option<T>`) is described by `T`'s schema alone, not
/// "`T` or null": absence is how it is left out, which keeps the schema plain
/// for MCP clients and the validator's messages precise. A server still
/// accepts an explicit `null` for an optional property, as if it were absent.
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
            consts_to_enum(obj);
            strip_null_from_optional(obj);
        }
        Value::Array(items) => items.iter_mut().for_each(|v| inline(v, defs, depth)),
        _ => {}
    }
}

/// A choice between constants (an enum whose variants carry doc comments) is
/// written as `enum`, which every client understands.
fn consts_to_enum(obj: &mut Map<String, Value>) {
    for key in ["oneOf", "anyOf"] {
        let Some(Value::Array(branches)) = obj.get(key) else {
            continue;
        };
        let values: Option<Vec<Vec<Value>>> = branches
            .iter()
            .map(|b| match (b.get("const"), b.get("enum").and_then(Value::as_array)) {
                (Some(c), _) => Some(vec![c.clone()]),
                (None, Some(e)) => Some(e.clone()),
                _ => None,
            })
            .collect();
        let Some(values) = values.map(|v| v.concat()).filter(|v| !v.is_empty()) else {
            continue;
        };
        obj.remove(key);
        if values.iter().all(Value::is_string) {
            obj.insert("type".into(), Value::String("string".into()));
        }
        obj.insert("enum".into(), Value::Array(values));
        return;
    }
}

/// In an object schema, makes each optional property's schema non-null.
fn strip_null_from_optional(obj: &mut Map<String, Value>) {
    let required: Vec<String> = match obj.get("required") {
        Some(Value::Array(r)) => r.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    let Some(Value::Object(props)) = obj.get_mut("properties") else {
        return;
    };
    for (name, prop) in props.iter_mut() {
        if !required.contains(name) {
            if let Value::Object(p) = prop {
                strip_null(p);
            }
        }
    }
}

fn is_null_schema(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("null")
}

fn strip_null(p: &mut Map<String, Value>) {
    if let Some(Value::Array(types)) = p.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            p.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(values)) = p.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(branches)) = p.get_mut(key) else {
            continue;
        };
        branches.retain(|b| !is_null_schema(b));
        if branches.len() == 1 {
            let Some(Value::Object(only)) = branches.pop() else {
                continue;
            };
            p.remove(key);
            for (k, v) in only {
                p.entry(k).or_insert(v);
            }
        }
    }
}

/// Drops `null` values of optional properties, recursively through nested
/// objects, so that they read as absent.
pub(crate) fn drop_optional_nulls(schema: &Value, value: &mut Value) {
    let (Some(props), Value::Object(fields)) = (schema.get("properties").and_then(Value::as_object), value) else {
        return;
    };
    let required = |k: &str| {
        schema
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|v| v == k))
    };
    fields.retain(|k, v| !v.is_null() || required(k));
    for (k, v) in fields.iter_mut() {
        if let Some(sub) = props.get(k) {
            drop_optional_nulls(sub, v);
        }
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
        /// Documented variants make schemars write `oneOf` of `const`s.
        Reddit,
        /// x.com
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
        assert_eq!(
            s["properties"]["window"]["properties"]["platform"]["enum"],
            json!(["reddit", "x"])
        );
        assert_eq!(
            s["properties"]["window"]["properties"]["from"]["description"],
            "First day."
        );
        assert_eq!(s["properties"]["tags"]["items"]["enum"], json!(["reddit", "x"]));
        let platform = &s["properties"]["platform"];
        assert_eq!(platform["description"], "The platform.");
        assert_eq!(
            platform["enum"],
            json!(["reddit", "x"]),
            "an optional enum is its values alone: {platform}"
        );
        assert!(!platform.to_string().contains("null"), "{platform}");
    }

    #[test]
    fn nulls_of_optional_properties_read_as_absent() {
        let s = input_schema::<Args>();
        let mut v = json!({"platform": null, "window": {"from": "a", "platform": "x"}, "tags": []});
        drop_optional_nulls(&s, &mut v);
        assert_eq!(v, json!({"window": {"from": "a", "platform": "x"}, "tags": []}));
        let mut v = json!({"window": null});
        drop_optional_nulls(&s, &mut v);
        assert_eq!(
            v,
            json!({"window": null}),
            "a required property keeps its null, and fails validation"
        );
    }

    #[test]
    fn recursive_types_terminate() {
        let s = input_schema::<Tree>();
        assert!(!has_key(&s, "$ref"));
        assert!(s.to_string().len() < 100_000);
    }
}
