//! Name rules and "did you mean" suggestions.

/// The longest name accepted, in bytes (`mcpmqtt::MAX_NAME_LEN`).
pub(crate) const MAX_NAME_LEN: usize = 128;

/// Why a name cannot be a single MQTT topic level, or `None` if it can.
///
/// Mirrors `mcpmqtt::name_problem` (same rules, same order, same messages):
/// the macro applies at compile time what `ToolDefBuilder::build` checks at
/// run time. Keep the two in step.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
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

/// A valid name close to an invalid one, if there is an obvious one: a
/// leading `$` and any `/`, `+`, `#`, NUL or whitespace at either end
/// dropped, each one inside replaced with `_` (`"crawl site"` →
/// `"crawl_site"`, `"crawl+"` → `"crawl"`).
pub(crate) fn repaired_name(name: &str) -> Option<String> {
    let bad = |c: char| matches!(c, '/' | '+' | '#' | '\0') || c.is_whitespace();
    let repaired: String = name
        .trim_start_matches('$')
        .trim_matches(bad)
        .chars()
        .map(|c| if bad(c) { '_' } else { c })
        .collect();
    (repaired != name && name_problem(&repaired).is_none()).then_some(repaired)
}

/// A name as messages show it: quoted, and cut after 32 characters when it
/// is long (with its length in bytes).
pub(crate) fn shown_name(name: &str) -> String {
    if name.chars().count() <= 40 {
        return format!("{name:?}");
    }
    let head: String = name.chars().take(32).collect();
    let quoted = format!("{head:?}");
    format!("{}…\" ({} bytes)", &quoted[..quoted.len() - 1], name.len())
}

/// The Levenshtein distance between two strings, by `char`.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `unknown`, if any is close enough to be what was
/// meant: a few typos away, or one containing the other (`stream` for
/// `streaming`, `callers` for `allowed_callers`).
pub(crate) fn closest<'a>(unknown: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let unknown_lower = unknown.to_ascii_lowercase();
    candidates
        .iter()
        .filter_map(|&candidate| {
            let distance = edit_distance(&unknown_lower, candidate);
            let close = distance <= (unknown.chars().count() / 3).max(2);
            let contained = unknown_lower.len() >= 4
                && (candidate.contains(unknown_lower.as_str()) || unknown_lower.contains(candidate));
            (close || contained).then_some((distance, candidate))
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// `a`, `a` or `b`, `a`, `b` or `c`: each in backticks.
pub(crate) fn one_of(candidates: &[&str]) -> String {
    let quoted: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
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
        let cases = [
            ("", "it is empty"),
            ("a/b", "it contains `/`, which separates topic levels"),
            ("a+", "it contains an MQTT wildcard (`+` or `#`)"),
            ("#", "it contains an MQTT wildcard (`+` or `#`)"),
            ("a b", "it contains whitespace"),
            ("a\tb", "it contains whitespace"),
            ("a\0", "it contains a NUL character"),
            ("$SYS", "it starts with `$`, which brokers reserve"),
        ];
        for (bad, reason) in cases {
            assert_eq!(name_problem(bad), Some(reason), "{bad:?}");
        }
        assert_eq!(name_problem(&"a".repeat(129)), Some("it is longer than 128 bytes"));
    }

    #[test]
    fn repairs() {
        assert_eq!(repaired_name("crawl site").as_deref(), Some("crawl_site"));
        assert_eq!(repaired_name("crawl/site").as_deref(), Some("crawl_site"));
        assert_eq!(repaired_name("crawl+").as_deref(), Some("crawl"));
        assert_eq!(repaired_name(" a b\t").as_deref(), Some("a_b"));
        assert_eq!(repaired_name("$SYS").as_deref(), Some("SYS"));
        assert_eq!(repaired_name("a\0b").as_deref(), Some("a_b"));
        // Nothing sensible to offer.
        assert_eq!(repaired_name("#"), None);
        assert_eq!(repaired_name("/ /"), None);
        assert_eq!(repaired_name(""), None);
        assert_eq!(repaired_name(&"a".repeat(129)), None);
        assert_eq!(repaired_name("fine"), None);
    }

    #[test]
    fn shown_names() {
        assert_eq!(shown_name("a b"), "\"a b\"");
        assert_eq!(shown_name(&"a".repeat(40)), format!("\"{}\"", "a".repeat(40)));
        assert_eq!(
            shown_name(&"a".repeat(129)),
            format!("\"{}…\" (129 bytes)", "a".repeat(32))
        );
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("allowed_caller", "allowed_callers"), 1);
    }

    #[test]
    fn suggestions() {
        let keys = [
            "name",
            "description",
            "allowed_callers",
            "streaming",
            "version",
            "timeout_ms",
        ];
        assert_eq!(closest("allowed_caller", &keys), Some("allowed_callers"));
        assert_eq!(closest("callers", &keys), Some("allowed_callers"));
        assert_eq!(closest("stream", &keys), Some("streaming"));
        assert_eq!(closest("timeout", &keys), Some("timeout_ms"));
        assert_eq!(closest("desc", &keys), Some("description"));
        assert_eq!(closest("nmae", &keys), Some("name"));
        assert_eq!(closest("Version", &keys), Some("version"));
        assert_eq!(closest("frobnicate", &keys), None);
        assert_eq!(closest("x", &keys), None);
    }

    #[test]
    fn lists() {
        assert_eq!(one_of(&["a"]), "`a`");
        assert_eq!(one_of(&["a", "b"]), "`a` or `b`");
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }
}
