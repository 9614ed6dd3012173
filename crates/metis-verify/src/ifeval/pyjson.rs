//! Does Python's `json.loads` accept a string? (Syntax only; no value is built.)
//!
//! `detectable_format:json_format` passes iff `json.loads` succeeds, and Python's decoder is more
//! permissive than strict JSON (and than `serde_json`): it accepts `NaN`, `Infinity`,
//! `-Infinity`, numbers of any magnitude (`1e400` is `inf`), lone surrogate escapes and
//! duplicate keys. It rejects a leading BOM, raw control characters inside strings and any
//! trailing non-whitespace. Whitespace between tokens is only space, tab, CR and LF.
//!
//! Nesting deeper than [`MAX_DEPTH`] is rejected: CPython raises `RecursionError` there (not a
//! `ValueError`, so upstream would crash instead of grading); treating it as invalid JSON is the
//! documented deterministic choice.

/// Nesting limit (CPython's default recursion limit is 1000 frames).
pub(crate) const MAX_DEPTH: usize = 900;

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

impl P<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }
    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }
    fn digits(&mut self) -> usize {
        let s = self.i;
        while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
            self.i += 1;
        }
        self.i - s
    }
    fn string(&mut self) -> bool {
        // self.b[self.i] == b'"'
        self.i += 1;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return true;
                }
                b'\\' => {
                    self.i += 1;
                    match self.b.get(self.i) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 1..self.i + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return false;
                            }
                            self.i += 5;
                        }
                        _ => return false,
                    }
                }
                c if c < 0x20 => return false,
                _ => self.i += 1,
            }
        }
        false
    }
    fn number(&mut self) -> bool {
        // Python: -?(?:0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)? ; "-Infinity" handled by the caller.
        self.eat(b"-");
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return false,
        }
        let save = self.i;
        if self.eat(b".") && self.digits() == 0 {
            self.i = save; // "1." parses as 1 with "." left over (then rejected as extra data)
        }
        let save = self.i;
        if self.eat(b"e") || self.eat(b"E") {
            let _sign = self.eat(b"+") || self.eat(b"-");
            if self.digits() == 0 {
                self.i = save;
            }
        }
        true
    }
    /// One value, iteratively (explicit stack) so deep input cannot overflow ours.
    fn value(&mut self) -> bool {
        // stack of containers: true = object, false = array
        let mut stack: Vec<bool> = Vec::new();
        'value: loop {
            self.ws();
            let Some(&c) = self.b.get(self.i) else {
                return false;
            };
            match c {
                b'{' => {
                    self.i += 1;
                    self.ws();
                    if self.eat(b"}") {
                        // empty object: fall through to "after value"
                    } else {
                        if stack.len() >= MAX_DEPTH {
                            return false;
                        }
                        stack.push(true);
                        if self.b.get(self.i) != Some(&b'"') || !self.string() {
                            return false;
                        }
                        self.ws();
                        if !self.eat(b":") {
                            return false;
                        }
                        continue 'value;
                    }
                }
                b'[' => {
                    self.i += 1;
                    self.ws();
                    if !self.eat(b"]") {
                        if stack.len() >= MAX_DEPTH {
                            return false;
                        }
                        stack.push(false);
                        continue 'value;
                    }
                }
                b'"' => {
                    if !self.string() {
                        return false;
                    }
                }
                b'n' if self.eat(b"null") => {}
                b't' if self.eat(b"true") => {}
                b'f' if self.eat(b"false") => {}
                b'N' if self.eat(b"NaN") => {}
                b'I' if self.eat(b"Infinity") => {}
                b'-' if self.eat(b"-Infinity") => {}
                b'-' | b'0'..=b'9' => {
                    if !self.number() {
                        return false;
                    }
                }
                _ => return false,
            }
            // after a complete value: close containers or continue with the next element
            loop {
                let Some(&top) = stack.last() else {
                    return true;
                };
                self.ws();
                if self.eat(b",") {
                    self.ws();
                    if top {
                        if self.b.get(self.i) != Some(&b'"') || !self.string() {
                            return false;
                        }
                        self.ws();
                        if !self.eat(b":") {
                            return false;
                        }
                    }
                    continue 'value;
                }
                if self.eat(if top { b"}" } else { b"]" }) {
                    stack.pop();
                    continue;
                }
                return false;
            }
        }
    }
}

/// `json.loads(s)` succeeds.
pub(crate) fn python_json_loads_ok(s: &str) -> bool {
    let mut p = P {
        b: s.as_bytes(),
        i: 0,
    };
    if !p.value() {
        return false;
    }
    p.ws();
    p.i == p.b.len()
}

#[cfg(test)]
mod tests {
    use super::python_json_loads_ok as ok;

    #[test]
    fn python_json_semantics() {
        for good in [
            "{}",
            "[]",
            "1",
            "-0.5e+3",
            "\"x\"",
            "NaN",
            "-Infinity",
            "[NaN, Infinity]",
            "{\"a\": [1, {\"b\": null}]}",
            "1e400",
            "\"\\ud800\"",
            " {\"a\":1,\"a\":2} ",
        ] {
            assert!(ok(good), "{good}");
        }
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "+1",
            "nan",
            "'a'",
            "\u{feff}{}",
            "\"a\nb\"",
            "{} x",
            "[1] [2]",
            "{1: 2}",
            "\"\\x\"",
            "-",
            "1e",
            "tru",
        ] {
            assert!(!ok(bad), "{bad}");
        }
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(!ok(&deep));
    }
}
