//! Hendrycks MATH string normalisation (`hendrycks/math@985bdc16`,
//! `modeling/math_equivalence.py` and `modeling/dataset/util.py`), reproduced exactly.
//!
//! Upstream raises in three places (`_remove_right_units` with more than one `"\text{ "`,
//! `_fix_sqrt` on a trailing `\sqrt`, `_fix_fracs` on a trailing `\frac`); its
//! `is_equiv` then compares the raw strings. [`strip_string_checked`] reports those cases as
//! [`StripError`], [`hendrycks_strip_string`] returns the input unchanged for them, and
//! [`hendrycks_is_equiv`] falls back to the raw comparison exactly as upstream does.

/// Where upstream `_strip_string` would raise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripError {
    #[error("`\\text{{ ` occurs more than once (upstream asserts exactly two parts)")]
    TooManyTextUnits,
    #[error("`\\sqrt` at the end of the string (upstream indexes an empty string)")]
    DanglingSqrt,
    #[error("`\\frac` at the end of the string (upstream indexes an empty string)")]
    DanglingFrac,
}

/// The last `\boxed…` (or, failing that, `\fbox…`) with its balanced braces, command
/// included; `None` when there is none or the braces never balance.
pub fn last_boxed_only_string(s: &str) -> Option<&str> {
    let idx = s.rfind("\\boxed").or_else(|| s.rfind("\\fbox"))?;
    let mut depth = 0i64;
    for (off, c) in s[idx..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[idx..idx + off + 1]);
                }
            }
            _ => {}
        }
    }
    None
}

/// Strips `\boxed{` and the final `}`; `None` when `s` is not of that shape.
pub fn remove_boxed(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("\\boxed{")?;
    inner.strip_suffix('}')
}

/// `_strip_string`; where upstream raises, the input is returned unchanged (see module doc).
pub fn hendrycks_strip_string(s: &str) -> String {
    strip_string_checked(s).unwrap_or_else(|_| s.to_string())
}

/// `is_equiv`: equal after `_strip_string`, or raw-equal when stripping either one raises.
pub fn hendrycks_is_equiv(a: &str, b: &str) -> bool {
    match (strip_string_checked(a), strip_string_checked(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// `_strip_string` step by step, with upstream's exceptions as errors.
pub fn strip_string_checked(s: &str) -> Result<String, StripError> {
    let mut s = s.replace('\n', "").replace("\\!", "").replace("\\\\", "\\");
    s = s.replace("tfrac", "frac").replace("dfrac", "frac");
    s = s.replace("\\left", "").replace("\\right", "");
    s = s.replace("^{\\circ}", "").replace("^\\circ", "");
    s = s.replace("\\$", "");
    if s.contains("\\text{ ") {
        let parts: Vec<&str> = s.split("\\text{ ").collect();
        if parts.len() != 2 {
            return Err(StripError::TooManyTextUnits);
        }
        s = parts[0].to_string();
    }
    s = s.replace("\\%", "");
    s = s.replace(" .", " 0.").replace("{.", "{0.");
    if s.is_empty() {
        return Ok(s);
    }
    if s.starts_with('.') {
        s.insert(0, '0');
    }
    {
        let parts: Vec<&str> = s.split('=').collect();
        // Python's len() counts code points.
        if parts.len() == 2 && parts[0].chars().count() <= 2 {
            s = parts[1].to_string();
        }
    }
    s = fix_sqrt(&s)?;
    s = s.replace(' ', "");
    s = fix_fracs(&s)?;
    if s == "0.5" {
        s = "\\frac{1}{2}".to_string();
    }
    Ok(fix_a_slash_b(&s))
}

fn fix_sqrt(s: &str) -> Result<String, StripError> {
    if !s.contains("\\sqrt") {
        return Ok(s.to_string());
    }
    let mut parts = s.split("\\sqrt");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        let mut chars = part.chars();
        match chars.next() {
            None => return Err(StripError::DanglingSqrt),
            Some('{') => {
                out.push_str("\\sqrt");
                out.push_str(part);
            }
            Some(a) => {
                out.push_str("\\sqrt{");
                out.push(a);
                out.push('}');
                out.push_str(chars.as_str());
            }
        }
    }
    Ok(out)
}

/// `_fix_fracs`. Upstream indexes `substr[0]` of an empty piece before its
/// `len(substr) >= 2` guard, so an empty piece raises while a one-character piece returns
/// the string unchanged.
fn fix_fracs(s: &str) -> Result<String, StripError> {
    let mut parts = s.split("\\frac");
    let mut out = parts.next().unwrap_or_default().to_string();
    for part in parts {
        out.push_str("\\frac");
        let chars: Vec<char> = part.chars().collect();
        if chars.is_empty() {
            return Err(StripError::DanglingFrac);
        }
        if chars[0] == '{' {
            out.push_str(part);
            continue;
        }
        if chars.len() < 2 {
            return Ok(s.to_string());
        }
        let (a, b) = (chars[0], chars[1]);
        let post: String = chars[2..].iter().collect();
        if b != '{' {
            out.push_str(&format!("{{{a}}}{{{b}}}{post}"));
        } else {
            out.push_str(&format!("{{{a}}}{b}{post}"));
        }
    }
    Ok(out)
}

/// `_fix_a_slash_b`: only canonical integers (`int(a)` printed back equals `a`).
pub(crate) fn fix_a_slash_b(s: &str) -> String {
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() != 2 {
        return s.to_string();
    }
    if is_canonical_int(parts[0]) && is_canonical_int(parts[1]) {
        return format!("\\frac{{{}}}{{{}}}", parts[0], parts[1]);
    }
    s.to_string()
}

/// Whether `str(int(x)) == x` in Python: optional `-`, digits, no leading zeros
/// (except `0` itself), no `-0`.
fn is_canonical_int(x: &str) -> bool {
    let digits = x.strip_prefix('-').unwrap_or(x);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && x != "-0"
}
