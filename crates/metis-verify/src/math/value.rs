//! Parsed math values: exact rationals with an f64 shadow, a small LaTeX expression AST
//! built by a recursive-descent parser with depth and size limits, and its evaluation.
//!
//! Numbers are [`Num`]: an exact rational (`i128` numerator and denominator) when one exists
//! and fits, always an `f64` approximation, and a `float` flag that records a decimal
//! literal somewhere in the computation (math-verify's "a Float is present" rule). Powers
//! with exponents over [`MAX_EXACT_EXP`] never build exact values, so `10^{10^{10}}` costs
//! nothing: it evaluates to `inf` and comparisons involving it are `Unknown`.

use std::collections::BTreeSet;

/// Deepest nesting the parser accepts (brackets, fractions, powers together).
pub const MAX_DEPTH: usize = 64;
/// Most tokens in one answer.
pub const MAX_TOKENS: usize = 2_000;
/// Largest integer exponent computed exactly.
pub const MAX_EXACT_EXP: i128 = 256;

/// Why a string is not a parseable expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("more than {MAX_TOKENS} tokens")]
    TooLong,
    #[error("unsupported token {0:?}")]
    Unsupported(String),
    #[error("unexpected end of input")]
    Eof,
    #[error("trailing input at {0:?}")]
    Trailing(String),
}

/// An exact rational, reduced, with a positive denominator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Q {
    pub n: i128,
    pub d: i128,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    a = a.checked_abs().unwrap_or(1);
    b = b.checked_abs().unwrap_or(1);
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

impl Q {
    pub fn new(n: i128, d: i128) -> Option<Q> {
        if d == 0 {
            return None;
        }
        let g = gcd(n, d).max(1);
        let (mut n, mut d) = (n / g, d / g);
        if d < 0 {
            n = n.checked_neg()?;
            d = d.checked_neg()?;
        }
        Some(Q { n, d })
    }
    pub fn int(n: i128) -> Q {
        Q { n, d: 1 }
    }
    fn add(self, o: Q) -> Option<Q> {
        let g = gcd(self.d, o.d).max(1);
        let d = (self.d / g).checked_mul(o.d)?;
        let n = self
            .n
            .checked_mul(o.d / g)?
            .checked_add(o.n.checked_mul(self.d / g)?)?;
        Q::new(n, d)
    }
    fn mul(self, o: Q) -> Option<Q> {
        let g1 = gcd(self.n, o.d).max(1);
        let g2 = gcd(o.n, self.d).max(1);
        Q::new(
            (self.n / g1).checked_mul(o.n / g2)?,
            (self.d / g2).checked_mul(o.d / g1)?,
        )
    }
    fn recip(self) -> Option<Q> {
        Q::new(self.d, self.n)
    }
    fn pow(self, e: i128) -> Option<Q> {
        if e.abs() > MAX_EXACT_EXP {
            return None;
        }
        let base = if e < 0 { self.recip()? } else { self };
        let mut acc = Q::int(1);
        for _ in 0..e.abs() {
            acc = acc.mul(base)?;
        }
        Some(acc)
    }
    pub fn to_f64(self) -> f64 {
        self.n as f64 / self.d as f64
    }
    /// `self` rounded to 6 decimal places, as an integer count of millionths (half away
    /// from zero); `None` on overflow.
    pub fn round6(self) -> Option<i128> {
        let scaled = self.n.checked_mul(1_000_000)?;
        let (q, r) = (scaled / self.d, scaled % self.d);
        let twice = r.checked_abs()?.checked_mul(2)?;
        Some(if twice >= self.d {
            q + scaled.signum()
        } else {
            q
        })
    }
}

/// A number: exact where possible, always approximated, flagged when a decimal literal
/// took part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Num {
    pub q: Option<Q>,
    pub f: f64,
    pub float: bool,
}

impl Num {
    pub fn exact(q: Q) -> Num {
        Num {
            q: Some(q),
            f: q.to_f64(),
            float: false,
        }
    }
    pub fn approx(f: f64) -> Num {
        Num {
            q: None,
            f,
            float: false,
        }
    }
    fn combine(self, o: Num, q: Option<Q>, f: f64) -> Num {
        Num {
            q,
            f,
            float: self.float || o.float,
        }
    }
    fn add(self, o: Num) -> Num {
        let q = match (self.q, o.q) {
            (Some(a), Some(b)) => a.add(b),
            _ => None,
        };
        self.combine(o, q, self.f + o.f)
    }
    fn mul(self, o: Num) -> Num {
        let q = match (self.q, o.q) {
            (Some(a), Some(b)) => a.mul(b),
            _ => None,
        };
        self.combine(o, q, self.f * o.f)
    }
    fn neg(self) -> Num {
        Num {
            q: self
                .q
                .and_then(|a| a.n.checked_neg().map(|n| Q { n, d: a.d })),
            f: -self.f,
            float: self.float,
        }
    }
    fn div(self, o: Num) -> Num {
        let q = match (self.q, o.q) {
            (Some(a), Some(b)) => b.recip().and_then(|r| a.mul(r)),
            _ => None,
        };
        self.combine(o, q, self.f / o.f)
    }
    fn pow(self, o: Num) -> Num {
        let q = match (self.q, o.q) {
            (Some(a), Some(b)) if b.d == 1 => a.pow(b.n),
            _ => None,
        };
        // An exact integer exponent avoids powf's rounding for negative bases.
        let f = match o.q {
            Some(b) if b.d == 1 && b.n.abs() <= i32::MAX as i128 => self.f.powi(b.n as i32),
            _ => self.f.powf(o.f),
        };
        self.combine(o, q, f)
    }
}

/// Functions the parser knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Sin,
    Cos,
    Tan,
    Cot,
    Sec,
    Csc,
    Asin,
    Acos,
    Atan,
    Ln,
    Log10,
    Exp,
    Abs,
    Floor,
    Ceil,
    Fact,
}

/// Expression tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Num(Num),
    Sym(String),
    Add(Vec<Node>),
    Mul(Vec<Node>),
    Neg(Box<Node>),
    Div(Box<Node>, Box<Node>),
    Pow(Box<Node>, Box<Node>),
    Func(Func, Box<Node>),
    Log(Box<Node>, Box<Node>),
}

/// Why a node has no number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    FreeSymbol(String),
}

impl Node {
    /// Free symbols, sorted.
    pub fn symbols(&self, out: &mut BTreeSet<String>) {
        match self {
            Node::Num(_) => {}
            Node::Sym(s) => {
                out.insert(s.clone());
            }
            Node::Add(v) | Node::Mul(v) => v.iter().for_each(|n| n.symbols(out)),
            Node::Neg(a) | Node::Func(_, a) => a.symbols(out),
            Node::Div(a, b) | Node::Pow(a, b) | Node::Log(a, b) => {
                a.symbols(out);
                b.symbols(out);
            }
        }
    }

    /// The value with `env` giving the free symbols; exact where the operations allow.
    pub fn eval(&self, env: &[(String, f64)]) -> Result<Num, EvalError> {
        Ok(match self {
            Node::Num(n) => *n,
            Node::Sym(s) => match env.iter().find(|(k, _)| k == s) {
                Some((_, v)) => Num::approx(*v),
                None => return Err(EvalError::FreeSymbol(s.clone())),
            },
            Node::Add(v) => {
                let mut acc = Num::exact(Q::int(0));
                for n in v {
                    acc = acc.add(n.eval(env)?);
                }
                acc
            }
            Node::Mul(v) => {
                let mut acc = Num::exact(Q::int(1));
                for n in v {
                    acc = acc.mul(n.eval(env)?);
                }
                acc
            }
            Node::Neg(a) => a.eval(env)?.neg(),
            Node::Div(a, b) => a.eval(env)?.div(b.eval(env)?),
            Node::Pow(a, b) => a.eval(env)?.pow(b.eval(env)?),
            Node::Log(base, x) => {
                let (b, x) = (base.eval(env)?, x.eval(env)?);
                Num {
                    q: None,
                    f: x.f.ln() / b.f.ln(),
                    float: b.float || x.float,
                }
            }
            Node::Func(func, a) => {
                let a = a.eval(env)?;
                let x = a.f;
                let exact = |q: Option<Q>| Num {
                    q,
                    f: q.map_or(f64::NAN, Q::to_f64),
                    float: a.float,
                };
                let f = match func {
                    Func::Sin => x.sin(),
                    Func::Cos => x.cos(),
                    Func::Tan => x.tan(),
                    Func::Cot => 1.0 / x.tan(),
                    Func::Sec => 1.0 / x.cos(),
                    Func::Csc => 1.0 / x.sin(),
                    Func::Asin => x.asin(),
                    Func::Acos => x.acos(),
                    Func::Atan => x.atan(),
                    Func::Ln => x.ln(),
                    Func::Log10 => x.log10(),
                    Func::Exp => x.exp(),
                    Func::Abs => {
                        return Ok(match a.q {
                            Some(q) => exact(q.n.checked_abs().map(|n| Q { n, d: q.d })),
                            None => Num {
                                q: None,
                                f: x.abs(),
                                float: a.float,
                            },
                        })
                    }
                    Func::Floor | Func::Ceil => {
                        let r = if *func == Func::Floor {
                            x.floor()
                        } else {
                            x.ceil()
                        };
                        if let Some(q) = a.q {
                            let fl = q.n.div_euclid(q.d);
                            let v = if *func == Func::Floor || q.d == 1 {
                                fl
                            } else {
                                fl + 1
                            };
                            return Ok(exact(Some(Q::int(v))));
                        }
                        r
                    }
                    Func::Fact => {
                        if let Some(q) = a.q {
                            if q.d == 1 && (0..=170).contains(&q.n) {
                                let mut acc: Option<i128> = Some(1);
                                let mut fl = 1.0f64;
                                for k in 1..=q.n {
                                    acc = acc.and_then(|v| v.checked_mul(k));
                                    fl *= k as f64;
                                }
                                return Ok(Num {
                                    q: acc.map(Q::int),
                                    f: fl,
                                    float: a.float,
                                });
                            }
                        }
                        f64::NAN
                    }
                };
                Num {
                    q: None,
                    f,
                    float: a.float,
                }
            }
        })
    }
}

// ---------------------------------------------------------------- tokens

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Num(String),
    Ident(char),
    Cmd(String),
    Op(char),
}

/// Splits normalised LaTeX into tokens; `Err` on anything outside the supported alphabet.
pub fn tokenize(s: &str) -> Result<Vec<Tok>, ParseError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if out.len() > MAX_TOKENS {
            return Err(ParseError::TooLong);
        }
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i < chars.len()
                && chars[i] == '.'
                && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())
            {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            } else if i < chars.len() && chars[i] == '.' && start < i {
                // "5." with nothing after: a trailing dot, not a decimal.
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if c.is_ascii_alphabetic() {
            out.push(Tok::Ident(c));
            i += 1;
        } else if c == '\\' {
            i += 1;
            let start = i;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            if start == i {
                match chars.get(i) {
                    Some(&p) => {
                        out.push(Tok::Cmd(p.to_string()));
                        i += 1;
                    }
                    None => return Err(ParseError::Eof),
                }
            } else {
                out.push(Tok::Cmd(chars[start..i].iter().collect()));
            }
        } else {
            let t = match c {
                '+' | '-' | '*' | '/' | '^' | '_' | '(' | ')' | '[' | ']' | '{' | '}' | '='
                | '<' | '>' | '!' | '|' | '%' | ',' => Tok::Op(c),
                '−' | '–' => Tok::Op('-'),
                '×' | '·' | '⋅' => Tok::Op('*'),
                '÷' => Tok::Op('/'),
                'π' => Tok::Cmd("pi".into()),
                '∞' => Tok::Cmd("infty".into()),
                '√' => Tok::Cmd("sqrt".into()),
                '≤' => Tok::Cmd("le".into()),
                '≥' => Tok::Cmd("ge".into()),
                '≠' => Tok::Cmd("ne".into()),
                _ => return Err(ParseError::Unsupported(c.to_string())),
            };
            out.push(t);
            i += 1;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- parser

/// A relation operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rel {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// An expression, or a relation chain reduced to its first left and last right side.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Expr(Node),
    Rel(Node, Rel, Node),
}

pub struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    depth: usize,
}

fn num_literal(s: &str) -> Num {
    // Digits only (tokenizer guarantees), at most one '.'.
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = format!("{int}{frac}");
    let f: f64 = s.parse().unwrap_or(f64::NAN);
    let q = if digits.len() <= 36 && frac.len() <= 30 {
        digits
            .parse::<i128>()
            .ok()
            .and_then(|n| Q::new(n, 10i128.pow(frac.len() as u32)))
    } else {
        None
    };
    Num {
        q,
        f,
        float: s.contains('.'),
    }
}

fn is_cmd(t: Option<&Tok>, names: &[&str]) -> bool {
    matches!(t, Some(Tok::Cmd(c)) if names.contains(&c.as_str()))
}

impl<'a> Parser<'a> {
    pub fn new(toks: &'a [Tok]) -> Self {
        Parser {
            toks,
            pos: 0,
            depth: 0,
        }
    }
    fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.pos)
    }
    fn bump(&mut self) -> Option<&'a Tok> {
        let t = self.toks.get(self.pos);
        self.pos += 1;
        t
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Op(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }
    fn unexpected(&self) -> ParseError {
        match self.peek() {
            Some(t) => ParseError::Unsupported(format!("{t:?}")),
            None => ParseError::Eof,
        }
    }
    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(ParseError::TooDeep)
        } else {
            Ok(())
        }
    }

    /// The whole token stream as one item.
    pub fn parse_item(mut self) -> Result<Item, ParseError> {
        let item = self.item()?;
        if self.pos < self.toks.len() {
            return Err(ParseError::Trailing(format!("{:?}", &self.toks[self.pos])));
        }
        Ok(item)
    }

    fn rel_op(&self) -> Option<(Rel, usize)> {
        match (self.peek()?, self.toks.get(self.pos + 1)) {
            (Tok::Op('<'), Some(Tok::Op('='))) => Some((Rel::Le, 2)),
            (Tok::Op('>'), Some(Tok::Op('='))) => Some((Rel::Ge, 2)),
            (Tok::Op('!'), Some(Tok::Op('='))) => Some((Rel::Ne, 2)),
            (Tok::Op('='), _) => Some((Rel::Eq, 1)),
            (Tok::Op('<'), _) => Some((Rel::Lt, 1)),
            (Tok::Op('>'), _) => Some((Rel::Gt, 1)),
            (Tok::Cmd(c), _) => match c.as_str() {
                "le" | "leq" | "leqslant" => Some((Rel::Le, 1)),
                "ge" | "geq" | "geqslant" => Some((Rel::Ge, 1)),
                "ne" | "neq" => Some((Rel::Ne, 1)),
                "lt" => Some((Rel::Lt, 1)),
                "gt" => Some((Rel::Gt, 1)),
                _ => None,
            },
            _ => None,
        }
    }

    fn item(&mut self) -> Result<Item, ParseError> {
        let first = self.expr()?;
        let mut last: Option<(Rel, Node)> = None;
        while let Some((rel, len)) = self.rel_op() {
            self.pos += len;
            let rhs = self.expr()?;
            // A chain x = a = b keeps the first lhs and the last rhs (math-verify).
            last = Some((
                last.map_or(rel, |(r, _)| if r == Rel::Eq { rel } else { r }),
                rhs,
            ));
        }
        Ok(match last {
            Some((rel, rhs)) => Item::Rel(first, rel, rhs),
            None => Item::Expr(first),
        })
    }

    fn expr(&mut self) -> Result<Node, ParseError> {
        self.enter()?;
        let mut terms = vec![self.term()?];
        loop {
            if self.eat('+') {
                terms.push(self.term()?);
            } else if self.eat('-') {
                terms.push(Node::Neg(Box::new(self.term()?)));
            } else if is_cmd(self.peek(), &["pm", "mp"]) {
                return Err(ParseError::Unsupported("\\pm".into()));
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(if terms.len() == 1 {
            terms.pop().unwrap_or(Node::Add(vec![]))
        } else {
            Node::Add(terms)
        })
    }

    fn starts_factor(&self) -> bool {
        match self.peek() {
            Some(Tok::Num(_)) | Some(Tok::Ident(_)) => true,
            Some(Tok::Op(c)) => matches!(c, '(' | '{'),
            Some(Tok::Cmd(c)) => {
                FACTOR_COMMANDS.contains(&c.as_str()) || GREEK.contains(&c.as_str())
            }
            None => false,
        }
    }

    fn term(&mut self) -> Result<Node, ParseError> {
        self.enter()?;
        let mut acc = self.unary()?;
        loop {
            if self.eat('*')
                || (is_cmd(self.peek(), &["cdot", "times", "ast"]) && self.bump().is_some())
            {
                let rhs = self.unary()?;
                acc = Node::Mul(vec![acc, rhs]);
            } else if self.eat('/') || (is_cmd(self.peek(), &["div"]) && self.bump().is_some()) {
                let rhs = self.unary()?;
                acc = Node::Div(Box::new(acc), Box::new(rhs));
            } else if self.starts_factor() {
                let rhs = self.power()?;
                acc = Node::Mul(vec![acc, rhs]);
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(acc)
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        self.enter()?;
        let n = if self.eat('-') {
            Node::Neg(Box::new(self.unary()?))
        } else if self.eat('+') {
            self.unary()?
        } else {
            self.power()?
        };
        self.depth -= 1;
        Ok(n)
    }

    fn power(&mut self) -> Result<Node, ParseError> {
        self.enter()?;
        let mut base = self.primary()?;
        loop {
            if self.eat('^') {
                let exp = if self.peek() == Some(&Tok::Op('{')) {
                    self.group()?
                } else if self.eat('-') {
                    Node::Neg(Box::new(self.power()?))
                } else {
                    // Right-associative: 2^3^2 is 2^(3^2).
                    self.power()?
                };
                base = Node::Pow(Box::new(base), Box::new(exp));
            } else if self.eat('!') {
                base = Node::Func(Func::Fact, Box::new(base));
            } else if self.eat('%') || (is_cmd(self.peek(), &["%"]) && self.bump().is_some()) {
                base = Node::Div(Box::new(base), Box::new(Node::Num(Num::exact(Q::int(100)))));
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(base)
    }

    /// `{ expr }`.
    fn group(&mut self) -> Result<Node, ParseError> {
        self.expect('{')?;
        let n = self.expr()?;
        self.expect('}')?;
        Ok(n)
    }

    /// A function argument: a braced or parenthesised group, or a single factor.
    fn argument(&mut self) -> Result<Node, ParseError> {
        match self.peek() {
            Some(Tok::Op('{')) => self.group(),
            Some(Tok::Op('(')) => {
                self.pos += 1;
                let n = self.expr()?;
                self.expect(')')?;
                Ok(n)
            }
            _ => self.power(),
        }
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        self.enter()?;
        let tok = self.bump().ok_or(ParseError::Eof)?;
        let n = match tok {
            Tok::Num(s) => Node::Num(num_literal(s)),
            Tok::Ident(c) => {
                let mut name = c.to_string();
                if self.eat('_') {
                    match self.bump() {
                        Some(Tok::Num(s)) => name.push_str(&format!("_{s}")),
                        Some(Tok::Ident(c)) => name.push_str(&format!("_{c}")),
                        Some(Tok::Op('{')) => {
                            name.push_str("_{");
                            while let Some(t) = self.bump() {
                                if t == &Tok::Op('}') {
                                    break;
                                }
                                name.push_str(&format!("{t:?}"));
                            }
                            name.push('}');
                        }
                        _ => return Err(self.unexpected()),
                    }
                }
                if name == "e" {
                    Node::Num(Num::approx(std::f64::consts::E))
                } else {
                    Node::Sym(name)
                }
            }
            Tok::Op('(') => {
                let n = self.expr()?;
                self.expect(')')?;
                n
            }
            Tok::Op('[') => {
                let n = self.expr()?;
                self.expect(']')?;
                n
            }
            Tok::Op('{') => {
                let n = self.expr()?;
                self.expect('}')?;
                n
            }
            Tok::Op('|') => {
                let n = self.expr()?;
                self.expect('|')?;
                Node::Func(Func::Abs, Box::new(n))
            }
            Tok::Cmd(c) => self.command(c)?,
            Tok::Op(c) => return Err(ParseError::Unsupported(c.to_string())),
        };
        self.depth -= 1;
        Ok(n)
    }

    fn command(&mut self, c: &str) -> Result<Node, ParseError> {
        let func = |f| Some(f);
        let f = match c {
            "sin" => func(Func::Sin),
            "cos" => func(Func::Cos),
            "tan" => func(Func::Tan),
            "cot" => func(Func::Cot),
            "sec" => func(Func::Sec),
            "csc" => func(Func::Csc),
            "arcsin" => func(Func::Asin),
            "arccos" => func(Func::Acos),
            "arctan" => func(Func::Atan),
            "ln" => func(Func::Ln),
            "exp" => func(Func::Exp),
            _ => None,
        };
        if let Some(f) = f {
            // \sin^2 x is (\sin x)^2.
            let power = if self.eat('^') {
                Some(self.argument()?)
            } else {
                None
            };
            let arg = self.argument()?;
            let n = Node::Func(f, Box::new(arg));
            return Ok(match power {
                Some(p) => Node::Pow(Box::new(n), Box::new(p)),
                None => n,
            });
        }
        Ok(match c {
            "frac" | "binom" => {
                let a = self.argument()?;
                let b = self.argument()?;
                if c == "binom" {
                    // n choose k = n! / (k! (n-k)!)
                    let fact = |n: Node| Node::Func(Func::Fact, Box::new(n));
                    let diff = Node::Add(vec![a.clone(), Node::Neg(Box::new(b.clone()))]);
                    Node::Div(
                        Box::new(fact(a)),
                        Box::new(Node::Mul(vec![fact(b), fact(diff)])),
                    )
                } else {
                    Node::Div(Box::new(a), Box::new(b))
                }
            }
            "sqrt" => {
                let index = if self.eat('[') {
                    let n = self.expr()?;
                    self.expect(']')?;
                    n
                } else {
                    Node::Num(Num::exact(Q::int(2)))
                };
                let arg = self.argument()?;
                Node::Pow(
                    Box::new(arg),
                    Box::new(Node::Div(
                        Box::new(Node::Num(Num::exact(Q::int(1)))),
                        Box::new(index),
                    )),
                )
            }
            "log" => {
                let base = if self.eat('_') {
                    Some(self.argument()?)
                } else {
                    None
                };
                let arg = self.argument()?;
                match base {
                    // math-verify reads a bare \log as base 10 (\log 2 != \ln 2 there).
                    None => Node::Func(Func::Log10, Box::new(arg)),
                    Some(b) => Node::Log(Box::new(b), Box::new(arg)),
                }
            }
            "lfloor" | "lceil" => {
                let n = self.expr()?;
                let close = if c == "lfloor" { "rfloor" } else { "rceil" };
                if !is_cmd(self.peek(), &[close]) {
                    return Err(self.unexpected());
                }
                self.pos += 1;
                Node::Func(
                    if c == "lfloor" {
                        Func::Floor
                    } else {
                        Func::Ceil
                    },
                    Box::new(n),
                )
            }
            "pi" => Node::Num(Num::approx(std::f64::consts::PI)),
            "infty" => Node::Num(Num::approx(f64::INFINITY)),
            "{" => {
                return Err(ParseError::Unsupported("\\{".into()));
            }
            greek if GREEK.contains(&greek) => Node::Sym(format!("\\{greek}")),
            other => return Err(ParseError::Unsupported(format!("\\{other}"))),
        })
    }
}

/// Greek letters read as symbols (`\alpha` → the variable α).
const GREEK: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "theta",
    "phi",
    "lambda",
    "mu",
    "sigma",
    "omega",
    "tau",
    "rho",
    "delta",
    "epsilon",
    "varepsilon",
    "psi",
    "eta",
    "xi",
    "zeta",
    "kappa",
    "nu",
    "chi",
    "varphi",
    "vartheta",
];

/// Commands other than Greek letters that open a factor.
const FACTOR_COMMANDS: &[&str] = &[
    "frac", "sqrt", "pi", "infty", "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos",
    "arctan", "ln", "log", "exp", "lfloor", "lceil", "binom",
];

/// Parses one item (expression or relation) from normalised text.
pub fn parse_item(s: &str) -> Result<Item, ParseError> {
    let toks = tokenize(s)?;
    if toks.is_empty() {
        return Err(ParseError::Eof);
    }
    Parser::new(&toks).parse_item()
}
