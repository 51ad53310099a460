//! What `tools`, `servers` and `describe` print: plain-text tables and a
//! tool's card, or the cards as JSON.

use std::fmt::Write as _;

use mcpmqtt::{ServerCard, Status, ToolAnnotations, ToolCard};
use serde_json::Value;

/// The longest description shown in the tools table, in characters.
const DESCRIPTION_WIDTH: usize = 60;

/// A table of tools: name, server, streaming, allowed callers, and the
/// title and first line of the description (`Echo — Returns its text.`).
pub fn tools_table(tools: &[ToolCard]) -> String {
    let rows: Vec<Vec<String>> = tools
        .iter()
        .map(|t| {
            vec![
                t.tool.clone(),
                t.server.clone(),
                if t.supports_streaming { "yes" } else { "no" }.to_owned(),
                callers(&t.allowed_callers),
                shorten(&titled(t), DESCRIPTION_WIDTH),
            ]
        })
        .collect();
    table(
        &["TOOL", "SERVER", "STREAMING", "ALLOWED CALLERS", "DESCRIPTION"],
        &rows,
    )
}

/// The tool's title, if any, before the first line of its description.
fn titled(card: &ToolCard) -> String {
    let description = first_line(&card.description);
    match card.title.as_deref() {
        Some(title) if description.is_empty() => title.to_owned(),
        Some(title) => format!("{title} — {description}"),
        None => description.to_owned(),
    }
}

/// The hints a card sets, for people: `read-only, idempotent, closed world`.
/// Unset hints are left out (MCP's defaults then apply).
fn hints(hints: &ToolAnnotations) -> String {
    let said = [
        (hints.read_only_hint, "read-only", "not read-only"),
        (hints.destructive_hint, "destructive", "not destructive"),
        (hints.idempotent_hint, "idempotent", "not idempotent"),
        (hints.open_world_hint, "open world", "closed world"),
    ];
    said.iter()
        .filter_map(|&(hint, yes, no)| hint.map(|h| if h { yes } else { no }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table of servers: name, number of tools, their names, last seen.
pub fn servers_table(servers: &[ServerCard]) -> String {
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            vec![
                s.server.clone(),
                s.tools.len().to_string(),
                s.tools.join(", "),
                s.last_seen.clone(),
            ]
        })
        .collect();
    table(&["SERVER", "TOOLS", "NAMES", "LAST SEEN"], &rows)
}

/// A tool's card for people: its fields, a summary of its arguments, and
/// its schemas pretty-printed.
pub fn describe(card: &ToolCard) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        let _ = writeln!(out, "{:<16} {value}", format!("{name}:"));
    };
    field("tool", &card.tool);
    if let Some(title) = &card.title {
        field("title", title);
    }
    field("server", &card.server);
    field("namespace", &card.namespace);
    field("description", &card.description);
    field(
        "status",
        match card.status {
            Status::Online => "online",
            Status::Offline => "offline",
        },
    );
    field("streaming", if card.supports_streaming { "yes" } else { "no" });
    field("allowed callers", &callers(&card.allowed_callers));
    if let Some(annotations) = card.annotations.as_ref().filter(|a| !a.is_empty()) {
        field("hints", &hints(annotations));
    }
    if let Some(ms) = card.timeout_ms {
        field("timeout", &format!("{ms} ms"));
    }
    field("last seen", &card.last_seen);
    let mut versions = card.version_info.sdk.clone();
    if let Some(v) = &card.version_info.tool {
        versions = format!("{versions}, tool {v}");
    }
    field("version", &versions);
    if !card.extensions.is_empty() {
        field("extensions", &card.extensions.join(", "));
    }
    let arguments = arguments_summary(&card.input_schema);
    if !arguments.is_empty() {
        out.push_str("\narguments:\n");
        out.push_str(&arguments);
    }
    out.push_str("\ninput schema:\n");
    out.push_str(&pretty(&card.input_schema));
    out.push('\n');
    if let Some(schema) = &card.output_schema {
        out.push_str("\noutput schema:\n");
        out.push_str(&pretty(schema));
        out.push('\n');
    }
    out
}

/// One line per top-level property: `name (type, required): description`.
fn arguments_summary(schema: &Value) -> String {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return String::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = String::new();
    for (name, property) in properties {
        let kind = type_of(property);
        let need = if required.contains(&name.as_str()) {
            "required"
        } else {
            "optional"
        };
        let _ = write!(out, "  {name} ({kind}, {need})");
        if let Some(d) = property.get("description").and_then(Value::as_str) {
            let _ = write!(out, ": {}", first_line(d));
        }
        out.push('\n');
    }
    out
}

/// A short name of a property's type: its `type`, or its `enum` values.
fn type_of(property: &Value) -> String {
    if let Some(values) = property.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values
            .iter()
            .map(|v| v.as_str().map_or(v.to_string(), str::to_owned))
            .collect();
        return format!("one of {}", names.join("|"));
    }
    match property.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("|"),
        _ => "any".into(),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn callers(callers: &[String]) -> String {
    if callers.is_empty() {
        "-".into()
    } else {
        callers.join(", ")
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default().trim()
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

/// Left-aligned columns separated by two spaces; the last is not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.zip(&widths).enumerate() {
            if i + 1 == headers.len() {
                text.push_str(cell);
            } else {
                let pad = width - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_line_up() {
        let t = table(
            &["A", "BB", "C"],
            &[
                vec!["long-name".into(), "x".into(), "last".into()],
                vec!["s".into(), "yy".into(), "".into()],
            ],
        );
        assert_eq!(t, "A          BB  C\nlong-name  x   last\ns          yy\n");
    }

    #[test]
    fn summarises_arguments() {
        let schema = json!({
            "type": "object",
            "properties": {
                "platform": {"enum": ["reddit", "x"], "description": "Where.\nMore."},
                "pages": {"type": "integer"}
            },
            "required": ["platform"]
        });
        assert_eq!(
            arguments_summary(&schema),
            "  pages (integer, optional)\n  platform (one of reddit|x, required): Where.\n"
        );
    }

    #[test]
    fn shortens_by_characters() {
        assert_eq!(shorten("ééééé", 5), "ééééé");
        assert_eq!(shorten("éééééé", 5), "éééé…");
    }

    #[test]
    fn hints_read_as_words() {
        let all = ToolAnnotations::default()
            .read_only(false)
            .destructive(false)
            .idempotent(true)
            .open_world(false);
        assert_eq!(hints(&all), "not read-only, not destructive, idempotent, closed world");
        assert_eq!(
            hints(&ToolAnnotations::default().read_only(true).open_world(true)),
            "read-only, open world"
        );
    }
}
