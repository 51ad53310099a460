//! JSON as the runtime reads calls and responses: the same values
//! `serde_json` reads, faster where payloads are large or small.
//!
//! `serde_json` checks each string's UTF-8 on its own and looks for its end
//! eight bytes at a time; here the whole payload's UTF-8 is checked once,
//! and strings are scanned as the writer scans them ([`super::find_special`]).
//! A small call pays for one pass instead of a dozen small ones; a 1 MB
//! argument for a few instructions per 16 bytes.
//!
//! This reader only ever says "this is the value" or "ask `serde_json`":
//! whatever it does not take as plainly valid (a lone surrogate, a number it
//! would round, deep nesting, any error) makes it give up, and the caller
//! reads the payload again with `serde_json`, whose answer (or error
//! message) then stands. So it can be faster, never different.

use std::borrow::Cow;

use serde_json::{Map, Number, Value};

use super::{find_special as next_special, owned, push_str};

/// How deep arrays and objects may nest before the reader leaves the
/// payload to `serde_json` (whose own limit is 128).
const MAX_DEPTH: u32 = 100;

/// Reads one JSON document, or `None` when `serde_json` must decide. What
/// the tests hold against `serde_json`; the runtime reads objects field by
/// field ([`object`]).
#[cfg(test)]
fn value(bytes: &[u8]) -> Option<Value> {
    let mut reader = Reader::new(bytes)?;
    let value = reader.value()?;
    reader.end()?;
    Some(value)
}

/// Reads a JSON object field by field: `each` gets each key, and must read
/// (or skip) its value from the reader. `None` when `serde_json` must decide.
pub(crate) fn object<'a>(
    bytes: &'a [u8],
    mut each: impl FnMut(Cow<'a, str>, &mut Reader<'a>) -> Option<()>,
) -> Option<()> {
    let mut reader = Reader::new(bytes)?;
    reader.ws();
    reader.fields(&mut each)?;
    reader.end()
}

/// A position in a document whose UTF-8 is known to be valid.
pub(crate) struct Reader<'a> {
    text: &'a str,
    at: usize,
    depth: u32,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Option<Self> {
        // Most payloads are ASCII, which std checks several times faster
        // than UTF-8 (a tenth of a 10 KiB call's decode).
        let text = if bytes.is_ascii() {
            // SAFETY: ASCII is valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(bytes) }
        } else {
            std::str::from_utf8(bytes).ok()?
        };
        Some(Reader { text, at: 0, depth: 0 })
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.eat_if(byte).then_some(())
    }

    fn eat_if(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        self.at += usize::from(hit);
        hit
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let hit = self.bytes()[self.at..].starts_with(word);
        self.at += word.len() * usize::from(hit);
        hit.then_some(())
    }

    /// Only whitespace is left.
    fn end(&mut self) -> Option<()> {
        self.ws();
        (self.at == self.text.len()).then_some(())
    }

    /// Whether the value here is a string (for [`Reader::string`]).
    pub(crate) fn at_string(&mut self) -> bool {
        self.ws();
        self.peek() == Some(b'"')
    }

    /// Reads the value here.
    pub(crate) fn value(&mut self) -> Option<Value> {
        self.ws();
        Some(match self.peek()? {
            b'"' => Value::String(match self.string()? {
                Cow::Borrowed(s) => owned(s),
                Cow::Owned(s) => s,
            }),
            b'{' => {
                self.nest()?;
                let mut map = Map::new();
                self.fields(|key, reader| {
                    map.insert(key.into_owned(), reader.value()?);
                    Some(())
                })?;
                self.depth -= 1;
                Value::Object(map)
            }
            b'[' => {
                self.nest()?;
                self.at += 1;
                let mut items = Vec::new();
                self.ws();
                if !self.eat_if(b']') {
                    loop {
                        items.push(self.value()?);
                        self.ws();
                        if self.eat_if(b']') {
                            break;
                        }
                        self.eat(b',')?;
                    }
                }
                self.depth -= 1;
                Value::Array(items)
            }
            b't' => self.literal(b"true").map(|()| Value::Bool(true))?,
            b'f' => self.literal(b"false").map(|()| Value::Bool(false))?,
            b'n' => self.literal(b"null").map(|()| Value::Null)?,
            b'-' | b'0'..=b'9' => Value::Number(self.number()?),
            _ => return None,
        })
    }

    /// Walks the object here (the reader is at its `{`): `each` gets each
    /// key, and reads (or skips) its value.
    fn fields(&mut self, mut each: impl FnMut(Cow<'a, str>, &mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.eat_if(b'}') {
            return Some(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            each(key, self)?;
            self.ws();
            if self.eat_if(b'}') {
                return Some(());
            }
            self.eat(b',')?;
        }
    }

    fn nest(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// Reads a string (the reader is at its opening quote), borrowed from
    /// the document when it has no escape.
    pub(crate) fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let bytes = self.bytes();
        let start = self.at;
        let stop = next_special(bytes, start);
        match bytes.get(stop)? {
            b'"' => {
                self.at = stop + 1;
                // A quote is ASCII, so both ends are on character boundaries.
                Some(Cow::Borrowed(&self.text[start..stop]))
            }
            b'\\' => {
                let mut out = String::with_capacity(stop - start + 16);
                push_str(&mut out, &self.text[start..stop]);
                self.at = stop;
                self.escaped_rest(&mut out)?;
                Some(Cow::Owned(out))
            }
            // A control character: not allowed in a JSON string.
            _ => None,
        }
    }

    /// The rest of a string from an escape on, into `out`.
    fn escaped_rest(&mut self, out: &mut String) -> Option<()> {
        let bytes = self.bytes();
        loop {
            match *bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => {
                    let escape = *bytes.get(self.at + 1)?;
                    self.at += 2;
                    let c = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return None,
                    };
                    out.push(c);
                }
                b if b < 0x20 => return None,
                _ => {
                    let stop = next_special(bytes, self.at);
                    // Stops only at ASCII bytes, or at the end.
                    push_str(out, self.text.get(self.at..stop)?);
                    self.at = stop;
                }
            }
        }
    }

    /// After `\u`: four hex digits, and for a leading surrogate, the
    /// trailing one's escape too.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        match first {
            0xD800..=0xDBFF => {
                self.literal(b"\\u")?;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return None;
                }
                char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
            }
            // A lone trailing surrogate.
            0xDC00..=0xDFFF => None,
            _ => char::from_u32(first),
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes().get(self.at..self.at + 4)?;
        let mut n = 0;
        for &d in digits {
            n = n * 16 + char::from(d).to_digit(16)?;
        }
        self.at += 4;
        Some(n)
    }

    /// A number. Integers that fit are read here; any other number is
    /// handed to `serde_json` on its own, so that its value is exactly the
    /// one `serde_json` gives.
    fn number(&mut self) -> Option<Number> {
        let bytes = self.bytes();
        let start = self.at;
        let negative = self.eat_if(b'-');
        let digits = self.at;
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.at += 1;
                }
            }
            _ => return None,
        }
        let integer = &bytes[digits..self.at];
        let mut plain = true;
        if self.eat_if(b'.') {
            plain = false;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            plain = false;
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.digits()?;
        }
        if plain && integer.len() <= 18 {
            // At most 18 digits: fits in an i64, and so in a u64.
            let n = integer.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if !negative {
                return Some(Number::from(n));
            }
            // `-0` is a float to `serde_json`.
            if n != 0 {
                return Some(Number::from(-(n as i64)));
            }
        }
        serde_json::from_str(&self.text[start..self.at]).ok()
    }

    /// One or more digits.
    fn digits(&mut self) -> Option<()> {
        let from = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        (self.at > from).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ours agrees with `serde_json` whenever ours has an answer.
    fn agrees(doc: &[u8]) -> bool {
        let ours = value(doc);
        let theirs = serde_json::from_slice::<Value>(doc).ok();
        if let Some(v) = &ours {
            assert_eq!(Some(v), theirs.as_ref(), "{:?}", String::from_utf8_lossy(doc));
            // Same floats to the bit, not just equal ones (-0.0 == 0.0).
            assert_eq!(
                serde_json::to_string(v).unwrap(),
                serde_json::to_string(theirs.as_ref().unwrap()).unwrap()
            );
        }
        ours.is_some()
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let docs: &[&str] = &[
            r#"{"call_id":"c1","arguments":{"text":"hello","n":3},"client":"scout"}"#,
            r#" { "a" : [ 1 , -2 , 3.5 , 1e3 , -0 , 0 , true , false , null ] } "#,
            r#"{"a":"x","a":"y"}"#,
            r#""esc: \" \\ \/ \b \f \n \r \t \u00e9 \u20AC \ud83d\ude00""#,
            r#"[18446744073709551615, 18446744073709551616, -9223372036854775808, -9223372036854775809]"#,
            r#"[999999999999999999, -999999999999999999, 1000000000000000000, 0.1, 1E-7, 2.5e+10]"#,
            r#"{"ünïcödé":"日本語","emoji":"😀"}"#,
            "[]",
            "{}",
            "\"\"",
            r#"[[[[{"deep":[{}]}]]]]"#,
        ];
        for doc in docs {
            assert!(agrees(doc.as_bytes()), "ours gave up on {doc}");
        }
    }

    #[test]
    fn leaves_to_serde_json_what_it_must_decide() {
        let docs: &[&[u8]] = &[
            b"",
            b"{",
            b"[1,]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\u0041\"",
            b"\"\\x\"",
            b"\"a\nb\"",
            b"01",
            b"1.",
            b".5",
            b"1e",
            b"-",
            b"tru",
            b"nul",
            b"[1] 2",
            b"\"\xff\"",
            b"{\"a\":\"\xc3\"}",
        ];
        for doc in docs {
            assert!(!agrees(doc), "ours read {:?}", String::from_utf8_lossy(doc));
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(!agrees(deep.as_bytes()));
    }

    /// Pseudo-random documents, and every one-byte change of some of them:
    /// ours never disagrees, and reads every valid document it is shown.
    #[test]
    fn agrees_with_serde_json_on_random_documents_and_their_mutations() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn gen(next: &mut impl FnMut() -> u64, depth: u32, out: &mut String) {
            let pick = next() % if depth > 4 { 5 } else { 7 };
            match pick {
                0 => out.push_str(["true", "false", "null"][(next() % 3) as usize]),
                1 => {
                    let n = next();
                    match n % 4 {
                        0 => out.push_str(&(n >> 8).to_string()),
                        1 => out.push_str(&format!("-{}", n % 100_000)),
                        2 => out.push_str(&format!("{}.{}", n % 1000, n % 97)),
                        _ => out.push_str(&format!("{}e{}", n % 50, (n >> 3) % 30)),
                    }
                }
                2..=4 => {
                    let alphabet = [
                        "a",
                        "Z",
                        " ",
                        "\\\"",
                        "\\\\",
                        "\\n",
                        "\\u00e9",
                        "é",
                        "😀",
                        "\\ud83d\\ude00",
                        "/",
                        "\\/",
                    ];
                    out.push('"');
                    let len = next() % 70;
                    for _ in 0..len {
                        out.push_str(alphabet[(next() % alphabet.len() as u64) as usize]);
                    }
                    out.push('"');
                }
                5 => {
                    out.push('[');
                    for i in 0..next() % 5 {
                        if i > 0 {
                            out.push_str(" , ");
                        }
                        gen(next, depth + 1, out);
                    }
                    out.push(']');
                }
                _ => {
                    out.push('{');
                    for i in 0..next() % 5 {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&format!("\"k{}\":", next() % 4));
                        gen(next, depth + 1, out);
                    }
                    out.push('}');
                }
            }
        }
        let mut read = 0;
        for i in 0..3000 {
            let mut doc = String::new();
            gen(&mut next, 0, &mut doc);
            assert!(agrees(doc.as_bytes()), "ours gave up on {doc}");
            read += 1;
            if i % 30 == 0 {
                let bytes = doc.as_bytes();
                for at in 0..bytes.len() {
                    for byte in [b'"', b'\\', b'}', b']', b',', b'0', b'e', b'-', 0x01, 0xc3] {
                        let mut changed = bytes.to_vec();
                        changed[at] = byte;
                        agrees(&changed);
                    }
                }
            }
        }
        assert_eq!(read, 3000);
    }

    #[test]
    fn finds_the_first_special_byte_at_every_offset() {
        let brute = |bytes: &[u8], from: usize| {
            (from..bytes.len())
                .find(|&i| matches!(bytes[i], b'"' | b'\\' | 0..=0x1f))
                .unwrap_or(bytes.len())
        };
        for len in 0..80 {
            for filler in [b'a', 0xc3, 0x7f, b' '] {
                let mut bytes = vec![filler; len];
                assert_eq!(next_special(&bytes, 0), len);
                for at in 0..len {
                    for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                        bytes[at] = special;
                        if at + 3 < len {
                            bytes[at + 3] = b'"';
                        }
                        for from in [0, 1, 7, 9, at] {
                            let from = from.min(len);
                            assert_eq!(next_special(&bytes, from), brute(&bytes, from), "{len} {at} {from}");
                        }
                        bytes.fill(filler);
                    }
                }
            }
        }
    }

    #[test]
    fn reads_an_object_field_by_field() {
        let doc = br#"{"a":1,"b\u0021":"two","c":{"d":[]}}"#;
        let mut seen = Vec::new();
        object(doc, |key, reader| {
            seen.push((key.into_owned(), reader.value()?));
            Some(())
        })
        .unwrap();
        let keys: Vec<_> = seen.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b!", "c"]);
        assert!(object(b"[1]", |_, _| Some(())).is_none());
        assert!(object(br#"{"a":1} x"#, |_, r| r.value().map(drop)).is_none());
    }
}
