//! Python `str` semantics that the IFEval checkers depend on.
//!
//! Upstream is Python, and several verdicts hinge on exactly which characters Python counts as
//! whitespace or as upper/lower case; these helpers reproduce CPython's definitions on Rust
//! strings so the checkers can be written against them.

/// `str.isspace()` for one character: Unicode White_Space plus the ASCII separators
/// U+001C..U+001F, which CPython counts as whitespace (bidi class B/S) and Rust does not.
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `str.strip()` with no argument.
pub(crate) fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// `str.rstrip()` with no argument.
pub(crate) fn rstrip(s: &str) -> &str {
    s.trim_end_matches(is_space)
}

/// `str.split()` with no argument: runs of whitespace separate, no empty pieces.
pub(crate) fn split_ws(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_space).filter(|p| !p.is_empty())
}

/// Titlecase letters (category Lt): Python's `isupper`/`islower` reject strings with them.
fn is_titlecase(c: char) -> bool {
    matches!(c as u32,
        0x01C5 | 0x01C8 | 0x01CB | 0x01F2 | 0x1F88..=0x1F8F | 0x1F98..=0x1F9F | 0x1FA8..=0x1FAF
        | 0x1FBC | 0x1FCC | 0x1FFC)
}

/// `str.isupper()`: at least one cased character, and no lowercase or titlecase one.
pub(crate) fn is_upper(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if c.is_lowercase() || is_titlecase(c) {
            return false;
        }
        cased |= c.is_uppercase();
    }
    cased
}

/// `str.islower()`: at least one cased character, and no uppercase or titlecase one.
pub(crate) fn is_lower(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if c.is_uppercase() || is_titlecase(c) {
            return false;
        }
        cased |= c.is_lowercase();
    }
    cased
}

/// `str.lower()`: full Unicode lowercase mapping (Rust's includes the final-sigma rule, as
/// CPython's does).
pub(crate) fn lower(s: &str) -> String {
    s.to_lowercase()
}

/// Python `re`'s `\w` (not the `regex` module's): `str.isalnum()` or `_`. Unlike Rust's `\w` it
/// includes No/Nl numbers such as `²` and excludes combining marks.
pub(crate) fn is_re_word(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// The `regex` module's `\w` (used by NLTK 3.10's tokenizers through `nltk.redos`): the same
/// definition as Rust's regex `\w` (Alphabetic, Mark, Decimal_Number, Connector_Punctuation,
/// Join_Control).
pub(crate) fn is_regex_word(c: char) -> bool {
    use std::sync::LazyLock;
    static RE: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"\A\w\z").expect("static regex"));
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    let mut buf = [0u8; 4];
    RE.is_match(c.encode_utf8(&mut buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_case_and_space() {
        assert!(is_upper("HELLO 123"));
        assert!(!is_upper("123"));
        assert!(!is_upper("HELLO ǅ"));
        assert!(is_lower("hello ß"));
        assert!(!is_lower("hello World"));
        assert_eq!(strip("\u{1c} x \u{3000}"), "x");
        assert!(is_re_word('²') && !is_re_word('\u{301}'));
        assert!(!is_regex_word('²') && is_regex_word('\u{301}'));
    }
}
