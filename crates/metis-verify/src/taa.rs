//! CTIBench-TAA: threat actor attribution, graded with CTIBench's alias and related-group
//! dictionaries.
//!
//! An [`ActorCatalog`] holds the two dictionaries (actor → aliases, actor → related groups),
//! made symmetric. [`ActorCatalog::judge`] says whether a predicted actor is the gold actor
//! (or one of its aliases: [`Attribution::Correct`]), a related group
//! ([`Attribution::Plausible`]) or neither, under one of two rules:
//!
//! - [`TaaRule::Ctibench`] reproduces CTIBench's scoring exactly: lower-case and strip both
//!   names, then search the alias graph (or alias ∪ related) from the gold. Its search tests
//!   only the neighbours of visited nodes, so a prediction equal to the gold is correct only
//!   when the gold has an alias entry, and the literal `"nan"` entries (CTIBench's "none")
//!   join otherwise unrelated actors.
//! - [`TaaRule::Fixed`], Metis's default: names are normalised (case, surrounding and repeated
//!   spaces, `-`/`_` as spaces, as the dictionaries spell ids like `uac 0003`), the `"nan"`
//!   placeholders are dropped, and a prediction equal to the gold is correct.
//!
//! [`extract_actor`] takes the predicted name from an answer: the known actor names it
//! mentions (all aliases of one actor: that actor; several unrelated actors: ambiguous), else
//! the answer line itself stripped of its label and markup.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The alias dictionary, relative to the data directory.
pub const ALIAS_FILE: &str = "ctibench/taa-alias-dict.json";
/// The related-group dictionary, relative to the data directory.
pub const RELATED_FILE: &str = "ctibench/taa-related-dict.json";

/// Which scoring rule to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaaRule {
    /// Normalised names, no `"nan"` links, equality counts (the default).
    #[default]
    Fixed,
    /// CTIBench's scoring, quirks included, for comparison with published numbers.
    Ctibench,
}

/// How a predicted actor relates to the gold actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribution {
    /// The gold actor or one of its aliases.
    Correct,
    /// A related group (not an alias).
    Plausible,
    Incorrect,
}

/// A dictionary that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {detail}")]
pub struct ActorCatalogError {
    pub file: String,
    pub detail: String,
}

/// An undirected name graph as CTIBench builds it (both directions of every entry).
type Graph = HashMap<String, BTreeSet<String>>;

/// CTIBench's two actor dictionaries, made symmetric, under both rules.
#[derive(Debug, Clone)]
pub struct ActorCatalog {
    /// CTIBench's spelling (lower-cased, stripped), `"nan"` kept.
    raw_alias: Graph,
    raw_both: Graph,
    /// Normalised names, `"nan"` dropped.
    alias: Graph,
    both: Graph,
    /// Every known normalised name, longest first (for finding names in text).
    names: Vec<String>,
    /// Normalised name → CTIBench's spellings of it that differ from it (`apt c 36` →
    /// `apt-c-36`).
    spellings: HashMap<String, Vec<String>>,
}

impl ActorCatalog {
    /// Loads [`ALIAS_FILE`] and [`RELATED_FILE`] from a data directory.
    pub fn from_data_dir(dir: &Path) -> Result<Self, ActorCatalogError> {
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file)).map_err(|e| ActorCatalogError {
                file: dir.join(file).display().to_string(),
                detail: e.to_string(),
            })
        };
        Self::from_json(&read(ALIAS_FILE)?, &read(RELATED_FILE)?)
    }

    /// Parses the two dictionaries (JSON objects: name → list of names).
    pub fn from_json(alias: &str, related: &str) -> Result<Self, ActorCatalogError> {
        let parse = |text: &str, file: &str| {
            serde_json::from_str::<BTreeMap<String, Vec<String>>>(text).map_err(|e| {
                ActorCatalogError {
                    file: file.to_owned(),
                    detail: format!("expected an object of name lists: {e}"),
                }
            })
        };
        let alias = parse(alias, ALIAS_FILE)?;
        let related = parse(related, RELATED_FILE)?;
        let upstream = |s: &str| s.trim().to_lowercase();
        let fixed = |s: &str| Some(normalize_actor(s)).filter(|n| !n.is_empty() && n != "nan");
        let raw_alias = graph(&[&alias], |s| Some(upstream(s)));
        let raw_both = graph(&[&alias, &related], |s| Some(upstream(s)));
        let fixed_alias = graph(&[&alias], fixed);
        let both = graph(&[&alias, &related], fixed);
        let mut names: Vec<String> = both.keys().cloned().collect();
        names.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        let mut spellings: HashMap<String, Vec<String>> = HashMap::new();
        for raw in raw_both.keys() {
            if let Some(name) = fixed(raw).filter(|n| n != raw) {
                spellings.entry(name).or_default().push(raw.clone());
            }
        }
        Ok(Self {
            raw_alias,
            raw_both,
            alias: fixed_alias,
            both,
            names,
            spellings,
        })
    }

    /// A known name (normalised) as `text` writes it when that is one of CTIBench's own
    /// spellings (`apt-c-36` for a text saying `APT-C-36`), else the name itself. CTIBench's
    /// rule compares spellings, so the extracted answer keeps the one the model used.
    pub fn as_written(&self, name: &str, text: &str) -> String {
        let lower = text.to_lowercase();
        self.spellings
            .get(name)
            .and_then(|raw| raw.iter().find(|r| lower.contains(r.as_str())))
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }

    /// Number of distinct names known (normalised).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// How `predicted` relates to `gold` under `rule`.
    pub fn judge(&self, predicted: &str, gold: &str, rule: TaaRule) -> Attribution {
        let (alias, both, p, g) = match rule {
            TaaRule::Ctibench => (
                &self.raw_alias,
                &self.raw_both,
                predicted.trim().to_lowercase(),
                gold.trim().to_lowercase(),
            ),
            TaaRule::Fixed => (
                &self.alias,
                &self.both,
                normalize_actor(predicted),
                normalize_actor(gold),
            ),
        };
        if p.is_empty() {
            return Attribution::Incorrect;
        }
        let equal_counts = rule == TaaRule::Fixed && p == g;
        if equal_counts || ctibench_reachable(alias, &g, &p) {
            Attribution::Correct
        } else if ctibench_reachable(both, &g, &p) {
            Attribution::Plausible
        } else {
            Attribution::Incorrect
        }
    }

    /// The known actor names `text` mentions (normalised, word-bounded, longest match first,
    /// without overlaps), in order of appearance.
    pub fn names_in(&self, text: &str) -> Vec<String> {
        let hay = format!(" {} ", normalize_actor(text));
        let mut taken = vec![false; hay.len()];
        let mut found: Vec<(usize, String)> = Vec::new();
        for name in &self.names {
            let needle = format!(" {name} ");
            let mut from = 0;
            while let Some(pos) = hay[from..].find(&needle).map(|p| p + from) {
                let span = pos + 1..pos + 1 + name.len();
                if !taken[span.clone()].iter().any(|&t| t) {
                    taken[span.clone()].iter_mut().for_each(|t| *t = true);
                    found.push((pos, name.clone()));
                }
                from = pos + 1;
            }
        }
        found.sort();
        found.into_iter().map(|(_, n)| n).collect()
    }

    /// Whether two known names are aliases of one actor (fixed rule).
    pub fn same_actor(&self, a: &str, b: &str) -> bool {
        a == b || ctibench_reachable(&self.alias, a, b)
    }
}

/// Lower case, `-`/`_` and runs of whitespace as one space, surrounding punctuation and
/// spaces removed: `" Mustang-Panda. "` → `"mustang panda"`.
pub fn normalize_actor(s: &str) -> String {
    let lowered = s.to_lowercase().replace(['-', '_'], " ");
    let words: Vec<&str> = lowered.split_whitespace().collect();
    words
        .join(" ")
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_owned()
}

fn graph(dicts: &[&BTreeMap<String, Vec<String>>], norm: impl Fn(&str) -> Option<String>) -> Graph {
    let mut g: Graph = HashMap::new();
    for dict in dicts {
        for (key, values) in dict.iter() {
            let Some(k) = norm(key) else { continue };
            g.entry(k.clone()).or_default();
            for v in values {
                let Some(v) = norm(v) else { continue };
                g.entry(k.clone()).or_default().insert(v.clone());
                g.entry(v).or_default().insert(k.clone());
            }
        }
    }
    g
}

/// CTIBench's breadth-first search: from `gold`, look for `target` among the neighbours of
/// visited nodes (so `gold` itself is found only back through one of its neighbours).
fn ctibench_reachable(g: &Graph, gold: &str, target: &str) -> bool {
    let mut seen: BTreeSet<&str> = BTreeSet::from([gold]);
    let mut queue: VecDeque<&str> = VecDeque::from([gold]);
    while let Some(node) = queue.pop_front() {
        for next in g.get(node).into_iter().flatten() {
            if next == target {
                return true;
            }
            if seen.insert(next) {
                queue.push_back(next);
            }
        }
    }
    false
}

/// The answer's predicted actor: the known names the line mentions when they all name one
/// actor (the first mentioned), `Err(names)` when they name several, else the line itself
/// without its label (`Threat actor:`, `Answer:`), markup and final punctuation (`None` when
/// nothing is left).
pub fn extract_actor(
    line: &str,
    catalog: Option<&ActorCatalog>,
) -> Result<Option<String>, Vec<String>> {
    if let Some(c) = catalog {
        let names = c.names_in(line);
        if let Some(first) = names.first() {
            let distinct: Vec<String> = names.iter().fold(Vec::<String>::new(), |mut acc, n| {
                if !acc.iter().any(|a| c.same_actor(a, n)) {
                    acc.push(n.clone());
                }
                acc
            });
            return if distinct.len() == 1 {
                Ok(Some(c.as_written(first, line)))
            } else {
                Err(distinct)
            };
        }
    }
    let text = line.replace(['*', '`', '_'], " ");
    let lower = text.to_lowercase();
    let start = [
        "threat actor",
        "final answer",
        "answer",
        "attribution",
        "actor",
    ]
    .iter()
    .find_map(|label| {
        let at = lower.find(label)?;
        let rest = &lower[at + label.len()..];
        let colon = rest.find(':')?;
        rest[..colon]
            .split_whitespace()
            .count()
            .le(&2)
            .then_some(at + label.len() + colon + 1)
    })
    .unwrap_or(0);
    let name = normalize_actor(&text[start..]);
    Ok((!name.is_empty()).then_some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> ActorCatalog {
        ActorCatalog::from_json(
            r#"{"turla": ["snake", "venomous bear"], "patchwork": ["nan"], "sidecopy": ["nan"],
                "mustang panda": ["stately taurus", "bronze president"]}"#,
            r#"{"sidecopy": ["transparent tribe"], "turla": ["nan"]}"#,
        )
        .unwrap()
    }

    #[test]
    fn fixed_rule_normalises_and_counts_equality() {
        let c = catalog();
        assert_eq!(
            c.judge("Venomous-Bear", "Turla", TaaRule::Fixed),
            Attribution::Correct
        );
        assert_eq!(
            c.judge("MUSTANG PANDA ", "mustang panda", TaaRule::Fixed),
            Attribution::Correct
        );
        assert_eq!(
            c.judge("Transparent Tribe", "SideCopy", TaaRule::Fixed),
            Attribution::Plausible
        );
        assert_eq!(
            c.judge("Patchwork", "SideCopy", TaaRule::Fixed),
            Attribution::Incorrect
        );
        assert_eq!(c.judge("", "Turla", TaaRule::Fixed), Attribution::Incorrect);
        // An actor outside the dictionaries is still correct when it is the gold.
        assert_eq!(
            c.judge("APT-C-36", "apt c 36", TaaRule::Fixed),
            Attribution::Correct
        );
    }

    #[test]
    fn ctibench_rule_keeps_its_quirks() {
        let c = catalog();
        // "nan" joins patchwork and sidecopy as aliases.
        assert_eq!(
            c.judge("patchwork", "SideCopy", TaaRule::Ctibench),
            Attribution::Correct
        );
        // Equal to a gold with no alias entry: not found by the neighbour search.
        assert_eq!(
            c.judge("apt c 36", "apt c 36", TaaRule::Ctibench),
            Attribution::Incorrect
        );
        // Equal to a gold with aliases: found back through an alias.
        assert_eq!(
            c.judge("Turla", "turla ", TaaRule::Ctibench),
            Attribution::Correct
        );
        // No hyphen normalisation upstream.
        assert_eq!(
            c.judge("venomous-bear", "turla", TaaRule::Ctibench),
            Attribution::Incorrect
        );
    }

    #[test]
    fn extraction_prefers_known_names_and_flags_conflicts() {
        let c = catalog();
        let one = |s: &str| extract_actor(s, Some(&c));
        assert_eq!(
            one("**Threat actor:** Stately Taurus (Mustang Panda)."),
            Ok(Some("stately taurus".into()))
        );
        assert_eq!(
            one("Threat actor: Lazarus Group"),
            Ok(Some("lazarus group".into()))
        );
        assert!(one("Either Turla or Mustang Panda").is_err());
        assert_eq!(one("   "), Ok(None));
        assert_eq!(
            extract_actor("Answer: APT28.", None),
            Ok(Some("apt28".into()))
        );
    }

    #[test]
    fn bad_dictionaries_name_the_file() {
        let e = ActorCatalog::from_json("[1]", "{}").unwrap_err();
        assert_eq!(e.file, ALIAS_FILE);
    }
}
