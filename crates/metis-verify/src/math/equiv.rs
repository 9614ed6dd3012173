//! Equivalence of two answer strings, following math-verify 0.8.0's `verify` where it can be
//! matched without a CAS: structure (sets, tuples, intervals, relations) first, then numbers
//! (exact rationals; "if a Float is present, round both to 6 dp"; closed forms within a
//! relative 1e-9) and expressions with free symbols by evaluation at fixed pseudo-random
//! points. Anything that does not parse is `Unknown` unless the normalised strings agree.

use std::collections::BTreeSet;

use super::normalize::normalize_answer;
use super::value::{parse_item, Item, Node, Num, Rel};
use super::Equivalence;

/// Longest answer string compared (bytes); longer ones are `Unknown`.
pub const MAX_INPUT: usize = 4_096;

/// A parsed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Item),
    Tuple(Vec<Item>),
    Interval {
        lo: Node,
        hi: Node,
        left_closed: bool,
        right_closed: bool,
    },
    Set(Vec<Item>),
    Text(String),
}

/// Splits at top-level commas (outside any bracket).
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i64, 0);
    let mut prev_backslash = false;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 && !prev_backslash => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        prev_backslash = c == '\\';
    }
    parts.push(&s[start..]);
    parts
}

/// Whether the bracket opening at byte 0 closes at the last byte.
fn wraps(s: &str) -> bool {
    let mut depth = 0i64;
    let n = s.len();
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 && i + c.len_utf8() != n {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

/// A word of three or more letters that is not a LaTeX command marks a text answer.
fn is_text(s: &str) -> bool {
    let mut run = 0;
    let mut after_backslash = false;
    for c in s.chars() {
        if c.is_alphabetic() {
            if !after_backslash {
                run += 1;
                if run >= 3 {
                    return true;
                }
            }
        } else {
            after_backslash = c == '\\';
            run = 0;
        }
    }
    false
}

fn text_key(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '(' | ')' | '\\' | '{' | '}' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

fn item(s: &str) -> Result<Item, String> {
    parse_item(s).map_err(|e| format!("cannot parse {s:?}: {e}"))
}

/// Parses a normalised answer.
pub fn parse_value(s: &str) -> Result<Value, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty answer".into());
    }
    if let Some(inner) = s.strip_prefix("\\{").and_then(|r| r.strip_suffix("\\}")) {
        let items = split_top(inner)
            .into_iter()
            .map(|p| item(p.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Value::Set(items));
    }
    let parts = split_top(s);
    let first = s.chars().next().unwrap_or(' ');
    let last = s.chars().last().unwrap_or(' ');
    if matches!(first, '(' | '[') && matches!(last, ')' | ']') && wraps(s) {
        let inner = &s[1..s.len() - 1];
        let inner_parts = split_top(inner);
        if inner_parts.len() == 2 && (first == '[' || last == ']') {
            let lo = expr_of(item(inner_parts[0].trim())?)?;
            let hi = expr_of(item(inner_parts[1].trim())?)?;
            return Ok(Value::Interval {
                lo,
                hi,
                left_closed: first == '[',
                right_closed: last == ']',
            });
        }
        if inner_parts.len() >= 2 {
            let items = inner_parts
                .into_iter()
                .map(|p| item(p.trim()))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Value::Tuple(items));
        }
    }
    if parts.len() >= 2 {
        let items = parts
            .into_iter()
            .map(|p| item(p.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Value::Set(items));
    }
    if is_text(s) {
        return Ok(Value::Text(text_key(s)));
    }
    match item(s) {
        Ok(i) => Ok(Value::Scalar(i)),
        Err(e) => {
            // Letter answers such as "(B)" or "B".
            if s.chars()
                .all(|c| c.is_alphabetic() || matches!(c, '(' | ')' | ' ' | '.'))
            {
                Ok(Value::Text(text_key(s)))
            } else {
                Err(e)
            }
        }
    }
}

fn expr_of(i: Item) -> Result<Node, String> {
    match i {
        Item::Expr(n) => Ok(n),
        Item::Rel(..) => Err("relation inside an interval".into()),
    }
}

/// Three-valued comparison result.
type Cmp = Result<bool, String>;

/// Fixed pseudo-random evaluation points (positive, away from integers, so that roots,
/// logarithms and most removable singularities behave).
const POINTS: [f64; 8] = [
    0.5377, 1.8339, 2.2588, 0.8622, 1.3188, 3.3077, 1.4336, 0.3426,
];

fn num_eq(a: Num, b: Num) -> Cmp {
    if a.f.is_nan() || b.f.is_nan() {
        return Err("not a real number".into());
    }
    if a.f.is_infinite() || b.f.is_infinite() {
        // Only a written \infty may be infinite; a huge power is undecidable here.
        return Err("infinite or overflowing value".into());
    }
    if a.float || b.float {
        if let (Some(x), Some(y)) = (a.q.and_then(|q| q.round6()), b.q.and_then(|q| q.round6())) {
            return Ok(x == y);
        }
        return Ok((a.f * 1e6).round() == (b.f * 1e6).round());
    }
    if let (Some(x), Some(y)) = (a.q, b.q) {
        return Ok(x == y);
    }
    let scale = a.f.abs().max(b.f.abs()).max(1.0);
    Ok((a.f - b.f).abs() <= 1e-9 * scale)
}

fn is_infty(n: &Node) -> Option<bool> {
    match n {
        Node::Num(x) if x.f.is_infinite() => Some(x.f > 0.0),
        Node::Neg(inner) => is_infty(inner).map(|p| !p),
        _ => None,
    }
}

fn node_eq(a: &Node, b: &Node) -> Cmp {
    if let (Some(x), Some(y)) = (is_infty(a), is_infty(b)) {
        return Ok(x == y);
    }
    if is_infty(a).is_some() || is_infty(b).is_some() {
        return Ok(false);
    }
    let mut syms = BTreeSet::new();
    a.symbols(&mut syms);
    b.symbols(&mut syms);
    if syms.is_empty() {
        let x = a.eval(&[]).map_err(|e| format!("{e:?}"))?;
        let y = b.eval(&[]).map_err(|e| format!("{e:?}"))?;
        return num_eq(x, y);
    }
    let mut valid = 0;
    for k in 0..POINTS.len() {
        let env: Vec<(String, f64)> = syms
            .iter()
            .enumerate()
            .map(|(j, s)| {
                (
                    s.clone(),
                    POINTS[(k + 3 * j) % POINTS.len()] + j as f64 * 0.1,
                )
            })
            .collect();
        let (x, y) = match (a.eval(&env), b.eval(&env)) {
            (Ok(x), Ok(y)) => (x.f, y.f),
            _ => return Err("evaluation failed".into()),
        };
        if !x.is_finite() || !y.is_finite() {
            continue;
        }
        valid += 1;
        let scale = x.abs().max(y.abs()).max(1.0);
        if (x - y).abs() > 1e-8 * scale {
            return Ok(false);
        }
    }
    if valid >= 3 {
        Ok(true)
    } else {
        Err("too few points where both sides are defined".into())
    }
}

fn diff(l: &Node, r: &Node) -> Node {
    Node::Add(vec![l.clone(), Node::Neg(Box::new(r.clone()))])
}

fn flip(r: Rel) -> Rel {
    match r {
        Rel::Lt => Rel::Gt,
        Rel::Gt => Rel::Lt,
        Rel::Le => Rel::Ge,
        Rel::Ge => Rel::Le,
        other => other,
    }
}

fn item_eq(gold: &Item, pred: &Item) -> Cmp {
    match (gold, pred) {
        (Item::Expr(g), Item::Expr(p)) => node_eq(g, p),
        // The prediction is an equation and the gold is not: use its right-hand side.
        (Item::Expr(g), Item::Rel(_, Rel::Eq, p)) => node_eq(g, p),
        // The gold is an assignment and the prediction is not an equation.
        (Item::Rel(Node::Sym(_), Rel::Eq, g), Item::Expr(p)) => node_eq(g, p),
        (Item::Rel(..), Item::Expr(_)) | (Item::Expr(_), Item::Rel(..)) => Ok(false),
        (Item::Rel(gl, gr, grr), Item::Rel(pl, pr, prr)) => {
            if gl == pl && gr == pr && grr == prr {
                return Ok(true);
            }
            let gd = diff(gl, grr);
            if gr == pr && node_eq(&gd, &diff(pl, prr))? {
                return Ok(true);
            }
            if *gr == flip(*pr) && node_eq(&gd, &diff(prr, pl))? {
                return Ok(true);
            }
            Ok(false)
        }
    }
}

fn set_eq(g: &[Item], p: &[Item]) -> Cmp {
    let covers = |a: &[Item], b: &[Item]| -> Cmp {
        for x in a {
            let mut found = false;
            for y in b {
                if item_eq(x, y)? {
                    found = true;
                    break;
                }
            }
            if !found {
                return Ok(false);
            }
        }
        Ok(true)
    };
    Ok(covers(g, p)? && covers(p, g)?)
}

fn seq_eq(g: &[Item], p: &[Item]) -> Cmp {
    if g.len() != p.len() {
        return Ok(false);
    }
    for (x, y) in g.iter().zip(p) {
        if !item_eq(x, y)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn value_eq(g: &Value, p: &Value) -> Cmp {
    use Value::*;
    match (g, p) {
        (Text(a), Text(b)) => Ok(a == b),
        (Text(_), _) | (_, Text(_)) => Ok(false),
        (Scalar(a), Scalar(b)) => item_eq(a, b),
        (Set(a), Set(b)) => set_eq(a, b),
        (Tuple(a), Tuple(b)) => seq_eq(a, b),
        (
            Interval {
                lo: a,
                hi: b,
                left_closed: l1,
                right_closed: r1,
            },
            Interval {
                lo: c,
                hi: d,
                left_closed: l2,
                right_closed: r2,
            },
        ) => Ok(l1 == l2 && r1 == r2 && node_eq(a, c)? && node_eq(b, d)?),
        // "(a, b)" is sympy's open interval when a < b: a two-tuple then equals an open interval.
        (
            Tuple(t),
            Interval {
                lo,
                hi,
                left_closed: false,
                right_closed: false,
            },
        )
        | (
            Interval {
                lo,
                hi,
                left_closed: false,
                right_closed: false,
            },
            Tuple(t),
        ) if t.len() == 2 => seq_eq(t, &[Item::Expr(lo.clone()), Item::Expr(hi.clone())]),
        _ => Ok(false),
    }
}

/// See [`super::equivalent`].
pub fn equivalent(gold: &str, predicted: &str) -> Equivalence {
    if gold.len() > MAX_INPUT || predicted.len() > MAX_INPUT {
        return Equivalence::Unknown {
            reason: format!("answer longer than {MAX_INPUT} bytes"),
        };
    }
    let (g, p) = (normalize_answer(gold), normalize_answer(predicted));
    if g.is_empty() || p.is_empty() {
        return Equivalence::Unknown {
            reason: "empty answer".into(),
        };
    }
    let parsed = parse_value(&g).and_then(|gv| parse_value(&p).map(|pv| (gv, pv)));
    let verdict = match parsed {
        Ok((gv, pv)) => value_eq(&gv, &pv),
        Err(e) => Err(e),
    };
    match verdict {
        Ok(true) => Equivalence::Equal,
        Ok(false) => Equivalence::NotEqual,
        // Identical strings match even when they cannot be parsed (math-verify's string rule).
        Err(_) if g == p => Equivalence::Equal,
        Err(reason) => Equivalence::Unknown { reason },
    }
}
