//! MITRE ATT&CK technique identifiers, the technique catalog (with revoked → replacement
//! mapping) and the set metrics used to grade technique-extraction answers (CTIBench-ATE).
//!
//! Grading pipeline for one item:
//! 1. [`find_technique_ids`] pulls every `T1234` / `T1234.001` out of the answer text;
//! 2. [`normalize_prediction`] dedupes, maps revoked ids to their replacement (given an
//!    [`AttackCatalog`] of the benchmark's ATT&CK release) and optionally folds sub-techniques to
//!    their parent ([`SetMatchOptions::credit_parent_for_sub`]);
//! 3. [`exact_set_match`], [`jaccard`] and [`set_counts`] compare with the gold set, and
//!    [`micro_f1`] pools the counts over a run.
//!
//! The set metrics live in [`set_metrics`] and are generic over the element type, so CWE or any
//! other label sets can use them too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

use crate::cwe::tsv;
pub use crate::cwe::CatalogError;
pub use set_metrics::{exact_set_match, jaccard, micro_f1, set_counts, MicroF1, SetCounts};

/// An ATT&CK technique id: `T1059` (technique) or `T1059.001` (sub-technique).
///
/// Text forms accepted by [`FromStr`] and [`find_technique_ids`] (they agree: a string parses
/// iff it is exactly one id the finder would report, give or take surrounding whitespace):
/// `T` or `t`, exactly 4 ASCII digits, and optionally `.` or `/` followed by exactly 3 ASCII
/// digits. `/` is accepted because ATT&CK URLs spell sub-techniques that way
/// (`attack.mitre.org/techniques/T1059/001/`). A dot or slash followed by a digit run of any
/// other length (`T1059.1`, `T1059.0011`) makes the whole token invalid rather than silently
/// degrading to `T1059`.
///
/// Ordered by technique number, then sub-technique (`T1059` < `T1059.001` < `T1060`).
/// Serialized (serde) as the canonical string `"T1059.001"`.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct TechniqueId {
    technique: u16,
    sub: Option<u16>,
}

impl TechniqueId {
    /// Builds an id from its numbers; `None` if `technique > 9999` or `sub > 999`, which have
    /// no text form.
    pub fn new(technique: u16, sub: Option<u16>) -> Option<Self> {
        if technique > 9999 || sub.is_some_and(|s| s > 999) {
            return None;
        }
        Some(TechniqueId { technique, sub })
    }

    /// The technique number (`1059` for `T1059.001`).
    pub fn technique(&self) -> u16 {
        self.technique
    }

    /// The sub-technique number (`Some(1)` for `T1059.001`, `None` for `T1059`).
    pub fn sub(&self) -> Option<u16> {
        self.sub
    }

    /// The parent technique (`T1059` for `T1059.001`); the id itself if it is not a
    /// sub-technique.
    pub fn parent(&self) -> TechniqueId {
        TechniqueId {
            technique: self.technique,
            sub: None,
        }
    }

    /// Whether this is a sub-technique id (`T1234.567`).
    pub fn is_subtechnique(&self) -> bool {
        self.sub.is_some()
    }
}

impl fmt::Display for TechniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sub {
            Some(sub) => write!(f, "T{:04}.{:03}", self.technique, sub),
            None => write!(f, "T{:04}", self.technique),
        }
    }
}

/// Error returned when a string is not a single ATT&CK technique id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an ATT&CK technique id: {input:?}")]
pub struct ParseTechniqueIdError {
    /// The rejected input, as given.
    pub input: String,
}

impl FromStr for TechniqueId {
    type Err = ParseTechniqueIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        match match_technique_at(trimmed.as_bytes(), 0) {
            Some((id, end)) if end == trimmed.len() => Ok(id),
            _ => Err(ParseTechniqueIdError {
                input: s.to_owned(),
            }),
        }
    }
}

// Serialised as its canonical string (through the two conversions below).
impl From<TechniqueId> for String {
    fn from(id: TechniqueId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for TechniqueId {
    type Error = ParseTechniqueIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Value of exactly `n` ASCII digits at `bytes[at..]`, if they are all there.
fn digits(bytes: &[u8], at: usize, n: usize) -> Option<u16> {
    let run = bytes.get(at..at + n)?;
    run.iter().try_fold(0u16, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u16::from(b - b'0'))
    })
}

/// Whether the byte at `i` (if any) continues a word, which would make the token not an id.
fn continues_word(bytes: &[u8], i: usize) -> bool {
    bytes.get(i).is_some_and(u8::is_ascii_alphanumeric)
}

/// Tries to read one technique id starting exactly at byte `start` (which must hold `t`/`T`).
/// Returns the id and the end of its span.
///
/// Word boundaries are ASCII-only on purpose: `AT1059` and `T10591234` are not ids, but an id
/// touching CJK text ("使用T1059执行") is still found. `_` is not a word character so markdown
/// emphasis (`_T1059_`) still matches.
fn match_technique_at(bytes: &[u8], start: usize) -> Option<(TechniqueId, usize)> {
    if start > 0 && bytes[start - 1].is_ascii_alphanumeric() {
        return None;
    }
    if bytes.get(start)? | 0x20 != b't' {
        return None;
    }
    let technique = digits(bytes, start + 1, 4)?;
    let end = start + 5;
    match bytes.get(end) {
        Some(b'.' | b'/') if bytes.get(end + 1).is_some_and(u8::is_ascii_digit) => {
            // A digit after the separator commits us to a sub-technique: exactly three digits.
            let sub = digits(bytes, end + 1, 3)?;
            if continues_word(bytes, end + 4) {
                return None;
            }
            Some((
                TechniqueId {
                    technique,
                    sub: Some(sub),
                },
                end + 4,
            ))
        }
        _ if continues_word(bytes, end) => None,
        _ => Some((
            TechniqueId {
                technique,
                sub: None,
            },
            end,
        )),
    }
}

/// Every ATT&CK technique id in `text`, in order of appearance, with the byte span of the id
/// itself.
///
/// Accepts the forms described on [`TechniqueId`] between word boundaries, whatever separates
/// them (commas, spaces, `and`, semicolons, newlines) or surrounds them (brackets, quotes,
/// markdown): `Answer: T1059.001, T1071 and T1105` gives three ids, `**Answer:** [T1566,
/// T1204]` two, `t1059` one; `AT1059`, `T10591234`, `T105` and `T1059.01` give none. Repeated
/// ids are reported each time. Linear time, no allocation beyond the result.
pub fn find_technique_ids(text: &str) -> Vec<(TechniqueId, Range<usize>)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        // Only ASCII `t`/`T` satisfy this (never a UTF-8 continuation byte), so spans start
        // and (being followed by ASCII digits) end on char boundaries.
        if bytes[i] | 0x20 == b't' {
            if let Some((id, end)) = match_technique_at(bytes, i) {
                found.push((id, i..end));
                i = end;
                continue;
            }
        }
        i += 1;
    }
    found
}

/// An ATT&CK domain (matrix) with its own technique catalog.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Domain {
    /// Enterprise ATT&CK.
    Enterprise,
    /// Mobile ATT&CK.
    Mobile,
}

impl Domain {
    /// The lowercase name used in data file names (`enterprise`, `mobile`).
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Enterprise => "enterprise",
            Domain::Mobile => "mobile",
        }
    }
}

impl fmt::Display for Domain {
    /// Capitalised, as in CTIBench's `Platform` column and FAITH's prompts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Domain::Enterprise => "Enterprise",
            Domain::Mobile => "Mobile",
        })
    }
}

/// Error returned when a string names no ATT&CK domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown ATT&CK domain {input:?}: expected \"Enterprise\" or \"Mobile\"")]
pub struct ParseDomainError {
    /// The rejected input, as given.
    pub input: String,
}

impl FromStr for Domain {
    type Err = ParseDomainError;

    /// Case-insensitive `enterprise` / `mobile`, surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("enterprise") {
            Ok(Domain::Enterprise)
        } else if t.eq_ignore_ascii_case("mobile") {
            Ok(Domain::Mobile)
        } else {
            Err(ParseDomainError {
                input: s.to_owned(),
            })
        }
    }
}

/// What a catalog says about a technique id.
///
/// Whether an id is a sub-technique is a property of the id itself
/// ([`TechniqueId::is_subtechnique`]), so it is not repeated here.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TechniqueStatus {
    /// Neither revoked nor deprecated.
    Active,
    /// Revoked (merged into or replaced by another object).
    Revoked {
        /// The end of the `revoked-by` chain; `None` when the release has no `revoked-by`
        /// relationship for it (three Mobile v15.1 objects, one in v18.1). The replacement
        /// itself may be deprecated (eight Mobile chains end at a deprecated technique).
        replaced_by: Option<TechniqueId>,
    },
    /// Deprecated without replacement (and not revoked).
    Deprecated,
    /// Not in this catalog (wrong domain, invented, or from a later release).
    Unknown,
}

/// One technique row.
#[derive(Clone, Debug)]
struct TechniqueEntry {
    name: String,
    revoked: bool,
    deprecated: bool,
}

/// The technique table of one ATT&CK release and domain, including revoked and deprecated
/// objects, plus the revoked → replacement map.
#[derive(Clone, Debug)]
pub struct AttackCatalog {
    domain: Domain,
    version: String,
    techniques: BTreeMap<TechniqueId, TechniqueEntry>,
    /// revoked id → final replacement (`final_id` column).
    replaced_by: BTreeMap<TechniqueId, TechniqueId>,
}

impl AttackCatalog {
    /// Loads `dir/attack/{domain}-attack-{version}-techniques.tsv` and
    /// `dir/attack/{domain}-attack-{version}-revoked-map.tsv`, where `dir` is a data directory
    /// laid out like `shared/data` and `version` is e.g. `"v15.1"` (the release CTIBench-ATE was
    /// built on) or `"v18.1"`.
    pub fn from_data_dir(dir: &Path, domain: Domain, version: &str) -> Result<Self, CatalogError> {
        // The version becomes part of a file name: refuse anything that could leave the folder.
        let version_ok = !version.is_empty()
            && version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
            && !version.starts_with('.');
        if !version_ok {
            return Err(CatalogError::InvalidVersion(version.to_owned()));
        }
        let base = dir.join("attack");
        let stem = format!("{}-attack-{}", domain.as_str(), version);
        let (techniques, t_name) = tsv::read_file(&base.join(format!("{stem}-techniques.tsv")))?;
        let (revoked, r_name) = tsv::read_file(&base.join(format!("{stem}-revoked-map.tsv")))?;
        Self::build(&techniques, &t_name, &revoked, &r_name, domain, version)
    }

    /// Parses the two tables from text. Error messages call them `techniques TSV` and
    /// `revoked-map TSV`.
    ///
    /// Techniques table columns (by header name): `id`, `name`, `is_subtechnique`,
    /// `parent_id`, `revoked`, `deprecated`; `is_subtechnique` and `parent_id` must agree with
    /// the id. Revoked map columns: `revoked_id` (a revoked row of the techniques table) and
    /// `final_id` (a row of the techniques table).
    pub fn from_tsv_strs(
        techniques: &str,
        revoked_map: &str,
        domain: Domain,
        version: &str,
    ) -> Result<Self, CatalogError> {
        Self::build(
            techniques,
            "techniques TSV",
            revoked_map,
            "revoked-map TSV",
            domain,
            version,
        )
    }

    fn build(
        techniques: &str,
        techniques_name: &str,
        revoked_map: &str,
        revoked_name: &str,
        domain: Domain,
        version: &str,
    ) -> Result<Self, CatalogError> {
        let t = tsv::Table::parse(techniques, techniques_name)?;
        let c_id = t.column("id")?;
        let c_name = t.column("name")?;
        let c_sub = t.column("is_subtechnique")?;
        let c_parent = t.column("parent_id")?;
        let c_revoked = t.column("revoked")?;
        let c_deprecated = t.column("deprecated")?;

        let mut table: BTreeMap<TechniqueId, TechniqueEntry> = BTreeMap::new();
        let mut first_line: BTreeMap<TechniqueId, usize> = BTreeMap::new();
        for (line, f) in &t.rows {
            let line = *line;
            let id: TechniqueId = f[c_id]
                .parse()
                .map_err(|_| t.bad(line, "id", "bad technique id", f[c_id]))?;
            if let Some(&first) = first_line.get(&id) {
                return Err(CatalogError::DuplicateId {
                    file: t.file.clone(),
                    line,
                    id: id.to_string(),
                    first_line: first,
                });
            }
            if t.bool_field(line, "is_subtechnique", f[c_sub])? != id.is_subtechnique() {
                return Err(t.bad(line, "is_subtechnique", "disagrees with the id:", f[c_sub]));
            }
            let parent = f[c_parent].trim();
            let parent_ok = if id.is_subtechnique() {
                parent.parse::<TechniqueId>().ok() == Some(id.parent())
            } else {
                parent.is_empty()
            };
            if !parent_ok {
                return Err(t.bad(line, "parent_id", "disagrees with the id:", f[c_parent]));
            }
            let entry = TechniqueEntry {
                name: f[c_name].trim().to_owned(),
                revoked: t.bool_field(line, "revoked", f[c_revoked])?,
                deprecated: t.bool_field(line, "deprecated", f[c_deprecated])?,
            };
            first_line.insert(id, line);
            table.insert(id, entry);
        }

        let r = tsv::Table::parse(revoked_map, revoked_name)?;
        let c_rid = r.column("revoked_id")?;
        let c_final = r.column("final_id")?;
        let mut replaced_by = BTreeMap::new();
        let mut map_line: BTreeMap<TechniqueId, usize> = BTreeMap::new();
        for (line, f) in &r.rows {
            let line = *line;
            let rid: TechniqueId = f[c_rid]
                .parse()
                .map_err(|_| r.bad(line, "revoked_id", "bad technique id", f[c_rid]))?;
            let fin: TechniqueId = f[c_final]
                .parse()
                .map_err(|_| r.bad(line, "final_id", "bad technique id", f[c_final]))?;
            if let Some(&first) = map_line.get(&rid) {
                return Err(CatalogError::DuplicateId {
                    file: r.file.clone(),
                    line,
                    id: rid.to_string(),
                    first_line: first,
                });
            }
            if !table.get(&rid).is_some_and(|e| e.revoked) {
                return Err(r.bad(
                    line,
                    "revoked_id",
                    "not a revoked technique of the techniques table:",
                    f[c_rid],
                ));
            }
            if !table.contains_key(&fin) {
                return Err(r.bad(line, "final_id", "not in the techniques table:", f[c_final]));
            }
            if fin == rid {
                return Err(r.bad(line, "final_id", "replaces itself:", f[c_final]));
            }
            map_line.insert(rid, line);
            replaced_by.insert(rid, fin);
        }

        Ok(AttackCatalog {
            domain,
            version: version.to_owned(),
            techniques: table,
            replaced_by,
        })
    }

    /// The ATT&CK release this catalog was loaded as (e.g. `"v15.1"`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The domain this catalog covers.
    pub fn domain(&self) -> Domain {
        self.domain
    }

    /// Number of technique rows, revoked and deprecated included.
    pub fn len(&self) -> usize {
        self.techniques.len()
    }

    /// Whether the catalog has no techniques.
    pub fn is_empty(&self) -> bool {
        self.techniques.is_empty()
    }

    /// Every technique id of the catalog (revoked and deprecated included), ascending.
    pub fn ids(&self) -> impl Iterator<Item = TechniqueId> + '_ {
        self.techniques.keys().copied()
    }

    /// Whether the id is a row of this catalog, whatever its status.
    pub fn contains(&self, id: TechniqueId) -> bool {
        self.techniques.contains_key(&id)
    }

    /// The status of `id` in this release. A revoked id reports the end of its replacement
    /// chain.
    pub fn status(&self, id: TechniqueId) -> TechniqueStatus {
        match self.techniques.get(&id) {
            None => TechniqueStatus::Unknown,
            Some(e) if e.revoked => TechniqueStatus::Revoked {
                replaced_by: self.final_replacement(id),
            },
            Some(e) if e.deprecated => TechniqueStatus::Deprecated,
            Some(_) => TechniqueStatus::Active,
        }
    }

    /// Follows the revoked-by map to its end. The shipped maps are already resolved (`final_id`),
    /// but a hand-written map might point at another revoked id; the step bound makes a cyclic
    /// map terminate.
    fn final_replacement(&self, id: TechniqueId) -> Option<TechniqueId> {
        let mut current = *self.replaced_by.get(&id)?;
        for _ in 0..self.replaced_by.len() {
            match self.replaced_by.get(&current) {
                Some(&next) => current = next,
                None => break,
            }
        }
        Some(current)
    }

    /// The technique name in this release (revoked and deprecated objects keep theirs).
    pub fn name(&self, id: TechniqueId) -> Option<&str> {
        self.techniques.get(&id).map(|e| e.name.as_str())
    }

    /// Maps a revoked id to its final replacement; returns None for ids unknown to this
    /// catalog; active/deprecated ids map to themselves, and so does a revoked id that the
    /// release gives no replacement for.
    pub fn canonicalize(&self, id: TechniqueId) -> Option<TechniqueId> {
        match self.status(id) {
            TechniqueStatus::Unknown => None,
            TechniqueStatus::Revoked {
                replaced_by: Some(r),
            } => Some(r),
            _ => Some(id),
        }
    }
}

/// How predicted ids are normalised before set comparison.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SetMatchOptions {
    /// A predicted T1059.001 counts as T1059 when gold is parent-level: fold predicted
    /// sub-techniques to their parent before comparing (CTIBench-ATE gold is parent-level
    /// only). Off by default, which matches FAITH (no folding).
    pub credit_parent_for_sub: bool,
}

/// Turns extracted ids into the set that is compared with gold: dedupes, maps revoked ids to
/// their replacement when a catalog is given, then folds sub-techniques to their parent if
/// [`SetMatchOptions::credit_parent_for_sub`] is set (after canonicalisation, so a revoked
/// `T1004` → `T1547.004` → `T1547`).
///
/// Ids unknown to the catalog are kept: they are false positives, and dropping them would
/// reward a model for inventing ids. Gold sets can go through the same function; for
/// parent-level, non-revoked gold it changes nothing.
pub fn normalize_prediction(
    ids: &[TechniqueId],
    catalog: Option<&AttackCatalog>,
    opts: &SetMatchOptions,
) -> BTreeSet<TechniqueId> {
    ids.iter()
        .map(|&id| {
            let id = catalog.and_then(|c| c.canonicalize(id)).unwrap_or(id);
            if opts.credit_parent_for_sub {
                id.parent()
            } else {
                id
            }
        })
        .collect()
}

/// Set-comparison metrics over any ordered label type (ATT&CK techniques, CWE ids, ...),
/// matching FAITH's `label_set` scoring: exact-set accuracy, Jaccard index and micro-F1.
pub mod set_metrics {
    use std::collections::BTreeSet;
    use std::iter::Sum;
    use std::ops::{Add, AddAssign};

    /// Confusion counts of one predicted set against one gold set (or a sum of several).
    #[derive(Default, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SetCounts {
        /// Predicted and gold.
        pub true_positives: usize,
        /// Predicted but not gold.
        pub false_positives: usize,
        /// Gold but not predicted.
        pub false_negatives: usize,
    }

    impl Add for SetCounts {
        type Output = SetCounts;
        fn add(self, o: SetCounts) -> SetCounts {
            SetCounts {
                true_positives: self.true_positives + o.true_positives,
                false_positives: self.false_positives + o.false_positives,
                false_negatives: self.false_negatives + o.false_negatives,
            }
        }
    }

    impl AddAssign for SetCounts {
        fn add_assign(&mut self, o: SetCounts) {
            *self = *self + o;
        }
    }

    impl Sum for SetCounts {
        fn sum<I: Iterator<Item = SetCounts>>(iter: I) -> SetCounts {
            iter.fold(SetCounts::default(), Add::add)
        }
    }

    impl<'a> Sum<&'a SetCounts> for SetCounts {
        fn sum<I: Iterator<Item = &'a SetCounts>>(iter: I) -> SetCounts {
            iter.copied().sum()
        }
    }

    /// Counts true positives, false positives and false negatives of `pred` against `gold`.
    pub fn set_counts<T: Ord>(pred: &BTreeSet<T>, gold: &BTreeSet<T>) -> SetCounts {
        let tp = pred.intersection(gold).count();
        SetCounts {
            true_positives: tp,
            false_positives: pred.len() - tp,
            false_negatives: gold.len() - tp,
        }
    }

    /// Whether the predicted set equals the gold set (the CTIBench-ATE primary metric).
    pub fn exact_set_match<T: Ord>(pred: &BTreeSet<T>, gold: &BTreeSet<T>) -> bool {
        pred == gold
    }

    /// Jaccard index |pred ∩ gold| / |pred ∪ gold|; 1.0 when both sets are empty (as FAITH).
    pub fn jaccard<T: Ord>(pred: &BTreeSet<T>, gold: &BTreeSet<T>) -> f64 {
        let c = set_counts(pred, gold);
        let union = c.true_positives + c.false_positives + c.false_negatives;
        if union == 0 {
            1.0
        } else {
            c.true_positives as f64 / union as f64
        }
    }

    /// Micro-averaged precision, recall and F1.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct MicroF1 {
        /// Σ TP / Σ (TP + FP); 0.0 when nothing was predicted.
        pub precision: f64,
        /// Σ TP / Σ (TP + FN); 0.0 when there is no gold label.
        pub recall: f64,
        /// 2 Σ TP / (2 Σ TP + Σ FP + Σ FN); 0.0 when that denominator is 0.
        pub f1: f64,
    }

    impl MicroF1 {
        /// Metrics from already pooled counts.
        pub fn from_counts(c: SetCounts) -> MicroF1 {
            let ratio = |num: usize, den: usize| {
                if den == 0 {
                    0.0
                } else {
                    num as f64 / den as f64
                }
            };
            let tp = c.true_positives;
            MicroF1 {
                precision: ratio(tp, tp + c.false_positives),
                recall: ratio(tp, tp + c.false_negatives),
                f1: ratio(2 * tp, 2 * tp + c.false_positives + c.false_negatives),
            }
        }
    }

    /// Micro-F1 over items: counts are pooled first, then precision, recall and F1 computed
    /// once. Matches scikit-learn's `f1_score(average="micro")` on binary indicator matrices
    /// (FAITH's `micro_f1`) including its default `zero_division` behaviour: every undefined
    /// ratio is 0.0 (sklearn also warns). F1 uses sklearn's 2TP / (2TP + FP + FN) form, which
    /// equals the harmonic mean of precision and recall whenever both are defined.
    pub fn micro_f1(items: &[SetCounts]) -> MicroF1 {
        MicroF1::from_counts(items.iter().sum())
    }
}
