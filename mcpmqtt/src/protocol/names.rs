//! Rules for the names that become MQTT topic levels: tool, server and caller
//! identities, and namespaces. Checks only, no I/O; the `#[tool]` macro
//! applies the same rules at compile time, so the two change together.

/// The longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Why a name cannot be a single MQTT topic level, or `None` if it can.
///
/// A name is one topic level: wildcards (`+`, `#`) or a `/` in it would let it
/// match or reach other topics, so the broker's ACL could no longer tell tools
/// or callers apart.
pub fn name_problem(name: &str) -> Option<&'static str> {
    // One pass over the bytes (every call's caller and call id come
    // through here), then the first problem in the order the messages are
    // listed in.
    const SLASH: u8 = 1;
    const WILDCARD: u8 = 2;
    const NUL: u8 = 4;
    const SPACE: u8 = 8;
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Some("it is longer than 128 bytes");
    }
    let (mut found, mut non_ascii) = (0u8, false);
    for &b in name.as_bytes() {
        found |= match b {
            b'/' => SLASH,
            b'+' | b'#' => WILDCARD,
            0 => NUL,
            b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' => SPACE,
            _ => 0,
        };
        non_ascii |= !b.is_ascii();
    }
    if non_ascii && name.chars().any(|c| !c.is_ascii() && c.is_whitespace()) {
        found |= SPACE;
    }
    if found & SLASH != 0 {
        Some("it contains `/`, which separates topic levels")
    } else if found & WILDCARD != 0 {
        Some("it contains an MQTT wildcard (`+` or `#`)")
    } else if found & NUL != 0 {
        Some("it contains a NUL character")
    } else if found & SPACE != 0 {
        Some("it contains whitespace")
    } else if name.starts_with('$') {
        Some("it starts with `$`, which brokers reserve")
    } else {
        None
    }
}

/// A name that cannot be used, and why. It becomes [`Error::InvalidName`]
/// through `?`: the protocol's types do not depend on the crate's errors.
///
/// [`Error::InvalidName`]: crate::Error::InvalidName
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidName {
    pub kind: &'static str,
    pub name: String,
    pub reason: &'static str,
}

/// Checks a name, naming its `kind` ("tool", "server", "caller", ...) in the error.
pub(crate) fn validate(kind: &'static str, name: &str) -> Result<(), InvalidName> {
    match name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(InvalidName {
            kind,
            name: name.to_owned(),
            reason,
        }),
    }
}

/// Normalises a namespace: trims leading and trailing `/` and checks that it
/// holds no wildcard, NUL, whitespace or empty level.
pub(crate) fn normalize_namespace(ns: &str) -> Result<String, InvalidName> {
    let trimmed = ns.trim_matches('/');
    let invalid = |reason| InvalidName {
        kind: "namespace",
        name: ns.to_owned(),
        reason,
    };
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    for level in trimmed.split('/') {
        if level.is_empty() {
            return Err(invalid("it has an empty topic level (`//`)"));
        }
        if let Some(reason) = name_problem(level) {
            return Err(invalid(reason));
        }
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["query_watch_configs", "gtm-mcp-server", "scout", "a.b", "ü"] {
            assert_eq!(name_problem(ok), None, "{ok}");
        }
        assert_eq!(name_problem(&"a".repeat(128)), None);
    }

    #[test]
    fn rejects_what_would_break_topics() {
        for bad in ["", "a/b", "a+", "#", "a b", "a\tb", "a\0", "$SYS"] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(name_problem(&"a".repeat(129)).is_some());
    }

    /// The rules as first written, one check per pass: the one-pass
    /// version must give the same answer, message included.
    fn name_problem_as_specified(name: &str) -> Option<&'static str> {
        if name.is_empty() {
            Some("it is empty")
        } else if name.len() > MAX_NAME_LEN {
            Some("it is longer than 128 bytes")
        } else if name.contains('/') {
            Some("it contains `/`, which separates topic levels")
        } else if name.contains('+') || name.contains('#') {
            Some("it contains an MQTT wildcard (`+` or `#`)")
        } else if name.contains('\0') {
            Some("it contains a NUL character")
        } else if name.chars().any(char::is_whitespace) {
            Some("it contains whitespace")
        } else if name.starts_with('$') {
            Some("it starts with `$`, which brokers reserve")
        } else {
            None
        }
    }

    #[test]
    fn one_pass_gives_the_answers_of_the_rules() {
        let pieces = [
            "a", "Z", "9", "-", "_", ".", "/", "+", "#", "\0", " ", "\t", "\n", "\x0b", "\x0c", "\r", "$", "é",
            "\u{85}", "\u{a0}", "\u{2028}", "\u{3000}", "\u{200b}", "日",
        ];
        // Every string of up to three pieces, and longer ones near the limit.
        let mut names = vec![String::new()];
        for a in pieces {
            names.push(a.to_owned());
            for b in pieces {
                names.push(format!("{a}{b}"));
                for c in pieces {
                    names.push(format!("{a}{b}{c}"));
                }
            }
        }
        for p in pieces {
            names.push(format!("{}{p}", "x".repeat(127)));
            names.push(format!("{p}{}", "x".repeat(126)));
        }
        for name in &names {
            assert_eq!(name_problem(name), name_problem_as_specified(name), "{name:?}");
        }
    }

    #[test]
    fn namespaces_are_trimmed_and_checked() {
        assert_eq!(normalize_namespace("/a2a/v1/").unwrap(), "a2a/v1");
        assert_eq!(normalize_namespace("gtm").unwrap(), "gtm");
        assert!(normalize_namespace("a//b").is_err());
        assert!(normalize_namespace("a/+").is_err());
        assert!(normalize_namespace("/").is_err());
    }
}
