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

/// Inlines every local `$ref` and drops the definitions, `nullable`, and
/// the non-standard `format`s schemars gives numbers (`uint32`, `int64`,
/// `double`, ...; some MCP clients reject a schema with a format they do not
/// know), keeping their bounds as `minimum` and `maximum` instead. Standard
/// formats (`date-time`, `email`, `uri`, `uuid`, ...) stay.
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
    drop_numeric_formats(schema);
}

/// The `format`s schemars writes that no JSON Schema draft defines, with the
/// bounds of the type each stands for (when narrower than JSON's numbers and
/// exact in every client's: up to 32 bits).
const NON_STANDARD_FORMATS: &[(&str, Option<(i64, i64)>)] = &[
    ("uint8", Some((0, u8::MAX as i64))),
    ("uint16", Some((0, u16::MAX as i64))),
    ("uint32", Some((0, u32::MAX as i64))),
    ("uint64", Some((0, i64::MAX))),
    ("uint128", Some((0, i64::MAX))),
    ("uint", Some((0, i64::MAX))),
    ("int8", Some((i8::MIN as i64, i8::MAX as i64))),
    ("int16", Some((i16::MIN as i64, i16::MAX as i64))),
    ("int32", Some((i32::MIN as i64, i32::MAX as i64))),
    ("int64", None),
    ("int128", None),
    ("int", None),
    ("float", None),
    ("double", None),
    // `IpAddr`: draft 7 knows `ipv4` and `ipv6` only.
    ("ip", None),
];

/// Removes the non-standard `format`s from a schema and every schema inside
/// it, adding the type's `minimum` (and `maximum`, up to 32 bits) when the
/// schema has none. Only schema positions are visited, so data (`enum`,
/// `const`, `default`, `examples`) is left as it is.
fn drop_numeric_formats(node: &mut Value) {
    let Value::Object(obj) = node else {
        return;
    };
    if let Some(Value::String(format)) = obj.get("format") {
        if let Some((_, bounds)) = NON_STANDARD_FORMATS.iter().find(|(f, _)| f == format) {
            let bounds = *bounds;
            obj.remove("format");
            if let Some((min, max)) = bounds {
                obj.entry("minimum").or_insert(Value::from(min));
                // 64 and 128 bits: only the lower bound (a 64-bit maximum is
                // not exact in every client's numbers).
                if max < i64::MAX {
                    obj.entry("maximum").or_insert(Value::from(max));
                }
            }
        }
    }
    for (key, value) in obj.iter_mut() {
        match key.as_str() {
            // One schema.
            "items"
            | "additionalItems"
            | "additionalProperties"
            | "unevaluatedItems"
            | "unevaluatedProperties"
            | "contains"
            | "propertyNames"
            | "not"
            | "if"
            | "then"
            | "else" => match value {
                Value::Array(schemas) => schemas.iter_mut().for_each(drop_numeric_formats),
                schema => drop_numeric_formats(schema),
            },
            // A list of schemas.
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                if let Value::Array(schemas) = value {
                    schemas.iter_mut().for_each(drop_numeric_formats);
                }
            }
            // Schemas by name.
            "properties" | "patternProperties" | "dependentSchemas" | "$defs" | "definitions" => {
                if let Value::Object(schemas) = value {
                    schemas.values_mut().for_each(drop_numeric_formats);
                }
            }
            _ => {}
        }
    }
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
    // Looked at for every call: nothing is rebuilt unless there is a null.
    if fields.values().any(Value::is_null) {
        fields.retain(|k, v| !v.is_null() || required(k));
    }
    for (k, v) in fields.iter_mut().filter(|(_, v)| v.is_object()) {
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

    #[derive(Deserialize, serde::Serialize, JsonSchema)]
    #[allow(dead_code)]
    struct Numbers {
        small: u8,
        count: u32,
        big: u64,
        offset: i64,
        delta: i32,
        size: usize,
        ratio: f64,
        maybe: Option<u16>,
        many: Vec<i8>,
        when: Stamp,
        nested: Option<Inner>,
        by_name: std::collections::BTreeMap<String, u32>,
        either: Either,
    }

    #[derive(Deserialize, serde::Serialize, JsonSchema)]
    #[allow(dead_code)]
    struct Inner {
        level: u32,
    }

    /// A string with a standard format.
    #[derive(Deserialize, serde::Serialize, JsonSchema)]
    #[allow(dead_code)]
    struct Stamp(#[schemars(schema_with = "date_time")] String);

    fn date_time(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "date-time"})
    }

    #[derive(Deserialize, serde::Serialize, JsonSchema)]
    #[allow(dead_code)]
    #[serde(untagged)]
    enum Either {
        Count(u32),
        Ratio(f32),
    }

    /// Every `format` in a schema.
    fn formats(v: &Value) -> Vec<String> {
        match v {
            Value::Object(o) => o
                .iter()
                .flat_map(|(k, v)| match (k.as_str(), v) {
                    ("format", Value::String(f)) => vec![f.clone()],
                    _ => formats(v),
                })
                .collect(),
            Value::Array(a) => a.iter().flat_map(formats).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn numbers_have_bounds_and_no_format() {
        for s in [input_schema::<Numbers>(), output_schema::<Numbers>()] {
            assert_eq!(formats(&s), ["date-time"], "{s:#}");
            let p = &s["properties"];
            assert_eq!(
                p["count"],
                json!({"type": "integer", "minimum": 0, "maximum": u32::MAX})
            );
            assert_eq!(p["small"], json!({"type": "integer", "minimum": 0, "maximum": 255}));
            assert_eq!(p["big"], json!({"type": "integer", "minimum": 0}));
            assert_eq!(p["size"], json!({"type": "integer", "minimum": 0}));
            assert_eq!(p["offset"], json!({"type": "integer"}));
            assert_eq!(
                p["delta"],
                json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX})
            );
            assert_eq!(p["ratio"], json!({"type": "number"}));
            assert_eq!(
                p["many"]["items"],
                json!({"type": "integer", "minimum": -128, "maximum": 127})
            );
            assert_eq!(p["when"]["format"], "date-time", "a standard format stays");
            assert_eq!(
                p["by_name"]["additionalProperties"],
                json!({"type": "integer", "minimum": 0, "maximum": u32::MAX})
            );
            assert!(
                p["nested"]
                    .to_string()
                    .contains(r#""level":{"maximum":4294967295,"minimum":0,"type":"integer"}"#),
                "{s:#}"
            );
            assert!(p["maybe"]["minimum"] == 0 && p["maybe"]["maximum"] == 65535, "{s:#}");
        }
    }

    #[test]
    fn only_non_standard_formats_go_and_data_is_untouched() {
        let mut s = json!({
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "mail": {"type": "string", "format": "email"},
                "at": {"type": "string", "format": "date-time"},
                "link": {"type": "string", "format": "uri"},
                "n": {"type": "integer", "format": "uint32", "minimum": 1},
                "format": {"type": "integer", "format": "int64", "default": {"format": "int64"}},
                "pick": {"anyOf": [{"type": "integer", "format": "uint16"}, {"type": "string", "format": "email"}]},
            },
        });
        make_self_contained(&mut s);
        assert_eq!(formats(&s["properties"]["format"]["default"]), ["int64"], "data stays");
        let p = &s["properties"];
        assert_eq!(p["id"]["format"], "uuid");
        assert_eq!(p["mail"]["format"], "email");
        assert_eq!(p["at"]["format"], "date-time");
        assert_eq!(p["link"]["format"], "uri");
        assert_eq!(
            p["n"],
            json!({"type": "integer", "minimum": 1, "maximum": u32::MAX}),
            "a tighter bound stays"
        );
        assert!(p["format"].get("format").is_none());
        assert_eq!(
            p["pick"]["anyOf"],
            json!([{"type": "integer", "minimum": 0, "maximum": 65535}, {"type": "string", "format": "email"}])
        );
    }
}
