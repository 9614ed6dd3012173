//! CVSS vectors: parsing, validation, scoring and severity ratings for CVSS v2.0, v3.0, v3.1
//! and v4.0.
//!
//! ```
//! use metis_verify::cvss::{Severity, Vector, Version};
//!
//! let v = Vector::parse("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").unwrap();
//! assert_eq!(v.version(), Version::V3_1);
//! assert_eq!(v.base_score(), 9.8);
//! assert_eq!(v.severity(), Severity::Critical);
//!
//! // Models often drop the prefix of a v3 vector: read it as v3.1.
//! let v = Vector::parse_as("AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", Version::V3_1).unwrap();
//! assert_eq!(v.to_string(), "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H");
//! ```
//!
//! # Scoring
//!
//! The algorithms are those of the published specifications: the FIRST CVSS v2 guide, the
//! CVSS v3.0 and v3.1 specifications and the CVSS v4.0 specification (section 8) together with
//! the FIRST v4.0 calculator's MacroVector method and data. The results reproduce exactly the
//! reference values of the Red Hat `cvss` Python library (the test vectors under
//! `shared/data/cvss`). Points where implementations of the specifications differ, and the
//! choice made here:
//!
//! - **v2.0** is computed in exact decimal arithmetic (scaled integers) with round-half-up to
//!   one decimal, as an implementation with decimal numbers (Python's `Decimal`) computes. A
//!   vector without impact scores 0.0 (the reference data has `-0.0`, which compares equal).
//!   The adjusted base score of the environmental equation can be negative for low security
//!   requirements; it is kept as is, and only the final environmental score is clamped at 0.
//! - **v3.0** rounds up with a plain ceiling to one decimal, applied to the exact value: the
//!   temporal and environmental products (a one-decimal score times the E/RL/RC weights) are
//!   computed in integers, so `10.0 × 0.92` is 9.2, not the 9.3 a naive `f64` ceiling gives.
//!   The impact/exploitability sums are computed in `f64`; over the whole (finite) metric space
//!   none of them lies on or within 2.5·10⁻⁵ above a one-decimal boundary (other than the clamp
//!   at 10), so the `f64` ceiling is exact there.
//! - **v3.1** uses the specification's `Roundup` (Appendix A, integer arithmetic).
//! - **v4.0** follows the FIRST calculator; the interpolation is done in exact rational
//!   arithmetic and rounded half-up to one decimal (the calculator computes in `f64` and rounds
//!   half-up; exact arithmetic removes any doubt at the halfway points).
//!
//! [`Vector::scores`] reports, following the Red Hat reference data:
//! - v2.0: a temporal score only when the vector contains a temporal metric (E, RL, RC — any
//!   value, `ND` included), an environmental score only when it contains an environmental metric
//!   (CDP, TD, CR, IR, AR);
//! - v3.x: always all three scores (absent temporal/environmental metrics count as `X`, so
//!   the temporal and environmental scores of a base-only vector equal its base score);
//! - v4.0: one score for the whole vector (CVSS-B, -BT, -BE or -BTE) in `base`, and `None`
//!   for the other two.
//!
//! # Parsing
//!
//! - A vector may be surrounded by whitespace, wrapped in one pair of parentheses (NVD writes
//!   v2 vectors as `(AV:N/...)`; whitespace inside them is also trimmed), and end with one
//!   `/`. Nothing else is tolerated: no inner whitespace, no empty components.
//! - The prefix decides the version: `CVSS:3.0/`, `CVSS:3.1/`, `CVSS:4.0/`; `CVSS:2.0/` is
//!   also accepted as v2.0 (v2 has no official prefix; [`Display`](fmt::Display) writes none).
//!   Without a prefix the vector is read as v2.0 by [`Vector::parse`] and as the given version
//!   by [`Vector::parse_as`].
//! - Metric names and values are case-sensitive as in the specifications, except that an
//!   input without any ASCII upper-case letter (e.g. `cvss:3.1/av:n/...`, as models sometimes
//!   write) is matched case-insensitively. [`Vector::metric`] and [`Display`](fmt::Display)
//!   then give the canonical spelling (`AV:N`, `Au:N`, `U:Clear`).
//! - Metrics may appear in any order (the v3.x specifications allow it; v4.0 asks for the
//!   specification order, but a grader should not fail an otherwise valid answer on it);
//!   [`Display`](fmt::Display) writes them in specification order. Every metric may appear at
//!   most once, the base metrics are mandatory, and an explicitly written `X`/`ND` is kept.
//! - Parsing never panics and never allocates on success.

mod v2;
mod v3;
mod v4;

use std::fmt;
use std::str::FromStr;

/// A CVSS version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// CVSS v2.0 (vectors have no prefix).
    V2_0,
    /// CVSS v3.0 (`CVSS:3.0/`).
    V3_0,
    /// CVSS v3.1 (`CVSS:3.1/`).
    V3_1,
    /// CVSS v4.0 (`CVSS:4.0/`).
    V4_0,
}

impl Version {
    /// All versions, oldest first.
    pub const ALL: [Version; 4] = [Version::V2_0, Version::V3_0, Version::V3_1, Version::V4_0];

    /// `"2.0"`, `"3.0"`, `"3.1"` or `"4.0"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V2_0 => "2.0",
            Version::V3_0 => "3.0",
            Version::V3_1 => "3.1",
            Version::V4_0 => "4.0",
        }
    }

    /// The metrics of this version in specification order.
    fn defs(self) -> &'static [MetricDef] {
        match self {
            Version::V2_0 => &v2::METRICS,
            Version::V3_0 | Version::V3_1 => &v3::METRICS,
            Version::V4_0 => &v4::METRICS,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Version {
    type Err = CvssError;

    /// Accepts exactly `"2.0"`, `"3.0"`, `"3.1"` and `"4.0"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        version_from_bytes(s.as_bytes()).ok_or_else(|| CvssError::UnknownVersion {
            version: s.to_string(),
        })
    }
}

fn version_from_bytes(b: &[u8]) -> Option<Version> {
    match b {
        b"2.0" => Some(Version::V2_0),
        b"3.0" => Some(Version::V3_0),
        b"3.1" => Some(Version::V3_1),
        b"4.0" => Some(Version::V4_0),
        _ => None,
    }
}

/// A qualitative severity rating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// 0.0 (v3.x and v4.0 only).
    None,
    /// v2.0: 0.0–3.9; v3.x/v4.0: 0.1–3.9.
    Low,
    /// 4.0–6.9.
    Medium,
    /// v2.0: 7.0–10.0; v3.x/v4.0: 7.0–8.9.
    High,
    /// 9.0–10.0 (v3.x and v4.0 only).
    Critical,
}

impl Severity {
    /// `"None"`, `"Low"`, `"Medium"`, `"High"` or `"Critical"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::None => "None",
            Severity::Low => "Low",
            Severity::Medium => "Medium",
            Severity::High => "High",
            Severity::Critical => "Critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The severity rating of a score.
///
/// v2.0 uses the NVD ranges (Low 0.0–3.9, Medium 4.0–6.9, High 7.0–10.0; never `None` or
/// `Critical`); v3.x and v4.0 use the specification ranges (None 0.0, Low 0.1–3.9, Medium
/// 4.0–6.9, High 7.0–8.9, Critical 9.0–10.0). Scores are expected to have one decimal; the
/// ranges are applied as half-open intervals (`3.95` is Low), a score that is not positive
/// (or NaN) is `None` for v3.x/v4.0 and `Low` for v2.0.
pub fn severity(version: Version, score: f64) -> Severity {
    match version {
        Version::V2_0 => {
            if score >= 7.0 {
                Severity::High
            } else if score >= 4.0 {
                Severity::Medium
            } else {
                Severity::Low
            }
        }
        Version::V3_0 | Version::V3_1 | Version::V4_0 => {
            if score >= 9.0 {
                Severity::Critical
            } else if score >= 7.0 {
                Severity::High
            } else if score >= 4.0 {
                Severity::Medium
            } else if score > 0.0 {
                Severity::Low
            } else {
                Severity::None
            }
        }
    }
}

/// The scores of a vector. See [`Vector::scores`] for when `temporal`/`environmental` are set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// The base score; for CVSS v4.0 the score of the whole vector.
    pub base: f64,
    /// The temporal score (v2.0, v3.x).
    pub temporal: Option<f64>,
    /// The environmental score (v2.0, v3.x).
    pub environmental: Option<f64>,
}

/// Errors from parsing a CVSS vector (or a [`Version`]).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CvssError {
    /// The input is empty (after trimming whitespace, parentheses and a trailing `/`).
    #[error("empty CVSS vector")]
    Empty,
    /// The first component looks like a prefix (`CVSS…`) but is not `CVSS:2.0`, `CVSS:3.0`,
    /// `CVSS:3.1` or `CVSS:4.0`.
    #[error("bad CVSS prefix {prefix:?} (expected \"CVSS:3.0/\", \"CVSS:3.1/\", \"CVSS:4.0/\", or no prefix for CVSS 2.0)")]
    BadPrefix {
        /// The first component as written (without the `/`).
        prefix: String,
    },
    /// A component not of the form `METRIC:VALUE`.
    #[error("malformed CVSS vector component {part:?} (expected METRIC:VALUE)")]
    Malformed {
        /// The component as written.
        part: String,
    },
    /// A metric name that the version does not define.
    #[error("unknown CVSS {version} metric {metric:?}")]
    UnknownMetric {
        /// The version the vector was read as.
        version: Version,
        /// The metric name as written.
        metric: String,
    },
    /// A value the metric does not allow.
    #[error("bad value {value:?} for CVSS {version} metric {metric} (expected one of {})", expected_values(*.version, .metric))]
    BadValue {
        /// The version the vector was read as.
        version: Version,
        /// The metric (canonical abbreviation).
        metric: String,
        /// The value as written.
        value: String,
    },
    /// A metric given twice.
    #[error("duplicate CVSS metric {metric}")]
    Duplicate {
        /// The metric (canonical abbreviation).
        metric: String,
    },
    /// A mandatory (base) metric is missing.
    #[error("CVSS {version} vector lacks mandatory metric {metric}")]
    MissingMandatory {
        /// The version the vector was read as.
        version: Version,
        /// The first missing metric in specification order.
        metric: String,
    },
    /// [`Version::from_str`] got something other than `2.0`, `3.0`, `3.1` or `4.0`.
    #[error("unknown CVSS version {version:?} (expected 2.0, 3.0, 3.1 or 4.0)")]
    UnknownVersion {
        /// The text as given.
        version: String,
    },
}

/// "N, A, L, P": the allowed values of a metric, for error messages.
fn expected_values(version: Version, metric: &str) -> String {
    version
        .defs()
        .iter()
        .find(|d| d.name == metric)
        .map(|d| d.values.join(", "))
        .unwrap_or_default()
}

/// Metric groups. Optional groups have their "not defined" value (`X`, or `ND` in v2) at
/// value index 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Base,
    /// Temporal (v2, v3) or Threat (v4).
    Temporal,
    Environmental,
    /// v4 supplemental metrics (no effect on the score).
    Supplemental,
}

/// One metric of a version: its abbreviation and allowed values (in the order the scoring
/// code indexes them).
#[derive(Debug)]
struct MetricDef {
    name: &'static str,
    values: &'static [&'static str],
    group: Group,
}

const fn def(name: &'static str, values: &'static [&'static str], group: Group) -> MetricDef {
    MetricDef {
        name,
        values,
        group,
    }
}

/// Compile-time string equality (for the index assertions in the version modules).
const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The largest number of metrics of any version (v4.0).
const MAX_METRICS: usize = 32;

/// Metric values of a vector, indexed like the version's metric table: 0 = absent, otherwise
/// 1 + the index of the value in the metric's value list.
type Values = [u8; MAX_METRICS];

/// The value index of metric `i` (0 when absent: "not defined" for optional metrics).
#[inline]
fn vi(vals: &Values, i: usize) -> usize {
    vals[i].saturating_sub(1) as usize
}

/// A parsed and validated CVSS vector.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Vector {
    version: Version,
    vals: Values,
}

impl Vector {
    /// Parses a vector; the version comes from the prefix (`CVSS:3.0/`, `CVSS:3.1/`,
    /// `CVSS:4.0/`), and a vector without prefix is CVSS v2.0 (also accepted wrapped in
    /// parentheses, as NVD writes it). See the [module documentation](self) for the accepted
    /// syntax.
    pub fn parse(s: &str) -> Result<Vector, CvssError> {
        Self::parse_as(s, Version::V2_0)
    }

    /// Like [`parse`](Self::parse), but a vector without prefix is read as `default` (models
    /// often write a v3 base vector without its prefix). A prefix present in the text wins.
    pub fn parse_as(s: &str, default: Version) -> Result<Vector, CvssError> {
        let mut s = s.trim();
        if s.len() >= 2 && s.starts_with('(') && s.ends_with(')') {
            s = s[1..s.len() - 1].trim();
        }
        if let Some(rest) = s.strip_suffix('/') {
            s = rest;
        }
        if s.is_empty() {
            return Err(CvssError::Empty);
        }
        // Case-insensitive matching only for an input without upper-case letters (a valid
        // vector always has some, so this scan stops at once for the usual input).
        let fold = !s.bytes().any(|b| b.is_ascii_uppercase());
        let (version, body) = split_prefix(s, default, fold)?;
        let vals = Table::of(version).parse_metrics(version, body, fold)?;
        Ok(Vector { version, vals })
    }

    /// The CVSS version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// All scores of the vector.
    ///
    /// - v2.0: `temporal` is set when the vector contains E, RL or RC (any value, `ND`
    ///   included), `environmental` when it contains CDP, TD, CR, IR or AR;
    /// - v3.0/v3.1: all three are always set (missing metrics count as `X`);
    /// - v4.0: `base` is the CVSS v4.0 score of the whole vector (CVSS-B, -BT, -BE or -BTE,
    ///   see [`nomenclature`](Self::nomenclature)), `temporal` and `environmental` are `None`.
    pub fn scores(&self) -> Scores {
        match self.version {
            Version::V2_0 => v2::scores(&self.vals),
            Version::V3_0 => v3::scores(&self.vals, false),
            Version::V3_1 => v3::scores(&self.vals, true),
            Version::V4_0 => Scores {
                base: v4::score(&self.vals),
                temporal: None,
                environmental: None,
            },
        }
    }

    /// The base score (for v4.0: the score of the whole vector).
    pub fn base_score(&self) -> f64 {
        match self.version {
            Version::V2_0 => v2::base_score(&self.vals),
            Version::V3_0 => v3::base_score(&self.vals, false),
            Version::V3_1 => v3::base_score(&self.vals, true),
            Version::V4_0 => v4::score(&self.vals),
        }
    }

    /// The severity rating of [`base_score`](Self::base_score).
    pub fn severity(&self) -> Severity {
        severity(self.version, self.base_score())
    }

    /// Which metric groups the vector uses, in the CVSS v4.0 nomenclature: `"CVSS-B"`,
    /// `"CVSS-BT"`, `"CVSS-BE"` or `"CVSS-BTE"`. T means a threat (v4.0) or temporal (v2, v3)
    /// metric with a value other than `X`/`ND`, E likewise for an environmental metric.
    /// Supplemental metrics (v4.0) do not count.
    pub fn nomenclature(&self) -> &'static str {
        let (mut t, mut e) = (false, false);
        for (d, &v) in self.version.defs().iter().zip(self.vals.iter()) {
            if v > 1 {
                match d.group {
                    Group::Temporal => t = true,
                    Group::Environmental => e = true,
                    Group::Base | Group::Supplemental => {}
                }
            }
        }
        match (t, e) {
            (false, false) => "CVSS-B",
            (true, false) => "CVSS-BT",
            (false, true) => "CVSS-BE",
            (true, true) => "CVSS-BTE",
        }
    }

    /// Whether the vector gives any temporal (v2.0, v3.x) or threat (v4.0) metric, whatever
    /// its value (`X`/`ND` included).
    pub fn has_temporal_metrics(&self) -> bool {
        self.has_group(Group::Temporal)
    }

    /// Whether the vector gives any environmental metric, whatever its value.
    pub fn has_environmental_metrics(&self) -> bool {
        self.has_group(Group::Environmental)
    }

    fn has_group(&self, group: Group) -> bool {
        self.version
            .defs()
            .iter()
            .zip(self.vals.iter())
            .any(|(d, &v)| v != 0 && d.group == group)
    }

    /// The value of a metric given in the vector, by its (case-sensitive) abbreviation, e.g.
    /// `metric("AV") == Some("N")`. `None` if the version has no such metric or the vector does
    /// not give it. Values are in canonical spelling (see the module documentation).
    pub fn metric(&self, abbrev: &str) -> Option<&str> {
        let defs = self.version.defs();
        let i = defs.iter().position(|d| d.name == abbrev)?;
        let v = self.vals[i];
        (v != 0).then(|| defs[i].values[v as usize - 1])
    }

    /// The metrics given in the vector as `(abbreviation, value)`, in specification order.
    pub fn metrics(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.version
            .defs()
            .iter()
            .zip(self.vals.iter())
            .filter(|(_, &v)| v != 0)
            .map(|(d, &v)| (d.name, d.values[v as usize - 1]))
    }
}

/// Splits off the prefix; returns the version and the metrics part.
#[inline]
fn split_prefix(s: &str, default: Version, fold: bool) -> Result<(Version, &str), CvssError> {
    let b = s.as_bytes();
    // The usual case: "CVSS:3.1/…".
    if b.len() >= 9 && b[8] == b'/' && b.starts_with(b"CVSS:") {
        if let Some(v) = version_from_bytes(&b[5..8]) {
            return Ok((v, &s[9..]));
        }
    }
    let first_len = b.iter().position(|&c| c == b'/').unwrap_or(b.len());
    let first = &b[..first_len];
    if first.len() < 4 || !first[..4].eq_ignore_ascii_case(b"CVSS") {
        return Ok((default, s));
    }
    let label_ok = first.len() > 5
        && if fold {
            first[..5].eq_ignore_ascii_case(b"CVSS:")
        } else {
            first.starts_with(b"CVSS:")
        };
    match version_from_bytes(if label_ok { &first[5..] } else { b"" }) {
        Some(v) => Ok((v, s.get(first_len + 1..).unwrap_or(""))),
        None => Err(CvssError::BadPrefix {
            prefix: s[..first_len].to_string(),
        }),
    }
}

/// The longest metric name (`MAV`, `CDP`, …).
const MAX_NAME_LEN: usize = 3;
/// The longest metric value (`Clear`, `Green`, `Amber`).
const MAX_VALUE_LEN: usize = 5;
/// The most values a metric has (v2 `CDP`).
const MAX_VALUES: usize = 6;

/// An unused slot in [`Table`]: matches no packed key.
const NO_KEY: u64 = u64::MAX;

/// A name or value of at most `max` (≤ 7) bytes packed into an integer (bytes and length),
/// upper-cased if `fold`; a longer one packs to a key that matches nothing.
#[inline]
const fn pack(b: &[u8], max: usize, fold: bool) -> u64 {
    if b.len() > max {
        return NO_KEY - 1;
    }
    let mut key = (b.len() as u64) << 56;
    let mut i = 0;
    while i < b.len() {
        let c = if fold {
            b[i].to_ascii_uppercase()
        } else {
            b[i]
        };
        key |= (c as u64) << (8 * i);
        i += 1;
    }
    key
}

/// The metric table of a version with packed names and values for matching.
struct Table {
    defs: &'static [MetricDef],
    /// Packed names, exact and upper-cased.
    names: [[u64; MAX_METRICS]; 2],
    /// Packed values per metric, exact and upper-cased (unused slots match nothing).
    values: [[[u64; MAX_VALUES]; MAX_METRICS]; 2],
    /// Bit `k` set if metric `k` is mandatory.
    base_mask: u32,
}

impl Table {
    const fn new(defs: &'static [MetricDef]) -> Table {
        assert!(defs.len() <= MAX_METRICS);
        let mut t = Table {
            defs,
            names: [[NO_KEY; MAX_METRICS]; 2],
            values: [[[NO_KEY; MAX_VALUES]; MAX_METRICS]; 2],
            base_mask: 0,
        };
        let mut k = 0;
        while k < defs.len() {
            let d = &defs[k];
            assert!(d.name.len() <= MAX_NAME_LEN && d.values.len() <= MAX_VALUES);
            let mut f = 0;
            while f < 2 {
                t.names[f][k] = pack(d.name.as_bytes(), MAX_NAME_LEN, f == 1);
                let mut v = 0;
                while v < d.values.len() {
                    assert!(d.values[v].len() <= MAX_VALUE_LEN);
                    t.values[f][k][v] = pack(d.values[v].as_bytes(), MAX_VALUE_LEN, f == 1);
                    v += 1;
                }
                f += 1;
            }
            if matches!(d.group, Group::Base) {
                t.base_mask |= 1 << k;
            }
            k += 1;
        }
        t
    }

    fn of(version: Version) -> &'static Table {
        static V2: Table = Table::new(&v2::METRICS);
        static V3: Table = Table::new(&v3::METRICS);
        static V4: Table = Table::new(&v4::METRICS);
        match version {
            Version::V2_0 => &V2,
            Version::V3_0 | Version::V3_1 => &V3,
            Version::V4_0 => &V4,
        }
    }

    /// The index of metric `name`, searching from `hint` (vectors are usually in
    /// specification order, so the metric is usually the next one).
    #[inline]
    fn find_metric(&self, name: &[u8], fold: bool, hint: usize) -> Option<usize> {
        let key = pack(name, MAX_NAME_LEN, fold);
        let names = &self.names[fold as usize][..self.defs.len()];
        let hint = hint.min(names.len());
        names[hint..]
            .iter()
            .position(|&k| k == key)
            .map(|k| k + hint)
            .or_else(|| names[..hint].iter().position(|&k| k == key))
    }

    /// Parses the metrics part of a vector (after the prefix) into metric values, checking
    /// that every metric is known, has an allowed value and appears once, and that the
    /// mandatory metrics are present.
    fn parse_metrics(&self, version: Version, body: &str, fold: bool) -> Result<Values, CvssError> {
        let b = body.as_bytes();
        let mut vals: Values = [0; MAX_METRICS];
        let mut seen: u32 = 0;
        let mut hint = 0;
        let mut start = 0;
        while !b.is_empty() {
            // One component, b[start..end], with its first ':' at `colon`.
            let mut end = start;
            let mut colon = usize::MAX;
            while end < b.len() && b[end] != b'/' {
                if b[end] == b':' && colon == usize::MAX {
                    colon = end;
                }
                end += 1;
            }
            let (name, value) = if colon == usize::MAX {
                (&b[..0], &b[..0])
            } else {
                (&b[start..colon], &b[colon + 1..end])
            };
            if name.is_empty() || value.is_empty() || value.contains(&b':') {
                return Err(CvssError::Malformed {
                    part: body[start..end].to_string(),
                });
            }
            let idx =
                self.find_metric(name, fold, hint)
                    .ok_or_else(|| CvssError::UnknownMetric {
                        version,
                        metric: body[start..colon].to_string(),
                    })?;
            if seen & (1 << idx) != 0 {
                return Err(CvssError::Duplicate {
                    metric: self.defs[idx].name.to_string(),
                });
            }
            let v = self
                .find_value(idx, value, fold)
                .ok_or_else(|| CvssError::BadValue {
                    version,
                    metric: self.defs[idx].name.to_string(),
                    value: body[colon + 1..end].to_string(),
                })?;
            seen |= 1 << idx;
            vals[idx] = v + 1;
            hint = idx + 1;
            if end == b.len() {
                break;
            }
            start = end + 1;
        }
        if seen & self.base_mask != self.base_mask {
            let missing = (0..self.defs.len())
                .find(|&k| self.base_mask & !seen & (1 << k) != 0)
                .unwrap_or(0);
            return Err(CvssError::MissingMandatory {
                version,
                metric: self.defs[missing].name.to_string(),
            });
        }
        Ok(vals)
    }

    /// The value index of `value` for metric `idx`.
    #[inline]
    fn find_value(&self, idx: usize, value: &[u8], fold: bool) -> Option<u8> {
        let key = pack(value, MAX_VALUE_LEN, fold);
        // At most MAX_VALUES (6) values.
        self.values[fold as usize][idx]
            .iter()
            .position(|&k| k == key)
            .map(|v| v as u8)
    }
}

impl fmt::Display for Vector {
    /// The canonical vector: prefix (none for v2.0) and the given metrics in specification
    /// order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if self.version != Version::V2_0 {
            f.write_str("CVSS:")?;
            f.write_str(self.version.as_str())?;
            sep = "/";
        }
        for (name, value) in self.metrics() {
            f.write_str(sep)?;
            f.write_str(name)?;
            f.write_str(":")?;
            f.write_str(value)?;
            sep = "/";
        }
        Ok(())
    }
}

impl fmt::Debug for Vector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Vector")
            .field(&format_args!("{self}"))
            .finish()
    }
}

impl FromStr for Vector {
    type Err = CvssError;

    /// Same as [`Vector::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Vector::parse(s)
    }
}

/// A score given in tenths as `f64` (the nearest `f64` to `tenths / 10`, i.e. what parsing
/// the one-decimal text gives).
#[inline]
fn from_tenths(tenths: i128) -> f64 {
    tenths as f64 / 10.0
}
