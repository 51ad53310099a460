//! JSON as the runtime writes calls and responses: byte for byte what
//! `serde_json` writes, with a faster escape for long strings. Arguments and
//! results are often one large string, and `serde_json` looks at each of its
//! bytes in turn; this looks at eight at once and copies the runs that need
//! no escape (measured in `benches/hot_path.rs`).

use serde_json::Value;

pub(crate) mod read;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Nonzero if any of the eight bytes of `x` must be escaped in a JSON
/// string: a control character (below 0x20), `"` or `\`. The classic tests
/// for a zero byte and for a byte below a limit (at most 0x80), which are
/// exact as to whether there is one.
#[inline]
fn escapes(x: u64) -> u64 {
    let control = x.wrapping_sub(ONES * 0x20) & !x;
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    (control | (quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash)) & HIGHS
}

/// The escape of one byte, as `serde_json` writes it, if it needs one.
#[inline]
fn escape(byte: u8) -> Option<&'static [u8]> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // `\u00XX` for each control character without a short form.
    static CONTROL: [[u8; 6]; 32] = {
        let mut table = [[0u8; 6]; 32];
        let mut i = 0;
        while i < 32 {
            table[i] = [b'\\', b'u', b'0', b'0', HEX[i >> 4], HEX[i & 0xf]];
            i += 1;
        }
        table
    };
    Some(match byte {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        0..=0x1f => &CONTROL[usize::from(byte)],
        _ => return None,
    })
}

/// Appends `s` as a JSON string.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Bytes before `start` are written; those from it on are pending.
    let mut start = 0;
    let escape_from = |out: &mut Vec<u8>, from: usize, to: usize, start: &mut usize| {
        for (i, &byte) in bytes[from..to].iter().enumerate() {
            if let Some(escaped) = escape(byte) {
                out.extend_from_slice(&bytes[*start..from + i]);
                out.extend_from_slice(escaped);
                *start = from + i + 1;
            }
        }
    };
    // 32 bytes at a time, one branch for the four words; then 8 at a time.
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
    let mut at = 0;
    while at + 32 <= bytes.len() {
        if escapes(word(at)) | escapes(word(at + 8)) | escapes(word(at + 16)) | escapes(word(at + 24)) != 0 {
            escape_from(out, at, at + 32, &mut start);
        }
        at += 32;
    }
    while at + 8 <= bytes.len() {
        if escapes(word(at)) != 0 {
            escape_from(out, at, at + 8, &mut start);
        }
        at += 8;
    }
    escape_from(out, at, bytes.len(), &mut start);
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `value` as compact JSON, keys in the map's order.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => serde_json::to_writer(&mut *out, n).expect("writing to a Vec cannot fail"),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Writes a JSON object one field at a time.
pub(crate) struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Object { out, first: true }
    }

    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        write_str(self.out, key);
        self.out.push(b':');
        self.out
    }

    pub(crate) fn str(&mut self, key: &str, value: &str) -> &mut Self {
        let out = self.key(key);
        write_str(out, value);
        self
    }

    pub(crate) fn value(&mut self, key: &str, value: &Value) -> &mut Self {
        let out = self.key(key);
        write_value(out, value);
        self
    }

    pub(crate) fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        let out = self.key(key);
        serde_json::to_writer(&mut *out, &value).expect("writing to a Vec cannot fail");
        self
    }

    pub(crate) fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        let out = self.key(key);
        out.extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// Writes a nested object's fields.
    pub(crate) fn object(&mut self, key: &str, fields: impl FnOnce(&mut Object<'_>)) -> &mut Self {
        let out = self.key(key);
        let mut inner = Object::new(out);
        fields(&mut inner);
        inner.end();
        self
    }

    pub(crate) fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ours(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(&mut out, value);
        out
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let values = [
            json!(null),
            json!(true),
            json!([false, 0, -1, 1.5, 1e300, -0.0, u64::MAX, i64::MIN]),
            json!({}),
            json!([]),
            json!({"b": {"c": [1, {"d": null}]}, "a": "z", "é": "ü"}),
            json!("quote \" backslash \\ slash / nl \n cr \r tab \t bs \u{8} ff \u{c} nul \u{0} us \u{1f} del \u{7f}"),
            json!("emoji 🦀 and 中文, then \"a long run without escapes, longer than eight bytes\""),
        ];
        for value in values {
            assert_eq!(
                String::from_utf8(ours(&value)).unwrap(),
                serde_json::to_string(&value).unwrap()
            );
        }
    }

    #[test]
    fn every_escape_at_every_offset_of_a_word() {
        // Each byte that needs an escape, and a few that do not, at each
        // position of an 8-byte word, in strings of every length around it.
        let specials = [
            '"', '\\', '\n', '\r', '\t', '\u{8}', '\u{c}', '\u{0}', '\u{1f}', ' ', '\u{7f}', 'é',
        ];
        for special in specials {
            for len in 0..20 {
                for at in 0..len {
                    let s: String = (0..len).map(|i| if i == at { special } else { 'x' }).collect();
                    let value = Value::String(s);
                    assert_eq!(ours(&value), serde_json::to_vec(&value).unwrap(), "{value:?}");
                }
            }
        }
    }

    #[test]
    fn pseudo_random_strings_match() {
        // A fixed xorshift sequence over ASCII (controls included) and a
        // few multi-byte characters.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2_000 {
            let len = (next() % 64) as usize;
            let s: String = (0..len)
                .map(|_| match next() % 10 {
                    0 => ['ß', '€', '😀'][(next() % 3) as usize],
                    _ => char::from((next() % 128) as u8),
                })
                .collect();
            let value = Value::String(s);
            assert_eq!(ours(&value), serde_json::to_vec(&value).unwrap(), "{value:?}");
        }
    }

    #[test]
    fn objects_are_written_field_by_field() {
        let mut out = Vec::new();
        let mut object = Object::new(&mut out);
        object
            .str("a", "x\"y")
            .u64("n", 7)
            .bool("t", true)
            .value("v", &json!([1]))
            .object("o", |inner| {
                inner.str("k", "v");
            });
        object.end();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":"x\"y","n":7,"t":true,"v":[1],"o":{"k":"v"}}"#
        );
    }
}
