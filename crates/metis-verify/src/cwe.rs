//! CWE (Common Weakness Enumeration) identifiers, the weakness catalog and the
//! hierarchy-aware comparison used to grade CVE → CWE mapping answers (CTIBench-RCM).
//!
//! - [`CweId`] is a parsed `CWE-79`; [`find_cwe_ids`] finds every id mentioned in free text.
//! - [`CweCatalog`] loads `cwe/cwe-weaknesses.tsv` from a Metis data directory (CWE 4.14: 963
//!   weaknesses) and answers name / deprecation / parent questions.
//! - [`CweCatalog::relation`] classifies a predicted id against the gold id. Exact match is the
//!   benchmark metric; [`Relation::hierarchy_credit`] is the secondary, hierarchy-aware metric
//!   ("one step up or down the CWE tree in view 1000 or 1003 gets credit"), always reported
//!   separately so it can never inflate the exact-match score.
//!
//! This module also holds [`CatalogError`] and the small TSV reader shared with
//! [`crate::attack`], because both catalogs come from the same kind of derived table.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

/// A CWE identifier such as `CWE-79` (the number is the whole identity).
///
/// Text forms accepted by [`FromStr`] and [`find_cwe_ids`] (the two agree: a string parses iff
/// it is exactly one id the finder would report, give or take surrounding whitespace):
/// - the prefix `CWE` in any letter case;
/// - exactly one dash between prefix and number: ASCII `-` or one of the Unicode dashes models
///   emit in its place (U+2010 ‐, U+2011 ‑, U+2012 ‒, U+2013 –, U+2014 —, U+2212 −, U+FE63 ﹣,
///   U+FF0D －);
/// - one or more ASCII digits, leading zeros allowed (`CWE-079` is `CWE-79`), value ≤ `u32::MAX`.
///
/// `CWE 79`, `CWE_79` and `CWE79` are rejected: they are rare in model output, FAITH's "proper"
/// RCM format does not accept them either, and allowing a space would turn prose such as
/// "CWE 4.14" (the catalog version) into a bogus `CWE-4`.
///
/// Serialized (serde) as the canonical string `"CWE-79"`.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct CweId(pub u32);

impl fmt::Display for CweId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CWE-{}", self.0)
    }
}

/// Error returned when a string is not a single CWE id (see [`CweId`] for the accepted forms).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a CWE id: {input:?}")]
pub struct ParseCweIdError {
    /// The rejected input, as given.
    pub input: String,
}

impl FromStr for CweId {
    type Err = ParseCweIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        match match_cwe_at(trimmed, 0) {
            Some((id, end)) if end == trimmed.len() => Ok(id),
            _ => Err(ParseCweIdError {
                input: s.to_owned(),
            }),
        }
    }
}

// Serialised as its canonical string (through the two conversions below).
impl From<CweId> for String {
    fn from(id: CweId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for CweId {
    type Error = ParseCweIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Byte length of the dash at `text[i..]`, if there is one that may separate `CWE` from its
/// number. `i` must be a char boundary (callers only pass positions right after ASCII bytes).
fn dash_len_at(text: &str, i: usize) -> Option<usize> {
    let c = text.get(i..)?.chars().next()?;
    match c {
        '-' | '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2212}'
        | '\u{FE63}' | '\u{FF0D}' => Some(c.len_utf8()),
        _ => None,
    }
}

/// Tries to read one CWE id starting exactly at byte `start` (which must hold `c`/`C`).
/// Returns the id and the end of its span.
///
/// Word boundaries are ASCII-only on purpose: `XCWE-79` and `CWE-79abc` are not ids, but in
/// Chinese or Japanese prose ("属于CWE-79。") the id touches ideographs, which Unicode counts as
/// letters; an ASCII boundary keeps those mentions. `_` is not a word character here so that
/// markdown emphasis (`__CWE-79__`) still matches.
fn match_cwe_at(text: &str, start: usize) -> Option<(CweId, usize)> {
    let bytes = text.as_bytes();
    if start > 0 && bytes[start - 1].is_ascii_alphanumeric() {
        return None;
    }
    let prefix = bytes.get(start..start + 3)?;
    if !prefix.eq_ignore_ascii_case(b"cwe") {
        return None;
    }
    let digits_start = start + 3 + dash_len_at(text, start + 3)?;
    let mut end = digits_start;
    let mut value: u32 = 0;
    while let Some(&b) = bytes.get(end) {
        if !b.is_ascii_digit() {
            break;
        }
        // An out-of-range number is not an id at all: truncating it would invent one.
        value = value.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
        end += 1;
    }
    if end == digits_start {
        return None;
    }
    if bytes.get(end).is_some_and(u8::is_ascii_alphanumeric) {
        return None;
    }
    Some((CweId(value), end))
}

/// Every CWE id mentioned in `text`, in order of appearance, with the byte span of the id
/// itself (`CWE-79`, without surrounding markdown or quotes).
///
/// Accepts the forms described on [`CweId`] wherever they stand between word boundaries, so
/// `**CWE-79**`, `` `CWE-79` ``, `[CWE-79]`, `(cwe‑079)` and `NVD-CWE-79` all yield `CWE-79`,
/// while `XCWE-79`, `CWE-79abc`, `CWE-` and `NVD-CWE-noinfo` yield nothing. Repeated ids are
/// reported each time; deduplication is the caller's policy (FAITH's `match_if_unique`, a
/// last-mention rule, ...). Linear time, no allocation beyond the result.
pub fn find_cwe_ids(text: &str) -> Vec<(CweId, Range<usize>)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        // `b | 0x20 == b'c'` holds only for ASCII `c`/`C`, never for UTF-8 continuation bytes,
        // so `i` is a char boundary whenever we try a match.
        if bytes[i] | 0x20 == b'c' {
            if let Some((id, end)) = match_cwe_at(text, i) {
                found.push((id, i..end));
                i = end;
                continue;
            }
        }
        i += 1;
    }
    found
}

/// A CWE view whose `ChildOf` relations define the hierarchy used for partial credit.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum View {
    /// View 1000 "Research Concepts": the complete weakness hierarchy.
    ResearchConcepts,
    /// View 1003 "Weaknesses for Simplified Mapping of Published Vulnerabilities": the
    /// shallow subset NVD uses to label CVEs.
    SimplifiedMapping,
}

impl View {
    /// Both views, in the order they are consulted.
    pub const ALL: [View; 2] = [View::ResearchConcepts, View::SimplifiedMapping];

    /// The view's CWE number (1000 or 1003).
    pub fn number(self) -> u32 {
        match self {
            View::ResearchConcepts => 1000,
            View::SimplifiedMapping => 1003,
        }
    }
}

/// How a predicted CWE relates to the gold CWE in the catalog hierarchy.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Relation {
    /// Same id.
    Exact,
    /// The prediction is a direct parent (`ChildOf` target) of the gold id in view 1000 or 1003.
    Parent,
    /// The prediction is a direct child of the gold id in view 1000 or 1003.
    Child,
    /// Anything else, including every pair involving an id the catalog does not know
    /// (categories such as `CWE-264`, typos, invented ids) unless the two ids are equal.
    Unrelated,
}

impl Relation {
    /// Whether the hierarchy-aware metric gives credit: exact, or one step up or down the
    /// tree. Reported separately from exact match.
    pub fn hierarchy_credit(self) -> bool {
        matches!(self, Relation::Exact | Relation::Parent | Relation::Child)
    }
}

/// Errors from loading a catalog table (CWE or ATT&CK). Every variant names the file; row
/// problems also give the 1-based physical line number (the header is line 1) and the column.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("{file}: {source}")]
    Io {
        /// Path or name of the file.
        file: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file has no header row.
    #[error("{file}: empty file, expected a header row")]
    Empty {
        /// Path or name of the file.
        file: String,
    },
    /// A required column is absent from the header.
    #[error("{file} line 1: missing column {column:?}")]
    MissingColumn {
        /// Path or name of the file.
        file: String,
        /// The column that was looked for.
        column: &'static str,
    },
    /// A column name appears twice in the header, so lookups by name would be ambiguous.
    #[error("{file} line 1: column {column:?} appears more than once")]
    DuplicateColumn {
        /// Path or name of the file.
        file: String,
        /// The repeated column name.
        column: String,
    },
    /// A data row does not have as many tab-separated fields as the header.
    #[error("{file} line {line}: expected {expected} tab-separated fields, found {found}")]
    FieldCount {
        /// Path or name of the file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// Number of header columns.
        expected: usize,
        /// Number of fields on this line.
        found: usize,
    },
    /// A field value is malformed or inconsistent with the rest of the data.
    #[error("{file} line {line}: field {field}: {problem} {value:?}")]
    BadField {
        /// Path or name of the file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// Column name.
        field: &'static str,
        /// What is wrong, e.g. "bad CWE id".
        problem: &'static str,
        /// The offending value (or list item) as found.
        value: String,
    },
    /// The same id is defined on two rows.
    #[error("{file} line {line}: duplicate id {id} (first defined on line {first_line})")]
    DuplicateId {
        /// Path or name of the file.
        file: String,
        /// 1-based line number of the repeat.
        line: usize,
        /// The repeated id.
        id: String,
        /// 1-based line number of the first definition.
        first_line: usize,
    },
    /// A catalog version string that cannot name a data file (e.g. contains `/`).
    #[error("invalid catalog version {0:?}: expected something like \"v15.1\"")]
    InvalidVersion(String),
}

/// Minimal reader for the derived TSV tables in the Metis data directory: UTF-8, one header
/// row, tab-separated, no quoting, LF or CRLF. Shared with [`crate::attack`].
pub(crate) mod tsv {
    use super::CatalogError;

    /// A parsed table borrowing from the input text.
    pub(crate) struct Table<'a> {
        pub(crate) file: String,
        header: Vec<&'a str>,
        /// (1-based line number, fields) for every non-blank data line.
        pub(crate) rows: Vec<(usize, Vec<&'a str>)>,
    }

    impl<'a> Table<'a> {
        /// Splits `text` into header and rows, checking every row has the header's width.
        pub(crate) fn parse(text: &'a str, file: &str) -> Result<Self, CatalogError> {
            let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
            let mut lines = text
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .enumerate();
            let header: Vec<&str> = match lines.next() {
                Some((_, l)) if !l.trim().is_empty() => l.split('\t').map(str::trim).collect(),
                _ => {
                    return Err(CatalogError::Empty {
                        file: file.to_owned(),
                    })
                }
            };
            for (i, name) in header.iter().enumerate() {
                if header[..i].contains(name) {
                    return Err(CatalogError::DuplicateColumn {
                        file: file.to_owned(),
                        column: (*name).to_owned(),
                    });
                }
            }
            let mut rows = Vec::new();
            for (idx, line) in lines {
                // Blank lines (typically the one after the final newline) carry no data.
                if line.trim().is_empty() {
                    continue;
                }
                let fields: Vec<&str> = line.split('\t').collect();
                if fields.len() != header.len() {
                    return Err(CatalogError::FieldCount {
                        file: file.to_owned(),
                        line: idx + 1,
                        expected: header.len(),
                        found: fields.len(),
                    });
                }
                rows.push((idx + 1, fields));
            }
            Ok(Table {
                file: file.to_owned(),
                header,
                rows,
            })
        }

        /// Index of a required column.
        pub(crate) fn column(&self, name: &'static str) -> Result<usize, CatalogError> {
            self.header
                .iter()
                .position(|h| *h == name)
                .ok_or_else(|| CatalogError::MissingColumn {
                    file: self.file.clone(),
                    column: name,
                })
        }

        /// Builds a [`CatalogError::BadField`] for this table.
        pub(crate) fn bad(
            &self,
            line: usize,
            field: &'static str,
            problem: &'static str,
            value: &str,
        ) -> CatalogError {
            CatalogError::BadField {
                file: self.file.clone(),
                line,
                field,
                problem,
                value: value.to_owned(),
            }
        }

        /// Parses a `true`/`false` field (ASCII case-insensitive).
        pub(crate) fn bool_field(
            &self,
            line: usize,
            field: &'static str,
            value: &str,
        ) -> Result<bool, CatalogError> {
            let v = value.trim();
            if v.eq_ignore_ascii_case("true") {
                Ok(true)
            } else if v.eq_ignore_ascii_case("false") {
                Ok(false)
            } else {
                Err(self.bad(line, field, "expected true or false, got", value))
            }
        }
    }

    /// Splits a comma-separated list field; empty field → no items. Items are trimmed, and an
    /// empty item (`a,,b`) is reported to the caller as an empty string so it fails to parse.
    pub(crate) fn list(value: &str) -> impl Iterator<Item = &str> {
        let v = value.trim();
        let mut items = v.split(',').map(str::trim);
        if v.is_empty() {
            // Consume the single empty item produced by splitting "".
            items.next();
        }
        items
    }

    /// Reads a whole file as UTF-8, naming it in the error.
    pub(crate) fn read_file(path: &std::path::Path) -> Result<(String, String), CatalogError> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((text, file)),
            Err(source) => Err(CatalogError::Io { file, source }),
        }
    }
}

/// One weakness row of the catalog.
#[derive(Clone, Debug)]
struct CweEntry {
    name: String,
    deprecated: bool,
    parents_1000: Vec<CweId>,
    parents_1003: Vec<CweId>,
    in_view_1000: bool,
    in_view_1003: bool,
}

/// The CWE weakness catalog (`cwe/cwe-weaknesses.tsv`, CWE 4.14 in the shipped data):
/// names, deprecation and the direct `ChildOf` parents in views 1000 and 1003.
///
/// Only weaknesses are listed; CWE categories and views (e.g. `CWE-264`, `CWE-16`) are not in
/// MITRE's CSV exports, so the catalog does not know them.
#[derive(Clone, Debug)]
pub struct CweCatalog {
    entries: BTreeMap<CweId, CweEntry>,
}

/// Relative path of the weakness table inside a data directory.
const WEAKNESSES_FILE: &str = "cwe/cwe-weaknesses.tsv";

/// The entry statuses CWE defines; anything else in the `status` column means a shifted or
/// foreign table.
const STATUSES: [&str; 6] = [
    "Stable",
    "Usable",
    "Draft",
    "Incomplete",
    "Obsolete",
    "Deprecated",
];

impl CweCatalog {
    /// Loads `dir/cwe/cwe-weaknesses.tsv`, where `dir` is a data directory laid out like
    /// `shared/data`.
    pub fn from_data_dir(dir: &Path) -> Result<Self, CatalogError> {
        let (text, file) = tsv::read_file(&dir.join(WEAKNESSES_FILE))?;
        Self::from_tsv_str(&text, &file)
    }

    /// Loads the weakness table from any reader; `source_name` is used in error messages.
    pub fn from_reader<R: Read>(mut reader: R, source_name: &str) -> Result<Self, CatalogError> {
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .map_err(|source| CatalogError::Io {
                file: source_name.to_owned(),
                source,
            })?;
        Self::from_tsv_str(&text, source_name)
    }

    /// Parses the weakness table from text; `source_name` is used in error messages.
    ///
    /// Required columns (found by header name, any order, extra columns ignored): `id`, `name`,
    /// `status`, `child_of_1000`, `child_of_1003`, `in_view_1000`, `in_view_1003`. Every parent
    /// id must itself be a row of the table, so a truncated or shifted file fails loudly
    /// instead of silently dropping hierarchy credit.
    pub fn from_tsv_str(tsv: &str, source_name: &str) -> Result<Self, CatalogError> {
        let table = tsv::Table::parse(tsv, source_name)?;
        let c_id = table.column("id")?;
        let c_name = table.column("name")?;
        let c_status = table.column("status")?;
        let c_p1000 = table.column("child_of_1000")?;
        let c_p1003 = table.column("child_of_1003")?;
        let c_v1000 = table.column("in_view_1000")?;
        let c_v1003 = table.column("in_view_1003")?;

        let parse_id = |line: usize, field: &'static str, v: &str| {
            v.parse::<CweId>()
                .map_err(|_| table.bad(line, field, "bad CWE id", v))
        };
        let parse_list = |line: usize, field: &'static str, v: &str| {
            tsv::list(v)
                .map(|item| parse_id(line, field, item))
                .collect::<Result<Vec<_>, _>>()
        };

        let mut entries = BTreeMap::new();
        let mut first_line: BTreeMap<CweId, usize> = BTreeMap::new();
        for (line, f) in &table.rows {
            let line = *line;
            let id = parse_id(line, "id", f[c_id])?;
            if let Some(&first) = first_line.get(&id) {
                return Err(CatalogError::DuplicateId {
                    file: table.file.clone(),
                    line,
                    id: id.to_string(),
                    first_line: first,
                });
            }
            let status = f[c_status].trim();
            if !STATUSES.iter().any(|s| s.eq_ignore_ascii_case(status)) {
                return Err(table.bad(line, "status", "unknown CWE status", f[c_status]));
            }
            let entry = CweEntry {
                name: f[c_name].trim().to_owned(),
                deprecated: status.eq_ignore_ascii_case("Deprecated"),
                parents_1000: parse_list(line, "child_of_1000", f[c_p1000])?,
                parents_1003: parse_list(line, "child_of_1003", f[c_p1003])?,
                in_view_1000: table.bool_field(line, "in_view_1000", f[c_v1000])?,
                in_view_1003: table.bool_field(line, "in_view_1003", f[c_v1003])?,
            };
            first_line.insert(id, line);
            entries.insert(id, entry);
        }

        // Dangling parents mean the table is incomplete; report the first one by line order.
        let mut by_line: Vec<(usize, CweId)> = first_line.iter().map(|(&id, &l)| (l, id)).collect();
        by_line.sort_unstable();
        for (line, id) in by_line {
            let Some(entry) = entries.get(&id) else {
                continue;
            };
            for (field, parents) in [
                ("child_of_1000", &entry.parents_1000),
                ("child_of_1003", &entry.parents_1003),
            ] {
                if let Some(p) = parents.iter().find(|p| !entries.contains_key(p)) {
                    return Err(table.bad(
                        line,
                        field,
                        "parent not defined in this file:",
                        &p.to_string(),
                    ));
                }
            }
        }
        Ok(CweCatalog { entries })
    }

    /// Number of weaknesses in the catalog (963 for CWE 4.14).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the catalog has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All weakness ids, ascending.
    pub fn ids(&self) -> impl Iterator<Item = CweId> + '_ {
        self.entries.keys().copied()
    }

    /// Whether the id is a weakness of this catalog (deprecated ones included).
    pub fn contains(&self, id: CweId) -> bool {
        self.entries.contains_key(&id)
    }

    /// The weakness name, e.g. "Improper Neutralization of Input During Web Page Generation
    /// ('Cross-site Scripting')" for `CWE-79`.
    pub fn name(&self, id: CweId) -> Option<&str> {
        self.entries.get(&id).map(|e| e.name.as_str())
    }

    /// Whether the entry has CWE status `Deprecated` (false for unknown ids).
    pub fn is_deprecated(&self, id: CweId) -> bool {
        self.entries.get(&id).is_some_and(|e| e.deprecated)
    }

    /// Whether the weakness is a member of the view (1003 membership = NVD's mapping set).
    pub fn in_view(&self, id: CweId, view: View) -> bool {
        self.entries.get(&id).is_some_and(|e| match view {
            View::ResearchConcepts => e.in_view_1000,
            View::SimplifiedMapping => e.in_view_1003,
        })
    }

    /// The direct `ChildOf` targets of `id` in `view` (empty for unknown ids, deprecated ids
    /// and top-level entries).
    pub fn parents(&self, id: CweId, view: View) -> &[CweId] {
        match self.entries.get(&id) {
            Some(e) => match view {
                View::ResearchConcepts => &e.parents_1000,
                View::SimplifiedMapping => &e.parents_1003,
            },
            None => &[],
        }
    }

    /// Classifies `predicted` against `gold`: exact, a direct parent or child in view 1000 or
    /// 1003, or unrelated. Grandparents, siblings and ids unknown to the catalog are unrelated.
    pub fn relation(&self, predicted: CweId, gold: CweId) -> Relation {
        if predicted == gold {
            Relation::Exact
        } else if View::ALL
            .iter()
            .any(|&v| self.parents(gold, v).contains(&predicted))
        {
            Relation::Parent
        } else if View::ALL
            .iter()
            .any(|&v| self.parents(predicted, v).contains(&gold))
        {
            Relation::Child
        } else {
            Relation::Unrelated
        }
    }
}
